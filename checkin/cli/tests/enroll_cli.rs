//! Enrollment without outside tools: `serve` creates its device CA, `/scep` issues a
//! certificate to Debian's `scepclient` with a challenge from `POST
//! /v1/enrollments/challenge`, the certificate signs check-ins (`openssl cms -sign`), and
//! deleting the device revokes it (403, renewal refused). `magicpush ca show` prints the CA.
//!
//! An invitation takes a device from nothing to enrolled: `POST /v1/enrollments`, the signed
//! profile at its URL (verified with `openssl cms -verify`), its challenge through
//! scepclient, the Authenticate recorded against the invitation, the URL gone once used.
//!
//! Without `scepclient` on PATH the enrollment tests print SKIPPED and pass, unless
//! `CI=true`.

mod common;

use common::Serve;

use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use magicpush_fixtures::plists::{self, Device};
use magicpush_server::client::AdminClient;

const KEY: &str = "enroll-test-key";
const BIN: &str = env!("CARGO_BIN_EXE_magicpush");
const TOPIC: &str = "com.apple.mgmt.External.enroll-test";

/// `serve` on `dir` with device authentication on (no --device-ca: the built-in CA).
fn serve(dir: &Path) -> Serve {
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Serve::listening(child).expect("serve printed its address")
}

