//! The admin API (`/v1/…`, JSON) on an axum route table. The bearer key (or a browser
//! session's cookie, with its CSRF token for a change) is checked by a layer over every route
//! ([`super::auth::require`]). Errors are `{"error": "…"}` with a
//! 4xx/5xx status; a method a route does not take is a 405 that names the ones it does.
//!
//! Routes about one tenant take `?topic=T`, which may be left out while one tenant is
//! registered (with several: 400 naming the parameter; an unknown topic: 404).
//!
//! | route | request | answer |
//! |---|---|---|
//! | `GET /v1/topics` | | `{"topics": [{"topic", "name", "apple_id", "certificate": {"subject", "serial", "not_after", "days_left", "state"}, "devices": {"total", "states": {state: n}}}], "unassigned": {"total", "states"}, "generated_at"}` |
//! | `POST /v1/topics` | a certificate as `PUT /v1/pushcert` takes it | 201 the new tenant's certificate details (as `GET /v1/pushcert`); 409 if its topic is a tenant's |
//! | `PUT /v1/topics/{topic}` | `{"name"?, "apple_id"?}` (empty clears) | the tenant's certificate details with its name and memo |
//! | `GET /v1/devices[?state=S][&topic=T][&q=Q]` | | `[{"udid", "state", "push_latency_ms", device fields…}]`, streamed; `q` (1–128 characters, trimmed): only devices whose UDID, serial number or name holds it, ignoring case |
//! | `GET /v1/devices?limit=N[&cursor=C][&state=S][&topic=T][&q=Q]` | | one page, in UDID order: `{"devices": [as above], "next_cursor": C \| null, "generated_at"}`; `limit` 1–1000; pass `next_cursor` back as `cursor` until it is `null`. A request examines at most max(10 × N, 5000) devices, so a page may be short or empty with a cursor: keep going. A bad `limit`, `cursor` or `q` (or `cursor` without `limit`): 400 |
//! | `GET /v1/devices/{udid}` | | one device object (with `"invitation"` when it enrolled through one, as on a page's rows); 404 if unknown |
//! | `GET /v1/devices/{udid}/commands` | | `{"queued": [{"command_uuid", "request_type", "queued_at", "not_now_at"}], "results": [{"command_uuid", "request_type", "status", "error_chain", "at", "raw"}]}` |
//! | `GET /v1/devices.csv[?state=S][&topic=T][&q=Q]` | | `text/csv`: UDID, Device name, Model, OS version, Serial number, Collected at, Enrolled at, State, Last seen |
//! | `POST /v1/refresh` | `{"all": true}` (every tenant), `{"all": true, "topic": T}` or `{"udids": […]}` | 202 `{"requested", "pushing", "enqueued", "already_queued", "command_uuid", "skipped": {reason: n}, "pushed_at", "run_id", "pushed_udids"?}` |
//! | `POST /v1/commands` | `{"udids": […], "request_type": "…", "params": {…}?, "push": true?, "command_uuid": "…"?, "expires_in": "24h"? \| "expires_at": "<RFC 3339>"?}` — `params` values may be `{"$data": "<base64>"}` or `{"$date": "<RFC 3339>"}`; or a plist body (the command dictionary) with `?udid=…&udid=…[&push=false]`. `ClearPasscode` gets the device's stored UnlockToken (one device per command) | 201 `{"command_uuid", "queued", "unknown", "pushing"}` |
//! | `DELETE /v1/commands/{uuid}` | | `{"command_uuid", "cancelled": n}` (taken off n queues); 404 if unknown |
//! | `DELETE /v1/devices/{udid}` | | `{"deleted": udid}`; 404 if unknown |
//! | `GET /v1/connectivity[?topic=T]` | | `{"states": {state: n}, "latency_ms": {"p50", "p99", "max", "count"}, "total", "unreachable_after_s", "generated_at"}` |
//! | `DELETE /v1/devices?all=true&confirm=TOPIC` | | `{"deleted": n, "topic"}`: that topic's devices only; 409 if no tenant or device has TOPIC |
//! | `GET /v1/pushcert[?topic=T]` | | `{"subject", "topic", "name", "apsp", "serial", "issuer", "not_before", "not_after", "days_left", "expired", "environment", "state", "warnings", "apple_id", "pending_requests"}`; 404 "no push certificate registered" |
//! | `PUT /v1/pushcert[?topic=T]` (renews T; the first certificate while none is registered) | Apple's certificate alone (PEM or DER), or PEM certificate then PEM key, or (`Content-Type: application/x-pkcs12`) a `.p12` file with its password in `X-Magicpush-P12-Password` (absent: none) | the new details; 422 if no issued request matches a certificate sent alone; 409 for another topic (E320: a renewal never adds a tenant; the body adds `"code": "E320", "registered_topic", "new_topic"`) or a renewal that does not expire later; 400 if expired, not valid yet, not MDM, or the key does not match |
//! | `DELETE /v1/pushcert[?topic=T]` | | `{"deleted": true}`: the tenant is removed; 409 while devices are enrolled with T |
//! | `PUT /v1/pushcert/memo[?topic=T]` | `{"apple_id": "…"}` (empty clears) | the details with the memo |
//! | `POST /v1/pushcert/csr` | `{"email"?, "common_name"?, "country"?}` or nothing | 201 `{"id", "file_name", "vendor_signed", "request"}` |
//! | `GET /v1/pushcert/csr` | | the last pending request's file (`Content-Disposition: attachment; filename="PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr"`) |
//! | `DELETE /v1/pushcert/csr/{id}` | | `{"withdrawn": id}`: the pending key is destroyed |
//! | `GET /v1/pushcert/requests` | | `[{"id", "file_name", "created_at", "vendor_signed", "subject", "public_key_sha256"}]` |
//! | `GET /v1/nodes` | | `{"nodes": [{"id", "name", "version", "url", "started_at", "last_heartbeat_at", "alive"}], "refreshes": [{"id", "kind", "node_id", "node"?, "state", "devices", "answered", "withdrawn", "pushed_at", "started_at", "finished_at"?}], "generated_at"}`: the servers on this store and the newest refresh runs (`running`, `finished`, `abandoned`: its node died and its unanswered pushes were taken back) |
//! | `GET\|PUT /v1/settings` | PUT: any of `{"collect_every": "24h" \| "off" \| null \| seconds, "unreachable_after": "10m" \| seconds}` | `{"collect_every": "1d" \| null, "collect_every_s", "unreachable_after", "unreachable_after_s", "source": {"collect_every", "unreachable_after"} ("stored" \| "flag" \| "default"), "collecting"}`; 400 with the reason (checked as `serve` checks its flags); stored (wins over the flags at the next start), in force on this node at once, on the others within a second (PostgreSQL `NOTIFY`; each heartbeat re-reads too) |
//! | `GET /v1/pushcert/history[?topic=T]` (without: every tenant's) | | `[{"serial", "topic", "subject", "not_after", "registered_at", "replaced_at", "apple_id"}]` |
//! | `POST /v1/enrollments` | `{"topic"?, "expires_in"?: "24h", "uses"?: 1, "note"?}` | 201 `{"id", "url", "expires_at", "uses_left", …}`: an enrollment invitation ([`enrollments`]) |
//! | `GET /v1/enrollments` | | `{"enrollments": [invitations, each with "devices": [{"udid", "enrolled_at"}]]}` |
//! | `DELETE /v1/enrollments/{id}` | | the invitation, withdrawn; 404 if unknown |
//! | `POST /v1/enrollments/challenge` | `{"enrollment_id"?, "expires_in"?: "1h"}` or nothing (a random id, one hour) | 201 `{"challenge", "enrollment_id", "expires_at"}`: a one-time SCEP challenge for `/scep` (the CSR's challengePassword); the certificate issued with it carries the enrollment id. 400 for a bad id (1–64 characters: letters, digits, `-`, `_`, `.`) or duration (1 minute to 30 days); 409 without a built-in device CA |
//! | `POST /v1/session` (outside the bearer layer; [`super::session`]) | `{"api_key": "…"}` | 201 `{"csrf_token", "expires_at", "idle_timeout_s"}` and `Set-Cookie: magicpush_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age=…` (`; Secure` over TLS); 401 wrong key; 400 malformed; 429 with `Retry-After` after too many failures |
//! | `GET /v1/session` | the cookie | 200 as above; 401 `not signed in` |
//! | `DELETE /v1/session` | the cookie and `X-CSRF-Token` | `{"signed_out": true}`, the session revoked, the cookie cleared (`Max-Age=0`) |
//! | `GET /v1/openapi.json` (no key; served beside `/healthz`, see [`super::openapi`]) | | this API's OpenAPI 3.1 description, generated from the `#[utoipa::path]` annotations here ([`AdminApi`]); 404 while the admin API is off |

