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
    /// A reason as received (or made up by the engine for its own outcomes, such as
    /// `DeadlineExceeded`). Unknown strings are kept verbatim.
    pub fn new(s: impl Into<String>) -> Self {
        Reason(Cow::Owned(s.into()))
    }

    /// The reason exactly as APNs spells it.
    pub fn as_str(&self) -> &str {
        &self.0
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
    fn known_and_unknown_compare_by_text() {
        assert_eq!(Reason::new("Unregistered"), Reason::Unregistered);
        assert_eq!(Reason::new("SomethingNew").as_str(), "SomethingNew");
        assert_eq!(format!("{:?}", Reason::BadTopic), "Reason(BadTopic)");
    }
}
