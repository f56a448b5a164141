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
pub mod client;
pub mod csv;
pub mod error;
pub mod identity;
pub mod metrics;
pub mod server;
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
        }
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
        let route = route_label(&path);
        ::metrics::histogram!("magicpush_http_request_seconds", "route" => route)
            .record(started.elapsed().as_secs_f64());
        ::metrics::counter!(
            "magicpush_http_responses_total",
            "route" => route,
            "status" => resp.status().as_str().to_owned()
        )
        .increment(1);
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
            return device::handle(
                &self.service,
                endpoint,
                req,
                self.body_limit,
                &self.device_auth,
            )
            .await;
        }
        match path {
            "/healthz" => {
                if method != Method::GET && method != Method::HEAD {
                    return body::text_error(&method_not_allowed("GET"));
                }
                match self.service.health().await {
                    Ok(()) => body::json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "status": "ok",
                            "device_auth": self.device_auth.describe(),
                        }),
                    ),
                    Err(err) => body::text_error(&ApiError::from(err)),
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
                admin::handle(&self.service, method, p, req, self.body_limit).await
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

/// A bounded set of labels for metrics (never the raw path: UDIDs would explode cardinality).
fn route_label(path: &str) -> &'static str {
    match path {
        "/mdm/checkin" => "mdm_checkin",
        "/mdm/server" => "mdm_server",
        "/mdm" => "mdm",
        "/healthz" => "healthz",
        "/metrics" => "metrics",
        p if p.starts_with("/v1/devices") => "v1_devices",
        p if p.starts_with("/v1/pushcert") => "v1_pushcert",
        "/v1/refresh" => "v1_refresh",
        "/v1/commands" => "v1_commands",
        "/v1/connectivity" => "v1_connectivity",
        _ => "other",
    }
}
