//! What goes into the engine (a [`DevicePush`]) and what comes out (a [`PushResult`], or a
//! [`BulkItem`] of a bulk push).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cause::Reason;
use crate::cause::{Cause, EngineCause};

/// A device token as the APNs path wants it: lowercase hex of the raw token bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceToken(Arc<str>);

/// A device token that is not hex, or is empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device token {token:?}: {why}")]
pub struct InvalidToken {
    /// The text that was given.
    pub token: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl DeviceToken {
    /// From the raw token bytes (the `Token` data of a TokenUpdate check-in).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidToken> {
        if bytes.is_empty() {
            return Err(InvalidToken {
                token: String::new(),
                why: "empty",
            });
        }
        // Straight into one shared allocation: tokens are encoded once per push in bulk
        // refreshes, and `hex::encode` builds its String a char at a time.
        let mut stack = [0u8; 128];
        let mut heap = Vec::new();
        let buf = match stack.get_mut(..bytes.len() * 2) {
            Some(buf) => buf,
            None => {
                heap.resize(bytes.len() * 2, 0);
                &mut heap[..]
            }
        };
        hex::encode_to_slice(bytes, buf).expect("the buffer is twice the input");
        let text = std::str::from_utf8(buf).expect("hex digits are ASCII");
        Ok(DeviceToken(Arc::from(text)))
    }

    /// From hex text, either case; stored lowercase.
    pub fn from_hex(text: &str) -> Result<Self, InvalidToken> {
        let bad = |why| InvalidToken {
            token: text.to_owned(),
            why,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(bad("empty"));
        }
        if !text.len().is_multiple_of(2) {
            return Err(bad("odd number of hex digits"));
        }
        if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not hexadecimal"));
        }
        Ok(DeviceToken(text.to_ascii_lowercase().into()))
    }

    /// Lowercase hex.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({})", self.0)
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One MDM push: wake the device with this token, carrying its PushMagic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePush {
    /// The device's APNs token.
    pub token: DeviceToken,
    /// The `PushMagic` string from the device's TokenUpdate.
    pub magic: String,
    /// The push certificate's topic to send it with (the topic the device enrolled with).
    /// `None` while the client holds exactly one certificate: that one.
    pub topic: Option<Arc<str>>,
}

impl DevicePush {
    /// A push for `token` with `magic`, on the client's only certificate.
    pub fn new(token: DeviceToken, magic: impl Into<String>) -> Self {
        DevicePush {
            token,
            magic: magic.into(),
            topic: None,
        }
    }

    /// This push, sent with the certificate of `topic`.
    pub fn with_topic(mut self, topic: impl Into<Arc<str>>) -> Self {
        self.topic = Some(topic.into());
        self
    }
}

/// APNs accepted the push (HTTP 200). This does not prove the device got it: only its next
/// check-in does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The `apns-id` APNs answered with.
    pub apns_id: String,
    /// From submission to the 200, including queueing and retries.
    pub latency: Duration,
    /// How many times the request was sent (1 unless retried).
    pub attempts: u32,
}

