//! Device identity end to end, with the real server: each device's identity certificate is
//! bound to its UDID at Authenticate, and no other certificate — valid or not — can act for
//! it, through `Mdm-Signature`, a TLS client certificate or the proxy header. Refused requests
//! answer 403 and leave the store as it was.

mod server_common;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use magicpush_fixtures::plists::{self, Device};
use magicpush_fixtures::{device_identity_cert, CertKey, KeyKind};
use magicpush_loadtest::fleet::signer::DeviceSigner;
use server_common::{device, Options, TestServer, CERT_HEADER};

/// A simulated device: its plists and its identity.
struct Signed {
    dev: Device,
    id: CertKey,
    signer: DeviceSigner,
}

fn identity(srv: &TestServer, dev: Device) -> Signed {
    let id = device_identity_cert(&srv.pki.ca, &dev.udid, KeyKind::EcdsaP256).unwrap();
    let signer = DeviceSigner::new(&id.cert_der, &id.key_der).unwrap();
    Signed { dev, id, signer }
}

async fn put(
    srv: &TestServer,
    path: &str,
    body: Vec<u8>,
    headers: &[(HeaderName, HeaderValue)],
) -> (StatusCode, String) {
    let (status, answer) = srv
        .anon
        .request_with(
            Method::PUT,
            path,
            Some(("application/x-apple-aspen-mdm-checkin", Bytes::from(body))),
            headers,
        )
        .await
        .expect("device request");
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// `body` signed by `as_device`'s identity, to `path`.
async fn signed(srv: &TestServer, path: &str, body: Vec<u8>, by: &Signed) -> (StatusCode, String) {
    let sig = by.signer.sign(&body);
    let header = (
        HeaderName::from_static("mdm-signature"),
        HeaderValue::from_str(&sig).unwrap(),
    );
    put(srv, path, body, &[header]).await
}

/// `body` with `by`'s certificate in the proxy header (RFC 9440 form).
async fn proxied(srv: &TestServer, path: &str, body: Vec<u8>, by: &Signed) -> (StatusCode, String) {
    let value = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(&by.id.cert_der)
    );
    let header = (
        HeaderName::from_static(CERT_HEADER),
        HeaderValue::from_str(&value).unwrap(),
    );
    put(srv, path, body, &[header]).await
}

async fn enroll(srv: &TestServer, d: &Signed) {
    let topic = srv.topic();
    for body in [
        plists::authenticate(&d.dev, &topic),
        plists::token_update(&d.dev, &topic),
        plists::set_bootstrap_token(&d.dev, &topic),
    ] {
        let (s, text) = signed(srv, "/mdm/checkin", plists::to_xml(&body), d).await;
        assert_eq!(s, StatusCode::OK, "{}: {text}", d.dev.udid);
    }
}

/// Everything the admin API shows of the store: devices, and each one's commands.
async fn snapshot(srv: &TestServer) -> serde_json::Value {
    let devices = srv.admin.get_json("/v1/devices").await.unwrap();
    let mut queues = Vec::new();
    for d in devices.as_array().into_iter().flatten() {
        let udid = d["udid"].as_str().unwrap();
        queues.push(
            srv.admin
                .get_json(&format!("/v1/devices/{udid}/commands"))
                .await
                .unwrap(),
        );
    }
    serde_json::json!({"devices": devices, "queues": queues})
}

