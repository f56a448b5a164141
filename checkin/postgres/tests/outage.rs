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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magicpush_postgres::{PostgresOptions, PostgresStore};
use magicpush_store::{Store, StoreError};
use magicpush_testkit::conformance::{authenticate, t};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

mod common;
use common::{admin, key, test_url, Schema};

/// Forwards 127.0.0.1:`port` to the database server until cut.
struct Forwarder {
    port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Forwarder {
        let listener = listen(0).await;
        let port = listener.local_addr().expect("local addr").port();
        let task = Some(tokio::spawn(forward(listener, target)));
        Forwarder { port, target, task }
    }

    /// The database becomes unreachable: no listener, every connection through it dropped.
    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// The database answers again, on the same port.
    async fn restore(&mut self) {
        let listener = listen(self.port).await;
        self.task = Some(tokio::spawn(forward(listener, self.target)));
    }
}

async fn listen(port: u16) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .expect("bind the forwarder");
    socket.listen(64).expect("listen")
}

/// Accepts and copies both ways. Aborting this task drops the listener and, with the
/// `JoinSet`, every connection it holds.
async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        conns.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// The `host:port` of a `postgres://user@host:port/db?…` URL, and the URL with another
/// authority.
fn authority(url: &str) -> (String, String, String) {
    let at = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = at + url[at..].find('/').expect("a database name after the host");
    (
        url[..at].to_owned(),
        url[at..end].to_owned(),
        url[end..].to_owned(),
    )
}

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
    let (head, host, tail) = authority(&schema.url());
    let target = tokio::net::lookup_host(&host)
        .await
        .expect("resolve the test server")
        .next()
        .expect("an address");
    let mut fwd = Forwarder::start(target).await;
    let via = format!("{head}127.0.0.1:{}{tail}", fwd.port);
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

    fwd.restore().await;
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
