//! An independent reader of the CertRep: OpenSSL. The committed scepclient PKCSReq is
//! answered by `handle`; `openssl cms` verifies the CA's signature on the reply, decrypts the
//! envelope with the client's key (DES-CBC: OpenSSL's legacy provider), and the certificate
//! inside verifies against the CA as a TLS client certificate.
//!
//! Without `openssl` on PATH the test prints SKIPPED and passes, unless `CI=true`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use magicpush_scep::{handle, NothingRevoked, PkiStatus};

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

#[test]
fn openssl_verifies_and_decrypts_the_cert_rep() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl is missing and CI=true"
        );
        eprintln!("SKIPPED: no openssl on PATH");
        return;
    }
    let data = common::data_dir();
    let request = std::fs::read(data.join("scepclient-pkcsreq.der")).unwrap();
    let mut challenges = common::MemoryChallenges::default();
    challenges.add(
        "good-1",
        "enr-A",
        SystemTime::now() + Duration::from_secs(60),
    );
    let response = handle(
        &request,
        &common::fixture_ca(),
        &mut challenges,
        &NothingRevoked,
        SystemTime::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    assert_eq!(response.status, PkiStatus::Success);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("rep.der"), &response.bytes).unwrap();
    std::fs::write(d.join("req.der"), &request).unwrap();
    let ca = data.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let key = data.join("scepclient-key.pem");
    let key = key.to_str().unwrap();

    // The CA's signature over the reply (`-purpose any`: the fixture CA's keyUsage predates
    // digitalSignature, which `DeviceCa::generate` now sets).
    openssl(
        d,
        &[
            "cms", "-verify", "-inform", "DER", "-in", "rep.der", "-CAfile", ca, "-purpose", "any",
            "-binary", "-out", "env.der",
        ],
    );
    // The requester's self-signed certificate, from its request: the envelope's recipient.
    openssl(
        d,
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            "req.der",
            "-print_certs",
            "-out",
            "signer.pem",
        ],
    );
    openssl(
        d,
        &[
            "cms",
            "-decrypt",
            "-provider",
            "legacy",
            "-provider",
            "default",
            "-inform",
            "DER",
            "-in",
            "env.der",
            "-recip",
            "signer.pem",
            "-inkey",
            key,
            "-binary",
            "-out",
            "inner.der",
        ],
    );
    openssl(
        d,
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            "inner.der",
            "-print_certs",
            "-out",
            "issued.pem",
        ],
    );
    let verified = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            ca,
            "-purpose",
            "sslclient",
            "issued.pem",
        ],
    );
    assert!(verified.contains("issued.pem: OK"), "{verified}");
    let subject = openssl(d, &["x509", "-in", "issued.pem", "-noout", "-subject"]);
    assert!(subject.contains("OU = enr-A"), "{subject}");
    assert!(subject.contains("CN = device-a"), "{subject}");
}
