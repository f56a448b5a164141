//! Many topics in one client, against the mock APNs (which holds each connection to its
//! client certificate's topic and answers `TopicDisallowed` otherwise): every push goes out
//! on its topic's certificate, topics come and go while pushes are in flight, the connection
//! budget holds across topics, a refused certificate stays its own topic's problem, and one
//! topic's backlog does not hold back another's push.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use magicpush_engine::cert::PushCertificate;
use magicpush_engine::{Client, ClientBuilder, DevicePush, DeviceToken, PushError};
use magicpush_fixtures::{push_cert, CertKey, KeyKind, TestPki};
use magicpush_mock_apns::{MockConfig, Reason as MockReason};
use time::OffsetDateTime;

mod common;

use common::{cert, setup, Setup};

/// A push certificate of a new topic from the test CA, valid from `from_days` to
/// `until_days` from now.
fn topic_cert(pki: &TestPki, from_days: i64, until_days: i64) -> CertKey {
    let now = OffsetDateTime::now_utc();
    let uuid = uuid::Uuid::new_v4().to_string();
    push_cert(
        &pki.ca,
        &uuid,
        now + time::Duration::days(from_days),
        now + time::Duration::days(until_days),
        KeyKind::EcdsaP256,
    )
    .expect("push certificate")
}

impl Setup {
    fn builder(&self) -> ClientBuilder {
        Client::builder()
            .endpoint(self.mock.url().parse().unwrap())
            .trust_anchor_pem(self.pki.ca.cert_pem().as_bytes())
            .unwrap()
            .web_roots(false)
            .connections(2)
            .deadline(Duration::from_secs(30))
    }
}

/// Connections the mock may still count after the engine has closed them (see
/// `a_thousand_topics_share_fifty_connections`).
const CLOSING_SLACK: u64 = 1;

fn token(i: usize) -> DeviceToken {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    bytes[31] = 0x7b;
    DeviceToken::from_bytes(&bytes).unwrap()
}

fn push_for(topic: &str, i: usize) -> DevicePush {
    DevicePush::new(token(i), format!("magic-{i}")).with_topic(topic)
}

