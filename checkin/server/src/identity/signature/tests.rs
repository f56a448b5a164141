//! Signatures made by openssl (`fixtures/mdm-signature/make.sh`), and broken ones.

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::*;

use magicpush_fixtures::mdm_signature as fixture;

const BODY: &str = "body.plist";

fn body() -> &'static [u8] {
    fixture(BODY)
}

fn cert_der(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem)
        .unwrap()
        .as_ref()
        .to_vec()
}

#[test]
fn openssl_signatures_verify_and_name_their_signer() {
    let rsa = cert_der(fixture("device-rsa.pem"));
    let ec = cert_der(fixture("device-ec.pem"));
    let p384 = cert_der(fixture("device-p384.pem"));
    let cases: [(&str, &[u8], &Vec<u8>); 6] = [
        ("RSA SHA-256", fixture("rsa-sha256.der"), &rsa),
        ("RSA SHA-1", fixture("rsa-sha1.der"), &rsa),
        (
            "RSA, BER with indefinite lengths",
            fixture("rsa-ber.der"),
            &rsa,
        ),
        ("P-256 SHA-256", fixture("ec-sha256.der"), &ec),
        ("P-256 SHA-1", fixture("ec-sha1.der"), &ec),
        ("P-384 SHA-512", fixture("p384-sha512.der"), &p384),
    ];
    for (what, cms, cert) in cases {
        let signer = verify_detached(cms, body()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&signer.certificate_der, cert, "{what}");
        assert!(
            signer.signing_time.is_some(),
            "{what}: openssl signs signingTime"
        );
    }
}

#[test]
fn the_header_is_base64_of_the_cms() {
    let cms = fixture("ec-sha256.der");
    let header = base64::engine::general_purpose::STANDARD.encode(cms);
    assert_eq!(decode_header(header.as_bytes()).unwrap(), cms);
    // Folded over lines, as some clients send long values.
    let folded: String = header
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n ");
    assert_eq!(decode_header(folded.as_bytes()).unwrap(), cms);
}

#[test]
fn a_body_altered_by_one_byte_is_refused() {
    for cms in [
        fixture("rsa-sha256.der"),
        fixture("rsa-ber.der"),
        fixture("ec-sha256.der"),
        fixture("p384-sha512.der"),
    ] {
        let mut altered = body().to_vec();
        altered[100] ^= 0x01;
        assert_eq!(verify_detached(cms, &altered), Err(Refusal::DigestMismatch));
        assert_eq!(
            verify_detached(cms, &body()[..body().len() - 1]),
            Err(Refusal::DigestMismatch)
        );
        assert_eq!(verify_detached(cms, b""), Err(Refusal::DigestMismatch));
    }
}

#[test]
fn an_altered_signature_is_refused() {
    // In a DER SignedData without unsigned attributes the signature value comes last.
    for cms in [fixture("rsa-sha256.der"), fixture("ec-sha256.der")] {
        let mut bad = cms.to_vec();
        let n = bad.len();
        bad[n - 3] ^= 0x40;
        let got = verify_detached(&bad, body());
        assert!(
            matches!(got, Err(Refusal::BadSignature) | Err(Refusal::Malformed(_))),
            "{got:?}"
        );
    }
    // Flip a byte well inside the RSA signature (not its DER framing): must be BadSignature.
    let mut bad = fixture("rsa-sha256.der").to_vec();
    let n = bad.len();
    bad[n - 100] ^= 0x01;
    assert_eq!(verify_detached(&bad, body()), Err(Refusal::BadSignature));
}

#[test]
fn two_signers_are_refused() {
    assert_eq!(
        verify_detached(fixture("two-signers.der"), body()),
        Err(Refusal::SignerCount(2))
    );
}

#[test]
fn garbage_and_truncations_are_refused_without_panicking() {
    assert!(matches!(
        decode_header(b"not base64 at all!"),
        Err(Refusal::Malformed(_))
    ));
    assert!(matches!(decode_header(b"  "), Err(Refusal::Malformed(_))));
    let huge = vec![b'A'; MAX_SIGNATURE_HEADER + 4];
    assert_eq!(decode_header(&huge), Err(Refusal::Oversized(huge.len())));
    assert!(matches!(
        verify_detached(b"", body()),
        Err(Refusal::Malformed(_))
    ));
    assert!(matches!(
        verify_detached(body(), body()),
        Err(Refusal::Malformed(_))
    ));
    for cms in [fixture("rsa-sha256.der"), fixture("rsa-ber.der")] {
        for len in 0..cms.len() {
            let got = verify_detached(&cms[..len], body());
            assert!(got.is_err(), "a CMS truncated to {len} bytes verified");
        }
        // Trailing garbage is not a signature either.
        let mut long = cms.to_vec();
        long.extend_from_slice(b"\0\0junk");
        assert!(verify_detached(&long, body()).is_err());
    }
    // Every single-byte corruption: never a panic. Past the certificate (the SignerInfo:
    // signer id, algorithms, signed attributes, signature) every one is refused; inside the
    // certificate one may pass here, with a changed certificate the trust check then sees.
    let cms = fixture("ec-sha256.der");
    let cert = cert_der(fixture("device-ec.pem"));
    let cert_end = cms
        .windows(cert.len())
        .position(|w| w == cert.as_slice())
        .unwrap()
        + cert.len();
    for i in 0..cms.len() {
        let mut bad = cms.to_vec();
        bad[i] = bad[i].wrapping_add(0x5b);
        match verify_detached(&bad, body()) {
            Err(_) => {}
            Ok(s) if i < cert_end => {
                assert!(i < cert_end - cert.len() || s.certificate_der != cert)
            }
            Ok(_) => panic!("a corrupted SignerInfo byte {i} still verified"),
        }
    }
}
