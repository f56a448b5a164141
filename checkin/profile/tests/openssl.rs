//! An independent reader of the signed profile: OpenSSL. For each kind of signer key (ECDSA
//! P-256, P-384, RSA), `openssl cms -verify` checks the signature and the path from the leaf
//! to the test CA (`-CAfile`), and the content it writes out is the profile, byte for byte.
//! `openssl cms -cmsout -print` shows the signed attributes.
//!
//! Without `openssl` on PATH the test prints SKIPPED and passes, unless `CI=true`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Kind, KINDS};
use magicpush_profile::{render, ProfileSigner};

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_openssl() -> bool {
    if Command::new("openssl").arg("version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "openssl is missing and CI=true"
    );
    eprintln!("SKIPPED: no openssl on PATH");
    false
}

/// Signs a profile with a `kind` signer (the leaf alone, or with the CA as chain) and has
/// OpenSSL verify it against the CA.
fn verify(kind: Kind, include_ca: bool) {
    let s = common::signer(kind);
    let chain = if include_ca {
        format!("{}{}", s.leaf_pem, common::ca().pem)
    } else {
        s.leaf_pem.clone()
    };
    let signer = ProfileSigner::from_pem(&chain, &s.key_pem).unwrap();
    let server_ca = common::ca().der.clone();
    let profile = render(&common::sample(Some(&server_ca)));
    let signed = signer.sign(&profile).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signed.der"), &signed).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &common::ca().pem).unwrap();
    openssl(
        dir.path(),
        &[
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "any",
            "-out",
            "content",
        ],
    );
    let content = std::fs::read(dir.path().join("content")).unwrap();
    assert_eq!(
        content, profile,
        "{kind:?}: the verified content is the profile"
    );

    let printed = openssl(
        dir.path(),
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-noout",
        ],
    );
    for attribute in ["contentType", "messageDigest", "signingTime"] {
        assert!(
            printed.contains(attribute),
            "{kind:?}: {attribute} in\n{printed}"
        );
    }
    let digest = if kind == Kind::P384 {
        "sha384"
    } else {
        "sha256"
    };
    assert!(printed.contains(digest), "{kind:?}: {digest} in\n{printed}");
    let certificates = printed.matches("cert_info:").count();
    assert_eq!(
        certificates,
        if include_ca { 2 } else { 1 },
        "{kind:?}\n{printed}"
    );
}

#[test]
fn openssl_verifies_every_key_kind() {
    if !have_openssl() {
        return;
    }
    for kind in KINDS {
        verify(kind, false);
        verify(kind, true);
    }
}

#[test]
fn openssl_refuses_a_tampered_profile() {
    if !have_openssl() {
        return;
    }
    let s = common::signer(Kind::P256);
    let signer = ProfileSigner::from_pem(&s.leaf_pem, &s.key_pem).unwrap();
    let profile = render(&common::sample(None));
    let mut signed = signer.sign(&profile).unwrap();
    // Change one byte of the profile inside the signature ("Acme" becomes "Bcme").
    let at = signed
        .windows(4)
        .position(|w| w == b"Acme")
        .expect("the organization is in the content");
    signed[at] = b'B';

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("signed.der"), &signed).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &common::ca().pem).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "signed.der",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "any",
            "-out",
            "content",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a tampered profile must not verify");
}

/// Keys as OpenSSL writes them (SEC1 with the curve and an `EC PARAMETERS` block, PKCS#1
/// from `genrsa -traditional`, PKCS#8 from `genpkey`), under self-signed certificates from
/// `openssl req`: they load, and what they sign verifies with the certificate as its own CA.
#[test]
fn keys_written_by_openssl_load_and_sign() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys: [(&str, &[&str]); 5] = [
        (
            "p256-sec1",
            &["ecparam", "-name", "prime256v1", "-genkey", "-out"],
        ),
        (
            "p384-sec1",
            &["ecparam", "-name", "secp384r1", "-genkey", "-out"],
        ),
        (
            "p384-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
            ],
        ),
        ("rsa-pkcs1", &["genrsa", "-traditional", "-out"]),
        (
            "rsa-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ],
        ),
    ];
    let profile = render(&common::sample(None));
    for (name, generate) in keys {
        let key_file = format!("{name}.key");
        let mut args = generate.to_vec();
        args.push(&key_file);
        if name == "rsa-pkcs1" {
            args.push("2048");
        }
        openssl(d, &args);
        let cert_file = format!("{name}.pem");
        let subject = format!("/CN=openssl {name}");
        openssl(
            d,
            &[
                "req", "-new", "-x509", "-key", &key_file, "-subj", &subject, "-days", "2", "-out",
                &cert_file,
            ],
        );
        let key_pem = std::fs::read_to_string(d.join(&key_file)).unwrap();
        let cert_pem = std::fs::read_to_string(d.join(&cert_file)).unwrap();
        let signer = ProfileSigner::from_pem(&cert_pem, &key_pem)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{key_pem}"));
        let signed = signer.sign(&profile).unwrap();
        let signed_file = format!("{name}.der");
        std::fs::write(d.join(&signed_file), &signed).unwrap();
        let out_file = format!("{name}.out");
        openssl(
            d,
            &[
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                &signed_file,
                "-CAfile",
                &cert_file,
                "-purpose",
                "any",
                "-out",
                &out_file,
            ],
        );
        assert_eq!(std::fs::read(d.join(&out_file)).unwrap(), profile, "{name}");
    }
}
