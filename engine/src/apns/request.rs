//! Encoding an MDM push as an APNs request, without I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};

use crate::outcome::DeviceToken;

/// Header names APNs reads.
pub mod headers {
    use http::header::HeaderName;

    /// The certificate's topic (its subject UID).
    pub static APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
    /// Always `mdm` here.
    pub static APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
    /// 10 (send now) or 5 (may be delayed for power).
    pub static APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
    /// UNIX seconds until which APNs stores the push for an offline device; 0 = try once.
    pub static APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
    /// The request's UUID, echoed in the response.
    pub static APNS_ID: HeaderName = HeaderName::from_static("apns-id");
}

/// How long APNs should keep a push for a device that is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiration {
    /// `apns-expiration: 0`: deliver now or drop.
    Immediate,
    /// Store until now + this (APNs keeps at most 30 days, and only the newest push per device
    /// and topic). Default: 7 days.
    After(Duration),
}

impl Default for Expiration {
    fn default() -> Self {
        Expiration::After(Duration::from_secs(7 * 24 * 3600))
    }
}

/// The delivery priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// `10`: send immediately (default).
    #[default]
    Immediate,
    /// `5`: may be grouped and delayed to save power.
    Conserve,
}

/// Everything that is the same for every push of one client: built once, so that encoding a
/// push costs one path, one body and one expiration header.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    topic: HeaderValue,
    priority: HeaderValue,
    expiration: Expiration,
}

/// A topic that cannot be sent as a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic {0:?} is not a valid HTTP header value")]
pub struct InvalidTopic(pub String);

static PUSH_TYPE_MDM: HeaderValue = HeaderValue::from_static("mdm");

impl RequestTemplate {
    /// A template for `authority` (host:port) and the certificate's `topic`.
    pub fn new(
        authority: http::uri::Authority,
        topic: &str,
        priority: Priority,
        expiration: Expiration,
    ) -> Result<Self, InvalidTopic> {
        let topic = HeaderValue::from_str(topic).map_err(|_| InvalidTopic(topic.to_owned()))?;
        let priority = HeaderValue::from_static(match priority {
            Priority::Immediate => "10",
            Priority::Conserve => "5",
        });
        Ok(RequestTemplate {
            scheme: http::uri::Scheme::HTTPS,
            authority,
            topic,
            priority,
            expiration,
        })
    }

    /// The topic this template sends.
    pub fn topic(&self) -> &HeaderValue {
        &self.topic
    }

    /// The request head for one push to `token`, at wall-clock time `now`.
    pub fn request(&self, token: &DeviceToken, now: SystemTime) -> Request<()> {
        let expiration = HeaderValue::from(expiration_secs(self.expiration, now));
        self.request_with(token, self.headers(expiration))
    }

    /// Every header of a push, with this `apns-expiration` value.
    fn headers(&self, expiration: HeaderValue) -> HeaderMap {
        // No content-type: APNs does not read one, and every header costs HPACK work on both
        // ends of every request.
        let mut h = HeaderMap::with_capacity(4);
        h.insert(headers::APNS_TOPIC.clone(), self.topic.clone());
        h.insert(headers::APNS_PUSH_TYPE.clone(), PUSH_TYPE_MDM.clone());
        h.insert(headers::APNS_PRIORITY.clone(), self.priority.clone());
        h.insert(headers::APNS_EXPIRATION.clone(), expiration);
        h
    }

    /// The request head for `token` with ready-made `headers` (see [`HeaderCache`]).
    pub fn request_with(&self, token: &DeviceToken, headers: HeaderMap) -> Request<()> {
        let hex = token.as_hex();
        let mut path = BytesMut::with_capacity(DEVICE_PATH.len() + hex.len());
        path.extend_from_slice(DEVICE_PATH.as_bytes());
        path.extend_from_slice(hex.as_bytes());
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        // The token is validated hex, so the path is always valid.
        parts.path_and_query = Some(
            PathAndQuery::from_maybe_shared(path.freeze()).expect("hex token makes a valid path"),
        );
        let uri = Uri::from_parts(parts).expect("scheme, authority and path are set");
        let mut req = Request::new(());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        req
    }

    /// A per-connection cache of the headers, which change once a second (`apns-expiration`).
    pub fn header_cache(&self) -> HeaderCache {
        HeaderCache {
            template: self.clone(),
            secs: u64::MAX,
            headers: HeaderMap::new(),
        }
    }
}

const DEVICE_PATH: &str = "/3/device/";

