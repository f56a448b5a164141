//! The HTTP server on 127.0.0.1 with a MemoryStore and a FakePusher: routing, device
//! endpoints, error statuses, admin authentication, CSV, refresh and the push certificate API.

mod server_common;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_engine::{PushError, Reason};
use magicpush_fixtures::plists;
use magicpush_testkit::FakeOutcome;
use plist::{Dictionary, Value};
use server_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn public_endpoints_and_routing() {
    let mut srv = TestServer::start(Options::default()).await;
    let (s, body) = srv
        .anon
        .request(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["device_auth"], "off", "{health}");
    // Produce at least one metric, then scrape.
    srv.put(
        "/mdm/checkin",
        &plists::authenticate(&device(1), &srv.topic()),
    )
    .await;
    let (s, body) = srv
        .anon
        .request(Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    // The handles are taken once for every label; the Authenticate one must have counted.
    let authenticates = text
        .lines()
        .find_map(|l| l.strip_prefix("magicpush_checkins_total{message_type=\"Authenticate\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(authenticates.is_some_and(|n| n >= 1.0), "{text}");
    let (s, _) = srv.anon.request(Method::GET, "/nope", None).await.unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = srv
        .anon
        .request(Method::GET, "/mdm/checkin", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = srv
        .admin
        .request(Method::DELETE, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "every device needs ?all=true&confirm=TOPIC"
    );
    srv.shutdown().await;
    assert!(
        srv.anon
            .request(Method::GET, "/healthz", None)
            .await
            .is_err(),
        "server stopped"
    );
}

#[tokio::test]
async fn admin_api_requires_the_key_and_is_off_without_one() {
    let srv = TestServer::start(Options::default()).await;
    let (s, body) = srv
        .anon
        .request(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body:?}");
    let wrong =
        magicpush_server::client::AdminClient::new(&srv.url, Some("wrong".into()), None).unwrap();
    let (s, _) = wrong
        .request(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, body) = srv
        .admin
        .request(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&body[..], b"[]");

    let off = TestServer::start(Options {
        api_key: None,
        ..Options::default()
    })
    .await;
    let keyed =
        magicpush_server::client::AdminClient::new(&off.url, Some(API_KEY.into()), None).unwrap();
    let (s, body) = keyed
        .request(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("admin API disabled"));
    // Devices and health still work.
    let (s, _) = off
        .anon
        .request(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let (s, _) = off
        .put(
            "/mdm/checkin",
            &plists::authenticate(&device(1), &off.topic()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn device_errors_are_4xx_with_a_reason_and_never_401() {
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    let topic = srv.topic();
    let with = |mut d: Dictionary, k: &str, v: Value| {
        d.insert(k.into(), v);
        d
    };
    let without = |mut d: Dictionary, k: &str| {
        d.remove(k);
        d
    };
    let auth = plists::authenticate(&dev, &topic);
    let xml = plists::to_xml(&auth);
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "empty",
            "/mdm/checkin",
            vec![],
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "garbage",
            "/mdm/checkin",
            b"hello there".to_vec(),
            StatusCode::BAD_REQUEST,
            "plist",
        ),
        (
            "truncated",
            "/mdm/checkin",
            xml[..xml.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
            "plist",
        ),
        (
            "array",
            "/mdm",
            xml_of(Value::Array(vec![])),
            StatusCode::BAD_REQUEST,
            "dictionary",
        ),
        (
            "unknown type",
            "/mdm/checkin",
            plists::to_xml(&with(auth.clone(), "MessageType", "Bogus".into())),
            StatusCode::BAD_REQUEST,
            "Bogus",
        ),
        (
            "wrong type",
            "/mdm/checkin",
            plists::to_xml(&with(auth.clone(), "UDID", Value::Integer(5.into()))),
            StatusCode::BAD_REQUEST,
            "UDID",
        ),
        (
            "missing udid",
            "/mdm/checkin",
            plists::to_xml(&without(auth.clone(), "UDID")),
            StatusCode::BAD_REQUEST,
            "UDID",
        ),
        (
            "report to checkin",
            "/mdm/checkin",
            plists::to_xml(&plists::report_idle(&dev)),
            StatusCode::BAD_REQUEST,
            "expected",
        ),
        (
            "checkin to server",
            "/mdm/server",
            xml.clone(),
            StatusCode::BAD_REQUEST,
            "expected",
        ),
        (
            "unknown status",
            "/mdm/server",
            plists::to_xml(&with(plists::report_idle(&dev), "Status", "Maybe".into())),
            StatusCode::BAD_REQUEST,
            "Maybe",
        ),
        (
            "report from unknown device",
            "/mdm/server",
            plists::to_xml(&plists::report_idle(&device(9))),
            StatusCode::BAD_REQUEST,
            "unknown device",
        ),
        (
            "UserAuthenticate",
            "/mdm/checkin",
            plists::to_xml(&with(
                auth.clone(),
                "MessageType",
                "UserAuthenticate".into(),
            )),
            StatusCode::GONE,
            "not supported",
        ),
        (
            "DeclarativeManagement",
            "/mdm",
            plists::to_xml(&with(
                auth.clone(),
                "MessageType",
                "DeclarativeManagement".into(),
            )),
            StatusCode::BAD_REQUEST,
            "not supported",
        ),
    ];
    for (name, path, body, want, needle) in cases {
        let (status, text) = srv.put_raw(path, body).await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, want, "{name}: {text}");
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(text.contains(needle), "{name}: {text:?} lacks {needle:?}");
    }
    // The server is still fine.
    let (s, _) = srv.put("/mdm/checkin", &auth).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_chunked() {
    let srv = TestServer::start(Options {
        body_limit: 4096,
        ..Options::default()
    })
    .await;
    let (s, _) = srv.put_raw("/mdm/checkin", vec![b' '; 5000]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked, no Content-Length: the limit applies while reading.
    let addr = srv.handle.as_ref().unwrap().local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = b"PUT /mdm HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        req.extend_from_slice(b"400\r\n");
        req.extend(std::iter::repeat_n(b'a', 0x400));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    tcp.write_all(&req).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Just under the limit is fine (and then a 400 for not being a plist).
    let (s, _) = srv.put_raw("/mdm/checkin", vec![b'x'; 4000]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn enrollment_checkout_and_bootstrap_token() {
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    let topic = srv.topic();
    // Binary plists are accepted like XML ones.
    let mut binary = Vec::new();
    Value::Dictionary(plists::authenticate(&dev, &topic))
        .to_writer_binary(&mut binary)
        .unwrap();
    let (s, body) = srv.put_raw("/mdm", binary).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 0));
    assert_eq!(srv.state(&dev.udid).await, "no_token");
    assert_eq!(srv.device_json(&dev.udid).await["model_name"], "iPhone");
    let (s, _) = srv
        .put("/mdm/checkin", &plists::token_update(&dev, &topic))
        .await;
    assert_eq!(s, StatusCode::OK);
    let json = srv.device_json(&dev.udid).await;
    assert_eq!(json["state"], "never_pushed");
    assert_eq!(json["udid"], dev.udid.as_str());
    assert_eq!(json["serial_number"], dev.serial_number.as_str());
    assert_eq!(json["token"], token_hex(&dev).as_str());
    assert!(json["enrolled_at"].is_string());
    assert!(json.get("unlock_token").is_none() && json.get("push_magic").is_none());

    let (s, _) = srv
        .put("/mdm/checkin", &plists::set_bootstrap_token(&dev, &topic))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = srv
        .put("/mdm/checkin", &plists::get_bootstrap_token(&dev, &topic))
        .await;
    assert_eq!(s, StatusCode::OK);
    let answer: Dictionary = plist::from_bytes(&body).unwrap();
    assert!(answer
        .get("BootstrapToken")
        .and_then(|v| v.as_data())
        .is_some());

    // The user channel does not replace the device token.
    let (s, _) = srv
        .put("/mdm/checkin", &plists::token_update_user(&dev, &topic))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        srv.device_json(&dev.udid).await["token"],
        token_hex(&dev).as_str()
    );

    let (s, _) = srv.put("/mdm", &plists::checkout(&dev, &topic)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(srv.state(&dev.udid).await, "unregistered");
    // A CheckOut from a device never seen is still a 200.
    let (s, _) = srv
        .put("/mdm/checkin", &plists::checkout(&device(7), &topic))
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _) = srv
        .admin
        .request(Method::GET, "/v1/devices/not-a-device", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn refresh_all_pushes_and_devices_answer() {
    let srv = TestServer::start(Options::default()).await;
    let topic = srv.topic();
    let ok1 = device(1);
    let ok2 = device(2);
    let gone = device(3);
    let no_token = device(4);
    for d in [&ok1, &ok2, &gone] {
        srv.enroll(d).await;
    }
    srv.put("/mdm/checkin", &plists::authenticate(&no_token, &topic))
        .await;
    srv.pusher.set_outcome(
        &token_hex(&gone),
        FakeOutcome::Fail(PushError::Unregistered {
            reason: Reason::Unregistered,
            timestamp_ms: Some(1),
        }),
    );

    let summary = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    assert_eq!(summary["pushing"], 3, "{summary}");
    assert_eq!(summary["enqueued"], 3, "{summary}");
    assert_eq!(summary["skipped"]["no_token"], 1, "{summary}");

    srv.wait_state(&gone.udid, "unregistered", WAIT).await;
    assert_eq!(srv.state(&ok1.udid).await, "pending");
    let sent: Vec<String> = srv
        .pusher
        .sent()
        .iter()
        .map(|p| p.token.as_hex().to_owned())
        .collect();
    assert_eq!(sent.len(), 3);
    assert!(sent.contains(&token_hex(&ok1)));
    assert!(srv.pusher.sent().iter().any(|p| p.magic == ok1.push_magic));

    // A second refresh before anyone answered does not queue a second DeviceInformation.
    let again = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"udids": [ok1.udid, no_token.udid, "nope"]}),
        )
        .await
        .unwrap();
    assert_eq!(again["pushing"], 1, "{again}");
    assert_eq!(again["already_queued"], 1, "{again}");
    assert_eq!(again["enqueued"], 0, "{again}");
    assert_eq!(again["skipped"]["unknown"], 1, "{again}");
    assert_eq!(again["skipped"]["no_token"], 1, "{again}");

    for d in [&ok1, &ok2] {
        let (s, body) = srv.put("/mdm/server", &plists::report_idle(d)).await;
        assert_eq!(s, StatusCode::OK);
        let (uuid, request_type) = command_of(&body);
        assert_eq!(request_type, "DeviceInformation");
        let mut answer = plists::report_device_information(d, &uuid);
        if let Some(Value::Dictionary(q)) = answer.get_mut("QueryResponses") {
            q.insert("OSVersion".into(), "18.6".into());
        }
        let (s, body) = srv.put("/mdm/server", &answer).await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.is_empty(), "nothing else queued");
        assert_eq!(srv.state(&d.udid).await, "responded");
    }
    let json = srv.device_json(&ok1.udid).await;
    assert_eq!(json["os_version"], "18.6");
    assert!(json["info_collected_at"].is_string());
    assert!(json["push_latency_ms"].is_u64());

    let report = srv.admin.get_json("/v1/connectivity").await.unwrap();
    assert_eq!(report["states"]["responded"], 2, "{report}");
    assert_eq!(report["states"]["unregistered"], 1, "{report}");
    assert_eq!(report["states"]["no_token"], 1, "{report}");
    assert_eq!(report["states"]["pending"], 0, "{report}");
    assert!(report["latency_ms"]["p50"].is_u64(), "{report}");
    assert!(report["latency_ms"].get("p99").is_some(), "{report}");

    let devices = srv.admin.get_json("/v1/devices").await.unwrap();
    let list = devices.as_array().unwrap();
    assert_eq!(list.len(), 4);
    let gone_only = srv
        .admin
        .get_json("/v1/devices?state=unregistered")
        .await
        .unwrap();
    assert_eq!(gone_only.as_array().unwrap().len(), 1, "{gone_only}");
    assert_eq!(gone_only[0]["udid"], gone.udid.as_str());
    let responded_csv = srv
        .admin
        .get_text("/v1/devices.csv?state=responded")
        .await
        .unwrap();
    assert_eq!(responded_csv.matches("\r\n").count(), 3, "{responded_csv}");
    let (s, _) = srv
        .admin
        .request(Method::GET, "/v1/devices?state=bogus", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(list
        .iter()
        .all(|d| d["udid"].is_string() && d["state"].is_string()));

    let csv = srv.admin.get_text("/v1/devices.csv").await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "UDID,Device name,Model,OS version,Serial number,Collected at,Enrolled at,State,Last seen"
    );
    assert_eq!(lines.len(), 5);
    let row = lines
        .iter()
        .find(|l| l.contains(",Device 1,"))
        .expect("row of device 1");
    let cols: Vec<&str> = row.split(',').collect();
    assert_eq!(cols[0], ok1.udid);
    assert_eq!(cols[2], "iPhone");
    assert_eq!(cols[3], "18.6");
    assert_eq!(cols[4], ok1.serial_number);
    assert!(!cols[5].is_empty() && !cols[6].is_empty() && !cols[8].is_empty());
    assert_eq!(cols[7], "responded");
    assert!(lines
        .iter()
        .any(|l| l.contains(",Device 3,") && l.contains(",unregistered,")));
}

#[tokio::test]
async fn a_silent_device_goes_from_pending_to_unreachable() {
    let srv = TestServer::start(Options {
        unreachable_after: Duration::from_millis(1000),
        ..Options::default()
    })
    .await;
    let dev = device(1);
    srv.enroll(&dev).await;
    srv.admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"udids": [dev.udid]}),
        )
        .await
        .unwrap();
    assert_eq!(srv.state(&dev.udid).await, "pending");
    srv.wait_state(&dev.udid, "unreachable", WAIT).await;
    // It answers late: responded.
    let (s, _) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(srv.state(&dev.udid).await, "responded");
}

#[tokio::test]
async fn commands_are_queued_sent_and_not_now_keeps_them() {
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    srv.enroll(&dev).await;
    let answer = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid, "unknown-udid"], "request_type": "InstalledApplicationList", "params": {"ManagedAppsOnly": true}}),
        )
        .await
        .unwrap();
    let uuid = answer["command_uuid"].as_str().unwrap().to_owned();
    assert_eq!(answer["queued"], serde_json::json!([dev.udid]));
    assert_eq!(answer["unknown"], serde_json::json!(["unknown-udid"]));
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    assert_eq!(
        command_of(&body),
        (uuid.clone(), "InstalledApplicationList".into())
    );
    let cmd: Dictionary = plist::from_bytes(&body).unwrap();
    let inner = cmd.get("Command").and_then(|c| c.as_dictionary()).unwrap();
    assert_eq!(
        inner.get("ManagedAppsOnly").and_then(|v| v.as_boolean()),
        Some(true)
    );
    // NotNow: kept, not re-sent in the same session; offered again after the next Idle.
    let (s, body) = srv
        .put("/mdm/server", &plists::report_not_now(&dev, &uuid))
        .await;
    assert_eq!((s, body.len()), (StatusCode::OK, 0));
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    assert_eq!(command_of(&body).0, uuid);
    let (_, body) = srv
        .put("/mdm/server", &plists::report_error(&dev, &uuid))
        .await;
    assert!(body.is_empty());
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    assert!(body.is_empty(), "the errored command left the queue");
    let history = srv
        .admin
        .get_json(&format!("/v1/devices/{}/commands", dev.udid))
        .await
        .unwrap();
    assert_eq!(history["queued"], serde_json::json!([]), "{history}");
    let results = history["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{history}");
    assert_eq!(results[0]["status"], "NotNow");
    assert_eq!(results[1]["status"], "Error");
    assert_eq!(results[1]["request_type"], "InstalledApplicationList");
    assert_eq!(results[1]["error_chain"][0]["code"], 12021);
    assert!(results[1]["raw"]
        .as_str()
        .unwrap()
        .contains("MCMDMErrorDomain"));
    let (s, _) = srv
        .admin
        .request(Method::GET, "/v1/devices/nope/commands", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);

    for bad in [
        serde_json::json!({"udids": [], "request_type": "X"}),
        serde_json::json!({"udids": ["a"], "request_type": ""}),
        serde_json::json!({"udids": ["a"], "request_type": "X", "params": [1]}),
        serde_json::json!({"udids": ["a"], "request_type": "X", "bogus": 1}),
    ] {
        let body = Bytes::from(serde_json::to_vec(&bad).unwrap());
        let (s, _) = srv
            .admin
            .request(
                Method::POST,
                "/v1/commands",
                Some(("application/json", body)),
            )
            .await
            .unwrap();
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    for bad in [
        "{}",
        "{\"all\": true, \"udids\": [\"a\"]}",
        "{\"udids\": []}",
        "not json",
    ] {
        let (s, _) = srv
            .admin
            .request(
                Method::POST,
                "/v1/refresh",
                Some(("application/json", Bytes::from(bad))),
            )
            .await
            .unwrap();
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn push_certificate_details_memo_and_replacement() {
    let srv = TestServer::start(Options::default()).await;
    let cert = srv.admin.get_json("/v1/pushcert").await.unwrap();
    assert_eq!(cert["topic"], srv.topic().as_str());
    assert!(cert["subject"].as_str().unwrap().contains("APSP:"));
    assert!(cert["days_left"].as_i64().unwrap() > 300);
    assert!(cert["serial"].is_string() && cert["not_after"].is_string());
    assert!(cert["apple_id"].is_null());

    let memo = srv
        .admin
        .send_json(
            Method::PUT,
            "/v1/pushcert/memo",
            &serde_json::json!({"apple_id": "mdm-admin@example.jp"}),
        )
        .await
        .unwrap();
    assert_eq!(memo["apple_id"], "mdm-admin@example.jp");
    assert_eq!(
        srv.admin.get_json("/v1/pushcert").await.unwrap()["apple_id"],
        "mdm-admin@example.jp"
    );
    assert_eq!(
        srv.store
            .pushcert_memo(&srv.topic())
            .await
            .unwrap()
            .as_deref(),
        Some("mdm-admin@example.jp"),
        "kept in the store, under the certificate's topic"
    );

    let bundle =
        |ck: &magicpush_fixtures::CertKey| Bytes::from(format!("{}{}", ck.cert_pem, ck.key_pem));
    let put = |body: Bytes| {
        srv.admin.request(
            Method::PUT,
            "/v1/pushcert",
            Some(("application/x-pem-file", body)),
        )
    };

    // Another topic while a device is enrolled: E320, 409.
    srv.enroll(&device(1)).await;
    let (s, body) = put(bundle(&srv.pki.other_topic)).await.unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    assert!(
        text.contains("E320") || text.contains("Bundle Identifier") || text.contains("topic"),
        "{text}"
    );
    // The two topics as keys of their own, for a program (the console) to show.
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "E320", "{json}");
    assert_eq!(json["registered_topic"], srv.pki.topic.as_str(), "{json}");
    assert_eq!(
        json["new_topic"],
        srv.pki.other_topic_name.as_str(),
        "{json}"
    );
    // Expired, garbage, key of another certificate: 400.
    let (s, _) = put(bundle(&srv.pki.expired)).await.unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = put(Bytes::from_static(b"not a certificate")).await.unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mismatched = Bytes::from(format!(
        "{}{}",
        srv.pki.push_renewal.cert_pem, srv.pki.other_topic.key_pem
    ));
    let (s, _) = put(mismatched).await.unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(srv.pusher.certificates_installed(), 0);

    // The renewal: hot-swapped, saved for restarts.
    let (s, body) = put(bundle(&srv.pki.push_renewal)).await.unwrap();
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(srv.pusher.certificates_installed(), 1);
    let now = srv.admin.get_json("/v1/pushcert").await.unwrap();
    assert!(now["days_left"].as_i64().unwrap() > 600, "{now}");
    assert_eq!(now["apple_id"], "mdm-admin@example.jp");
    let stored = srv.store.push_certs().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(stored[0]
        .chain_pem
        .contains(srv.pki.push_renewal.cert_pem.trim()));
}

#[tokio::test]
async fn a_check_in_with_a_topic_the_server_has_no_certificate_for_is_a_403() {
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    let foreign = srv.pki.other_topic_name.clone();
    for message in [
        plists::authenticate(&dev, &foreign),
        plists::token_update(&dev, &foreign),
    ] {
        let (s, body) = srv.put("/mdm/checkin", &message).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
        assert!(
            text.contains(&foreign) && text.contains(&srv.topic()),
            "{text}"
        );
    }
    assert!(
        srv.store.device(&dev.udid).await.unwrap().is_none(),
        "nothing written"
    );
    // The server's own topic is served.
    srv.enroll(&dev).await;
    assert_eq!(srv.state(&dev.udid).await, "never_pushed");

    // With no certificate registered yet, every topic is served (the first registration is
    // then guarded against the enrolled topics).
    let bare = TestServer::start(Options {
        push_cert: false,
        ..Options::default()
    })
    .await;
    let (s, _) = bare
        .put("/mdm/checkin", &plists::authenticate(&dev, &foreign))
        .await;
    assert_eq!(s, StatusCode::OK);
}

/// A renewal never becomes another tenant: a certificate with another topic is refused
/// (E320) even while no device is enrolled, and the refusal says how to add a tenant.
#[tokio::test]
async fn a_renewal_with_another_topic_is_refused_even_without_devices() {
    let srv = TestServer::start(Options::default()).await;
    let body = Bytes::from(format!(
        "{}{}",
        srv.pki.other_topic.cert_pem, srv.pki.other_topic.key_pem
    ));
    let (s, body) = srv
        .admin
        .request(
            Method::PUT,
            "/v1/pushcert",
            Some(("application/x-pem-file", body)),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    assert!(
        text.contains("E320") && text.contains("POST /v1/topics"),
        "{text}"
    );
    assert!(text.contains(&srv.pki.other_topic_name), "{text}");
    assert_eq!(srv.pusher.certificates_installed(), 0);
}

/// A PKCS#12 file adds a tenant (`POST /v1/topics`) with its password.
#[tokio::test]
async fn a_pkcs12_upload_is_registered_with_its_password() {
    let srv = TestServer::start(Options::default()).await;
    let p12 = Bytes::from(magicpush_fixtures::read("certs/push.p12"));
    let put = |password: Option<&'static str>| {
        let headers: Vec<_> = password
            .map(|p| {
                (
                    http::HeaderName::from_static("x-magicpush-p12-password"),
                    http::HeaderValue::from_static(p),
                )
            })
            .into_iter()
            .collect();
        let body = p12.clone();
        let admin = &srv.admin;
        async move {
            admin
                .request_with(
                    Method::POST,
                    "/v1/topics",
                    Some(("application/x-pkcs12", body)),
                    &headers,
                )
                .await
                .unwrap()
        }
    };
    let (s, body) = put(None).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("X-Magicpush-P12-Password"), "{text}");
    let (s, body) = put(Some("wrong")).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("wrong PKCS#12 password"), "{text}");
    assert_eq!(srv.pusher.certificates_installed(), 0);

    let (s, body) = put(Some(magicpush_fixtures::generate::P12_PASSWORD)).await;
    let view: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s, StatusCode::CREATED, "{view}");
    let topic = format!(
        "com.apple.mgmt.External.{}",
        magicpush_fixtures::generate::PUSH_UUID
    );
    assert_eq!(view["topic"], topic.as_str());
    assert_eq!(srv.pusher.certificates_installed(), 1);
}

