//! The HTTP edge: routing, device endpoints, the admin API, TLS and graceful shutdown.
//! Handlers are thin: they read the body, call the [`Service`], and
//! map its answer or error to a response in one place ([`error`]).
//!
//! Device requests are recognised first, by their exact path, and handled directly: the
//! check-in path allocates and boxes nothing for routing. Everything else goes to an axum
//! route table built once ([`App::new`]): `/healthz`, `/metrics`, the admin API and the
//! console.
//!
//! | route | who | what |
//! |---|---|---|
//! | `PUT /mdm/checkin`, `PUT /mdm/server`, `PUT /mdm` | devices | check-ins, command reports (plist) |
//! | `GET /healthz`, `GET /metrics` | anyone | liveness, Prometheus text |
//! | `GET\|POST /scep` | devices (no key; a PKIOperation needs a challenge or a valid certificate) | SCEP of the built-in device CA ([`scep`]) |
//! | `GET /v1/openapi.json` | anyone, while the admin API is on | the admin API's OpenAPI 3.1 description |
//! | `/v1/…` | `Authorization: Bearer <key>`, or a session cookie (and `X-CSRF-Token`) | the admin API (JSON, CSV) |
//! | `POST\|GET\|DELETE /v1/session` | the key once, then the cookie | browser sign-in ([`session`]) |
//! | `GET /ui/…` | anyone, while the admin API is on (its data needs the session) | the console's page and files ([`ui`]) |

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use http::{Method, Request, Response, StatusCode, Uri};
use serde::Serialize;
use tower::ServiceExt as _;

pub mod auth;
pub mod body;
pub mod early;
pub mod enroll;
pub mod error;
pub mod identity;
pub mod metrics;
pub(crate) mod openapi;
pub mod scep;
pub mod server;
pub mod session;
pub mod timing;
pub mod tls;

mod admin;
mod device;
pub mod ui;

pub use auth::AdminKey;
pub use body::{Body, DEFAULT_BODY_LIMIT};
pub use error::ApiError;
pub use identity::{DeviceAuth, PeerCertificate};
pub use server::{spawn, ConnInfo, ListenerSettings, ServerHandle};
pub use session::SessionSettings;

use crate::service::{Endpoint, Service};

/// Everything a request handler needs.
pub struct App {
    service: Arc<Service>,
    body_limit: usize,
    device_auth: DeviceAuth,
    metrics: metrics::RequestMetrics,
    /// The admin key and the browser sessions it was exchanged for.
    console: Arc<session::web::Console>,
    /// Every route but the device endpoints'.
    router: Router,
}

impl App {
    /// Routes requests to `service`; the admin API is on only with a key. Device requests
    /// are authenticated as `device_auth` says (there is no default: turning it off is a
    /// decision).
    pub fn new(
        service: Arc<Service>,
        admin_key: AdminKey,
        body_limit: usize,
        device_auth: DeviceAuth,
    ) -> Self {
        metrics::handle();
        let console = Arc::new(session::web::Console::new(admin_key, body_limit));
        let router = router(&service, &console, body_limit, &device_auth);
        App {
            service,
            body_limit,
            device_auth,
            metrics: metrics::RequestMetrics::new(),
            console,
            router,
        }
    }

    /// The same app with these browser session lifetimes (`--session-ttl`,
    /// `--session-idle`; default 12 h and 30 min).
    pub fn with_sessions(self, settings: SessionSettings) -> Self {
        self.console.configure(settings);
        self
    }

    /// The browser session lifetimes in force.
    pub fn session_settings(&self) -> SessionSettings {
        self.console.settings()
    }

    /// An app on `store` that pushes through `pusher`, with no push certificate, no admin key
    /// and the default body limit: what tests and benchmarks drive (with a scripted pusher).
    pub fn with_pusher(
        store: Arc<dyn magicpush_store::Store>,
        pusher: Arc<dyn crate::push::PushSender>,
        device_auth: DeviceAuth,
    ) -> Self {
        let service = Arc::new(Service::new(
            store,
            pusher,
            crate::service::PushCertState::new(None),
            crate::service::ServiceConfig::default(),
        ));
        App::new(
            service,
            AdminKey::new(None),
            DEFAULT_BODY_LIMIT,
            device_auth,
        )
    }

    /// How device requests are authenticated.
    pub fn device_auth(&self) -> &DeviceAuth {
        &self.device_auth
    }

