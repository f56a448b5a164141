//! The push certificate's life as the seed's manual walks it, against a running server: start
//! without a certificate, issue a request, register Apple's certificate alone, identify it,
//! keep its history, warn before expiry (with the webhook), and the new-topic procedure.

mod server_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_engine::cert::CertificateInfo;
use magicpush_fixtures::plists::Device;
use magicpush_fixtures::{push_cert_for_csr, Ca, KeyKind, MDM_TOPIC_PREFIX};
use magicpush_server::notify::{signature, Notifier, NotifyConfig, SIGNATURE_HEADER};
use magicpush_server::push::PushSender;
use magicpush_server::pushcert::expiry::Thresholds;
use magicpush_server::pushcert::request::{self, VendorIdentity, VendorRequest};
use magicpush_server::service::{PushCertSettings, PushCertState, Service, ServiceConfig};
use magicpush_store::MemoryStore;
use magicpush_testkit::FakePusher;
use server_common::{Options, TestServer};
use time::OffsetDateTime;

fn device(n: u32) -> Device {
    let mut d = Device::iphone();
    d.udid = format!("PUSHCERT-LIFE-{n:04}");
    d.token = vec![n as u8 + 1; 32];
    d
}

async fn put_cert(srv: &TestServer, body: impl Into<Bytes>) -> (StatusCode, serde_json::Value) {
    let (s, body) = srv
        .admin
        .request(
            Method::PUT,
            "/v1/pushcert",
            Some(("application/x-pem-file", body.into())),
        )
        .await
        .unwrap();
    (s, serde_json::from_slice(&body).unwrap_or_default())
}

