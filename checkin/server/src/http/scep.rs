//! `/scep`: the built-in device CA's SCEP endpoint (RFC 8894), for devices (no admin key).
//!
//! | request | answer |
//! |---|---|
//! | `GET /scep?operation=GetCACaps` | `text/plain`, [`magicpush_scep::CA_CAPS`] |
//! | `GET /scep?operation=GetCACert` | the CA certificate, DER, `application/x-x509-ca-cert` |
//! | `GET /scep?operation=PKIOperation&message=<base64>` | a CertRep, `application/x-pki-message` |
//! | `POST /scep?operation=PKIOperation` (body: the DER message) | the same |
//!
//! A request that cannot be parsed is a 400 with a one-line reason (never 401 or 500); every
//! protocol refusal (unknown, used or expired challenge, revoked certificate, bad signature…)
//! is a CertRep FAILURE, 200. A PKIOperation enrollment uses up its challenge
//! ([`magicpush_store::EnrollmentStore::consume_challenge`]); a renewal is refused for a
//! revoked certificate. Answers are counted in `magicpush_scep_requests_total{operation,
//! outcome}`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, StatusCode};
use magicpush_scep::rand_core::OsRng;
use magicpush_scep::{DeviceCa, PkiStatus, Policy, Question, Verdict};
use serde::Deserialize;

use crate::service::Service;

/// The route's path.
pub const PATH: &str = "/scep";

#[derive(Clone)]
struct Scep {
    service: Arc<Service>,
    ca: Arc<DeviceCa>,
    /// One permit per core for the RSA work of a request: without it every concurrent
    /// enrollment took a blocking thread of its own (up to tokio's 512), each with its stack
    /// and allocator arenas, for no more throughput than the cores give.
    crypto: Arc<tokio::sync::Semaphore>,
}

impl Scep {
    /// Runs `work` (RSA private-key operations) on a blocking thread once a core is free.
    async fn crypto<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let _permit = self
            .crypto
            .acquire()
            .await
            .map_err(|e| format!("the request could not be handled: {e}"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| format!("the request could not be handled: {e}"))
    }
}

#[derive(Deserialize)]
struct ScepQuery {
    operation: Option<String>,
    message: Option<String>,
}

/// The `/scep` route, when the service has a device CA.
pub(crate) fn routes(service: &Arc<Service>) -> Option<Router> {
    let ca = Arc::clone(service.device_ca()?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = Scep {
        service: Arc::clone(service),
        ca,
        crypto: Arc::new(tokio::sync::Semaphore::new(cores)),
    };
    Some(
        Router::new()
            .route(PATH, get(scep).post(scep))
            .layer(DefaultBodyLimit::max(magicpush_scep::MAX_MESSAGE))
            .with_state(state),
    )
}

fn count(operation: &'static str, outcome: &'static str) {
    metrics::counter!(
        "magicpush_scep_requests_total",
        "operation" => operation,
        "outcome" => outcome
    )
    .increment(1);
}

fn bad_request(operation: &'static str, reason: String) -> Response {
    count(operation, "bad_request");
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{reason}\n"),
    )
        .into_response()
}

