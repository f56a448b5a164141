//! Check-in messages (`PUT /mdm/checkin`), dispatched on `MessageType`.

use magicpush_engine::DeviceToken;
use plist::Dictionary;

use super::dict::{Fields, MAX_PUSH_MAGIC, MAX_TOKEN, MAX_TOPIC};
use super::{DecodeError, DeviceInfo, Secret};

/// A decoded check-in message.
#[derive(Debug, Clone, PartialEq)]
pub enum Checkin {
    /// The device starts enrolling; it is not enrolled until its first [`TokenUpdate`].
    Authenticate(Authenticate),
    /// The device (or a user on it) gives its push token; the first one completes enrollment.
    TokenUpdate(TokenUpdate),
    /// The MDM profile was removed. Best effort: may never arrive.
    CheckOut(CheckOut),
    /// The device escrows its bootstrap token (absent or empty data clears it).
    SetBootstrapToken(SetBootstrapToken),
    /// The device asks for its escrowed bootstrap token.
    GetBootstrapToken(GetBootstrapToken),
    /// A MessageType Apple defines that this server does not offer (`UserAuthenticate`,
    /// `DeclarativeManagement`, `GetToken`, `ReturnToService`). The HTTP layer answers a clear 4xx.
    Unsupported {
        /// The MessageType as sent.
        message_type: String,
        /// The device identifier if one was given.
        udid: Option<String>,
    },
}

/// Fields of an `Authenticate` check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    /// `UDID`, or `EnrollmentID` for User Enrollment.
    pub udid: String,
    /// `Topic`: the push certificate's topic the device enrolled with.
    pub topic: String,
    /// Device facts sent with the message (all optional).
    pub info: DeviceInfo,
}

/// The user channel of a user-channel `TokenUpdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChannel {
    /// `UserID` (required for the user channel).
    pub user_id: String,
    /// `UserShortName`.
    pub short_name: Option<String>,
    /// `UserLongName`.
    pub long_name: Option<String>,
}

/// Fields of a `TokenUpdate` check-in.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenUpdate {
    /// `UDID`, or `EnrollmentID` for User Enrollment.
    pub udid: String,
    /// `Topic`.
    pub topic: String,
    /// `Token`, hex-encoded for the APNs path.
    pub token: DeviceToken,
    /// `PushMagic`: the `mdm` value of every push.
    pub push_magic: String,
    /// `UnlockToken`, if sent. Sensitive: `Debug` redacts it.
    pub unlock_token: Option<Secret>,
    /// `AwaitingConfiguration` (false when absent).
    pub awaiting_configuration: bool,
    /// Present when the message carries `UserID`: a user-channel token, which must not replace
    /// the device channel's token.
    pub user: Option<UserChannel>,
}

/// Fields of a `CheckOut` check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOut {
    /// `UDID`, or `EnrollmentID`.
    pub udid: String,
    /// `Topic`, if sent.
    pub topic: Option<String>,
}

/// Fields of a `SetBootstrapToken` check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetBootstrapToken {
    /// `UDID`, or `EnrollmentID`.
    pub udid: String,
    /// `BootstrapToken`; `None` when absent or empty (the device clears its escrowed token).
    pub token: Option<Secret>,
}

/// Fields of a `GetBootstrapToken` check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetBootstrapToken {
    /// `UDID`, or `EnrollmentID`.
    pub udid: String,
}

/// MessageTypes Apple defines that this server answers as unsupported.
const UNSUPPORTED: &[&str] = &[
    "UserAuthenticate",
    "DeclarativeManagement",
    "GetToken",
    "ReturnToService",
];

impl Checkin {
    /// The `MessageType` as Apple spells it.
    pub fn message_type(&self) -> &str {
        match self {
            Checkin::Authenticate(_) => "Authenticate",
            Checkin::TokenUpdate(_) => "TokenUpdate",
            Checkin::CheckOut(_) => "CheckOut",
            Checkin::SetBootstrapToken(_) => "SetBootstrapToken",
            Checkin::GetBootstrapToken(_) => "GetBootstrapToken",
            Checkin::Unsupported { message_type, .. } => message_type,
        }
    }

    /// The device identifier (`UDID` or `EnrollmentID`), if the message has one.
    pub fn udid(&self) -> Option<&str> {
        match self {
            Checkin::Authenticate(m) => Some(&m.udid),
            Checkin::TokenUpdate(m) => Some(&m.udid),
            Checkin::CheckOut(m) => Some(&m.udid),
            Checkin::SetBootstrapToken(m) => Some(&m.udid),
            Checkin::GetBootstrapToken(m) => Some(&m.udid),
            Checkin::Unsupported { udid, .. } => udid.as_deref(),
        }
    }

    pub(crate) fn from_dict(dict: &Dictionary) -> Result<Self, DecodeError> {
        let f = Fields::new(dict);
        let message_type = f.req_string("MessageType")?;
        Ok(match message_type.as_str() {
            "Authenticate" => Checkin::Authenticate(Authenticate {
                udid: f.device_id()?,
                topic: f.req_bounded("Topic", MAX_TOPIC)?,
                info: DeviceInfo::from_fields(&f)?,
            }),
            "TokenUpdate" => Checkin::TokenUpdate(token_update(&f)?),
            "CheckOut" => Checkin::CheckOut(CheckOut {
                udid: f.device_id()?,
                topic: f.bounded("Topic", MAX_TOPIC)?,
            }),
            "SetBootstrapToken" => Checkin::SetBootstrapToken(SetBootstrapToken {
                udid: f.device_id()?,
                token: f
                    .data("BootstrapToken")?
                    .filter(|t| !t.is_empty())
                    .map(Secret::new),
            }),
            "GetBootstrapToken" => Checkin::GetBootstrapToken(GetBootstrapToken {
                udid: f.device_id()?,
            }),
            other if UNSUPPORTED.contains(&other) => Checkin::Unsupported {
                message_type: message_type.clone(),
                udid: f.device_id().ok(),
            },
            _ => return Err(DecodeError::UnknownMessageType(message_type)),
        })
    }
}

fn token_update(f: &Fields<'_>) -> Result<TokenUpdate, DecodeError> {
    let raw = f.req_data("Token")?;
    f.check_len("Token", raw.len(), MAX_TOKEN)?;
    let token = DeviceToken::from_bytes(&raw).map_err(|e| DecodeError::InvalidValue {
        key: "Token".into(),
        why: e.why.into(),
    })?;
    let user = match f.string("UserID")? {
        Some(user_id) => Some(UserChannel {
            user_id,
            short_name: f.string("UserShortName")?,
            long_name: f.string("UserLongName")?,
        }),
        None => None,
    };
    Ok(TokenUpdate {
        udid: f.device_id()?,
        topic: f.req_bounded("Topic", MAX_TOPIC)?,
        token,
        push_magic: f.req_bounded("PushMagic", MAX_PUSH_MAGIC)?,
        unlock_token: f.data("UnlockToken")?.map(Secret::new),
        awaiting_configuration: f.boolean("AwaitingConfiguration")?.unwrap_or(false),
        user,
    })
}
