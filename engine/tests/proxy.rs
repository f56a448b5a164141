//! APNs connections through an HTTP proxy: a small `CONNECT` proxy written here, in front of
//! the mock APNs. Pushes go through the tunnel; credentials in the proxy URL reach the proxy
//! as Basic; a refusal or an unreachable proxy is named (password masked) in the pushes'
//! errors, and a refusing proxy is not hammered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magicpush_engine::{Client, ClientBuilder, DevicePush, DeviceToken, Endpoint, PushError};
use magicpush_fixtures::TestPki;
use magicpush_mock_apns::MockConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{cert, setup, Setup};

/// What the test proxy does with a `CONNECT`.
#[derive(Clone, Copy)]
enum Answer {
    /// 200, then splice bytes both ways with the target.
    Tunnel,
    /// This response, then close.
    Refuse(&'static str),
}

/// A `CONNECT` proxy on 127.0.0.1 that records every request head it receives.
struct TestProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestProxy {
    async fn start(answer: Answer) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(conn, answer, seen.clone()));
            }
        });
        TestProxy { addr, heads, task }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve(mut client: TcpStream, answer: Answer, heads: Arc<Mutex<Vec<String>>>) {
    let Ok(Some(head)) = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client)).await
    else {
        return;
    };
    heads.lock().unwrap().push(head.clone());
    match answer {
        Answer::Refuse(response) => {
            let _ = client.write_all(response.as_bytes()).await;
        }
        Answer::Tunnel => {
            let target = head
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("CONNECT "))
                .and_then(|l| l.strip_suffix(" HTTP/1.1"))
                .unwrap_or_default()
                .to_owned();
            let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                return;
            };
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

/// The request head, read a byte at a time so that nothing after it is consumed; at most 8 KiB.
async fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return None;
        }
        let mut byte = [0u8; 1];
        if conn.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// The request line and the value of each header named `name` (case-insensitively).
fn request_line_and(head: &str, name: &str) -> (String, Vec<String>) {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let values = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    (request_line, values)
}

fn builder(pki: &TestPki, endpoint: Endpoint) -> ClientBuilder {
    Client::builder()
        .certificate(cert(&pki.push))
        .endpoint(endpoint)
        .trust_anchor_pem(pki.ca.cert_pem().as_bytes())
        .unwrap()
        .web_roots(false)
        .connections(1)
        .deadline(Duration::from_secs(20))
}

