//! The store conformance suite against [`SqliteStore`], plus durability and schema tests.

use std::sync::Arc;

use magicpush_checkin::mdm::{Command, Status};
use magicpush_checkin::store::conformance::{authenticate, report, t, token_update};
use magicpush_checkin::store::{
    EnqueueMode, PushOutcome, SqliteOptions, SqliteStore, Store, StoreError, DB_FILE_NAME,
};
use plist::Dictionary;

fn open_temp() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open store");
    (Arc::new(store) as Arc<dyn Store>, dir)
}

magicpush_checkin::store_conformance!(open_temp());

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
                .authenticate(&authenticate(&udid), t(0))
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
    let next = store.next_command("D00", false).await.unwrap().unwrap();
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
    assert_eq!(version, 1);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
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
                    .authenticate(&authenticate(&udid), t(0))
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
                    .authenticate(&authenticate(&udid), t(i))
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
    let pending: Vec<_> = msgs.iter().map(|m| store.authenticate(m, t(0))).collect();
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
/// `cargo test -p magicpush-checkin --release --test store_sqlite -- --ignored --nocapture`
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
                    .authenticate(&authenticate(&udid), t(0))
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
