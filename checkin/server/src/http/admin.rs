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
//! | `GET /v1/devices/{udid}` | | one device object; 404 if unknown |
//! | `GET /v1/devices/{udid}/commands` | | `{"queued": [{"command_uuid", "request_type", "queued_at", "not_now_at"}], "results": [{"command_uuid", "request_type", "status", "error_chain", "at", "raw"}]}` |
//! | `GET /v1/devices.csv[?state=S][&topic=T][&q=Q]` | | `text/csv`: UDID, Device name, Model, OS version, Serial number, Collected at, Enrolled at, State, Last seen |
//! | `POST /v1/refresh` | `{"all": true}` (every tenant), `{"all": true, "topic": T}` or `{"udids": […]}` | 202 `{"requested", "pushing", "enqueued", "already_queued", "command_uuid", "skipped": {reason: n}, "pushed_at", "run_id", "pushed_udids"?}` |
//! | `POST /v1/commands` | `{"udids": […], "request_type": "…", "params": {…}?, "push": true?, "command_uuid": "…"?, "expires_in": "24h"? \| "expires_at": "<RFC 3339>"?}` — `params` values may be `{"$data": "<base64>"}` or `{"$date": "<RFC 3339>"}`; or a plist body (the command dictionary) with `?udid=…&udid=…[&push=false]`. `ClearPasscode` gets the device's stored UnlockToken (one device per command) | 201 `{"command_uuid", "queued", "unknown", "pushing"}` |
//! | `DELETE /v1/commands/{uuid}` | | `{"command_uuid", "cancelled": n}` (taken off n queues); 404 if unknown |
//! | `DELETE /v1/devices/{udid}` | | `{"deleted": udid}`; 404 if unknown |
//! | `GET /v1/connectivity[?topic=T]` | | `{"states": {state: n}, "latency_ms": {"p50", "p99", "max", "count"}, "total", "unreachable_after_s", "generated_at"}` |
//! | `DELETE /v1/devices?all=true&confirm=TOPIC` | | `{"deleted": n, "topic"}`: that topic's devices only; 409 if no tenant or device has TOPIC |
//! | `GET /v1/pushcert[?topic=T]` | | `{"subject", "topic", "name", "apsp", "serial", "issuer", "not_before", "not_after", "days_left", "expired", "environment", "state", "warnings", "apple_id", "pending_requests"}`; 404 "no push certificate registered" |
//! | `PUT /v1/pushcert[?topic=T]` (renews T; the first certificate while none is registered) | Apple's certificate alone (PEM or DER), or PEM certificate then PEM key, or (`Content-Type: application/x-pkcs12`) a `.p12` file with its password in `X-Magicpush-P12-Password` (absent: none) | the new details; 422 if no issued request matches a certificate sent alone; 409 for another topic (E320: a renewal never adds a tenant) or a renewal that does not expire later; 400 if expired, not valid yet, not MDM, or the key does not match |
//! | `DELETE /v1/pushcert[?topic=T]` | | `{"deleted": true}`: the tenant is removed; 409 while devices are enrolled with T |
//! | `PUT /v1/pushcert/memo[?topic=T]` | `{"apple_id": "…"}` (empty clears) | the details with the memo |
//! | `POST /v1/pushcert/csr` | `{"email"?, "common_name"?, "country"?}` or nothing | 201 `{"id", "file_name", "vendor_signed", "request"}` |
//! | `GET /v1/pushcert/csr` | | the last pending request's file (`Content-Disposition: attachment; filename="PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr"`) |
//! | `DELETE /v1/pushcert/csr/{id}` | | `{"withdrawn": id}`: the pending key is destroyed |
//! | `GET /v1/pushcert/requests` | | `[{"id", "file_name", "created_at", "vendor_signed", "subject", "public_key_sha256"}]` |
//! | `GET /v1/nodes` | | `{"nodes": [{"id", "name", "version", "url", "started_at", "last_heartbeat_at", "alive"}], "refreshes": [{"id", "kind", "node_id", "node"?, "state", "devices", "answered", "withdrawn", "pushed_at", "started_at", "finished_at"?}], "generated_at"}`: the servers on this store and the newest refresh runs (`running`, `finished`, `abandoned`: its node died and its unanswered pushes were taken back) |
//! | `GET\|PUT /v1/settings` | PUT: any of `{"collect_every": "24h" \| "off" \| null \| seconds, "unreachable_after": "10m" \| seconds}` | `{"collect_every": "1d" \| null, "collect_every_s", "unreachable_after", "unreachable_after_s", "source": {"collect_every", "unreachable_after"} ("stored" \| "flag" \| "default"), "collecting"}`; 400 with the reason (checked as `serve` checks its flags); stored (wins over the flags at the next start), in force on this node at once, on the others within a second (PostgreSQL `NOTIFY`; each heartbeat re-reads too) |
//! | `GET /v1/pushcert/history[?topic=T]` (without: every tenant's) | | `[{"serial", "topic", "subject", "not_after", "registered_at", "replaced_at", "apple_id"}]` |
//! | `POST /v1/session` (outside the bearer layer; [`super::session`]) | `{"api_key": "…"}` | 201 `{"csrf_token", "expires_at", "idle_timeout_s"}` and `Set-Cookie: magicpush_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age=…` (`; Secure` over TLS); 401 wrong key; 400 malformed; 429 with `Retry-After` after too many failures |
//! | `GET /v1/session` | the cookie | 200 as above; 401 `not signed in` |
//! | `DELETE /v1/session` | the cookie and `X-CSRF-Token` | `{"signed_out": true}`, the session revoked, the cookie cleared (`Max-Age=0`) |

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

