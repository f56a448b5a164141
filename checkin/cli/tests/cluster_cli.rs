//! Two `magicpush serve` processes on one PostgreSQL database, one of them killed with
//! SIGKILL in the middle of a refresh: the other one takes that refresh back. No device
//! reads a push the APNs mock never accepted, the devices not pushed read `never_pushed`,
//! the run reads `abandoned` in `GET /v1/nodes`, and the next refresh, from the live node,
//! pushes every device.
//!
//! The database comes from `MAGICPUSH_TEST_DATABASE_URL` (a fresh schema); without it the
//! test says so and passes, except under `CI=true`.

mod common;

use common::Serve;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_fixtures::plists::{self, Device};
use magicpush_fixtures::TestPki;
use magicpush_loadtest::mock_apns::{MockApns, MockConfig};
use magicpush_server::client::AdminClient;
use magicpush_testkit::database::test_database_url as test_url;

const KEY: &str = "cluster-test-key";
const BIN: &str = env!("CARGO_BIN_EXE_magicpush");

/// A node on `db`: one push at a time, heartbeats every 300 ms, others dead after 1.5 s.
fn node(name: &str, db: &str, args: &[&str], paths: &[(&str, &Path)]) -> Serve {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--insecure-no-device-auth"])
        .args(["--api-key", KEY, "--database-url", db, "--node-name", name])
        .args(["--push-concurrency", "1", "--heartbeat-every", "300ms"])
        .args(["--node-dead-after", "1500ms"])
        .args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    let child = cmd
        .env_remove("MAGICPUSH_DATA_DIR")
        .env_remove("MAGICPUSH_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Serve::listening(child).expect("serve printed its address")
}

async fn sql(url: &str, statement: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client.batch_execute(statement).await.expect(statement);
}

fn device(n: u8) -> Device {
    let mut d = Device::iphone();
    d.udid = format!("KILL-DEVICE-{n}");
    d.serial_number = format!("KILLSERIAL{n}");
    d.token = (0u8..32).map(|i| i ^ n).collect();
    d.push_magic = format!("kill-magic-{n}");
    d
}

async fn put(admin: &AdminClient, dict: &plist::Dictionary) {
    let body = Bytes::from(plists::to_xml(dict));
    let (s, body) = admin
        .request(
            Method::PUT,
            "/mdm/checkin",
            Some(("application/x-apple-aspen-mdm-checkin", body)),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body:?}");
}

/// Each device's state as a node reports it, by UDID.
async fn states(admin: &AdminClient) -> std::collections::BTreeMap<String, String> {
    devices(admin)
        .await
        .into_iter()
        .map(|d| {
            (
                d["udid"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// How many devices have a push outcome recorded (a marked push reads `pending` before).
async fn answered(admin: &AdminClient) -> usize {
    devices(admin)
        .await
        .iter()
        .filter(|d| !d["push_outcome"].is_null())
        .count()
}

async fn devices(admin: &AdminClient) -> Vec<serde_json::Value> {
    let list = admin.get_json("/v1/devices").await.unwrap();
    list.as_array().unwrap().clone()
}

/// Polls `check` every 50 ms for up to `within`.
async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_refresh_is_taken_back_by_another_node() {
    let Some(url) = test_url() else { return };
    let schema = format!("kill_{:016x}", fastrand::u64(..));
    sql(&url, &format!("CREATE SCHEMA {schema}")).await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!("{url}{sep}options=-csearch_path%3D{schema}");

    let pki = TestPki::generate().unwrap();
    // Each push answered after 700 ms: the refresh is still pushing when node A dies.
    let mock = MockApns::start(
        "127.0.0.1:0".parse().unwrap(),
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        MockConfig {
            delay: Duration::from_millis(700),
            ..MockConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cert = write("push.pem", &pki.push.cert_pem);
    let key = write("push.key.pem", &pki.push.key_pem);
    let ca = write("ca.pem", pki.ca.cert_pem());
    let secrets = write("secrets.key", &"5a".repeat(32));
    let mock_url = mock.url();
    let args = ["--apns-url", mock_url.as_str()];
    let paths = [
        ("--cert", cert.as_path()),
        ("--key", key.as_path()),
        ("--apns-ca", ca.as_path()),
        ("--secrets-key-file", secrets.as_path()),
    ];

    let mut a = node("a", &db, &args, &paths);
    let a_admin = AdminClient::new(&a.url, Some(KEY.into()), None).unwrap();
    let devices: Vec<Device> = (1..=5).map(device).collect();
    for d in &devices {
        put(&a_admin, &plists::authenticate(d, &pki.topic)).await;
        put(&a_admin, &plists::token_update(d, &pki.topic)).await;
    }
    let summary = a_admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    assert_eq!(summary["pushing"], 5, "{summary}");
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    // Killed once a push is answered and recorded, with the rest in flight or waiting.
    until(Duration::from_secs(20), "a recorded push", || async {
        answered(&a_admin).await > 0
    })
    .await;
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();

    let b = node("b", &db, &args, &paths);
    let b_admin = AdminClient::new(&b.url, Some(KEY.into()), None).unwrap();
    let health = b_admin.get_json("/healthz").await.unwrap();
    assert_eq!(health["node"], "b", "{health}");
    assert_eq!(health["database"], "ok", "{health}");
    assert!(health["node_id"].is_string(), "{health}");
    until(
        Duration::from_secs(20),
        "node a's run abandoned",
        || async {
            let view = b_admin.get_json("/v1/nodes").await.unwrap();
            view["refreshes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == run_id.as_str() && r["state"] == "abandoned")
        },
    )
    .await;
    let view = b_admin.get_json("/v1/nodes").await.unwrap();
    let alive: Vec<(&str, bool)> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["alive"].as_bool().unwrap()))
        .collect();
    assert_eq!(alive, vec![("a", false), ("b", true)], "{view}");

    // No state claims a push APNs did not accept; what was not pushed reads never_pushed.
    let accepted = mock.accepted_by_token();
    let after_kill = states(&b_admin).await;
    let mut never_pushed = 0;
    for d in &devices {
        let state = &after_kill[&d.udid];
        match state.as_str() {
            "pending" => assert!(
                accepted.contains_key(&hex::encode(&d.token)),
                "{} reads pending but APNs never accepted its push: {after_kill:?}",
                d.udid
            ),
            "never_pushed" => never_pushed += 1,
            other => panic!("{}: {other}: {after_kill:?}", d.udid),
        }
    }
    assert!(never_pushed >= 2, "{after_kill:?}");
    assert!(never_pushed < devices.len(), "{after_kill:?}");
    let run = view["refreshes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == run_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(run["withdrawn"], never_pushed, "{run}");

    // The next refresh, from node B, pushes them all.
    let again = b_admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    assert_eq!(again["pushing"], 5, "{again}");
    until(Duration::from_secs(30), "every device pushed", || async {
        answered(&b_admin).await == devices.len()
    })
    .await;
    for d in &devices {
        assert!(mock.accepted_for(&hex::encode(&d.token)) >= 1, "{}", d.udid);
    }
    drop(b);
    mock.shutdown().await;
    sql(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}

/// A dead-after window shorter than two heartbeats would declare live nodes dead: `serve`
/// refuses it, naming both flags.
#[test]
fn serve_refuses_a_dead_after_window_shorter_than_two_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--heartbeat-every", "5s", "--node-dead-after", "6s"])
        .env_remove("MAGICPUSH_DATABASE_URL")
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(stderr.contains("--node-dead-after"), "{stderr}");
    assert!(stderr.contains("--heartbeat-every"), "{stderr}");
}