mod enrollments;

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use super::body::{self, read_limited};
use super::error::ApiError;
use super::openapi::{
    ConnState as ConnStateName, Device, DeviceList, ErrorBody, SettingsUpdate, Shared, Upload,
};
use crate::pushcert::history::HistoryEntry;
use crate::pushcert::pending::PendingRequest;
use crate::pushcert::request::Subject;
use crate::service::refresh::CommandSummary;
use crate::service::views::parse_state;
use crate::service::{
    CommandRequest, ConnectivityReport, Cursor, DeviceCommands, DeviceFilter, IssuedRequest,
    NodesView, PageLimit, PagingError, PushCertView, RefreshSummary, RefreshTarget, Search,
    Service, ServiceError, TenantList, TenantUpdate,
};
use crate::settings::SettingsView;
use magicpush_mdm::json_values::dict_from_json;
use magicpush_store::connectivity::ConnState;

/// What the admin handlers share.
#[derive(Clone)]
pub(super) struct Admin {
    pub(super) service: Arc<Service>,
    /// The request body limit.
    pub(super) limit: usize,
}

/// The `/v1/…` routes. Any other path under `/v1` is a 404 here (behind the key, as the
/// routes are).
pub(super) fn routes(admin: Admin) -> Router {
    table()
        .into_iter()
        .fold(Router::new(), |router, (path, route)| {
            router.route(path, route)
        })
        .route("/v1", any(no_route))
        .route("/v1/{*rest}", any(no_route))
        .with_state(admin)
}

/// Every admin route: the one list [`routes`] serves, which the OpenAPI document must match
/// path for path and method for method (see the tests: a route added here without its
/// `#[utoipa::path]` in [`AdminApi`] fails them).
fn table() -> Vec<(&'static str, MethodRouter<Admin>)> {
    vec![
        (
            "/v1/devices",
            only(
                get(list_devices).delete(delete_all_devices),
                "GET",
                "GET, DELETE",
            ),
        ),
        ("/v1/devices.csv", only(get(export_devices), "GET", "GET")),
        (
            "/v1/devices/{udid}",
            only(
                get(device).delete(delete_device),
                "GET or DELETE",
                "GET, DELETE",
            ),
        ),
        (
            "/v1/devices/{udid}/commands",
            only(
                get(device_commands).delete(|| async {
                    refused(
                        "DELETE a command with DELETE /v1/commands/{uuid}".to_owned(),
                        "GET",
                    )
                }),
                "GET or DELETE",
                "GET",
            ),
        ),
        ("/v1/refresh", only(post(refresh), "POST", "POST")),
        ("/v1/commands", only(post(enqueue_command), "POST", "POST")),
        (
            "/v1/commands/{uuid}",
            only(axum::routing::delete(cancel_command), "DELETE", "DELETE"),
        ),
        ("/v1/connectivity", only(get(connectivity), "GET", "GET")),
        ("/v1/nodes", only(get(nodes), "GET", "GET")),
        (
            "/v1/settings",
            only(get(settings).put(put_settings), "GET or PUT", "GET, PUT"),
        ),
        (
            "/v1/pushcert",
            only(
                get(pushcert).put(replace_pushcert).delete(delete_pushcert),
                "GET, PUT or DELETE",
                "GET, PUT, DELETE",
            ),
        ),
        (
            "/v1/pushcert/csr",
            only(
                post(issue_request).get(latest_request),
                "POST or GET",
                "POST, GET",
            ),
        ),
        (
            "/v1/pushcert/csr/{id}",
            only(axum::routing::delete(withdraw_request), "DELETE", "DELETE"),
        ),
        (
            "/v1/pushcert/requests",
            only(get(pending_requests), "GET", "GET"),
        ),
        (
            "/v1/pushcert/history",
            only(get(pushcert_history), "GET", "GET"),
        ),
        ("/v1/pushcert/memo", only(put(set_memo), "PUT", "PUT")),
        (
            "/v1/topics",
            only(get(topics).post(add_topic), "GET or POST", "GET, POST"),
        ),
        ("/v1/topics/{topic}", only(put(set_topic), "PUT", "PUT")),
        (
            "/v1/enrollments",
            only(
                get(enrollments::list).post(enrollments::create),
                "GET or POST",
                "GET, POST",
            ),
        ),
        (
            "/v1/enrollments/{id}",
            only(
                axum::routing::delete(enrollments::withdraw),
                "DELETE",
                "DELETE",
            ),
        ),
        (
            "/v1/enrollments/challenge",
            only(post(enrollments::create_challenge), "POST", "POST"),
        ),
    ]
}

