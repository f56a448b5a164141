//! Tenants through the admin API: two customers' certificates in one server, each with its own
//! devices, listings, refreshes and reports; adding is explicit, renewing names its tenant and
//! never takes another topic (E320).

mod server_common;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_fixtures::plists;
use serde_json::{json, Value};
use server_common::*;

/// `method path` with a PEM body: the status and the JSON answer.
async fn send_pem(
    srv: &TestServer,
    method: Method,
    path: &str,
    pem: String,
) -> (StatusCode, Value) {
    let (s, body) = srv
        .admin
        .request(
            method,
            path,
            Some(("application/x-pem-file", Bytes::from(pem))),
        )
        .await
        .unwrap();
    (s, serde_json::from_slice(&body).unwrap_or_default())
}

/// `GET path`: the status and the JSON answer.
async fn get(srv: &TestServer, path: &str) -> (StatusCode, Value) {
    let (s, body) = srv.admin.request(Method::GET, path, None).await.unwrap();
    (s, serde_json::from_slice(&body).unwrap_or_default())
}

/// Adds the test PKI's other-topic certificate as a second tenant.
async fn add_second_tenant(srv: &TestServer) -> String {
    let bundle = format!(
        "{}{}",
        srv.pki.other_topic.cert_pem, srv.pki.other_topic.key_pem
    );
    let (s, view) = send_pem(srv, Method::POST, "/v1/topics", bundle.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{view}");
    assert_eq!(view["topic"], srv.pki.other_topic_name.as_str());
    let (s, again) = send_pem(srv, Method::POST, "/v1/topics", bundle).await;
    assert_eq!(s, StatusCode::CONFLICT, "adding it twice: {again}");
    assert!(
        again.to_string().contains("PUT /v1/pushcert?topic="),
        "{again}"
    );
    srv.pki.other_topic_name.clone()
}

/// Authenticate + TokenUpdate with `topic`.
async fn enroll_with(srv: &TestServer, dev: &plists::Device, topic: &str) {
    for message in [
        plists::authenticate(dev, topic),
        plists::token_update(dev, topic),
    ] {
        let (s, body) = srv.put("/mdm/checkin", &message).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
}

fn udids(list: &Value) -> Vec<String> {
    let mut udids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["udid"].as_str().unwrap().to_owned())
        .collect();
    udids.sort();
    udids
}

#[tokio::test]
async fn two_tenants_are_listed_refreshed_and_reported_apart() {
    let srv = TestServer::start(Options::default()).await;
    let a = srv.topic();
    let b = add_second_tenant(&srv).await;
    let (d1, d2, d3) = (device(1), device(2), device(3));
    enroll_with(&srv, &d1, &a).await;
    enroll_with(&srv, &d2, &a).await;
    enroll_with(&srv, &d3, &b).await;

    // A topic no tenant has is refused with 403 (never 401), and nothing is written.
    let stranger = device(4);
    let (s, body) = srv
        .put(
            "/mdm/checkin",
            &plists::authenticate(&stranger, "com.apple.mgmt.External.nobody"),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("no push certificate on this server"));

    // Listings, per tenant and all.
    let (s, all) = get(&srv, "/v1/devices").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(udids(&all).len(), 3, "{all}");
    let (_, of_b) = get(&srv, &format!("/v1/devices?topic={b}")).await;
    assert_eq!(udids(&of_b), vec![d3.udid.clone()]);
    let (_, of_a) = get(&srv, &format!("/v1/devices?topic={a}&state=never_pushed")).await;
    assert_eq!(udids(&of_a), vec![d1.udid.clone(), d2.udid.clone()]);
    let csv = srv
        .admin
        .get_text(&format!("/v1/devices.csv?topic={b}"))
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 2, "header and one device: {csv}");
    assert!(csv.contains(&d3.udid));
    let (s, unknown) = get(&srv, "/v1/devices?topic=com.apple.mgmt.External.typo").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{unknown}");
    let (_, report) = get(&srv, &format!("/v1/connectivity?topic={a}")).await;
    assert_eq!(report["total"], 2, "{report}");

    // A per-certificate route needs the topic now.
    let (s, err) = get(&srv, "/v1/pushcert").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert!(err.to_string().contains("?topic="), "{err}");
    let (s, view) = get(&srv, &format!("/v1/pushcert?topic={b}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(view["topic"], b.as_str());

    // One tenant's refresh pushes its devices only, on its topic.
    let (s, summary) = srv
        .admin
        .request(
            Method::POST,
            "/v1/refresh",
            Some((
                "application/json",
                Bytes::from(json!({"all": true, "topic": b}).to_string()),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::ACCEPTED);
    let summary: Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["pushing"], 1, "{summary}");
    srv.wait_state(&d3.udid, "pending", Duration::from_secs(5))
        .await;
    assert_eq!(srv.state(&d1.udid).await, "never_pushed");
    let sent = srv.pusher.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].topic.as_deref(), Some(b.as_str()));

    // Every tenant's: each push on its device's topic.
    let summary = srv
        .admin
        .send_json(Method::POST, "/v1/refresh", &json!({"all": true}))
        .await
        .unwrap();
    assert_eq!(summary["pushing"], 3, "{summary}");
    srv.wait_state(&d1.udid, "pending", Duration::from_secs(5))
        .await;
    let tokens_of_a = [token_hex(&d1), token_hex(&d2)];
    for push in srv.pusher.sent().iter().skip(1) {
        let expected = if tokens_of_a.contains(&push.token.to_string()) {
            &a
        } else {
            &b
        };
        assert_eq!(push.topic.as_deref(), Some(expected.as_str()), "{push:?}");
    }

    // Names and memos; the listing counts each tenant's devices.
    let named = srv
        .admin
        .send_json(
            Method::PUT,
            &format!("/v1/topics/{b}"),
            &json!({"name": "Beta KK", "apple_id": "push@beta.example.jp"}),
        )
        .await
        .unwrap();
    assert_eq!(named["name"], "Beta KK");
    assert_eq!(named["apple_id"], "push@beta.example.jp");
    let (_, topics) = get(&srv, "/v1/topics").await;
    let list = topics["topics"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{topics}");
    let entry = |t: &str| list.iter().find(|e| e["topic"] == t).unwrap().clone();
    assert_eq!(entry(&a)["devices"]["total"], 2, "{topics}");
    assert_eq!(entry(&b)["devices"]["total"], 1, "{topics}");
    assert_eq!(entry(&b)["name"], "Beta KK");
    assert_eq!(entry(&b)["certificate"]["state"], "valid");

    // One tenant's new-topic procedure leaves the other's devices.
    let (s, _) = srv
        .admin
        .request(Method::DELETE, &format!("/v1/pushcert?topic={b}"), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::CONFLICT, "B still has a device");
    let deleted = srv
        .admin
        .call(
            Method::DELETE,
            &format!("/v1/devices?all=true&confirm={b}"),
            None,
        )
        .await
        .unwrap();
    let deleted: Value = serde_json::from_slice(&deleted).unwrap();
    assert_eq!(deleted["deleted"], 1);
    let (_, all) = get(&srv, "/v1/devices").await;
    assert_eq!(udids(&all), vec![d1.udid.clone(), d2.udid.clone()]);
    let (s, _) = srv
        .admin
        .request(Method::DELETE, &format!("/v1/pushcert?topic={b}"), None)
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let (_, topics) = get(&srv, "/v1/topics").await;
    assert_eq!(topics["topics"].as_array().unwrap().len(), 1);
    let (s, view) = get(&srv, "/v1/pushcert").await;
    assert_eq!(s, StatusCode::OK, "one tenant again: no topic needed");
    assert_eq!(view["topic"], a.as_str());
    let (_, history) = get(&srv, &format!("/v1/pushcert/history?topic={b}")).await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0]["replaced_at"].is_string(), "{history:?}");
    // B's devices are refused now: their tenant is gone.
    let (s, _) = srv
        .put("/mdm/checkin", &plists::authenticate(&d3, &b))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_renewal_names_its_tenant_and_refuses_another_topic() {
    let srv = TestServer::start(Options::default()).await;
    let a = srv.topic();
    let b = add_second_tenant(&srv).await;
    let renewal = format!(
        "{}{}",
        srv.pki.push_renewal.cert_pem, srv.pki.push_renewal.key_pem
    );
    // Several tenants: the renewal must say whose it is.
    let (s, err) = send_pem(&srv, Method::PUT, "/v1/pushcert", renewal.clone()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
    assert!(err.to_string().contains("?topic="), "{err}");
    // A's renewal given as B's: E320, naming both topics and where it belongs.
    let (s, err) = send_pem(
        &srv,
        Method::PUT,
        &format!("/v1/pushcert?topic={b}"),
        renewal.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    let text = err.to_string();
    assert!(text.contains("E320"), "{text}");
    assert!(text.contains(&a) && text.contains(&b), "{text}");
    assert!(
        text.contains(&format!("PUT /v1/pushcert?topic={a}")),
        "{text}"
    );
    let (s, _) = send_pem(
        &srv,
        Method::PUT,
        "/v1/pushcert?topic=com.apple.mgmt.External.nobody",
        renewal.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Renewed where it belongs; B is untouched.
    let (_, b_before) = get(&srv, &format!("/v1/pushcert?topic={b}")).await;
    let (s, view) = send_pem(
        &srv,
        Method::PUT,
        &format!("/v1/pushcert?topic={a}"),
        renewal,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["topic"], a.as_str());
    assert!(view["days_left"].as_i64().unwrap() > 700, "{view}");
    let (_, b_after) = get(&srv, &format!("/v1/pushcert?topic={b}")).await;
    assert_eq!(b_before["serial"], b_after["serial"]);
    assert_eq!(
        srv.pusher.certificates_installed(),
        2,
        "B added, A replaced"
    );
    // The store keeps both tenants for a restart.
    let mut stored: Vec<String> = srv
        .store
        .push_certs()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.topic)
        .collect();
    stored.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn tenant_names_are_checked() {
    let srv = TestServer::start(Options::default()).await;
    let a = srv.topic();
    let (s, _) = srv
        .admin
        .request(
            Method::PUT,
            &format!("/v1/topics/{a}"),
            Some(("application/json", Bytes::from_static(b"{}"))),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST, "nothing to set");
    let long = "x".repeat(201);
    let (s, _) = srv
        .admin
        .request(
            Method::PUT,
            &format!("/v1/topics/{a}"),
            Some((
                "application/json",
                Bytes::from(json!({ "name": long }).to_string()),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = srv
        .admin
        .request(
            Method::PUT,
            "/v1/topics/com.apple.mgmt.External.nobody",
            Some((
                "application/json",
                Bytes::from(json!({ "name": "x" }).to_string()),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::NOT_FOUND);
}