async fn metric(srv: &TestServer, reason: &str) -> u64 {
    let text = srv.anon.get_text("/metrics").await.unwrap();
    let needle = format!("magicpush_device_auth_refusals_total{{reason=\"{reason}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

async fn second_device_cannot_act_for_the_first(sqlite: bool) {
    let srv = TestServer::start(Options {
        device_auth: true,
        sqlite,
        ..Options::default()
    })
    .await;
    let topic = srv.topic();
    let a = identity(&srv, device(1));
    let b = identity(&srv, device(2));
    enroll(&srv, &a).await;
    enroll(&srv, &b).await;
    let bound = srv.device_json(&a.dev.udid).await["identity"].clone();
    assert_eq!(
        bound["sha256"],
        hex::encode(ring_sha256(&a.id.cert_der)),
        "{bound}"
    );
    assert!(
        bound["serial"].is_string() && bound["not_after"].is_string(),
        "{bound}"
    );
    assert!(bound["subject"].as_str().unwrap().contains(&a.dev.udid));

    // Device B, with its own valid certificate, tries every message for A's UDID.
    let before = snapshot(&srv).await;
    let unbound_before = metric(&srv, "unbound").await;
    let attempts = [
        ("/mdm/checkin", plists::token_update(&a.dev, &topic)),
        ("/mdm/checkin", plists::token_update_user(&a.dev, &topic)),
        ("/mdm/checkin", plists::checkout(&a.dev, &topic)),
        ("/mdm/checkin", plists::get_bootstrap_token(&a.dev, &topic)),
        ("/mdm/checkin", plists::set_bootstrap_token(&a.dev, &topic)),
        ("/mdm/server", plists::report_idle(&a.dev)),
        (
            "/mdm",
            plists::report_error(&a.dev, "00000000-0000-0000-0000-000000000001"),
        ),
    ];
    for (path, body) in &attempts {
        let (s, text) = signed(&srv, path, plists::to_xml(body), &b).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {text}");
        assert!(text.contains("not the one device"), "{text}");
        assert!(!text.contains("BootstrapToken"), "no token leaks: {text}");
        // The same through the TLS proxy's header.
        let (s, text) = proxied(&srv, path, plists::to_xml(body), &b).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path} via header: {text}");
    }
    // B cannot take over A with an Authenticate either: its certificate is B's.
    let (s, text) = signed(
        &srv,
        "/mdm/checkin",
        plists::to_xml(&plists::authenticate(&a.dev, &topic)),
        &b,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(
        text.contains(&format!("already bound to device {}", b.dev.udid)),
        "{text}"
    );
    // Nor with A's certificate and B's key (a forged signature).
    let body = plists::to_xml(&plists::report_idle(&a.dev));
    let forged = b.signer.sign_der_claiming(&body, &a.id.cert_der);
    let header = (
        HeaderName::from_static("mdm-signature"),
        HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(forged)).unwrap(),
    );
    let (s, text) = put(&srv, "/mdm/server", body.clone(), &[header]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("does not verify"), "{text}");
    // Nor a body altered after signing, nor no identity at all.
    let sig = a.signer.sign(&body);
    let mut altered = body.clone();
    altered.extend_from_slice(b"\n");
    let header = (
        HeaderName::from_static("mdm-signature"),
        HeaderValue::from_str(&sig).unwrap(),
    );
    let (s, text) = put(&srv, "/mdm/server", altered, &[header]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("altered"), "{text}");
    let (s, text) = put(&srv, "/mdm/server", body.clone(), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("no device identity"), "{text}");

    assert_eq!(
        snapshot(&srv).await,
        before,
        "refused requests changed the store"
    );
    assert!(
        metric(&srv, "unbound").await >= unbound_before + 2 * attempts.len() as u64,
        "refusals counted by reason"
    );
    assert!(metric(&srv, "bad_signature").await >= 1);
    assert!(metric(&srv, "digest_mismatch").await >= 1);
    assert!(metric(&srv, "missing").await >= 1);

    // A's own certificate still works, through either source.
    let (s, text) = signed(&srv, "/mdm/server", body.clone(), &a).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let (s, text) = proxied(&srv, "/mdm/server", body, &a).await;
    assert_eq!(s, StatusCode::OK, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_cannot_act_for_the_first_in_memory() {
    second_device_cannot_act_for_the_first(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_cannot_act_for_the_first_durable() {
    second_device_cannot_act_for_the_first(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_enrollment_with_a_new_certificate_takes_over() {
    let srv = TestServer::start(Options {
        device_auth: true,
        sqlite: true,
        ..Options::default()
    })
    .await;
    let topic = srv.topic();
    let old = identity(&srv, device(1));
    enroll(&srv, &old).await;
    // The enrollment profile is re-installed: a new identity, a new Authenticate.
    let new = identity(&srv, device(1));
    assert_ne!(new.id.cert_der, old.id.cert_der);
    let (s, text) = signed(
        &srv,
        "/mdm/server",
        plists::to_xml(&plists::report_idle(&new.dev)),
        &new,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "not before its Authenticate: {text}"
    );
    enroll(&srv, &new).await;
    let bound = srv.device_json(&new.dev.udid).await["identity"].clone();
    assert_eq!(bound["sha256"], hex::encode(ring_sha256(&new.id.cert_der)));
    assert_eq!(
        bound["replaced_sha256"],
        hex::encode(ring_sha256(&old.id.cert_der)),
        "the re-enrollment is recorded: {bound}"
    );
    let report = plists::to_xml(&plists::report_idle(&new.dev));
    let (s, text) = signed(&srv, "/mdm/server", report.clone(), &old).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "the old certificate after: {text}"
    );
    let (s, text) = signed(
        &srv,
        "/mdm/checkin",
        plists::to_xml(&plists::token_update(&old.dev, &topic)),
        &old,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    let (s, text) = signed(&srv, "/mdm/server", report, &new).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    // Other devices enroll as before.
    let other = identity(&srv, device(3));
    enroll(&srv, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_another_ca_or_without_client_auth_are_refused() {
    let srv = TestServer::start(Options {
        device_auth: true,
        ..Options::default()
    })
    .await;
    let topic = srv.topic();
    let dev = device(1);
    let stranger_ca = magicpush_fixtures::Ca::new("stranger", KeyKind::EcdsaP256).unwrap();
    let id = device_identity_cert(&stranger_ca, &dev.udid, KeyKind::EcdsaP256).unwrap();
    let foreign = Signed {
        signer: DeviceSigner::new(&id.cert_der, &id.key_der).unwrap(),
        id,
        dev: dev.clone(),
    };
    let auth = plists::to_xml(&plists::authenticate(&dev, &topic));
    let (s, text) = signed(&srv, "/mdm/checkin", auth.clone(), &foreign).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("not issued by the device CA"), "{text}");
    let (s, text) = proxied(&srv, "/mdm/checkin", auth.clone(), &foreign).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    // Garbage in the headers: 403 with a reason, never 401, never a 5xx.
    for (name, value) in [
        ("mdm-signature", "bm90IGEgY21z"),
        ("mdm-signature", "%%%"),
        (CERT_HEADER, ":AAAA:"),
        (CERT_HEADER, "-----BEGIN%20CERTIFICATE-----"),
    ] {
        let header = (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        let (s, text) = put(&srv, "/mdm/checkin", auth.clone(), &[header]).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{name}: {value}: {text}");
    }
    // An oversized signature header is refused before it is looked at.
    let big = "A".repeat(magicpush_server::identity::MAX_SIGNATURE_HEADER + 1);
    let header = (
        HeaderName::from_static("mdm-signature"),
        HeaderValue::from_str(&big).unwrap(),
    );
    let (s, text) = put(&srv, "/mdm/checkin", auth, &[header]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("larger than"), "{text}");
    assert_eq!(metric(&srv, "oversized").await, 1);
    let devices = srv.admin.get_json("/v1/devices").await.unwrap();
    assert_eq!(devices.as_array().map(Vec::len), Some(0), "{devices}");
}

fn ring_sha256(der: &[u8]) -> [u8; 32] {
    magicpush_server::identity::trust::sha256(der)
}