/// How a push ended when it did not end in [`Delivered`]. Every push ends in exactly one
/// [`PushResult`].
///
/// Each variant carries the [`Cause`] that applies: APNs's [`Reason`] when APNs gave one, the
/// engine's own [`EngineCause`] otherwise; [`PushError::reason`] gives it for any variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// 410: the token is gone (MDM profile removed, device erased). Stop pushing it.
    #[error("device unregistered ({reason}){}", timestamp_note(.timestamp_ms))]
    Unregistered {
        /// `Unregistered` or `ExpiredToken`.
        reason: Reason,
        /// When APNs learned the token was no longer valid (ms since the epoch), if it said.
        timestamp_ms: Option<u64>,
    },
    /// A permanent answer for this device and request: 400 `BadDeviceToken`,
    /// `DeviceTokenNotForTopic` and other 4xx that retrying cannot fix. Never retried.
    #[error("APNs refused the push: {status} {reason}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// APNs's reason, verbatim; [`EngineCause::HttpStatus`] when the answer named none.
        reason: Cause,
    },
    /// APNs (403) or the TLS handshake refused the push certificate. The pool is in its
    /// certificate-rejected state until a new certificate is installed or a reconnect succeeds.
    #[error("push certificate rejected: {detail}")]
    CertificateRejected {
        /// APNs's `BadCertificate`, `BadCertificateEnvironment` or `Forbidden`, or the TLS
        /// alert ([`EngineCause::TlsAlert`]).
        reason: Cause,
        /// What the operator should know.
        detail: String,
    },
    /// A transient failure (429, 500, 503, refused stream, lost connection) persisted until the
    /// deadline, or the retry budget ran out.
    #[error("gave up after {attempts} attempt(s): {last}")]
    RetriesExhausted {
        /// The last transient failure seen.
        last: Cause,
        /// Attempts made.
        attempts: u32,
    },
    /// The deadline passed before any answer (for example, no connection could be opened).
    ///
    /// Its [`reason`](PushError::reason) is [`EngineCause::DeadlineExceeded`] whatever the
    /// details; the message adds the last transient failure and the pool's last connection
    /// error, when there are any.
    #[error(
        "deadline of {deadline:?} passed after {attempts} attempt(s){}{}",
        last_note(.last),
        connect_note(.connect_error)
    )]
    DeadlineExceeded {
        /// The push's deadline.
        deadline: Duration,
        /// Attempts made.
        attempts: u32,
        /// The last transient failure seen, if any ([`EngineCause::QueueFull`] when the push
        /// never left the full queue).
        last: Option<Cause>,
        /// Why the pool's most recent connection attempt failed (DNS, TCP, TLS, HTTP/2), when
        /// it did: what kept a push that was never sent from being sent, as a rule —
        /// `cannot reach api.push.apple.com:443: Connection refused (os error 111)`. `None`
        /// once a connection has opened since, and for a push that ended on an open
        /// connection (sent and not answered, or waiting there for a free stream). Shared,
        /// not copied, by the pushes it ends.
        connect_error: Option<Arc<str>>,
    },
    /// The client was shut down before the push ended.
    #[error("push client shut down")]
    Shutdown,
    /// No push certificate is installed, so nothing was sent: a sender that starts without
    /// one (the check-in server before its first certificate is registered) answers this.
    #[error("no push certificate registered")]
    NoCertificate,
    /// The push names a topic the client holds no certificate for (never added, or removed
    /// while the push waited). Nothing was sent.
    #[error("no push certificate for topic {topic}")]
    UnknownTopic {
        /// The topic the push named.
        topic: Arc<str>,
    },
    /// The push names no topic and the client holds several certificates (or none): it
    /// cannot tell which one to use. Nothing was sent.
    #[error("the push names no topic and the client holds {topics} push certificates: set DevicePush::topic")]
    TopicRequired {
        /// How many topics the client holds.
        topics: usize,
    },
}

fn timestamp_note(ts: &Option<u64>) -> String {
    ts.map(|t| format!(" since {t} ms")).unwrap_or_default()
}

fn last_note(last: &Option<Cause>) -> String {
    last.as_ref()
        .map(|r| format!("; last error {r}"))
        .unwrap_or_default()
}

fn connect_note(connect_error: &Option<Arc<str>>) -> String {
    connect_error
        .as_ref()
        .map(|e| format!("; last connection error: {e}"))
        .unwrap_or_default()
}

impl PushError {
    /// Why the push failed, for grouping and storing: APNs's reason (`Unregistered`,
    /// `BadDeviceToken`, …, and the last transient one of `RetriesExhausted`), or the engine's
    /// own cause ([`EngineCause::DeadlineExceeded`], [`EngineCause::Shutdown`],
    /// [`EngineCause::NoCertificate`], …). Its [`Cause::stored_name`] tells the two apart.
    pub fn reason(&self) -> Cause {
        match self {
            PushError::Unregistered { reason, .. } => Cause::Apns(reason.clone()),
            PushError::Rejected { reason, .. } | PushError::CertificateRejected { reason, .. } => {
                reason.clone()
            }
            PushError::RetriesExhausted { last, .. } => last.clone(),
            PushError::DeadlineExceeded { .. } => EngineCause::DeadlineExceeded.into(),
            PushError::Shutdown => EngineCause::Shutdown.into(),
            PushError::NoCertificate
            | PushError::UnknownTopic { .. }
            | PushError::TopicRequired { .. } => EngineCause::NoCertificate.into(),
        }
    }

