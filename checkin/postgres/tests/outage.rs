//! The database going away and coming back, without stopping the shared test server: the
//! store reaches PostgreSQL through a TCP forwarder in the test, which is cut (its listener
//! and every connection dropped) and restored on the same port.
//!
//! Checked: while it is cut, writes and reads fail with [`StoreError::Unavailable`] (what the
//! server answers 503 with `Retry-After` for) and `health` says so; once it is back, the same
//! store serves again without being reopened; and every write acknowledged before, during or
//! after the outage is in the database (an acknowledgement means committed). Skipped without
//! `MAGICPUSH_TEST_DATABASE_URL`, failing under `CI=true` (see `tests/common`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magicpush_postgres::{PostgresOptions, PostgresStore};
use magicpush_store::{Store, StoreError};
use magicpush_testkit::conformance::{authenticate, t};
use magicpush_testkit::forward::{redirect_url, Forwarder};

mod common;
use common::{admin, key, test_url, Schema};

fn is_unavailable<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Unavailable { .. }))
}

/// Retries `f` until it succeeds or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + within;
    loop {
        let r = f().await;
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_going_away_and_back_loses_no_acknowledged_write() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let (_, host) = redirect_url(&schema.url(), 0).expect("a postgres:// URL");
    let target = tokio::net::lookup_host(&host)
        .await
        .expect("resolve the test server")
        .next()
        .expect("an address");
    let mut fwd = Forwarder::start(target).await.expect("start the forwarder");
    let (via, _) = redirect_url(&schema.url(), fwd.port()).expect("a postgres:// URL");
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::open_with(&via, key(), PostgresOptions::default())
            .await
            .expect("open through the forwarder"),
    );

    // Devices write all along; each acknowledged (Ok) write is remembered.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (store, acked, errors, stop) = (
            Arc::clone(&store),
            Arc::clone(&acked),
            Arc::clone(&errors),
            Arc::clone(&stop),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let udid = format!("W{w}-{i:05}");
                match store.authenticate(&authenticate(&udid), None, t(i)).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(udid);
                    }
                    Err(e) => errors.lock().unwrap().push(e),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_cut = acked.lock().unwrap().len();
    assert!(before_cut > 0, "writes go through before the cut");
    assert!(store.health().await.is_ok());

    fwd.cut().await;
    // Writes and reads fail, as unreachable, while it is away.
    let write = eventually(Duration::from_secs(15), || async {
        match store
            .authenticate(&authenticate("DURING"), None, t(0))
            .await
        {
            Err(e @ StoreError::Unavailable { .. }) => Ok(e),
            other => Err(StoreError::Corrupt {
                what: format!("still written while cut: {other:?}"),
            }),
        }
    })
    .await;
    assert!(write.is_ok(), "{write:?}");
    let read = store.device("W0-00000").await;
    assert!(is_unavailable(&read), "{read:?}");
    let health = store.health().await;
    assert!(is_unavailable(&health), "{health:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = acked.lock().unwrap().len();

    fwd.restore().expect("restore the forwarder");
    // The same store serves again by itself.
    let back = eventually(Duration::from_secs(20), || async {
        store.authenticate(&authenticate("AFTER"), None, t(0)).await
    })
    .await;
    assert!(back.is_ok(), "{back:?}");
    assert!(store.health().await.is_ok());
    assert!(store.device("AFTER").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > during,
        "writes acknowledged again after the outage"
    );

    // Every failure was the database being unreachable (503 at the server), never a device
    // error; and there were some.
    let errors = errors.lock().unwrap().clone();
    assert!(!errors.is_empty(), "the outage was seen by the writers");
    for e in &errors {
        assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    }
    // Nothing acknowledged is lost: read straight from the database, not through the store.
    let rows = admin(&schema.url())
        .await
        .query("SELECT udid FROM devices", &[])
        .await
        .expect("read devices");
    let stored: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}
