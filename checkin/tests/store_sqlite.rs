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
