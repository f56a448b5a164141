//! `/scep` on the app, with the SCEP crate's fixture CA and scepclient's recorded PKCSReq
//! (challenge `good-1`): the operations, GET and POST, a challenge used once, what a request
//! that cannot be parsed gets (400, never 401 or 500), the challenge route.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use magicpush_scep::DeviceCa;
use magicpush_server::http::{AdminKey, App, DeviceAuth, DEFAULT_BODY_LIMIT};
use magicpush_server::service::{PushCertState, Service, ServiceConfig};
use magicpush_store::{MemoryStore, Store, StoredChallenge};
use magicpush_testkit::FakePusher;

const KEY: &str = "scep-test-key";

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scep/tests/data")
        .join(name)
}

fn fixture_ca() -> DeviceCa {
    let cert = std::fs::read_to_string(data("ca.pem")).unwrap();
    let key = std::fs::read_to_string(data("ca.key.pem")).unwrap();
    DeviceCa::from_pem(&cert, &key).unwrap()
}

fn app(store: Arc<dyn Store>, ca: bool) -> App {
    let mut service = Service::new(
        store,
        FakePusher::new(),
        PushCertState::new(None),
        ServiceConfig::default(),
    );
    if ca {
        service = service.with_device_ca(Arc::new(fixture_ca()));
    }
    App::new(
        Arc::new(service),
        AdminKey::new(Some(KEY)),
        DEFAULT_BODY_LIMIT,
        DeviceAuth::Off,
    )
}

async fn call(app: &App, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, String, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = app.handle(req).await;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, bytes)
}

async fn add_good_1(store: &dyn Store) {
    let now = time::OffsetDateTime::now_utc();
    store
        .add_challenge(&StoredChallenge {
            hash: magicpush_store::enrollment::challenge_hash("good-1"),
            enrollment_id: "enr-A".into(),
            invitation_id: None,
            created_at: now,
            expires_at: now + time::Duration::hours(1),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn scep_operations_and_a_challenge_used_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    add_good_1(&*store).await;
    let app = app(Arc::clone(&store), true);
    let (s, ctype, body) = call(&app, Method::GET, "/scep?operation=GetCACaps", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/plain"));
    assert_eq!(body, magicpush_scep::CA_CAPS.as_bytes());
    let (s, ctype, body) = call(&app, Method::GET, "/scep?operation=GetCACert", vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype, magicpush_scep::CA_CERT_CONTENT_TYPE);
    assert_eq!(body, fixture_ca().certificate_der());

    let request = std::fs::read(data("scepclient-pkcsreq.der")).unwrap();
    // GET, the message in the query with its '+' left as is.
    let b64 = base64::engine::general_purpose::STANDARD.encode(&request);
    let uri = format!(
        "/scep?operation=PKIOperation&message={}",
        b64.replace('/', "%2F")
    );
    let (s, ctype, first) = call(&app, Method::GET, &uri, vec![]).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&first));
    assert_eq!(ctype, magicpush_scep::PKI_MESSAGE_CONTENT_TYPE);
    // POST, the same request: the challenge is used up, a FAILURE CertRep (200, smaller).
    let (s, _, second) = call(&app, Method::POST, "/scep?operation=PKIOperation", request).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        second.len() < first.len(),
        "the second answer holds no certificate"
    );

    for (method, uri, body) in [
        (Method::GET, "/scep", vec![]),
        (Method::GET, "/scep?operation=Other", vec![]),
        (Method::GET, "/scep?operation=PKIOperation", vec![]),
        (
            Method::GET,
            "/scep?operation=PKIOperation&message=%%%",
            vec![],
        ),
        (
            Method::POST,
            "/scep?operation=PKIOperation",
            b"junk".to_vec(),
        ),
    ] {
        let (s, ctype, body) = call(&app, method, uri, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert!(ctype.starts_with("text/plain"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    }
    let (s, _, _) = call(
        &app,
        Method::POST,
        "/scep?operation=PKIOperation",
        vec![0x30; magicpush_scep::MAX_MESSAGE + 1],
    )
    .await;
    assert!(s.is_client_error(), "{s}");
}

#[tokio::test]
async fn the_challenge_route() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let app = app(Arc::clone(&store), true);
    let (s, _, body) = call(&app, Method::POST, "/v1/enrollments/challenge", vec![]).await;
    assert_eq!(s, StatusCode::CREATED);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let challenge = json["challenge"].as_str().unwrap();
    assert!(challenge.len() >= 32);
    assert!(json["enrollment_id"].as_str().unwrap().starts_with("enr-"));
    let hash = magicpush_store::enrollment::challenge_hash(challenge);
    let id = store
        .consume_challenge(&hash, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(id.as_deref(), json["enrollment_id"].as_str());

    let body = br#"{"enrollment_id": "laptop-42", "expires_in": "2h"}"#.to_vec();
    let (s, _, answer) = call(&app, Method::POST, "/v1/enrollments/challenge", body).await;
    assert_eq!(s, StatusCode::CREATED);
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(json["enrollment_id"], "laptop-42");
    for bad in [
        r#"{"enrollment_id": ""}"#,
        r#"{"enrollment_id": "a b"}"#,
        r#"{"expires_in": "1s"}"#,
        r#"{"expires_in": "90d"}"#,
        r#"{"other": 1}"#,
    ] {
        let (s, _, _) = call(
            &app,
            Method::POST,
            "/v1/enrollments/challenge",
            bad.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Without a built-in CA there is no /scep and no challenge.
    let bare = self::app(Arc::new(MemoryStore::new()), false);
    let (s, _, _) = call(&bare, Method::POST, "/v1/enrollments/challenge", vec![]).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _, _) = call(&bare, Method::GET, "/scep?operation=GetCACaps", vec![]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
