//! What a live device answers to each command: `Acknowledged` for the commands a device
//! knows (a DeviceInformation with its `QueryResponses`), `Error` for a request type no device
//! knows.

use super::super::device::SimDevice;
use super::super::xml::CommandRef;

/// Request types a real device carries out; the simulated one acknowledges each.
pub(crate) const KNOWN_REQUEST_TYPES: &[&str] = &[
    "DeviceInformation",
    "SecurityInfo",
    "DeviceLock",
    "EraseDevice",
    "ClearPasscode",
    "RestartDevice",
    "ShutDownDevice",
    "InstallProfile",
    "RemoveProfile",
    "ProfileList",
    "ProvisioningProfileList",
    "CertificateList",
    "InstalledApplicationList",
    "ManagedApplicationList",
    "InstallApplication",
    "RemoveApplication",
    "InstallEnterpriseApplication",
    "Settings",
    "Restrictions",
    "AvailableOSUpdates",
    "ScheduleOSUpdate",
    "OSUpdateStatus",
    "EnableLostMode",
    "DisableLostMode",
    "DeviceLocation",
    "PlayLostModeSound",
    "ClearRestrictionsPassword",
    "UserList",
    "LogOutUser",
    "DeleteUser",
    "SetFirmwarePassword",
    "VerifyFirmwarePassword",
    "SetRecoveryLock",
    "VerifyRecoveryLock",
    "DeclarativeManagement",
    "ActivationLockBypassCode",
    "RefreshCellularPlans",
    "ValidateApplications",
    "NSExtensionMappings",
    "RotateFileVaultKey",
];

/// How a command was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `Acknowledged`.
    Acknowledged,
    /// `Error`: the request type is unknown.
    Error,
}

/// The report answering `command`, and how it answers.
pub(crate) fn answer(d: &SimDevice, command: &CommandRef) -> (Vec<u8>, Answer) {
    if KNOWN_REQUEST_TYPES.contains(&command.request_type.as_str()) {
        (d.acknowledged(command), Answer::Acknowledged)
    } else {
        (unknown_request_type(d, command), Answer::Error)
    }
}

/// Command report `Error` as a device sends it for a request type it does not know.
fn unknown_request_type(d: &SimDevice, command: &CommandRef) -> Vec<u8> {
    let mut item = plist::Dictionary::new();
    item.insert("ErrorCode".into(), plist::Value::Integer(12021.into()));
    item.insert("ErrorDomain".into(), "MCMDMErrorDomain".into());
    let text = format!("Unknown request type: {}", command.request_type);
    item.insert("LocalizedDescription".into(), text.clone().into());
    item.insert("USEnglishDescription".into(), text.into());
    let mut report = plist::Dictionary::new();
    report.insert("CommandUUID".into(), command.uuid.clone().into());
    report.insert(
        "ErrorChain".into(),
        plist::Value::Array(vec![plist::Value::Dictionary(item)]),
    );
    report.insert("Status".into(), "Error".into());
    report.insert("UDID".into(), d.udid.clone().into());
    let mut out = Vec::new();
    // Writing a dictionary of strings, an integer and an array to memory cannot fail.
    let _ = plist::Value::Dictionary(report).to_writer_xml(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::device;
    use super::*;

    fn command(request_type: &str) -> CommandRef {
        CommandRef {
            uuid: "C-1".into(),
            request_type: request_type.into(),
        }
    }

    #[test]
    fn known_commands_are_acknowledged_and_unknown_ones_refused() {
        let d = &device::generate(1, 0.0, 0.0, 5)[0];
        let (body, how) = answer(d, &command("DeviceInformation"));
        assert_eq!(how, Answer::Acknowledged);
        let report = magicpush_mdm::decode_report(&body).unwrap();
        assert_eq!(report.status, magicpush_mdm::Status::Acknowledged);
        let info = report.device_info.expect("query responses");
        assert_eq!(info.serial_number.as_deref(), Some(d.serial.as_str()));
        assert_eq!(info.os_version.as_deref(), Some(d.os.version));

        for known in ["DeviceLock", "EraseDevice"] {
            let (body, how) = answer(d, &command(known));
            assert_eq!(how, Answer::Acknowledged);
            let report = magicpush_mdm::decode_report(&body).unwrap();
            assert_eq!(report.status, magicpush_mdm::Status::Acknowledged);
        }

        let (body, how) = answer(d, &command("MakeCoffee"));
        assert_eq!(how, Answer::Error);
        let report = magicpush_mdm::decode_report(&body).unwrap();
        assert_eq!(report.status, magicpush_mdm::Status::Error);
        assert_eq!(report.command_uuid.as_deref(), Some("C-1"));
        assert_eq!(report.error_chain[0].code, Some(12021));
    }
}