/// A push's headers, rebuilt only when the second (and so `apns-expiration`) changes: a
/// request then costs a copy of a ready map instead of five hashed inserts.
#[derive(Debug, Clone)]
pub struct HeaderCache {
    template: RequestTemplate,
    secs: u64,
    headers: HeaderMap,
}

impl HeaderCache {
    /// The headers for wall-clock time `now`.
    pub fn headers(&mut self, now: SystemTime) -> HeaderMap {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.secs {
            self.secs = secs;
            let expiration = expiration_secs(self.template.expiration, now);
            self.headers = self.template.headers(HeaderValue::from(expiration));
        }
        self.headers.clone()
    }
}

/// The `apns-expiration` value for `now`.
pub fn expiration_secs(expiration: Expiration, now: SystemTime) -> u64 {
    match expiration {
        Expiration::Immediate => 0,
        Expiration::After(d) => now
            .checked_add(d)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// The MDM payload: exactly `{"mdm":"<PushMagic>"}`, JSON-escaped.
pub fn payload(magic: &str) -> Bytes {
    let mut out = Vec::with_capacity(magic.len() + 11);
    out.extend_from_slice(b"{\"mdm\":");
    // serde_json writes a correctly escaped JSON string into a Vec and cannot fail there.
    serde_json::to_writer(&mut out, magic).expect("writing a str to a Vec cannot fail");
    out.push(b'}');
    Bytes::from(out)
}

/// Largest payload APNs accepts.
pub const MAX_PAYLOAD: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> RequestTemplate {
        RequestTemplate::new(
            "api.push.apple.com:443".parse().unwrap(),
            "com.apple.mgmt.External.1234",
            Priority::default(),
            Expiration::default(),
        )
        .unwrap()
    }

    #[test]
    fn request_has_apns_headers_and_path() {
        let token = DeviceToken::from_hex("AABB").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let req = template().request(&token, now);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "https://api.push.apple.com:443/3/device/aabb"
        );
        let h = req.headers();
        assert_eq!(h["apns-topic"], "com.apple.mgmt.External.1234");
        assert_eq!(h["apns-push-type"], "mdm");
        assert_eq!(h["apns-priority"], "10");
        assert_eq!(h["apns-expiration"], (1_000 + 7 * 24 * 3600).to_string());
        assert!(h.get("apns-id").is_none());
    }

    #[test]
    fn header_cache_follows_the_clock() {
        let t = template();
        let mut cache = t.header_cache();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let expiration = |h: HeaderMap| h["apns-expiration"].to_str().unwrap().to_owned();
        assert_eq!(
            expiration(cache.headers(t0)),
            (1_000 + 7 * 24 * 3600).to_string()
        );
        assert_eq!(
            expiration(cache.headers(t0 + Duration::from_millis(999))),
            (1_000 + 7 * 24 * 3600).to_string()
        );
        assert_eq!(
            expiration(cache.headers(t0 + Duration::from_secs(2))),
            (1_002 + 7 * 24 * 3600).to_string()
        );
        let token = DeviceToken::from_hex("ab").unwrap();
        let req = t.request_with(&token, cache.headers(t0));
        assert_eq!(req.uri().path(), "/3/device/ab");
        // The cached request is the same as one built from scratch.
        assert_eq!(req.headers(), t.request(&token, t0).headers());
        assert_eq!(req.headers().len(), 4);
        assert_eq!(
            req.headers()["apns-expiration"],
            (1_000 + 7 * 24 * 3600).to_string()
        );
    }

    #[test]
    fn immediate_expiration_and_conserve_priority() {
        let t = RequestTemplate::new(
            "h:1".parse().unwrap(),
            "com.apple.mgmt.x",
            Priority::Conserve,
            Expiration::Immediate,
        )
        .unwrap();
        let req = t.request(&DeviceToken::from_hex("00").unwrap(), SystemTime::now());
        assert_eq!(req.headers()["apns-expiration"], "0");
        assert_eq!(req.headers()["apns-priority"], "5");
    }

    #[test]
    fn payload_is_escaped_json() {
        assert_eq!(&payload("abc")[..], br#"{"mdm":"abc"}"#);
        let tricky = "q\"u\\o\nte\u{1}é";
        let body = payload(tricky);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["mdm"], tricky);
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn topic_with_newline_is_refused() {
        assert!(RequestTemplate::new(
            "h:1".parse().unwrap(),
            "a\nb",
            Priority::default(),
            Expiration::default()
        )
        .is_err());
    }
}
