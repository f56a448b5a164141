//! The `/v1/session` routes, and the state they share with the admin layer
//! ([`super::super::auth::require`]): the key, the table of sessions, the limiter.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::limit::{Client, Limits, Scope, SignInLimiter};
use super::{
    clear_cookie, cookie_token, is_safe, random_secret, set_cookie, SessionRefused,
    SessionSettings, SessionView, Sessions, CSRF_HEADER, MAX_SESSIONS,
};
use crate::http::auth::AdminKey;
use crate::http::body::read_limited;
use crate::http::error::ApiError;
use crate::http::openapi::ErrorBody;
use crate::http::server::ConnInfo;

/// The admin key, the sessions it was exchanged for, and the failed sign-ins.
pub(crate) struct Console {
    key: AdminKey,
    body_limit: usize,
    sessions: Mutex<Sessions>,
    limiter: Mutex<SignInLimiter>,
}

impl Console {
    /// Whether the admin API (and so the console) is on.
    pub(crate) fn admin_enabled(&self) -> bool {
        self.key.is_enabled()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing held under these locks can be left half-changed by a panic that matters.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gauge(len: usize) {
    ::metrics::gauge!("magicpush_admin_sessions").set(len as f64);
}

fn signins(outcome: &'static str) {
    ::metrics::counter!("magicpush_admin_signins_total", "outcome" => outcome).increment(1);
}

impl Console {
    /// No session yet; the default lifetimes.
    pub(crate) fn new(key: AdminKey, body_limit: usize) -> Self {
        Console {
            key,
            body_limit,
            sessions: Mutex::new(Sessions::new(SessionSettings::default(), MAX_SESSIONS)),
            limiter: Mutex::new(SignInLimiter::new(Limits::default())),
        }
    }

    /// The admin key.
    pub(crate) fn key(&self) -> &AdminKey {
        &self.key
    }

    /// Sets the sessions' lifetimes.
    pub(crate) fn configure(&self, settings: SessionSettings) {
        lock(&self.sessions).set_settings(settings);
    }

    /// The lifetimes in force.
    pub(crate) fn settings(&self) -> SessionSettings {
        lock(&self.sessions).settings()
    }

    /// Authenticates a request by its cookie: a live session, and for a method that changes
    /// something the session's CSRF token in `X-CSRF-Token`. The session's idle timeout
    /// restarts.
    pub(crate) fn authenticate(
        &self,
        method: &Method,
        headers: &http::HeaderMap,
        now: Instant,
    ) -> Result<SessionView, SessionRefused> {
        let token = cookie_token(headers).ok_or(SessionRefused::NotSignedIn)?;
        let mut sessions = lock(&self.sessions);
        let result = if is_safe(method) {
            sessions
                .touch(token, now)
                .ok_or(SessionRefused::NotSignedIn)
        } else {
            let csrf = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
            sessions.touch_with_csrf(token, csrf, now)
        };
        gauge(sessions.len());
        result
    }
}

impl From<SessionRefused> for ApiError {
    fn from(refused: SessionRefused) -> Self {
        let status = match refused {
            SessionRefused::NotSignedIn => StatusCode::UNAUTHORIZED,
            SessionRefused::Csrf => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, refused.to_string())
    }
}

/// Where the session lives.
pub(in crate::http) const PATH: &str = "/v1/session";

/// `POST|GET|DELETE /v1/session`, outside the bearer layer.
pub(in crate::http) fn routes(console: Arc<Console>) -> Router {
    let not_allowed = |method: Method, uri: Uri| async move {
        let mut resp = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} not allowed on {}; use POST, GET or DELETE",
                uri.path()
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
        no_store(resp)
    };
    Router::new()
        .route(
            PATH,
            post(sign_in)
                .get(current)
                .delete(sign_out)
                .head(not_allowed)
                .fallback(not_allowed),
        )
        .with_state(console)
}

/// The largest sign-in body read (a key is far shorter).
const SIGN_IN_LIMIT: usize = 16 * 1024;

/// `POST /v1/session`'s body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct SignIn {
    /// The admin API key the server was started with.
    api_key: String,
}

