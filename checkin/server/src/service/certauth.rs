//! Device identity bound to the enrollment: decided before the message reaches the store.
//!
//! - `Authenticate` binds the verified identity certificate to the UDID (a different valid
//!   certificate than the bound one is a re-enrollment and replaces it); a certificate bound to
//!   another device is refused (the store checks that atomically with the write).
//! - Every other message — TokenUpdate on either channel, CheckOut, Set/GetBootstrapToken,
//!   command reports — must come with the certificate bound to its device. User-channel
//!   messages carry their device's UDID and are authorised by the device's binding.
//!
//! A refused request touches nothing in the store.

use crate::identity::{DeviceIdentity, Refusal};
use magicpush_mdm::{Checkin, Message};
use magicpush_store::BoundIdentity;

/// What a message needs of its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requirement<'a> {
    /// An Authenticate: bind the identity to this device.
    Bind,
    /// Anything else about this device: the identity must be the bound one.
    Bound {
        /// The device (UDID or EnrollmentID).
        udid: &'a str,
    },
    /// A message the server refuses anyway without touching the store.
    Nothing,
}

/// What `message` needs.
pub(crate) fn requirement(message: &Message) -> Requirement<'_> {
    match message {
        Message::Checkin(Checkin::Authenticate(_)) => Requirement::Bind,
        Message::Checkin(Checkin::Unsupported { .. }) => Requirement::Nothing,
        Message::Checkin(c) => match c.udid() {
            Some(udid) => Requirement::Bound { udid },
            None => Requirement::Nothing,
        },
        Message::Report(r) => Requirement::Bound { udid: &r.udid },
    }
}

/// The verdict for a message about `udid` presenting `presented` when the device is bound to
/// `bound`.
pub(crate) fn check_bound(
    udid: &str,
    presented: &DeviceIdentity,
    bound: Option<[u8; 32]>,
) -> Result<(), Refusal> {
    match bound {
        Some(hash) if hash == presented.sha256 => Ok(()),
        Some(_) => Err(Refusal::Unbound(format!(
            "the identity certificate {} is not the one device {udid} enrolled with",
            presented.subject
        ))),
        None => Err(Refusal::Unbound(format!(
            "device {udid} has no enrolled identity: it must Authenticate with its identity \
             certificate first (re-install the enrollment profile)"
        ))),
    }
}

/// The store's record of `identity` bound at `at`.
pub(crate) fn to_bound(identity: &DeviceIdentity, at: time::OffsetDateTime) -> BoundIdentity {
    BoundIdentity::new(
        identity.sha256,
        identity.subject.clone(),
        identity.serial.clone(),
        identity.not_after,
        at,
    )
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use magicpush_mdm as mdm;

    fn identity(n: u8) -> DeviceIdentity {
        DeviceIdentity {
            sha256: [n; 32],
            subject: format!("CN=device {n}"),
            serial: "01".into(),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2027-01-01 0:00 UTC),
            enrollment_id: None,
        }
    }

    fn plist(kind: &str, extra: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict>{kind}\
             <key>UDID</key><string>U1</string>{extra}</dict></plist>"
        )
        .into_bytes()
    }

    #[test]
    fn authenticate_binds_and_everything_else_needs_the_binding() {
        let topic = "<key>Topic</key><string>com.apple.mgmt.External.x</string>";
        let auth = mdm::decode(&plist(
            "<key>MessageType</key><string>Authenticate</string>",
            topic,
        ))
        .unwrap();
        assert_eq!(requirement(&auth), Requirement::Bind);
        for (kind, extra) in [
            ("<key>MessageType</key><string>CheckOut</string>", ""),
            (
                "<key>MessageType</key><string>GetBootstrapToken</string>",
                "",
            ),
            ("<key>Status</key><string>Idle</string>", ""),
            (
                "<key>Status</key><string>Idle</string>",
                "<key>UserID</key><string>user</string>",
            ),
        ] {
            let message = mdm::decode(&plist(kind, extra)).unwrap();
            assert_eq!(
                requirement(&message),
                Requirement::Bound { udid: "U1" },
                "{kind}"
            );
        }
        let unsupported = mdm::decode(&plist(
            "<key>MessageType</key><string>UserAuthenticate</string>",
            "",
        ))
        .unwrap();
        assert_eq!(requirement(&unsupported), Requirement::Nothing);
    }

    #[test]
    fn only_the_bound_certificate_passes() {
        assert_eq!(check_bound("U1", &identity(1), Some([1; 32])), Ok(()));
        let other = check_bound("U1", &identity(2), Some([1; 32])).unwrap_err();
        assert_eq!(other.reason(), "unbound");
        assert!(other.to_string().contains("U1"), "{other}");
        let none = check_bound("U1", &identity(1), None).unwrap_err();
        assert_eq!(none.reason(), "unbound");
        assert!(none.to_string().contains("Authenticate"), "{none}");
    }
}
