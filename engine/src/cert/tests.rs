//! Tests of loading and parsing, over the committed fixtures and a fresh [`TestPki`].

use std::sync::Arc;

use magicpush_fixtures::generate::{
    EC_UUID, ENCRYPTED_KEY_PASSWORD, NON_MDM_UID, OTHER_UUID, P12_PASSWORD, PUSH_UUID,
};
use magicpush_fixtures::{read, TestPki};
use time::macros::datetime;
use time::OffsetDateTime;

use super::*;

fn fixture_path(name: &str) -> std::path::PathBuf {
    magicpush_fixtures::dir().join(name)
}

fn committed(stem: &str) -> Result<PushCertificate, CertError> {
    PushCertificate::from_pem(
        &read(&format!("certs/{stem}.pem")),
        &read(&format!("certs/{stem}.key.pem")),
    )
}

#[test]
fn topic_subject_and_identity_come_from_the_subject() {
    let cert = committed("push").unwrap();
    let topic = format!("com.apple.mgmt.External.{PUSH_UUID}");
    assert_eq!(cert.topic(), topic);
    let info = cert.info();
    assert_eq!(
        info.subject(),
        format!("C = JP, CN = APSP:{PUSH_UUID}, UID = {topic}")
    );
    assert_eq!(
        info.common_name(),
        Some(format!("APSP:{PUSH_UUID}").as_str())
    );
    assert_eq!(info.apsp_uuid(), Some(PUSH_UUID));
    assert_eq!(
        info.issuer(),
        "C = US, O = magicpush test PKI, CN = magicpush Test Apple Application Integration CA"
    );
    assert_eq!(info.not_before(), datetime!(2026-01-01 00:00 UTC));
    assert_eq!(info.not_after(), datetime!(2036-01-01 00:00 UTC));
    assert_eq!(info.environment(), Environment::Production);
    assert_eq!(info.key_algorithm(), "RSA");
    let serial = info.serial();
    assert!(!serial.is_empty() && serial.len().is_multiple_of(2));
    assert!(serial
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert!(info.identity().contains(PUSH_UUID) && info.identity().contains(serial));
}

#[test]
fn certificate_info_needs_no_key() {
    let info = CertificateInfo::from_pem(&read("certs/push-other-topic.pem")).unwrap();
    assert_eq!(
        info.topic(),
        format!("com.apple.mgmt.External.{OTHER_UUID}")
    );
    let from_file = CertificateInfo::from_pem_file(fixture_path("certs/push-other-topic.pem"));
    assert_eq!(from_file.unwrap(), info);
    // DER works too.
    let pki = TestPki::generate().unwrap();
    let info = CertificateInfo::from_pem(&pki.push.cert_der).unwrap();
    assert_eq!(info.topic(), pki.topic);
}

#[test]
fn a_non_mdm_certificate_is_refused_naming_its_uid() {
    let err = committed("non-mdm").unwrap_err();
    match &err {
        CertError::NotMdmCertificate { uid, subject } => {
            assert_eq!(uid.as_deref(), Some(NON_MDM_UID));
            assert!(subject.contains(NON_MDM_UID));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("not an MDM push certificate"));
    assert!(err.to_string().contains(NON_MDM_UID));
    // Certificate-only inspection refuses it the same way.
    assert!(matches!(
        CertificateInfo::from_pem(&read("certs/non-mdm.pem")),
        Err(CertError::NotMdmCertificate { .. })
    ));
}

#[test]
fn a_certificate_without_uid_is_refused_saying_so() {
    let err = committed("no-uid").unwrap_err();
    assert!(
        matches!(&err, CertError::NotMdmCertificate { uid: None, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no UID"), "{err}");
}

#[test]
fn a_key_of_another_certificate_is_a_mismatch() {
    let err = committed("key-mismatch").unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains(PUSH_UUID));

    let pki = TestPki::generate().unwrap();
    let err = PushCertificate::from_pem(
        pki.push.cert_pem.as_bytes(),
        pki.other_topic.key_pem.as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    // Two RSA keys: the message says they are two pairs, not "RSA, RSA".
    let msg = err.to_string();
    assert!(msg.contains("two different key pairs"), "{msg}");

    // RSA certificate with an EC key: the message names both algorithms.
    let err = PushCertificate::from_pem(&read("certs/push.pem"), &read("certs/push-ec.key.pem"))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("RSA") && msg.contains("EC"), "{msg}");
}

#[test]
fn pkcs8_and_pkcs1_rsa_keys_load() {
    let pkcs8 = committed("push").unwrap();
    let pkcs1 = PushCertificate::from_pem(&read("certs/push.pem"), &read("certs/push.rsa.key.pem"))
        .unwrap();
    assert!(matches!(pkcs8.private_key(), PrivateKeyDer::Pkcs8(_)));
    assert!(matches!(pkcs1.private_key(), PrivateKeyDer::Pkcs1(_)));
    assert!(pkcs8.same_certificate(&pkcs1));
}

#[test]
fn ec_keys_load_as_pkcs8_and_sec1() {
    let topic = format!("com.apple.mgmt.External.{EC_UUID}");
    let pkcs8 = committed("push-ec").unwrap();
    assert_eq!(pkcs8.topic(), topic);
    assert_eq!(pkcs8.info().key_algorithm(), "EC");
    let sec1 = PushCertificate::from_pem(
        &read("certs/push-ec.pem"),
        &read("certs/push-ec.sec1.key.pem"),
    )
    .unwrap();
    assert!(matches!(sec1.private_key(), PrivateKeyDer::Sec1(_)));
    assert_eq!(sec1.topic(), topic);
}

#[test]
fn a_bundle_holds_certificate_and_key() {
    let cert = PushCertificate::from_pem_bundle(&read("certs/push.bundle.pem")).unwrap();
    assert_eq!(cert.info().apsp_uuid(), Some(PUSH_UUID));
    let cert = PushCertificate::from_pem_bundle_file(fixture_path("certs/push.bundle.pem"));
    assert!(cert.is_ok());
    // A bundle without the key.
    let err = PushCertificate::from_pem_bundle(&read("certs/push.pem")).unwrap_err();
    assert!(matches!(err, CertError::MissingKey), "{err}");
}

#[test]
fn pkcs12_loads_with_its_password() {
    for name in ["certs/push.p12", "certs/push-legacy.p12"] {
        let cert = PushCertificate::from_pkcs12(&read(name), P12_PASSWORD).unwrap();
        assert_eq!(cert.info().apsp_uuid(), Some(PUSH_UUID), "{name}");
        // Leaf first, then the CA that came with it.
        assert_eq!(cert.cert_chain().len(), 2, "{name}");
        assert_eq!(cert.cert_chain()[0], *cert.info().der());
    }
    let empty = PushCertificate::from_pkcs12(&read("certs/push-empty-password.p12"), "").unwrap();
    assert_eq!(empty.info().apsp_uuid(), Some(PUSH_UUID));
    let from_file =
        PushCertificate::from_pkcs12_file(fixture_path("certs/push.p12"), P12_PASSWORD).unwrap();
    assert!(from_file.same_certificate(&empty));
}

#[test]
fn pkcs12_with_a_wrong_password_says_so() {
    for name in ["certs/push.p12", "certs/push-legacy.p12"] {
        let err = PushCertificate::from_pkcs12(&read(name), "not-the-password").unwrap_err();
        assert!(matches!(err, CertError::WrongPassword), "{name}: {err}");
    }
    let err = PushCertificate::from_pkcs12_file(fixture_path("certs/push.p12"), "").unwrap_err();
    assert!(matches!(err.root(), CertError::WrongPassword), "{err}");
    assert!(err.to_string().contains("push.p12"), "{err}");
}

#[test]
fn garbage_is_not_a_pkcs12_file() {
    let err = PushCertificate::from_pkcs12(b"\x30\x03\x02\x01\x03", "pw").unwrap_err();
    assert!(matches!(err, CertError::InvalidPkcs12 { .. }), "{err}");
}

#[test]
fn an_encrypted_key_asks_to_decrypt_it_first() {
    let err = PushCertificate::from_pem(
        &read("certs/push.pem"),
        &read("certs/push.encrypted.key.pem"),
    )
    .unwrap_err();
    assert!(
        matches!(err, CertError::EncryptedKey { path: None }),
        "{err}"
    );
    assert!(err.to_string().contains("openssl pkey -in"));

    let key_path = fixture_path("certs/push.encrypted.key.pem");
    let err =
        PushCertificate::from_pem_files(fixture_path("certs/push.pem"), &key_path).unwrap_err();
    assert!(
        matches!(err.root(), CertError::EncryptedKey { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("openssl pkey -in {}", key_path.display())),
        "{msg}"
    );
    // The fixture really is the push key, encrypted with the documented password.
    assert!(!ENCRYPTED_KEY_PASSWORD.is_empty());
}

#[test]
fn missing_inputs_are_named() {
    let err = PushCertificate::from_pem(b"", &read("certs/push.key.pem")).unwrap_err();
    assert!(matches!(err, CertError::NoCertificate), "{err}");
    let err = PushCertificate::from_pem(&read("certs/push.key.pem"), &read("certs/push.key.pem"))
        .unwrap_err();
    assert!(matches!(err, CertError::NoCertificate), "{err}");
    let err = PushCertificate::from_pem(&read("certs/push.pem"), b"").unwrap_err();
    assert!(matches!(err, CertError::MissingKey), "{err}");
    let err = PushCertificate::from_pem_files("/nonexistent/push.pem", "/nonexistent/key.pem")
        .unwrap_err();
    assert!(matches!(err, CertError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/push.pem"));
}

#[test]
fn unreadable_input_is_reported() {
    let err = CertificateInfo::from_pem(b"definitely not a certificate").unwrap_err();
    assert!(matches!(err, CertError::InvalidCertificate { .. }), "{err}");
    let err = PushCertificate::from_pem(
        &read("certs/push.pem"),
        b"-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(matches!(err, CertError::UnsupportedKey { .. }), "{err}");
}

#[test]
fn the_leaf_is_found_after_its_issuer() {
    let pki = TestPki::generate().unwrap();
    let chain = format!("{}{}", pki.ca.cert_pem(), pki.push.cert_pem);
    let cert = PushCertificate::from_pem(chain.as_bytes(), pki.push.key_pem.as_bytes()).unwrap();
    assert_eq!(cert.topic(), pki.topic);
    assert_eq!(cert.cert_chain().len(), 2);
    assert_eq!(cert.cert_chain()[0].as_ref(), pki.push.cert_der.as_slice());
    assert_eq!(cert.cert_chain()[1].as_ref(), pki.ca.cert_der());
}

#[test]
fn expiry_uses_the_clock_given() {
    let cert = committed("push-expired").unwrap();
    let now = datetime!(2026-11-25 12:00 UTC);
    assert!(cert.is_expired(now));
    assert!(cert.days_left(now) < 0);
    assert!(!cert.is_expired(datetime!(2024-12-31 23:59 UTC)));
    assert!(cert.info().is_valid_at(datetime!(2024-06-01 00:00 UTC)));

    let info = committed("push").unwrap().info().clone();
    assert_eq!(info.days_left(datetime!(2035-12-31 00:00 UTC)), 1);
    assert_eq!(info.days_left(datetime!(2035-12-31 00:00:01 UTC)), 0);
    assert_eq!(info.days_left(datetime!(2036-01-01 00:00 UTC)), 0);
    assert!(!info.is_expired(datetime!(2036-01-01 00:00 UTC)));
    assert!(info.is_expired(datetime!(2036-01-01 00:00:01 UTC)));
    assert_eq!(info.days_left(datetime!(2036-01-01 00:00:01 UTC)), -1);
    assert!(info.is_not_yet_valid(datetime!(2025-12-31 23:59 UTC)));

    let pki = TestPki::generate().unwrap();
    let fresh =
        PushCertificate::from_pem(pki.push.cert_pem.as_bytes(), pki.push.key_pem.as_bytes())
            .unwrap();
    let days = fresh.days_left(OffsetDateTime::now_utc());
    assert!((363..=365).contains(&days), "{days}");
}

#[test]
fn clones_share_and_serve_as_a_tls_client_identity() {
    let pki = TestPki::generate().unwrap();
    let cert = PushCertificate::from_pem(pki.push.cert_pem.as_bytes(), pki.push.key_pem.as_bytes())
        .unwrap();
    let clone = cert.clone();
    assert!(Arc::ptr_eq(&cert.certified_key(), &clone.certified_key()));
    assert!(cert.certified_key().keys_match().is_ok());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(cert.cert_chain(), cert.private_key());
    assert!(config.is_ok());
    assert!(!format!("{cert:?}").contains("PRIVATE"));
}
