//! Judging one APNs request: a pure function from the request's parts to Apple's answer.
//!
//! The checks run in the order below; the first failing check decides the answer.
//!
//! | # | check | answer |
//! |---|---|---|
//! | 1 | method is `POST` | 405 `MethodNotAllowed` |
//! | 2 | path is `/3/device/<token>` (no query) | 404 `BadPath` |
//! | 3 | token present | 400 `MissingDeviceToken` |
//! | 4 | token is hex of 32..=100 bytes | 400 `BadDeviceToken` |
//! | 5 | no `apns-*` header repeated | 400 `DuplicateHeaders` |
//! | 6 | `apns-topic` present | 400 `MissingTopic` |
//! | 7 | topic equals the client certificate's UID | 400 `TopicDisallowed` |
//! | 8 | `apns-push-type` is `mdm` for an MDM topic (`com.apple.mgmt.*`), a known type otherwise | 400 `InvalidPushType` |
//! | 9 | `apns-priority`, if present, is 10, 5 or 1 | 400 `BadPriority` |
//! | 10 | `apns-expiration`, if present, is an unsigned integer | 400 `BadExpirationDate` |
//! | 11 | `apns-id`, if present, is a canonical UUID | 400 `BadMessageId` |
//! | 12 | `apns-collapse-id`, if present, is at most 64 bytes | 400 `BadCollapseId` |
//! | 13 | payload non-empty | 400 `PayloadEmpty` |
//! | 14 | payload at most 4096 bytes | 413 `PayloadTooLarge` |
//! | 15 | payload is a JSON object with a string member `mdm` | 400 `BadPayload` (mock only) |
//! | 16 | token not in the unregistered set | 410 `Unregistered` + timestamp |
//! | 17 | token not registered for another topic | 400 `DeviceTokenNotForTopic` |
//!
//! Decisions where Apple's documentation is silent:
//! - A topic other than the certificate's is `TopicDisallowed` ("pushing to this topic is not
//!   allowed"): with certificate auth the certificate names the only topic a connection may
//!   push to, whatever other topics exist. It is 400, as Apple lists it: a 403 would read as
//!   a refused certificate and stop the whole topic. `BadTopic` is kept for a topic header
//!   that is not text, `DeviceTokenNotForTopic` for tokens that belong to another topic
//!   (check 17).
//! - Apple documents no reason for a payload that is not valid JSON. The mock answers 400 with
//!   the mock-only reason `BadPayload`, so an engine bug cannot hide behind a real reason and the
//!   engine's handling of unknown reasons is exercised.
//! - Duplicate headers are checked before the headers' values, since a repeated header makes
//!   its value ambiguous.
//! - A missing `apns-push-type` on an MDM topic is refused: MDM requires `mdm`.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Method};
use serde::Deserialize;

/// Largest payload APNs accepts for an MDM (non-VoIP) push.
pub const MAX_PAYLOAD: usize = 4096;

/// Prefix of MDM push topics (the UID of an MDM push certificate).
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";

const PATH_PREFIX: &str = "/3/device/";

/// The push types Apple documents for `apns-push-type`.
const KNOWN_PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
    "controls",
];

/// The APNs request headers, found in one pass over the header map (no hashing).
#[derive(Default)]
struct ApnsHeaders<'a> {
    topic: Option<&'a HeaderValue>,
    push_type: Option<&'a HeaderValue>,
    priority: Option<&'a HeaderValue>,
    expiration: Option<&'a HeaderValue>,
    id: Option<&'a HeaderValue>,
    collapse_id: Option<&'a HeaderValue>,
    authorization: Option<&'a HeaderValue>,
    /// One of the above appeared more than once.
    duplicate: bool,
}

impl<'a> ApnsHeaders<'a> {
    fn scan(headers: &'a HeaderMap) -> Self {
        let mut h = ApnsHeaders::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "apns-topic" => &mut h.topic,
                "apns-push-type" => &mut h.push_type,
                "apns-priority" => &mut h.priority,
                "apns-expiration" => &mut h.expiration,
                "apns-id" => &mut h.id,
                "apns-collapse-id" => &mut h.collapse_id,
                "authorization" => &mut h.authorization,
                _ => continue,
            };
            if slot.is_some() {
                h.duplicate = true;
            } else {
                *slot = Some(value);
            }
        }
        h
    }
}

