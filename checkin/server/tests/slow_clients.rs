//! Slow and idle clients cannot hold the server: slow headers, slow bodies and idle
//! connections are closed on time, connections beyond the cap are closed at once, and a
//! device's check-in is served meanwhile. Timeouts are short here; the defaults are in
//! `ListenerSettings`.

mod server_common;

use std::time::{Duration, Instant};

use http::StatusCode;
use magicpush_fixtures::plists;
use magicpush_server::http::timing::BodyPolicy;
use magicpush_server::http::ListenerSettings;
use server_common::{device, Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn settings() -> ListenerSettings {
    ListenerSettings {
        max_connections: 8,
        header_read_timeout: Duration::from_millis(500),
        body: BodyPolicy {
            timeout: Duration::from_secs(5),
            min_rate: 1000,
            grace: Duration::from_millis(300),
        },
        idle_timeout: Duration::from_millis(600),
        ..ListenerSettings::default()
    }
}

async fn server() -> TestServer {
    TestServer::start(Options {
        listener: settings(),
        ..Options::default()
    })
    .await
}

async fn connect(srv: &TestServer) -> TcpStream {
    TcpStream::connect(srv.handle.as_ref().unwrap().local_addr())
        .await
        .unwrap()
}

/// A keep-alive connection that has had one request answered, and now waits.
async fn after_one_request(srv: &TestServer) -> TcpStream {
    let mut kept = connect(srv).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    kept
}

/// Reads until the server closes the connection (or `within` passes); what it sent and when
/// it closed.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            within.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(started.elapsed()),
                )
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let srv = server().await;
    let mut s = connect(&srv).await;
    s.write_all(b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = until_closed(&mut s, Duration::from_secs(5)).await;
    let closed = closed.expect("the server closed a connection that never finished its headers");
    assert!(closed < Duration::from_secs(2), "closed after {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408() {
    let srv = server().await;
    let mut s = connect(&srv).await;
    s.write_all(
        b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-apple-aspen-mdm-checkin\r\nContent-Length: 100000\r\n\r\n",
    )
    .await
    .unwrap();
    let writer = tokio::spawn(async move {
        // 20 bytes/s, under the 1,000 required.
        for _ in 0..100 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    });
    let mut s = writer.await.unwrap();
    let (answer, _) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("too slow"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_fresh_or_kept_alive() {
    let srv = server().await;
    let mut fresh = connect(&srv).await;
    let (_, closed) = until_closed(&mut fresh, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle fresh connection is closed");
    assert!(closed < Duration::from_secs(2), "after {closed:?}");
    // After one request on a keep-alive connection: closed once idle, not before.
    let mut kept = after_one_request(&srv).await;
    let (_, closed) = until_closed(&mut kept, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle keep-alive connection is closed");
    assert!(
        closed >= Duration::from_millis(300),
        "too early: {closed:?}"
    );
    assert!(closed < Duration::from_secs(2), "after {closed:?}");
}

/// hyper starts its header timer as soon as an HTTP/1.1 connection waits for its next request,
/// so a kept-alive connection idles out after the header timeout when that is the shorter one
/// (as it is by default: 30 s against 120 s). The README says so; this keeps it true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_keep_alive_ends_at_the_header_timeout_when_that_is_shorter() {
    let srv = TestServer::start(Options {
        listener: ListenerSettings {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
            ..settings()
        },
        ..Options::default()
    })
    .await;
    let mut kept = after_one_request(&srv).await;
    let (_, closed) = until_closed(&mut kept, Duration::from_secs(10)).await;
    let closed = closed.expect("the idle keep-alive connection is closed");
    assert!(closed < Duration::from_secs(5), "after {closed:?}");
}

/// A socket that sends nothing, or only HTTP/2's preface, is closed at the header timeout
/// counted from accept, not at the (here far longer) idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_ends_at_the_header_timeout() {
    let srv = TestServer::start(Options {
        listener: ListenerSettings {
            header_read_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_secs(60),
            ..settings()
        },
        ..Options::default()
    })
    .await;
    let mut silent = connect(&srv).await;
    let mut preface_only = connect(&srv).await;
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    for (what, stream) in [("silent", &mut silent), ("preface only", &mut preface_only)] {
        let (_, closed) = until_closed(stream, Duration::from_secs(10)).await;
        let closed = closed.unwrap_or_else(|| panic!("{what}: never closed"));
        assert!(closed < Duration::from_secs(5), "{what}: after {closed:?}");
    }
    // A client that does send its request in time is served as before.
    let kept = after_one_request(&srv).await;
    drop(kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_devices_still_get_in() {
    let srv = TestServer::start(Options {
        listener: ListenerSettings {
            max_connections: 3,
            idle_timeout: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(3),
            ..settings()
        },
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&srv).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = connect(&srv).await;
    let (_, closed) = until_closed(&mut extra, Duration::from_secs(2)).await;
    let closed = closed.expect("a connection over the cap is closed");
    assert!(closed < Duration::from_millis(500), "after {closed:?}");
    // Once the idle holders are closed, devices get in again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (s, body) = srv
        .put(
            "/mdm/checkin",
            &plists::authenticate(&device(1), &srv.topic()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_is_served_while_slow_clients_hold_connections() {
    let srv = server().await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut s = connect(&srv).await;
        s.write_all(b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nab")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let (s, body) = srv
        .put(
            "/mdm/checkin",
            &plists::authenticate(&device(2), &srv.topic()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// HTTP/2: keep-alive PINGs keep bytes moving but do not keep an idle connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_despite_pings() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let srv = TestServer::start(Options {
        listener: ListenerSettings {
            h2_keepalive: Duration::from_millis(100),
            ..settings()
        },
        ..Options::default()
    })
    .await;
    let tcp = connect(&srv).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/healthz")
        .header(http::header::HOST, "x")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = resp.into_body().collect().await;
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
}

/// A connection still in a request after the drain timeout is closed by shutdown, which
/// returns only then (a body that trickles in, well within its own time limits).
#[tokio::test]
async fn shutdown_ends_a_lingering_connection_after_the_drain_timeout() {
    let mut srv = TestServer::start(Options {
        listener: ListenerSettings {
            drain_timeout: Duration::from_millis(300),
            body: BodyPolicy {
                timeout: Duration::from_secs(60),
                min_rate: 1,
                grace: Duration::from_secs(30),
            },
            idle_timeout: Duration::from_secs(60),
            ..ListenerSettings::default()
        },
        ..Options::default()
    })
    .await;
    let mut lingering = connect(&srv).await;
    lingering
        .write_all(b"PUT /mdm/checkin HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n<?xml")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while srv.handle.as_ref().unwrap().open_connections() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(srv.handle.as_ref().unwrap().open_connections(), 1);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), srv.shutdown())
        .await
        .expect("shutdown returned");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the drain timeout was waited"
    );
    // The socket is closed: a read ends (EOF or reset), it does not hang.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), lingering.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the lingering connection is closed: {read:?}"
    );
}
