//! `GET|PUT /v1/settings`: the run-time settings, their checks, and that a change applies at
//! once on this node (the unreachable window, the collection task) and reaches another node
//! on the same store at its next heartbeat.

mod server_common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use server_common::*;

const WAIT: Duration = Duration::from_secs(5);

async fn put_settings(srv: &TestServer, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = srv
        .admin
        .request(
            Method::PUT,
            "/v1/settings",
            Some(("application/json", Bytes::from(body.to_string()))),
        )
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn get_answers_the_settings_in_force_and_their_sources() {
    let srv = TestServer::start(Options::default()).await;
    let got = srv.admin.get_json("/v1/settings").await.unwrap();
    assert_eq!(
        got,
        json!({"collect_every": null, "collect_every_s": null, "unreachable_after": "5m",
               "unreachable_after_s": 300, "collecting": false,
               "source": {"collect_every": "default", "unreachable_after": "flag"}}),
        "the test server gives --unreachable-after"
    );
}

#[tokio::test]
async fn put_stores_valid_settings_and_answers_them() {
    let srv = TestServer::start(Options::default()).await;
    let (status, got) = put_settings(&srv, json!({"collect_every": "24h"})).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["collect_every"], "1d");
    assert_eq!(got["collect_every_s"], 86_400);
    assert_eq!(got["source"]["collect_every"], "stored");
    assert_eq!(got["unreachable_after"], "5m", "left alone");
    assert_eq!(got["source"]["unreachable_after"], "flag");
    let (status, got) = put_settings(&srv, json!({"unreachable_after": 600})).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["unreachable_after_s"], 600);
    assert_eq!(got["collect_every"], "1d", "kept");
    assert_eq!(srv.admin.get_json("/v1/settings").await.unwrap(), got);
    let stored = srv.store.settings().await.unwrap();
    assert_eq!(
        stored.collect_every,
        Some(Some(Duration::from_secs(86_400)))
    );
    assert_eq!(stored.unreachable_after, Some(Duration::from_secs(600)));
}

#[tokio::test]
async fn put_refuses_bad_settings_with_the_reason_and_stores_nothing() {
    let srv = TestServer::start(Options::default()).await;
    let cases = [
        (
            json!({"collect_every": "1m"}),
            "shorter than --unreachable-after",
        ),
        (json!({"collect_every": "0s"}), "longer than 0s"),
        (json!({"unreachable_after": "10s"}), "deadline"),
        (json!({"collect_every": "1.5h"}), "invalid duration"),
        (json!({"unreachable_after": "5"}), "missing unit"),
        (json!({"collect_evry": "1h"}), "unknown setting"),
        (json!(["collect_every"]), "JSON object"),
    ];
    for (body, why) in cases {
        let (status, got) = put_settings(&srv, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {got}");
        let error = got["error"].as_str().unwrap();
        assert!(error.contains(why), "{body}: {error}");
    }
    // Checked together: a window longer than the stored period is refused too.
    let (status, _) = put_settings(&srv, json!({"collect_every": "1h"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, got) = put_settings(&srv, json!({"unreachable_after": "2h"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{got}");
    let stored = srv.store.settings().await.unwrap();
    assert_eq!(stored.unreachable_after, None, "nothing refused is stored");
}

#[tokio::test]
async fn a_new_unreachable_window_applies_to_the_next_state_computed() {
    let srv = TestServer::start(Options {
        unreachable_after: Duration::from_millis(1000),
        ..Options::default()
    })
    .await;
    let dev = device(1);
    srv.enroll(&dev).await;
    srv.admin
        .send_json(Method::POST, "/v1/refresh", &json!({"udids": [dev.udid]}))
        .await
        .unwrap();
    srv.wait_state(&dev.udid, "unreachable", WAIT).await;
    let (status, got) = put_settings(&srv, json!({"unreachable_after": "10m"})).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(srv.state(&dev.udid).await, "pending");
    let report = srv.admin.get_json("/v1/connectivity").await.unwrap();
    assert_eq!(report["unreachable_after_s"], 600, "{report}");
}

#[tokio::test]
async fn a_put_starts_restarts_and_stops_the_collection() {
    let srv = TestServer::start(Options::default()).await;
    let collecting = || async {
        srv.admin.get_json("/v1/settings").await.unwrap()["collecting"]
            .as_bool()
            .unwrap()
    };
    assert!(!collecting().await);
    let (_, got) = put_settings(&srv, json!({"collect_every": "1h"})).await;
    assert_eq!(got["collecting"], true, "{got}");
    let (_, got) = put_settings(&srv, json!({"collect_every": "2h"})).await;
    assert_eq!(got["collecting"], true, "{got}");
    assert_eq!(got["collect_every"], "2h");
    let (_, got) = put_settings(&srv, json!({"collect_every": "off"})).await;
    assert_eq!(got["collecting"], false, "{got}");
    assert_eq!(got["collect_every"], Value::Null);
    assert_eq!(got["source"]["collect_every"], "stored");
    assert!(!collecting().await);
}

#[tokio::test]
async fn a_change_on_one_node_reaches_another_at_its_heartbeat() {
    let a = TestServer::start(Options::default()).await;
    let b = TestServer::start(Options {
        store: Some(Arc::clone(&a.store)),
        ..Options::default()
    })
    .await;
    let heartbeat = b.service.spawn_heartbeat();
    let (status, _) = put_settings(
        &a,
        json!({"collect_every": "1h", "unreachable_after": "7m"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let until = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = b.admin.get_json("/v1/settings").await.unwrap();
        if got["unreachable_after_s"] == 420 && got["collecting"] == true {
            assert_eq!(got["source"]["collect_every"], "stored");
            break;
        }
        assert!(std::time::Instant::now() < until, "not applied: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    heartbeat.abort();
    b.service.stop_collector();
    a.service.stop_collector();
}
