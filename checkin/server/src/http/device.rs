//! `PUT /mdm/checkin`, `PUT /mdm/server`, `PUT /mdm`: authenticate the device, read the body
//! (size-limited), hand it to the service, answer. Errors are 4xx (never 401: that would tell
//! the device its enrollment is void) or 5xx when the store failed. An identity refusal is a
//! 403 with a one-line reason, a WARN line with the UDID and the reason, and a count in
//! `magicpush_device_auth_refusals_total{reason}`.

use http::request::Parts;
use http::{Response, StatusCode};

use super::body::{self, read_limited, Body};
use super::error::ApiError;
use super::identity::{DeviceAuth, PeerCertificate};
use crate::identity::Refusal;
use crate::service::{DeviceReply, Endpoint, Service, ServiceError};
use magicpush_mdm::{self as mdm, Message};

pub(super) async fn handle<B>(
    service: &Service,
    endpoint: Endpoint,
    parts: &Parts,
    body: B,
    limit: usize,
    auth: &DeviceAuth,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let DeviceAuth::Required(authenticator) = auth {
        if let Err(refusal) = authenticator.precheck(&parts.headers) {
            return refuse(None, &refusal);
        }
    }
    let bytes = match read_limited(&parts.headers, body, limit).await {
        Ok(b) => b,
        Err(err) => return body::text_error(&err),
    };
    let identity = match auth {
        DeviceAuth::Off => None,
        DeviceAuth::Required(authenticator) => {
            let now = time::OffsetDateTime::now_utc();
            let tls = parts.extensions.get::<PeerCertificate>().map(|p| &*p.0);
            match authenticator.authenticate(&parts.headers, tls, &bytes, now) {
                Ok(identity) => Some(identity),
                Err(refusal) => return refuse(udid_of(&bytes).as_deref(), &refusal),
            }
        }
    };
    match service
        .device_request(endpoint, &bytes, identity.as_deref())
        .await
    {
        Ok(DeviceReply::Empty) => body::empty_ok(),
        Ok(DeviceReply::Plist(xml)) => body::with_body(StatusCode::OK, "application/xml", xml),
        Err(ServiceError::Identity { udid, refusal }) => refuse(udid.as_deref(), &refusal),
        Err(err) => {
            let err = ApiError::from(err);
            if err.status.is_client_error() {
                tracing::info!(status = %err.status, "device request refused: {}", err.message);
            }
            body::text_error(&err)
        }
    }
}

/// 403 for an identity refusal, logged and counted by reason.
fn refuse(udid: Option<&str>, refusal: &Refusal) -> Response<Body> {
    let reason = refusal.reason();
    tracing::warn!(
        udid = udid.unwrap_or("-"),
        reason,
        "device request refused: {refusal}"
    );
    ::metrics::counter!("magicpush_device_auth_refusals_total", "reason" => reason).increment(1);
    body::text(StatusCode::FORBIDDEN, refusal.to_string())
}

/// The UDID of a refused request's body, for the log line (best effort).
fn udid_of(body: &[u8]) -> Option<String> {
    match mdm::decode(body).ok()? {
        Message::Checkin(c) => c.udid().map(str::to_owned),
        Message::Report(r) => Some(r.udid),
    }
}
