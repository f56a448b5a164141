//! The admin API's OpenAPI 3.1 description, `GET /v1/openapi.json`: generated from the
//! handlers' `#[utoipa::path]` annotations and the answer types' `ToSchema` derives
//! ([`super::admin::AdminApi`]), built once. It is served without the bearer key (it
//! describes the API and shows no data), but only while the admin API is on: with no key
//! configured it is a 404 as every `/v1` route is.
//!
//! The types below describe answers for the document only: types of other crates (the
//! store's device, its connectivity states) and the shared error body.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, ToSchema};

use super::error::ApiError;

/// The path the document is served at.
pub(super) const PATH: &str = "/v1/openapi.json";

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";
/// The browser session's security scheme (the cookie of `POST /v1/session`).
const SESSION: &str = "session";

/// The document as served, made once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    super::admin::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

/// The document's JSON text.
pub(super) fn document() -> &'static str {
    &DOCUMENT
}

/// The route of [`PATH`]: the document while `enabled` (an admin key is configured); any
/// other method is a 405, as on the admin routes. Disabled, every method gets the 404 of a
/// disabled admin API, as every `/v1` route does.
pub(super) fn route(enabled: bool) -> MethodRouter {
    let not_allowed = move |method: Method| async move {
        if !enabled {
            return ApiError::admin_disabled().into_response();
        }
        let mut resp = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} not allowed on {PATH}; use GET"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        resp
    };
    get(move || async move {
        if !enabled {
            return ApiError::admin_disabled().into_response();
        }
        ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
    })
    .head(not_allowed)
    .fallback(not_allowed)
}

/// `GET /v1/openapi.json` in the document itself (served by [`route`]).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "admin",
    summary = "This document",
    description = "The admin API's OpenAPI description, generated from the server's code. No key needed; a 404 while the admin API is off.",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = Object, content_type = "application/json"),
        (status = 404, description = "The admin API is off (no key configured)", body = ErrorBody),
    )
)]
#[allow(dead_code)]
pub(super) fn openapi_json() {}

/// What every admin error answer holds: `{"error": "…"}`, with `request_id` on a server-side
/// failure (the id its detail is logged under, also in `X-Request-Id`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// What went wrong, in an operator's terms.
    error: String,
    /// Only on a 5xx: the id the server's log has the detail under.
    #[schema(nullable = false)]
    request_id: Option<String>,
    /// `E320` on a renewal refused for another topic (with the two topics below).
    #[schema(nullable = false)]
    code: Option<String>,
    /// E320: the tenant's topic, which a renewal keeps.
    #[schema(nullable = false)]
    registered_topic: Option<String>,
    /// E320: the uploaded certificate's topic.
    #[schema(nullable = false)]
    new_topic: Option<String>,
}

/// A device's connectivity state.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum ConnState {
    Responded,
    Pending,
    Unreachable,
    Unregistered,
    PushFailed,
    NeverPushed,
    NoToken,
}

/// Devices per connectivity state.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct StateCounts {
    #[schema(nullable = false, minimum = 0)]
    responded: Option<u64>,
    #[schema(nullable = false, minimum = 0)]
    pending: Option<u64>,
    #[schema(nullable = false, minimum = 0)]
    unreachable: Option<u64>,
    #[schema(nullable = false, minimum = 0)]
    unregistered: Option<u64>,
    #[schema(nullable = false, minimum = 0)]
    push_failed: Option<u64>,
    #[schema(nullable = false, minimum = 0)]
    never_pushed: Option<u64>,
    #[schema(nullable = false, minimum = 0)]
    no_token: Option<u64>,
}

/// Push→report latency over the devices that responded, in milliseconds (`null` with none).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct Latency {
    #[schema(required = true)]
    p50: Option<u64>,
    #[schema(required = true)]
    p99: Option<u64>,
    #[schema(required = true)]
    max: Option<u64>,
    count: u64,
}