macro_rules! reasons {
    ($($name:ident = $status:literal),* $(,)?) => {
        /// An APNs error reason as the mock answers it (status and the `reason` string).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Reason { $($name),* }

        impl Reason {
            /// Every reason, in declaration order (index = `self as usize`).
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The `reason` string as APNs spells it.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => stringify!($name)),* }
            }

            /// The HTTP status APNs answers with this reason.
            pub fn status(self) -> u16 {
                match self { $(Reason::$name => $status),* }
            }

            /// Parses a reason string (exact spelling).
            pub fn parse(s: &str) -> Option<Reason> {
                match s { $(stringify!($name) => Some(Reason::$name),)* _ => None }
            }
        }
    };
}

reasons! {
    BadCollapseId = 400,
    BadDeviceToken = 400,
    BadExpirationDate = 400,
    BadMessageId = 400,
    BadPriority = 400,
    BadTopic = 400,
    DeviceTokenNotForTopic = 400,
    DuplicateHeaders = 400,
    InvalidPushType = 400,
    MissingDeviceToken = 400,
    MissingTopic = 400,
    PayloadEmpty = 400,
    BadPayload = 400,
    TopicDisallowed = 400,
    BadCertificate = 403,
    BadCertificateEnvironment = 403,
    Forbidden = 403,
    BadPath = 404,
    MethodNotAllowed = 405,
    Unregistered = 410,
    ExpiredToken = 410,
    PayloadTooLarge = 413,
    TooManyRequests = 429,
    InternalServerError = 500,
    ServiceUnavailable = 503,
    Shutdown = 503,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which topics a connection may push to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRule<'a> {
    /// Only this topic (the UID of the client certificate).
    Exactly(&'a str),
    /// Any topic (optional client auth and no certificate presented).
    Any,
}

/// What the mock knows about a device token beyond its syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// A live token.
    Active,
    /// The token is no longer valid since this time (ms since the UNIX epoch).
    Unregistered { since_ms: u64 },
    /// The token belongs to another topic.
    OtherTopic,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// 200: the push is accepted.
    Accept(Accepted<'a>),
    /// An error status with a reason; `timestamp_ms` is set for 410.
    Reject {
        reason: Reason,
        timestamp_ms: Option<u64>,
    },
}

/// The parts of an accepted push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted<'a> {
    /// The device token as sent in the path.
    pub token: &'a str,
    /// The `mdm` member of the payload (the PushMagic), unescaped.
    pub magic: Cow<'a, str>,
    /// The `apns-topic` header.
    pub topic: &'a str,
}

impl Verdict<'_> {
    fn reject(reason: Reason) -> Self {
        Verdict::Reject {
            reason,
            timestamp_ms: None,
        }
    }
}

#[derive(Deserialize)]
struct MdmPayload<'a> {
    #[serde(borrow)]
    mdm: Cow<'a, str>,
}

/// Judges one request. `token_state` is asked only once the request is otherwise valid.
pub fn judge<'a>(
    method: &Method,
    path: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    topic_rule: TopicRule<'_>,
    token_state: impl FnOnce(&str) -> TokenState,
) -> Verdict<'a> {
    if method != Method::POST {
        return Verdict::reject(Reason::MethodNotAllowed);
    }
    let Some(token) = path.strip_prefix(PATH_PREFIX) else {
        return Verdict::reject(Reason::BadPath);
    };
    if token.contains(['/', '?', '#']) {
        return Verdict::reject(Reason::BadPath);
    }
    if token.is_empty() {
        return Verdict::reject(Reason::MissingDeviceToken);
    }
    if !valid_token(token) {
        return Verdict::reject(Reason::BadDeviceToken);
    }
    let h = ApnsHeaders::scan(headers);
    if h.duplicate {
        return Verdict::reject(Reason::DuplicateHeaders);
    }
    let Some(topic) = h.topic else {
        return Verdict::reject(Reason::MissingTopic);
    };
    let Ok(topic) = topic.to_str() else {
        return Verdict::reject(Reason::BadTopic);
    };
    if topic.is_empty() {
        return Verdict::reject(Reason::MissingTopic);
    }
    if let TopicRule::Exactly(allowed) = topic_rule {
        if topic != allowed {
            return Verdict::reject(Reason::TopicDisallowed);
        }
    }
    let push_type = h.push_type.map(|v| v.as_bytes());
    let push_type_ok = match push_type {
        None => !topic.starts_with(MDM_TOPIC_PREFIX),
        Some(t) if topic.starts_with(MDM_TOPIC_PREFIX) => t == b"mdm",
        Some(t) => KNOWN_PUSH_TYPES.iter().any(|k| k.as_bytes() == t),
    };
    if !push_type_ok {
        return Verdict::reject(Reason::InvalidPushType);
    }
    if let Some(p) = h.priority {
        if !matches!(p.as_bytes(), b"10" | b"5" | b"1") {
            return Verdict::reject(Reason::BadPriority);
        }
    }
    if let Some(e) = h.expiration {
        let e = e.as_bytes();
        if e.is_empty() || e.len() > 20 || !e.iter().all(u8::is_ascii_digit) {
            return Verdict::reject(Reason::BadExpirationDate);
        }
    }
    if let Some(id) = h.id {
        if !canonical_uuid(id.as_bytes()) {
            return Verdict::reject(Reason::BadMessageId);
        }
    }
    if let Some(c) = h.collapse_id {
        if c.len() > 64 {
            return Verdict::reject(Reason::BadCollapseId);
        }
    }
    if body.is_empty() {
        return Verdict::reject(Reason::PayloadEmpty);
    }
    if body.len() > MAX_PAYLOAD {
        return Verdict::reject(Reason::PayloadTooLarge);
    }
    // serde would also read a struct from a JSON array: only an object will do.
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let Some(payload) = is_object
        .then(|| serde_json::from_slice::<MdmPayload<'a>>(body).ok())
        .flatten()
    else {
        return Verdict::reject(Reason::BadPayload);
    };
    match token_state(token) {
        TokenState::Active => {}
        TokenState::Unregistered { since_ms } => {
            return Verdict::Reject {
                reason: Reason::Unregistered,
                timestamp_ms: Some(since_ms),
            }
        }
        TokenState::OtherTopic => return Verdict::reject(Reason::DeviceTokenNotForTopic),
    }
    Verdict::Accept(Accepted {
        token,
        magic: payload.mdm,
        topic,
    })
}