#[tokio::test]
async fn a_request_without_subject_names_the_defaults_flags() {
    let srv = TestServer::start(Options::default()).await;
    let (s, body) = srv
        .admin
        .request(Method::POST, "/v1/pushcert/csr", None)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("--csr-cn") && text.contains("--csr-email"),
        "{text}"
    );
}

#[tokio::test]
async fn tls_serves_devices_and_admin() {
    let srv = TestServer::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    assert!(srv.url.starts_with("https://"));
    let (s, _) = srv
        .anon
        .request(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    srv.enroll(&device(1)).await;
    let devices = srv.admin.get_json("/v1/devices").await.unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 1);
}

/// A client given the wrong scheme says so, and which URL to use, instead of a parse error.
#[tokio::test]
async fn a_client_with_the_wrong_scheme_is_told_the_right_one() {
    use magicpush_server::client::{AdminClient, ClientError};
    let tls = TestServer::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let authority = tls.url.strip_prefix("https://").unwrap().to_owned();
    let plain_url = format!("http://{authority}");
    let client = AdminClient::new(&plain_url, Some(API_KEY.into()), None)
        .unwrap()
        .with_timeout(WAIT);
    let err = client.get_json("/v1/devices").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::ServerSpeaksTls { https, .. } if *https == tls.url),
        "{err:?}"
    );
    let words = err.to_string();
    assert!(
        words.contains(&format!("the server at {plain_url} answered with TLS"))
            && words.contains(&format!("use {}", tls.url))
            && words.contains("--ca"),
        "{words}"
    );
    assert!(!words.contains("invalid HTTP version"), "{words}");

    let plain = TestServer::start(Options::default()).await;
    let authority = plain.url.strip_prefix("http://").unwrap().to_owned();
    let tls_url = format!("https://{authority}");
    let client = AdminClient::new(&tls_url, Some(API_KEY.into()), None)
        .unwrap()
        .with_timeout(WAIT);
    let err = client.get_json("/v1/devices").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::ServerSpeaksPlainHttp { http, .. } if *http == plain.url),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!(
            "the server at {tls_url} does not speak TLS (it answered in plain HTTP): use {}",
            plain.url
        )),
        "{err}"
    );
    // Right schemes still work.
    assert!(tls.admin.get_json("/v1/devices").await.is_ok());
    assert!(plain.admin.get_json("/v1/devices").await.is_ok());
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    use http_body_util::{BodyExt, Full};
    let srv = TestServer::start(Options::default()).await;
    let addr = srv.handle.as_ref().unwrap().local_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let xml = plists::to_xml(&plists::authenticate(&device(1), &srv.topic()));
    let req = http::Request::put(format!("http://{addr}/mdm/checkin"))
        .body(Full::new(Bytes::from(xml)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let _ = resp.into_body().collect().await.unwrap();
}

fn xml_of(value: Value) -> Vec<u8> {
    let mut out = Vec::new();
    value.to_writer_xml(&mut out).unwrap();
    out
}

#[tokio::test]
async fn scheduled_collection_refreshes_all_devices_periodically() {
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    srv.enroll(&dev).await;
    let collector = srv.service.spawn_collector(Duration::from_millis(300));
    // Nothing at start: the first run is one period later.
    assert!(srv.pusher.sent().is_empty());
    let until = std::time::Instant::now() + WAIT;
    while srv.pusher.sent().len() < 2 {
        assert!(
            std::time::Instant::now() < until,
            "collector did not run twice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.abort();
    assert_eq!(srv.state(&dev.udid).await, "pending");
    // Two runs, one DeviceInformation queued: the device gets it once, then nothing.
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    let (uuid, _) = command_of(&body);
    let (_, body) = srv
        .put(
            "/mdm/server",
            &plists::report_device_information(&dev, &uuid),
        )
        .await;
    assert!(body.is_empty());
}

/// A small deterministic generator (xorshift) so the mutation test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[tokio::test]
async fn mutated_bodies_never_get_5xx_or_401() {
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    let topic = srv.topic();
    srv.enroll(&dev).await;
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for dict in [
        plists::authenticate(&dev, &topic),
        plists::token_update(&dev, &topic),
        plists::set_bootstrap_token(&dev, &topic),
        plists::report_idle(&dev),
        plists::report_error(&dev, "9C2B4D6E-1A3F-4B5C-8D7E-0F1A2B3C4D5E"),
        plists::report_device_information(&dev, "3F1E5C2A-7B4D-4E8F-9A06-2C1D3B5E7F90"),
    ] {
        seeds.push(plists::to_xml(&dict));
        let mut binary = Vec::new();
        Value::Dictionary(dict)
            .to_writer_binary(&mut binary)
            .unwrap();
        seeds.push(binary);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let paths = ["/mdm", "/mdm/checkin", "/mdm/server"];
    for i in 0..300 {
        let mut body = seeds[rng.below(seeds.len())].clone();
        match rng.below(4) {
            0 => body.truncate(rng.below(body.len())),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(body.len());
                    body[at] = rng.next() as u8;
                }
            }
            2 => {
                let at = rng.below(body.len());
                let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                body.splice(at..at, junk);
            }
            _ => {
                let from = rng.below(body.len());
                let to = from + rng.below(body.len() - from);
                body.drain(from..to);
            }
        }
        let path = paths[rng.below(paths.len())];
        let (status, text) = srv.put_raw(path, body).await;
        assert!(
            status.is_success() || (status.is_client_error() && status != StatusCode::UNAUTHORIZED),
            "case {i} on {path}: {status} {}",
            String::from_utf8_lossy(&text)
        );
    }
    let (s, _) = srv
        .anon
        .request(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_tls_client_certificate_is_bound_to_the_udid_it_authenticated() {
    let srv = TestServer::start(Options {
        tls: true,
        device_auth: true,
        ..Options::default()
    })
    .await;
    let topic = srv.topic();
    let dev = device(1);
    let auth = plists::to_xml(&plists::authenticate(&dev, &topic));
    // No client certificate: devices are refused (403, not 401); health and admin still work.
    let (s, body) = srv.put_raw("/mdm/checkin", auth.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("identity certificate"));
    let (s, health) = srv
        .anon
        .request(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(health["device_auth"], "signature,tls,header", "{health}");
    assert!(srv.admin.get_json("/v1/devices").await.is_ok());

    // The device's own certificate: accepted, then bound to its UDID.
    let own = srv.device_client(&dev.udid);
    let (s, _) = put_with(&own, "/mdm/checkin", auth).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = put_with(
        &own,
        "/mdm/checkin",
        plists::to_xml(&plists::token_update(&dev, &topic)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let identity = &srv.device_json(&dev.udid).await["identity"];
    assert_eq!(
        identity["sha256"].as_str().map(str::len),
        Some(64),
        "{identity}"
    );
    assert!(
        identity["subject"].as_str().unwrap().contains(&dev.udid),
        "{identity}"
    );
    // It cannot enroll a second device, nor report for one.
    let other = device(2);
    let (s, body) = put_with(
        &own,
        "/mdm/checkin",
        plists::to_xml(&plists::authenticate(&other, &topic)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        String::from_utf8_lossy(&body).contains("already bound to device"),
        "{body:?}"
    );
    let (s, _) = put_with(
        &own,
        "/mdm/server",
        plists::to_xml(&plists::report_idle(&other)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = put_with(
        &own,
        "/mdm/server",
        plists::to_xml(&plists::report_idle(&dev)),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // A certificate from another CA gets through the handshake but not past the check.
    let stranger_ca =
        magicpush_fixtures::Ca::new("stranger", magicpush_fixtures::KeyKind::EcdsaP256).unwrap();
    let stranger = magicpush_fixtures::device_identity_cert(
        &stranger_ca,
        &dev.udid,
        magicpush_fixtures::KeyKind::EcdsaP256,
    )
    .unwrap();
    let client = magicpush_server::client::AdminClient::new(
        &srv.url,
        None,
        Some(srv.pki.ca.cert_pem().as_bytes()),
    )
    .unwrap()
    .with_client_identity(stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes())
    .unwrap();
    let (s, body) = put_with(
        &client,
        "/mdm/server",
        plists::to_xml(&plists::report_idle(&dev)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        String::from_utf8_lossy(&body).contains("not issued by the device CA"),
        "{body:?}"
    );
    assert_eq!(srv.state(&dev.udid).await, "never_pushed");
}

/// A ClearPasscode is queued without the device's UnlockToken: with a secrets key, the token's
/// bytes are nowhere in the database's files, yet the device receives its own token.
#[tokio::test]
async fn a_queued_clear_passcode_keeps_the_unlock_token_sealed() {
    let srv = TestServer::start(Options {
        sqlite: true,
        secrets_key: true,
        ..Options::default()
    })
    .await;
    let dev = device(1);
    srv.enroll(&dev).await;
    let sent = plists::token_update(&dev, &srv.topic());
    let token = sent["UnlockToken"].as_data().unwrap().to_vec();
    assert!(token.len() >= 8, "a token long enough to search for");
    let clear = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid], "request_type": "ClearPasscode", "push": false}),
        )
        .await
        .unwrap();
    // Every file the store writes (the database, its WAL and shared memory), as they are
    // while the command waits in the queue: neither the token's bytes nor its base64 (as an
    // XML plist's <data> holds it: lines of 51 bytes, so the first 48 bytes' base64 lies on
    // one line, whole groups of three with no padding).
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&token[..48]);
    let mut searched = 0;
    for entry in std::fs::read_dir(srv.dir.path().join("db")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        searched += bytes.len();
        for (what, needle) in [("bytes", token.as_slice()), ("base64", b64.as_bytes())] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the UnlockToken's {what} lie in clear in {}",
                path.display()
            );
        }
    }
    assert!(searched > 0, "the database's files were found");
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    let cmd: Dictionary = plist::from_bytes(&body).unwrap();
    assert_eq!(
        cmd["CommandUUID"].as_string(),
        clear["command_uuid"].as_str()
    );
    let inner = cmd["Command"].as_dictionary().unwrap();
    assert_eq!(inner["RequestType"].as_string(), Some("ClearPasscode"));
    assert_eq!(inner["UnlockToken"].as_data(), Some(token.as_slice()));
}

/// InstallProfile with a real .mobileconfig as `{"$data": …}`, ClearPasscode with the stored
/// UnlockToken (never shown by the API), a raw plist command, cancel and delete.
#[tokio::test]
async fn typed_commands_cancel_and_delete() {
    use base64::Engine as _;
    let srv = TestServer::start(Options::default()).await;
    let dev = device(1);
    srv.enroll(&dev).await;
    let mobileconfig = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
  <key>PayloadContent</key><array/>
  <key>PayloadDisplayName</key><string>Wi-Fi</string>
  <key>PayloadIdentifier</key><string>jp.example.wifi</string>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>9C4E4B1A-1111-4D7E-8E1B-2B6D8A0C4E1F</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict></plist>"#;
    let b64 = base64::engine::general_purpose::STANDARD.encode(mobileconfig);
    let install = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid], "request_type": "InstallProfile",
                "params": {"Payload": {"$data": b64}}, "push": false}),
        )
        .await
        .unwrap();
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    let cmd: Dictionary = plist::from_bytes(&body).unwrap();
    assert_eq!(
        cmd["CommandUUID"].as_string(),
        install["command_uuid"].as_str()
    );
    let inner = cmd["Command"].as_dictionary().unwrap();
    assert_eq!(inner["RequestType"].as_string(), Some("InstallProfile"));
    assert_eq!(
        inner["Payload"].as_data(),
        Some(&mobileconfig[..]),
        "the profile arrives as <data>"
    );
    srv.put(
        "/mdm/server",
        &plists::report_device_information(&dev, install["command_uuid"].as_str().unwrap()),
    )
    .await;

    // ClearPasscode: the server fills in the device's own UnlockToken.
    let clear = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid], "request_type": "ClearPasscode", "push": false}),
        )
        .await
        .unwrap();
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    let cmd: Dictionary = plist::from_bytes(&body).unwrap();
    let inner = cmd["Command"].as_dictionary().unwrap();
    assert_eq!(inner["RequestType"].as_string(), Some("ClearPasscode"));
    let sent = plists::token_update(&dev, &srv.topic());
    assert_eq!(
        inner["UnlockToken"].as_data(),
        sent["UnlockToken"].as_data()
    );
    let listed = srv
        .admin
        .get_text(&format!("/v1/devices/{}/commands", dev.udid))
        .await
        .unwrap();
    let token_b64 =
        base64::engine::general_purpose::STANDARD.encode(sent["UnlockToken"].as_data().unwrap());
    assert!(
        !listed.contains(&token_b64),
        "the API never shows the UnlockToken"
    );
    srv.put(
        "/mdm/server",
        &plists::report_device_information(&dev, clear["command_uuid"].as_str().unwrap()),
    )
    .await;
    let (s, text) = srv
        .admin
        .request(
            Method::POST,
            "/v1/commands",
            Some((
                "application/json",
                Bytes::from(
                    serde_json::json!({"udids": [dev.udid, "other"], "request_type": "ClearPasscode"})
                        .to_string(),
                ),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text:?}");

    // A raw plist command for the devices in the query, then cancelled before delivery.
    let raw = br#"<?xml version="1.0"?><plist version="1.0"><dict>
        <key>CommandUUID</key><string>RAW-COMMAND-1</string>
        <key>Command</key><dict><key>RequestType</key><string>EraseDevice</string>
        <key>PIN</key><string>123456</string></dict></dict></plist>"#;
    let (s, text) = srv
        .admin
        .request(
            Method::POST,
            &format!("/v1/commands?udid={}&push=false", dev.udid),
            Some(("application/x-plist", Bytes::from_static(raw))),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CREATED, "{text:?}");
    let answer: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(answer["command_uuid"], "RAW-COMMAND-1");
    let queued = srv
        .admin
        .get_json(&format!("/v1/devices/{}/commands", dev.udid))
        .await
        .unwrap();
    assert_eq!(
        queued["queued"][0]["command_uuid"], "RAW-COMMAND-1",
        "{queued}"
    );
    let (s, b) = srv
        .admin
        .request(Method::DELETE, "/v1/commands/RAW-COMMAND-1", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{b:?}");
    let cancelled: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(cancelled["cancelled"], 1, "{cancelled}");
    let (_, body) = srv.put("/mdm/server", &plists::report_idle(&dev)).await;
    assert!(body.is_empty(), "a cancelled command is not sent");
    let (s, _) = srv
        .admin
        .request(Method::DELETE, "/v1/commands/NO-SUCH-COMMAND", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Expiry: in the past is refused; a future one is listed.
    let (s, text) = srv
        .admin
        .request(
            Method::POST,
            "/v1/commands",
            Some((
                "application/json",
                Bytes::from(
                    serde_json::json!({"udids": [dev.udid], "request_type": "RestartDevice",
                        "expires_at": "2001-01-01T00:00:00Z"})
                    .to_string(),
                ),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text:?}");
    srv.admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid], "request_type": "ShutDownDevice",
                "expires_in": "24h", "push": false}),
        )
        .await
        .unwrap();
    let queued = srv
        .admin
        .get_json(&format!("/v1/devices/{}/commands", dev.udid))
        .await
        .unwrap();
    assert!(queued["queued"][0]["expires_at"].is_string(), "{queued}");

    // Delete the device: gone, with its queue.
    srv.admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid], "request_type": "RestartDevice", "push": false}),
        )
        .await
        .unwrap();
    let (s, _) = srv
        .admin
        .request(Method::DELETE, &format!("/v1/devices/{}", dev.udid), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let (s, _) = srv
        .admin
        .request(Method::GET, &format!("/v1/devices/{}", dev.udid), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = srv
        .admin
        .request(Method::DELETE, &format!("/v1/devices/{}", dev.udid), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(srv.store.queued(&dev.udid).await.unwrap().is_empty());
}

/// A fleet larger than a page is listed whole over HTTP, in UDID order, sent chunked as it is
/// read from the durable store (no Content-Length: the server never holds the whole list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_list_is_streamed_whole_in_pages() {
    use magicpush_testkit::conformance::{authenticate, t};
    let srv = TestServer::start(Options {
        sqlite: true,
        ..Options::default()
    })
    .await;
    let n = 2_500; // two and a half pages of the listing
    let udids: Vec<String> = (0..n).map(|i| format!("LIST-{i:05}")).collect();
    // Concurrent, so that group commit takes them in a few hundred commits.
    let mut writes = tokio::task::JoinSet::new();
    for udid in &udids {
        let (store, msg) = (srv.store.clone(), authenticate(udid));
        writes.spawn(async move { store.authenticate(&msg, None, t(0)).await });
    }
    while let Some(written) = writes.join_next().await {
        written.unwrap().unwrap();
    }

    let (s, body) = srv
        .admin
        .request(Method::GET, "/v1/devices", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("one JSON array");
    let listed: Vec<&str> = list.iter().map(|d| d["udid"].as_str().unwrap()).collect();
    assert_eq!(listed, udids, "every device once, in UDID order");

    let (s, csv) = srv
        .admin
        .request(Method::GET, "/v1/devices.csv", None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&csv).lines().count(), n + 1);

    // On the wire: chunked, without a Content-Length.
    let addr = srv.handle.as_ref().unwrap().local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let head = &text[..text.find("\r\n\r\n").unwrap()];
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the last chunk ends the body"
    );
}