/// The admin API's OpenAPI document: every handler of [`table`] and `GET /v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "magicpush admin API",
        description = "The admin API of a magicpush server: devices, commands, refreshes, push certificates and tenants. Every route but this document's and the sign-in takes `Authorization: Bearer <admin API key>`, or a browser session's cookie (`POST /v1/session`) with `X-CSRF-Token` on every method but GET, HEAD and OPTIONS. Errors are `{\"error\": \"…\"}` (with `request_id` on a 5xx). A method a path does not take (`HEAD` included) is a 405 whose message and `Allow` header name the ones it does; a path under `/v1` that is no route is a 404. Routes about one tenant take `?topic=T`, which may be left out while one tenant is registered (with several: 400; an unknown topic: 404).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        list_devices,
        delete_all_devices,
        export_devices,
        device,
        delete_device,
        device_commands,
        refresh,
        enqueue_command,
        cancel_command,
        connectivity,
        nodes,
        settings,
        put_settings,
        pushcert,
        replace_pushcert,
        delete_pushcert,
        issue_request,
        latest_request,
        withdraw_request,
        pending_requests,
        pushcert_history,
        set_memo,
        topics,
        add_topic,
        set_topic,
        enrollments::create,
        enrollments::list,
        enrollments::withdraw,
        enrollments::create_challenge,
        super::openapi::openapi_json,
        super::session::web::sign_in,
        super::session::web::current,
        super::session::web::sign_out,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Shared),
    security(("bearer" = [])),
    tags((name = "admin", description = "The admin API"))
)]
pub(super) struct AdminApi;

/// The OpenAPI document, made anew (served once made: [`super::openapi::document`]).
pub(super) fn openapi() -> utoipa::openapi::OpenApi {
    AdminApi::openapi()
}

/// `route` answering any other method with a 405 `{method} not allowed on {path}; use
/// {allowed}` and `Allow: {allow}`. `HEAD` is not taken for `GET` here: the admin API has no
/// use for it.
fn only(
    route: MethodRouter<Admin>,
    allowed: &'static str,
    allow: &'static str,
) -> MethodRouter<Admin> {
    let not_allowed = move |method: Method, uri: Uri| async move {
        refused(
            format!("{method} not allowed on {}; use {allowed}", uri.path()),
            allow,
        )
    };
    route.head(not_allowed).fallback(not_allowed)
}

/// A 405 with its `Allow` header.
fn refused(message: String, allow: &'static str) -> Response {
    let mut resp = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// The device list's and export's query: `state`, `topic` and `q` filter; `limit` and
/// `cursor` page the list (see [`crate::service::paging`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    state: Option<String>,
    topic: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A paged request's page size and start.
struct Paging {
    limit: PageLimit,
    cursor: Option<Cursor>,
}

impl DeviceQuery {
    fn parse(query: Result<Query<DeviceQuery>, QueryRejection>) -> Result<Self, ApiError> {
        query.map(|Query(q)| q).map_err(bad_query)
    }

    /// The filter: `state`, `topic` and `q`.
    fn filter(&self) -> Result<DeviceFilter, ApiError> {
        let state = self
            .state
            .as_deref()
            .map(|name| {
                parse_state(name).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown state {name:?}; one of: {}",
                        ConnState::ALL.map(|s| s.as_str()).join(", ")
                    ))
                })
            })
            .transpose()?;
        let search = self
            .q
            .as_deref()
            .map(Search::parse)
            .transpose()
            .map_err(ServiceError::from)?;
        Ok(DeviceFilter {
            state,
            topic: self.topic.clone(),
            search,
        })
    }

    /// `limit` and `cursor`; `None` without `limit` (a cursor alone is a 400).
    fn paging(&self) -> Result<Option<Paging>, ApiError> {
        let Some(limit) = self.limit.as_deref() else {
            if self.cursor.is_some() {
                return Err(ServiceError::from(PagingError::NeedsLimit { param: "cursor" }).into());
            }
            return Ok(None);
        };
        let paging = || -> Result<Paging, PagingError> {
            Ok(Paging {
                limit: PageLimit::parse(limit)?,
                cursor: self.cursor.as_deref().map(Cursor::decode).transpose()?,
            })
        };
        paging().map(Some).map_err(|e| ServiceError::from(e).into())
    }
}

/// `?topic=<topic>` on the per-tenant routes: which tenant (may be left out while there is
/// one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicQuery {
    topic: Option<String>,
}

