//! The profile's property list: a `Configuration` whose `PayloadContent` is the optional root
//! certificate payload, the SCEP payload and the MDM payload, in that order.
//!
//! Every payload carries the common keys of Apple's "TopLevel" / "CommonPayloadKeys"
//! documentation: `PayloadType`, `PayloadVersion` (1), `PayloadIdentifier` (the profile's
//! identifier plus `.root`, `.scep` or `.mdm`), a fresh `PayloadUUID` (UUID v4, upper case, as
//! `uuidgen` prints it) and `PayloadDisplayName`.
//!
//! Keys and their spellings, from Apple's payload documentation:
//! - SCEP (`com.apple.security.scep`), its `PayloadContent` dictionary: `URL`, `Challenge`,
//!   `Keysize` (one word, lower-case `s`), `Key Type` and `Key Usage` (with a space),
//!   `CAFingerprint` (data) and `Subject`, an array of RDNs, each an array of
//!   `[attribute name, value]` pairs: `[[["CN", name]]]`. `Key Usage` 5 = 1 (signing) |
//!   4 (encryption): the identity both signs (`SignMessage`, TLS) and is encrypted to.
//! - MDM (`com.apple.mdm`): `ServerURL`, `CheckInURL`, `Topic`, `IdentityCertificateUUID`,
//!   `SignMessage`, `AccessRights` (8191: every right, bits 0 to 12), `CheckOutWhenRemoved`,
//!   `ServerCapabilities`.
//! - Root (`com.apple.security.root`): `PayloadContent`, the certificate's DER (data).
//!
//! **CAFingerprint is SHA-1.** Apple's SCEP client (`SecSCEPValidateCACertMessage` in Apple's
//! open-source Security framework) picks the hash by the fingerprint's length: 16 bytes MD5,
//! 20 bytes SHA-1, and refuses the CA on any other length. A SHA-256 fingerprint would make
//! every enrollment fail; SHA-1 is the strongest it accepts. It is a pin for a certificate
//! the device then fetches over the server's TLS, not a signature: SHA-1's collision
//! weakness would need a chosen-prefix collision with our own CA certificate.

use plist::{Dictionary, Value};

/// The SCEP key size the device generates (bits).
pub(crate) const SCEP_KEY_SIZE: u64 = 2048;
/// The SCEP key usage: signing (1) and encryption (4).
pub(crate) const SCEP_KEY_USAGE: u64 = 5;
/// The MDM access rights: all of them (bits 0 to 12).
pub(crate) const ACCESS_RIGHTS: u64 = 8191;
/// The MDM server capabilities: per-user connections (macOS user channel) and the bootstrap
/// token check-in messages.
pub(crate) const SERVER_CAPABILITIES: [&str; 2] = [
    "com.apple.mdm.per-user-connections",
    "com.apple.mdm.bootstraptoken",
];

/// What goes into one enrollment profile.
#[derive(Debug, Clone, Copy)]
pub struct EnrollmentProfile<'a> {
    /// `PayloadDisplayName` of the profile, e.g. `magicpush enrollment (Acme)`.
    pub display_name: &'a str,
    /// `PayloadOrganization`.
    pub organization: &'a str,
    /// The top-level `PayloadIdentifier`, e.g. `com.magicpush.enroll.<invitation short id>`;
    /// a profile with the same identifier replaces an installed one.
    pub identifier: &'a str,
    /// The MDM payload's `Topic`: the push certificate's topic,
    /// `com.apple.mgmt.External.<uuid>`.
    pub topic: &'a str,
    /// The MDM payload's `ServerURL` (`https://host/mdm/server`).
    pub server_url: &'a str,
    /// The MDM payload's `CheckInURL` (`https://host/mdm/checkin`).
    pub check_in_url: &'a str,
    /// The SCEP payload's `URL` (`https://host/scep`).
    pub scep_url: &'a str,
    /// The SCEP payload's `Challenge`.
    pub challenge: &'a str,
    /// The common name the device requests: SCEP `Subject` `[[["CN", …]]]`.
    pub subject_common_name: &'a str,
    /// The device CA's certificate (DER): its SHA-1 is the SCEP `CAFingerprint`.
    pub ca_certificate_der: &'a [u8],
    /// When `Some`, a root payload installs this CA (DER): the server's TLS chains to it.
    pub server_ca_der: Option<&'a [u8]>,
}

/// A fresh `PayloadUUID`: UUID v4, upper case.
fn fresh_uuid() -> String {
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_upper(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn integer(n: u64) -> Value {
    Value::Integer(n.into())
}

/// The common keys of a payload (and of the profile itself).
fn payload(kind: &str, identifier: String, uuid: &str, display_name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), string(kind));
    d.insert("PayloadVersion".into(), integer(1));
    d.insert("PayloadIdentifier".into(), Value::String(identifier));
    d.insert("PayloadUUID".into(), string(uuid));
    d.insert("PayloadDisplayName".into(), string(display_name));
    d
}

/// The SHA-1 of `der`: what Apple's SCEP client compares `CAFingerprint` with.
pub(crate) fn ca_fingerprint(der: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}

fn scep_payload(p: &EnrollmentProfile<'_>, uuid: &str) -> Value {
    let mut content = Dictionary::new();
    content.insert("URL".into(), string(p.scep_url));
    content.insert("Challenge".into(), string(p.challenge));
    content.insert("Keysize".into(), integer(SCEP_KEY_SIZE));
    content.insert("Key Type".into(), string("RSA"));
    content.insert("Key Usage".into(), integer(SCEP_KEY_USAGE));
    content.insert(
        "CAFingerprint".into(),
        Value::Data(ca_fingerprint(p.ca_certificate_der)),
    );
    let cn = Value::Array(vec![string("CN"), string(p.subject_common_name)]);
    content.insert("Subject".into(), Value::Array(vec![Value::Array(vec![cn])]));

    let mut d = payload(
        "com.apple.security.scep",
        format!("{}.scep", p.identifier),
        uuid,
        "Device identity (SCEP)",
    );
    d.insert("PayloadContent".into(), Value::Dictionary(content));
    Value::Dictionary(d)
}