async fn issue(srv: &TestServer) -> serde_json::Value {
    let (s, body) = srv
        .admin
        .request(
            Method::POST,
            "/v1/pushcert/csr",
            Some((
                "application/json",
                Bytes::from_static(br#"{"email": "it@example.co.jp", "common_name": "Example KK", "country": "JP"}"#),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Apple's answer to a request: a push certificate for its CSR, signed by the test CA.
fn apple_signs(srv: &TestServer, request_text: &str, uuid: &str, days: i64) -> String {
    let csr = request::read_csr(request_text.as_bytes()).unwrap();
    let now = OffsetDateTime::now_utc();
    push_cert_for_csr(
        &srv.pki.ca,
        &csr,
        uuid,
        now - time::Duration::days(1),
        now + time::Duration::days(days),
    )
    .unwrap()
}

fn uuid_of(topic: &str) -> &str {
    topic.strip_prefix(MDM_TOPIC_PREFIX).unwrap()
}

#[tokio::test]
async fn from_the_first_page_to_a_registered_certificate() {
    let srv = TestServer::start(Options {
        push_cert: false,
        ..Options::default()
    })
    .await;
    // No certificate: the server says so, check-ins are served, pushes are refused.
    let (s, body) = srv
        .admin
        .request(Method::GET, "/v1/pushcert", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("no push certificate registered"));
    let health = srv.anon.get_json("/healthz").await.unwrap();
    assert_eq!(health["push_certificate"], "missing", "{health}");
    srv.enroll(&device(1)).await;
    let (s, body) = srv
        .admin
        .request(
            Method::POST,
            "/v1/refresh",
            Some(("application/json", Bytes::from_static(br#"{"all": true}"#))),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&body).contains("no push certificate registered"));
    assert!(srv.pusher.sent().is_empty());
    // The device enrolled without a certificate took no topic from us; start clean.
    srv.admin
        .call(Method::DELETE, "/v1/devices/PUSHCERT-LIFE-0001", None)
        .await
        .unwrap();

    // CSR issue: the file, its name, the pending key kept in the store.
    let issued = issue(&srv).await;
    assert_eq!(issued["vendor_signed"], false);
    let name = issued["file_name"].as_str().unwrap();
    assert!(
        name.starts_with("PushCertificate_MAGICPUSH_")
            && name.ends_with(".csr")
            && name.len() == "PushCertificate_MAGICPUSH_202403131733.csr".len(),
        "{name}"
    );
    let text = issued["request"].as_str().unwrap();
    assert!(
        text.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{text}"
    );
    let (s, download) = srv
        .admin
        .request(Method::GET, "/v1/pushcert/csr", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&download), text);
    let pending = srv.store.pushcert_requests().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, issued["id"].as_str().unwrap());
    assert!(!pending[0].key_pkcs8.expose().is_empty());
    // A second request does not destroy the first.
    let second = issue(&srv).await;
    let requests = srv.admin.get_json("/v1/pushcert/requests").await.unwrap();
    assert_eq!(requests.as_array().unwrap().len(), 2, "{requests}");
    assert!(!requests.to_string().contains("PRIVATE KEY"));

    // A certificate for another key: 422, naming the waiting requests.
    let (s, err) = put_cert(&srv, srv.pki.push_renewal.cert_pem.clone()).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["error"].as_str().unwrap().contains(name), "{err}");
    // Not an MDM push certificate at all: 400, whatever is pending.
    let (s, err) = put_cert(&srv, magicpush_fixtures::read("certs/non-mdm.pem")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("not an MDM push certificate"),
        "{err}"
    );

    // Apple's certificate for the first request, uploaded alone (PEM): registered.
    let topic = srv.topic();
    let apple = apple_signs(&srv, text, uuid_of(&topic), 365);
    let (s, view) = put_cert(&srv, apple.clone()).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["topic"], topic.as_str());
    assert_eq!(view["apsp"], uuid_of(&topic));
    assert_eq!(view["environment"], "production");
    assert_eq!(view["state"], "valid");
    assert!(
        view["issuer"].as_str().unwrap().contains("magicpush"),
        "{view}"
    );
    assert!(view["not_before"].is_string() && view["serial"].is_string());
    assert_eq!(
        view["pending_requests"].as_array().unwrap().len(),
        1,
        "the used request is retired"
    );
    assert_eq!(srv.pusher.certificates_installed(), 1);
    assert_eq!(
        srv.anon.get_json("/healthz").await.unwrap()["push_certificate"],
        "valid"
    );
    let stored = srv.store.push_certs().await.unwrap();
    assert_eq!(stored.len(), 1, "kept with its key for restarts");
    assert_eq!(stored[0].topic, topic);
    let restored = magicpush_server::service::pushcert::from_stored(&stored[0]).unwrap();
    assert_eq!(restored.topic(), topic);

    // The renewal from the second request, uploaded as DER: same topic, registered; history.
    let renewal_pem = apple_signs(
        &srv,
        second["request"].as_str().unwrap(),
        uuid_of(&topic),
        400,
    );
    let renewal_info = CertificateInfo::from_pem(renewal_pem.as_bytes()).unwrap();
    let (s, view) = put_cert(&srv, renewal_info.der().to_vec()).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["serial"], renewal_info.serial());
    assert!(view["pending_requests"].as_array().unwrap().is_empty());
    let history = srv.admin.get_json("/v1/pushcert/history").await.unwrap();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0]["replaced_at"].is_string());
    assert!(history[1]["replaced_at"].is_null());
    assert_eq!(history[1]["serial"], renewal_info.serial());

    // E320 still holds for a request answered with another topic while devices are enrolled.
    srv.enroll(&device(2)).await;
    let third = issue(&srv).await;
    let other = apple_signs(
        &srv,
        third["request"].as_str().unwrap(),
        &uuid::Uuid::new_v4().to_string(),
        500,
    );
    let (s, err) = put_cert(&srv, other).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(srv.pusher.certificates_installed(), 2);
}

#[tokio::test]
async fn the_new_topic_procedure() {
    let srv = TestServer::start(Options::default()).await;
    let topic = srv.topic();
    srv.enroll(&device(1)).await;
    srv.enroll(&device(2)).await;
    // The Apple ID that is lost, as noted when the certificate was registered.
    let noted = srv
        .admin
        .send_json(
            Method::PUT,
            "/v1/pushcert/memo",
            &serde_json::json!({"apple_id": "lost@example.jp"}),
        )
        .await
        .unwrap();
    assert_eq!(noted["apple_id"], "lost@example.jp");
    let delete = |path: &'static str| srv.admin.request(Method::DELETE, path, None);
    // The certificate cannot go while devices are enrolled.
    let (s, body) = delete("/v1/pushcert").await.unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&body).contains("confirm="));
    // Deleting every device needs the current topic.
    let (s, _) = delete("/v1/devices?all=true").await.unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = delete("/v1/devices?all=true&confirm=com.apple.mgmt.External.wrong")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        srv.admin
            .get_json("/v1/devices")
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let path = format!("/v1/devices?all=true&confirm={topic}");
    let answer = srv.admin.call(Method::DELETE, &path, None).await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["deleted"], 2);
    assert!(srv
        .admin
        .get_json("/v1/devices")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .is_empty());
    // Now the certificate may go, and one with another topic registers.
    let (s, _) = delete("/v1/pushcert").await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert!(srv.store.push_certs().await.unwrap().is_empty());
    let (s, _) = srv
        .admin
        .request(Method::GET, "/v1/pushcert", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let bundle = format!(
        "{}{}",
        srv.pki.other_topic.cert_pem, srv.pki.other_topic.key_pem
    );
    let (s, view) = put_cert(&srv, bundle).await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_ne!(view["topic"], topic.as_str());
    // The lost Apple ID was the old topic's: the new certificate has no memo, and says so.
    assert!(view["apple_id"].is_null(), "{view}");
    assert!(
        view["warnings"].to_string().contains("no Apple ID memo"),
        "{view}"
    );
    let history = srv.admin.get_json("/v1/pushcert/history").await.unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    let stored = srv.store.push_certs().await.unwrap();
    assert_eq!(stored.len(), 1, "only the new topic's certificate is kept");
    assert_eq!(stored[0].topic, view["topic"].as_str().unwrap());
}

