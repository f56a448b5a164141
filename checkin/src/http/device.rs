//! `PUT /mdm/checkin`, `PUT /mdm/server`, `PUT /mdm`: read the body (size-limited), hand it to
//! the service, answer. Errors are 4xx (never 401: that would tell the device its enrollment
//! is void) or 5xx when the store failed.

use std::sync::Arc;

use http::{Request, Response, StatusCode};

use super::body::{self, read_limited, Body};
use super::error::ApiError;
use super::identity::{DeviceAuth, PeerIdentity};
use crate::service::{DeviceReply, Endpoint, Service};

pub(super) async fn handle<B>(
    service: &Service,
    endpoint: Endpoint,
    req: Request<B>,
    limit: usize,
    auth: DeviceAuth,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let identity = req.extensions().get::<Arc<PeerIdentity>>().cloned();
    let bound_udid = match auth {
        DeviceAuth::Off => None,
        DeviceAuth::ClientCertificateCn => match identity.and_then(|i| i.common_name.clone()) {
            Some(cn) => Some(cn),
            None => {
                return body::text_error(&ApiError::new(
                    StatusCode::FORBIDDEN,
                    "a device identity certificate is required: connect with the TLS client \
                     certificate of the MDM profile (issued by the device CA, CN = UDID)",
                ))
            }
        },
    };
    let (parts, incoming) = req.into_parts();
    let bytes = match read_limited(&parts.headers, incoming, limit).await {
        Ok(b) => b,
        Err(err) => return body::text_error(&err),
    };
    match service
        .device_message_as(endpoint, &bytes, bound_udid.as_deref())
        .await
    {
        Ok(DeviceReply::Empty) => body::empty_ok(),
        Ok(DeviceReply::Plist(xml)) => body::with_body(StatusCode::OK, "application/xml", xml),
        Err(err) => {
            let err = ApiError::from(err);
            if err.status.is_client_error() {
                tracing::info!(status = %err.status, "device request refused: {}", err.message);
            }
            body::text_error(&err)
        }
    }
}