fn mdm_payload(p: &EnrollmentProfile<'_>, identity_uuid: &str) -> Value {
    let mut d = payload(
        "com.apple.mdm",
        format!("{}.mdm", p.identifier),
        &fresh_uuid(),
        "Device management",
    );
    d.insert("ServerURL".into(), string(p.server_url));
    d.insert("CheckInURL".into(), string(p.check_in_url));
    d.insert("Topic".into(), string(p.topic));
    d.insert("IdentityCertificateUUID".into(), string(identity_uuid));
    d.insert("SignMessage".into(), Value::Boolean(true));
    d.insert("AccessRights".into(), integer(ACCESS_RIGHTS));
    d.insert("CheckOutWhenRemoved".into(), Value::Boolean(true));
    d.insert(
        "ServerCapabilities".into(),
        Value::Array(SERVER_CAPABILITIES.iter().map(|c| string(c)).collect()),
    );
    Value::Dictionary(d)
}

fn root_payload(p: &EnrollmentProfile<'_>, der: &[u8]) -> Value {
    let mut d = payload(
        "com.apple.security.root",
        format!("{}.root", p.identifier),
        &fresh_uuid(),
        "Server certificate authority",
    );
    d.insert("PayloadContent".into(), Value::Data(der.to_vec()));
    Value::Dictionary(d)
}

/// The profile's XML property list. Every payload has `PayloadType`, `PayloadVersion` 1,
/// `PayloadIdentifier`, a fresh `PayloadUUID` (UUID v4, upper case) and
/// `PayloadDisplayName`; the top level is `PayloadType` `Configuration`. The MDM payload's
/// `IdentityCertificateUUID` is the SCEP payload's `PayloadUUID`.
///
/// The SCEP payload's `CAFingerprint` is the SHA-1 of `ca_certificate_der`: Apple's SCEP
/// client accepts an MD5 (16 bytes) or SHA-1 (20 bytes) fingerprint and nothing else.
///
/// Every call gives new UUIDs, hence different bytes for the same fields.
pub fn render(profile: &EnrollmentProfile<'_>) -> Vec<u8> {
    let scep_uuid = fresh_uuid();
    let mut content = Vec::with_capacity(3);
    if let Some(der) = profile.server_ca_der {
        content.push(root_payload(profile, der));
    }
    content.push(scep_payload(profile, &scep_uuid));
    content.push(mdm_payload(profile, &scep_uuid));

    let mut top = payload(
        "Configuration",
        profile.identifier.to_owned(),
        &fresh_uuid(),
        profile.display_name,
    );
    top.insert("PayloadOrganization".into(), string(profile.organization));
    top.insert(
        "PayloadDescription".into(),
        string("Enrolls this device in mobile device management."),
    );
    top.insert("PayloadContent".into(), Value::Array(content));

    let mut out = Vec::new();
    Value::Dictionary(top)
        .to_writer_xml(&mut out)
        .expect("a plist of strings, integers, booleans and data always writes to memory");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(server_ca: Option<&[u8]>) -> EnrollmentProfile<'_> {
        EnrollmentProfile {
            display_name: "magicpush enrollment (Acme)",
            organization: "Acme",
            identifier: "com.magicpush.enroll.abc123",
            topic: "com.apple.mgmt.External.0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            server_url: "https://mdm.example.com/mdm/server",
            check_in_url: "https://mdm.example.com/mdm/checkin",
            scep_url: "https://mdm.example.com/scep",
            challenge: "s3cret & <challenge>",
            subject_common_name: "device-abc123",
            ca_certificate_der: b"not really a certificate, only hashed",
            server_ca_der: server_ca,
        }
    }

    fn parse(bytes: &[u8]) -> Dictionary {
        plist::from_bytes::<Value>(bytes)
            .expect("plist")
            .into_dictionary()
            .expect("top-level dict")
    }

    #[test]
    fn uuids_are_upper_case_v4() {
        let u = fresh_uuid();
        assert_eq!(u, u.to_uppercase());
        let parsed = uuid::Uuid::parse_str(&u).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn fingerprint_is_sha1() {
        // SHA-1("abc"), FIPS 180-2 appendix A.1.
        assert_eq!(
            ca_fingerprint(b"abc"),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
    }

    #[test]
    fn xml_escapes_the_fields() {
        let bytes = render(&sample(None));
        assert!(bytes.starts_with(b"<?xml"));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("& <challenge>"));
        let top = parse(&bytes);
        let content = top["PayloadContent"].as_array().unwrap();
        let scep = content[0].as_dictionary().unwrap()["PayloadContent"]
            .as_dictionary()
            .unwrap();
        assert_eq!(scep["Challenge"].as_string(), Some("s3cret & <challenge>"));
    }

    #[test]
    fn root_payload_only_when_asked() {
        let without = parse(&render(&sample(None)));
        assert_eq!(without["PayloadContent"].as_array().unwrap().len(), 2);
        let with = parse(&render(&sample(Some(b"server CA DER"))));
        let content = with["PayloadContent"].as_array().unwrap();
        assert_eq!(content.len(), 3);
        let root = content[0].as_dictionary().unwrap();
        assert_eq!(
            root["PayloadType"].as_string(),
            Some("com.apple.security.root")
        );
        assert_eq!(
            root["PayloadContent"].as_data(),
            Some(&b"server CA DER"[..])
        );
    }
}
