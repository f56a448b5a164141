//! The engine's pool against the mock APNs: every push ends in exactly one outcome, through
//! errors, limits, GOAWAYs, drops, silence and certificate swaps.

use std::collections::HashSet;
use std::time::Duration;

use magicpush_engine::pool::backoff::Backoff;
use magicpush_engine::pool::plan::RetryPolicy;
use magicpush_engine::{Client, ClientBuilder, DevicePush, DeviceToken, PushError, PushResult};
use magicpush_fixtures::{CertKey, TestPki};
use magicpush_mock_apns::{MockConfig, MockHandle, Reason as MockReason};

mod common;

use common::{cert, setup, Setup};

impl Setup {
    fn builder(&self) -> ClientBuilder {
        self.builder_with(&self.pki.push)
    }

    fn builder_with(&self, ck: &CertKey) -> ClientBuilder {
        Client::builder()
            .certificate(cert(ck))
            .endpoint(self.mock.url().parse().unwrap())
            .trust_anchor_pem(self.pki.ca.cert_pem().as_bytes())
            .unwrap()
            .web_roots(false)
            .connections(2)
            .deadline(Duration::from_secs(20))
    }
}

fn token(i: usize) -> DeviceToken {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    bytes[31] = 0x5a;
    DeviceToken::from_bytes(&bytes).unwrap()
}

fn pushes(n: usize) -> Vec<DevicePush> {
    (0..n)
        .map(|i| DevicePush::new(token(i), format!("magic-{i}")))
        .collect()
}

/// Pushes all, checks each input got exactly one outcome, returns them in input order.
async fn push_all(client: &Client, pushes: Vec<DevicePush>) -> Vec<PushResult> {
    let n = pushes.len();
    let mut out: Vec<Option<PushResult>> = vec![None; n];
    let mut bulk = client.push_bulk(pushes);
    let run = async {
        while let Some(item) = bulk.next().await {
            assert!(
                out[item.index].is_none(),
                "push {} reported twice",
                item.index
            );
            out[item.index] = Some(item.result);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bulk push finishes");
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| panic!("push {i} got no outcome")))
        .collect()
}