impl TopicQuery {
    fn topic(query: Result<Query<TopicQuery>, QueryRejection>) -> Result<Option<String>, ApiError> {
        let Query(TopicQuery { topic }) = query.map_err(bad_query)?;
        match topic {
            Some(t) if t.is_empty() => Err(ApiError::bad_request(
                "?topic= is empty: name a tenant's topic",
            )),
            t => Ok(t),
        }
    }
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// A path parameter, percent-decoded; 400 if it is not UTF-8 once decoded.
fn decoded(param: Result<Path<String>, PathRejection>, what: &str) -> Result<String, ApiError> {
    param
        .map(|Path(value)| value)
        .map_err(|_| ApiError::bad_request(format!("malformed percent-encoding in {what}")))
}

#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "admin",
    summary = "List devices",
    description = "Without `limit`: every device, streamed. With `limit`: one page in UDID order; pass `next_cursor` back as `cursor` until it is `null`. A request examines at most max(10 × limit, 5000) devices, so a page may be short or empty with a cursor: keep going.",
    params(
        ("state" = Option<ConnStateName>, Query, description = "Only devices in this connectivity state"),
        ("topic" = Option<String>, Query, description = "Only devices enrolled with this push topic"),
        ("q" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only devices whose UDID, serial number or name holds this text (trimmed; case ignored)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size: one page instead of the whole list"),
        ("cursor" = Option<String>, Query, description = "Where the page starts: a `next_cursor` (needs `limit`)"),
    ),
    responses(
        (status = 200, description = "The devices (an array), or one page (with `limit`)", body = DeviceList),
        (status = 400, description = "A bad state, limit, cursor or q, a cursor without limit, or an unknown parameter", body = ErrorBody),
        (status = 404, description = "No tenant has that topic", body = ErrorBody),
    )
)]
async fn list_devices(
    State(admin): State<Admin>,
    query: Result<Query<DeviceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = DeviceQuery::parse(query)?;
    let filter = query.filter()?;
    if let Some(Paging { limit, cursor }) = query.paging()? {
        let page = admin.service.devices_page(filter, limit, cursor).await?;
        return Ok(Json(page).into_response());
    }
    let json = admin.service.devices_json(filter).await?;
    Ok(listing(body::streamed(
        StatusCode::OK,
        "application/json",
        json,
    )))
}

#[utoipa::path(
    get,
    path = "/v1/devices.csv",
    tag = "admin",
    summary = "Export the devices as CSV",
    params(
        ("state" = Option<ConnStateName>, Query, description = "Only devices in this connectivity state"),
        ("topic" = Option<String>, Query, description = "Only devices enrolled with this push topic"),
        ("q" = Option<String>, Query, min_length = 1, max_length = 128, description = "Only devices whose UDID, serial number or name holds this text (trimmed; case ignored)"),
    ),
    responses(
        (status = 200, description = "UDID, Device name, Model, OS version, Serial number, Collected at, Enrolled at, State, Last seen", body = String, content_type = "text/csv",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"devices.csv\"`"))),
        (status = 400, description = "A bad state or q, limit or cursor given, or an unknown parameter", body = ErrorBody),
        (status = 404, description = "No tenant has that topic", body = ErrorBody),
    )
)]
async fn export_devices(
    State(admin): State<Admin>,
    query: Result<Query<DeviceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = DeviceQuery::parse(query)?;
    if query.limit.is_some() || query.cursor.is_some() {
        return Err(ApiError::bad_request(
            "devices.csv exports every device the filter shows: it takes state, topic and q, not limit or cursor",
        ));
    }
    let filter = query.filter()?;
    let csv = admin.service.devices_csv(filter).await?;
    let mut resp = body::streamed(StatusCode::OK, "text/csv; charset=utf-8", csv);
    resp.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"devices.csv\""),
    );
    Ok(listing(resp))
}

/// A streamed listing as the router's response: the text is still sent as it is read.
fn listing(resp: http::Response<body::Body>) -> Response {
    resp.map(axum::body::Body::new)
}

/// `?all=true&confirm=<topic>` — both required, so that no typo deletes a fleet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteAllQuery {
    all: Option<String>,
    confirm: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct DeletedDevices {
    deleted: u64,
    topic: String,
}

#[utoipa::path(
    delete,
    path = "/v1/devices",
    tag = "admin",
    summary = "Delete every device of one topic",
    params(
        ("all" = bool, Query, description = "Must be `true`"),
        ("confirm" = String, Query, min_length = 1, description = "The topic whose devices go"),
    ),
    responses(
        (status = 200, description = "How many devices were deleted", body = DeletedDevices),
        (status = 400, description = "`all=true&confirm=<topic>` missing or malformed", body = ErrorBody),
        (status = 409, description = "No tenant or device has that topic", body = ErrorBody),
    )
)]
async fn delete_all_devices(
    State(admin): State<Admin>,
    query: Result<Query<DeleteAllQuery>, QueryRejection>,
) -> Result<Json<DeletedDevices>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; DELETE /v1/devices takes all=true&confirm=<topic>",
            rejection.body_text()
        ))
    })?;
    let topic = match (query.all.as_deref(), query.confirm) {
        (Some("true"), Some(topic)) if !topic.is_empty() => topic,
        _ => return Err(ApiError::bad_request(
            "deleting every device needs ?all=true&confirm=<the current push topic>; to delete one device use DELETE /v1/devices/{udid}",
        )),
    };
    let deleted = admin.service.delete_all_devices(&topic).await?;
    Ok(Json(DeletedDevices { deleted, topic }))
}

