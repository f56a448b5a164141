//! The rendered profile read back with the `plist` crate: every key of the contract, with its
//! type and value.

mod common;

use plist::{Dictionary, Value};

fn parse(bytes: &[u8]) -> Dictionary {
    plist::from_bytes::<Value>(bytes)
        .expect("the profile parses as a plist")
        .into_dictionary()
        .expect("its top level is a dictionary")
}

fn string<'a>(d: &'a Dictionary, key: &str) -> &'a str {
    d.get(key)
        .and_then(Value::as_string)
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn integer(d: &Dictionary, key: &str) -> u64 {
    d.get(key)
        .and_then(Value::as_unsigned_integer)
        .unwrap_or_else(|| panic!("{key} is an integer"))
}

fn boolean(d: &Dictionary, key: &str) -> bool {
    d.get(key)
        .and_then(Value::as_boolean)
        .unwrap_or_else(|| panic!("{key} is a boolean"))
}

fn data<'a>(d: &'a Dictionary, key: &str) -> &'a [u8] {
    d.get(key)
        .and_then(Value::as_data)
        .unwrap_or_else(|| panic!("{key} is data"))
}

/// The common keys of every payload; returns its PayloadUUID.
fn check_common<'a>(d: &'a Dictionary, kind: &str, identifier: &str) -> &'a str {
    assert_eq!(string(d, "PayloadType"), kind);
    assert_eq!(integer(d, "PayloadVersion"), 1);
    assert_eq!(string(d, "PayloadIdentifier"), identifier);
    assert!(!string(d, "PayloadDisplayName").is_empty());
    let uuid = string(d, "PayloadUUID");
    assert_eq!(uuid, uuid.to_uppercase(), "PayloadUUID is upper case");
    let parsed = uuid::Uuid::parse_str(uuid).expect("PayloadUUID is a UUID");
    assert_eq!(parsed.get_version_num(), 4, "PayloadUUID is v4");
    uuid
}

fn payloads(top: &Dictionary) -> Vec<&Dictionary> {
    top.get("PayloadContent")
        .and_then(Value::as_array)
        .expect("PayloadContent is an array")
        .iter()
        .map(|p| p.as_dictionary().expect("each payload is a dictionary"))
        .collect()
}

fn by_type<'a>(payloads: &[&'a Dictionary], kind: &str) -> &'a Dictionary {
    let found: Vec<_> = payloads
        .iter()
        .filter(|p| p.get("PayloadType").and_then(Value::as_string) == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} payload");
    found[0]
}

#[test]
fn every_key_of_the_contract() {
    let profile = common::sample(None);
    let bytes = magicpush_profile::render(&profile);
    assert!(bytes.starts_with(b"<?xml"), "an XML plist");
    let top = parse(&bytes);

    check_common(&top, "Configuration", profile.identifier);
    assert_eq!(string(&top, "PayloadDisplayName"), profile.display_name);
    assert_eq!(string(&top, "PayloadOrganization"), profile.organization);

    let payloads = payloads(&top);
    assert_eq!(payloads.len(), 2, "SCEP and MDM, no root payload");

    let scep = by_type(&payloads, "com.apple.security.scep");
    let scep_uuid = check_common(
        scep,
        "com.apple.security.scep",
        "com.magicpush.enroll.inv42.scep",
    );
    let content = scep
        .get("PayloadContent")
        .and_then(Value::as_dictionary)
        .expect("the SCEP PayloadContent is a dictionary");
    assert_eq!(string(content, "URL"), profile.scep_url);
    assert_eq!(string(content, "Challenge"), profile.challenge);
    assert_eq!(integer(content, "Keysize"), 2048);
    assert_eq!(string(content, "Key Type"), "RSA");
    assert_eq!(integer(content, "Key Usage"), 5);
    let sha1 = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        profile.ca_certificate_der,
    );
    assert_eq!(data(content, "CAFingerprint"), sha1.as_ref());
    assert_eq!(data(content, "CAFingerprint").len(), 20, "SHA-1: 20 bytes");
    let subject = content
        .get("Subject")
        .and_then(Value::as_array)
        .expect("Subject is an array");
    let expected = Value::Array(vec![Value::Array(vec![Value::Array(vec![
        Value::String("CN".into()),
        Value::String(profile.subject_common_name.into()),
    ])])]);
    assert_eq!(&Value::Array(subject.clone()), &expected);

    let mdm = by_type(&payloads, "com.apple.mdm");
    let mdm_uuid = check_common(mdm, "com.apple.mdm", "com.magicpush.enroll.inv42.mdm");
    assert_eq!(string(mdm, "ServerURL"), profile.server_url);
    assert_eq!(string(mdm, "CheckInURL"), profile.check_in_url);
    assert_eq!(string(mdm, "Topic"), profile.topic);
    assert_eq!(string(mdm, "IdentityCertificateUUID"), scep_uuid);
    assert!(boolean(mdm, "SignMessage"));
    assert_eq!(integer(mdm, "AccessRights"), 8191);
    assert!(boolean(mdm, "CheckOutWhenRemoved"));
    let capabilities: Vec<&str> = mdm
        .get("ServerCapabilities")
        .and_then(Value::as_array)
        .expect("ServerCapabilities is an array")
        .iter()
        .map(|c| c.as_string().expect("a capability is a string"))
        .collect();
    assert_eq!(
        capabilities,
        [
            "com.apple.mdm.per-user-connections",
            "com.apple.mdm.bootstraptoken"
        ]
    );

    let top_uuid = string(&top, "PayloadUUID");
    assert_ne!(top_uuid, scep_uuid);
    assert_ne!(top_uuid, mdm_uuid);
    assert_ne!(scep_uuid, mdm_uuid);
}

#[test]
fn root_payload_carries_the_server_ca() {
    let server_ca = common::ca().der.clone();
    let profile = common::sample(Some(&server_ca));
    let top = parse(&magicpush_profile::render(&profile));
    let payloads = payloads(&top);
    assert_eq!(payloads.len(), 3);
    let root = by_type(&payloads, "com.apple.security.root");
    check_common(
        root,
        "com.apple.security.root",
        "com.magicpush.enroll.inv42.root",
    );
    assert_eq!(data(root, "PayloadContent"), server_ca.as_slice());
    // The identity link survives the extra payload.
    let scep_uuid = string(by_type(&payloads, "com.apple.security.scep"), "PayloadUUID");
    let mdm = by_type(&payloads, "com.apple.mdm");
    assert_eq!(string(mdm, "IdentityCertificateUUID"), scep_uuid);
}

#[test]
fn uuids_are_fresh_each_render() {
    let server_ca = common::ca().der.clone();
    let profile = common::sample(Some(&server_ca));
    let uuids = |bytes: &[u8]| -> Vec<String> {
        let top = parse(bytes);
        let mut all = vec![string(&top, "PayloadUUID").to_owned()];
        for p in payloads(&top) {
            all.push(string(p, "PayloadUUID").to_owned());
        }
        all
    };
    let first = uuids(&magicpush_profile::render(&profile));
    let second = uuids(&magicpush_profile::render(&profile));
    assert_eq!(first.len(), 4);
    for uuid in &first {
        assert!(!second.contains(uuid), "{uuid} reused across renders");
    }
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        first.len(),
        "UUIDs distinct within a profile"
    );
}
