//! Reading request bodies under a size limit, and building responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, SizeHint};

use super::error::ApiError;
use super::timing::{InFlight, PaceError};
use crate::service::listing::Listing;

/// The response body of every handler: whole, a [`Listing`] streamed while it is read, or
/// what the admin router answered.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    /// The request this answers counts as in flight until its body is sent (or dropped), so
    /// that a long listing is not taken for an idle connection.
    in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum Kind {
    Whole(Option<Bytes>),
    Streamed(Listing),
    Routed(axum::body::Body),
}

impl Body {
    /// A body sent in one piece (with its `Content-Length`).
    pub fn whole(bytes: impl Into<Bytes>) -> Self {
        Body {
            kind: Kind::Whole(Some(bytes.into())),
            in_flight: None,
        }
    }

    /// A listing sent as it is read (chunked). A listing that fails part-way ends the
    /// response with an error, so the client sees a cut response, not a short one.
    pub fn streamed(listing: Listing) -> Self {
        Body {
            kind: Kind::Streamed(listing),
            in_flight: None,
        }
    }

    /// A body the admin router answered with (whole or streamed, as its handler made it).
    pub(crate) fn routed(body: axum::body::Body) -> Self {
        Body {
            kind: Kind::Routed(body),
            in_flight: None,
        }
    }

    /// The same body, holding `guard` until it is sent.
    pub(crate) fn holding(mut self, guard: InFlight) -> Self {
        self.in_flight = Some(guard);
        self
    }
}

/// Why a streamed body ended before its end.
#[derive(Debug, thiserror::Error)]
#[error("the response was cut short: {0}")]
pub struct BodyError(Box<dyn std::error::Error + Send + Sync>);

impl From<crate::service::ServiceError> for BodyError {
    fn from(err: crate::service::ServiceError) -> Self {
        BodyError(Box::new(err))
    }
}

impl BodyError {
    /// The error of a routed body: the [`BodyError`] it carries (a listing cut short), or
    /// the router's own.
    fn routed(err: axum::Error) -> Self {
        match err.into_inner().downcast::<BodyError>() {
            Ok(ours) => *ours,
            Err(other) => BodyError(other),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Whole(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Kind::Streamed(listing) => listing
                .poll_next(cx)
                .map(|piece| piece.map(|p| p.map(Frame::data).map_err(BodyError::from))),
            Kind::Routed(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BodyError::routed))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Whole(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Kind::Streamed(_) => false,
            Kind::Routed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Streamed(_) => SizeHint::default(),
            Kind::Routed(body) => body.size_hint(),
        }
    }
}

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
        // The pace check's error, or one that carries it (the admin router wraps its body's
        // errors).
        Err(err) if too_slow(&*err) => {
            Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, err.to_string()))
        }
        Err(err) => Err(ApiError::bad_request(format!(
            "could not read request body: {err}"
        ))),
    }
}

fn too_slow(err: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(err), |e| e.source())
        .any(|e| matches!(e.downcast_ref(), Some(PaceError::TooSlow(_))))
}

/// A response with this status, content type and body.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Body::whole(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A response with this status and content type whose body is `listing`, sent as it is read.
pub fn streamed(
    status: StatusCode,
    content_type: &'static str,
    listing: Listing,
) -> Response<Body> {
    let mut resp = Response::new(Body::streamed(listing));
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
    let mut resp = Response::new(Body::whole(Bytes::new()));
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The error as JSON `{"error": "…"}` (admin API).
pub fn json_error(err: &ApiError) -> Response<Body> {
    let mut value = serde_json::json!({ "error": err.message });
    if let Some(id) = &err.request_id {
        value["request_id"] = id.as_str().into();
    }
    if let Some(detail) = &err.detail {
        detail.write_into(&mut value);
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    use super::*;

    #[tokio::test]
    async fn a_whole_body_has_its_length_and_a_streamed_one_is_sent_as_it_comes() {
        let whole = Body::whole("hello");
        assert_eq!(whole.size_hint().exact(), Some(5), "a Content-Length");
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "hello");
        assert!(Body::whole(Bytes::new()).is_end_stream());

        let streamed = Body::streamed(Listing::of(&[b"[1,", b"2]"], true));
        assert_eq!(streamed.size_hint().exact(), None, "chunked");
        assert!(!streamed.is_end_stream());
        assert_eq!(streamed.collect().await.unwrap().to_bytes(), "[1,2]");
    }

    #[tokio::test]
    async fn a_listing_cut_part_way_is_an_error_not_a_short_body() {
        let cut = Body::streamed(Listing::of(&[b"[1,"], false));
        let err = cut.collect().await.unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }
}