#[utoipa::path(
    get,
    path = "/v1/devices/{udid}",
    tag = "admin",
    summary = "One device",
    params(("udid" = String, Path, description = "The device's UDID (or EnrollmentID)")),
    responses(
        (status = 200, description = "The device", body = Device),
        (status = 400, description = "The UDID is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn device(
    State(admin): State<Admin>,
    udid: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let udid = decoded(udid, "UDID")?;
    Ok(Json(admin.service.device(&udid).await?))
}

#[derive(Serialize, ToSchema)]
struct DeletedDevice {
    deleted: String,
}

#[utoipa::path(
    delete,
    path = "/v1/devices/{udid}",
    tag = "admin",
    summary = "Delete one device",
    params(("udid" = String, Path, description = "The device's UDID (or EnrollmentID)")),
    responses(
        (status = 200, description = "The device is deleted", body = DeletedDevice),
        (status = 400, description = "The UDID is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn delete_device(
    State(admin): State<Admin>,
    udid: Result<Path<String>, PathRejection>,
) -> Result<Json<DeletedDevice>, ApiError> {
    let udid = decoded(udid, "UDID")?;
    admin.service.delete_device(&udid).await?;
    Ok(Json(DeletedDevice { deleted: udid }))
}

#[utoipa::path(
    get,
    path = "/v1/devices/{udid}/commands",
    tag = "admin",
    summary = "A device's queued commands and their results",
    params(("udid" = String, Path, description = "The device's UDID (or EnrollmentID)")),
    responses(
        (status = 200, description = "Queued commands and recorded results", body = DeviceCommands),
        (status = 400, description = "The UDID is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    )
)]
async fn device_commands(
    State(admin): State<Admin>,
    udid: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let udid = decoded(udid, "UDID")?;
    Ok(Json(admin.service.device_commands(&udid).await?))
}

#[utoipa::path(
    post,
    path = "/v1/refresh",
    tag = "admin",
    summary = "Push devices so they report (DeviceInformation)",
    request_body(content = RefreshRequest, description = "`{\"all\": true}` (every tenant), `{\"all\": true, \"topic\": T}` or `{\"udids\": [...]}`"),
    responses(
        (status = 202, description = "The refresh started; the pushes go on in the background", body = RefreshSummary),
        (status = 400, description = "Not one of the three forms", body = ErrorBody),
        (status = 404, description = "No tenant has that topic", body = ErrorBody),
        (status = 409, description = "No push certificate to push with", body = ErrorBody),
    )
)]
async fn refresh(
    State(admin): State<Admin>,
    JsonBody(request): JsonBody<RefreshRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let target = match (request.all, request.udids) {
        (true, None) => match request.topic {
            Some(topic) => RefreshTarget::Tenant(topic),
            None => RefreshTarget::All,
        },
        (false, Some(_)) if request.topic.is_some() => {
            return Err(ApiError::bad_request(
                "\"topic\" goes with \"all\": true (a tenant's devices); \"udids\" name devices of any tenant",
            ))
        }
        (false, Some(udids)) if !udids.is_empty() => RefreshTarget::Devices(udids),
        (false, Some(_)) => return Err(ApiError::bad_request("udids is empty")),
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "give either \"all\": true or \"udids\", not both",
            ))
        }
        (false, None) => {
            return Err(ApiError::bad_request(
                "give {\"all\": true} or {\"udids\": [...]}",
            ))
        }
    };
    let summary = admin.service.refresh(target).await?;
    Ok((StatusCode::ACCEPTED, Json(summary)))
}

#[utoipa::path(
    post,
    path = "/v1/commands",
    tag = "admin",
    summary = "Queue an MDM command for devices",
    description = "A JSON body (`params` values may be `{\"$data\": \"<base64>\"}` or `{\"$date\": \"<RFC 3339>\"}`), or a plist body (the command dictionary) with the devices in the query. `ClearPasscode` gets the device's stored UnlockToken (one device per command).",
    params(
        ("udid" = Option<Vec<String>>, Query, description = "With a plist body: a device to queue it for (repeatable)"),
        ("push" = Option<bool>, Query, description = "With a plist body: push the devices (default true)"),
        ("expires_in" = Option<String>, Query, description = "With a plist body: expire it this long after it is queued, e.g. `24h`"),
    ),
    request_body(content(
        (CommandsRequest = "application/json"),
        (String = "application/x-plist"),
    )),
    responses(
        (status = 201, description = "Queued", body = CommandSummary),
        (status = 400, description = "A malformed body or query", body = ErrorBody),
        (status = 409, description = "The command UUID is in use, or no push certificate to push with", body = ErrorBody),
    )
)]
async fn enqueue_command(
    State(admin): State<Admin>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    Limited(bytes): Limited,
) -> Result<impl IntoResponse, ApiError> {
    let request = if is_plist(&headers) {
        let Query(query) = query.map_err(bad_query)?;
        plist_command(query, &bytes)?
    } else {
        json_command(parse_json(&bytes)?)?
    };
    let summary = admin.service.enqueue_command(request).await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

#[derive(Serialize, ToSchema)]
struct Cancelled {
    command_uuid: String,
    cancelled: usize,
}

#[utoipa::path(
    delete,
    path = "/v1/commands/{uuid}",
    tag = "admin",
    summary = "Take a queued command off every queue",
    params(("uuid" = String, Path, description = "The CommandUUID")),
    responses(
        (status = 200, description = "How many queues it was taken off", body = Cancelled),
        (status = 400, description = "The UUID is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "No such command", body = ErrorBody),
    )
)]
async fn cancel_command(
    State(admin): State<Admin>,
    uri: Uri,
    uuid: Result<Path<String>, PathRejection>,
) -> Result<Json<Cancelled>, ApiError> {
    let uuid = decoded(uuid, "the command UUID")?;
    if uuid.contains('/') {
        return Err(no_route(uri).await);
    }
    let cancelled = admin.service.cancel_command(&uuid).await?;
    Ok(Json(Cancelled {
        command_uuid: uuid,
        cancelled,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/connectivity",
    tag = "admin",
    summary = "Devices per connectivity state and push→report latency",
    params(("topic" = Option<String>, Query, min_length = 1, description = "The tenant (its push topic); may be left out while one tenant is registered")),
    responses(
        (status = 200, description = "The report", body = ConnectivityReport),
        (status = 400, description = "An empty or unneeded-but-ambiguous topic, or an unknown parameter", body = ErrorBody),
        (status = 404, description = "No tenant has that topic", body = ErrorBody),
    )
)]
async fn connectivity(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(admin.service.connectivity(topic.as_deref()).await?))
}

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "admin",
    summary = "The servers on this store and the newest refresh runs",
    responses(
        (status = 200, description = "Nodes and runs", body = NodesView),
    )
)]
async fn nodes(State(admin): State<Admin>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(admin.service.nodes().await?))
}

#[utoipa::path(
    get,
    path = "/v1/settings",
    tag = "admin",
    summary = "The run-time settings in force on this node",
    responses(
        (status = 200, description = "The settings and where each comes from", body = SettingsView),
    )
)]
async fn settings(State(admin): State<Admin>) -> Json<SettingsView> {
    Json(admin.service.settings_view())
}

