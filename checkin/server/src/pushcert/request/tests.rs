use magicpush_fixtures::{Ca, KeyKind};
use time::macros::datetime;

use super::*;

fn subject() -> Subject {
    Subject {
        email: Some("admin@example.co.jp".into()),
        common_name: Some("Example KK".into()),
        country: Some("jp".into()),
    }
}

fn vendor() -> (Ca, VendorIdentity) {
    let ca = Ca::new("MDM Vendor: Example Soft", KeyKind::Rsa2048).unwrap();
    let v = VendorIdentity::from_pem(
        ca.cert_pem().as_bytes(),
        ca.key_pem().as_bytes(),
        None,
        None,
    )
    .unwrap();
    (ca, v)
}

#[test]
fn the_csr_carries_the_key_and_the_subject() {
    let key = generate_key().unwrap();
    let csr = build_csr(&key, &subject()).unwrap();
    let spki = csr_public_key(&csr).unwrap();
    let pair = rcgen::KeyPair::try_from(key.as_slice()).unwrap();
    assert_eq!(
        spki,
        rcgen::PublicKeyData::subject_public_key_info(&pair),
        "the CSR is for the pending key"
    );
    let text = csr_subject(&csr).unwrap();
    assert!(
        text.contains("CN=Example KK") && text.contains("C=JP"),
        "{text}"
    );
    assert!(text.contains("admin@example.co.jp"), "{text}");
    // Read back from PEM and DER.
    assert_eq!(
        read_csr(pem("CERTIFICATE REQUEST", &csr).as_bytes()).unwrap(),
        csr
    );
    assert_eq!(read_csr(&csr).unwrap(), csr);
    assert!(read_csr(b"garbage").is_err());
}

#[test]
fn a_vendor_signed_request_verifies_with_the_vendor_certificate() {
    let (ca, vendor) = vendor();
    // The fixtures CA has O=magicpush test PKI: the organisation wins over the CN.
    assert_eq!(vendor.file_name_part(), "MAGICPUSHTESTPKI");
    let issued = issue(
        &subject(),
        Some(&vendor),
        None,
        datetime!(2024-03-13 17:33 UTC),
    )
    .unwrap();
    assert!(issued.vendor_signed);
    assert_eq!(
        issued.file_name,
        "PushCertificate_MAGICPUSHTESTPKI_202403131733.csr"
    );
    let decoded = VendorRequest::decode(&issued.text).unwrap();
    assert_eq!(decoded.csr_der, issued.csr_der);
    assert!(decoded.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        CertificateDer::pem_slice_iter(decoded.chain_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .as_ref(),
        ca.cert_der()
    );
    decoded.verify().unwrap();
    // The CSR inside is for the new key.
    let pair = rcgen::KeyPair::try_from(issued.key_pkcs8.as_slice()).unwrap();
    assert_eq!(
        csr_public_key(&decoded.csr_der).unwrap(),
        rcgen::PublicKeyData::subject_public_key_info(&pair)
    );

    let mut tampered = decoded.clone();
    tampered.signature[10] ^= 1;
    assert!(matches!(tampered.verify(), Err(RequestError::BadSignature)));
    let mut other_csr = decoded.clone();
    other_csr.csr_der = build_csr(&generate_key().unwrap(), &subject()).unwrap();
    assert!(matches!(
        other_csr.verify(),
        Err(RequestError::BadSignature)
    ));
    assert!(VendorRequest::decode("not base64 !").is_err());
    assert!(VendorRequest::decode(&B64.encode(b"<plist/>")).is_err());
}

#[test]
fn without_a_vendor_the_file_is_a_pem_csr() {
    let issued = issue(
        &subject(),
        None,
        Some("Soft Bank!"),
        datetime!(2024-03-13 17:33 UTC),
    )
    .unwrap();
    assert!(!issued.vendor_signed);
    assert_eq!(
        issued.file_name,
        "PushCertificate_SOFTBANK_202403131733.csr"
    );
    assert!(issued
        .text
        .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"));
    assert_eq!(read_csr(issued.text.as_bytes()).unwrap(), issued.csr_der);
    assert_eq!(
        issue(&subject(), None, None, datetime!(2024-01-02 03:04 UTC))
            .unwrap()
            .file_name,
        "PushCertificate_MAGICPUSH_202401020304.csr"
    );
}

#[test]
fn the_vendor_key_must_match_and_be_rsa() {
    let (ca, _) = vendor();
    let other = Ca::new("MDM Vendor: Other", KeyKind::Rsa2048).unwrap();
    let err = VendorIdentity::from_pem(
        ca.cert_pem().as_bytes(),
        other.key_pem().as_bytes(),
        None,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    let ec = Ca::new("MDM Vendor: EC", KeyKind::EcdsaP256).unwrap();
    let err = VendorIdentity::from_pem(
        ec.cert_pem().as_bytes(),
        ec.key_pem().as_bytes(),
        None,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("RSA"), "{err}");
    // A chain is appended after the vendor certificate.
    let v = VendorIdentity::from_pem(
        ca.cert_pem().as_bytes(),
        ca.key_pem().as_bytes(),
        Some(other.cert_pem().as_bytes()),
        Some("Named"),
    )
    .unwrap();
    assert_eq!(v.file_name_part(), "NAMED");
    let decoded = VendorRequest::decode(
        &v.sign_request(&build_csr(&generate_key().unwrap(), &subject()).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        CertificateDer::pem_slice_iter(decoded.chain_pem.as_bytes()).count(),
        2
    );
    decoded.verify().unwrap();
}

#[test]
fn subjects_are_checked() {
    assert!(subject().validate().is_ok());
    let bad = |s: Subject| s.validate().unwrap_err().to_string();
    assert!(bad(Subject {
        country: Some("JPN".into()),
        ..subject()
    })
    .starts_with("country"));
    assert!(bad(Subject {
        email: Some("no-at".into()),
        ..subject()
    })
    .starts_with("email"));
    assert!(bad(Subject {
        common_name: Some("a\nb".into()),
        ..subject()
    })
    .starts_with("common_name"));
    assert!(bad(Subject::default()).starts_with("common_name"));
    assert_eq!(vendor_tag("--"), "MAGICPUSH");
}
