//! Reading request bodies under a size limit, and building responses.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

use super::error::ApiError;
use super::timing::PaceError;

/// The response body type of every handler.
pub type Body = Full<Bytes>;

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Reads the whole body, refusing (413) more than `limit` bytes — before reading when the
/// `Content-Length` already says so.
pub async fn read_limited<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) if matches!(err.downcast_ref(), Some(PaceError::TooSlow(_))) => {
            Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, err.to_string()))
        }
        Err(err) => Err(ApiError::bad_request(format!(
            "could not read request body: {err}"
        ))),
    }
}

/// A response with this status, content type and body.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A plain-text response.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    with_body(status, "text/plain; charset=utf-8", message)
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    // Serialising a `Value` cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    with_body(status, "application/json", body)
}

/// An empty 200.
pub fn empty_ok() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The error as JSON `{"error": "…"}` (admin API).
pub fn json_error(err: &ApiError) -> Response<Body> {
    let mut value = serde_json::json!({ "error": err.message });
    if let Some(id) = &err.request_id {
        value["request_id"] = id.as_str().into();
    }
    let mut resp = json(err.status, &value);
    if err.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    retry_after(&mut resp, err);
    resp
}

/// The error as plain text (device endpoints).
pub fn text_error(err: &ApiError) -> Response<Body> {
    let mut resp = text(err.status, err.message.clone());
    retry_after(&mut resp, err);
    resp
}

fn retry_after(resp: &mut Response<Body>, err: &ApiError) {
    if let Some(id) = err
        .request_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        resp.headers_mut().insert("x-request-id", id);
    }
    if let Some(secs) = err.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}
