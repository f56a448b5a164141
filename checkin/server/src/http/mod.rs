//! The HTTP edge: routing, device endpoints, the admin API, TLS and graceful shutdown.
//! Handlers are thin: they read the body, call the [`Service`], and
//! map its answer or error to a response in one place ([`error`]).
//!
//! | route | who | what |
//! |---|---|---|
//! | `PUT /mdm/checkin`, `PUT /mdm/server`, `PUT /mdm` | devices | check-ins, command reports (plist) |
//! | `GET /healthz`, `GET /metrics` | anyone | liveness, Prometheus text |
//! | `/v1/…` | `Authorization: Bearer <key>` | the admin API (JSON, CSV) |

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};

pub mod auth;
pub mod body;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod server;
pub mod timing;
pub mod tls;

mod admin;
mod device;

pub use auth::AdminKey;
pub use body::{Body, DEFAULT_BODY_LIMIT};
pub use error::ApiError;
pub use identity::{DeviceAuth, PeerCertificate};
pub use server::{spawn, ListenerSettings, ServerHandle};

use crate::service::{Endpoint, Service};

/// Everything a request handler needs.
pub struct App {
    service: Arc<Service>,
    admin_key: AdminKey,
    body_limit: usize,
    device_auth: DeviceAuth,
    metrics: metrics::RequestMetrics,
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
        App {
            service,
            admin_key,
            body_limit,
            device_auth,
            metrics: metrics::RequestMetrics::new(),
        }
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

    /// Answers one request. Never panics on input; every error becomes a response.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
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
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let device_endpoint = match path {
            "/mdm/checkin" => Some(Endpoint::Checkin),
            "/mdm/server" => Some(Endpoint::Server),
            "/mdm" => Some(Endpoint::Either),
            _ => None,
        };
        if let Some(endpoint) = device_endpoint {
            if method != Method::PUT {
                return body::text_error(&method_not_allowed("PUT"));
            }
            // Boxed, as the admin routes below: inline, the handler's few KB of future state
            // would be copied whole into the request's task on every spawn.
            return Box::pin(device::handle(
                &self.service,
                endpoint,
                req,
                self.body_limit,
                &self.device_auth,
            ))
            .await;
        }
        match path {
            "/healthz" => {
                if method != Method::GET && method != Method::HEAD {
                    return body::text_error(&method_not_allowed("GET"));
                }
                match Box::pin(self.service.health()).await {
                    Ok(()) => body::json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "status": "ok",
                            "device_auth": self.device_auth.describe(),
                            "push_certificate": self.service.pushcert_state(),
                        }),
                    ),
                    Err(err) => {
                        // Logged with its detail under a request id; the public answer says
                        // what failed, not SQLite's words.
                        let api = ApiError::from(err);
                        body::json(
                            StatusCode::SERVICE_UNAVAILABLE,
                            &serde_json::json!({
                                "status": "unavailable",
                                "push_certificate": self.service.pushcert_state(),
                                "error": api.message,
                                "device_auth": self.device_auth.describe(),
                            }),
                        )
                    }
                }
            }
            "/metrics" => {
                if method != Method::GET {
                    return body::text_error(&method_not_allowed("GET"));
                }
                match metrics::render() {
                    Some(text) => body::with_body(
                        StatusCode::OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        text,
                    ),
                    None => body::text_error(&ApiError::unavailable(
                        "metrics recorder not installed (another recorder was installed first)",
                    )),
                }
            }
            p if p == "/v1" || p.starts_with("/v1/") => {
                if let Err(err) = self
                    .admin_key
                    .check(req.headers().get(http::header::AUTHORIZATION))
                {
                    return body::json_error(&err);
                }
                // Boxed: the admin routes' futures are large, and inline they would size (and
                // be copied with) every device request's future as well.
                Box::pin(admin::handle(
                    &self.service,
                    method,
                    p,
                    req,
                    self.body_limit,
                ))
                .await
            }
            _ => body::text_error(&ApiError::not_found(format!("no route for {path}"))),
        }
    }
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
