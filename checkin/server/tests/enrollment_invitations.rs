//! Enrollment invitations on the app: `POST/GET/DELETE /v1/enrollments` and the profile at
//! `GET /enroll/{id}` (signed, every URL under `--public-url`, a fresh challenge per fetch),
//! a one-use invitation admitting one device however often it is fetched, withdrawal, what
//! is refused without the settings enrollment needs, and the Authenticate tied to the
//! invitation its certificate came through.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use magicpush_engine::cert::CertificateInfo;
use magicpush_fixtures::{plists, push_cert, server_cert, Ca, KeyKind};
use magicpush_profile::ProfileSigner;
use magicpush_scep::DeviceCa;
use magicpush_server::http::{AdminKey, App, DeviceAuth, DEFAULT_BODY_LIMIT};
use magicpush_server::identity::DeviceIdentity;
use magicpush_server::profile::{EnrollmentProfiles, PublicUrl};
use magicpush_server::service::{Endpoint, PushCertState, Service, ServiceConfig, ServiceError};
use magicpush_store::MemoryStore;
use magicpush_testkit::FakePusher;
use plist::{Dictionary, Value};
use serde_json::{json, Value as Json};

const KEY: &str = "enrollment-test-key";
const PUBLIC: &str = "https://mdm.example.com";

fn device_ca() -> DeviceCa {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scep/tests/data");
    let cert = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let key = std::fs::read_to_string(dir.join("ca.key.pem")).unwrap();
    DeviceCa::from_pem(&cert, &key).unwrap()
}

fn tenant(uuid: &str) -> CertificateInfo {
    let ca = Ca::new("push test", KeyKind::EcdsaP256).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let cert = push_cert(&ca, uuid, now - day, now + 300 * day, KeyKind::EcdsaP256).unwrap();
    CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap()
}

struct Setup {
    tenants: Vec<CertificateInfo>,
    profiles: bool,
}

fn started(setup: Setup) -> (Arc<Service>, Ca) {
    let tls_ca = Ca::new("tls test", KeyKind::EcdsaP256).unwrap();
    let server = server_cert(&tls_ca, &["mdm.example.com"], KeyKind::EcdsaP256).unwrap();
    let signer = ProfileSigner::from_pem(&server.cert_pem, &server.key_pem).unwrap();
    let profiles = setup.profiles.then(|| {
        Arc::new(EnrollmentProfiles::new(
            PublicUrl::parse(PUBLIC).unwrap(),
            Some(signer),
            Some(tls_ca.cert_der().to_vec()),
        ))
    });
    let service = Service::new(
        Arc::new(MemoryStore::new()),
        FakePusher::new(),
        PushCertState::new(setup.tenants),
        ServiceConfig::default(),
    )
    .with_device_ca(Arc::new(device_ca()))
    .with_enrollment_profiles(profiles);
    (Arc::new(service), tls_ca)
}

fn app(service: &Arc<Service>) -> App {
    App::new(
        Arc::clone(service),
        AdminKey::new(Some(KEY)),
        DEFAULT_BODY_LIMIT,
        DeviceAuth::Off,
    )
}

async fn call(
    app: &App,
    method: Method,
    uri: &str,
    body: Option<Json>,
    admin: bool,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri);
    if admin {
        req = req.header("authorization", format!("Bearer {KEY}"));
    }
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let resp = app
        .handle(req.body(Full::new(Bytes::from(body))).unwrap())
        .await;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn json_of(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(bytes));
    })
}

/// The payload of type `kind` in a profile.
fn payload<'a>(profile: &'a Dictionary, kind: &str) -> &'a Dictionary {
    profile["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_dictionary)
        .find(|p| p["PayloadType"].as_string() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} payload"))
}

/// The profile at `url` (fetched without the admin key), its plist read from the signature.
async fn profile(app: &App, url: &str) -> Dictionary {
    let path = url.strip_prefix(PUBLIC).unwrap();
    let (status, headers, body) = call(app, Method::GET, path, None, false).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/x-apple-aspen-config");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        !body.starts_with(b"<?xml"),
        "the profile is signed, not a bare plist"
    );
    let content = magicpush_profile::content_of(&body).unwrap();
    plist::from_bytes(&content).unwrap()
}

