//! `magicpush cert …` run as a binary, on the committed fixtures and on certificates made by
//! `openssl` (when it is on PATH).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use magicpush_fixtures::generate::{OTHER_UUID, P12_PASSWORD, PUSH_UUID};

fn magicpush(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_magicpush"))
        .args(args)
        .output()
        .expect("running the magicpush binary")
}

fn fixture(name: &str) -> String {
    magicpush_fixtures::dir()
        .join("certs")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", stdout(out), stderr(out)))
}

#[test]
fn inspect_json_has_the_promised_keys() {
    let out = magicpush(&["cert", "inspect", &fixture("push.pem"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let topic = format!("com.apple.mgmt.External.{PUSH_UUID}");
    assert_eq!(v["topic"], topic.as_str());
    assert_eq!(
        v["subject"],
        format!("C = JP, CN = APSP:{PUSH_UUID}, UID = {topic}").as_str()
    );
    assert_eq!(v["apsp_uuid"], PUSH_UUID);
    assert_eq!(v["not_before"], "2026-01-01T00:00:00Z");
    assert_eq!(v["not_after"], "2036-01-01T00:00:00Z");
    assert!(v["serial"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["days_left"].is_i64());
    assert!(v["key_matches"].is_null());
    assert_eq!(v["environment"], "production");
}

#[test]
fn inspect_with_the_key_reports_a_match() {
    for key in ["push.key.pem", "push.rsa.key.pem"] {
        let out = magicpush(&[
            "cert",
            "inspect",
            &fixture("push.pem"),
            "--key",
            &fixture(key),
            "--json",
        ]);
        assert!(out.status.success(), "{key}: {}", stderr(&out));
        assert_eq!(json(&out)["key_matches"], true, "{key}");
    }
    // A bundle carries its key.
    let out = magicpush(&["cert", "inspect", &fixture("push.bundle.pem"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["key_matches"], true);
}

#[test]
fn inspect_text_names_every_field() {
    let out = magicpush(&[
        "cert",
        "inspect",
        &fixture("push-expired.pem"),
        "--at",
        "2026-11-25T00:00:00Z",
    ]);
    // Printed whole, then exit 3: scripts notice an expired certificate.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("expired on 2025-01-01"),
        "{}",
        stderr(&out)
    );
    let text = stdout(&out);
    for field in [
        "subject:",
        "topic:",
        "apsp_uuid:",
        "serial:",
        "issuer:",
        "not_before:",
        "not_after:   2025-01-01T00:00:00Z",
        "days_left:   -693",
        "EXPIRED",
        "environment: production",
        "key_matches: (no key given)",
    ] {
        assert!(text.contains(field), "missing {field:?} in\n{text}");
    }
}

#[test]
fn an_expired_certificate_is_allowed_with_the_flag() {
    for (at, code) in [("2024-06-01T00:00:00Z", 0), ("2026-11-25T00:00:00Z", 3)] {
        let out = magicpush(&["cert", "inspect", &fixture("push-expired.pem"), "--at", at]);
        assert_eq!(out.status.code(), Some(code), "{at}: {}", stderr(&out));
    }
    let out = magicpush(&[
        "cert",
        "inspect",
        &fixture("push-expired.pem"),
        "--allow-expired",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = magicpush(&[
        "cert",
        "inspect",
        &fixture("push-not-yet-valid.pem"),
        "--at",
        "2020-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn a_mismatched_key_prints_then_fails() {
    let out = magicpush(&[
        "cert",
        "inspect",
        &fixture("key-mismatch.pem"),
        "--key",
        &fixture("key-mismatch.key.pem"),
        "--json",
    ]);
    assert!(!out.status.success());
    assert_eq!(json(&out)["key_matches"], false);
    assert!(stderr(&out).contains("does not belong"), "{}", stderr(&out));
}

#[test]
fn pkcs12_needs_its_password() {
    let p12 = fixture("push.p12");
    let out = magicpush(&[
        "cert",
        "inspect",
        &p12,
        "--password",
        P12_PASSWORD,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["apsp_uuid"], PUSH_UUID);
    assert_eq!(v["key_matches"], true);

    let out = magicpush(&["cert", "inspect", &p12]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--password"), "{}", stderr(&out));

    let out = magicpush(&["cert", "inspect", &p12, "--password", "wrong"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong PKCS#12 password"),
        "{}",
        stderr(&out)
    );

    let out = magicpush(&[
        "cert",
        "inspect",
        &fixture("push-empty-password.p12"),
        "--password",
        "",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn non_mdm_and_unreadable_certificates_fail_clearly() {
    let out = magicpush(&["cert", "inspect", &fixture("non-mdm.pem")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("not an MDM push certificate"), "{err}");
    assert!(err.contains("com.example.pushapp"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not a certificate\n").unwrap();
    let out = magicpush(&["cert", "inspect", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("junk.pem"), "{}", stderr(&out));

    let out = magicpush(&["cert", "inspect", "/nonexistent/push.pem"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nonexistent/push.pem"));

    let out = magicpush(&[
        "cert",
        "inspect",
        &fixture("push.pem"),
        "--key",
        &fixture("push.encrypted.key.pem"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("openssl pkey"), "{}", stderr(&out));
}

#[test]
fn check_renewal_on_fixtures() {
    let ok = magicpush(&[
        "cert",
        "check-renewal",
        "--current",
        &fixture("push.pem"),
        "--new",
        &fixture("push-renewal.pem"),
        "--at",
        "2026-11-25T00:00:00Z",
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).starts_with("OK"), "{}", stdout(&ok));

    let e320 = magicpush(&[
        "cert",
        "check-renewal",
        "--current",
        &fixture("push.pem"),
        "--new",
        &fixture("push-other-topic.pem"),
    ]);
    assert!(!e320.status.success());
    let err = stderr(&e320);
    assert!(err.contains("E320"), "{err}");
    assert!(err.contains(PUSH_UUID) && err.contains(OTHER_UUID), "{err}");

    let older = magicpush(&[
        "cert",
        "check-renewal",
        "--current",
        &fixture("push-renewal.pem"),
        "--new",
        &fixture("push.pem"),
        "--at",
        "2026-11-25T00:00:00Z",
    ]);
    assert!(!older.status.success());
    assert!(stderr(&older).contains("not later"), "{}", stderr(&older));
}

// ---- certificates made by openssl --------------------------------------------------------

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed push-style certificate and its key, made by `openssl req`.
fn openssl_push_cert(dir: &Path, name: &str, uuid: &str, days: u32) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    let subj = format!("/C=JP/CN=APSP:{uuid}/UID=com.apple.mgmt.External.{uuid}");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &subj,
        "-days",
        &days.to_string(),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// Whether to run an openssl test: yes when openssl is on PATH; a missing openssl fails the
/// test under CI (`CI=true`), and skips it elsewhere with a note.
fn openssl_or_skip(test: &str) -> bool {
    if openssl_available() {
        return true;
    }
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "{test} needs openssl on PATH (CI=true: it is not skipped)"
    );
    println!("note: openssl is not on PATH; skipping {test}");
    false
}

#[test]
fn certificates_made_by_openssl() {
    if !openssl_or_skip("the openssl interoperability test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let uuid = "3d9c1a70-5b2e-4f81-a6c4-90e1b2d3f4a5";
    let other = "c0ffee00-1234-4abc-8def-0123456789ab";
    let topic = format!("com.apple.mgmt.External.{uuid}");
    let other_topic = format!("com.apple.mgmt.External.{other}");
    let (cert, key) = openssl_push_cert(dir.path(), "current", uuid, 365);
    let (renewal, _) = openssl_push_cert(dir.path(), "renewal", uuid, 730);
    let (other_cert, _) = openssl_push_cert(dir.path(), "other", other, 730);
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());

    // inspect --json agrees with what openssl itself prints.
    let out = magicpush(&["cert", "inspect", cert_s, "--key", key_s, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["topic"], topic.as_str());
    assert_eq!(v["key_matches"], true);
    let subject = openssl(&["x509", "-in", cert_s, "-noout", "-subject"]);
    assert_eq!(
        v["subject"],
        subject.trim().trim_start_matches("subject=").trim()
    );
    let serial = openssl(&["x509", "-in", cert_s, "-noout", "-serial"]);
    assert_eq!(v["serial"], serial.trim().trim_start_matches("serial="));
    assert_eq!(v["environment"], "unspecified");
    let days = v["days_left"].as_i64().unwrap();
    assert!((363..=365).contains(&days), "{days}");

    // The key converted to PKCS#1 and the pair exported as PKCS#12 by openssl.
    let pkcs1 = dir.path().join("current.rsa.key.pem");
    openssl(&[
        "rsa",
        "-in",
        key_s,
        "-traditional",
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    let out = magicpush(&[
        "cert",
        "inspect",
        cert_s,
        "--key",
        pkcs1.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["key_matches"], true);
    let p12 = dir.path().join("current.p12");
    openssl(&[
        "pkcs12",
        "-export",
        "-in",
        cert_s,
        "-inkey",
        key_s,
        "-passout",
        "pass:s3cret",
        "-out",
        p12.to_str().unwrap(),
    ]);
    let out = magicpush(&[
        "cert",
        "inspect",
        p12.to_str().unwrap(),
        "--password",
        "s3cret",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["topic"], topic.as_str());
    assert_eq!(json(&out)["key_matches"], true);

    // An openssl key that is not this certificate's.
    let (_, other_key) = openssl_push_cert(dir.path(), "stranger", uuid, 365);
    let out = magicpush(&[
        "cert",
        "inspect",
        cert_s,
        "--key",
        other_key.to_str().unwrap(),
        "--json",
    ]);
    assert!(!out.status.success());
    assert_eq!(json(&out)["key_matches"], false);

    // Same topic, later expiry: a renewal.
    let out = magicpush(&[
        "cert",
        "check-renewal",
        "--current",
        cert_s,
        "--new",
        renewal.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Another topic: E320 naming both topics.
    let out = magicpush(&[
        "cert",
        "check-renewal",
        "--current",
        cert_s,
        "--new",
        other_cert.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("E320"), "{err}");
    assert!(err.contains(&topic) && err.contains(&other_topic), "{err}");
}

// ---- requests: cert csr, cert sign-request, cert identify --------------------------------

#[test]
fn csr_writes_a_private_key_and_a_request_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = magicpush(&[
        "cert",
        "csr",
        "--out",
        out_dir.to_str().unwrap(),
        "--email",
        "it@example.co.jp",
        "--cn",
        "Example KK",
        "--country",
        "JP",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let csr = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "csr"))
        .unwrap();
    let key = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let name = csr.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("PushCertificate_MAGICPUSH_"), "{name}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    if !openssl_or_skip("the CSR check by openssl") {
        return;
    }
    let text = openssl(&[
        "req",
        "-in",
        csr.to_str().unwrap(),
        "-noout",
        "-verify",
        "-subject",
    ]);
    assert!(text.contains("Example KK") && text.contains("JP"), "{text}");
    // The CSR is for the key that was written.
    let from_csr = openssl(&["req", "-in", csr.to_str().unwrap(), "-noout", "-pubkey"]);
    let from_key = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(from_csr, from_key);
}

#[test]
fn sign_request_makes_a_signature_openssl_verifies() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let out = magicpush(&[
        "cert",
        "csr",
        "--out",
        dir.path().to_str().unwrap(),
        "--cn",
        "Customer",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csr = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "csr"))
        .unwrap();
    let signed = dir.path().join("signed.txt");
    // The fixtures CA (RSA 2048) plays the MDM vendor.
    let out = magicpush(&[
        "cert",
        "sign-request",
        "--vendor-cert",
        &fixture("ca.pem"),
        "--vendor-key",
        &fixture("ca.key.pem"),
        "--csr",
        csr.to_str().unwrap(),
        "--out",
        signed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let decoded = magicpush_server::pushcert::request::VendorRequest::decode(
        &std::fs::read_to_string(&signed).unwrap(),
    )
    .unwrap();
    decoded.verify().unwrap();
    if !openssl_or_skip("the vendor signature check by openssl") {
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let csr_der = dir.path().join("csr.der");
    let sig = dir.path().join("sig.bin");
    std::fs::write(&csr_der, &decoded.csr_der).unwrap();
    std::fs::write(&sig, &decoded.signature).unwrap();
    let pubkey = dir.path().join("vendor.pub.pem");
    std::fs::write(
        &pubkey,
        openssl(&["x509", "-in", &fixture("ca.pem"), "-noout", "-pubkey"]),
    )
    .unwrap();
    let ok = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        pubkey.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        csr_der.to_str().unwrap(),
    ]);
    assert!(ok.contains("Verified OK"), "{ok}");
    // The plist inside is what the portal reads.
    let xml = b64
        .decode(std::fs::read_to_string(&signed).unwrap().trim())
        .unwrap();
    let xml = String::from_utf8(xml).unwrap();
    for key in [
        "PushCertRequestCSR",
        "PushCertCertificateChain",
        "PushCertSignature",
    ] {
        assert!(xml.contains(&format!("<key>{key}</key>")), "{xml}");
    }
}

#[test]
fn identify_prints_what_the_portal_lists() {
    let out = magicpush(&["cert", "identify", &fixture("push.pem")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("APSP:     {PUSH_UUID}")), "{text}");
    assert!(text.contains("Jan 1, 2036"), "{text}");
    assert!(
        text.contains(&format!("com.apple.mgmt.External.{PUSH_UUID}")),
        "{text}"
    );
    let out = magicpush(&["cert", "identify", &fixture("push.pem"), "--json"]);
    let v = json(&out);
    assert_eq!(v["expires"], "Jan 1, 2036");
    assert_eq!(v["apsp"], PUSH_UUID);
    assert!(v["serial"].is_string());
}