/// One node (the memory store): `/healthz` names it, `GET /v1/nodes` lists it alive once it
/// heartbeated, with the refresh it ran, finished when every push has its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_route_lists_this_node_and_its_refresh() {
    let srv = TestServer::start(Options::default()).await;
    let health = srv.anon.get_json("/healthz").await.unwrap();
    assert_eq!(health["node"], srv.service.node_name(), "{health}");
    assert_eq!(health["node_id"], srv.service.node_id(), "{health}");
    let dev = plists::Device::iphone();
    srv.enroll(&dev).await;
    let summary = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    srv.wait_state(&dev.udid, "pending", WAIT).await;
    assert!(srv.service.pushes_settled(WAIT).await);
    let view = srv.admin.get_json("/v1/nodes").await.unwrap();
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{view}");
    assert_eq!(nodes[0]["id"], srv.service.node_id(), "{view}");
    assert_eq!(nodes[0]["alive"], true, "{view}");
    assert_eq!(nodes[0]["version"], env!("CARGO_PKG_VERSION"), "{view}");
    for key in ["name", "url", "started_at", "last_heartbeat_at"] {
        assert!(nodes[0][key].is_string(), "{key}: {view}");
    }
    let run = &view["refreshes"][0];
    assert_eq!(run["id"], run_id.as_str(), "{view}");
    assert_eq!(run["state"], "finished", "{view}");
    assert_eq!(run["node"], srv.service.node_name(), "{view}");
    assert_eq!(run["devices"], 1, "{view}");
    assert_eq!(run["answered"], 1, "{view}");
    assert_eq!(run["withdrawn"], 0, "{view}");
    assert_eq!(run["pushed_at"], summary["pushed_at"], "{view}");
    assert!(view["generated_at"].is_string(), "{view}");
    let (status, _) = srv
        .anon
        .request(Method::GET, "/v1/nodes", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A command sent with a push is a run too (`kind` `command`), finished once its pushes are
/// answered: a node dying while pushing it leaves nothing a sweep cannot take back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_with_a_push_is_a_run() {
    let srv = TestServer::start(Options::default()).await;
    let dev = plists::Device::iphone();
    srv.enroll(&dev).await;
    let sent = srv
        .admin
        .send_json(
            Method::POST,
            "/v1/commands",
            &serde_json::json!({"udids": [dev.udid], "request_type": "ProfileList", "push": true}),
        )
        .await
        .unwrap();
    assert_eq!(sent["pushing"], 1, "{sent}");
    assert!(srv.service.pushes_settled(WAIT).await);
    let view = srv.admin.get_json("/v1/nodes").await.unwrap();
    let run = &view["refreshes"][0];
    assert_eq!(run["kind"], "command", "{view}");
    assert_eq!(run["state"], "finished", "{view}");
    assert_eq!(
        (run["devices"].as_u64(), run["answered"].as_u64()),
        (Some(1), Some(1)),
        "{view}"
    );
    let device = srv.device_json(&dev.udid).await;
    assert_eq!(device["last_push_at"], run["pushed_at"], "{device}");
}
