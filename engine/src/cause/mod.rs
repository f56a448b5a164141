//! Why a push did not end in delivery, typed: APNs's own reasons ([`Reason`]) apart from the
//! engine's own outcomes ([`EngineCause`]), and [`Cause`], either of them.
//!
//! # Stored names
//!
//! Every cause has a stable *stored name*, for databases and logs that outlive a release,
//! and parses back from it with `from_stored` (`Cause::from_stored(&c.stored_name()) ==
//! Some(c)` for every cause). The two kinds never overlap:
//!
//! | cause | stored name |
//! |---|---|
//! | an APNs reason, known or not | `apns:` + the reason exactly as APNs spelled it: `apns:BadDeviceToken`, `apns:Shutdown`, `apns:SomethingNew` |
//! | deadline exceeded | `engine:deadline_exceeded` |
//! | no certificate | `engine:no_certificate` |
//! | queue full | `engine:queue_full` |
//! | connection lost | `engine:connection_lost` |
//! | connection closed | `engine:connection_closed` |
//! | refused stream | `engine:refused_stream` |
//! | GOAWAY | `engine:goaway` |
//! | stream reset | `engine:stream_reset:` + the HTTP/2 error code in decimal: `engine:stream_reset:8` |
//! | TLS alert | `engine:tls_alert:` + the IANA alert name: `engine:tls_alert:certificate_expired` |
//! | unexpected HTTP status | `engine:http_status:` + the status in decimal: `engine:http_status:502` |
//! | shutdown | `engine:shutdown` |
//!
//! Only these exact spellings parse (numbers in canonical decimal, no leading zeros), so a
//! stored name is unique to its cause. [`Cause::from_legacy`] reads the untyped reason
//! strings that earlier versions produced.
//!
//! `Display` is for people and keeps the spellings earlier versions used (`DeadlineExceeded`,
//! `StreamReset(CANCEL)`, `HTTP502`, `CertificateExpired`, …): it is not unique (APNs's
//! `Shutdown` and the engine's read alike) and is not meant to be parsed.

mod alert;
mod reason;

use std::borrow::Cow;
use std::fmt;

pub use self::alert::CertificateAlert;
pub use self::reason::Reason;

/// An outcome the engine determined itself: no APNs body names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EngineCause {
    /// The push's deadline passed before it ended.
    DeadlineExceeded,
    /// No push certificate is installed, so nothing was sent.
    NoCertificate,
    /// The push waited for room in the full intake queue until its deadline.
    QueueFull,
    /// The connection failed while the push's stream was open: the server may or may not have
    /// processed it.
    ConnectionLost,
    /// The connection closed before the push was sent on it.
    ConnectionClosed,
    /// The server refused the stream (HTTP/2 `REFUSED_STREAM`): it never processed the push.
    RefusedStream,
    /// The server sent GOAWAY before the push was processed.
    GoAway,
    /// The server reset the push's stream with this HTTP/2 error code (RFC 9113 §7;
    /// `REFUSED_STREAM` is [`EngineCause::RefusedStream`]).
    StreamReset(u32),
    /// The server refused the push certificate with this TLS alert
    /// ([`CertificateAlert::CertificateExpired`] when the certificate has expired).
    TlsAlert(CertificateAlert),
    /// The server answered with this HTTP status and no reason the engine could read.
    HttpStatus(u16),
    /// The client was shut down before the push ended.
    Shutdown,
}

impl EngineCause {
    /// The prefix of every engine cause's stored name.
    pub const STORED_PREFIX: &'static str = "engine:";