/// `serve` on `dir` handing out enrollment profiles: the fixture push certificate (a tenant),
/// `--public-url`, profiles signed with the fixture server certificate.
fn serve_invitations(dir: &Path) -> Serve {
    let certs = magicpush_fixtures::dir().join("certs");
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .arg("--data-dir")
        .arg(dir)
        .arg("--cert")
        .arg(certs.join("push.pem"))
        .arg("--key")
        .arg(certs.join("push.key.pem"))
        .args(["--apns-url", "https://127.0.0.1:9"])
        .args(["--public-url", "https://mdm.example.com"])
        .arg("--profile-signing-cert")
        .arg(certs.join("server.pem"))
        .arg("--profile-signing-key")
        .arg(certs.join("server.key.pem"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Serve::listening(child).expect("serve printed its address")
}

fn scepclient_available() -> bool {
    let found = Command::new("scepclient").arg("-version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "scepclient is missing (apt-get install scep) and CI=true"
        );
        eprintln!("SKIPPED: no scepclient on PATH (apt-get install scep)");
    }
    found
}

/// Runs scepclient in `dir` (key.pem, cert.pem there); true when it got a certificate.
fn scepclient(url: &str, dir: &Path, cn: &str, challenge: &str) -> bool {
    let out = Command::new("scepclient")
        .current_dir(dir)
        .args(["-server-url", url, "-cn", cn, "-challenge", challenge])
        .arg("-private-key")
        .arg(dir.join("key.pem"))
        .arg("-certificate")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("scepclient runs");
    eprintln!(
        "scepclient {cn}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

/// The `Mdm-Signature` of `body` with `dir`'s cert.pem and key.pem.
fn sign(dir: &Path, body: &[u8]) -> String {
    let input = dir.join("body.plist");
    std::fs::write(&input, body).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-sign", "-binary", "-outform", "DER", "-in"])
        .arg(&input)
        .arg("-signer")
        .arg(dir.join("cert.pem"))
        .arg("-inkey")
        .arg(dir.join("key.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &out.stdout)
}

async fn checkin(admin: &AdminClient, dir: &Path, dict: &plist::Dictionary) -> (StatusCode, Bytes) {
    let body = plists::to_xml(dict);
    let sig = sign(dir, &body);
    admin
        .request_with(
            Method::PUT,
            "/mdm/checkin",
            Some(("application/x-apple-aspen-mdm-checkin", Bytes::from(body))),
            &[(
                HeaderName::from_static("mdm-signature"),
                HeaderValue::from_str(&sig).unwrap(),
            )],
        )
        .await
        .unwrap()
}

async fn challenge(admin: &AdminClient, body: serde_json::Value) -> serde_json::Value {
    admin
        .send_json(Method::POST, "/v1/enrollments/challenge", &body)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolls_through_scep_checks_in_and_is_revoked() {
    if !scepclient_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path());
    assert!(data.path().join("device-ca.pem").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("device-ca.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    let scep = format!("{}/scep", server.url);

    // The CA's caps and certificate.
    let caps = admin.get_text("/scep?operation=GetCACaps").await.unwrap();
    assert!(caps.contains("SCEPStandard"), "{caps}");
    let (status, _) = admin
        .request(Method::GET, "/scep?operation=Nope", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = admin
        .request(
            Method::POST,
            "/scep?operation=PKIOperation",
            Some(("application/x-pki-message", Bytes::from_static(b"not CMS"))),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A challenge, used once.
    let issued = challenge(
        &admin,
        serde_json::json!({"enrollment_id": "enr-test-1", "expires_in": "10m"}),
    )
    .await;
    assert_eq!(issued["enrollment_id"], "enr-test-1");
    let secret = issued["challenge"].as_str().unwrap().to_owned();
    let a = tempfile::tempdir().unwrap();
    assert!(scepclient(&scep, a.path(), "device-a", &secret));
    let b = tempfile::tempdir().unwrap();
    assert!(
        !scepclient(&scep, b.path(), "device-b", &secret),
        "a challenge is used once"
    );
    assert!(!b.path().join("cert.pem").exists());
    let bad = admin
        .send_json(
            Method::POST,
            "/v1/enrollments/challenge",
            &serde_json::json!({"enrollment_id": "no spaces"}),
        )
        .await;
    assert!(bad.is_err());

    // The issued certificate signs check-ins.
    let mut device = Device::iphone();
    device.udid = "ENROLL-DEVICE-1".into();
    let (status, body) = checkin(&admin, a.path(), &plists::authenticate(&device, TOPIC)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let (status, body) = checkin(&admin, a.path(), &plists::token_update(&device, TOPIC)).await;
    assert_eq!(status, StatusCode::OK, "{body:?}");

    // Deleted: its certificate is revoked, refused with 403 and refused renewal.
    admin
        .call(Method::DELETE, "/v1/devices/ENROLL-DEVICE-1", None)
        .await
        .unwrap();
    let (status, body) = checkin(&admin, a.path(), &plists::authenticate(&device, TOPIC)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:?}");
    assert!(
        String::from_utf8_lossy(&body).contains("revoked"),
        "{body:?}"
    );
    // Any other message needs the binding the deletion removed.
    let (status, body) = checkin(&admin, a.path(), &plists::token_update(&device, TOPIC)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body:?}");
    let cert_before = std::fs::read(a.path().join("cert.pem")).unwrap();
    assert!(
        !scepclient(&scep, a.path(), "device-a", "unused"),
        "a revoked certificate does not renew"
    );
    assert_eq!(
        std::fs::read(a.path().join("cert.pem")).unwrap(),
        cert_before
    );
    let metrics = admin.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("magicpush_scep_requests_total"),
        "{metrics}"
    );
    drop(server);

    // The CA and the revocation survive a restart.
    let server = serve(data.path());
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    let (status, _) = checkin(&admin, a.path(), &plists::authenticate(&device, TOPIC)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[test]
fn ca_show_prints_the_ca_serve_created() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["ca", "show", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "no CA yet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("serve"), "{stderr}");
    assert!(
        !data.path().join("device-ca.pem").exists(),
        "ca show creates nothing"
    );
    drop(serve(data.path()));
    let out = Command::new(BIN)
        .args(["ca", "show", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
    assert!(text.contains("SHA-256 fingerprint: "), "{text}");
    let out = Command::new(BIN)
        .args(["ca", "show", "--json", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pem = std::fs::read_to_string(data.path().join("device-ca.pem")).unwrap();
    assert_eq!(json["certificate_pem"], pem);
    assert!(json["sha256"].as_str().unwrap().len() >= 64);
    assert_eq!(json["missing_key_usages"], serde_json::json!([]));
    assert!(!text.contains("WARNING"), "{text}");

    // A CA made before the SCEP key usages (the SCEP crate's committed fixture) is flagged.
    let scep_data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scep/tests/data");
    let old = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("ca.pem", "device-ca.pem"),
        ("ca.key.pem", "device-ca.key.pem"),
    ] {
        std::fs::copy(scep_data.join(from), old.path().join(to)).unwrap();
    }
    let out = Command::new(BIN)
        .args(["ca", "show", "--data-dir"])
        .arg(old.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WARNING: the built-in device CA's certificate lacks keyUsage digitalSignature and keyEncipherment"),
        "{text}"
    );
}

/// The profile `signed` holds, verified with openssl against the fixture CA that issued the
/// signing certificate.
fn verified_profile(dir: &Path, signed: &[u8]) -> plist::Dictionary {
    let input = dir.join("profile.der");
    let output = dir.join("profile.plist");
    std::fs::write(&input, signed).unwrap();
    let out = Command::new("openssl")
        .args([
            "cms", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-in",
        ])
        .arg(&input)
        .arg("-CAfile")
        .arg(magicpush_fixtures::dir().join("certs/ca.pem"))
        .arg("-out")
        .arg(&output)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl cms -verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    plist::from_file(&output).expect("the signed content is a plist")
}

fn payload<'a>(profile: &'a plist::Dictionary, kind: &str) -> &'a plist::Dictionary {
    profile["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(plist::Value::as_dictionary)
        .find(|p| p["PayloadType"].as_string() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} payload"))
}

/// The challenge of invitation `path`'s profile (fetched without the admin key).
async fn fetch_challenge(server: &Serve, dir: &Path, path: &str) -> String {
    let anonymous = AdminClient::new(&server.url, None, None).unwrap();
    let (status, body) = anonymous.request(Method::GET, path, None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let profile = verified_profile(dir, &body);
    let scep = payload(&profile, "com.apple.security.scep")["PayloadContent"]
        .as_dictionary()
        .unwrap();
    scep["Challenge"].as_string().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_takes_a_device_from_nothing_to_enrolled() {
    if !scepclient_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = serve_invitations(data.path());
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    let topic = magicpush_fixtures::generate::push_topic();

    let invitation = admin
        .send_json(
            Method::POST,
            "/v1/enrollments",
            &serde_json::json!({"note": "first device", "expires_in": "1h"}),
        )
        .await
        .unwrap();
    let id = invitation["id"].as_str().unwrap().to_owned();
    let url = invitation["url"].as_str().unwrap();
    assert_eq!(url, format!("https://mdm.example.com/enroll/{id}"));
    assert_eq!(invitation["uses_left"], 1);
    let path = format!("/enroll/{id}");

    // The profile verifies with openssl and names this server and tenant.
    let work = tempfile::tempdir().unwrap();
    let anonymous = AdminClient::new(&server.url, None, None).unwrap();
    let (status, body) = anonymous.request(Method::GET, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let profile = verified_profile(work.path(), &body);
    let mdm = payload(&profile, "com.apple.mdm");
    assert_eq!(mdm["Topic"].as_string(), Some(topic.as_str()));
    assert_eq!(
        mdm["ServerURL"].as_string(),
        Some("https://mdm.example.com/mdm/server")
    );
    assert_eq!(mdm["SignMessage"].as_boolean(), Some(true));

    // Two fetches, two challenges; one device enrolls (scepclient, as a device would).
    let first = fetch_challenge(&server, work.path(), &path).await;
    let second = fetch_challenge(&server, work.path(), &path).await;
    assert_ne!(first, second);
    let scep = format!("{}/scep", server.url);
    let a = tempfile::tempdir().unwrap();
    assert!(scepclient(&scep, a.path(), "device-a", &first));
    let b = tempfile::tempdir().unwrap();
    assert!(
        !scepclient(&scep, b.path(), "device-b", &second),
        "a one-use invitation admits one device"
    );
    let (status, _) = anonymous.request(Method::GET, &path, None).await.unwrap();
    assert_eq!(status, StatusCode::GONE, "the URL is used up");

    // The certificate carries the invitation; the Authenticate is recorded against it.
    let cert = std::fs::read_to_string(a.path().join("cert.pem")).unwrap();
    let der = pem::parse(&cert).unwrap().into_contents();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ou = parsed
        .subject()
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap()
        .to_owned();
    assert_eq!(ou, id);
    let mut device = Device::iphone();
    device.udid = "INVITED-DEVICE-1".into();
    for dict in [
        plists::authenticate(&device, &topic),
        plists::token_update(&device, &topic),
    ] {
        let (status, body) = checkin(&admin, a.path(), &dict).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
    }
    let listed = admin.get_json("/v1/enrollments").await.unwrap();
    let one = &listed["enrollments"][0];
    assert_eq!(one["state"], "used_up");
    assert_eq!(one["devices"][0]["udid"], "INVITED-DEVICE-1");
    let page = admin.get_json("/v1/devices?limit=10").await.unwrap();
    assert_eq!(page["devices"][0]["invitation"], id.as_str());

    // A valid certificate renews without a challenge (RenewalReq), keeping the invitation.
    assert!(scepclient(&scep, a.path(), "device-a", "unused"));
    let renewed = std::fs::read_to_string(a.path().join("cert.pem")).unwrap();
    assert_ne!(renewed, cert, "a new certificate");
    let der = pem::parse(&renewed).unwrap().into_contents();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ou = parsed.subject().iter_organizational_unit().next().unwrap();
    assert_eq!(ou.as_str().unwrap(), id);
}

/// `magicpush enrollments …` against `server`, its stdout.
fn enrollments(server: &Serve, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("enrollments")
        .args(args)
        .args(["--server", &server.url])
        .env("MAGICPUSH_API_KEY", KEY)
        .output()
        .expect("magicpush enrollments runs");
    assert!(
        out.status.success(),
        "enrollments {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_enrollments_command_creates_lists_and_withdraws() {
    let data = tempfile::tempdir().unwrap();
    let server = serve_invitations(data.path());
    let url = enrollments(&server, &["create", "--uses", "3", "--note", "sales floor"]);
    let url = url.trim();
    let id = url
        .strip_prefix("https://mdm.example.com/enroll/")
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(id.len(), 40, "{url}");
    let listed = enrollments(&server, &[]);
    assert!(listed.contains(&format!("{id}  open")), "{listed}");
    assert!(
        listed.contains("3/3") && listed.contains("sales floor"),
        "{listed}"
    );
    let withdrawn = enrollments(&server, &["withdraw", id]);
    assert!(withdrawn.contains("withdrawn"), "{withdrawn}");
    let json: serde_json::Value = serde_json::from_str(&enrollments(&server, &["--json"])).unwrap();
    assert_eq!(json["enrollments"][0]["state"], "withdrawn");
}

#[test]
fn a_malformed_public_url_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--api-key", KEY])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--public-url", "mdm.example.com/no-scheme"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--public-url"), "{stderr}");
}