    /// Answers one request. Never panics on input; every error becomes a response. A
    /// response given before the whole body was read waits for the rest of it, read and
    /// discarded within bounds ([`early`]), so that the client reads it.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let started = std::time::Instant::now();
        let resp = self.route(&method, &path, req).await;
        self.metrics.record(
            metrics::route_index(&path),
            resp.status(),
            started.elapsed().as_secs_f64(),
        );
        tracing::debug!(
            %method,
            %path,
            status = resp.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "request"
        );
        resp
    }

    async fn route<B>(&self, method: &Method, path: &str, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let device_endpoint = match path {
            "/mdm/checkin" => Some(Endpoint::Checkin),
            "/mdm/server" => Some(Endpoint::Server),
            "/mdm" => Some(Endpoint::Either),
            _ => None,
        };
        let drain_limit = early::drain_limit(self.body_limit);
        let (parts, body) = req.into_parts();
        let mut body = early::Watched::new(body, &parts.headers);
        if let Some(endpoint) = device_endpoint {
            let resp = if method != Method::PUT {
                body::text_error(&method_not_allowed("PUT"))
            } else {
                // Boxed, as the routed requests below: inline, the handler's few KB of future
                // state would be copied whole into the request's task on every spawn.
                Box::pin(device::handle(
                    &self.service,
                    endpoint,
                    &parts,
                    &mut body,
                    self.body_limit,
                    &self.device_auth,
                ))
                .await
            };
            early::finish(&mut body, drain_limit).await;
            return resp;
        }
        // The router owns the body it is given: lent, it comes back when dropped.
        let (lent, mut returned) = early::Lent::new(body);
        let req = Request::from_parts(parts, lent);
        // Boxed: the router's future would otherwise size (and be copied with) every device
        // request's future as well.
        let resp = match Box::pin(self.router.clone().oneshot(req)).await {
            Ok(resp) => resp.map(Body::routed),
            Err(never) => match never {},
        };
        // Dropped with the request, as a rule; a body still held elsewhere is left alone.
        if let Ok(mut body) = returned.try_recv() {
            early::finish(&mut body, drain_limit).await;
        }
        resp
    }
}

/// The route table of everything but the device endpoints: `/healthz` and `/metrics` (plain
/// text errors), and the admin API behind its key (JSON errors).
fn router(
    service: &Arc<Service>,
    console: &Arc<session::web::Console>,
    body_limit: usize,
    device_auth: &DeviceAuth,
) -> Router {
    let admin_enabled = console.admin_enabled();
    let admin = admin::routes(admin::Admin {
        service: Arc::clone(service),
        limit: body_limit,
    })
    .layer(axum::middleware::from_fn_with_state(
        Arc::clone(console),
        auth::require,
    ))
    // Sign-in takes the key in its body: outside the bearer layer.
    .merge(session::web::routes(Arc::clone(console)));
    let health = Health {
        service: Arc::clone(service),
        device_auth: device_auth.describe().into(),
    };
    let router = Router::new()
        .route(
            "/healthz",
            get(healthz).fallback(|| async { text_error(&method_not_allowed("GET"), "GET, HEAD") }),
        )
        .route(
            "/metrics",
            get(render_metrics)
                .head(|| async { text_error(&method_not_allowed("GET"), "GET") })
                .fallback(|| async { text_error(&method_not_allowed("GET"), "GET") }),
        )
        .with_state(health)
        // The admin API's description: without the key, so outside its layer.
        .route(openapi::PATH, openapi::route(admin_enabled))
        .merge(admin);
    let router = match scep::routes(service) {
        Some(scep) => router.merge(scep),
        None => router,
    };
    let router = match enroll::routes(service) {
        Some(enroll) => router.merge(enroll),
        None => router,
    };
    // The console is served with the admin API it calls, and only then.
    let router = if admin_enabled {
        router.merge(ui::routes())
    } else {
        router
    };
    router.fallback(|uri: Uri| async move {
        let path = uri.path();
        text_error(&ApiError::not_found(format!("no route for {path}")), "")
    })
}

/// What `/healthz` reads.
#[derive(Clone)]
struct Health {
    service: Arc<Service>,
    device_auth: Arc<str>,
}

/// `/healthz`'s answer.
#[derive(Serialize)]
struct HealthView<'a> {
    status: &'static str,
    /// This node's name (`--node-name`) and its id (fresh at each start).
    node: &'a str,
    node_id: &'a str,
    device_auth: &'a str,
    push_certificate: &'static str,
    /// Whether the store's database answers: `ok`, `unreachable` (cannot connect), or
    /// `error` (another failure, in `error`).
    database: &'static str,
    /// Why the server is unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn healthz(
    axum::extract::State(health): axum::extract::State<Health>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (status, database, error) = match health.service.health().await {
        Ok(()) => (StatusCode::OK, "ok", None),
        // Logged with its detail under a request id; the public answer says what failed,
        // not SQLite's words.
        Err(err) => {
            let database = match &err {
                crate::service::ServiceError::Store(magicpush_store::StoreError::Unavailable {
                    ..
                }) => "unreachable",
                _ => "error",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                database,
                Some(ApiError::from(err).message),
            )
        }
    };
    let view = HealthView {
        status: if error.is_none() { "ok" } else { "unavailable" },
        node: health.service.node_name(),
        node_id: health.service.node_id(),
        device_auth: &health.device_auth,
        push_certificate: health.service.pushcert_state(),
        database,
        error,
    };
    (status, axum::Json(view)).into_response()
}

