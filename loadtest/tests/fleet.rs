//! A 2,000-device smoke of `magicpush-loadtest fleet`: the real server (a child process with
//! its SQLite store), the mock APNs, devices that enroll over HTTP and answer their pushes,
//! some offline and some unregistered. Also two nodes on one PostgreSQL database
//! (`MAGICPUSH_TEST_DATABASE_URL`; skipped without one, except under `CI=true`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use magicpush_loadtest::fleet::nodes::StoreKind;
use magicpush_loadtest::fleet::{self, FleetConfig, Progress};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_magicpush-loadtest"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_devices_none_lost_counts_exact() {
    let mut config = FleetConfig::new(2000, exe());
    config.offline_fraction = 0.05;
    config.unregistered_fraction = 0.03;
    config.connections = 64;
    config.wait = Duration::from_secs(45);
    config.baseline = true;
    let progress = Arc::new(Progress::default());
    let report = tokio::time::timeout(
        Duration::from_secs(90),
        fleet::run(&config, progress.clone()),
    )
    .await
    .expect("the fleet finishes in time")
    .expect("the fleet runs");
    let table = report.table();

    assert_eq!(report.devices, 2000, "{table}");
    assert_eq!(report.injected.offline, 100, "{table}");
    assert_eq!(report.injected.unregistered, 60, "{table}");
    assert_eq!(report.injected.online, 1840, "{table}");
    assert_eq!(report.enrolled, 2000, "{table}");
    assert_eq!(report.errors, 0, "{table}");
    assert_eq!(report.lost, 0, "{table}");
    assert_eq!(report.misplaced, 0, "{table}");
    assert!(report.counts_match, "{table}");
    assert_eq!(report.states["responded"], 1840, "{table}");
    assert_eq!(report.states["unregistered"], 60, "{table}");
    assert_eq!(
        report.states["pending"] + report.states["unreachable"],
        100,
        "{table}"
    );
    assert_eq!(report.reported, 1840, "{table}");
    assert_eq!(report.pushes, 2000, "{table}");
    assert_eq!(report.latency_ms.count, 1840, "{table}");
    assert!(report.latency_ms.p50 <= report.latency_ms.max, "{table}");
    assert!(
        report.server_peak_rss_mb.is_some_and(|mb| mb > 0.0),
        "{table}"
    );
    // One tenant: its topic got every push the mock accepted, on the server's connections.
    assert_eq!((report.topics, report.topics_exact), (1, 1), "{table}");
    assert!(report.topic_count_errors.is_empty(), "{table}");
    assert_eq!(report.topic_disallowed, 0, "{table}");
    assert_eq!(report.register_s, 0.0, "{table}");
    assert!(report.apns_connections_peak >= 1, "{table}");
    assert!(report.apns_connection_budget.is_some(), "{table}");
    assert!(report.passed(), "{table}");
    // The floor was measured first, on the same workload: a trivial stand-in is faster.
    let floor = report.floor_s.expect("a floor with baseline");
    assert!(floor > 0.0, "{table}");
    let ratio = report.wall_over_floor.expect("a ratio");
    assert!((ratio - report.wall_s / floor).abs() < 0.01, "{table}");
    assert!(table.contains("wall / floor"), "{table}");
    assert_eq!(
        progress.reported.load(std::sync::atomic::Ordering::Relaxed),
        1840
    );
}

/// Three tenants: the server starts with the first's certificate, the others are registered
/// through `POST /v1/topics`; each device is pushed on its own tenant's topic and every
/// tenant's count is exact (the floors, run first, push on the three topics too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_each_pushed_on_its_own_topic() {
    let mut config = FleetConfig::new(300, exe());
    config.offline_fraction = 0.1;
    config.unregistered_fraction = 0.05;
    config.connections = 32;
    config.wait = Duration::from_secs(45);
    config.baseline = true;
    config.topics = 3;
    let report = fleet::run(&config, Arc::new(Progress::default()))
        .await
        .expect("the fleet runs");
    let table = report.table();
    assert_eq!((report.topics, report.topics_exact), (3, 3), "{table}");
    assert!(report.topic_count_errors.is_empty(), "{table}");
    assert_eq!(report.topic_disallowed, 0, "{table}");
    assert!(report.register_s > 0.0, "{table}");
    // Each tenant has its own certificate, hence its own connection.
    assert!(report.apns_connections_peak >= 3, "{table}");
    assert_eq!(report.enrolled, 300, "{table}");
    assert!(report.passed(), "{table}");
}

