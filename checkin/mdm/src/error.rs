//! What can be wrong with a check-in or command report body.

/// Why a body is not an acceptable check-in or command report. Every variant names the key
/// and the problem so the HTTP layer can answer `400` with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is empty.
    #[error("empty body: expected an XML or binary plist")]
    Empty,
    /// The body does not parse as an XML or binary plist (truncated, garbage, ASCII plist…).
    #[error("not a valid {format} plist: {detail}")]
    NotAPlist {
        /// `XML` or `binary`, as detected from the first bytes.
        format: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// Nested too deeply or expanding into too many values (see [`super::MAX_DEPTH`],
    /// [`super::MAX_VALUES`]): rejected before parsing.
    #[error("plist too complex: {detail}")]
    TooComplex {
        /// Which limit was exceeded.
        detail: String,
    },
    /// The top-level value is not a dictionary.
    #[error("top-level plist value is {got}, expected a dictionary")]
    NotADictionary {
        /// The plist type found.
        got: &'static str,
    },
    /// Neither `MessageType` (check-in) nor `Status` (command report) is present.
    #[error("neither MessageType nor Status present: not a check-in or a command report")]
    UnknownKind,
    /// Both `MessageType` and `Status` are present.
    #[error("both MessageType and Status present: ambiguous message")]
    AmbiguousKind,
    /// A check-in was expected (`/mdm/checkin`) but a command report came, or the reverse.
    #[error("expected a {expected}, got a {got}")]
    WrongEndpoint {
        /// What the endpoint accepts.
        expected: &'static str,
        /// What the body is.
        got: &'static str,
    },
    /// A required key is absent.
    #[error("missing key {key}")]
    MissingKey {
        /// The key, with its path for nested dictionaries (`ErrorChain[0].ErrorCode`).
        key: String,
    },
    /// A key has a value of the wrong plist type.
    #[error("key {key} has wrong type: expected {expected}, got {got}")]
    WrongType {
        /// The key, with its path for nested values.
        key: String,
        /// The plist type required.
        expected: &'static str,
        /// The plist type found.
        got: &'static str,
    },
    /// A key has the right type but an unusable value (an empty token, an empty UDID…).
    #[error("key {key} has an invalid value: {why}")]
    InvalidValue {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// `MessageType` is not one Apple defines.
    #[error("unknown MessageType {0:?}")]
    UnknownMessageType(String),
    /// `Status` is not one of Idle, Acknowledged, Error, CommandFormatError, NotNow.
    #[error("unknown Status {0:?}")]
    UnknownStatus(String),
}