/// A device token: hex of 32 to 100 bytes.
pub fn valid_token(token: &str) -> bool {
    let len = token.len();
    (64..=200).contains(&len)
        && len.is_multiple_of(2)
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with hex digits of either case.
pub fn canonical_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "com.apple.mgmt.External.2f4e5c1a-8a43-4a7b-9f55-0c7f6c1d9a11";
    const TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const BODY: &[u8] = br#"{"mdm":"3F2504E0-4F89-11D3-9A0C-0305E82C3301"}"#;

    struct Case {
        name: &'static str,
        method: Method,
        path: String,
        headers: Vec<(&'static str, &'static str)>,
        body: Vec<u8>,
        rule: TopicRule<'static>,
        state: TokenState,
        expect: Option<Reason>,
    }

    fn base(name: &'static str) -> Case {
        Case {
            name,
            method: Method::POST,
            path: format!("/3/device/{TOKEN}"),
            headers: vec![
                ("apns-topic", TOPIC),
                ("apns-push-type", "mdm"),
                ("apns-priority", "10"),
                ("apns-expiration", "1700000000"),
            ],
            body: BODY.to_vec(),
            rule: TopicRule::Exactly(TOPIC),
            state: TokenState::Active,
            expect: None,
        }
    }

    fn with(mut c: Case, f: impl FnOnce(&mut Case), expect: Option<Reason>) -> Case {
        f(&mut c);
        c.expect = expect;
        c
    }

    fn set_header(c: &mut Case, name: &'static str, value: &'static str) {
        c.headers.retain(|(n, _)| *n != name);
        c.headers.push((name, value));
    }

    fn cases() -> Vec<Case> {
        use Reason::*;
        vec![
            base("valid"),
            with(
                base("valid, optional headers absent"),
                |c| {
                    c.headers
                        .retain(|(n, _)| *n == "apns-topic" || *n == "apns-push-type")
                },
                None,
            ),
            with(
                base("valid, apns-id and priority 5"),
                |c| {
                    set_header(c, "apns-id", "123e4567-E89B-12d3-a456-426614174000");
                    set_header(c, "apns-priority", "5");
                },
                None,
            ),
            with(
                base("valid, 100-byte token"),
                |c| c.path = format!("/3/device/{}", "ab".repeat(100)),
                None,
            ),
            with(
                base("valid, any topic allowed"),
                |c| {
                    set_header(c, "apns-topic", "x");
                    c.headers.retain(|(n, _)| *n != "apns-push-type");
                    c.rule = TopicRule::Any;
                },
                None,
            ),
            with(
                base("GET"),
                |c| c.method = Method::GET,
                Some(MethodNotAllowed),
            ),
            with(
                base("wrong path"),
                |c| c.path = format!("/3/devices/{TOKEN}"),
                Some(BadPath),
            ),
            with(
                base("path with query"),
                |c| c.path = format!("/3/device/{TOKEN}?x=1"),
                Some(BadPath),
            ),
            with(
                base("extra segment"),
                |c| c.path = format!("/3/device/{TOKEN}/x"),
                Some(BadPath),
            ),
            with(
                base("no token"),
                |c| c.path = "/3/device/".into(),
                Some(MissingDeviceToken),
            ),
            with(
                base("short token"),
                |c| c.path = format!("/3/device/{}", "ab".repeat(31)),
                Some(BadDeviceToken),
            ),
            with(
                base("long token"),
                |c| c.path = format!("/3/device/{}", "ab".repeat(101)),
                Some(BadDeviceToken),
            ),
            with(
                base("odd token"),
                |c| c.path = format!("/3/device/{TOKEN}a"),
                Some(BadDeviceToken),
            ),
            with(
                base("non-hex token"),
                |c| c.path = format!("/3/device/{}", "zz".repeat(32)),
                Some(BadDeviceToken),
            ),
            with(
                base("duplicate topic"),
                |c| c.headers.push(("apns-topic", TOPIC)),
                Some(DuplicateHeaders),
            ),
            with(
                base("duplicate priority"),
                |c| c.headers.push(("apns-priority", "10")),
                Some(DuplicateHeaders),
            ),
            with(
                base("no topic"),
                |c| c.headers.retain(|(n, _)| *n != "apns-topic"),
                Some(MissingTopic),
            ),
            with(
                base("empty topic"),
                |c| set_header(c, "apns-topic", ""),
                Some(MissingTopic),
            ),
            with(
                base("other topic"),
                |c| set_header(c, "apns-topic", "com.apple.mgmt.External.other"),
                Some(TopicDisallowed),
            ),
            with(
                base("no push type"),
                |c| c.headers.retain(|(n, _)| *n != "apns-push-type"),
                Some(InvalidPushType),
            ),
            with(
                base("alert push type on MDM topic"),
                |c| set_header(c, "apns-push-type", "alert"),
                Some(InvalidPushType),
            ),
            with(
                base("unknown push type"),
                |c| {
                    c.rule = TopicRule::Any;
                    set_header(c, "apns-topic", "com.example.app");
                    set_header(c, "apns-push-type", "bogus");
                },
                Some(InvalidPushType),
            ),
            with(
                base("priority 7"),
                |c| set_header(c, "apns-priority", "7"),
                Some(BadPriority),
            ),
            with(
                base("expiration not a number"),
                |c| set_header(c, "apns-expiration", "tomorrow"),
                Some(BadExpirationDate),
            ),
            with(
                base("negative expiration"),
                |c| set_header(c, "apns-expiration", "-1"),
                Some(BadExpirationDate),
            ),
            with(
                base("apns-id not a UUID"),
                |c| set_header(c, "apns-id", "not-a-uuid"),
                Some(BadMessageId),
            ),
            with(
                base("apns-id without hyphens"),
                |c| set_header(c, "apns-id", "123e4567e89b12d3a456426614174000"),
                Some(BadMessageId),
            ),
            with(
                base("long collapse id"),
                |c| {
                    set_header(
                        c,
                        "apns-collapse-id",
                        "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
                    )
                },
                Some(BadCollapseId),
            ),
            with(
                base("empty payload"),
                |c| c.body.clear(),
                Some(PayloadEmpty),
            ),
            with(
                base("payload too large"),
                |c| c.body = format!(r#"{{"mdm":"{}"}}"#, "m".repeat(MAX_PAYLOAD)).into_bytes(),
                Some(PayloadTooLarge),
            ),
            with(
                base("payload not JSON"),
                |c| c.body = b"mdm=abc".to_vec(),
                Some(BadPayload),
            ),
            with(
                base("payload without mdm"),
                |c| c.body = br#"{"aps":{}}"#.to_vec(),
                Some(BadPayload),
            ),
            with(
                base("mdm not a string"),
                |c| c.body = br#"{"mdm":42}"#.to_vec(),
                Some(BadPayload),
            ),
            with(
                base("payload an array"),
                |c| c.body = br#"["mdm"]"#.to_vec(),
                Some(BadPayload),
            ),
            with(
                base("unregistered token"),
                |c| c.state = TokenState::Unregistered { since_ms: 1234 },
                Some(Unregistered),
            ),
            with(
                base("token of another topic"),
                |c| c.state = TokenState::OtherTopic,
                Some(DeviceTokenNotForTopic),
            ),
            // Order: the first failing check wins.
            with(
                base("GET and bad path"),
                |c| {
                    c.method = Method::GET;
                    c.path = "/x".into();
                },
                Some(MethodNotAllowed),
            ),
            with(
                base("bad token and no topic"),
                |c| {
                    c.path = "/3/device/xyz".into();
                    c.headers.clear();
                },
                Some(BadDeviceToken),
            ),
            with(
                base("bad priority and empty payload"),
                |c| {
                    set_header(c, "apns-priority", "0");
                    c.body.clear();
                },
                Some(BadPriority),
            ),
            with(
                base("unregistered but empty payload"),
                |c| {
                    c.state = TokenState::Unregistered { since_ms: 1 };
                    c.body.clear();
                },
                Some(PayloadEmpty),
            ),
        ]
    }

    #[test]
    fn table() {
        for case in cases() {
            let mut headers = HeaderMap::new();
            for (n, v) in &case.headers {
                headers.append(*n, HeaderValue::from_static(v));
            }
            let state = case.state;
            let verdict = judge(
                &case.method,
                &case.path,
                &headers,
                &case.body,
                case.rule,
                |_| state,
            );
            match (case.expect, &verdict) {
                (None, Verdict::Accept(a)) => {
                    assert_eq!(
                        a.magic, "3F2504E0-4F89-11D3-9A0C-0305E82C3301",
                        "{}",
                        case.name
                    );
                    assert!(case.path.ends_with(a.token), "{}", case.name);
                }
                (
                    Some(want),
                    Verdict::Reject {
                        reason,
                        timestamp_ms,
                    },
                ) => {
                    assert_eq!(*reason, want, "{}", case.name);
                    assert_eq!(
                        timestamp_ms.is_some(),
                        want == Reason::Unregistered,
                        "{}",
                        case.name
                    );
                }
                _ => panic!("{}: expected {:?}, got {verdict:?}", case.name, case.expect),
            }
        }
    }

    #[test]
    fn every_request_reason_is_covered() {
        let covered: std::collections::HashSet<Reason> =
            cases().iter().filter_map(|c| c.expect).collect();
        for reason in [
            Reason::MethodNotAllowed,
            Reason::BadPath,
            Reason::MissingDeviceToken,
            Reason::BadDeviceToken,
            Reason::DuplicateHeaders,
            Reason::MissingTopic,
            Reason::TopicDisallowed,
            Reason::InvalidPushType,
            Reason::BadPriority,
            Reason::BadExpirationDate,
            Reason::BadMessageId,
            Reason::BadCollapseId,
            Reason::PayloadEmpty,
            Reason::PayloadTooLarge,
            Reason::BadPayload,
            Reason::Unregistered,
            Reason::DeviceTokenNotForTopic,
        ] {
            assert!(covered.contains(&reason), "{reason} has no case");
        }
    }

    /// A topic header that is not text (the table holds text headers only).
    #[test]
    fn a_topic_that_is_not_text_is_a_bad_topic() {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"com.apple.mgmt.\xff").expect("obs-text is allowed");
        headers.insert("apns-topic", value);
        headers.insert("apns-push-type", HeaderValue::from_static("mdm"));
        let path = format!("/3/device/{TOKEN}");
        let v = judge(
            &Method::POST,
            &path,
            &headers,
            br#"{"mdm":"m"}"#,
            TopicRule::Exactly(TOPIC),
            |_| TokenState::Active,
        );
        assert!(
            matches!(
                v,
                Verdict::Reject {
                    reason: Reason::BadTopic,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn magic_is_unescaped() {
        let mut headers = HeaderMap::new();
        headers.insert("apns-topic", HeaderValue::from_static(TOPIC));
        headers.insert("apns-push-type", HeaderValue::from_static("mdm"));
        let path = format!("/3/device/{TOKEN}");
        let body = br#"{"mdm":"a\"b\\c\u00e9"}"#;
        let v = judge(
            &Method::POST,
            &path,
            &headers,
            body,
            TopicRule::Exactly(TOPIC),
            |_| TokenState::Active,
        );
        let Verdict::Accept(a) = v else {
            panic!("{v:?}")
        };
        assert_eq!(a.magic, "a\"b\\cé");
        assert_eq!(a.topic, TOPIC);
    }

    #[test]
    fn reasons_round_trip() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(Reason::Unregistered.status(), 410);
        assert_eq!(Reason::PayloadTooLarge.status(), 413);
        assert_eq!(Reason::BadCertificate.status(), 403);
    }
}
