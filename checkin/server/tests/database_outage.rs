//! A server on PostgreSQL whose database goes away and comes back: devices get 503 with
//! `Retry-After` meanwhile (never 401, never a 200 for a write that did not commit),
//! `/healthz` says the database is unreachable, and the server serves again by itself.
//!
//! The store reaches the database named by `MAGICPUSH_TEST_DATABASE_URL` through a TCP
//! forwarder the test cuts and restores (the shared server is never stopped), in a fresh
//! schema. Without the variable the test prints a line and passes; under `CI=true` it fails.

mod server_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use magicpush_fixtures::plists::{self, Device};
use magicpush_postgres::{PostgresStore, SecretKey};
use magicpush_store::Store;
use magicpush_testkit::forward::{redirect_url, Forwarder};
use plist::Dictionary;
use server_common::{Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use magicpush_testkit::database::test_database_url as test_url;

/// A device request over a fresh connection: the status and the response's head (headers
/// lower-cased), read raw so the headers can be checked.
async fn put(base: &str, path: &str, dict: &Dictionary) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let body = plists::to_xml(dict);
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-apple-aspen-mdm-checkin\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    (status, head)
}

/// `GET /healthz` over a fresh connection: the status and the whole answer.
async fn healthz(base: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Retries `f` until it returns `want` or `within` passes; the last answer.
async fn until<F, Fut>(within: Duration, want: u16, mut f: F) -> (u16, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let deadline = Instant::now() + within;
    loop {
        let got = f().await;
        if got.0 == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_get_503_with_retry_after_while_the_database_is_away() {
    let Some(url) = test_url() else { return };
    let schema = format!("t_{:016x}", rand_u64());
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let in_schema = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let (_, host) = redirect_url(&in_schema, 0).expect("a postgres:// URL");
    let target = tokio::net::lookup_host(&host)
        .await
        .unwrap()
        .next()
        .unwrap();
    let mut fwd = Forwarder::start(target).await.expect("forwarder");
    let (via, _) = redirect_url(&in_schema, fwd.port()).unwrap();
    let key = Arc::new(SecretKey::from_bytes(&[9; 32]).unwrap());
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&via, key).await.expect("open"));
    let srv = TestServer::start(Options {
        store: Some(Arc::clone(&store)),
        ..Options::default()
    })
    .await;
    let topic = srv.topic();
    let dev = Device::iphone();

    let (s, _) = put(
        &srv.url,
        "/mdm/checkin",
        &plists::authenticate(&dev, &topic),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = put(
        &srv.url,
        "/mdm/checkin",
        &plists::token_update(&dev, &topic),
    )
    .await;
    assert_eq!(s, 200);

    let idle = plists::report_idle(&dev);
    fwd.cut().await;
    let (s, head) = until(Duration::from_secs(15), 503, || {
        put(&srv.url, "/mdm/server", &idle)
    })
    .await;
    assert_eq!(s, 503, "{head}");
    assert!(head.contains("\r\nretry-after: 5"), "{head}");
    // A check-in too: 503, never 401.
    let (s, head) = put(
        &srv.url,
        "/mdm/checkin",
        &plists::token_update(&dev, &topic),
    )
    .await;
    assert_eq!(s, 503, "{head}");
    assert!(head.contains("\r\nretry-after: "), "{head}");
    let (s, text) = healthz(&srv.url).await;
    assert_eq!(s, 503, "{text}");
    assert!(text.contains(r#""database":"unreachable""#), "{text}");

    fwd.restore().expect("restore");
    let (s, head) = until(Duration::from_secs(20), 200, || {
        put(&srv.url, "/mdm/server", &idle)
    })
    .await;
    assert_eq!(s, 200, "{head}");
    let (s, text) = healthz(&srv.url).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains(r#""database":"ok""#), "{text}");
    let stored = store.device(&dev.udid).await.unwrap().expect("enrolled");
    assert!(stored.enrolled_at.is_some() && stored.last_report_at.is_some());
    drop(srv);
    let _ = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