fn assert_all_delivered(results: &[PushResult]) {
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed, first: {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
}

fn assert_each_token_accepted(mock: &MockHandle, n: usize) {
    let counts = mock.accepted_by_token();
    for i in 0..n {
        let c = counts.get(token(i).as_hex()).copied().unwrap_or(0);
        assert!(c >= 1, "token {i} never reached the mock");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_with_apns_id() {
    let s = setup(MockConfig::default()).await;
    let client = s.builder().build().unwrap();
    let results = push_all(&client, pushes(300)).await;
    assert_all_delivered(&results);
    for r in &results {
        let d = r.as_ref().unwrap();
        assert_eq!(d.apns_id.len(), 36, "apns-id is a UUID: {}", d.apns_id);
        assert_eq!(d.attempts, 1);
    }
    let counts = s.mock.accepted_by_token();
    for i in 0..300 {
        assert_eq!(counts.get(token(i).as_hex()), Some(&1), "token {i}");
    }
    let status = client.status().await.unwrap();
    assert!((1..=2).contains(&status.open_connections), "{status:?}");
    client.shutdown().await;
}

/// A pool opens its connections as its load asks: one for a push, more once the open ones
/// carry half the streams they may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_as_the_load_asks() {
    let s = setup(MockConfig {
        max_streams: 10,
        delay: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let client = s.builder().connections(3).build().unwrap();
    assert_all_delivered(&push_all(&client, pushes(1)).await);
    assert_eq!(client.status().await.unwrap().open_connections, 1);
    assert_all_delivered(&push_all(&client, pushes(200)).await);
    assert_eq!(client.status().await.unwrap().open_connections, 3);
    assert_eq!(s.mock.stats().connections_opened, 3);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_gets_410_with_timestamp_and_bad_token_400() {
    let mut config = MockConfig::default();
    config.unregistered.insert(token(1).as_hex().to_owned());
    let s = setup(config).await;
    let client = s.builder().build().unwrap();
    let short = DeviceToken::from_hex("abcdef").unwrap();
    let mut list = pushes(3);
    list.push(DevicePush::new(short, "m"));
    let results = push_all(&client, list).await;
    assert!(results[0].is_ok());
    match &results[1] {
        Err(PushError::Unregistered {
            reason,
            timestamp_ms,
        }) => {
            assert_eq!(reason.as_str(), "Unregistered");
            assert!(timestamp_ms.is_some(), "410 carries a timestamp");
        }
        other => panic!("expected Unregistered, got {other:?}"),
    }
    match &results[3] {
        Err(
            e @ PushError::Rejected {
                status: 400,
                reason,
            },
        ) => {
            assert_eq!(reason.to_string(), "BadDeviceToken");
            assert!(e.is_token_invalid());
        }
        other => panic!("expected 400 BadDeviceToken, got {other:?}"),
    }
    // Permanent errors are never retried.
    assert_eq!(s.mock.stats().requests, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rejected_by_apns_fails_fast() {
    let s = setup(MockConfig::default()).await;
    let client = s.builder().build().unwrap();
    assert_all_delivered(&push_all(&client, pushes(5)).await);
    assert_eq!(client.status().await.unwrap().open_connections, 1);
    s.mock
        .reject_certificate(Some(MockReason::parse("BadCertificate").unwrap()));
    let first = client.push(DevicePush::new(token(100), "m")).await;
    assert!(
        matches!(&first, Err(PushError::CertificateRejected { reason, .. }) if reason.to_string() == "BadCertificate"),
        "{first:?}"
    );
    // The verdict needs the word of more than one connection: a lone connection's refusal
    // opens a second one for a second opinion.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while client.status().await.unwrap().open_connections < 2 {
        assert!(
            std::time::Instant::now() < until,
            "the second connection never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One connection's 403 is not a verdict; the next pushes reach both connections, and
    // the second connection's 403 is.
    let results = push_all(&client, pushes(50)).await;
    for r in &results {
        assert!(
            matches!(r, Err(PushError::CertificateRejected { .. })),
            "{r:?}"
        );
    }
    let requests = s.mock.stats().requests;
    let results = push_all(&client, pushes(50)).await;
    for r in &results {
        assert!(
            matches!(r, Err(PushError::CertificateRejected { .. })),
            "{r:?}"
        );
    }
    assert_eq!(
        s.mock.stats().requests,
        requests,
        "while rejected, pushes fail fast without reaching APNs"
    );
    let status = client.status().await.unwrap();
    assert_eq!(
        status.certificate_rejected.map(|r| r.to_string()),
        Some("BadCertificate".to_owned())
    );
    // A new certificate clears the state.
    s.mock.reject_certificate(None);
    client
        .replace_certificate(cert(&s.pki.push_renewal))
        .unwrap();
    assert_all_delivered(&push_all(&client, pushes(20)).await);
}

/// A 403 on one connection fails that push; it does not put the pool in the rejected state
/// (a proxy or one frontend can send it), so the pushes after it are sent and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_403_fails_its_push_not_the_pool() {
    let s = setup(MockConfig::default()).await;
    let client = s.builder().build().unwrap();
    assert_all_delivered(&push_all(&client, pushes(4)).await);
    s.mock
        .reject_certificate(Some(MockReason::parse("BadCertificate").unwrap()));
    let lone = client.push(DevicePush::new(token(100), "m")).await;
    assert!(
        matches!(&lone, Err(PushError::CertificateRejected { .. })),
        "{lone:?}"
    );
    s.mock.reject_certificate(None);
    assert!(client
        .status()
        .await
        .unwrap()
        .certificate_rejected
        .is_none());
    assert_all_delivered(&push_all(&client, pushes(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_refused_in_tls_fails_fast_without_storm() {
    let s = setup(MockConfig::default()).await;
    let client = s.builder_with(&s.pki.expired).build().unwrap();
    let result = client.push(DevicePush::new(token(0), "m")).await;
    match &result {
        Err(PushError::CertificateRejected { reason, .. }) => {
            assert!(
                reason.to_string().starts_with("Certificate")
                    || reason.to_string() == "BadCertificate",
                "TLS alert reason: {reason}"
            );
        }
        other => panic!(
            "expected a certificate rejection, got {other:?}; pool: {:?}",
            client.status().await
        ),
    }
    let attempts = s.mock.stats().handshake_failures;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = s.mock.stats().handshake_failures;
    assert!(
        later <= attempts + 2,
        "reconnects slow down while the certificate is refused ({attempts} → {later})"
    );
    let status = client.status().await.unwrap();
    assert!(status.certificate_rejected.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stream_limit_is_never_exceeded() {
    let config = MockConfig {
        max_streams: 10,
        delay: Duration::from_millis(10),
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s.builder().max_streams_per_connection(500).build().unwrap();
    let results = push_all(&client, pushes(600)).await;
    assert_all_delivered(&results);
    let stats = s.mock.stats();
    assert!(
        stats.connections.iter().all(|c| c.peak_streams <= 10),
        "{:?}",
        stats.connections
    );
    assert_eq!(stats.refused_over_limit, 0);
    assert!(
        stats.connections.iter().map(|c| c.peak_streams).max() == Some(10),
        "the pool uses the whole allowance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_stream_limit_on_a_live_connection_is_honoured() {
    let config = MockConfig {
        max_streams: 100,
        delay: Duration::from_millis(5),
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s.builder().build().unwrap();
    assert_all_delivered(&push_all(&client, pushes(300)).await);
    s.mock.set_max_streams(5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_all_delivered(&push_all(&client, pushes(400)).await);
    assert_eq!(s.mock.stats().limit_violations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_mid_burst_loses_nothing() {
    let config = MockConfig {
        goaway_every: Some(400),
        max_streams: 100,
        delay: Duration::from_millis(2),
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s.builder().build().unwrap();
    let results = push_all(&client, pushes(2000)).await;
    assert_all_delivered(&results);
    assert_each_token_accepted(&s.mock, 2000);
    let stats = s.mock.stats();
    assert!(stats.goaways_sent >= 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_mid_burst_lose_nothing() {
    let config = MockConfig {
        delay: Duration::from_millis(5),
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s
        .builder()
        .reconnect_backoff(magicpush_engine::pool::backoff::Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    let mock = &s.mock;
    let dropper = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            mock.drop_all();
        }
    };
    let (results, ()) = tokio::join!(push_all(&client, pushes(3000)), dropper);
    assert_all_delivered(&results);
    assert_each_token_accepted(&s.mock, 3000);
    assert!(s.mock.stats().drops >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_429_and_503_are_retried() {
    let config = MockConfig {
        rate_429: 0.1,
        rate_503: 0.1,
        reset_rate: 0.1,
        ..MockConfig::default()
    };
    let s = setup(config).await;
    // About one attempt in four is refused: with the default 8 attempts one push in 500
    // would run out now and then (0.27^8 × 500 ≈ 1 %). The rule tested is that refusals are
    // retried, so each push may try until it gets through, quickly.
    let retry = RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        max_attempts: 40,
    };
    let client = s.builder().retry_policy(retry).build().unwrap();
    let results = push_all(&client, pushes(500)).await;
    assert_all_delivered(&results);
    let retried = results
        .iter()
        .filter(|r| r.as_ref().unwrap().attempts > 1)
        .count();
    assert!(retried > 50, "about a quarter were retried, saw {retried}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_until_the_deadline_end_in_one_clear_outcome() {
    let config = MockConfig {
        rate_503: 1.0,
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s
        .builder()
        .deadline(Duration::from_millis(800))
        .build()
        .unwrap();
    let results = push_all(&client, pushes(20)).await;
    for r in &results {
        match r {
            Err(PushError::RetriesExhausted { last, attempts }) => {
                assert_eq!(last.to_string(), "ServiceUnavailable");
                assert!(*attempts >= 2);
            }
            Err(PushError::DeadlineExceeded { .. }) => {}
            other => panic!("expected retries exhausted, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_left_unanswered_end_at_their_deadline_and_free_their_slots() {
    // The server keeps every answer for 10 s; the pushes' deadline is 600 ms.
    let config = MockConfig {
        delay: Duration::from_secs(10),
        max_streams: 8,
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s
        .builder()
        .connections(1)
        .deadline(Duration::from_millis(600))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let results = push_all(&client, pushes(8)).await;
    for r in &results {
        assert!(
            matches!(r, Err(PushError::DeadlineExceeded { attempts: 1, .. })),
            "{r:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended by the deadline, not by the server's late answer ({:?})",
        started.elapsed()
    );
    // The expired streams were cancelled: the connection's 8 stream slots are free again.
    s.mock.set_delay(Duration::ZERO);
    assert_all_delivered(&push_all(&client, pushes(16)).await);
    assert_eq!(client.status().await.unwrap().open_connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_detected_by_ping_and_replaced() {
    let s = setup(MockConfig::default()).await;
    let client = s
        .builder()
        .connections(1)
        .keepalive(Duration::from_millis(200))
        .ping_timeout(Duration::from_millis(300))
        .reconnect_backoff(magicpush_engine::pool::backoff::Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        })
        .build()
        .unwrap();
    assert_all_delivered(&push_all(&client, pushes(10)).await);
    let opened = s.mock.stats().connections_opened;
    s.mock.freeze();
    let mock = &s.mock;
    let thaw = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        mock.thaw();
    };
    let (result, ()) = tokio::join!(client.push(DevicePush::new(token(500), "m")), thaw);
    assert!(result.is_ok(), "{result:?}");
    let status = client.status().await.unwrap();
    assert!(status.reconnects >= 1, "the silent connection was replaced");
    assert!(s.mock.stats().connections_opened > opened);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swap_during_a_burst_loses_nothing() {
    let config = MockConfig {
        delay: Duration::from_millis(3),
        ..MockConfig::default()
    };
    let s = setup(config).await;
    let client = s.builder().build().unwrap();
    let renewal = cert(&s.pki.push_renewal);
    let c2 = client.clone();
    let swap = async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.replace_certificate(renewal).unwrap();
    };
    let (results, ()) = tokio::join!(push_all(&client, pushes(3000)), swap);
    assert_all_delivered(&results);
    assert_each_token_accepted(&s.mock, 3000);
    assert!(
        s.mock.stats().connections_opened >= 4,
        "new connections were opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_ends_in_deadline_and_full_queue_is_reported() {
    let pki = TestPki::generate().unwrap();
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = Client::builder()
        .certificate(cert(&pki.push))
        .endpoint(format!("https://127.0.0.1:{port}").parse().unwrap())
        .web_roots(false)
        .queue_capacity(4)
        .deadline(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut futures = Vec::new();
    let mut full = 0;
    for i in 0..100 {
        match client.try_push(DevicePush::new(token(i), "m")) {
            Ok(f) => futures.push(f),
            Err(_) => full += 1,
        }
    }
    // The queue holds 4; the pool, waking up to connect, may have taken one or two out of it
    // by then (how many depends on when its task runs), never a batch.
    assert!(
        (1..=8).contains(&futures.len()),
        "the queue holds 4 ({} taken, {full} refused)",
        futures.len()
    );
    let seen: HashSet<String> = futures_util::future::join_all(futures)
        .await
        .into_iter()
        .map(|r| match r {
            Err(PushError::DeadlineExceeded { .. }) => "deadline".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(seen, HashSet::from(["deadline".to_owned()]));
    let status = client.status().await.unwrap();
    assert!(status.last_connect_error.is_some());
    client.shutdown().await;
    match client.try_push(DevicePush::new(token(99), "m")) {
        Err(magicpush_engine::TryPushError::Shutdown { push }) => assert_eq!(push.magic, "m"),
        Err(other) => panic!("expected Shutdown, got {other:?}"),
        Ok(_) => panic!("a shut-down client must not take pushes"),
    }
    assert!(matches!(
        client.push(DevicePush::new(token(98), "m")).await,
        Err(PushError::Shutdown)
    ));
}

/// An endpoint nothing listens on: every connection attempt is refused, so every push ends at
/// its deadline — and says why no attempt was made, while its stored cause stays the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_with_no_connection_names_the_connection_error() {
    let pki = TestPki::generate().expect("test PKI");
    // Bound, then closed: the port refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let client = Client::builder()
        .certificate(cert(&pki.push))
        .endpoint(format!("https://127.0.0.1:{port}").parse().unwrap())
        .web_roots(false)
        .connections(1)
        .deadline(Duration::from_millis(700))
        .build()
        .unwrap();
    let check = |r: &PushResult| match r {
        Err(
            e @ PushError::DeadlineExceeded {
                attempts: 0,
                connect_error: Some(why),
                ..
            },
        ) => {
            assert!(
                why.contains(&format!("127.0.0.1:{port}")) && why.contains("refused"),
                "{why}"
            );
            let words = e.to_string();
            let want = format!(
                "deadline of 700ms passed after 0 attempt(s); last connection error: cannot \
                 reach https://127.0.0.1:{port}: Connection refused"
            );
            assert!(words.starts_with(&want), "{words}");
            assert_eq!(e.reason().stored_name(), "engine:deadline_exceeded");
        }
        other => panic!("expected a deadline naming the refused connection, got {other:?}"),
    };
    check(&client.push(DevicePush::new(token(0), "m")).await);
    for r in push_all(&client, pushes(3)).await {
        check(&r);
    }
    let status = client.status().await.unwrap();
    assert!(
        status
            .last_connect_error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{status:?}"
    );
    client.shutdown().await;
}
