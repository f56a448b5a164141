//! The store conformance suite against [`SqliteStore`], plus durability and schema tests.

use magicpush_store::prelude::*;
use std::sync::Arc;

use magicpush_mdm::{Command, Status};
use magicpush_sqlite::{SqliteOptions, SqliteStore, DB_FILE_NAME};
use magicpush_store::{EnqueueMode, PushOutcome, Store, StoreError};
use magicpush_testkit::conformance::{authenticate, report, t, token_update};
use plist::Dictionary;

fn open_temp() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    (Arc::new(store) as Arc<dyn Store>, dir)
}

magicpush_testkit::store_conformance!(open_temp());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = Command::device_information(&["DeviceName"]);
    let pending = Command::new("ProfileList", Dictionary::new());
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.path(), dir.path().join(DB_FILE_NAME));
        for i in 0..50 {
            let udid = format!("D{i:02}");
            store
                .authenticate(&authenticate(&udid), None, t(0))
                .await
                .unwrap();
            store
                .token_update(&token_update(&udid, 5), t(1))
                .await
                .unwrap();
        }
        let all: Vec<String> = (0..50).map(|i| format!("D{i:02}")).collect();
        store
            .enqueue(&cmd, &all, EnqueueMode::Always, t(2))
            .await
            .unwrap();
        store
            .enqueue(&pending, &all[..1], EnqueueMode::Always, t(2))
            .await
            .unwrap();
        store.record_push_attempts(&all, t(3)).await.unwrap();
        store
            .record_push_outcome("D00", &PushOutcome::Accepted, t(3))
            .await
            .unwrap();
        let ack = report(
            "D00",
            Status::Acknowledged,
            Some(&cmd.uuid),
            Dictionary::new(),
        );
        store.record_report(&ack, t(4)).await.unwrap();
        store.check_out("D49", t(5)).await.unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.count().await.unwrap(), 50);
    let d0 = store.device("D00").await.unwrap().unwrap();
    assert_eq!(d0.enrolled_at, Some(t(1)));
    assert_eq!(d0.push_outcome, Some(PushOutcome::Accepted));
    assert_eq!(d0.first_report_after_push_at, Some(t(4)));
    assert_eq!(store.results("D00").await.unwrap().len(), 1);
    let next = store
        .next_command("D00", false, t(1_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.uuid, pending.uuid);
    assert!(store.has_queued("D01", "DeviceInformation").await.unwrap());
    assert_eq!(store.pushable().await.unwrap().len(), 49, "D49 checked out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
    }
    let err = SqliteStore::open_file(&path, SqliteOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade magicpush"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_schema_version_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    drop(SqliteStore::open(dir.path()).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 12);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// The schema magicpush wrote as version 1 (devices keyed by rowid, a `queue_by_type` index).
const SCHEMA_V1: &str = "CREATE TABLE devices (
        udid TEXT PRIMARY KEY NOT NULL,
        device_name TEXT, model TEXT, model_name TEXT, product_name TEXT,
        os_version TEXT, build_version TEXT, serial_number TEXT, imei TEXT, meid TEXT,
        phone_number TEXT,
        topic TEXT, token TEXT, push_magic TEXT, unlock_token BLOB, bootstrap_token BLOB,
        awaiting_configuration INTEGER NOT NULL DEFAULT 0,
        authenticated_at INTEGER, enrolled_at INTEGER, token_updated_at INTEGER,
        last_seen_at INTEGER, checked_out_at INTEGER, info_collected_at INTEGER,
        last_push_at INTEGER, push_outcome TEXT, push_reason TEXT, push_unregistered_ms INTEGER,
        push_outcome_at INTEGER, last_report_at INTEGER, first_report_after_push_at INTEGER
    );
    CREATE TABLE users (
        udid TEXT NOT NULL REFERENCES devices(udid),
        user_id TEXT NOT NULL,
        short_name TEXT, long_name TEXT,
        token TEXT NOT NULL, push_magic TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (udid, user_id)
    );
    CREATE TABLE commands (
        uuid TEXT PRIMARY KEY NOT NULL,
        request_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        udid TEXT NOT NULL REFERENCES devices(udid),
        uuid TEXT NOT NULL REFERENCES commands(uuid),
        request_type TEXT NOT NULL,
        queued_at INTEGER NOT NULL,
        not_now_at INTEGER,
        UNIQUE (udid, uuid)
    );
    CREATE INDEX queue_by_device ON queue (udid, id);
    CREATE INDEX queue_by_type ON queue (udid, request_type);
    CREATE TABLE results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        udid TEXT NOT NULL,
        uuid TEXT NOT NULL,
        request_type TEXT,
        status TEXT NOT NULL,
        error_chain TEXT NOT NULL,
        raw BLOB NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX results_by_device ON results (udid, id);
    PRAGMA user_version = 1;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    let cmd = Command::new("ProfileList", Dictionary::new());
    {
        // A database as version 1 left it: two devices (one enrolled, with a user channel),
        // a queued command, a result.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;")
            .unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO devices (udid, serial_number, topic, token, push_magic,
               awaiting_configuration, authenticated_at, enrolled_at, token_updated_at,
               last_seen_at, push_outcome, push_reason)
             VALUES ('B', 'SN-B', 'com.apple.mgmt.External.test', 'abab', 'magic-B', 0,
               1000, 2000, 2000, 2000, 'accepted', NULL),
               ('A', 'SN-A', 'com.apple.mgmt.External.test', NULL, NULL, 0,
               1000, NULL, NULL, 1000, 'failed', 'DeadlineExceeded'),
               ('C', 'SN-C', NULL, NULL, NULL, 0, 1000, NULL, NULL, 1000, NULL, NULL);
             INSERT INTO users VALUES ('B', 'U1', 'u', 'User', 'cdcd', 'umagic', 2000);
             INSERT INTO commands VALUES ('{uuid}', 'ProfileList', x'00', 3000);
             INSERT INTO queue (udid, uuid, request_type, queued_at)
               VALUES ('B', '{uuid}', 'ProfileList', 3000);
             INSERT INTO results (udid, uuid, request_type, status, error_chain, raw, at)
               VALUES ('B', 'old', NULL, 'Error', '[]', x'00', 2500);",
            uuid = cmd.uuid
        ))
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let devices = store.devices().await.unwrap();
    let udids: Vec<&str> = devices.iter().map(|d| d.udid.as_str()).collect();
    assert_eq!(udids, ["A", "B", "C"]);
    // Version 11: a device stored without a topic still reads as having none.
    assert_eq!(devices[2].topic, None);
    let by_topic = store.devices_page_by_topic(None, 10).await.unwrap();
    let by_topic: Vec<&str> = by_topic.iter().map(|d| d.udid.as_str()).collect();
    assert_eq!(by_topic, ["C", "A", "B"]);
    assert_eq!(
        devices[0].push_outcome,
        Some(PushOutcome::Failed {
            reason: magicpush_engine::EngineCause::DeadlineExceeded.into()
        })
    );
    let b = &devices[1];
    assert_eq!(b.info.serial_number.as_deref(), Some("SN-B"));
    assert_eq!(
        (b.token.as_deref(), b.push_magic.as_deref()),
        (Some("abab"), Some("magic-B"))
    );
    assert!(b.is_pushable());
    assert_eq!(store.users("B").await.unwrap().len(), 1);
    assert_eq!(store.results("B").await.unwrap().len(), 1);
    assert!(store.has_queued("B", "ProfileList").await.unwrap());
    // The migrated store works as a new one: the queued command is answered and dequeued.
    let ack = report(
        "B",
        Status::Acknowledged,
        Some(&cmd.uuid),
        Dictionary::new(),
    );
    let out = store.record_report(&ack, t(10)).await.unwrap();
    assert!(out.dequeued);
    assert_eq!(out.request_type.as_deref(), Some("ProfileList"));
    assert!(store.queued("B").await.unwrap().is_empty());
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 12);
    // Version 5: the engine's text for a push's reason became its stored name.
    let reason: String = conn
        .query_row(
            "SELECT push_reason FROM devices WHERE udid = 'A'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reason, "engine:deadline_exceeded");
    let devices_sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'devices'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(devices_sql.ends_with("WITHOUT ROWID"), "{devices_sql}");
    // Version 11: keyed by tenant, the UDID still unique, the topic index gone.
    assert!(
        devices_sql.contains("PRIMARY KEY (topic, udid)"),
        "{devices_sql}"
    );
    let no_topic: i64 = conn
        .query_row("SELECT count(*) FROM devices WHERE topic = ''", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(no_topic, 1);
    let topic_index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'devices_by_topic'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(topic_index, 0);
    // Version 12: the results carry their device's topic (the queued command was answered
    // after the migration, the older result was migrated).
    let result_topics: Vec<String> = conn
        .prepare("SELECT topic FROM results WHERE udid = 'B' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        result_topics,
        [
            "com.apple.mgmt.External.test",
            "com.apple.mgmt.External.test"
        ]
    );
    let twin = conn.execute(
        "INSERT INTO devices (udid, topic) VALUES ('B', 'com.apple.mgmt.External.other')",
        [],
    );
    assert!(twin.is_err(), "a second row for one UDID was accepted");
    let type_index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'queue_by_type'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(type_index, 0);
    // Version 3: identity bindings, none yet for the migrated devices.
    let bound: i64 = conn
        .query_row(
            "SELECT count(*) FROM devices WHERE identity_sha256 IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bound, 0);
    let identity_index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'devices_by_identity'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(identity_index, 1);
    // Version 4: the identity index is partial, over bound devices only.
    let identity_index_sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'devices_by_identity'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        identity_index_sql.ends_with("WHERE identity_sha256 IS NOT NULL"),
        "{identity_index_sql}"
    );
    // The references still point at the rebuilt table and are still enforced.
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let orphan = conn.execute(
        "INSERT INTO queue (topic, udid, uuid, request_type, queued_at)
         VALUES ('', 'nobody', ?1, 'ProfileList', 1)",
        [&cmd.uuid],
    );
    assert!(
        orphan.is_err(),
        "a queue row for an unknown device was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_write_does_not_undo_its_batch() {
    // Fire many writes at once so they share commits; the failing ones (unknown devices)
    // must fail alone.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let udid = format!("D{i:03}");
            if i % 2 == 0 {
                store
                    .authenticate(&authenticate(&udid), None, t(0))
                    .await
                    .map(|_| true)
            } else {
                store.check_out(&udid, t(0)).await.map(|_| false)
            }
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(true) => ok += 1,
            Err(StoreError::UnknownDevice { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(store.count().await.unwrap(), 50);
}

/// Set only in the child process of [`acknowledged_writes_survive_sigkill`].
const CHILD_DIR_ENV: &str = "MAGICPUSH_TEST_STORE_CHILD_DIR";

/// The child half of [`acknowledged_writes_survive_sigkill`]: writes devices from 8 concurrent
/// tasks until killed, printing `ACK <udid>` after each write is acknowledged. Without the
/// environment variable (a normal test run) it returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = Arc::new(SqliteStore::open(std::path::Path::new(&dir)).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0.. {
                let udid = format!("W{w}-{i}");
                store
                    .authenticate(&authenticate(&udid), None, t(i))
                    .await
                    .unwrap();
                store
                    .token_update(&token_update(&udid, 1), t(i))
                    .await
                    .unwrap();
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {udid}").unwrap();
                out.flush().unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    use std::io::BufRead as _;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child test process");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(udid) = line.strip_prefix("ACK ") {
                if tx.send(udid.to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < 400 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(udid) => acked.push(udid),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "child stopped acknowledging after {} writes: {e}",
                    acked.len()
                );
            }
        }
    }
    // SIGKILL mid-burst: writes are in flight in the writer thread.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acknowledgements already in the pipe when the child died count too.
    while let Ok(udid) = rx.recv_timeout(Duration::from_millis(200)) {
        acked.push(udid);
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(dir.path()).unwrap();
        let count = store.count().await.unwrap();
        assert!(
            count >= acked.len(),
            "{count} devices, {} acknowledged",
            acked.len()
        );
        for udid in &acked {
            let d = store.device(udid).await.unwrap();
            let d = d.unwrap_or_else(|| panic!("acknowledged {udid} lost"));
            assert!(d.is_enrolled(), "{udid} acknowledged enrolled but is not");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let before = store.commit_stats();
    // Every write is handed to the writer when its future is created, so 500 writes are
    // waiting before the first commit finishes.
    let msgs: Vec<_> = (0..500).map(|i| authenticate(&format!("D{i}"))).collect();
    let pending: Vec<_> = msgs
        .iter()
        .map(|m| store.authenticate(m, None, t(0)))
        .collect();
    for p in pending {
        p.await.unwrap();
    }
    let stats = store.commit_stats();
    let (commits, writes) = (stats.commits - before.commits, stats.writes - before.writes);
    assert_eq!(writes, 500);
    assert!(
        commits < 100,
        "{commits} commits for {writes} writes: no grouping"
    );
    assert_eq!(store.count().await.unwrap(), 500);
}

/// Not a pass/fail test: prints durable write throughput with group commit.
/// `cargo test -p magicpush-sqlite --release --test store_sqlite -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn store_write_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let (tasks_n, per_task) = (64, 100);
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..tasks_n {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            for i in 0..per_task {
                let udid = format!("W{w}-{i}");
                store
                    .authenticate(&authenticate(&udid), None, t(0))
                    .await
                    .unwrap();
                store
                    .token_update(&token_update(&udid, 1), t(1))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let elapsed = started.elapsed();
    let writes = 2 * tasks_n * per_task;
    let stats = store.commit_stats();
    println!(
        "{writes} durable writes from {tasks_n} concurrent clients in {elapsed:?}: {:.0} writes/s, {} commits (mean batch {:.1})",
        writes as f64 / elapsed.as_secs_f64(),
        stats.commits,
        stats.writes as f64 / stats.commits.max(1) as f64
    );
}

/// The data directory is 0700; the database and its WAL and shared-memory files 0600.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = SqliteStore::open(&dir).unwrap();
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for name in [
        DB_FILE_NAME.to_owned(),
        format!("{DB_FILE_NAME}-wal"),
        format!("{DB_FILE_NAME}-shm"),
    ] {
        let path = dir.join(&name);
        assert!(path.exists(), "{name}");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    drop(store);
    // An existing database left readable by others is tightened when opened.
    let db = dir.join(DB_FILE_NAME);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(SqliteStore::open(&dir).unwrap());
    assert_eq!(mode(&db), 0o600);
}

/// The push certificates' private keys are sealed like the devices' secrets: those written in
/// the clear are sealed when a key is first given, new ones are written sealed, and both read
/// back as they were written. No key's bytes stay in the database's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_certificate_keys_are_sealed_with_the_secrets_key() {
    use magicpush_mdm::Secret;
    use magicpush_sqlite::SqliteOptions;
    use magicpush_store::{SecretKey, StoredPushCert, StoredRequest};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cert = |topic: &str, key: &[u8]| StoredPushCert {
        topic: topic.into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        key_pem: Secret::new(key.to_vec()),
        registered_at: t(0),
    };
    let request = |id: &str, key: &[u8]| StoredRequest {
        id: id.into(),
        created_at: t(0),
        facts: "{}".into(),
        key_pkcs8: Secret::new(key.to_vec()),
    };
    let (old_key, old_request) = (b"PLAINTEXT-PUSH-KEY-0001", b"PLAINTEXT-REQUEST-KEY-1");
    let (new_key, new_request) = (b"PLAINTEXT-PUSH-KEY-0002", b"PLAINTEXT-REQUEST-KEY-2");
    let plain = SqliteStore::open(&dir).unwrap();
    plain.put_push_cert(&cert("t.old", old_key)).await.unwrap();
    plain
        .add_pushcert_request(&request("r-old", old_request))
        .await
        .unwrap();
    drop(plain);
    let options = SqliteOptions {
        secrets_key: Some(Arc::new(SecretKey::from_bytes(&[9; 32]).unwrap())),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&dir, options).unwrap();
    store.put_push_cert(&cert("t.new", new_key)).await.unwrap();
    store
        .add_pushcert_request(&request("r-new", new_request))
        .await
        .unwrap();
    let certs = store.push_certs().await.unwrap();
    let keys: Vec<&[u8]> = certs.iter().map(|c| c.key_pem.expose()).collect();
    assert_eq!(keys, [&new_key[..], &old_key[..]]);
    let requests = store.pushcert_requests().await.unwrap();
    let mut request_keys: Vec<&[u8]> = requests.iter().map(|r| r.key_pkcs8.expose()).collect();
    request_keys.sort();
    assert_eq!(request_keys, [&old_request[..], &new_request[..]]);
    drop(store);
    // Checkpointed and closed: the database file holds everything; no key lies in clear.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for secret in [&old_key[..], old_request, new_key, new_request] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} holds {} in clear",
                path.display(),
                String::from_utf8_lossy(secret)
            );
        }
    }
}