use super::body::{self, read_limited};
use super::error::ApiError;
use crate::pushcert::request::Subject;
use crate::service::views::parse_state;
use crate::service::{
    CommandRequest, Cursor, DeviceFilter, PageLimit, PagingError, RefreshTarget, Search, Service,
    ServiceError, TenantUpdate,
};
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
    Router::new()
        .route(
            "/v1/devices",
            only(
                get(list_devices).delete(delete_all_devices),
                "GET",
                "GET, DELETE",
            ),
        )
        .route("/v1/devices.csv", only(get(export_devices), "GET", "GET"))
        .route(
            "/v1/devices/{udid}",
            only(
                get(device).delete(delete_device),
                "GET or DELETE",
                "GET, DELETE",
            ),
        )
        .route(
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
        )
        .route("/v1/refresh", only(post(refresh), "POST", "POST"))
        .route("/v1/commands", only(post(enqueue_command), "POST", "POST"))
        .route(
            "/v1/commands/{uuid}",
            only(axum::routing::delete(cancel_command), "DELETE", "DELETE"),
        )
        .route("/v1/connectivity", only(get(connectivity), "GET", "GET"))
        .route("/v1/nodes", only(get(nodes), "GET", "GET"))
        .route(
            "/v1/settings",
            only(get(settings).put(put_settings), "GET or PUT", "GET, PUT"),
        )
        .route(
            "/v1/pushcert",
            only(
                get(pushcert).put(replace_pushcert).delete(delete_pushcert),
                "GET, PUT or DELETE",
                "GET, PUT, DELETE",
            ),
        )
        .route(
            "/v1/pushcert/csr",
            only(
                post(issue_request).get(latest_request),
                "POST or GET",
                "POST, GET",
            ),
        )
        .route(
            "/v1/pushcert/csr/{id}",
            only(axum::routing::delete(withdraw_request), "DELETE", "DELETE"),
        )
        .route(
            "/v1/pushcert/requests",
            only(get(pending_requests), "GET", "GET"),
        )
        .route(
            "/v1/pushcert/history",
            only(get(pushcert_history), "GET", "GET"),
        )
        .route("/v1/pushcert/memo", only(put(set_memo), "PUT", "PUT"))
        .route(
            "/v1/topics",
            only(get(topics).post(add_topic), "GET or POST", "GET, POST"),
        )
        .route("/v1/topics/{topic}", only(put(set_topic), "PUT", "PUT"))
        .route("/v1", any(no_route))
        .route("/v1/{*rest}", any(no_route))
        .with_state(admin)
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

#[derive(Serialize)]
struct DeletedDevices {
    deleted: u64,
    topic: String,
}

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

async fn device(
    State(admin): State<Admin>,
    udid: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let udid = decoded(udid, "UDID")?;
    Ok(Json(admin.service.device(&udid).await?))
}

#[derive(Serialize)]
struct DeletedDevice {
    deleted: String,
}

async fn delete_device(
    State(admin): State<Admin>,
    udid: Result<Path<String>, PathRejection>,
) -> Result<Json<DeletedDevice>, ApiError> {
    let udid = decoded(udid, "UDID")?;
    admin.service.delete_device(&udid).await?;
    Ok(Json(DeletedDevice { deleted: udid }))
}

async fn device_commands(
    State(admin): State<Admin>,
    udid: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let udid = decoded(udid, "UDID")?;
    Ok(Json(admin.service.device_commands(&udid).await?))
}

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

#[derive(Serialize)]
struct Cancelled {
    command_uuid: String,
    cancelled: usize,
}

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

async fn connectivity(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(admin.service.connectivity(topic.as_deref()).await?))
}

async fn nodes(State(admin): State<Admin>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(admin.service.nodes().await?))
}

async fn settings(State(admin): State<Admin>) -> Json<crate::settings::SettingsView> {
    Json(admin.service.settings_view())
}

async fn put_settings(
    State(admin): State<Admin>,
    JsonBody(body): JsonBody<Value>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(admin.service.put_settings(&body).await?))
}

async fn pushcert(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(admin.service.pushcert(topic.as_deref())?))
}

async fn topics(State(admin): State<Admin>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(admin.service.topics().await?))
}

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

#[derive(Serialize)]
struct DeletedPushCert {
    deleted: bool,
}

async fn delete_pushcert(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    admin.service.delete_pushcert(topic.as_deref()).await?;
    Ok(Json(DeletedPushCert { deleted: true }))
}

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

#[derive(Serialize)]
struct Withdrawn {
    withdrawn: String,
}

async fn withdraw_request(
    State(admin): State<Admin>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Withdrawn>, ApiError> {
    let id = decoded(id, "the request id")?;
    admin.service.withdraw_pushcert_request(&id).await?;
    Ok(Json(Withdrawn { withdrawn: id }))
}

async fn pending_requests(State(admin): State<Admin>) -> impl IntoResponse {
    Json(admin.service.pushcert_requests())
}

async fn pushcert_history(
    State(admin): State<Admin>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let topic = TopicQuery::topic(query)?;
    Ok(Json(admin.service.pushcert_history(topic.as_deref())))
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsrRequest {
    email: Option<String>,
    common_name: Option<String>,
    country: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    #[serde(default)]
    all: bool,
    udids: Option<Vec<String>>,
    /// With `all`: one tenant's devices.
    topic: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandsRequest {
    udids: Vec<String>,
    request_type: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoRequest {
    apple_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
