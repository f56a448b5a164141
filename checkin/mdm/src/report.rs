//! Command reports (`PUT /mdm/server`): a status, the command it answers, and its result.

use std::fmt;
use std::str::FromStr;

use plist::{Dictionary, Value};
use serde::Serialize;

use super::dict::{type_name, Fields};
use super::DecodeError;

/// `Status` of a command report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Status {
    /// The device is ready for a command; no result.
    Idle,
    /// The command succeeded; result keys may follow.
    Acknowledged,
    /// The command failed; see the `ErrorChain`.
    Error,
    /// The command plist was malformed.
    CommandFormatError,
    /// The device cannot run the command now; it stays queued.
    NotNow,
}

impl Status {
    /// All statuses.
    pub const ALL: [Status; 5] = [
        Status::Idle,
        Status::Acknowledged,
        Status::Error,
        Status::CommandFormatError,
        Status::NotNow,
    ];

    /// As Apple spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "Idle",
            Status::Acknowledged => "Acknowledged",
            Status::Error => "Error",
            Status::CommandFormatError => "CommandFormatError",
            Status::NotNow => "NotNow",
        }
    }

    /// True for the statuses that end a command (Acknowledged, Error, CommandFormatError):
    /// it leaves the queue.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Acknowledged | Status::Error | Status::CommandFormatError
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| DecodeError::UnknownStatus(s.to_owned()))
    }
}

/// One entry of a report's `ErrorChain`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct ErrorChainItem {
    /// `ErrorCode`.
    pub code: Option<i64>,
    /// `ErrorDomain`.
    pub domain: Option<String>,
    /// `LocalizedDescription`.
    pub localized_description: Option<String>,
    /// `USEnglishDescription`.
    pub us_english_description: Option<String>,
}

/// Device facts, from an `Authenticate` check-in or a `DeviceInformation` result's
/// `QueryResponses`. Every field is optional; [`DeviceInfo::merge`] overlays newer facts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DeviceInfo {
    /// `DeviceName`.
    pub device_name: Option<String>,
    /// `Model` (e.g. `MQ3D2J/A`).
    pub model: Option<String>,
    /// `ModelName` (e.g. `iPhone`).
    pub model_name: Option<String>,
    /// `ProductName` (e.g. `iPhone15,2`).
    pub product_name: Option<String>,
    /// `OSVersion`.
    pub os_version: Option<String>,
    /// `BuildVersion`.
    pub build_version: Option<String>,
    /// `SerialNumber`.
    pub serial_number: Option<String>,
    /// `IMEI`.
    pub imei: Option<String>,
    /// `MEID`.
    pub meid: Option<String>,
    /// `PhoneNumber` (DeviceInformation only).
    pub phone_number: Option<String>,
}

/// The plist keys of [`DeviceInfo`], in field order.
pub(crate) const INFO_KEYS: [&str; 10] = [
    "DeviceName",
    "Model",
    "ModelName",
    "ProductName",
    "OSVersion",
    "BuildVersion",
    "SerialNumber",
    "IMEI",
    "MEID",
    "PhoneNumber",
];

impl DeviceInfo {
    /// The fields in [`INFO_KEYS`] order, mutably.
    fn fields_mut(&mut self) -> [&mut Option<String>; 10] {
        [
            &mut self.device_name,
            &mut self.model,
            &mut self.model_name,
            &mut self.product_name,
            &mut self.os_version,
            &mut self.build_version,
            &mut self.serial_number,
            &mut self.imei,
            &mut self.meid,
            &mut self.phone_number,
        ]
    }

    /// Overlays every field `newer` has; keeps the others.
    pub fn merge(&mut self, newer: &DeviceInfo) {
        let mut newer = newer.clone();
        for (mine, theirs) in self.fields_mut().into_iter().zip(newer.fields_mut()) {
            if theirs.is_some() {
                *mine = theirs.take();
            }
        }
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == DeviceInfo::default()
    }

    /// Strict: a present key of the wrong type is an error (check-in messages).
    pub(crate) fn from_fields(f: &Fields<'_>) -> Result<Self, DecodeError> {
        let mut info = DeviceInfo::default();
        for (slot, key) in info.fields_mut().into_iter().zip(INFO_KEYS) {
            *slot = f.string(key)?;
        }
        Ok(info)
    }

    /// Lenient: keys with non-string values are skipped (command results; see
    /// `Fields::lenient_string`).
    fn from_query_responses(f: &Fields<'_>) -> Self {
        let mut info = DeviceInfo::default();
        for (slot, key) in info.fields_mut().into_iter().zip(INFO_KEYS) {
            *slot = f.lenient_string(key);
        }
        info
    }
}

/// A decoded command report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `UDID`, or `EnrollmentID`.
    pub udid: String,
    /// `UserID`, when the report comes on a user channel.
    pub user_id: Option<String>,
    /// `Status`.
    pub status: Status,
    /// `CommandUUID`: present for every status but Idle (where it is ignored if sent).
    pub command_uuid: Option<String>,
    /// `ErrorChain`, empty when absent.
    pub error_chain: Vec<ErrorChainItem>,
    /// Facts from `QueryResponses` (a DeviceInformation result), if present and a dictionary.
    pub device_info: Option<DeviceInfo>,
    /// The whole report dictionary, to store as the raw result.
    pub raw: Dictionary,
}

impl Report {
    /// The raw report as an XML plist (what the store keeps as the result).
    pub fn raw_xml(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing a dictionary of plist values into a Vec cannot fail: there is no I/O error
        // and every value came from a parsed plist.
        if Value::Dictionary(self.raw.clone())
            .to_writer_xml(&mut out)
            .is_err()
        {
            out.clear();
        }
        out
    }

    pub(crate) fn from_dict(dict: Dictionary) -> Result<Self, DecodeError> {
        let f = Fields::new(&dict);
        let status: Status = f.req_string("Status")?.parse()?;
        let command_uuid = match status {
            Status::Idle => None,
            _ => Some(f.req_nonempty("CommandUUID")?),
        };
        let error_chain = match f.array("ErrorChain")? {
            Some(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| error_chain_item(i, v))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let device_info =
            f.dict("QueryResponses").ok().flatten().map(|d| {
                DeviceInfo::from_query_responses(&Fields::nested(d, "QueryResponses".into()))
            });
        let udid = f.device_id()?;
        let user_id = f.string("UserID")?;
        Ok(Report {
            udid,
            user_id,
            status,
            command_uuid,
            error_chain,
            device_info,
            raw: dict,
        })
    }
}

fn error_chain_item(i: usize, v: &Value) -> Result<ErrorChainItem, DecodeError> {
    let path = format!("ErrorChain[{i}]");
    let Some(d) = v.as_dictionary() else {
        return Err(DecodeError::WrongType {
            key: path,
            expected: "dictionary",
            got: type_name(v),
        });
    };
    let f = Fields::nested(d, path);
    Ok(ErrorChainItem {
        code: f.integer("ErrorCode")?,
        domain: f.string("ErrorDomain")?,
        localized_description: f.string("LocalizedDescription")?,
        us_english_description: f.string("USEnglishDescription")?,
    })
}