    /// The stable stored name (see the [module documentation](self)):
    /// `engine:deadline_exceeded`, `engine:stream_reset:8`, …
    pub fn stored_name(&self) -> Cow<'static, str> {
        let fixed = match self {
            EngineCause::DeadlineExceeded => "engine:deadline_exceeded",
            EngineCause::NoCertificate => "engine:no_certificate",
            EngineCause::QueueFull => "engine:queue_full",
            EngineCause::ConnectionLost => "engine:connection_lost",
            EngineCause::ConnectionClosed => "engine:connection_closed",
            EngineCause::RefusedStream => "engine:refused_stream",
            EngineCause::GoAway => "engine:goaway",
            EngineCause::Shutdown => "engine:shutdown",
            EngineCause::StreamReset(code) => {
                return Cow::Owned(format!("engine:stream_reset:{code}"))
            }
            EngineCause::TlsAlert(alert) => {
                return Cow::Owned(format!("engine:tls_alert:{}", alert.name()))
            }
            EngineCause::HttpStatus(status) => {
                return Cow::Owned(format!("engine:http_status:{status}"))
            }
        };
        Cow::Borrowed(fixed)
    }

    /// The cause whose [`stored_name`](EngineCause::stored_name) is `stored`; `None` for
    /// anything else (an APNs reason's stored name included).
    pub fn from_stored(stored: &str) -> Option<Self> {
        let name = stored.strip_prefix(Self::STORED_PREFIX)?;
        let cause = match name {
            "deadline_exceeded" => EngineCause::DeadlineExceeded,
            "no_certificate" => EngineCause::NoCertificate,
            "queue_full" => EngineCause::QueueFull,
            "connection_lost" => EngineCause::ConnectionLost,
            "connection_closed" => EngineCause::ConnectionClosed,
            "refused_stream" => EngineCause::RefusedStream,
            "goaway" => EngineCause::GoAway,
            "shutdown" => EngineCause::Shutdown,
            _ => {
                if let Some(code) = name.strip_prefix("stream_reset:") {
                    EngineCause::StreamReset(canonical_number(code)?)
                } else if let Some(alert) = name.strip_prefix("tls_alert:") {
                    EngineCause::TlsAlert(CertificateAlert::from_name(alert)?)
                } else if let Some(status) = name.strip_prefix("http_status:") {
                    EngineCause::HttpStatus(canonical_number(status)?)
                } else {
                    return None;
                }
            }
        };
        Some(cause)
    }

    /// The cause as a metric label, from a fixed set: the variant's name, `StreamReset` for
    /// every reset and `HTTP` for every status; TLS alerts are `TlsAlert` but for
    /// `CertificateExpired` and `BadCertificate`, labelled by name as they always were.
    pub fn label(&self) -> &'static str {
        match self {
            EngineCause::DeadlineExceeded => "DeadlineExceeded",
            EngineCause::NoCertificate => "NoCertificate",
            EngineCause::QueueFull => "QueueFull",
            EngineCause::ConnectionLost => "ConnectionLost",
            EngineCause::ConnectionClosed => "ConnectionClosed",
            EngineCause::RefusedStream => "RefusedStream",
            EngineCause::GoAway => "GoAway",
            EngineCause::StreamReset(_) => "StreamReset",
            EngineCause::TlsAlert(CertificateAlert::CertificateExpired) => "CertificateExpired",
            EngineCause::TlsAlert(CertificateAlert::BadCertificate) => "BadCertificate",
            EngineCause::TlsAlert(_) => "TlsAlert",
            EngineCause::HttpStatus(_) => "HTTP",
            EngineCause::Shutdown => "Shutdown",
        }
    }
}

/// `digits` as a number if it is spelled canonically: decimal digits only, no leading zero.
fn canonical_number<T: std::str::FromStr + ToString>(digits: &str) -> Option<T> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: T = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

/// The names of HTTP/2 error codes (RFC 9113 §7), for display.
fn h2_error_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(usize::try_from(code).ok()?).copied()
}

impl fmt::Display for EngineCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineCause::StreamReset(code) => match h2_error_name(*code) {
                Some(name) => write!(f, "StreamReset({name})"),
                None => write!(f, "StreamReset({code:#x})"),
            },
            EngineCause::TlsAlert(alert) => f.write_str(alert.display_name()),
            EngineCause::HttpStatus(status) => write!(f, "HTTP{status}"),
            other => f.write_str(other.label()),
        }
    }
}

/// Why a push did not end in delivery: APNs's reason, or the engine's own cause.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A reason APNs gave (in an error body), kept verbatim.
    Apns(Reason),
    /// An outcome the engine determined itself.
    Engine(EngineCause),
}

