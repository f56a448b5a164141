//! `ProfileSigner` and `content_of`: every key form loads, a key that is not the leaf's is
//! refused, signed profiles unwrap to the profile, and hostile bytes are typed errors.

mod common;

use common::{Kind, KINDS};
use magicpush_profile::{content_of, render, ProfileError, ProfileSigner};

fn signed_profile(kind: Kind) -> (Vec<u8>, Vec<u8>) {
    let s = common::signer(kind);
    let signer = ProfileSigner::from_pem(&s.leaf_pem, &s.key_pem).unwrap();
    let profile = render(&common::sample(None));
    let signed = signer.sign(&profile).unwrap();
    (profile, signed)
}

#[test]
fn every_key_kind_signs_and_unwraps() {
    for kind in KINDS {
        let (profile, signed) = signed_profile(kind);
        assert_eq!(signed[0], 0x30, "{kind:?}: DER SEQUENCE");
        assert_eq!(content_of(&signed).unwrap(), profile, "{kind:?}");
    }
}

#[test]
fn every_pem_form_loads() {
    for kind in [Kind::P256, Kind::P384] {
        let s = common::signer(kind);
        for with_curve in [false, true] {
            let sec1 = common::sec1_pem(kind, &s.key_pem, with_curve);
            assert!(sec1.contains("BEGIN EC PRIVATE KEY"));
            let signer = ProfileSigner::from_pem(&s.leaf_pem, &sec1)
                .unwrap_or_else(|e| panic!("{kind:?} SEC1 (curve {with_curve}): {e}"));
            let signed = signer.sign(b"<?xml profile").unwrap();
            assert_eq!(content_of(&signed).unwrap(), b"<?xml profile");
        }
    }
    let s = common::signer(Kind::Rsa);
    let pkcs1 = common::rsa_pkcs1_pem();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
    let signer = ProfileSigner::from_pem(&s.leaf_pem, &pkcs1).unwrap();
    assert!(
        signer.subject().contains("profile signer Rsa"),
        "{}",
        signer.subject()
    );
    signer.sign(b"<?xml profile").unwrap();
}

#[test]
fn chain_and_other_blocks_are_accepted() {
    let s = common::signer(Kind::P256);
    // Leaf, CA, the leaf again (dropped); an EC PARAMETERS block before the key, as
    // `openssl ecparam -genkey` writes it.
    let chain = format!("{}{}{}", s.leaf_pem, common::ca().pem, s.leaf_pem);
    let params = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
    let key = format!("{params}{}", s.key_pem);
    let signer = ProfileSigner::from_pem(&chain, &key).unwrap();
    assert_eq!(signer.subject(), "CN=profile signer P256");
    let signed = signer.sign(b"bplist00").unwrap();
    assert_eq!(content_of(&signed).unwrap(), b"bplist00");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    for leaf_kind in KINDS {
        let s = common::signer(leaf_kind);
        for key_kind in KINDS {
            if key_kind == leaf_kind && key_kind == Kind::Rsa {
                continue; // one RSA key per test binary
            }
            let other = common::key_pem(key_kind);
            let err = ProfileSigner::from_pem(&s.leaf_pem, &other).unwrap_err();
            assert!(
                matches!(err, ProfileError::KeyMismatch { .. }),
                "{leaf_kind:?} leaf, {key_kind:?} key: {err:?}"
            );
            let message = err.to_string();
            assert!(message.contains("does not match"), "{message}");
            assert!(
                message.contains(&format!("profile signer {leaf_kind:?}")),
                "{message}"
            );
            assert!(!message.contains('\n'));
        }
    }
}

#[test]
fn unusable_files_are_typed_errors() {
    let s = common::signer(Kind::P256);
    let cases: Vec<(&str, String, String)> = vec![
        ("no certificate", String::new(), s.key_pem.clone()),
        ("key as certificate", s.key_pem.clone(), s.key_pem.clone()),
        ("no key", s.leaf_pem.clone(), String::new()),
        ("certificate as key", s.leaf_pem.clone(), s.leaf_pem.clone()),
        (
            "bad certificate DER",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            s.key_pem.clone(),
        ),
        (
            "bad key DER",
            s.leaf_pem.clone(),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
        ),
        (
            "encrypted key",
            s.leaf_pem.clone(),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        ),
        (
            "broken PEM",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into(),
            s.key_pem.clone(),
        ),
    ];
    for (what, cert, key) in cases {
        let err = ProfileSigner::from_pem(&cert, &key).unwrap_err();
        let message = err.to_string();
        assert!(!message.contains('\n'), "{what}: {message}");
        eprintln!("{what}: {message}");
        match what {
            "no certificate" | "key as certificate" => {
                assert!(
                    matches!(err, ProfileError::NoCertificate),
                    "{what}: {err:?}"
                )
            }
            "no key" | "certificate as key" => {
                assert!(matches!(err, ProfileError::NoKey { .. }), "{what}: {err:?}")
            }
            "bad certificate DER" => {
                assert!(
                    matches!(err, ProfileError::Certificate { index: 1, .. }),
                    "{err:?}"
                )
            }
            "bad key DER" | "encrypted key" => {
                assert!(
                    matches!(err, ProfileError::UnsupportedKey { .. }),
                    "{err:?}"
                )
            }
            _ => assert!(matches!(err, ProfileError::Pem { .. }), "{what}: {err:?}"),
        }
    }
}

#[test]
fn plain_profiles_pass_through() {
    let profile = render(&common::sample(None));
    assert_eq!(content_of(&profile).unwrap(), profile);
    assert_eq!(content_of(b"bplist00\x08").unwrap(), b"bplist00\x08");
}

#[test]
fn every_prefix_of_a_signed_profile_is_an_error() {
    for kind in [Kind::P256, Kind::Rsa] {
        let (profile, signed) = signed_profile(kind);
        for len in 0..signed.len() {
            let err = content_of(&signed[..len]).expect_err("a truncated signed profile");
            assert!(matches!(err, ProfileError::NotAProfile(_)), "{err:?}");
        }
        assert_eq!(content_of(&signed).unwrap(), profile);
        // Trailing bytes are refused too.
        let mut longer = signed.clone();
        longer.push(0);
        assert!(content_of(&longer).is_err());
    }
}

#[test]
fn garbage_is_an_error() {
    let (_, signed) = signed_profile(Kind::P256);
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"<plist>".to_vec(),
        b"hello".to_vec(),
        vec![0x30, 0x80],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0xff; 64],
        // A degenerate ContentInfo of type id-data.
        vec![
            0x30, 0x0f, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01, 0xa0,
            0x02, 0x04, 0x00,
        ],
    ];
    // Every single-byte corruption of the header region.
    for i in 0..signed.len().min(64) {
        let mut flipped = signed.clone();
        flipped[i] ^= 0xff;
        inputs.push(flipped);
    }
    for input in inputs {
        if let Err(err) = content_of(&input) {
            assert!(matches!(err, ProfileError::NotAProfile(_)), "{err:?}");
            assert!(!err.to_string().contains('\n'));
        }
    }
}