/// The command line: `--json` prints one object on its last line, and the exit status says
/// whether the run passed.
#[test]
fn cli_json_is_one_object_on_the_last_line() {
    let out = Command::new(exe())
        .args([
            "fleet",
            "--devices",
            "200",
            "--offline-fraction",
            "0.1",
            "--unregistered-fraction",
            "0.05",
            "--delay-ms",
            "20",
            "--json",
        ])
        .output()
        .expect("run magicpush-loadtest fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    for key in [
        "devices",
        "wall_s",
        "states",
        "lost",
        "enroll_per_s",
        "push_per_s",
        "latency_ms",
        "phases",
        "server_peak_rss_mb",
        "loadgen_peak_rss_mb",
        "topics",
        "register_s",
        "apns_connections_peak",
        "apns_connection_budget",
        "topics_exact",
        "topic_disallowed",
        "store",
        "nodes",
        "refresh_node",
        "database_schema",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {last}");
    }
    // One node on SQLite, which got every device request: 2 check-ins per device, Idle and
    // Acknowledged per online device.
    assert_eq!(v["store"], "sqlite", "{last}");
    assert_eq!(v["refresh_node"], 0, "{last}");
    assert!(v["database_schema"].is_null(), "{last}");
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{last}");
    assert_eq!(nodes[0]["requests"], 2 * 200 + 2 * 170, "{last}");
    assert!(nodes[0]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    // The devices sign (the default): the floor that verifies ran too, and the wall is
    // given over it.
    let floor = v["floor_s"].as_f64().expect("floor_s");
    let verifying = v["floor_verifying_s"].as_f64().expect("floor_verifying_s");
    assert!(verifying > 0.0 && floor > 0.0, "{last}");
    let ratio = v["wall_over_verifying_floor"].as_f64().unwrap();
    let wall = v["wall_s"].as_f64().unwrap();
    assert!((ratio - wall / verifying).abs() < 0.01, "{last}");
    assert_eq!(v["devices"], 200);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["states"]["responded"], 170, "{last}");
    assert_eq!(v["states"]["unregistered"], 10, "{last}");
    // Devices waited 20 ms before answering.
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() >= 20.0, "{last}");
}

/// A run whose pushes never arrive fails: the server cannot reach any APNs, so no online
/// device reports and the counts cannot match. Also drives `--server` mode (a running
/// server, certificates from a directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_reach_apns_fails_the_run() {
    use magicpush_loadtest::fleet::pki::{self, FleetPki};
    use magicpush_loadtest::fleet::server::{
        NodeStore, ServeDeviceAuth, ServeSettings, ServerProcess,
    };
    use magicpush_loadtest::fleet::ServerMode;

    let dir = tempfile::tempdir().unwrap();
    let pki = FleetPki::load_or_create(&dir.path().join("pki")).unwrap();
    // Nothing listens on this port once the probe is closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = ServeSettings {
        exe: exe(),
        store: NodeStore::Sqlite {
            data_dir: dir.path().join("data"),
        },
        cert: pki.path(pki::PUSH_CERT_FILE),
        key: pki.path(pki::PUSH_KEY_FILE),
        apns_url: format!("https://{dead}"),
        apns_ca: pki.path(pki::CA_FILE),
        api_key: "fleet-test-key".into(),
        unreachable_after: Duration::from_secs(600),
        push_concurrency: 16,
        // The engine warns about every failed connection attempt: expected here.
        log_filter: Some("error".into()),
        // The fleet issues its devices' identities from the same directory's device CA.
        device_auth: ServeDeviceAuth::Ca(pki.path(pki::DEVICE_CA_FILE)),
    };
    let server = tokio::task::spawn_blocking(move || ServerProcess::spawn(&settings))
        .await
        .unwrap()
        .expect("server starts");

    let mut config = FleetConfig::new(40, exe());
    config.server = ServerMode::Existing {
        url: server.url().to_owned(),
        api_key: "fleet-test-key".into(),
    };
    config.pki_dir = Some(pki.dir.clone());
    config.connections = 8;
    config.wait = Duration::from_secs(3);
    let report = fleet::run(&config, Arc::new(Progress::default()))
        .await
        .expect("the run completes");
    let table = report.table();
    assert_eq!(report.enrolled, 40, "{table}");
    assert_eq!(
        report.states.get("responded").copied().unwrap_or(0),
        0,
        "{table}"
    );
    assert!(!report.counts_match, "{table}");
    assert_eq!(report.misplaced, 40, "{table}");
    assert_eq!(report.lost, 0, "{table}");
    assert!(!report.passed(), "{table}");
    assert!(
        report.server_peak_rss_mb.is_none(),
        "not measured for --server"
    );
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