async fn scep(
    State(state): State<Scep>,
    method: Method,
    query: Result<Query<ScepQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let Ok(Query(query)) = query else {
        return bad_request("unknown", "the query string does not parse".into());
    };
    match query.operation.as_deref() {
        Some("GetCACaps") => {
            count("GetCACaps", "ok");
            (
                [(header::CONTENT_TYPE, "text/plain")],
                magicpush_scep::CA_CAPS,
            )
                .into_response()
        }
        Some("GetCACert") => {
            count("GetCACert", "ok");
            (
                [(header::CONTENT_TYPE, magicpush_scep::CA_CERT_CONTENT_TYPE)],
                state.ca.certificate_der().to_vec(),
            )
                .into_response()
        }
        Some("PKIOperation") => {
            let message = if method == Method::POST {
                body.to_vec()
            } else {
                let Some(text) = query.message.as_deref() else {
                    return bad_request(
                        "PKIOperation",
                        "PKIOperation by GET needs a message parameter (base64)".into(),
                    );
                };
                // A '+' not percent-encoded reads as a space in a query; line breaks are
                // the client's wrapping.
                let text: String = text
                    .chars()
                    .filter(|c| *c != '\n' && *c != '\r')
                    .map(|c| if c == ' ' { '+' } else { c })
                    .collect();
                match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        return bad_request(
                            "PKIOperation",
                            format!("the message parameter is not base64: {e}"),
                        )
                    }
                }
            };
            pki_operation(&state, message).await
        }
        Some(other) => bad_request(
            "unknown",
            format!("unknown SCEP operation {other:?}: GetCACaps, GetCACert or PKIOperation"),
        ),
        None => bad_request(
            "unknown",
            "missing operation: GetCACaps, GetCACert or PKIOperation".into(),
        ),
    }
}

/// What a prepared request asks of the store, owned.
enum Ask {
    Challenge([u8; 32]),
    Revoked(Option<String>, String),
    Nothing,
}

async fn pki_operation(state: &Scep, message: Vec<u8>) -> Response {
    const OP: &str = "PKIOperation";
    let ca = Arc::clone(&state.ca);
    let now = SystemTime::now();
    // Decrypting the request costs an RSA private operation: off the async threads.
    let prepared = state
        .crypto(move || magicpush_scep::prepare(&message, &ca, now, &mut OsRng))
        .await;
    let prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return bad_request(OP, e.to_string()),
        Err(e) => return bad_request(OP, e),
    };
    let ask = match prepared.question() {
        Question::Challenge(c) => Ask::Challenge(magicpush_store::enrollment::challenge_hash(c)),
        Question::Revoked(cert) => Ask::Revoked(
            crate::service::serial_key(&cert.serial_hex),
            cert.enrollment_id.clone(),
        ),
        Question::None => Ask::Nothing,
    };
    let store = state.service.store();
    let at = time::OffsetDateTime::from(now);
    let verdict = match ask {
        Ask::Challenge(hash) => match store.consume_challenge(&hash, at).await {
            Ok(Some(id)) => Verdict::Enroll(id),
            Ok(None) => Verdict::Refuse,
            Err(e) => return unavailable(e),
        },
        Ask::Revoked(serial, id) => {
            let revoked = match serial {
                Some(key) => match store.is_revoked(&key).await {
                    Ok(r) => r,
                    Err(e) => return unavailable(e),
                },
                None => true,
            };
            if revoked {
                Verdict::Refuse
            } else {
                Verdict::Enroll(id)
            }
        }
        Ask::Nothing => Verdict::Refuse,
    };
    let ca = Arc::clone(&state.ca);
    let answered = state
        .crypto(move || prepared.answer(&ca, verdict, &Policy::default(), now, &mut OsRng))
        .await;
    let answer = match answered {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return bad_request(OP, e.to_string()),
        Err(e) => return bad_request(OP, e),
    };
    match answer.status {
        PkiStatus::Success => {
            count(OP, "issued");
            tracing::info!(
                transaction = %answer.transaction_id,
                enrollment_id = crate::service::enrollment::loggable_enrollment_id(
                    answer.enrollment_id.as_deref().unwrap_or("")
                ),
                "SCEP: device certificate issued"
            );
        }
        _ => {
            count(OP, "refused");
            tracing::info!(
                transaction = %answer.transaction_id,
                reason = answer.reason.as_deref().unwrap_or(""),
                "SCEP: request refused"
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            magicpush_scep::PKI_MESSAGE_CONTENT_TYPE,
        )],
        answer.bytes,
    )
        .into_response()
}

fn unavailable(e: magicpush_store::StoreError) -> Response {
    count("PKIOperation", "unavailable");
    tracing::warn!(error = %e, "SCEP: the store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("the store is unavailable: {e}\n"),
    )
        .into_response()
}