/// Devices per state (every state, zeros included) and their push→report latency.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ConnectivityCounts {
    states: StateCounts,
    latency_ms: Latency,
}

/// A refresh run's kind: `refresh`, or `command` (a command sent with a push).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RunKind {
    Refresh,
    Command,
}

/// Where a refresh run stands.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RunState {
    Running,
    Finished,
    Abandoned,
}

/// One entry of a command report's `ErrorChain`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorChainItem {
    #[schema(required = true)]
    code: Option<i64>,
    #[schema(required = true)]
    domain: Option<String>,
    #[schema(required = true)]
    localized_description: Option<String>,
    #[schema(required = true)]
    us_english_description: Option<String>,
}

/// The outcome of a device's last push.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum PushOutcomeKind {
    Accepted,
    Unregistered,
    Rejected,
    Failed,
}

/// The outcome of a device's last push: `reason` (APNs's or the engine's words) unless
/// accepted; `timestamp_ms` with `unregistered`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct PushOutcome {
    outcome: PushOutcomeKind,
    #[schema(nullable = false)]
    reason: Option<String>,
    timestamp_ms: Option<u64>,
}

/// The identity certificate an enrollment is bound to.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct BoundIdentity {
    /// SHA-256 of the certificate's DER, lower-case hex.
    sha256: String,
    subject: String,
    serial: String,
    /// RFC 3339.
    not_after: String,
    /// RFC 3339.
    bound_at: String,
    /// The certificate it replaced.
    #[schema(required = true)]
    replaced_sha256: Option<String>,
}

/// A device as the admin API shows it: the store's fields, its connectivity state now and
/// its last push→report latency. Timestamps are RFC 3339.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct Device {
    /// UDID, or EnrollmentID for User Enrollment.
    udid: String,
    #[schema(required = true)]
    device_name: Option<String>,
    #[schema(required = true)]
    model: Option<String>,
    #[schema(required = true)]
    model_name: Option<String>,
    #[schema(required = true)]
    product_name: Option<String>,
    #[schema(required = true)]
    os_version: Option<String>,
    #[schema(required = true)]
    build_version: Option<String>,
    #[schema(required = true)]
    serial_number: Option<String>,
    #[schema(required = true)]
    imei: Option<String>,
    #[schema(required = true)]
    meid: Option<String>,
    #[schema(required = true)]
    phone_number: Option<String>,
    /// The push topic it enrolled with.
    #[schema(required = true)]
    topic: Option<String>,
    /// Device-channel APNs token, lower-case hex.
    #[schema(required = true)]
    token: Option<String>,
    awaiting_configuration: bool,
    awaiting_token_update: bool,
    #[schema(required = true)]
    authenticated_at: Option<String>,
    #[schema(required = true)]
    enrolled_at: Option<String>,
    #[schema(required = true)]
    token_updated_at: Option<String>,
    #[schema(required = true)]
    last_seen_at: Option<String>,
    #[schema(required = true)]
    checked_out_at: Option<String>,
    #[schema(required = true)]
    info_collected_at: Option<String>,
    #[schema(required = true)]
    last_push_at: Option<String>,
    #[schema(required = true)]
    push_outcome: Option<PushOutcome>,
    #[schema(required = true)]
    push_outcome_at: Option<String>,
    #[schema(required = true)]
    last_report_at: Option<String>,
    #[schema(required = true)]
    first_report_after_push_at: Option<String>,
    #[schema(required = true)]
    identity: Option<BoundIdentity>,
    state: ConnState,
    /// From the last push to the next report, if the last push was answered.
    #[schema(required = true)]
    push_latency_ms: Option<u64>,
    /// The enrollment invitation the device enrolled through (a page of the list and one
    /// device's view; absent otherwise).
    invitation: Option<String>,
}

/// `GET /v1/devices`: every device (without `limit`, streamed), or one page (with `limit`).
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum DeviceList {
    All(Vec<Device>),
    Page(crate::service::DevicePage),
}

