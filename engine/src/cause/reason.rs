//! APNs `reason` strings: a newtype that names the known ones and keeps unknown ones verbatim.

use std::borrow::Cow;
use std::fmt;

/// A `reason` from an APNs error response or GOAWAY body — only what APNs said: the engine's
/// own outcomes are [`EngineCause`](super::EngineCause)s.
///
/// Known reasons have constants; any other string is kept as APNs spelled it, so an operator
/// never sees a new reason collapsed into "unknown".
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reason(Cow<'static, str>);

macro_rules! reasons {
    ($($name:ident),* $(,)?) => {
        impl Reason {
            $(
                #[doc = concat!("APNs's `", stringify!($name), "`.")]
                #[expect(non_upper_case_globals, reason = "spelled as APNs spells the reason")]
                pub const $name: Reason = Reason(Cow::Borrowed(stringify!($name)));
            )*

            /// Every reason APNs documents, by name.
            pub const DOCUMENTED: &'static [&'static str] = &[$(stringify!($name)),*];
        }
    };
}

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
    /// The prefix of every APNs reason's stored name.
    pub const STORED_PREFIX: &'static str = "apns:";

    /// A reason as APNs sent it. Unknown strings are kept verbatim.
    pub fn new(s: impl Into<String>) -> Self {
        Reason(Cow::Owned(s.into()))
    }

    /// The reason exactly as APNs spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stable stored name: `apns:` followed by the reason verbatim (`apns:Unregistered`,
    /// `apns:SomethingNew`). It never reads as an engine cause's (see [`crate::cause`]).
    pub fn stored_name(&self) -> Cow<'static, str> {
        Cow::Owned(format!("{}{}", Self::STORED_PREFIX, self.0))
    }

    /// The reason whose [`stored_name`](Reason::stored_name) is `stored`: the text after
    /// `apns:`, verbatim; `None` without that prefix.
    pub fn from_stored(stored: &str) -> Option<Self> {
        stored.strip_prefix(Self::STORED_PREFIX).map(Reason::new)
    }

    /// The reason as a metric label, from a fixed set: a documented APNs reason by name, and
    /// `other` for anything else a server or a proxy may send — so that no peer can grow a
    /// metric's label set. The verbatim reason stays in the outcome and the log.
    pub fn label(&self) -> &'static str {
        let s = self.as_str();
        Self::DOCUMENTED
            .iter()
            .find(|k| **k == s)
            .copied()
            .unwrap_or("other")
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
        assert_eq!(Reason::new("BadCertificate").label(), "BadCertificate");
        assert_eq!(Reason::new("").label(), "other");
        // The engine's own outcomes are not APNs reasons.
        assert_eq!(Reason::new("DeadlineExceeded").label(), "other");
        assert_eq!(Reason::new("HTTP502").label(), "other");
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

    #[test]
    fn stored_names_are_prefixed_and_verbatim() {
        assert_eq!(Reason::Shutdown.stored_name(), "apns:Shutdown");
        assert_eq!(
            Reason::from_stored("apns:SomethingNew"),
            Some(Reason::new("SomethingNew"))
        );
        assert_eq!(Reason::from_stored("apns:"), Some(Reason::new("")));
        assert_eq!(Reason::from_stored("Shutdown"), None);
        assert_eq!(Reason::from_stored("engine:shutdown"), None);
    }
}
