//! Browser sign-in (`/v1/session`) on a real server: the cookie alone reads, a change needs
//! the CSRF header, signing out ends the session at once, failed sign-ins are limited, and
//! the cookie's attributes (`Secure` over TLS only).

mod server_common;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use server_common::*;

/// An answer: status, headers, JSON body (`null` if none).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

/// One request on a new connection (TLS when the server speaks it), with these headers.
async fn send(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let addr = srv.handle.as_ref().expect("running").local_addr();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    if !payload.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(payload))).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let resp = if srv.url.starts_with("https://") {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(srv.pki.ca.cert_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(addr.ip().to_string()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        exchange(TokioIo::new(tls), req).await
    } else {
        exchange(TokioIo::new(tcp), req).await
    };
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn exchange<I>(
    io: I,
    req: http::Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

async fn sign_in(srv: &TestServer, key: &str) -> Answer {
    send(
        srv,
        Method::POST,
        "/v1/session",
        &[],
        Some(json!({ "api_key": key })),
    )
    .await
}

/// The `name=value` of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().trim()
}

#[tokio::test]
async fn the_cookie_reads_a_change_needs_the_csrf_token_and_sign_out_ends_it() {
    let srv = TestServer::start(Options::default()).await;
    let signed = sign_in(&srv, API_KEY).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    assert_eq!(signed.header(header::CACHE_CONTROL), "no-store");
    let set_cookie = signed.header(header::SET_COOKIE).to_owned();
    let attributes: Vec<&str> = set_cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["Path=/", "HttpOnly", "SameSite=Strict", "Max-Age=43200"],
        "no Secure on plain HTTP: {set_cookie}"
    );
    let cookie = cookie_pair(&set_cookie).to_owned();
    let token = cookie.strip_prefix("magicpush_session=").unwrap();
    assert_eq!(token.len(), 43, "{cookie}");
    let csrf = signed.body["csrf_token"].as_str().unwrap().to_owned();
    assert_eq!(csrf.len(), 43);
    assert_ne!(csrf, token);
    assert_eq!(signed.body["idle_timeout_s"], 1800);
    let expires_at = signed.body["expires_at"].as_str().unwrap();
    let expires_at =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let left = expires_at - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::hours(11) && left <= time::Duration::hours(12),
        "{expires_at}"
    );
    assert!(signed.body["expires_at"].as_str().unwrap().ends_with('Z'));

    // A reloaded page gets its token back.
    let with_cookie = [("cookie", cookie.as_str())];
    let current = send(&srv, Method::GET, "/v1/session", &with_cookie, None).await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(current.body["csrf_token"], csrf.as_str());
    assert_eq!(current.header(header::CACHE_CONTROL), "no-store");

    // The cookie alone reads.
    let read = send(&srv, Method::GET, "/v1/connectivity", &with_cookie, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert!(read.body["states"].is_object());

    // A change needs the CSRF header, and the right one.
    let change = Some(json!({ "unreachable_after": "10m" }));
    let refused = send(
        &srv,
        Method::PUT,
        "/v1/settings",
        &with_cookie,
        change.clone(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.error(),
        "missing or wrong CSRF token (X-CSRF-Token)"
    );
    let wrong = [("cookie", cookie.as_str()), ("x-csrf-token", token)];
    let refused = send(&srv, Method::PUT, "/v1/settings", &wrong, change.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let with_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let done = send(&srv, Method::PUT, "/v1/settings", &with_csrf, change).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["unreachable_after_s"], 600);

    // Signing out needs the token too; then the session is gone at once.
    let refused = send(&srv, Method::DELETE, "/v1/session", &with_cookie, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let out = send(&srv, Method::DELETE, "/v1/session", &with_csrf, None).await;
    assert_eq!(out.status, StatusCode::OK);
    assert_eq!(out.body, json!({ "signed_out": true }));
    assert_eq!(
        out.header(header::SET_COOKIE),
        "magicpush_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    );
    for (method, path, headers) in [
        (Method::GET, "/v1/connectivity", &with_cookie[..]),
        (Method::GET, "/v1/session", &with_cookie[..]),
        (Method::PUT, "/v1/settings", &with_csrf[..]),
        (Method::DELETE, "/v1/session", &with_csrf[..]),
    ] {
        let after = send(&srv, method.clone(), path, headers, Some(json!({}))).await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(after.error(), "not signed in", "{method} {path}");
    }

    // The bearer key works as it did, a stale cookie beside it or not; without either the
    // words are unchanged.
    let bearer = format!("Bearer {API_KEY}");
    let both = [
        ("cookie", cookie.as_str()),
        ("authorization", bearer.as_str()),
    ];
    let read = send(&srv, Method::GET, "/v1/connectivity", &both, None).await;
    assert_eq!(read.status, StatusCode::OK);
    let bad_bearer = [
        ("cookie", cookie.as_str()),
        ("authorization", "Bearer nope"),
    ];
    let refused = send(&srv, Method::GET, "/v1/connectivity", &bad_bearer, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.error(), "wrong API key");
    let none = send(&srv, Method::GET, "/v1/connectivity", &[], None).await;
    assert_eq!(none.error(), "missing bearer token");
    // Another method on the session route: 405 naming the ones it takes.
    let put = send(&srv, Method::PUT, "/v1/session", &[], None).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.header(header::ALLOW), "POST, GET, DELETE");
}

#[tokio::test]
async fn failed_sign_ins_are_limited_with_retry_after() {
    let srv = TestServer::start(Options::default()).await;
    // A malformed body is a 400 and no failure.
    let bad = send(
        &srv,
        Method::POST,
        "/v1/session",
        &[],
        Some(json!({"key": API_KEY})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.header(header::CACHE_CONTROL), "no-store");
    for n in 0..5 {
        let wrong = sign_in(&srv, "not-the-key").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {n}");
        assert_eq!(wrong.error(), "wrong API key");
        assert!(wrong.header(header::SET_COOKIE).is_empty());
    }
    // The sixth is refused, the right key included.
    for key in ["not-the-key", API_KEY] {
        let limited = sign_in(&srv, key).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = limited.header(header::RETRY_AFTER).parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(
            limited.error(),
            format!("too many failed sign-ins; try again in {retry} s")
        );
        assert!(limited.header(header::SET_COOKIE).is_empty());
    }
    // The bearer key is not concerned.
    assert!(srv.admin.get_json("/v1/connectivity").await.is_ok());
    let metrics = srv.anon.get_text("/metrics").await.unwrap();
    for outcome in ["wrong_key", "limited", "bad_request"] {
        let line = format!("magicpush_admin_signins_total{{outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn without_an_api_key_the_session_routes_are_404() {
    let srv = TestServer::start(Options {
        api_key: None,
        ..Options::default()
    })
    .await;
    for method in [Method::POST, Method::GET, Method::DELETE] {
        let answer = send(
            &srv,
            method.clone(),
            "/v1/session",
            &[("cookie", "magicpush_session=x")],
            Some(json!({ "api_key": "" })),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}");
    }
    let answer = send(
        &srv,
        Method::GET,
        "/v1/connectivity",
        &[("cookie", "magicpush_session=x")],
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure() {
    let srv = TestServer::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let signed = sign_in(&srv, API_KEY).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    let set_cookie = signed.header(header::SET_COOKIE).to_owned();
    assert!(
        set_cookie.ends_with("; Max-Age=43200; Secure"),
        "{set_cookie}"
    );
    let cookie = cookie_pair(&set_cookie).to_owned();
    let csrf = signed.body["csrf_token"].as_str().unwrap().to_owned();
    let out = send(
        &srv,
        Method::DELETE,
        "/v1/session",
        &[("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())],
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out
        .header(header::SET_COOKIE)
        .ends_with("Max-Age=0; Secure"));
}