impl Cause {
    /// The stable stored name: `apns:<reason>` or `engine:<…>` (see the
    /// [module documentation](self)).
    pub fn stored_name(&self) -> Cow<'static, str> {
        match self {
            Cause::Apns(reason) => reason.stored_name(),
            Cause::Engine(cause) => cause.stored_name(),
        }
    }

    /// The cause whose [`stored_name`](Cause::stored_name) is `stored`; `None` for text that
    /// is no stored name (neither `apns:` nor a valid `engine:` name).
    pub fn from_stored(stored: &str) -> Option<Self> {
        if let Some(reason) = Reason::from_stored(stored) {
            return Some(Cause::Apns(reason));
        }
        EngineCause::from_stored(stored).map(Cause::Engine)
    }

    /// Reads a reason string as versions before typed causes produced it (the `Display` of
    /// their `PushError::reason()`), for migrating stored rows. Engine outcomes were spelled
    /// like APNs reasons then; this maps them back:
    ///
    /// - `DeadlineExceeded`, `NoCertificate`, `QueueFull`, `ConnectionLost`,
    ///   `ConnectionClosed`, `RefusedStream`, `GoAway` → the engine cause of that name;
    /// - `StreamReset(Some(CANCEL))`, `StreamReset(Some(Reason(1f)))` (and today's
    ///   `StreamReset(CANCEL)`, `StreamReset(0x1f)`) → [`EngineCause::StreamReset`];
    /// - `HTTP502` → [`EngineCause::HttpStatus`]; `BadRequest` (what a 400 without a body
    ///   was called) → `HttpStatus(400)`;
    /// - the TLS alert names `CertificateExpired`, `CertificateRevoked`, `CertificateUnknown`,
    ///   `UnsupportedCertificate`, `UnknownCA`, `AccessDenied`, `CertificateRequired` →
    ///   [`EngineCause::TlsAlert`];
    /// - everything else, including the two ambiguous names, is APNs's reason verbatim:
    ///   `BadCertificate` (APNs's 403 reason, far more common than the TLS alert of that
    ///   name, and meaning the same to an operator) and `Shutdown` (APNs's 503 reason as the
    ///   last reason of `RetriesExhausted`; the engine's own shutdown ended pushes as
    ///   `PushError::Shutdown`, which a caller that stores outcomes had better not record).
    ///
    /// A stored name (`apns:…`, `engine:…`) is read as such, so migrating twice is harmless.
    pub fn from_legacy(text: &str) -> Self {
        if let Some(cause) = Cause::from_stored(text) {
            return cause;
        }
        let engine = match text {
            "DeadlineExceeded" => Some(EngineCause::DeadlineExceeded),
            "NoCertificate" => Some(EngineCause::NoCertificate),
            "QueueFull" => Some(EngineCause::QueueFull),
            "ConnectionLost" => Some(EngineCause::ConnectionLost),
            "ConnectionClosed" => Some(EngineCause::ConnectionClosed),
            "RefusedStream" => Some(EngineCause::RefusedStream),
            "GoAway" => Some(EngineCause::GoAway),
            "BadRequest" => Some(EngineCause::HttpStatus(400)),
            "BadCertificate" => None,
            _ => legacy_stream_reset(text)
                .map(EngineCause::StreamReset)
                .or_else(|| {
                    let digits = text.strip_prefix("HTTP")?;
                    canonical_number(digits).map(EngineCause::HttpStatus)
                })
                .or_else(|| {
                    CertificateAlert::ALL
                        .iter()
                        .find(|a| a.display_name() == text)
                        .map(|a| EngineCause::TlsAlert(*a))
                }),
        };
        match engine {
            Some(cause) => Cause::Engine(cause),
            None => Cause::Apns(Reason::new(text)),
        }
    }

    /// The cause as a metric label, from a fixed set (see [`Reason::label`] and
    /// [`EngineCause::label`]).
    pub fn label(&self) -> &'static str {
        match self {
            Cause::Apns(reason) => reason.label(),
            Cause::Engine(cause) => cause.label(),
        }
    }

    /// APNs's reason, if this is one.
    pub fn apns(&self) -> Option<&Reason> {
        match self {
            Cause::Apns(reason) => Some(reason),
            Cause::Engine(_) => None,
        }
    }

    /// The engine's cause, if this is one.
    pub fn engine(&self) -> Option<EngineCause> {
        match self {
            Cause::Apns(_) => None,
            Cause::Engine(cause) => Some(*cause),
        }
    }
}

/// The error code of a legacy `StreamReset(…)` text: `StreamReset(Some(CANCEL))` or
/// `StreamReset(Some(Reason(1f)))` as h2's `Debug` spelled it, or today's display.
fn legacy_stream_reset(text: &str) -> Option<u32> {
    let inner = text.strip_prefix("StreamReset(")?.strip_suffix(')')?;
    let inner = inner
        .strip_prefix("Some(")
        .and_then(|i| i.strip_suffix(')'))
        .unwrap_or(inner);
    if let Some(hex) = inner
        .strip_prefix("Reason(")
        .and_then(|h| h.strip_suffix(')'))
    {
        return u32::from_str_radix(hex, 16).ok();
    }
    if let Some(hex) = inner.strip_prefix("0x") {
        return u32::from_str_radix(hex, 16).ok();
    }
    (0..14).find(|&code| h2_error_name(code) == Some(inner))
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Apns(reason) => fmt::Display::fmt(reason, f),
            Cause::Engine(cause) => fmt::Display::fmt(cause, f),
        }
    }
}

