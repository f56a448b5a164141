//! Commands as a device receives them: an XML plist with `CommandUUID` and a `Command` dict.

use plist::{Dictionary, Value};

/// The queries a `DeviceInformation` refresh asks for: the device-list columns plus the usual
/// identity and capacity facts.
pub const DEVICE_INFORMATION_QUERIES: &[&str] = &[
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
    "UDID",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "WiFiMAC",
    "BluetoothMAC",
    "IsSupervised",
];

/// `RequestType` of a DeviceInformation command.
pub const DEVICE_INFORMATION: &str = "DeviceInformation";

/// One MDM command.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `CommandUUID`: uppercase UUID text, unique per command.
    pub uuid: String,
    /// `RequestType` (e.g. `DeviceInformation`).
    pub request_type: String,
    /// Every other key of the `Command` dictionary. A `RequestType` key here is ignored.
    pub params: Dictionary,
    /// Not sent after this time (a queued command that has expired is dropped unsent).
    pub expires_at: Option<time::OffsetDateTime>,
}

impl Command {
    /// A command with a fresh random UUID.
    pub fn new(request_type: impl Into<String>, params: Dictionary) -> Self {
        Command {
            uuid: uuid::Uuid::new_v4().to_string().to_ascii_uppercase(),
            request_type: request_type.into(),
            params,
            expires_at: None,
        }
    }

    /// A command with the given `CommandUUID` (as a client chose it).
    pub fn with_uuid(uuid: String, request_type: impl Into<String>, params: Dictionary) -> Self {
        Command {
            uuid,
            request_type: request_type.into(),
            params,
            expires_at: None,
        }
    }

    /// A command written as the plist a device would receive — a dictionary with a `Command`
    /// dictionary holding `RequestType`, and optionally `CommandUUID` — as an admin may send
    /// it (`POST /v1/commands` with a plist body). The structural limits of check-ins apply.
    pub fn from_plist(body: &[u8]) -> Result<Command, super::DecodeError> {
        use super::DecodeError;
        let top = super::parse_dictionary(body)?;
        let f = super::dict::Fields::new(&top);
        let uuid = f.bounded("CommandUUID", 128)?;
        let mut params = f
            .dict("Command")?
            .ok_or_else(|| DecodeError::MissingKey {
                key: "Command".into(),
            })?
            .clone();
        let request_type = super::dict::Fields::nested(&params, "Command".into())
            .req_bounded("RequestType", 128)?;
        params.remove("RequestType");
        Ok(match uuid {
            Some(uuid) if !uuid.trim().is_empty() => Command::with_uuid(uuid, request_type, params),
            _ => Command::new(request_type, params),
        })
    }

    /// A `DeviceInformation` command asking for `queries`
    /// (use [`DEVICE_INFORMATION_QUERIES`] for the usual list).
    pub fn device_information(queries: &[&str]) -> Self {
        let mut params = Dictionary::new();
        params.insert(
            "Queries".into(),
            Value::Array(queries.iter().map(|q| Value::String((*q).into())).collect()),
        );
        Command::new(DEVICE_INFORMATION, params)
    }

    /// The plist dictionary the device receives.
    pub fn to_dictionary(&self) -> Dictionary {
        let mut cmd = self.params.clone();
        cmd.insert(
            "RequestType".into(),
            Value::String(self.request_type.clone()),
        );
        let mut top = Dictionary::new();
        top.insert("CommandUUID".into(), Value::String(self.uuid.clone()));
        top.insert("Command".into(), Value::Dictionary(cmd));
        top
    }

    /// The XML plist body the device receives.
    pub fn to_xml(&self) -> Vec<u8> {
        encode_xml(self.to_dictionary())
    }
}

/// A stored command body with `UnlockToken` set in its `Command` dictionary, as a
/// `ClearPasscode` is handed to its device: the queue stores it without the token, which stays
/// only in the device's sealed column. `None` if the body is not a command dictionary (the
/// queue only holds bodies this crate encoded, so that is a bug, not a device's doing).
pub fn with_unlock_token(body: &[u8], token: &[u8]) -> Option<Vec<u8>> {
    let mut top: Dictionary = plist::from_bytes(body).ok()?;
    let Some(Value::Dictionary(cmd)) = top.get_mut("Command") else {
        return None;
    };
    cmd.insert("UnlockToken".into(), Value::Data(token.to_vec()));
    Some(encode_xml(top))
}

/// The body answering `GetBootstrapToken`: `BootstrapToken` data, omitted when none is escrowed.
pub fn bootstrap_token_response(token: Option<&[u8]>) -> Vec<u8> {
    let mut top = Dictionary::new();
    if let Some(t) = token {
        top.insert("BootstrapToken".into(), Value::Data(t.to_vec()));
    }
    encode_xml(top)
}

fn encode_xml(dict: Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    // Serialising an in-memory dictionary of strings, arrays and data to a Vec has no failure
    // mode (no I/O, no unrepresentable values); an empty body would be the visible symptom.
    if Value::Dictionary(dict).to_writer_xml(&mut out).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unlock_token_is_written_into_a_stored_body() {
        let cmd = Command::new("ClearPasscode", Dictionary::new());
        let body = with_unlock_token(&cmd.to_xml(), b"keybag").unwrap();
        let top: Dictionary = plist::from_bytes(&body).unwrap();
        assert_eq!(top["CommandUUID"].as_string(), Some(cmd.uuid.as_str()));
        let inner = top["Command"].as_dictionary().unwrap();
        assert_eq!(inner["RequestType"].as_string(), Some("ClearPasscode"));
        assert_eq!(inner["UnlockToken"].as_data(), Some(&b"keybag"[..]));
        assert!(with_unlock_token(b"<plist><array/></plist>", b"k").is_none());
        assert!(with_unlock_token(b"not a plist", b"k").is_none());
    }

    #[test]
    fn a_command_plist_from_an_admin() {
        let body = br#"<?xml version="1.0"?><plist version="1.0"><dict>
            <key>CommandUUID</key><string>MY-UUID-1</string>
            <key>Command</key><dict>
              <key>RequestType</key><string>InstallProfile</string>
              <key>Payload</key><data>PD94bWw+</data>
            </dict></dict></plist>"#;
        let cmd = Command::from_plist(body).unwrap();
        assert_eq!(cmd.uuid, "MY-UUID-1");
        assert_eq!(cmd.request_type, "InstallProfile");
        assert_eq!(
            cmd.params.get("Payload"),
            Some(&Value::Data(b"<?xml>".to_vec()))
        );
        assert!(!cmd.params.contains_key("RequestType"));
        let without_uuid = br#"<plist><dict><key>Command</key><dict>
            <key>RequestType</key><string>RestartDevice</string></dict></dict></plist>"#;
        let cmd = Command::from_plist(without_uuid).unwrap();
        assert_eq!(cmd.uuid.len(), 36);
        for bad in [
            &b"<plist><dict/></plist>"[..],
            b"<plist><dict><key>Command</key><dict/></dict></plist>",
            b"<plist><array/></plist>",
            b"not a plist",
        ] {
            assert!(
                Command::from_plist(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
