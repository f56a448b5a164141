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
}

impl Command {
    /// A command with a fresh random UUID.
    pub fn new(request_type: impl Into<String>, params: Dictionary) -> Self {
        Command {
            uuid: uuid::Uuid::new_v4().to_string().to_ascii_uppercase(),
            request_type: request_type.into(),
            params,
        }
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