    /// True when the device's stored token is wrong or gone: 410, or 400 `BadDeviceToken` /
    /// `DeviceTokenNotForTopic`. Pushing this token again is pointless until the device sends a
    /// new TokenUpdate.
    pub fn is_token_invalid(&self) -> bool {
        match self {
            PushError::Unregistered { .. } => true,
            PushError::Rejected { reason, .. } => {
                *reason == Reason::BadDeviceToken || *reason == Reason::DeviceTokenNotForTopic
            }
            _ => false,
        }
    }
}

/// The one outcome of one push.
pub type PushResult = Result<Delivered, PushError>;

/// One finished push of a [`BulkPush`](crate::BulkPush).
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// Position in the input.
    pub index: usize,
    /// The device's token.
    pub token: DeviceToken,
    /// Its outcome.
    pub result: PushResult,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_hex_normalises_and_validates() {
        assert_eq!(DeviceToken::from_hex("ABcd").unwrap().as_hex(), "abcd");
        assert!(DeviceToken::from_hex("abc").is_err());
        assert!(DeviceToken::from_hex("zz").is_err());
        assert!(DeviceToken::from_hex("").is_err());
        assert_eq!(
            DeviceToken::from_bytes(&[0xde, 0xad]).unwrap().as_hex(),
            "dead"
        );
        assert!(DeviceToken::from_bytes(&[]).is_err());
        // Longer than the stack buffer: the heap path gives the same text.
        let long: Vec<u8> = (0..=255u8).collect();
        assert_eq!(
            DeviceToken::from_bytes(&long).unwrap().as_hex(),
            hex::encode(&long)
        );
        assert_eq!(
            DeviceToken::from_bytes(&[0xab; 64]).unwrap().as_hex(),
            "ab".repeat(64)
        );
    }

    #[test]
    fn reasons_group_outcomes() {
        let e = PushError::Unregistered {
            reason: Reason::Unregistered,
            timestamp_ms: Some(5),
        };
        assert_eq!(e.reason(), Reason::Unregistered);
        assert_eq!(e.reason().stored_name(), "apns:Unregistered");
        assert!(e.is_token_invalid());
        assert!(e.to_string().contains("since 5 ms"));
        let e = PushError::Rejected {
            status: 400,
            reason: Reason::BadTopic.into(),
        };
        assert!(!e.is_token_invalid());
        let e = PushError::Rejected {
            status: 400,
            reason: Reason::DeviceTokenNotForTopic.into(),
        };
        assert!(e.is_token_invalid());
        let e = PushError::DeadlineExceeded {
            deadline: Duration::from_secs(1),
            attempts: 2,
            last: None,
            connect_error: None,
        };
        assert_eq!(e.reason(), EngineCause::DeadlineExceeded);
        assert_eq!(e.reason().to_string(), "DeadlineExceeded");
        assert_eq!(e.to_string(), "deadline of 1s passed after 2 attempt(s)");
        // The connection error is in the message; the stored name stays the same.
        let e = PushError::DeadlineExceeded {
            deadline: Duration::from_secs(3),
            attempts: 1,
            last: Some(EngineCause::ConnectionLost.into()),
            connect_error: Some(Arc::from(
                "cannot reach 127.0.0.1:1: Connection refused (os error 111)",
            )),
        };
        assert_eq!(
            e.to_string(),
            "deadline of 3s passed after 1 attempt(s); last error ConnectionLost; last \
             connection error: cannot reach 127.0.0.1:1: Connection refused (os error 111)"
        );
        assert_eq!(e.reason().stored_name(), "engine:deadline_exceeded");
        // The engine's shutdown and APNs's `Shutdown` read alike but are stored apart.
        let apns = PushError::RetriesExhausted {
            last: Reason::Shutdown.into(),
            attempts: 3,
        };
        assert_eq!(apns.reason().stored_name(), "apns:Shutdown");
        assert_eq!(
            PushError::Shutdown.reason().stored_name(),
            "engine:shutdown"
        );
    }
}
