//! The mock APNs seen from a bare `h2` client over tokio-rustls (written here, not the engine's).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode};
use magicpush_fixtures::{CertKey, TestPki};
use magicpush_mock_apns::{ClientAuth, MockApns, MockConfig, MockHandle, Reason};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const MAGIC: &str = "5D3E2A9C-0B6F-4C11-8E43-7A2B9F1C6D00";
const STEP: Duration = Duration::from_secs(10);

async fn start(pki: &TestPki, config: MockConfig) -> MockHandle {
    MockApns::start(
        "127.0.0.1:0".parse().unwrap(),
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        config,
    )
    .await
    .expect("mock starts")
}

/// A client connection: the request handle, and the stream limit the server advertised.
struct Client {
    send: SendRequest<Bytes>,
    max_streams: Arc<AtomicUsize>,
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

fn client_config(pki: &TestPki, identity: Option<&CertKey>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

async fn connect(
    mock: &MockHandle,
    pki: &TestPki,
    identity: Option<&CertKey>,
) -> Result<Client, String> {
    let connector = TlsConnector::from(Arc::new(client_config(pki, identity)));
    let tcp = TcpStream::connect(mock.local_addr())
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, mut conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    let max_streams = Arc::new(AtomicUsize::new(0));
    let seen = max_streams.clone();
    let driver = tokio::spawn(std::future::poll_fn(move |cx| {
        let r = std::pin::Pin::new(&mut conn).poll(cx);
        seen.store(conn.max_concurrent_send_streams(), Ordering::Relaxed);
        r
    }));
    Ok(Client {
        send,
        max_streams,
        driver,
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
}

fn request(token: &str, topic: &str, extra: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::post(format!("https://localhost/3/device/{token}"))
        .header("apns-topic", topic)
        .header("apns-push-type", "mdm")
        .header("apns-priority", "10");
    for (n, v) in extra {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

async fn send(
    client: &SendRequest<Bytes>,
    req: Request<()>,
    body: &str,
) -> Result<Answer, h2::Error> {
    let mut send = client.clone().ready().await?;
    let (response, mut stream) = send.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        // If the server refused the stream already, the response says why.
        let _ = stream.send_data(Bytes::copy_from_slice(body.as_bytes()), true);
    }
    let response = response.await?;
    let (parts, mut recv) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("error bodies are JSON")
    };
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Waits until `cond` holds (the mock counts after it answers).
async fn eventually(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After a graceful GOAWAY the client's connection ends cleanly, or with an I/O error when it
/// still had something to write (a PING ACK, a WINDOW_UPDATE) as the server closed.
fn assert_graceful_end(ended: Result<(), h2::Error>) {
    if let Err(e) = ended {
        assert!(e.is_io() || e.is_go_away(), "not a graceful end: {e:?}");
        assert_ne!(e.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{e:?}");
    }
}

fn mdm_body() -> String {
    format!(r#"{{"mdm":"{MAGIC}"}}"#)
}

async fn push(client: &Client, token: &str, topic: &str) -> Answer {
    tokio::time::timeout(
        STEP,
        send(&client.send, request(token, topic, &[]), &mdm_body()),
    )
    .await
    .expect("answered in time")
    .expect("answered")
}

/// A mock with one connection that carried a push, then frozen (it reads nothing until
/// thawed).
async fn frozen_after_one_push() -> (TestPki, MockHandle, Client) {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(
        push(&client, TOKEN, &pki.topic).await.status,
        StatusCode::OK
    );
    mock.freeze();
    tokio::time::sleep(Duration::from_millis(50)).await;
    (pki, mock, client)
}

fn uppercase_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok() && !s.bytes().any(|b| b.is_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_a_push_and_counts_it() {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    let mut accepted = mock.subscribe_accepted();
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();

    let a = push(&client, TOKEN, &pki.topic).await;
    assert_eq!(a.status, StatusCode::OK);
    let id = a.headers["apns-id"].to_str().unwrap();
    assert!(uppercase_uuid(id), "fresh apns-id {id}");
    assert_eq!(a.body, serde_json::Value::Null);

    let mine = "9D3B8A1C-2E4F-4A6B-8C0D-1E2F3A4B5C6D";
    let a = send(
        &client.send,
        request(TOKEN, &pki.topic, &[("apns-id", mine)]),
        &mdm_body(),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["apns-id"], mine);

    assert_eq!(mock.accepted_for(TOKEN), 2);
    assert_eq!(mock.accepted_for(&TOKEN.to_uppercase()), 2);
    let got = accepted.recv().await.unwrap();
    assert_eq!(
        (got.token.as_str(), got.magic.as_str(), got.topic.as_str()),
        (TOKEN, MAGIC, pki.topic.as_str())
    );
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.accepted, stats.rejected_total()),
        (2, 2, 0)
    );
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(
        stats.connections[0].topic.as_deref(),
        Some(pki.topic.as_str())
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_token_gets_410_with_timestamp() {
    let pki = TestPki::generate().unwrap();
    let gone = "ab".repeat(32);
    let later = "cd".repeat(40);
    let config = MockConfig {
        unregistered: [gone.clone()].into(),
        ..MockConfig::default()
    };
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mock = start(&pki, config).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();

    let a = push(&client, &gone, &pki.topic).await;
    assert_eq!(a.status, StatusCode::GONE);
    assert_eq!(a.reason(), "Unregistered");
    let ts = a.body["timestamp"].as_u64().expect("timestamp in ms");
    assert!(ts >= before && ts < before + 60_000, "timestamp {ts}");
    assert!(a.headers.contains_key("apns-id"));

    assert_eq!(
        push(&client, &later, &pki.topic).await.status,
        StatusCode::OK
    );
    mock.add_unregistered(&later);
    let a = push(&client, &later, &pki.topic).await;
    assert_eq!((a.status, a.reason()), (StatusCode::GONE, "Unregistered"));
    assert_eq!(mock.accepted_for(&later), 1);
    assert_eq!(mock.stats().rejected_with(Reason::Unregistered), 2);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_must_be_the_certificates() {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    let other = connect(&mock, &pki, Some(&pki.other_topic)).await.unwrap();
    let a = push(&other, TOKEN, &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::BAD_REQUEST, "TopicDisallowed")
    );

    let mine = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    let a = send(&mine.send, request(TOKEN, &pki.topic, &[]), "")
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::BAD_REQUEST, "PayloadEmpty")
    );
    let mut no_topic = request(TOKEN, &pki.topic, &[]);
    no_topic.headers_mut().remove("apns-topic");
    let a = send(&mine.send, no_topic, &mdm_body()).await.unwrap();
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::BAD_REQUEST, "MissingTopic")
    );
    assert_eq!(mock.accepted_for(TOKEN), 0);

    // Several certificates at once, each pushing its own topic (one mock, many tenants).
    let a = push(&other, TOKEN, &pki.other_topic_name).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.reason());
    let a = push(&mine, TOKEN, &pki.topic).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.reason());
    let stats = mock.stats();
    assert_eq!((stats.connections_open, stats.connections_peak), (2, 2));
    // Counted per topic: the refused push to the wrong topic is not.
    assert_eq!(
        stats.accepted_by_topic,
        [(pki.topic.clone(), 1), (pki.other_topic_name.clone(), 1)].into()
    );
    assert_eq!(stats.rejected_with(Reason::TopicDisallowed), 1);
    assert_eq!(mock.rejected_count(Reason::TopicDisallowed), 1);
    assert_eq!(mock.accepted_total(), 2);
    drop((other, mine));
    let third = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(push(&third, TOKEN, &pki.topic).await.status, StatusCode::OK);
    let stats = mock.stats();
    assert_eq!(stats.connections_opened, 3);
    assert!(stats.connections_peak <= 3, "{stats}");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_paths() {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    let a = push(&client, "not-hex", &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::BAD_REQUEST, "BadDeviceToken")
    );
    let a = push(&client, &"ab".repeat(20), &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::BAD_REQUEST, "BadDeviceToken")
    );

    let mut wrong_path = request(TOKEN, &pki.topic, &[]);
    *wrong_path.uri_mut() = format!("https://localhost/3/devices/{TOKEN}")
        .parse()
        .unwrap();
    let a = send(&client.send, wrong_path, &mdm_body()).await.unwrap();
    assert_eq!((a.status, a.reason()), (StatusCode::NOT_FOUND, "BadPath"));

    let mut get = request(TOKEN, &pki.topic, &[]);
    *get.method_mut() = http::Method::GET;
    let a = send(&client.send, get, "").await.unwrap();
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
    );

    let big = format!(r#"{{"mdm":"{}"}}"#, "x".repeat(5000));
    let a = send(&client.send, request(TOKEN, &pki.topic, &[]), &big)
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge")
    );

    mock.add_foreign_token(TOKEN);
    let a = push(&client, TOKEN, &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic")
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_advertised_changed_live_and_respected() {
    let pki = TestPki::generate().unwrap();
    let config = MockConfig {
        max_streams: 7,
        delay: Duration::from_millis(100),
        ..MockConfig::default()
    };
    let mock = start(&pki, config).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(
        push(&client, TOKEN, &pki.topic).await.status,
        StatusCode::OK
    );
    assert_eq!(client.max_streams.load(Ordering::Relaxed), 7);

    // A burst through a client that honours the limit never exceeds it.
    let burst = (0..40).map(|_| {
        let c = &client;
        let topic = pki.topic.clone();
        async move { push(c, TOKEN, &topic).await.status }
    });
    let statuses = futures_util::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let stats = mock.stats();
    let peak = stats.peak_streams();
    assert!(
        (2..=7).contains(&peak),
        "the burst stays within the limit: {peak}"
    );
    assert_eq!(stats.limit_violations(), 0);
    assert_eq!(stats.connections[0].acknowledged_limit, Some(7));

    // Lowered on the live connection: a new SETTINGS frame reaches the client.
    mock.set_max_streams(3);
    let deadline = Instant::now() + STEP;
    while client.max_streams.load(Ordering::Relaxed) != 3 {
        assert!(Instant::now() < deadline, "client never saw the new limit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst = (0..12).map(|_| {
        let c = &client;
        let topic = pki.topic.clone();
        async move { push(c, TOKEN, &topic).await.status }
    });
    assert!(futures_util::future::join_all(burst)
        .await
        .iter()
        .all(|s| *s == StatusCode::OK));
    let stats = mock.stats();
    assert_eq!(stats.connections[0].acknowledged_limit, Some(3));
    assert_eq!(stats.limit_violations(), 0);

    // New connections get the new limit in their first SETTINGS.
    let second = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(
        push(&second, TOKEN, &pki.topic).await.status,
        StatusCode::OK
    );
    assert_eq!(second.max_streams.load(Ordering::Relaxed), 3);
    assert_eq!(mock.accepted_for(TOKEN), 1 + 40 + 12 + 1);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_after_n_requests_and_on_demand() {
    let pki = TestPki::generate().unwrap();
    let config = MockConfig {
        goaway_every: Some(3),
        ..MockConfig::default()
    };
    let mock = start(&pki, config).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            push(&client, TOKEN, &pki.topic).await.status,
            StatusCode::OK
        );
    }
    // The connection winds down: the driver ends, later requests fail.
    let ended = tokio::time::timeout(STEP, client.driver)
        .await
        .expect("connection closes after GOAWAY");
    assert_graceful_end(ended.unwrap());
    assert!(
        send(&client.send, request(TOKEN, &pki.topic, &[]), &mdm_body())
            .await
            .is_err()
    );
    assert_eq!(mock.stats().goaways_sent, 1);

    // goaway_all with requests in flight: they still complete.
    mock.set_goaway_every(None);
    mock.set_delay(Duration::from_millis(200));
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    let in_flight = (0..5).map(|_| {
        let c = &client;
        let topic = pki.topic.clone();
        async move { push(c, TOKEN, &topic).await.status }
    });
    let goaway = async {
        eventually(
            || mock.stats().requests == 3 + 5,
            "the 5 requests reached the mock",
        )
        .await;
        mock.goaway_all();
    };
    let (statuses, ()) = tokio::join!(futures_util::future::join_all(in_flight), goaway);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_graceful_end(
        tokio::time::timeout(STEP, client.driver)
            .await
            .expect("closes")
            .unwrap(),
    );
    assert_eq!(mock.stats().goaways_sent, 2);
    assert_eq!(mock.accepted_for(TOKEN), 8);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rejection_toggles() {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    mock.reject_certificate(Some(Reason::BadCertificate));
    let a = push(&client, TOKEN, &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::FORBIDDEN, "BadCertificate")
    );
    mock.reject_certificate(Some(Reason::BadCertificateEnvironment));
    let a = push(&client, TOKEN, &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::FORBIDDEN, "BadCertificateEnvironment")
    );
    mock.reject_certificate(None);
    assert_eq!(
        push(&client, TOKEN, &pki.topic).await.status,
        StatusCode::OK
    );
    assert_eq!(mock.accepted_for(TOKEN), 1);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_accepts_no_certificate_and_any_topic() {
    let pki = TestPki::generate().unwrap();
    let config = MockConfig {
        client_auth: ClientAuth::Optional,
        ..MockConfig::default()
    };
    let mock = start(&pki, config).await;
    let anonymous = connect(&mock, &pki, None).await.unwrap();
    let mut req = request(TOKEN, "x", &[]);
    req.headers_mut().remove("apns-push-type");
    let a = send(&anonymous.send, req, &mdm_body()).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    // A client that does present a certificate is still held to its topic.
    let other = connect(&mock, &pki, Some(&pki.other_topic)).await.unwrap();
    assert_eq!(
        push(&other, TOKEN, &pki.topic).await.reason(),
        "TopicDisallowed"
    );
    mock.shutdown().await;
}

/// With TLS 1.3 the client learns of a refused certificate on its first read.
async fn refused(mock: &MockHandle, pki: &TestPki, identity: Option<&CertKey>) -> bool {
    let Ok(client) = connect(mock, pki, identity).await else {
        return true;
    };
    tokio::time::timeout(
        STEP,
        send(&client.send, request(TOKEN, &pki.topic, &[]), &mdm_body()),
    )
    .await
    .expect("refusal is prompt")
    .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_missing_client_certificate_fails_the_handshake() {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    assert!(
        refused(&mock, &pki, Some(&pki.expired)).await,
        "expired certificate refused"
    );
    assert!(
        refused(&mock, &pki, None).await,
        "no certificate refused when required"
    );
    let stranger = TestPki::generate().unwrap();
    let foreign = stranger.push.clone();
    assert!(
        refused(&mock, &pki, Some(&foreign)).await,
        "untrusted certificate refused"
    );
    eventually(
        || mock.stats().handshake_failures == 3,
        "three handshake failures counted",
    )
    .await;
    assert_eq!(mock.stats().connections_opened, 0);
    assert!(
        !refused(&mock, &pki, Some(&pki.push)).await,
        "the valid certificate still works"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_does_not_serialise_streams() {
    let pki = TestPki::generate().unwrap();
    let config = MockConfig {
        delay: Duration::from_millis(300),
        ..MockConfig::default()
    };
    let mock = start(&pki, config).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    let started = Instant::now();
    let burst = (0..50).map(|_| {
        let c = &client;
        let topic = pki.topic.clone();
        async move { push(c, TOKEN, &topic).await.status }
    });
    let statuses = futures_util::future::join_all(burst).await;
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "answers were serialised: {took:?}"
    );
    assert_eq!(mock.stats().peak_streams(), 50);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_is_answered_in_a_few_writes() {
    let (pki, mock, client) = frozen_after_one_push().await;
    // The burst is sent while the mock does not read, so that it finds all of it at once.
    let writes = || mock.stats().connections[0].writes;
    let before = writes();
    const BURST: usize = 200;
    let burst =
        futures_util::future::join_all((0..BURST).map(|_| push(&client, TOKEN, &pki.topic)));
    let thaw = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        mock.thaw();
    };
    let (answers, ()) = tokio::join!(burst, thaw);
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    // One write per answer would be a system call per push.
    let took = writes() - before;
    assert!(took <= 10, "{BURST} answers took {took} writes");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_and_resets() {
    let pki = TestPki::generate().unwrap();
    let mock = start(&pki, MockConfig::default()).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    mock.set_rate_503(1.0);
    let a = push(&client, TOKEN, &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
    );
    mock.set_rate_503(0.0);
    mock.set_rate_429(1.0);
    let a = push(&client, TOKEN, &pki.topic).await;
    assert_eq!(
        (a.status, a.reason()),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    mock.set_rate_429(0.0);
    mock.set_reset_rate(1.0);
    let err = send(&client.send, request(TOKEN, &pki.topic, &[]), &mdm_body())
        .await
        .err()
        .expect("stream reset");
    assert_eq!(err.reason(), Some(h2::Reason::REFUSED_STREAM));
    mock.set_reset_rate(0.0);
    assert_eq!(
        push(&client, TOKEN, &pki.topic).await.status,
        StatusCode::OK
    );
    let stats = mock.stats();
    assert_eq!(stats.resets_injected, 1);
    assert_eq!(stats.accepted, 1);
    assert_eq!(mock.accepted_for(TOKEN), 1);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_connection_is_silent_until_thawed_and_drop_closes() {
    let (pki, mock, client) = frozen_after_one_push().await;
    let body = mdm_body();
    let pending = send(&client.send, request(TOKEN, &pki.topic, &[]), &body);
    tokio::pin!(pending);
    assert!(
        tokio::time::timeout(Duration::from_millis(400), &mut pending)
            .await
            .is_err(),
        "a frozen mock does not answer"
    );
    mock.thaw();
    let a = tokio::time::timeout(STEP, pending)
        .await
        .expect("answered after thaw")
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);

    mock.drop_all();
    let ended = tokio::time::timeout(STEP, client.driver)
        .await
        .expect("connection dropped");
    assert!(ended.is_ok());
    assert_eq!(mock.stats().drops, 1);
    let again = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(push(&again, TOKEN, &pki.topic).await.status, StatusCode::OK);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_every_closes_connections_periodically() {
    let pki = TestPki::generate().unwrap();
    let config = MockConfig {
        drop_every: Some(Duration::from_millis(150)),
        ..MockConfig::default()
    };
    let mock = start(&pki, config).await;
    let client = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(
        push(&client, TOKEN, &pki.topic).await.status,
        StatusCode::OK
    );
    tokio::time::timeout(STEP, client.driver)
        .await
        .expect("dropped within the period")
        .unwrap()
        .ok();
    let again = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
    assert_eq!(push(&again, TOKEN, &pki.topic).await.status, StatusCode::OK);
    tokio::time::timeout(STEP, again.driver)
        .await
        .expect("dropped again")
        .unwrap()
        .ok();
    eventually(
        || mock.stats().drops >= 2 && mock.stats().connections_open == 0,
        "both connections dropped and counted",
    )
    .await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_burst_ends_every_stream_and_new_connections_work() {
    let pki = TestPki::generate().unwrap();
    // Answers take 50 ms and the drop comes at 20 ms: however fast this machine sends the
    // burst, the drop falls inside it (a 5 ms delay let a fast run answer all 2,000 first).
    let config = MockConfig {
        delay: Duration::from_millis(50),
        ..MockConfig::default()
    };
    let mock = start(&pki, config).await;
    for round in 0..3 {
        let before = mock.accepted_for(TOKEN);
        let clients = [
            connect(&mock, &pki, Some(&pki.push)).await.unwrap(),
            connect(&mock, &pki, Some(&pki.push)).await.unwrap(),
        ];
        let burst = (0..2000).map(|i| {
            let c = &clients[i % 2];
            let topic = pki.topic.clone();
            async move {
                tokio::time::timeout(
                    STEP,
                    send(&c.send, request(TOKEN, &topic, &[]), &mdm_body()),
                )
                .await
                .expect("every stream ends, answered or failed")
                .map(|a| a.status)
            }
        });
        let dropper = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            mock.drop_all();
        };
        let (results, ()) = tokio::join!(futures_util::future::join_all(burst), dropper);
        let ok = results
            .iter()
            .filter(|r| matches!(r, Ok(StatusCode::OK)))
            .count();
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(StatusCode::OK) | Err(_))),
            "round {round}: only 200 or a lost connection"
        );
        // Accepted answers may be lost with the connection, never invented.
        let accepted = mock.accepted_for(TOKEN) - before;
        assert!(
            accepted >= ok as u64,
            "round {round}: {accepted} accepted, {ok} answered 200"
        );
        assert!(ok < 2000, "round {round}: the drop came too late to matter");
        let before = mock.accepted_for(TOKEN);
        // Fresh connections after the drop serve everything.
        let fresh = connect(&mock, &pki, Some(&pki.push)).await.unwrap();
        let burst = (0..500).map(|_| {
            let c = &fresh;
            let topic = pki.topic.clone();
            async move { push(c, TOKEN, &topic).await.status }
        });
        assert!(futures_util::future::join_all(burst)
            .await
            .iter()
            .all(|s| *s == StatusCode::OK));
        assert_eq!(mock.accepted_for(TOKEN) - before, 500);
    }
    mock.shutdown().await;
}