/// A session as the console reads it.
#[derive(Serialize, utoipa::ToSchema)]
pub(in crate::http) struct View {
    /// Send it as `X-CSRF-Token` with every request but GET, HEAD and OPTIONS.
    csrf_token: String,
    /// When the session ends at the latest (RFC 3339, UTC).
    expires_at: String,
    /// The session ends after this many seconds unused.
    idle_timeout_s: u64,
}

/// `DELETE /v1/session`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(in crate::http) struct SignedOut {
    signed_out: bool,
}

impl From<SessionView> for View {
    fn from(v: SessionView) -> Self {
        View {
            csrf_token: v.csrf_token,
            expires_at: rfc3339(v.expires_at),
            idle_timeout_s: v.idle_timeout_s,
        }
    }
}

/// UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The answer with `Cache-Control: no-store`: nothing of a session is cached.
fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(err: ApiError) -> Response {
    no_store(err.into_response())
}

fn with_cookie(mut resp: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    no_store(resp)
}

/// The peer's address for the log.
fn peer(ip: Option<std::net::IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// The connection the request came on (none when the app is driven directly, in tests).
fn connection(req: &Request) -> (Option<std::net::IpAddr>, bool) {
    let conn = req.extensions().get::<ConnInfo>();
    (conn.map(|c| c.peer.ip()), conn.is_some_and(|c| c.tls))
}

/// Sign in: the admin API key for a session cookie.
#[utoipa::path(
    post,
    path = "/v1/session",
    tag = "admin",
    summary = "Sign in (browser)",
    description = "Trades the admin API key for a session: `Set-Cookie: magicpush_session=…; Path=/; HttpOnly; SameSite=Strict; Max-Age=…` (`Secure` over TLS) and the session's CSRF token. Failed sign-ins are limited per address and in all (429).",
    security(()),
    request_body(content = SignIn, content_type = "application/json"),
    responses(
        (status = 201, description = "Signed in; the cookie is set", body = View,
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, description = "Not `{\"api_key\": \"…\"}`", body = ErrorBody),
        (status = 401, description = "Wrong API key", body = ErrorBody),
        (status = 404, description = "The admin API is off", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds until sign-in is taken again"))),
    )
)]
pub(in crate::http) async fn sign_in(
    State(console): State<Arc<Console>>,
    req: Request,
) -> Response {
    if !console.key.is_enabled() {
        return error(ApiError::admin_disabled());
    }
    let (ip, tls) = connection(&req);
    let client = Client::of(ip);
    let (parts, body) = req.into_parts();
    let parsed = read_limited(&parts.headers, body, console.body_limit.min(SIGN_IN_LIMIT))
        .await
        .and_then(|bytes| {
            serde_json::from_slice::<SignIn>(&bytes).map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid JSON body: {e}; expected {{\"api_key\": \"…\"}}"
                ))
            })
        });
    let presented = match parsed {
        Ok(p) => p,
        Err(err) => {
            signins("bad_request");
            return error(err);
        }
    };
    let now = Instant::now();
    let verdict = {
        let mut limiter = lock(&console.limiter);
        limiter.check(client, now).map(|()| {
            let right = console.key.matches(presented.api_key.as_bytes());
            if !right {
                limiter.failed(client, now);
            }
            right
        })
    };
    match verdict {
        Err(limited) => {
            signins("limited");
            if limited.first {
                let scope = match limited.scope {
                    Scope::Address => "this address",
                    Scope::Global => "all addresses together",
                };
                tracing::warn!(
                    peer = %client,
                    retry_after_s = limited.retry_after_s,
                    "admin sign-in refused: too many failed sign-ins from {scope}"
                );
            }
            let mut err = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many failed sign-ins; try again in {} s",
                    limited.retry_after_s
                ),
            );
            err.retry_after = Some(u32::try_from(limited.retry_after_s).unwrap_or(u32::MAX));
            error(err)
        }
        Ok(false) => {
            signins("wrong_key");
            tracing::info!(peer = %peer(ip), "admin sign-in with a wrong API key");
            error(ApiError::unauthorized("wrong API key"))
        }
        Ok(true) => {
            signins("ok");
            let issued = {
                let mut sessions = lock(&console.sessions);
                let issued =
                    sessions.insert(&random_secret(), &random_secret(), now, SystemTime::now());
                gauge(sessions.len());
                issued
            };
            if issued.evicted {
                tracing::info!("{MAX_SESSIONS} admin sessions live: the oldest was ended");
            }
            tracing::info!(peer = %peer(ip), "admin signed in (browser session)");
            let cookie = set_cookie(&issued.token, issued.max_age, tls);
            let resp = (StatusCode::CREATED, Json(View::from(issued.view))).into_response();
            with_cookie(resp, cookie)
        }
    }
}

