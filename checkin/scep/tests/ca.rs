//! The device CA: generation, PEM round trip, fingerprints, what an issued certificate holds.

mod common;

use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use magicpush_scep::{enrollment_id_of, DeviceCa, DeviceCertRequest, CA_COMMON_NAME};
use x509_cert::Certificate;
use x509_parser::prelude::*;

#[test]
fn a_generated_ca_is_a_ten_year_rsa3072_ca_and_loads_back_from_pem() {
    let now = SystemTime::now();
    let ca = DeviceCa::generate("Example Org", now, &mut rand_core::OsRng).unwrap();
    let (_, cert) = parse_x509_certificate(ca.certificate_der()).unwrap();
    let subject = cert.subject().to_string();
    assert!(
        subject.contains(&format!("CN={CA_COMMON_NAME}")),
        "{subject}"
    );
    assert!(subject.contains("O=Example Org"), "{subject}");
    assert_eq!(cert.subject(), cert.issuer());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    // RFC 8894 §2.1.2: it signs CertReps and requests are encrypted to it.
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(ca.missing_key_usages().is_empty());
    assert!(cert.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::SubjectKeyIdentifier(_)
    )));
    let years = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!((3650 * 86400..3651 * 86400).contains(&years), "{years}");
    let key = cert.public_key().parsed().unwrap();
    assert_eq!(key.key_size(), 3072);

    let again = DeviceCa::from_pem(&ca.certificate_pem(), ca.private_key_pem()).unwrap();
    assert_eq!(again.certificate_der(), ca.certificate_der());
    assert_eq!(again.fingerprint_sha256(), ca.fingerprint_sha256());
    assert_eq!(ca.fingerprint_sha256().len(), 64);
    assert_eq!(ca.fingerprint_sha1().len(), 40);

    // Another CA's key does not load with this certificate.
    let other = common::fixture_ca();
    // The committed fixture predates the SCEP key usages: it is what an old CA looks like.
    assert_eq!(
        other.missing_key_usages(),
        vec!["digitalSignature", "keyEncipherment"]
    );
    assert!(matches!(
        DeviceCa::from_pem(&ca.certificate_pem(), other.private_key_pem()),
        Err(magicpush_scep::CaError::KeyMismatch)
    ));

    if std::env::var_os("SCEP_WRITE_FIXTURES").is_some() {
        let dir = common::data_dir();
        std::fs::write(dir.join("ca.pem"), ca.certificate_pem()).unwrap();
        std::fs::write(dir.join("ca.key.pem"), ca.private_key_pem()).unwrap();
    }
}

#[test]
fn the_fingerprint_is_the_sha256_of_the_der_as_openssl_prints_it() {
    let ca = common::fixture_ca();
    let Ok(out) = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(common::data_dir().join("ca.pem"))
        .output()
    else {
        eprintln!("SKIPPED: no openssl");
        return;
    };
    let text = String::from_utf8(out.stdout).unwrap();
    let hex: String = text
        .split('=')
        .nth(1)
        .unwrap()
        .trim()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(hex, ca.fingerprint_sha256());
}

#[test]
fn an_issued_certificate_has_the_cn_the_enrollment_id_and_client_auth() {
    let ca = common::fixture_ca();
    let device_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let now = SystemTime::now();
    let der = ca
        .issue(
            &DeviceCertRequest {
                public_key_der: &rcgen::PublicKeyData::subject_public_key_info(&device_key),
                common_name: "iPhone de Jeanne",
                enrollment_id: "enr-42",
                validity: Duration::from_secs(30 * 86400),
            },
            now,
            &mut rand_core::OsRng,
        )
        .unwrap();
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    let (_, ca_cert) = parse_x509_certificate(ca.certificate_der()).unwrap();
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    let cn: Vec<_> = cert.subject().iter_common_name().collect();
    assert_eq!(cn.len(), 1);
    assert_eq!(cn[0].as_str().unwrap(), "iPhone de Jeanne");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(cert.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));
    let serial = cert.raw_serial();
    assert!(serial.len() >= 15 && serial.len() <= 17, "{serial:?}");
    assert!(serial[0] & 0x80 == 0, "positive");
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 30);

    let parsed = Certificate::from_der(&der).unwrap();
    assert_eq!(enrollment_id_of(&parsed).as_deref(), Some("enr-42"));
    assert!(ca.issued(&parsed));
    assert_eq!(parsed.to_der().unwrap(), der);
}

#[test]
fn bad_issue_inputs_are_errors() {
    let ca = common::fixture_ca();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let long = "x".repeat(65);
    for (cn, id, spki) in [
        ("ok", "", &spki[..]),
        ("ok", long.as_str(), &spki[..]),
        ("", "enr", &spki[..]),
        ("ok", "enr", &b"not a key"[..]),
    ] {
        let r = ca.issue(
            &DeviceCertRequest {
                public_key_der: spki,
                common_name: cn,
                enrollment_id: id,
                validity: Duration::from_secs(86400),
            },
            SystemTime::now(),
            &mut rand_core::OsRng,
        );
        assert!(r.is_err(), "{cn:?} {id:?}");
    }
    assert!(DeviceCa::from_pem("garbage", "garbage").is_err());
}