/// With a secrets key, UnlockTokens and BootstrapTokens are stored encrypted; the database then
/// refuses to open without that key or with another; a plaintext database is encrypted when a
/// key is first given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_with_a_key() {
    use magicpush_mdm::Secret;
    use magicpush_sqlite::SqliteOptions;
    use magicpush_store::SecretKey;
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let with = |k: u8| SqliteOptions {
        secrets_key: Some(Arc::new(SecretKey::from_bytes(&[k; 32]).unwrap())),
        ..SqliteOptions::default()
    };
    // Written in the clear first, then the key arrives.
    let plain = SqliteStore::open(&dir).unwrap();
    plain
        .authenticate(&authenticate("OLD"), None, t(0))
        .await
        .unwrap();
    plain
        .token_update(&token_update("OLD", 1), t(1))
        .await
        .unwrap();
    drop(plain);
    let store = SqliteStore::open_with(&dir, with(1)).unwrap();
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    store
        .set_bootstrap_token("A", Some(&Secret::new(b"bootstrap-secret".to_vec())), t(2))
        .await
        .unwrap();
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(
        d.unlock_token.as_ref().map(Secret::expose),
        Some(&b"unlock-secret-bytes"[..])
    );
    assert_eq!(
        store
            .bootstrap_token("A")
            .await
            .unwrap()
            .as_ref()
            .map(Secret::expose),
        Some(&b"bootstrap-secret"[..])
    );
    let old = store.device("OLD").await.unwrap().unwrap();
    assert_eq!(
        old.unlock_token.as_ref().map(Secret::expose),
        Some(&b"unlock-secret-bytes"[..]),
        "the plaintext value was encrypted and still reads back"
    );
    drop(store);
    // On disk, no plaintext.
    let conn = rusqlite::Connection::open(dir.join(DB_FILE_NAME)).unwrap();
    let mut stmt = conn
        .prepare("SELECT unlock_token, bootstrap_token FROM devices")
        .unwrap();
    let rows: Vec<[Option<Vec<u8>>; 2]> = stmt
        .query_map([], |r| Ok([r.get(0)?, r.get(1)?]))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for pair in rows {
        for v in pair.into_iter().flatten() {
            assert!(v.starts_with(b"mpk1"), "sealed");
            let text = String::from_utf8_lossy(&v);
            assert!(!text.contains("unlock-secret") && !text.contains("bootstrap-secret"));
        }
    }
    drop(stmt);
    drop(conn);
    // Without the key, or with another: refused at open, clearly.
    let err = SqliteStore::open(&dir).unwrap_err().to_string();
    assert!(err.contains("--secrets-key-file"), "{err}");
    let err = SqliteStore::open_with(&dir, with(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not the key"), "{err}");
    assert!(SqliteStore::open_with(&dir, with(1)).is_ok());
}

/// A process killed mid-refresh leaves its run and the devices it marked in the database;
/// the next process on the directory (a new node) sweeps them at once (the old node is not
/// one it has heard of): the unanswered attempts are taken back, the answered one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cut_by_the_process_death_is_taken_back_after_a_restart() {
    use magicpush_store::cluster::{RefreshRunRecord, RunState};
    use magicpush_testkit::conformance::{enroll, node};
    let dir = tempfile::tempdir().unwrap();
    let udids: Vec<String> = ["R1", "R2", "R3"].map(String::from).to_vec();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for udid in &udids {
            enroll(&store, udid, t(1)).await;
        }
        store.heartbeat(&node("old", t(10))).await.unwrap();
        let run = RefreshRunRecord::begin("run-old".into(), "old".into(), t(20));
        assert!(store.begin_refresh_run(&run).await.unwrap());
        store
            .add_refresh_run_devices(&run.id, &udids)
            .await
            .unwrap();
        let command = Command::device_information(&["DeviceName"]);
        store
            .queue_and_mark_pushes(&command, &udids, t(20))
            .await
            .unwrap();
        store
            .record_push_outcome("R1", &PushOutcome::Accepted, t(21))
            .await
            .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    store.heartbeat(&node("new", t(30))).await.unwrap();
    let swept = store.sweep_dead_runs(t(25), t(31)).await.unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(
        (swept[0].state, swept[0].devices, swept[0].withdrawn),
        (RunState::Abandoned, 3, 2)
    );
    let r1 = store.device("R1").await.unwrap().unwrap();
    assert_eq!(r1.push_outcome, Some(PushOutcome::Accepted));
    for udid in ["R2", "R3"] {
        let d = store.device(udid).await.unwrap().unwrap();
        assert_eq!(d.last_push_at, None, "{udid}");
    }
    let runs = store.refresh_runs(5).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].state, RunState::Abandoned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hash) = magicpush_store::enrollment::new_challenge();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.revoke_serial("0abc", "UDID-1", t(0)).await.unwrap();
        store
            .add_invitation(&magicpush_store::Invitation {
                id: "inv-1".into(),
                topic: None,
                note: None,
                uses: 2,
                enrolled: 0,
                created_at: t(0),
                expires_at: t(60),
                withdrawn_at: None,
            })
            .await
            .unwrap();
        store
            .add_challenge(&magicpush_store::StoredChallenge {
                hash,
                enrollment_id: "enr".into(),
                invitation_id: Some("inv-1".into()),
                created_at: t(0),
                expires_at: t(60),
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .consume_challenge(&hash, t(1))
                .await
                .unwrap()
                .as_deref(),
            Some("enr")
        );
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(store.is_revoked("0abc").await.unwrap());
    assert!(!store.is_revoked("0abd").await.unwrap());
    assert_eq!(store.consume_challenge(&hash, t(2)).await.unwrap(), None);
    let invitation = store.invitation("inv-1").await.unwrap().unwrap();
    assert_eq!((invitation.enrolled, invitation.uses_left()), (1, 1));
}

/// A device CA kept before a secrets key was given is sealed when the key comes, and reads
/// back the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_ca_key_is_sealed_when_a_secrets_key_comes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = magicpush_store::StoredDeviceCa {
        cert_pem: "CA".into(),
        key_pem: magicpush_mdm::Secret::new(b"-----BEGIN PRIVATE KEY----- plain".to_vec()),
        created_at: t(0),
    };
    {
        let plain = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(plain.create_device_ca(&ca).await.unwrap(), ca);
    }
    let options = SqliteOptions {
        secrets_key: Some(Arc::new(
            magicpush_store::SecretKey::from_bytes(&[7; 32]).unwrap(),
        )),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.path(), options).unwrap();
    assert_eq!(store.device_ca().await.unwrap(), Some(ca));
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let stored: Vec<u8> = conn
        .query_row("SELECT key FROM device_ca", [], |r| r.get(0))
        .unwrap();
    assert!(magicpush_store::secrets::is_sealed(&stored));
}
