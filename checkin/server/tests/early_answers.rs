//! Answers given before the request body was read reach the client as a status and a body:
//! an admin request with a wrong key (401), a device body declared over the limit (413), a
//! device refused on its headers (403), over HTTP/2 (h2c prior knowledge and TLS) and
//! HTTP/1.1. The server reads and discards the rest of the body first; without that, curl
//! over HTTP/2 often ends with `(92) Stream error in the HTTP/2 framing layer` instead.
//!
//! The curl tests need `curl` on PATH; without it they fail under CI (`CI=true`) and are
//! skipped elsewhere with a note.

mod server_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use magicpush_server::http::DEFAULT_BODY_LIMIT;
use server_common::{Options, TestServer};

/// Attempts per protocol: the failure this guards against came in most attempts, not all.
const ATTEMPTS: usize = 10;
/// The body every request sends: larger than HTTP/2's initial stream window (64 KiB), so that
/// the client is still sending when the server answers.
const BODY: usize = 100 * 1024;
/// The body limit of the 413 tests: under [`BODY`], and [`BODY`] within twice of it.
const SMALL_LIMIT: usize = 64 * 1024;

/// How curl talks to the server.
#[derive(Debug, Clone, Copy)]
enum Proto {
    /// HTTP/2 without TLS, with prior knowledge (no upgrade).
    H2c,
    /// HTTP/2 over TLS (ALPN).
    H2Tls,
    /// HTTP/1.1, plain or over TLS as the URL says.
    Http1,
}

impl Proto {
    fn flag(self) -> &'static str {
        match self {
            Proto::H2c => "--http2-prior-knowledge",
            Proto::H2Tls => "--http2",
            Proto::Http1 => "--http1.1",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Proto::H2c | Proto::H2Tls => "2",
            Proto::Http1 => "1.1",
        }
    }
}

/// What curl got.
#[derive(Debug)]
struct Answer {
    exit: Option<i32>,
    status: String,
    version: String,
    body: String,
    stderr: String,
}

/// Whether curl can run: yes when it is on PATH; a missing curl fails the test under CI
/// (`CI=true`), and skips it elsewhere with a note.
fn curl_or_skip(test: &str) -> bool {
    match Command::new("curl").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "{test} needs curl on PATH (CI=true: it is not skipped)"
            );
            println!("note: curl is not on PATH; skipping {test}");
            false
        }
    }
}