fn challenge_of(profile: &Dictionary) -> String {
    let scep = payload(profile, "com.apple.security.scep")["PayloadContent"]
        .as_dictionary()
        .unwrap();
    scep["Challenge"].as_string().unwrap().to_owned()
}

#[tokio::test]
async fn an_invitation_hands_out_profiles_while_devices_may_enroll() {
    let t = tenant("1A2B3C4D-0000-4000-8000-00000000000A");
    let topic = t.topic().to_owned();
    let (service, tls_ca) = started(Setup {
        tenants: vec![t],
        profiles: true,
    });
    let app = app(&service);

    let (s, _, body) = call(
        &app,
        Method::POST,
        "/v1/enrollments",
        Some(json!({"note": "Sato's iPhone", "expires_in": "2h"})),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let created = json_of(&body);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 40, "160 bits, hex");
    assert_eq!(created["url"], format!("{PUBLIC}/enroll/{id}"));
    assert_eq!(created["uses_left"], 1);
    assert_eq!(created["topic"], topic.as_str());
    assert_eq!(created["state"], "open");
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));

    // The profile: every URL under the public address, the tenant's topic, the server CA.
    let url = created["url"].as_str().unwrap();
    let first = profile(&app, url).await;
    let mdm = payload(&first, "com.apple.mdm");
    assert_eq!(mdm["Topic"].as_string(), Some(topic.as_str()));
    assert_eq!(
        mdm["ServerURL"].as_string(),
        Some("https://mdm.example.com/mdm/server")
    );
    assert_eq!(
        mdm["CheckInURL"].as_string(),
        Some("https://mdm.example.com/mdm/checkin")
    );
    let scep = payload(&first, "com.apple.security.scep");
    assert_eq!(
        mdm["IdentityCertificateUUID"].as_string(),
        scep["PayloadUUID"].as_string()
    );
    let scep_content = scep["PayloadContent"].as_dictionary().unwrap();
    assert_eq!(
        scep_content["URL"].as_string(),
        Some("https://mdm.example.com/scep")
    );
    let root = payload(&first, "com.apple.security.root");
    assert_eq!(
        root["PayloadContent"].as_data(),
        Some(tls_ca.cert_der()),
        "--profile-include-server-ca puts the TLS CA in"
    );

    // Fetched again: a fresh challenge, while the one use is left.
    let second = profile(&app, url).await;
    let (c1, c2) = (challenge_of(&first), challenge_of(&second));
    assert_ne!(c1, c2);

    // One of them enrolls (as /scep would consume it): the other is refused, the URL is gone.
    let store = service.store();
    let hash = |c: &str| magicpush_store::enrollment::challenge_hash(c);
    assert_eq!(
        store
            .consume_challenge(&hash(&c2), time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .as_deref(),
        Some(id.as_str()),
        "the certificate carries the invitation's id"
    );
    assert_eq!(
        store
            .consume_challenge(&hash(&c1), time::OffsetDateTime::now_utc())
            .await
            .unwrap(),
        None,
        "a one-use invitation admits one device"
    );
    let (s, headers, body) = call(&app, Method::GET, &format!("/enroll/{id}"), None, false).await;
    assert_eq!(s, StatusCode::GONE);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(String::from_utf8_lossy(&body).contains("used up"));

    let (s, _, body) = call(&app, Method::GET, "/v1/enrollments", None, true).await;
    assert_eq!(s, StatusCode::OK);
    let listed = json_of(&body);
    let one = &listed["enrollments"][0];
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["state"], "used_up");
    assert_eq!(
        (one["enrolled"].as_u64(), one["uses_left"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(one["note"], "Sato's iPhone");

    let (s, _, body) = call(
        &app,
        Method::DELETE,
        &format!("/v1/enrollments/{id}"),
        None,
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_of(&body)["state"], "withdrawn");
    for path in [
        "/v1/enrollments/0000000000000000000000000000000000000000".to_owned(),
        "/v1/enrollments/not-an-id".to_owned(),
    ] {
        let (s, _, _) = call(&app, Method::DELETE, &path, None, true).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/enroll/0000000000000000000000000000000000000000",
        "/enroll/..%2F..%2Fetc",
        "/enroll/x",
    ] {
        let (s, _, _) = call(&app, Method::GET, path, None, false).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    // The admin routes need the key; the profile route does not.
    let (s, _, _) = call(&app, Method::GET, "/v1/enrollments", None, false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_withdrawn_invitation_refuses_its_outstanding_challenges() {
    let (service, _) = started(Setup {
        tenants: vec![tenant("1A2B3C4D-0000-4000-8000-00000000000B")],
        profiles: true,
    });
    let app = app(&service);
    let (_, _, body) = call(
        &app,
        Method::POST,
        "/v1/enrollments",
        Some(json!({"uses": 3})),
        true,
    )
    .await;
    let created = json_of(&body);
    let id = created["id"].as_str().unwrap();
    let fetched = profile(&app, created["url"].as_str().unwrap()).await;
    call(
        &app,
        Method::DELETE,
        &format!("/v1/enrollments/{id}"),
        None,
        true,
    )
    .await;
    let hash = magicpush_store::enrollment::challenge_hash(&challenge_of(&fetched));
    assert_eq!(
        service
            .store()
            .consume_challenge(&hash, time::OffsetDateTime::now_utc())
            .await
            .unwrap(),
        None
    );
    let (s, _, body) = call(&app, Method::GET, &format!("/enroll/{id}"), None, false).await;
    assert_eq!(s, StatusCode::GONE);
    assert!(String::from_utf8_lossy(&body).contains("withdrawn"));
}

#[tokio::test]
async fn bad_requests_and_missing_settings_are_explained() {
    let (service, _) = started(Setup {
        tenants: vec![
            tenant("1A2B3C4D-0000-4000-8000-00000000000C"),
            tenant("1A2B3C4D-0000-4000-8000-00000000000D"),
        ],
        profiles: true,
    });
    let app = app(&service);
    for (body, status, words) in [
        (json!({}), StatusCode::BAD_REQUEST, "tenants are registered"),
        (
            json!({"topic": "com.apple.mgmt.External.nope"}),
            StatusCode::NOT_FOUND,
            "no tenant",
        ),
        (
            json!({"topic": "com.apple.mgmt.External.1A2B3C4D-0000-4000-8000-00000000000C", "uses": 0}),
            StatusCode::BAD_REQUEST,
            "uses",
        ),
        (
            json!({"topic": "com.apple.mgmt.External.1A2B3C4D-0000-4000-8000-00000000000C", "expires_in": "31d"}),
            StatusCode::BAD_REQUEST,
            "expires_in",
        ),
        (
            json!({"topic": "com.apple.mgmt.External.1A2B3C4D-0000-4000-8000-00000000000C", "color": "red"}),
            StatusCode::BAD_REQUEST,
            "color",
        ),
    ] {
        let (s, _, answer) = call(
            &app,
            Method::POST,
            "/v1/enrollments",
            Some(body.clone()),
            true,
        )
        .await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(s, status, "{body}: {text}");
        assert!(text.contains(words), "{body}: {text}");
    }

    // An invitation whose tenant is removed afterwards hands out nothing (410).
    let d = "com.apple.mgmt.External.1A2B3C4D-0000-4000-8000-00000000000D";
    let (s, _, body) = call(
        &app,
        Method::POST,
        "/v1/enrollments",
        Some(json!({"topic": d})),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = json_of(&body)["id"].as_str().unwrap().to_owned();
    let (s, _, body) = call(
        &app,
        Method::DELETE,
        &format!("/v1/pushcert?topic={d}"),
        None,
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (s, _, body) = call(&app, Method::GET, &format!("/enroll/{id}"), None, false).await;
    assert_eq!(s, StatusCode::GONE);
    assert!(String::from_utf8_lossy(&body).contains("no longer served"));

    // Without --public-url, or without a push certificate: 409 naming what is missing.
    let (bare, _) = service_without_profiles();
    let bare = app_of(bare);
    let (s, _, answer) = call(&bare, Method::POST, "/v1/enrollments", None, true).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&answer).contains("--public-url"));
    let (s, _, _) = call(
        &bare,
        Method::GET,
        "/enroll/0000000000000000000000000000000000000000",
        None,
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (no_cert, _) = started(Setup {
        tenants: vec![],
        profiles: true,
    });
    let (s, _, answer) = call(
        &app_of(no_cert),
        Method::POST,
        "/v1/enrollments",
        None,
        true,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&answer).contains("push certificate"));
}

fn service_without_profiles() -> (Arc<Service>, Ca) {
    started(Setup {
        tenants: vec![tenant("1A2B3C4D-0000-4000-8000-00000000000E")],
        profiles: false,
    })
}

fn app_of(service: Arc<Service>) -> App {
    app(&service)
}

fn identity(enrollment_id: &str, n: u8) -> DeviceIdentity {
    DeviceIdentity {
        sha256: [n; 32],
        subject: format!("OU={enrollment_id}, CN=magicpush device"),
        serial: format!("{n:02X}"),
        not_before: time::OffsetDateTime::now_utc() - time::Duration::days(1),
        not_after: time::OffsetDateTime::now_utc() + time::Duration::days(300),
        enrollment_id: Some(enrollment_id.to_owned()),
    }
}

#[tokio::test]
async fn the_authenticate_is_tied_to_its_invitation() {
    let (a, b) = (
        tenant("1A2B3C4D-0000-4000-8000-0000000000A1"),
        tenant("1A2B3C4D-0000-4000-8000-0000000000B2"),
    );
    let (topic_a, topic_b) = (a.topic().to_owned(), b.topic().to_owned());
    let (service, _) = started(Setup {
        tenants: vec![a, b],
        profiles: true,
    });
    let app = app(&service);
    let (_, _, body) = call(
        &app,
        Method::POST,
        "/v1/enrollments",
        Some(json!({"topic": topic_a, "uses": 5})),
        true,
    )
    .await;
    let id = json_of(&body)["id"].as_str().unwrap().to_owned();

    // A certificate from tenant A's invitation cannot enroll into tenant B.
    let mut dev = plists::Device::iphone();
    dev.udid = "INVITED-1".into();
    let into_b = plists::to_xml(&plists::authenticate(&dev, &topic_b));
    let refused = service
        .device_request(Endpoint::Checkin, &into_b, Some(&identity(&id, 1)))
        .await
        .unwrap_err();
    match &refused {
        ServiceError::Identity { refusal, .. } => {
            assert_eq!(refusal.reason(), "other_tenant");
            assert!(refusal.to_string().contains(&topic_a), "{refusal}");
        }
        other => panic!("{other:?}"),
    }
    assert!(service.store().device("INVITED-1").await.unwrap().is_none());

    // Into A: enrolled, and listed with the invitation.
    let into_a = plists::to_xml(&plists::authenticate(&dev, &topic_a));
    service
        .device_request(Endpoint::Checkin, &into_a, Some(&identity(&id, 1)))
        .await
        .unwrap();
    // A certificate from no invitation (or an outside CA) is not recorded anywhere.
    let mut other = plists::Device::iphone();
    other.udid = "UNINVITED-1".into();
    service
        .device_request(
            Endpoint::Checkin,
            &plists::to_xml(&plists::authenticate(&other, &topic_a)),
            Some(&identity("enr-manual", 2)),
        )
        .await
        .unwrap();
    let (_, _, body) = call(&app, Method::GET, "/v1/enrollments", None, true).await;
    let listed = json_of(&body);
    let devices = listed["enrollments"][0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["udid"], "INVITED-1");

    // The device list shows the invitation that enrolled each device.
    let (_, _, body) = call(&app, Method::GET, "/v1/devices/INVITED-1", None, true).await;
    assert_eq!(json_of(&body)["invitation"], id.as_str());
    let (_, _, body) = call(&app, Method::GET, "/v1/devices?limit=10", None, true).await;
    let page = json_of(&body);
    let rows = page["devices"].as_array().unwrap();
    let invited = rows.iter().find(|d| d["udid"] == "INVITED-1").unwrap();
    assert_eq!(invited["invitation"], id.as_str());
    let uninvited = rows.iter().find(|d| d["udid"] == "UNINVITED-1").unwrap();
    assert!(uninvited["invitation"].is_null());
}