/// `PUT /v1/settings`: a duration as text (`"24h"`, `"10m"`; `collect_every` also takes
/// `"off"`) or a number of seconds.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum DurationSetting {
    Text(String),
    Seconds(u64),
}

/// `PUT /v1/settings`: any of the settings (absent: unchanged).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct SettingsUpdate {
    /// The scheduled collection's period; `null` or `"off"`: none.
    collect_every: Option<DurationSetting>,
    /// How long after an unanswered accepted push a device is `unreachable`.
    #[schema(nullable = false)]
    unreachable_after: Option<DurationSetting>,
}

/// An upload as it is sent: bytes (a certificate in PEM or DER, a `.p12` file).
pub(crate) struct Upload;

impl utoipa::PartialSchema for Upload {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Upload {}

/// Adds the bearer scheme, the document's version, and the answers every admin route can
/// give: 401 (key missing or wrong), 500 and 503 (the store), 408 and 413 for a body.
pub(super) struct Shared;

impl Modify for Shared {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        api.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <admin API key>` (`--api-key` or `--api-key-file`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "magicpush_session",
                "The browser session's cookie (`POST /v1/session`); with it, every method but GET, HEAD and OPTIONS needs `X-CSRF-Token`",
            ))),
        );
        let error = |description: &str| {
            ResponseBuilder::new().description(description).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        let integer = || ObjectBuilder::new().schema_type(Type::Integer).build();
        let string = || ObjectBuilder::new().schema_type(Type::String).build();
        let shared: BTreeMap<&str, utoipa::openapi::Response> = BTreeMap::from([
            (
                "Unauthorized",
                error("The bearer key is missing or wrong.")
                    .header(
                        "WWW-Authenticate",
                        HeaderBuilder::new().schema(string()).build(),
                    )
                    .build(),
            ),
            (
                "TooSlow",
                error("The request body came too slowly.").build(),
            ),
            (
                "TooLarge",
                error("The request body is larger than the server's body limit.").build(),
            ),
            (
                "ServerError",
                error("A server-side failure; `request_id` (also `X-Request-Id`) names its detail in the server's log.")
                    .header("X-Request-Id", HeaderBuilder::new().schema(string()).build())
                    .build(),
            ),
            (
                "Unavailable",
                error("The store does not answer or is overloaded (or the server is stopping): retry after `Retry-After` seconds.")
                    .header(
                        "Retry-After",
                        HeaderBuilder::new()
                            .schema(integer())
                            .description(Some("Seconds to wait before retrying"))
                            .build(),
                    )
                    .build(),
            ),
        ]);
        for (name, response) in shared {
            components
                .responses
                .insert(name.to_owned(), RefOr::T(response));
        }
        for (path, item) in api.paths.paths.iter_mut() {
            // The description and the sign-in give their own answers.
            let secured = path != PATH && path != super::session::web::PATH;
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_shared(op, secured);
            }
        }
    }
}

/// A parameter left out is absent, never `null`: the `null` utoipa adds to an `Option`'s
/// schema is taken off parameters.
fn not_null(op: &mut Operation) {
    for param in op.parameters.iter_mut().flatten() {
        let Some(schema) = param.schema.as_mut() else {
            continue;
        };
        let RefOr::T(inner) = schema else {
            continue;
        };
        match inner {
            Schema::Object(object) => {
                if let SchemaType::Array(types) = &object.schema_type {
                    let kept: Vec<Type> = types
                        .iter()
                        .filter(|t| **t != Type::Null)
                        .cloned()
                        .collect();
                    if let [one] = kept.as_slice() {
                        object.schema_type = SchemaType::Type(one.clone());
                    }
                }
            }
            Schema::Array(array) => {
                if let SchemaType::Array(types) = &array.schema_type {
                    if types.contains(&Type::Null) {
                        array.schema_type = SchemaType::Type(Type::Array);
                    }
                }
            }
            Schema::OneOf(one_of) => {
                let kept: Vec<RefOr<Schema>> = one_of
                    .items
                    .iter()
                    .filter(|item| {
                        !matches!(item, RefOr::T(Schema::Object(o))
                            if o.schema_type == SchemaType::Type(Type::Null))
                    })
                    .cloned()
                    .collect();
                if let [one] = kept.as_slice() {
                    *schema = one.clone();
                }
            }
            _ => {}
        }
    }
}

fn add_shared(op: &mut Operation, secured: bool) {
    not_null(op);
    let mut add = |status: &str, name: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    if !secured {
        return;
    }
    add("401", "Unauthorized");
    add("500", "ServerError");
    add("503", "Unavailable");
    if op.request_body.is_some() {
        add("408", "TooSlow");
        add("413", "TooLarge");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", serde_json::Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// A schema as JSON.
    fn schema_of<T: ToSchema>() -> serde_json::Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    /// The names of a schema's properties.
    fn properties(schema: &serde_json::Value) -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no properties in {schema}"))
            .keys()
            .cloned()
            .collect()
    }

    /// The keys of `value`, an object.
    fn keys(value: &impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(value)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// The schemas written here for types of other crates name what those types serialise:
    /// a key or a state added there and not here fails this test.
    #[test]
    fn the_mirrored_schemas_match_what_is_sent() {
        use magicpush_store::connectivity::ConnState as Store;
        let states: BTreeSet<String> = Store::ALL.map(|s| s.as_str().to_owned()).into();
        let names = |schema: serde_json::Value| -> BTreeSet<String> {
            serde_json::from_value(schema["enum"].clone()).unwrap()
        };
        assert_eq!(names(schema_of::<ConnState>()), states);
        assert_eq!(properties(&schema_of::<StateCounts>()), states);
        use magicpush_store::cluster::{RunKind as Kind, RunState as State};
        assert_eq!(
            names(schema_of::<RunKind>()),
            [Kind::Refresh, Kind::Command]
                .map(|k| k.as_str().to_owned())
                .into()
        );
        assert_eq!(
            names(schema_of::<RunState>()),
            [State::Running, State::Finished, State::Abandoned]
                .map(|k| k.as_str().to_owned())
                .into()
        );
        // A device: every field the store serialises (none is skipped when unset).
        let now = time::OffsetDateTime::now_utc();
        let mut device = magicpush_store::Device::new("U1");
        device.identity = Some(magicpush_store::BoundIdentity::new(
            [1; 32],
            "CN=U1".into(),
            "01".into(),
            now,
            now,
        ));
        let view = crate::service::DeviceView {
            device,
            state: "responded",
            push_latency_ms: None,
            invitation: Some("inv".into()),
        };
        let device = schema_of::<Device>();
        assert_eq!(properties(&device), keys(&view));
        let required: BTreeSet<String> =
            serde_json::from_value(device["required"].clone()).unwrap();
        let mut always = keys(&view);
        always.remove("invitation");
        assert_eq!(
            required, always,
            "every device key but invitation is always sent"
        );
        assert_eq!(
            properties(&schema_of::<BoundIdentity>()),
            keys(view.device.identity.as_ref().unwrap())
        );
        assert_eq!(
            properties(&schema_of::<ErrorChainItem>()),
            keys(&magicpush_mdm::ErrorChainItem::default())
        );
        assert_eq!(
            properties(&schema_of::<Latency>()),
            keys(&magicpush_store::connectivity::Latency::default())
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_ref_resolves() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let version = doc["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1"), "{version}");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(doc
            .get("servers")
            .is_none_or(|s| s.as_array().is_some_and(Vec::is_empty)));
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for r in found {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{r} is not local"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        // Every admin operation is behind the bearer key; the document itself is not.
        assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));
        assert_eq!(
            doc["paths"][PATH]["get"]["security"],
            serde_json::json!([{}])
        );
        assert!(doc["components"]["securitySchemes"][BEARER]["scheme"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer")));
    }
}
