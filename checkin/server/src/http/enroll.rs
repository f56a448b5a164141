//! `GET /enroll/{id}`: an enrollment invitation's profile, for a device's user (no admin key:
//! the id in the URL is the secret, 160 random bits).
//!
//! | answer | when |
//! |---|---|
//! | 200 `application/x-apple-aspen-config`, the profile (CMS-signed when the server has a signer) with a fresh one-time challenge | the invitation is open |
//! | 404 | no invitation has this id (or the id has not its shape) |
//! | 410 | withdrawn, expired or used up, or its tenant's push certificate was removed |
//! | 429 | [`magicpush_store::enrollment::MAX_OUTSTANDING_CHALLENGES`] of its profiles wait unused |
//! | 503 with `Retry-After` | the store (or the signer) failed |
//!
//! Answers are `Cache-Control: no-store` (each holds its own challenge) and counted in
//! `magicpush_enroll_profiles_total{outcome}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, StatusCode};

use crate::service::enrollment::ProfileRefusal;
use crate::service::Service;

/// The route's path.
pub const PATH: &str = "/enroll/{id}";

/// The route, when the service hands out profiles.
pub(crate) fn routes(service: &Arc<Service>) -> Option<Router> {
    service.enrollment_profiles()?;
    service.device_ca()?;
    Some(
        Router::new()
            .route(PATH, get(profile))
            .with_state(Arc::clone(service)),
    )
}

fn count(outcome: &'static str) {
    metrics::counter!("magicpush_enroll_profiles_total", "outcome" => outcome).increment(1);
}

async fn profile(State(service): State<Arc<Service>>, Path(id): Path<String>) -> Response {
    match service.enrollment_profile(&id).await {
        Ok(profile) => {
            count("served");
            tracing::info!("enrollment profile served");
            (
                [
                    (header::CONTENT_TYPE, magicpush_profile::CONTENT_TYPE),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"enroll.mobileconfig\"",
                    ),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                profile,
            )
                .into_response()
        }
        Err(refusal) => {
            let (status, outcome) = match &refusal {
                ProfileRefusal::Unknown => (StatusCode::NOT_FOUND, "unknown"),
                ProfileRefusal::Closed(_) => (StatusCode::GONE, "closed"),
                ProfileRefusal::TenantGone(_) => (StatusCode::GONE, "tenant_gone"),
                ProfileRefusal::TooMany => (StatusCode::TOO_MANY_REQUESTS, "too_many"),
                ProfileRefusal::Unavailable(e) => {
                    tracing::warn!(error = %e, "enrollment profile: the store or signer failed");
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                }
            };
            count(outcome);
            let mut resp = (
                status,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                format!("{refusal}\n"),
            )
                .into_response();
            if matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            ) {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
            }
            resp
        }
    }
}