/// `curl -X method url` sending the file `body`, over `proto`, with these headers.
fn curl(
    proto: Proto,
    method: &str,
    url: &str,
    body: &Path,
    headers: &[String],
    ca: Option<&Path>,
) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20"])
        .arg(proto.flag())
        .args(["-X", method])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        // The status and version on a last line of their own, after the body.
        .args(["--write-out", "\n%{http_code} %{http_version}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = last.split_once(' ').unwrap_or((last, ""));
    Answer {
        exit: out.status.code(),
        status: status.to_owned(),
        version: version.to_owned(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `n` bytes of a request body, in a file.
fn body_file(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("body-{n}"));
    let bytes: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `curl` [`ATTEMPTS`] times and checks that every attempt got `status` and a body
/// holding `words`.
fn every_attempt_answered(
    proto: Proto,
    request: (&str, &str),
    body: &Path,
    headers: &[String],
    ca: Option<&Path>,
    want: (&str, &str),
) {
    let (method, url) = request;
    let (status, words) = want;
    for attempt in 1..=ATTEMPTS {
        let got = curl(proto, method, url, body, headers, ca);
        assert!(
            got.exit == Some(0) && got.status == status && got.body.contains(words),
            "{proto:?} attempt {attempt} of {ATTEMPTS}, {method} {url}: wanted {status} with \
             {words:?}, got exit {:?}, status {:?}, body {:?}; curl said {:?}",
            got.exit,
            got.status,
            got.body,
            got.stderr,
        );
        assert_eq!(got.version, proto.version(), "{proto:?}: {got:?}");
    }
}

/// A server whose admin key is not `wrong`, with `tls` or not, and the CA to trust.
async fn server(tls: bool, body_limit: usize, device_auth: bool) -> (TestServer, Option<PathBuf>) {
    let srv = TestServer::start(Options {
        tls,
        body_limit,
        device_auth,
        ..Options::default()
    })
    .await;
    let ca = tls.then(|| {
        let path = srv.dir.path().join("ca.pem");
        std::fs::write(&path, srv.pki.ca.cert_pem()).unwrap();
        path
    });
    (srv, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_a_401_that_curl_reads_over_http2_and_http1() {
    if !curl_or_skip("the curl test of early 401s") {
        return;
    }
    let wrong = vec!["Authorization: Bearer wrong".to_owned()];
    for tls in [false, true] {
        let (srv, ca) = server(tls, DEFAULT_BODY_LIMIT, false).await;
        let body = body_file(srv.dir.path(), BODY);
        let url = format!("{}/v1/refresh", srv.url);
        let protos: &[Proto] = if tls {
            &[Proto::H2Tls, Proto::Http1]
        } else {
            &[Proto::H2c, Proto::Http1]
        };
        for &proto in protos {
            let (url, body, wrong, ca) = (url.clone(), body.clone(), wrong.clone(), ca.clone());
            tokio::task::spawn_blocking(move || {
                every_attempt_answered(
                    proto,
                    ("POST", &url),
                    &body,
                    &wrong,
                    ca.as_deref(),
                    ("401", r#"{"error":"wrong API key"}"#),
                )
            })
            .await
            .unwrap();
        }
        // The server is still whole: the right key is served.
        let summary = srv
            .admin
            .get_json("/v1/connectivity")
            .await
            .expect("served after the refusals");
        assert_eq!(summary["total"], 0, "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_a_413_that_curl_reads() {
    if !curl_or_skip("the curl test of early 413s") {
        return;
    }
    for tls in [false, true] {
        let (srv, ca) = server(tls, SMALL_LIMIT, false).await;
        let body = body_file(srv.dir.path(), BODY);
        let url = format!("{}/mdm/checkin", srv.url);
        let protos: &[Proto] = if tls {
            &[Proto::H2Tls, Proto::Http1]
        } else {
            &[Proto::H2c, Proto::Http1]
        };
        let words = format!("request body larger than {SMALL_LIMIT} bytes");
        for &proto in protos {
            let (url, body, ca, words) = (url.clone(), body.clone(), ca.clone(), words.clone());
            tokio::task::spawn_blocking(move || {
                every_attempt_answered(
                    proto,
                    ("PUT", &url),
                    &body,
                    &[],
                    ca.as_deref(),
                    ("413", &words),
                )
            })
            .await
            .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refused_on_its_headers_reads_its_403_never_a_401() {
    if !curl_or_skip("the curl test of early 403s") {
        return;
    }
    let (srv, _) = server(false, DEFAULT_BODY_LIMIT, true).await;
    let body = body_file(srv.dir.path(), BODY);
    let url = format!("{}/mdm/checkin", srv.url);
    // An `Mdm-Signature` too long to look at is refused before the body is read. HTTP/1.1
    // only: over HTTP/2 the server takes header blocks of 16 KiB at most (hyper's default),
    // so the header never reaches the check.
    let oversized = vec![format!(
        "Mdm-Signature: {}",
        "A".repeat(magicpush_server::identity::MAX_SIGNATURE_HEADER + 1)
    )];
    tokio::task::spawn_blocking(move || {
        every_attempt_answered(
            Proto::Http1,
            ("PUT", &url),
            &body,
            &oversized,
            None,
            ("403", "Mdm-Signature"),
        )
    })
    .await
    .unwrap();
}

/// In process, with the `h2` client: the client sends its first 16 KiB, waits for the
/// server to have answered early, then sends the rest under flow control. The stream must
/// stay open for the rest (no reset), and the answer is the 401 with its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_sends_its_whole_body_and_reads_the_401() {
    let (srv, _) = server(false, DEFAULT_BODY_LIMIT, false).await;
    let addr = srv.handle.as_ref().unwrap().local_addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client;
    for attempt in 1..=ATTEMPTS {
        client = client.ready().await.expect("ready for a request");
        let request = http::Request::post(format!("http://{addr}/v1/refresh"))
            .header(http::header::AUTHORIZATION, "Bearer wrong")
            .header(http::header::CONTENT_LENGTH, BODY.to_string())
            .body(())
            .unwrap();
        let (response, mut stream) = client.send_request(request, false).unwrap();
        let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
        let mut sent = 0;
        // Bounded: each pass sends at least a byte or fails the test.
        for pass in 0..BODY {
            if sent == BODY {
                break;
            }
            if pass == 1 {
                // Time for a server that answers at once to have answered and reset.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let n = chunk.len().min(BODY - sent);
            stream.reserve_capacity(n);
            let granted = tokio::time::timeout(
                Duration::from_secs(10),
                std::future::poll_fn(|cx| stream.poll_capacity(cx)),
            )
            .await
            .expect("flow-control capacity within 10 s");
            let granted = match granted {
                Some(Ok(granted)) if granted > 0 => granted.min(n),
                other => panic!("attempt {attempt}: stream ended after {sent} bytes: {other:?}"),
            };
            let end = sent + granted == BODY;
            stream
                .send_data(chunk.slice(..granted), end)
                .unwrap_or_else(|e| panic!("attempt {attempt}: after {sent} bytes: {e}"));
            sent += granted;
        }
        assert_eq!(sent, BODY, "attempt {attempt}");
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("an answer within 10 s")
            .expect("an answer, not a reset");
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.expect("the answer's body");
            let _ = body.flow_control().release_capacity(data.len());
            text.extend_from_slice(&data);
        }
        assert_eq!(text, br#"{"error":"wrong API key"}"#, "attempt {attempt}");
        // The client's half ended cleanly: the server never reset the stream.
        let reset = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match stream.poll_reset(cx) {
                std::task::Poll::Ready(r) => Some(r.map_err(|e| e.to_string())),
                std::task::Poll::Pending => None,
            })
        })
        .await;
        assert!(
            !matches!(reset, Some(Ok(_))),
            "attempt {attempt}: the server reset the stream: {reset:?}"
        );
    }
    drop(client);
    driver.abort();
}