/// The session of the cookie sent: its CSRF token again (a reloaded page).
#[utoipa::path(
    get,
    path = "/v1/session",
    tag = "admin",
    summary = "The current session (browser)",
    security(("session" = [])),
    responses(
        (status = 200, description = "Signed in", body = View),
        (status = 401, description = "No live session (`not signed in`)", body = ErrorBody),
        (status = 404, description = "The admin API is off", body = ErrorBody),
    )
)]
pub(in crate::http) async fn current(
    State(console): State<Arc<Console>>,
    req: Request,
) -> Response {
    if !console.key.is_enabled() {
        return error(ApiError::admin_disabled());
    }
    match console.authenticate(&Method::GET, req.headers(), Instant::now()) {
        Ok(view) => no_store(Json(View::from(view)).into_response()),
        Err(refused) => error(refused.into()),
    }
}

/// Sign out: the session ends at once and the cookie is cleared.
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "admin",
    summary = "Sign out (browser)",
    security(("session" = [])),
    params(("X-CSRF-Token" = String, Header, description = "The session's CSRF token")),
    responses(
        (status = 200, description = "Signed out; the cookie is cleared", body = SignedOut),
        (status = 401, description = "No live session (`not signed in`)", body = ErrorBody),
        (status = 403, description = "Missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "The admin API is off", body = ErrorBody),
    )
)]
pub(in crate::http) async fn sign_out(
    State(console): State<Arc<Console>>,
    req: Request,
) -> Response {
    if !console.key.is_enabled() {
        return error(ApiError::admin_disabled());
    }
    let (ip, tls) = connection(&req);
    if let Err(refused) = console.authenticate(&Method::DELETE, req.headers(), Instant::now()) {
        return error(refused.into());
    }
    if let Some(token) = cookie_token(req.headers()) {
        let mut sessions = lock(&console.sessions);
        sessions.revoke(token);
        gauge(sessions.len());
    }
    tracing::info!(peer = %peer(ip), "admin signed out (browser session)");
    let resp = Json(SignedOut { signed_out: true }).into_response();
    with_cookie(resp, clear_cookie(tls))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::http::{App, DeviceAuth, DEFAULT_BODY_LIMIT};
    use crate::service::{PushCertState, Service, ServiceConfig};

    fn app(key: Option<&str>) -> App {
        let service = Arc::new(Service::new(
            Arc::new(magicpush_store::MemoryStore::new()),
            magicpush_testkit::FakePusher::new(),
            PushCertState::new(None),
            ServiceConfig::default(),
        ));
        App::new(
            service,
            AdminKey::new(key),
            DEFAULT_BODY_LIMIT,
            DeviceAuth::Off,
        )
    }

    async fn post(app: &App, body: &'static str) -> http::Response<crate::http::Body> {
        let req = http::Request::post("/v1/session")
            .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
            .unwrap();
        app.handle(req).await
    }

    #[tokio::test]
    async fn without_a_connection_the_client_is_one_unknown_peer_and_not_tls() {
        let app = app(Some("k")).with_sessions(SessionSettings {
            ttl: Duration::from_secs(3600),
            idle: Duration::from_secs(600),
        });
        assert_eq!(app.session_settings().idle, Duration::from_secs(600));
        let resp = post(&app, r#"{"api_key": "k"}"#).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.ends_with("; Max-Age=3600"), "{cookie}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["idle_timeout_s"], 600);
        for _ in 0..5 {
            let resp = post(&app, r#"{"api_key": "x"}"#).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
        let resp = post(&app, r#"{"api_key": "k"}"#).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        for body in ["", "{", r#"{"api_key": 1}"#, r#"{"api_key": "k", "x": 1}"#] {
            assert_eq!(
                post(&app, body).await.status(),
                StatusCode::BAD_REQUEST,
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn with_the_admin_api_off_sign_in_is_404() {
        let resp = post(&app(None), r#"{"api_key": ""}"#).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    }
}