/// `n` pushes for `topic` in one bulk call, on a task of their own.
fn backlog(
    client: &Arc<Client>,
    topic: &str,
    n: usize,
) -> tokio::task::JoinHandle<magicpush_engine::Summary> {
    let (client, topic) = (Arc::clone(client), topic.to_owned());
    tokio::spawn(async move {
        let pushes: Vec<DevicePush> = (0..n).map(|i| push_for(&topic, i)).collect();
        client.push_bulk(pushes).finish().await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_topic_pushes_on_its_own_certificate() {
    let s = setup(MockConfig::default()).await;
    let mut accepted = s.mock.subscribe_accepted();
    let client = s
        .builder()
        .certificate(cert(&s.pki.push))
        .certificate(cert(&s.pki.other_topic))
        .build()
        .unwrap();
    let (a, b) = (s.pki.topic.as_str(), s.pki.other_topic_name.as_str());
    assert_eq!(client.topics(), {
        let mut t = vec![a.to_owned(), b.to_owned()];
        t.sort();
        t
    });
    let pushes: Vec<DevicePush> = (0..400)
        .map(|i| push_for(if i % 2 == 0 { a } else { b }, i))
        .collect();
    let summary = client.push_bulk(pushes).finish().await;
    assert_eq!(summary.delivered, 400, "{summary:?}");
    let mut by_topic: HashMap<String, usize> = HashMap::new();
    while let Ok(push) = accepted.try_recv() {
        *by_topic.entry(push.topic).or_default() += 1;
    }
    assert_eq!(by_topic.get(a), Some(&200));
    assert_eq!(by_topic.get(b), Some(&200));
    assert_eq!(s.mock.stats().rejected_with(MockReason::TopicDisallowed), 0);

    // Which topic, when it is not said: none with two topics, an unknown one never.
    let untopiced = DevicePush::new(token(9), "m");
    assert!(matches!(
        client.push(untopiced).await,
        Err(PushError::TopicRequired { topics: 2 })
    ));
    let unknown = push_for("com.apple.mgmt.External.nobody", 9);
    match client.push(unknown).await {
        Err(PushError::UnknownTopic { topic }) => assert!(topic.ends_with("nobody")),
        other => panic!("{other:?}"),
    }
    let err = client.add_certificate(cert(&s.pki.push)).unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
    client.shutdown().await;
    s.mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_come_and_go_while_pushes_are_in_flight() {
    let s = setup(MockConfig {
        delay: Duration::from_millis(2),
        ..MockConfig::default()
    })
    .await;
    let mut accepted = s.mock.subscribe_accepted();
    let (a, b) = (s.pki.topic.clone(), s.pki.other_topic_name.clone());
    let client = s
        .builder()
        .certificate(cert(&s.pki.push))
        .certificate(cert(&s.pki.other_topic))
        .build()
        .unwrap();
    let c_ck = topic_cert(&s.pki, -1, 365);
    let c = cert(&c_ck).topic().to_owned();
    const N: usize = 20_000;
    let pushes: Vec<DevicePush> = (0..N)
        .map(|i| push_for(if i % 2 == 0 { &a } else { &b }, i))
        .collect();
    let mut bulk = client.push_bulk(pushes);
    let mut results: Vec<Option<Result<(), PushError>>> = vec![None; N];
    let mut done = 0;
    let mut c_run = None;
    let mut removed = false;
    while let Some(item) = bulk.next().await {
        assert!(results[item.index].is_none(), "push {} twice", item.index);
        results[item.index] = Some(item.result.map(|_| ()));
        done += 1;
        if done == 2_000 {
            // A new topic joins, and A is renewed (same topic, hot), mid-flight.
            client.add_certificate(cert(&c_ck)).unwrap();
            client
                .replace_certificate(cert(&s.pki.push_renewal))
                .unwrap();
            let (client, c) = (client.clone(), c.clone());
            c_run = Some(tokio::spawn(async move {
                let pushes: Vec<DevicePush> = (N..N + 2_000).map(|i| push_for(&c, i)).collect();
                client.push_bulk(pushes).finish().await
            }));
        }
        if done == 8_000 {
            assert!(client.remove_certificate(&b));
            assert!(!client.remove_certificate(&b));
            removed = true;
        }
    }
    assert!(removed);
    let c_summary = c_run.expect("C was added").await.unwrap();
    assert_eq!(c_summary.delivered, 2_000, "{c_summary:?}");
    let mut delivered: HashMap<&str, usize> = HashMap::new();
    let mut unknown = 0;
    for (i, r) in results.iter().enumerate() {
        let topic = if i % 2 == 0 { a.as_str() } else { b.as_str() };
        match r.as_ref().expect("every push has an outcome") {
            Ok(()) => *delivered.entry(topic).or_default() += 1,
            Err(PushError::UnknownTopic { topic: t }) if **t == *b => unknown += 1,
            Err(e) => panic!("push {i} for {topic}: {e}"),
        }
    }
    assert_eq!(delivered.get(a.as_str()), Some(&(N / 2)), "A lost nothing");
    assert_eq!(
        delivered.get(b.as_str()).copied().unwrap_or(0) + unknown,
        N / 2,
        "B's pushes were delivered or failed as removed"
    );
    // Nothing misrouted: what the mock accepted per topic is what was delivered per topic.
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Ok(push) = accepted.try_recv() {
        *seen.entry(push.topic).or_default() += 1;
    }
    assert_eq!(seen.get(a.as_str()), delivered.get(a.as_str()));
    assert_eq!(
        seen.get(b.as_str()).copied().unwrap_or(0),
        delivered.get(b.as_str()).copied().unwrap_or(0)
    );
    assert_eq!(seen.get(c.as_str()), Some(&2_000));
    assert_eq!(s.mock.stats().rejected_with(MockReason::TopicDisallowed), 0);
    assert_eq!(client.topics().len(), 2);
    client.shutdown().await;
    s.mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_topics_share_fifty_connections() {
    let s = setup(MockConfig::default()).await;
    let client = s.builder().max_total_connections(50).build().unwrap();
    let mut topics = Vec::new();
    for _ in 0..1_000 {
        let ck = topic_cert(&s.pki, -1, 365);
        let c = cert(&ck);
        topics.push(c.topic().to_owned());
        client.add_certificate(c).unwrap();
    }
    let pushes: Vec<DevicePush> = (0..3_000)
        .map(|i| push_for(&topics[i % 1_000], i))
        .collect();
    let summary = client.push_bulk(pushes).finish().await;
    assert_eq!(summary.delivered, 3_000, "{summary:?}");
    let stats = s.mock.stats();
    // The engine gives a connection's place to the next one once its side has closed it
    // (gracefully: GOAWAY, close_notify, FIN); the mock counts it until its own task has
    // seen that close, which on a loaded machine can come a moment after the next handshake.
    assert!(stats.connections_peak <= 50 + CLOSING_SLACK, "{stats}");
    assert!(
        stats.connections_opened >= 1_000,
        "every topic connected: {stats}"
    );
    assert_eq!(stats.rejected_with(MockReason::TopicDisallowed), 0);
    client.shutdown().await;
    s.mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_certificate_fails_its_own_topic_only() {
    let s = setup(MockConfig::default()).await;
    // Expired: the mock's TLS refuses it with an alert.
    let expired = topic_cert(&s.pki, -400, -30);
    let dead = cert_unchecked(&expired);
    let dead_topic = dead.topic().to_owned();
    let client = s
        .builder()
        .certificate(cert(&s.pki.push))
        .certificate(dead)
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let ok = client.push(push_for(&s.pki.topic, 1)).await;
    assert!(ok.is_ok(), "{ok:?}");
    let refused = client.push(push_for(&dead_topic, 2)).await;
    assert!(
        matches!(
            refused,
            Err(PushError::CertificateRejected { .. }) | Err(PushError::DeadlineExceeded { .. })
        ),
        "{refused:?}"
    );
    // Once refused, the dead topic fails fast; the live one goes on.
    let again = client.push(push_for(&dead_topic, 3)).await;
    assert!(
        matches!(again, Err(PushError::CertificateRejected { .. })),
        "{again:?}"
    );
    for i in 10..50 {
        assert!(client.push(push_for(&s.pki.topic, i)).await.is_ok());
    }
    let statuses = client.topic_statuses().await.unwrap();
    assert!(statuses[&dead_topic].certificate_rejected.is_some());
    assert!(statuses[&s.pki.topic].certificate_rejected.is_none());
    client.shutdown().await;
    s.mock.shutdown().await;
}

/// An expired certificate loads (the engine refuses nothing by date: APNs does).
fn cert_unchecked(ck: &CertKey) -> PushCertificate {
    cert(ck)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_one_topic_does_not_hold_back_another() {
    let s = setup(MockConfig {
        delay: Duration::from_millis(20),
        max_streams: 100,
        ..MockConfig::default()
    })
    .await;
    let client = Arc::new(
        s.builder()
            .connections(1)
            .certificate(cert(&s.pki.push))
            .certificate(cert(&s.pki.other_topic))
            .build()
            .unwrap(),
    );
    // 10,000 pushes on one connection of 100 streams at 20 ms each: about 2 s of backlog.
    const BACKLOG: usize = 10_000;
    let busy = backlog(&client, &s.pki.topic, BACKLOG);
    // Let the backlog build up, then push the other topic once.
    while s.mock.stats().accepted < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let single = client
        .push(push_for(&s.pki.other_topic_name, BACKLOG))
        .await;
    assert!(single.is_ok(), "{single:?}");
    let done_when_single_answered = s.mock.stats().accepted;
    assert!(
        (done_when_single_answered as usize) < BACKLOG / 2,
        "the single push waited for the backlog: {done_when_single_answered} of {BACKLOG} done"
    );
    let summary = busy.await.unwrap();
    assert_eq!(summary.delivered as usize, BACKLOG);
    client.shutdown().await;
    s.mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_topic_takes_turns_with_a_waiting_one_when_the_budget_is_one() {
    let s = setup(MockConfig {
        delay: Duration::from_millis(5),
        max_streams: 10,
        ..MockConfig::default()
    })
    .await;
    let client = Arc::new(
        s.builder()
            .connections(1)
            .max_total_connections(1)
            .max_streams_per_connection(10)
            .certificate(cert(&s.pki.push))
            .certificate(cert(&s.pki.other_topic))
            .build()
            .unwrap(),
    );
    // About 2,000 pushes/s on one connection: 8,000 keep the only connection busy for ~4 s.
    const BACKLOG: usize = 8_000;
    let busy = backlog(&client, &s.pki.topic, BACKLOG);
    while s.mock.stats().accepted < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The other topic waits for the one connection the budget has: it gets it in turn, not
    // after the whole backlog.
    let single = client
        .push(push_for(&s.pki.other_topic_name, BACKLOG))
        .await;
    assert!(single.is_ok(), "{single:?}");
    let done = s.mock.stats().accepted as usize;
    assert!(
        done < BACKLOG,
        "the waiting topic got its turn only after the whole backlog ({done} done)"
    );
    let summary = busy.await.unwrap();
    assert_eq!(summary.delivered as usize, BACKLOG, "{summary:?}");
    let stats = s.mock.stats();
    assert!(stats.connections_peak <= 1 + CLOSING_SLACK, "{stats}");
    assert_eq!(stats.rejected_with(MockReason::TopicDisallowed), 0);
    client.shutdown().await;
    s.mock.shutdown().await;
}