#[utoipa::path(
    put,
    path = "/v1/settings",
    tag = "admin",
    summary = "Change run-time settings",
    description = "Stored (wins over the flags at the next start), in force on this node at once, on the others within a second.",
    request_body = SettingsUpdate,
    responses(
        (status = 200, description = "The settings now", body = SettingsView),
        (status = 400, description = "A value refused, with the reason (checked as `serve` checks its flags)", body = ErrorBody),
    )
)]
async fn put_settings(
    State(admin): State<Admin>,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(admin.service.put_settings(&body).await?))
}

#[utoipa::path(
    get,
    path = "/v1/pushcert",
    tag = "admin",
    summary = "A tenant's push certificate",
    params(("topic" = Option<String>, Query, min_length = 1, description = "The tenant (its push topic); may be left out while one tenant is registered")),
    responses(
        (status = 200, description = "The certificate's details", body = PushCertView),
        (status = 400, description = "An empty topic, a topic needed (several tenants), or an unknown parameter", body = ErrorBody),
        (status = 404, description = "No push certificate registered, or no tenant has that topic", body = ErrorBody),
    )
)]
async fn pushcert(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(admin.service.pushcert(topic.as_deref())?))
}

#[utoipa::path(
    get,
    path = "/v1/topics",
    tag = "admin",
    summary = "Every tenant with its certificate and devices",
    responses(
        (status = 200, description = "The tenants", body = TenantList),
    )
)]
async fn topics(State(admin): State<Admin>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(admin.service.topics().await?))
}

#[utoipa::path(
    post,
    path = "/v1/topics",
    tag = "admin",
    summary = "Add a tenant: register a push certificate of a new topic",
    params(("X-Magicpush-P12-Password" = Option<String>, Header, description = "The password of a `.p12` upload (absent: none); visible ASCII, else a 400")),
    request_body(
        description = "Apple's certificate alone (PEM or DER), or the PEM certificate then its PEM key; or, with `Content-Type: application/x-pkcs12`, a `.p12` file (its password in `X-Magicpush-P12-Password`)",
        content(
            (Upload = "application/octet-stream"),
            (String = "application/x-pem-file"),
            (Upload = "application/x-pkcs12"),
        ),
    ),
    responses(
        (status = 201, description = "The new tenant's certificate details", body = PushCertView),
        (status = 400, description = "Unreadable, expired, not valid yet, not MDM, or the key does not match", body = ErrorBody),
        (status = 409, description = "Its topic is a tenant's already", body = ErrorBody),
        (status = 422, description = "No issued request matches a certificate sent alone", body = ErrorBody),
    )
)]
async fn add_topic(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Limited(upload): Limited,
) -> Result<impl IntoResponse, ApiError> {
    let view = match pkcs12_password(&headers)? {
        None => admin.service.add_tenant(&upload).await?,
        Some(password) => admin.service.add_tenant_pkcs12(&upload, password).await?,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    put,
    path = "/v1/topics/{topic}",
    tag = "admin",
    summary = "Name a tenant or set its Apple ID memo",
    params(("topic" = String, Path, description = "The tenant's push topic")),
    request_body = TenantUpdate,
    responses(
        (status = 200, description = "The tenant's certificate details with its name and memo", body = PushCertView),
        (status = 400, description = "A malformed body or a name too long", body = ErrorBody),
        (status = 404, description = "No tenant has that topic", body = ErrorBody),
    )
)]
async fn set_topic(
    State(admin): State<Admin>,
    topic: Result<Path<String>, PathRejection>,
    JsonBody(update): JsonBody<TenantUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = decoded(topic, "the topic")?;
    Ok(Json(admin.service.set_tenant(&topic, update).await?))
}

/// The password of a PKCS#12 upload (`Content-Type: application/x-pkcs12`; the header
/// absent: `""`), or `None` for a PEM or DER upload.
fn pkcs12_password(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let is_pkcs12 = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PKCS12_CONTENT_TYPE));
    if !is_pkcs12 {
        return Ok(None);
    }
    match headers.get(PKCS12_PASSWORD_HEADER) {
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request("the X-Magicpush-P12-Password header is not visible ASCII")
        }),
        None => Ok(Some("")),
    }
}

/// The media type of a PKCS#12 upload to `PUT /v1/pushcert`.
const PKCS12_CONTENT_TYPE: &str = "application/x-pkcs12";

/// The header carrying a PKCS#12 upload's password (absent: the empty password).
const PKCS12_PASSWORD_HEADER: &str = "x-magicpush-p12-password";

#[utoipa::path(
    put,
    path = "/v1/pushcert",
    tag = "admin",
    summary = "Renew a tenant's push certificate (the first one while none is registered)",
    params(("topic" = Option<String>, Query, min_length = 1, description = "The tenant (its push topic); may be left out while one tenant is registered"), ("X-Magicpush-P12-Password" = Option<String>, Header, description = "The password of a `.p12` upload (absent: none); visible ASCII, else a 400")),
    request_body(
        description = "Apple's certificate alone (PEM or DER), or the PEM certificate then its PEM key; or, with `Content-Type: application/x-pkcs12`, a `.p12` file (its password in `X-Magicpush-P12-Password`)",
        content(
            (Upload = "application/octet-stream"),
            (String = "application/x-pem-file"),
            (Upload = "application/x-pkcs12"),
        ),
    ),
    responses(
        (status = 200, description = "The new certificate's details", body = PushCertView),
        (status = 400, description = "Unreadable, expired, not valid yet, not MDM, or the key does not match", body = ErrorBody),
        (status = 404, description = "No tenant has that topic", body = ErrorBody),
        (status = 409, description = "Another topic's certificate (a renewal never adds a tenant), or one that does not expire later", body = ErrorBody),
        (status = 422, description = "No issued request matches a certificate sent alone", body = ErrorBody),
    )
)]
async fn replace_pushcert(
    State(admin): State<Admin>,
    headers: HeaderMap,
    query: Result<Query<TopicQuery>, QueryRejection>,
    Limited(upload): Limited,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    let topic = topic.as_deref();
    let service = &admin.service;
    Ok(Json(match pkcs12_password(&headers)? {
        None => service.replace_pushcert(topic, &upload).await?,
        Some(password) => {
            service
                .replace_pushcert_pkcs12(topic, &upload, password)
                .await?
        }
    }))
}