fn token(i: u8) -> DeviceToken {
    DeviceToken::from_bytes(&[i; 32]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_through_the_tunnel_to_the_endpoint() {
    let Setup { pki, mock } = setup(MockConfig::default()).await;
    let proxy = TestProxy::start(Answer::Tunnel).await;
    let client = builder(&pki, mock.url().parse().unwrap())
        .proxy(&format!("http://{}", proxy.addr))
        .unwrap()
        .build()
        .unwrap();
    let delivered = client.push(DevicePush::new(token(1), "magic-1")).await;
    assert!(delivered.is_ok(), "{delivered:?}");
    assert_eq!(mock.accepted_for(token(1).as_hex()), 1);
    // One connection, one tunnel, to the mock's authority; no credentials were asked for.
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let authority = mock.local_addr().to_string();
    let (line, hosts) = request_line_and(&heads[0], "host");
    assert_eq!(line, format!("CONNECT {authority} HTTP/1.1"));
    assert_eq!(hosts, [authority]);
    assert!(request_line_and(&heads[0], "proxy-authorization")
        .1
        .is_empty());
    assert_eq!(mock.stats().connections_opened, 1);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_reach_the_proxy_as_basic() {
    let Setup { pki, mock } = setup(MockConfig::default()).await;
    let proxy = TestProxy::start(Answer::Tunnel).await;
    // User `alice`, password `p@ss:w0rd`, percent-encoded.
    let client = builder(&pki, mock.url().parse().unwrap())
        .proxy(&format!("http://alice:p%40ss%3Aw0rd@{}/", proxy.addr))
        .unwrap()
        .build()
        .unwrap();
    let delivered = client.push(DevicePush::new(token(2), "magic-2")).await;
    assert!(delivered.is_ok(), "{delivered:?}");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    // base64("alice:p@ss:w0rd")
    assert_eq!(
        request_line_and(&heads[0], "proxy-authorization").1,
        ["Basic YWxpY2U6cEBzczp3MHJk"]
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_is_named_in_the_deadline_and_reconnects_back_off() {
    let pki = TestPki::generate().expect("test PKI");
    let proxy = TestProxy::start(Answer::Refuse(
        "HTTP/1.1 407 Proxy Authentication Required\r\n\
         Proxy-Authenticate: Basic realm=\"corp\"\r\n\
         Content-Length: 0\r\n\r\n",
    ))
    .await;
    let url = format!("http://alice:s3cret@{}", proxy.addr);
    let started = tokio::time::Instant::now();
    let configured = builder(&pki, Endpoint::custom("apns.invalid", 443).unwrap())
        .proxy(&url)
        .unwrap()
        .connections(2)
        .deadline(Duration::from_millis(1500));
    let shown = format!("http://alice:****@{}", proxy.addr);
    let debug = format!("{configured:?}");
    assert!(
        debug.contains(&shown) && !debug.contains("s3cret"),
        "{debug}"
    );
    let client = configured.build().unwrap();
    match client.push(DevicePush::new(token(3), "magic-3")).await {
        Err(
            e @ PushError::DeadlineExceeded {
                attempts: 0,
                connect_error: Some(_),
                ..
            },
        ) => {
            let words = e.to_string();
            assert!(
                words.contains(&format!(
                    "APNs proxy {shown} refused a tunnel to https://apns.invalid:443: 407 \
                     Proxy Authentication Required — the proxy rejected the user name and \
                     password"
                )),
                "{words}"
            );
            assert!(!format!("{words} {e:?}").contains("s3cret"), "{e:?}");
        }
        other => panic!("expected a deadline naming the 407, got {other:?}"),
    }
    let status = client.status().await.unwrap();
    let last = status.last_connect_error.unwrap_or_default();
    assert!(last.contains("407") && last.contains(&shown), "{last}");
    // Each slot waits 0.5–1 s, then 1–2 s, then 2–4 s: within 3 s, at most three attempts
    // per slot (a retry loop would make hundreds).
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    let attempts = proxy.heads().len();
    assert!((2..=6).contains(&attempts), "{attempts} CONNECTs in 3 s");
    for head in proxy.heads() {
        let (line, auth) = request_line_and(&head, "proxy-authorization");
        assert_eq!(line, "CONNECT apns.invalid:443 HTTP/1.1");
        assert_eq!(auth, ["Basic YWxpY2U6czNjcmV0"]);
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_is_named() {
    let pki = TestPki::generate().expect("test PKI");
    // Bound, then closed: the port refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let client = builder(&pki, Endpoint::custom("apns.invalid", 443).unwrap())
        .proxy(&format!("http://bob:hunter2@{addr}"))
        .unwrap()
        .deadline(Duration::from_millis(700))
        .build()
        .unwrap();
    match client.push(DevicePush::new(token(4), "magic-4")).await {
        Err(PushError::DeadlineExceeded {
            connect_error: Some(why),
            ..
        }) => {
            assert!(
                why.starts_with(&format!(
                    "cannot reach APNs proxy http://bob:****@{addr} (for https://apns.invalid:443): "
                )) && why.contains("refused"),
                "{why}"
            );
            assert!(!why.contains("hunter2"), "{why}");
        }
        other => panic!("expected a deadline naming the proxy, got {other:?}"),
    }
    client.shutdown().await;
}

#[test]
fn the_builder_refuses_unusable_proxy_urls() {
    for (url, why) in [
        (
            "https://carol:pw123@proxy:443",
            "https:// (TLS to the proxy) is not supported",
        ),
        ("socks5://proxy:1080", "the scheme must be http"),
        ("proxy:3128", "no scheme"),
    ] {
        let e = Client::builder().proxy(url).expect_err(url).to_string();
        assert!(
            e.contains("invalid APNs proxy URL") && e.contains(why),
            "{e}"
        );
        assert!(!e.contains("pw123"), "{e}");
    }
}