/// What the receiver got: each request's signature header and body.
type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A webhook receiver on 127.0.0.1: answers 500 to the first `fail_first` requests, then 200,
/// and keeps every (signature header, body) it got.
async fn receiver(fail_first: usize) -> (String, Received) {
    use http_body_util::BodyExt as _;
    let got: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/mdm", listener.local_addr().unwrap());
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/hooks/mdm");
                            let sig = req
                                .headers()
                                .get(SIGNATURE_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            let n = {
                                let mut g = seen.lock().unwrap();
                                g.push((sig, body));
                                g.len()
                            };
                            let status = if n <= fail_first { 500 } else { 200 };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (url, got)
}

#[tokio::test]
async fn expiry_thresholds_warn_once_each_with_a_signed_retried_webhook() {
    let (url, got) = receiver(1).await;
    let mut config = NotifyConfig::new(url, Some("hook-secret".into()));
    config.first_retry = Duration::from_millis(20);
    let notifier = Notifier::spawn(config).unwrap();
    let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
    let start = OffsetDateTime::now_utc();
    let cert = magicpush_fixtures::push_cert(
        &ca,
        "0A1B2C3D-0000-4000-8000-000000000001",
        start - time::Duration::days(300),
        start + time::Duration::days(65),
        KeyKind::EcdsaP256,
    )
    .unwrap();
    let info = CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap();
    let settings = PushCertSettings {
        thresholds: Thresholds::parse("60,30,7").unwrap(),
        ..PushCertSettings::default()
    };
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::new());
    let service = Service::new(
        store.clone(),
        FakePusher::new() as Arc<dyn PushSender>,
        PushCertState::with_settings(Some(info), settings, Some(notifier)),
        ServiceConfig::default(),
    );
    service.load_pushcert_state().await.unwrap();
    // The clock moves a day at a time past expiry: one event per threshold, then `expired`.
    let mut announced = Vec::new();
    for day in 0..70 {
        let now = start + time::Duration::days(day);
        for e in service.check_pushcert_expiry(now).await {
            announced.push((e.event, e.threshold_days));
        }
        let view = service.pushcert_at(None, now).unwrap();
        if view.days_left > 60 {
            assert_eq!(view.state.as_str(), "valid", "day {day}");
        } else if !view.expired {
            assert_eq!(view.state.as_str(), "expiring", "day {day}");
            assert!(
                view.warnings[0].contains("expires in"),
                "{:?}",
                view.warnings
            );
        } else {
            assert_eq!(view.state.as_str(), "expired", "day {day}");
        }
    }
    assert_eq!(
        announced,
        vec![
            ("pushcert.expiring".to_owned(), Some(60)),
            ("pushcert.expiring".to_owned(), Some(30)),
            ("pushcert.expiring".to_owned(), Some(7)),
            ("pushcert.expired".to_owned(), None),
        ]
    );
    // Stored: a restart on the same store does not announce them again.
    let again = PushCertState::with_settings(
        service
            .pushcert_at(None, start)
            .ok()
            .map(|_| CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap()),
        PushCertSettings {
            thresholds: Thresholds::parse("60,30,7").unwrap(),
            ..PushCertSettings::default()
        },
        None,
    );
    let restarted = Service::new(
        store,
        FakePusher::new() as Arc<dyn PushSender>,
        again,
        ServiceConfig::default(),
    );
    restarted.load_pushcert_state().await.unwrap();
    assert!(restarted
        .check_pushcert_expiry(start + time::Duration::days(69))
        .await
        .is_empty());
    assert_eq!(restarted.pushcert_events().len(), 4);

    // The webhook: 4 events, the first retried once after a 500; each signed over its body.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().len() < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 5, "4 events + 1 retry");
    assert_eq!(
        got[0].1, got[1].1,
        "the failed delivery is retried with the same body"
    );
    let mut events = Vec::new();
    for (sig, body) in &got[1..] {
        assert_eq!(
            sig.as_deref(),
            Some(signature(b"hook-secret", body).as_str())
        );
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        for key in ["event", "topic", "days_left", "not_after", "at"] {
            assert!(!v[key].is_null(), "{key} in {v}");
        }
        events.push(v["event"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        events,
        [
            "pushcert.expiring",
            "pushcert.expiring",
            "pushcert.expiring",
            "pushcert.expired"
        ]
    );
}

#[tokio::test]
async fn vendor_signed_requests_verify_and_carry_the_pending_key() {
    let vendor_ca = Ca::new("MDM Vendor: Example Soft", KeyKind::Rsa2048).unwrap();
    let vendor = VendorIdentity::from_pem(
        vendor_ca.cert_pem().as_bytes(),
        vendor_ca.key_pem().as_bytes(),
        None,
        Some("SoftBank"),
    )
    .unwrap();
    let pusher = FakePusher::new();
    let service = Service::new(
        Arc::new(MemoryStore::new()),
        pusher.clone() as Arc<dyn PushSender>,
        PushCertState::with_settings(
            None,
            PushCertSettings {
                vendor: Some(Arc::new(vendor)),
                csr_subject: request::Subject {
                    common_name: Some("Example KK".into()),
                    ..Default::default()
                },
                ..PushCertSettings::default()
            },
            None,
        ),
        ServiceConfig::default(),
    );
    let issued = service
        .issue_pushcert_request(request::Subject::default())
        .await
        .unwrap();
    assert!(issued.vendor_signed);
    assert!(
        issued.file_name.starts_with("PushCertificate_SOFTBANK_"),
        "{}",
        issued.file_name
    );
    let decoded = VendorRequest::decode(&issued.request).unwrap();
    decoded.verify().unwrap();
    assert!(request::csr_subject(&decoded.csr_der)
        .unwrap()
        .contains("Example KK"));
    // Apple signs the CSR inside; the certificate alone registers with the pending key.
    let ca = Ca::new("Apple test", KeyKind::EcdsaP256).unwrap();
    let now = OffsetDateTime::now_utc();
    let cert = push_cert_for_csr(
        &ca,
        &decoded.csr_der,
        "6F2B0E1A-1111-4222-8333-944455556666",
        now - time::Duration::days(1),
        now + time::Duration::days(365),
    )
    .unwrap();
    let view = service
        .replace_pushcert(None, cert.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        view.topic,
        "com.apple.mgmt.External.6F2B0E1A-1111-4222-8333-944455556666"
    );
    assert_eq!(pusher.certificates_installed(), 1);
}

#[tokio::test]
async fn a_certificate_apns_refuses_is_rejected_until_a_push_gets_through() {
    use magicpush_engine::{PushError, Reason};
    use magicpush_testkit::FakeOutcome;
    let srv = TestServer::start(Options::default()).await;
    let dev = device(7);
    srv.enroll(&dev).await;
    srv.pusher.set_outcome(
        &hex::encode(&dev.token),
        FakeOutcome::Fail(PushError::CertificateRejected {
            reason: Reason::new("BadCertificate").into(),
            detail: "403 BadCertificate".into(),
        }),
    );
    let refresh = || {
        srv.admin.request(
            Method::POST,
            "/v1/refresh",
            Some(("application/json", Bytes::from_static(br#"{"all": true}"#))),
        )
    };
    let (s, _) = refresh().await.unwrap();
    assert_eq!(s, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut view = serde_json::Value::Null;
    while tokio::time::Instant::now() < deadline {
        view = srv.admin.get_json("/v1/pushcert").await.unwrap();
        if view["state"] == "rejected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view["state"], "rejected", "{view}");
    assert!(
        view["warnings"].to_string().contains("BadCertificate"),
        "{view}"
    );
    assert_eq!(
        srv.anon.get_json("/healthz").await.unwrap()["push_certificate"],
        "rejected"
    );
    // A push that gets through clears it.
    srv.pusher.set_outcome(
        &hex::encode(&dev.token),
        FakeOutcome::Accept(Duration::ZERO),
    );
    let (s, _) = refresh().await.unwrap();
    assert_eq!(s, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        view = srv.admin.get_json("/v1/pushcert").await.unwrap();
        if view["state"] == "valid" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view["state"], "valid", "{view}");
}