#[derive(Serialize, ToSchema)]
struct DeletedPushCert {
    deleted: bool,
}

#[utoipa::path(
    delete,
    path = "/v1/pushcert",
    tag = "admin",
    summary = "Remove a tenant",
    params(("topic" = Option<String>, Query, min_length = 1, description = "The tenant (its push topic); may be left out while one tenant is registered")),
    responses(
        (status = 200, description = "The tenant is removed", body = DeletedPushCert),
        (status = 400, description = "An empty topic, a topic needed (several tenants), or an unknown parameter", body = ErrorBody),
        (status = 404, description = "No push certificate registered, or no tenant has that topic", body = ErrorBody),
        (status = 409, description = "Devices are enrolled with the topic", body = ErrorBody),
    )
)]
async fn delete_pushcert(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    admin.service.delete_pushcert(topic.as_deref()).await?;
    Ok(Json(DeletedPushCert { deleted: true }))
}

#[utoipa::path(
    post,
    path = "/v1/pushcert/csr",
    tag = "admin",
    summary = "Issue a push certificate request",
    request_body(content = Option<CsrRequest>, description = "The request's subject; left out: the `--csr-*` defaults"),
    responses(
        (status = 201, description = "The request, for Apple's portal", body = IssuedRequest),
        (status = 400, description = "A malformed body, or no email or common name (given or by default)", body = ErrorBody),
        (status = 409, description = "Too many requests are pending", body = ErrorBody),
    )
)]
async fn issue_request(
    State(admin): State<Admin>,
    Limited(bytes): Limited,
) -> Result<impl IntoResponse, ApiError> {
    let subject: CsrRequest = if bytes.trim_ascii().is_empty() {
        CsrRequest::default()
    } else {
        parse_json(&bytes)?
    };
    let issued = admin
        .service
        .issue_pushcert_request(Subject {
            email: subject.email,
            common_name: subject.common_name,
            country: subject.country,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[utoipa::path(
    get,
    path = "/v1/pushcert/csr",
    tag = "admin",
    summary = "Download the last pending request's file",
    responses(
        (status = 200, description = "The `.csr` file", body = String, content_type = "application/pkcs10",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr\"`"))),
        (status = 404, description = "No request is pending", body = ErrorBody),
    )
)]
async fn latest_request(State(admin): State<Admin>) -> Result<Response, ApiError> {
    let latest = admin.service.latest_pushcert_request()?;
    let disposition = format!("attachment; filename=\"{}\"", latest.file_name);
    let mut resp = (
        [(header::CONTENT_TYPE, "application/pkcs10")],
        latest.request,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

#[derive(Serialize, ToSchema)]
struct Withdrawn {
    withdrawn: String,
}

#[utoipa::path(
    delete,
    path = "/v1/pushcert/csr/{id}",
    tag = "admin",
    summary = "Withdraw a pending request (its key is destroyed)",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        (status = 200, description = "Withdrawn", body = Withdrawn),
        (status = 400, description = "The id is not UTF-8 once percent-decoded", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
    )
)]
async fn withdraw_request(
    State(admin): State<Admin>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Withdrawn>, ApiError> {
    let id = decoded(id, "the request id")?;
    admin.service.withdraw_pushcert_request(&id).await?;
    Ok(Json(Withdrawn { withdrawn: id }))
}

#[utoipa::path(
    get,
    path = "/v1/pushcert/requests",
    tag = "admin",
    summary = "The pending push certificate requests",
    responses(
        (status = 200, description = "Every pending request, without its file", body = Vec<PendingRequest>),
    )
)]
async fn pending_requests(State(admin): State<Admin>) -> impl IntoResponse {
    Json(admin.service.pushcert_requests())
}

#[utoipa::path(
    get,
    path = "/v1/pushcert/history",
    tag = "admin",
    summary = "The certificates registered, in order",
    params(("topic" = Option<String>, Query, min_length = 1, description = "One tenant's (without: every tenant's)")),
    responses(
        (status = 200, description = "The history", body = Vec<HistoryEntry>),
        (status = 400, description = "An empty topic, or an unknown parameter", body = ErrorBody),
    )
)]
async fn pushcert_history(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(admin.service.pushcert_history(topic.as_deref())))
}

#[utoipa::path(
    put,
    path = "/v1/pushcert/memo",
    tag = "admin",
    summary = "Set a tenant's Apple ID memo",
    params(("topic" = Option<String>, Query, min_length = 1, description = "The tenant (its push topic); may be left out while one tenant is registered")),
    request_body = MemoRequest,
    responses(
        (status = 200, description = "The certificate's details with the memo", body = PushCertView),
        (status = 400, description = "A malformed body, an empty topic, a topic needed, or an unknown parameter", body = ErrorBody),
        (status = 404, description = "No push certificate registered, or no tenant has that topic", body = ErrorBody),
    )
)]
async fn set_memo(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
    JsonBody(memo): JsonBody<MemoRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(
        admin
            .service
            .set_pushcert_memo(topic.as_deref(), memo.apple_id)
            .await?,
    ))
}

/// The request body, read whole under the body limit (413 past it, 408 when it comes too
/// slowly).
struct Limited(Bytes);

impl FromRequest<Admin> for Limited {
    type Rejection = ApiError;

    async fn from_request(req: Request, admin: &Admin) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        read_limited(&parts.headers, body, admin.limit)
            .await
            .map(Limited)
    }
}

