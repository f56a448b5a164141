//! APNs `reason` strings: a newtype that names the known ones and keeps unknown ones verbatim.

use std::borrow::Cow;
use std::fmt;

/// A `reason` from an APNs error response or GOAWAY body.
///
/// Known reasons have constants; any other string is kept as APNs spelled it, so an operator
/// never sees a new reason collapsed into "unknown".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reason(Cow<'static, str>);

macro_rules! reasons {
    ($($name:ident),* $(,)?) => {
        impl Reason {
            $(
                #[allow(non_upper_case_globals, missing_docs)]
                pub const $name: Reason = Reason(Cow::Borrowed(stringify!($name)));
            )*
        }

        /// Every reason APNs documents, by name.
        const DOCUMENTED: &[&str] = &[$(stringify!($name)),*];
    };
}

/// The engine's own reasons (outcomes no APNs body names), also metric labels.
const ENGINE_OWN: &[&str] = &[
    "DeadlineExceeded",
    "NoCertificate",
    "QueueFull",
    "ConnectionLost",
    "ConnectionClosed",
    "RefusedStream",
    "GoAway",
    "CertificateExpired",
    "StreamReset",
    "TlsAlert",
    "HTTP",
];

reasons!(
    BadCollapseId,
    BadDeviceToken,
    BadExpirationDate,
    BadMessageId,
    BadPriority,
    BadTopic,
    DeviceTokenNotForTopic,
    DuplicateHeaders,
    IdleTimeout,
    InvalidPushType,
    MissingDeviceToken,
    MissingTopic,
    PayloadEmpty,
    TopicDisallowed,
    BadCertificate,
    BadCertificateEnvironment,
    ExpiredProviderToken,
    Forbidden,
    InvalidProviderToken,
    MissingProviderToken,
    BadPath,
    MethodNotAllowed,
    ExpiredToken,
    Unregistered,
    PayloadTooLarge,
    TooManyProviderTokenUpdates,
    TooManyRequests,
    InternalServerError,
    ServiceUnavailable,
    Shutdown,
);

impl Reason {
    /// A reason as received (or made up by the engine for its own outcomes, such as
    /// `DeadlineExceeded`). Unknown strings are kept verbatim.
    pub fn new(s: impl Into<String>) -> Self {
        Reason(Cow::Owned(s.into()))
    }

    /// The reason exactly as APNs spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The reason as a metric label, from a fixed set: a documented APNs reason or one of the
    /// engine's own by name, a family for the engine's parametrised ones
    /// (`StreamReset(…)` → `StreamReset`, `HTTP502` → `HTTP`, a TLS alert → `TlsAlert`), and
    /// `other` for anything else a server or a proxy may send — so that no peer can grow a
    /// metric's label set. The verbatim reason stays in the outcome and the log.
    pub fn label(&self) -> &'static str {
        let s = self.as_str();
        if let Some(known) = DOCUMENTED.iter().chain(ENGINE_OWN).find(|k| **k == s) {
            return known;
        }
        if s.starts_with("StreamReset(") {
            return "StreamReset";
        }
        if s.len() == 7 && s.starts_with("HTTP") && s[4..].bytes().all(|b| b.is_ascii_digit()) {
            return "HTTP";
        }
        if crate::alert::is_alert_reason(s) {
            return "TlsAlert";
        }
        "other"
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reason({})", self.0)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Reason {
    fn from(s: &str) -> Self {
        Reason::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_fixed_set() {
        assert_eq!(Reason::BadDeviceToken.label(), "BadDeviceToken");
        assert_eq!(Reason::new("DeadlineExceeded").label(), "DeadlineExceeded");
        assert_eq!(Reason::new("StreamReset(CANCEL)").label(), "StreamReset");
        assert_eq!(Reason::new("HTTP502").label(), "HTTP");
        assert_eq!(Reason::new("HTTP5020").label(), "other");
        assert_eq!(Reason::new("BadCertificate").label(), "BadCertificate");
        assert_eq!(Reason::new("").label(), "other");
        // Whatever a misbehaving peer sends, the labels stay within one small set.
        let mut labels = std::collections::BTreeSet::new();
        for i in 0..10_000 {
            labels.insert(Reason::new(format!("Junk{i}<script>")).label());
        }
        assert_eq!(labels.len(), 1);
        assert!(labels.contains("other"));
    }

    #[test]
    fn known_and_unknown_compare_by_text() {
        assert_eq!(Reason::new("Unregistered"), Reason::Unregistered);
        assert_eq!(Reason::new("SomethingNew").as_str(), "SomethingNew");
        assert_eq!(format!("{:?}", Reason::BadTopic), "Reason(BadTopic)");
    }
}