/// Two nodes on one PostgreSQL database: each device request goes to either (a seeded choice
/// per request, so one device's Idle and Acknowledged may land on different nodes), the
/// tenants are registered through the first before the second starts, the refresh runs on the
/// second, and the counts are exact. The run's schema is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgresql_database_counts_exact() {
    let Some(url) = magicpush_testkit::database::test_database_url() else {
        return;
    };
    let mut config = FleetConfig::new(300, exe());
    config.nodes = 2;
    config.database_url = Some(url.clone());
    config.offline_fraction = 0.1;
    config.unregistered_fraction = 0.05;
    config.topics = 2;
    config.connections = 32;
    config.wait = Duration::from_secs(45);
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        fleet::run(&config, Arc::new(Progress::default())),
    )
    .await
    .expect("the fleet finishes in time")
    .expect("the fleet runs");
    let table = report.table();

    assert_eq!(report.store, Some(StoreKind::Postgres), "{table}");
    assert_eq!(report.nodes.len(), 2, "{table}");
    assert_eq!(report.refresh_node, 1, "{table}");
    assert_eq!(report.enrolled, 300, "{table}");
    assert_eq!(report.errors, 0, "{table}");
    assert_eq!(report.lost, 0, "{table}");
    assert_eq!(report.misplaced, 0, "{table}");
    assert!(report.counts_match, "{table}");
    assert_eq!(report.injected.online, 255, "{table}");
    assert_eq!(report.states["responded"], 255, "{table}");
    assert_eq!(report.states["unregistered"], 15, "{table}");
    assert_eq!(
        report.states["pending"] + report.states["unreachable"],
        30,
        "{table}"
    );
    assert_eq!(report.reported, 255, "{table}");
    assert_eq!((report.topics, report.topics_exact), (2, 2), "{table}");
    assert_eq!(report.topic_disallowed, 0, "{table}");
    // Every request counted once, on one node or the other, and both nodes got a fair share
    // (each request is a coin toss: 1,110 of them).
    let requests: Vec<u64> = report.nodes.iter().map(|n| n.requests).collect();
    assert_eq!(requests.iter().sum::<u64>(), 2 * 300 + 2 * 255, "{table}");
    assert!(requests.iter().all(|r| *r > 400), "{table}");
    assert!(
        report.nodes.iter().all(|n| n.peak_rss_mb.is_some()),
        "{table}"
    );
    assert!(report.passed(), "{table}");

    // The run's schema was dropped.
    let schema = report.database_schema.clone().expect("a schema");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let left = client
        .query("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .expect("query");
    assert!(left.is_empty(), "schema {schema} is still there");
    conn.abort();
}

/// Several nodes need a shared database: the error names the flag, before anything starts.
#[test]
fn several_nodes_without_a_database_are_refused() {
    let out = Command::new(exe())
        .args(["fleet", "--devices", "10", "--nodes", "2"])
        .env_remove("MAGICPUSH_FLEET_DATABASE_URL")
        .output()
        .expect("run magicpush-loadtest fleet");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--nodes 2 needs --database-url"),
        "{stderr}"
    );
}