/// A JSON body ([`Limited`]), whatever its `Content-Type` says.
struct JsonBody<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<Admin> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, admin: &Admin) -> Result<Self, ApiError> {
        let Limited(bytes) = Limited::from_request(req, admin).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CsrRequest {
    email: Option<String>,
    common_name: Option<String>,
    country: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    #[serde(default)]
    all: bool,
    udids: Option<Vec<String>>,
    /// With `all`: one tenant's devices.
    topic: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CommandsRequest {
    udids: Vec<String>,
    request_type: String,
    /// The command's keys; `{"$data": "<base64>"}` and `{"$date": "<RFC 3339>"}` are data
    /// and dates.
    #[schema(value_type = Option<Object>)]
    params: Option<Value>,
    push: Option<bool>,
    command_uuid: Option<String>,
    /// e.g. `"24h"`: the command expires that long after it is queued.
    expires_in: Option<String>,
    /// RFC 3339: the command expires then.
    expires_at: Option<String>,
}

/// `expires_in` (a duration from now) or `expires_at` (RFC 3339), not both.
fn expiry(
    expires_in: Option<&str>,
    expires_at: Option<&str>,
) -> Result<Option<time::OffsetDateTime>, ApiError> {
    match (expires_in, expires_at) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give expires_in or expires_at, not both",
        )),
        (Some(d), None) => {
            let d = crate::config::parse_duration(d)
                .map_err(|e| ApiError::bad_request(format!("expires_in: {e}")))?;
            Ok(Some(time::OffsetDateTime::now_utc() + d))
        }
        (None, Some(t)) => {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map(Some)
                .map_err(|e| {
                    ApiError::bad_request(format!("expires_at is not RFC 3339 ({t:?}): {e}"))
                })
        }
    }
}

/// A JSON command: typed plist values in `params` (see [`magicpush_mdm::json_values`]).
fn json_command(request: CommandsRequest) -> Result<CommandRequest, ApiError> {
    let params = match request.params {
        None | Some(Value::Null) => plist::Dictionary::new(),
        Some(Value::Object(map)) => {
            dict_from_json(map).map_err(|why| ApiError::bad_request(format!("params: {why}")))?
        }
        Some(_) => return Err(ApiError::bad_request("params must be a JSON object")),
    };
    Ok(CommandRequest {
        expires_at: expiry(request.expires_in.as_deref(), request.expires_at.as_deref())?,
        udids: request.udids,
        request_type: request.request_type,
        params,
        push: request.push.unwrap_or(true),
        uuid: request.command_uuid,
    })
}

/// A body that is a plist (`Content-Type` application/x-plist, application/xml, text/xml or
/// MDM's own), not JSON.
fn is_plist(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        ct.as_str(),
        "application/x-plist"
            | "application/xml"
            | "text/xml"
            | "application/x-apple-aspen-mdm"
            | "application/octet-stream"
    )
}

/// A plist command body (the dictionary a device receives), for the devices in the query:
/// `?udid=A&udid=B[&push=false][&expires_in=24h]`.
fn plist_command(query: Vec<(String, String)>, bytes: &[u8]) -> Result<CommandRequest, ApiError> {
    let mut udids = Vec::new();
    let mut push = true;
    let mut expires_in = None;
    for (k, v) in query {
        match k.as_str() {
            "udid" => udids.push(v),
            "expires_in" => expires_in = Some(v),
            "push" => {
                push = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::bad_request("push is true or false")),
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?} (a plist command takes ?udid=…&udid=…[&push=false])"
            )))
            }
        }
    }
    let command = magicpush_mdm::Command::from_plist(bytes)
        .map_err(|e| ApiError::bad_request(format!("command plist: {e}")))?;
    Ok(CommandRequest {
        expires_at: expiry(expires_in.as_deref(), None)?,
        udids,
        request_type: command.request_type,
        params: command.params,
        push,
        uuid: Some(command.uuid),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MemoRequest {
    apple_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use tower::ServiceExt as _;

    /// The (method, path) pairs the document describes, the document's own route aside.
    fn documented() -> BTreeSet<(Method, String)> {
        let doc = openapi();
        let mut pairs = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            // Served outside this table (the description and the browser's sign-in).
            if path == super::super::openapi::PATH || path == super::super::session::web::PATH {
                continue;
            }
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
                (Method::HEAD, &item.head),
                (Method::OPTIONS, &item.options),
                (Method::TRACE, &item.trace),
            ] {
                if op.is_some() {
                    pairs.insert((method, path.clone()));
                }
            }
        }
        pairs
    }

    /// The document cannot drift from the route table: the same paths, and on each path the
    /// documented methods are served (no 405, no "no route") and every other method is a 405.
    #[tokio::test]
    async fn the_document_describes_every_route_and_method() {
        let documented = documented();
        let doc_paths: BTreeSet<&str> = documented.iter().map(|(_, p)| p.as_str()).collect();
        let table_paths: BTreeSet<&str> = table().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            doc_paths, table_paths,
            "the OpenAPI paths (left) differ from the routes served (right)"
        );
        let service = Arc::new(Service::new(
            Arc::new(magicpush_store::MemoryStore::new()),
            magicpush_testkit::FakePusher::new(),
            crate::service::PushCertState::new(None),
            crate::service::ServiceConfig::default(),
        ));
        let router = routes(Admin {
            service,
            limit: super::super::DEFAULT_BODY_LIMIT,
        });
        for path in table_paths {
            // Every `{param}` as a value.
            let uri: String = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            for method in [
                Method::GET,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::PATCH,
                Method::HEAD,
                Method::OPTIONS,
            ] {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(&uri)
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = router.clone().oneshot(req).await.unwrap();
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let body = String::from_utf8_lossy(&body);
                if documented.contains(&(method.clone(), path.to_owned())) {
                    assert_ne!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is documented, not served: {body}"
                    );
                    assert!(
                        !body.contains("no route for"),
                        "{method} {path} is documented, not served: {body}"
                    );
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{method} {path} is served ({status}: {body}) but not documented"
                    );
                }
            }
        }
    }

    #[test]
    fn json_params_become_plist() {
        let v: Value = serde_json::json!({"Queries": ["A", "B"], "Flag": true, "N": 3, "X": 1.5});
        let Value::Object(map) = v else {
            unreachable!()
        };
        let d = dict_from_json(map).unwrap();
        assert_eq!(d.get("N").and_then(|v| v.as_signed_integer()), Some(3));
        assert_eq!(d.get("Flag").and_then(|v| v.as_boolean()), Some(true));
        assert_eq!(
            d.get("Queries").and_then(|v| v.as_array()).map(Vec::len),
            Some(2)
        );
        let Value::Object(bad) = serde_json::json!({"K": null}) else {
            unreachable!()
        };
        assert!(dict_from_json(bad).is_err());
    }
}