impl From<Reason> for Cause {
    fn from(reason: Reason) -> Self {
        Cause::Apns(reason)
    }
}

impl From<EngineCause> for Cause {
    fn from(cause: EngineCause) -> Self {
        Cause::Engine(cause)
    }
}

impl From<CertificateAlert> for Cause {
    fn from(alert: CertificateAlert) -> Self {
        Cause::Engine(EngineCause::TlsAlert(alert))
    }
}

impl PartialEq<Reason> for Cause {
    fn eq(&self, other: &Reason) -> bool {
        self.apns() == Some(other)
    }
}

impl PartialEq<EngineCause> for Cause {
    fn eq(&self, other: &EngineCause) -> bool {
        self.engine() == Some(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine cause, with the edge values of the parametrised ones.
    fn every_engine_cause() -> Vec<EngineCause> {
        let mut all = vec![
            EngineCause::DeadlineExceeded,
            EngineCause::NoCertificate,
            EngineCause::QueueFull,
            EngineCause::ConnectionLost,
            EngineCause::ConnectionClosed,
            EngineCause::RefusedStream,
            EngineCause::GoAway,
            EngineCause::Shutdown,
        ];
        all.extend([0, 1, 8, 13, 14, 0x1f, u32::MAX].map(EngineCause::StreamReset));
        all.extend(
            CertificateAlert::ALL
                .iter()
                .map(|a| EngineCause::TlsAlert(*a)),
        );
        all.extend([0, 1, 400, 418, 502, 599, u16::MAX].map(EngineCause::HttpStatus));
        // Let the compiler point here when a variant is added.
        for cause in &all {
            match cause {
                EngineCause::DeadlineExceeded
                | EngineCause::NoCertificate
                | EngineCause::QueueFull
                | EngineCause::ConnectionLost
                | EngineCause::ConnectionClosed
                | EngineCause::RefusedStream
                | EngineCause::GoAway
                | EngineCause::StreamReset(_)
                | EngineCause::TlsAlert(_)
                | EngineCause::HttpStatus(_)
                | EngineCause::Shutdown => {}
            }
        }
        all
    }

    /// Every documented APNs reason, and some that are not, strange ones included.
    fn some_reasons() -> Vec<Reason> {
        let mut all: Vec<Reason> = Reason::DOCUMENTED.iter().map(|r| Reason::new(*r)).collect();
        for odd in [
            "",
            "SomethingNew",
            "Shutdown",
            "DeadlineExceeded",
            "engine:shutdown",
            "apns:BadTopic",
            "with spaces and ünïcode",
            "HTTP502",
        ] {
            all.push(Reason::new(odd));
        }
        all
    }

    #[test]
    fn every_engine_cause_round_trips_and_never_reads_as_apns() {
        let mut seen = std::collections::HashSet::new();
        for cause in every_engine_cause() {
            let stored = cause.stored_name();
            assert!(stored.starts_with(EngineCause::STORED_PREFIX), "{stored}");
            assert_eq!(EngineCause::from_stored(&stored), Some(cause), "{stored}");
            assert_eq!(Cause::from_stored(&stored), Some(Cause::Engine(cause)));
            assert_eq!(Reason::from_stored(&stored), None, "{stored}");
            assert!(seen.insert(stored.clone()), "{stored} named twice");
            // Reading a stored name as legacy text keeps it.
            assert_eq!(Cause::from_legacy(&stored), Cause::Engine(cause));
        }
    }

    #[test]
    fn every_apns_reason_round_trips_and_never_reads_as_engine() {
        for reason in some_reasons() {
            let stored = reason.stored_name();
            assert_eq!(stored, format!("apns:{}", reason.as_str()));
            assert_eq!(Reason::from_stored(&stored), Some(reason.clone()));
            assert_eq!(EngineCause::from_stored(&stored), None, "{stored}");
            let cause = Cause::Apns(reason.clone());
            assert_eq!(cause.stored_name(), stored);
            assert_eq!(Cause::from_stored(&stored), Some(cause));
        }
    }

    #[test]
    fn only_exact_stored_names_parse() {
        for junk in [
            "",
            "DeadlineExceeded",
            "Shutdown",
            "engine:",
            "engine:Shutdown",
            "engine:shutdown ",
            "engine:stream_reset:",
            "engine:stream_reset:08",
            "engine:stream_reset:+8",
            "engine:stream_reset:-1",
            "engine:stream_reset:4294967296",
            "engine:http_status:65536",
            "engine:http_status:0x1f",
            "engine:tls_alert:CertificateExpired",
            "engine:tls_alert:45",
            "APNS:BadTopic",
            "engine:apns:BadTopic",
        ] {
            assert_eq!(Cause::from_stored(junk), None, "{junk:?}");
            assert_eq!(EngineCause::from_stored(junk), None, "{junk:?}");
        }
        assert_eq!(Reason::from_stored("BadTopic"), None);
    }

    #[test]
    fn legacy_text_maps_to_typed_causes() {
        let engine = |text: &str| Cause::from_legacy(text).engine();
        assert_eq!(
            engine("DeadlineExceeded"),
            Some(EngineCause::DeadlineExceeded)
        );
        assert_eq!(engine("GoAway"), Some(EngineCause::GoAway));
        assert_eq!(
            engine("StreamReset(Some(CANCEL))"),
            Some(EngineCause::StreamReset(8))
        );
        assert_eq!(
            engine("StreamReset(Some(Reason(1f)))"),
            Some(EngineCause::StreamReset(0x1f))
        );
        assert_eq!(engine("HTTP502"), Some(EngineCause::HttpStatus(502)));
        assert_eq!(engine("BadRequest"), Some(EngineCause::HttpStatus(400)));
        assert_eq!(
            engine("CertificateExpired"),
            Some(EngineCause::TlsAlert(CertificateAlert::CertificateExpired))
        );
        assert_eq!(
            engine("UnknownCA"),
            Some(EngineCause::TlsAlert(CertificateAlert::UnknownCa))
        );
        for apns in [
            "Shutdown",
            "BadCertificate",
            "Unregistered",
            "SomethingNew",
            "",
        ] {
            assert_eq!(Cause::from_legacy(apns), Cause::Apns(Reason::new(apns)));
        }
        // Whatever the engine displays today reads back as the same cause, but for the two
        // names APNs uses too.
        let ambiguous = [
            EngineCause::Shutdown,
            EngineCause::TlsAlert(CertificateAlert::BadCertificate),
        ];
        for cause in every_engine_cause() {
            if ambiguous.contains(&cause) {
                assert!(Cause::from_legacy(&cause.to_string()).apns().is_some());
                continue;
            }
            assert_eq!(
                Cause::from_legacy(&cause.to_string()),
                Cause::Engine(cause),
                "{cause}"
            );
        }
    }

    #[test]
    fn display_keeps_the_old_spellings() {
        assert_eq!(
            EngineCause::DeadlineExceeded.to_string(),
            "DeadlineExceeded"
        );
        assert_eq!(
            EngineCause::StreamReset(8).to_string(),
            "StreamReset(CANCEL)"
        );
        assert_eq!(
            EngineCause::StreamReset(99).to_string(),
            "StreamReset(0x63)"
        );
        assert_eq!(EngineCause::HttpStatus(502).to_string(), "HTTP502");
        assert_eq!(
            EngineCause::TlsAlert(CertificateAlert::CertificateExpired).to_string(),
            "CertificateExpired"
        );
        assert_eq!(Cause::from(Reason::BadTopic).to_string(), "BadTopic");
    }

    #[test]
    fn labels_are_a_fixed_set() {
        let labels: std::collections::BTreeSet<&str> = every_engine_cause()
            .iter()
            .map(EngineCause::label)
            .collect();
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            [
                "BadCertificate",
                "CertificateExpired",
                "ConnectionClosed",
                "ConnectionLost",
                "DeadlineExceeded",
                "GoAway",
                "HTTP",
                "NoCertificate",
                "QueueFull",
                "RefusedStream",
                "Shutdown",
                "StreamReset",
                "TlsAlert",
            ]
        );
        assert_eq!(Cause::from(Reason::new("Junk<script>")).label(), "other");
        assert_eq!(Cause::from(Reason::Unregistered).label(), "Unregistered");
    }

    #[test]
    fn causes_compare_with_their_parts() {
        assert_eq!(Cause::from(Reason::Shutdown), Reason::Shutdown);
        assert_ne!(Cause::from(EngineCause::Shutdown), Reason::Shutdown);
        assert_eq!(Cause::from(EngineCause::Shutdown), EngineCause::Shutdown);
        assert_ne!(
            Cause::from(EngineCause::Shutdown).stored_name(),
            Cause::from(Reason::Shutdown).stored_name()
        );
    }
}