async fn render_metrics() -> axum::response::Response {
    match metrics::render() {
        Some(text) => body::with_body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            text,
        )
        .map(axum::body::Body::new),
        None => text_error(
            &ApiError::unavailable(
                "metrics recorder not installed (another recorder was installed first)",
            ),
            "",
        ),
    }
}

/// A plain-text error as the router's response, with `Allow` when given (a 405).
fn text_error(err: &ApiError, allow: &'static str) -> axum::response::Response {
    let mut resp = body::text_error(err).map(axum::body::Body::new);
    if !allow.is_empty() {
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    }
    resp
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here; use {allowed}"),
    )
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};

    use super::*;
    use magicpush_sqlite::SqliteStore;
    use magicpush_store::{Store, StoreError};

    async fn get(app: &App, path: &str) -> (StatusCode, serde_json::Value) {
        let req = Request::get(path)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = app.handle(req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    /// An app on `store` with a fake pusher, no admin key and no device authentication.
    fn app_on(store: Arc<dyn Store>) -> App {
        App::with_pusher(store, magicpush_testkit::FakePusher::new(), DeviceAuth::Off)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_store_writer_turns_healthz_red() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let store: Arc<dyn Store> = sqlite.clone();
        let app = app_on(store);
        let (status, health) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::OK, "{health}");
        sqlite.kill_writer_for_tests().await;
        let (status, health) = get(&app, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
        assert_eq!(health["status"], "unavailable");
        assert!(
            health["error"].as_str().unwrap().contains("closed"),
            "{health}"
        );
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_and_status() {
        let store: Arc<dyn Store> = Arc::new(magicpush_store::MemoryStore::new());
        let app = app_on(store);
        for _ in 0..3 {
            let req = Request::put("/mdm/checkin")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"<dict/>",
                )))
                .unwrap();
            assert_eq!(app.handle(req).await.status(), StatusCode::BAD_REQUEST);
        }
        let text = metrics::render().expect("the recorder is installed");
        let count = |prefix: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        };
        // Other tests of this binary share the recorder: at least this test's three.
        assert!(
            count("magicpush_http_responses_total{route=\"mdm_checkin\",status=\"400\"}") >= 3.0
        );
        assert!(count("magicpush_http_request_seconds_count{route=\"mdm_checkin\"}") >= 3.0);
    }

    /// An app with the admin key `k` on an empty in-memory store.
    fn admin_app() -> App {
        let service = Arc::new(Service::new(
            Arc::new(magicpush_store::MemoryStore::new()),
            magicpush_testkit::FakePusher::new(),
            crate::service::PushCertState::new(None),
            crate::service::ServiceConfig::default(),
        ));
        App::new(
            service,
            AdminKey::new(Some("k")),
            DEFAULT_BODY_LIMIT,
            DeviceAuth::Off,
        )
    }

    async fn call(app: &App, method: Method, path: &str, key: bool) -> Response<Body> {
        let mut req = Request::builder().method(method).uri(path);
        if key {
            req = req.header(http::header::AUTHORIZATION, "Bearer k");
        }
        app.handle(req.body(Empty::<bytes::Bytes>::new()).unwrap())
            .await
    }

    async fn text_of(resp: Response<Body>) -> String {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn the_console_is_served_only_with_the_admin_api() {
        let on = admin_app();
        let page = call(&on, Method::GET, "/ui/", false).await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page
            .headers()
            .contains_key(http::header::CONTENT_SECURITY_POLICY));
        assert!(text_of(page).await.contains("/ui/js/main.js"));
        // Its data is not: the page's calls need the key or a session.
        let data = call(&on, Method::GET, "/v1/connectivity", false).await;
        assert_eq!(data.status(), StatusCode::UNAUTHORIZED);
        let off = App::with_pusher(
            Arc::new(magicpush_store::MemoryStore::new()),
            magicpush_testkit::FakePusher::new(),
            DeviceAuth::Off,
        );
        for path in ["/ui/", "/ui/js/main.js", "/v1/openapi.json"] {
            let resp = call(&off, Method::GET, path, false).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn the_route_table_keeps_statuses_messages_and_the_key() {
        let app = admin_app();
        // Behind the key: a route, and a path that is none.
        for path in ["/v1/devices", "/v1/nope", "/v1"] {
            let resp = call(&app, Method::GET, path, false).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(resp.headers()[http::header::WWW_AUTHENTICATE], "Bearer");
        }
        let resp = call(&app, Method::GET, "/v1/nope", true).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(text_of(resp).await, r#"{"error":"no route for /v1/nope"}"#);
        // A method the route does not take: 405 naming those it does, in the body and `Allow`.
        let resp = call(&app, Method::POST, "/v1/devices/A%20B", true).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[http::header::ALLOW], "GET, DELETE");
        assert_eq!(
            text_of(resp).await,
            r#"{"error":"POST not allowed on /v1/devices/A%20B; use GET or DELETE"}"#
        );
        let resp = call(&app, Method::HEAD, "/v1/connectivity", true).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let resp = call(&app, Method::DELETE, "/v1/devices/X/commands", true).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(text_of(resp).await.contains("DELETE /v1/commands/{uuid}"));
        // Path parameters are percent-decoded; a domain error keeps its words and its status.
        let resp = call(&app, Method::GET, "/v1/devices/A%20B", true).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(text_of(resp).await, r#"{"error":"no device A B"}"#);
        let resp = call(&app, Method::GET, "/v1/devices/%FF", true).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let resp = call(&app, Method::DELETE, "/v1/commands/C%2FD", true).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(text_of(resp)
            .await
            .contains("no route for /v1/commands/C%2FD"));
        // Typed queries: an unknown parameter or state is a 400.
        for path in ["/v1/devices?bogus=1", "/v1/devices?state=bogus"] {
            let resp = call(&app, Method::GET, path, true).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        }
        let resp = call(&app, Method::GET, "/v1/devices?state=never_pushed", true).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(text_of(resp).await, "[]");
        // Outside the admin API: plain-text errors, no key needed.
        let resp = call(&app, Method::GET, "/nope", false).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(text_of(resp).await, "no route for /nope\n");
        let resp = call(&app, Method::POST, "/healthz", false).await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(text_of(resp).await, "method not allowed here; use GET\n");
        let resp = call(&app, Method::HEAD, "/healthz", false).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    /// The OpenAPI document: no key needed while the admin API is on; a 404 as every `/v1`
    /// route while it is off; other methods are a 405.
    #[tokio::test]
    async fn the_openapi_document_needs_no_key_and_only_an_admin_api() {
        let app = admin_app();
        let resp = call(&app, Method::GET, "/v1/openapi.json", false).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        let doc: serde_json::Value = serde_json::from_str(&text_of(resp).await).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["paths"]["/v1/devices"]["get"].is_object());
        let resp = call(&app, Method::GET, "/v1/openapi.json", true).await;
        assert_eq!(resp.status(), StatusCode::OK);
        for method in [Method::POST, Method::HEAD, Method::DELETE] {
            let resp = call(&app, method.clone(), "/v1/openapi.json", false).await;
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(resp.headers()[http::header::ALLOW], "GET");
        }
        // The admin API stays behind the key.
        let resp = call(&app, Method::GET, "/v1/openapi.jsonx", false).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let off = app_on(Arc::new(magicpush_store::MemoryStore::new()));
        for method in [Method::GET, Method::POST, Method::HEAD] {
            let resp = call(&off, method.clone(), "/v1/openapi.json", false).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method}");
            if method != Method::HEAD {
                assert!(text_of(resp).await.contains("admin API disabled"));
            }
        }
    }

    #[tokio::test]
    async fn a_push_without_a_certificate_is_409_in_the_services_words() {
        let app = admin_app();
        let req = Request::post("/v1/refresh")
            .header(http::header::AUTHORIZATION, "Bearer k")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"all": true}"#,
            )))
            .unwrap();
        let resp = app.handle(req).await;
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        let body: serde_json::Value = serde_json::from_str(&text_of(resp).await).unwrap();
        assert_eq!(
            body["error"],
            crate::service::pushcert::NO_CERTIFICATE,
            "{body}"
        );
    }

    #[test]
    fn an_unreachable_database_is_503_with_retry_after() {
        let err = ApiError::from(crate::service::ServiceError::from(
            StoreError::Unavailable {
                op: "commit",
                detail: "error connecting to server: Connection refused (os error 111)".into(),
            },
        ));
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            err.message.contains("database does not answer"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("refused"), "{}", err.message);
        let resp = body::text_error(&err);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
    }

    #[test]
    fn an_overloaded_store_is_503_with_retry_after() {
        let err = ApiError::from(crate::service::ServiceError::from(StoreError::Overloaded {
            queued: 8192,
        }));
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        let resp = body::text_error(&err);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
