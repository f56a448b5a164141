//! An independent client: micromdm's `scepclient` (Debian's `scep` package) against a tiny
//! HTTP server in front of [`magicpush_scep::handle`]. Enrollment, refused challenges (reused,
//! wrong, expired), renewal, renewal with a revoked certificate.
//!
//! Without `scepclient` on PATH the test prints SKIPPED and passes, unless `CI=true`.
//! With `SCEP_WRITE_FIXTURES=1` it saves the first enrollment's request and the client's key
//! under tests/data (the replay fixtures of the unit tests).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use magicpush_scep::{
    handle, DeviceCa, FailInfo, MessageType, PkiStatus, CA_CAPS, CA_CERT_CONTENT_TYPE,
    PKI_MESSAGE_CONTENT_TYPE,
};
use x509_parser::prelude::*;

struct State {
    ca: DeviceCa,
    challenges: common::MemoryChallenges,
    revoked: common::Revoked,
    /// Every PKIOperation body received, in order.
    requests: Vec<Vec<u8>>,
    /// What each answer said.
    answers: Vec<(Option<MessageType>, PkiStatus, Option<FailInfo>)>,
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(h, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn serve_one(mut stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut operation = String::new();
    let mut message = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "operation" => operation = String::from_utf8_lossy(&percent_decode(v)).into(),
            // base64 in a query: '+' is literal when not percent-encoded.
            "message" => message = Some(percent_decode(&v.replace('+', "%2B"))),
            _ => {}
        }
    }
    let mut st = state.lock().unwrap();
    match operation.as_str() {
        "GetCACaps" => respond(&mut stream, "200 OK", "text/plain", CA_CAPS.as_bytes()),
        "GetCACert" => {
            let der = st.ca.certificate_der().to_vec();
            respond(&mut stream, "200 OK", CA_CERT_CONTENT_TYPE, &der)
        }
        "PKIOperation" => {
            let msg = if method == "POST" {
                body
            } else {
                let text = message.unwrap_or_default();
                let text: Vec<u8> = text
                    .into_iter()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                match base64::engine::general_purpose::STANDARD.decode(&text) {
                    Ok(m) => m,
                    Err(_) => return respond(&mut stream, "400 Bad Request", "text/plain", b""),
                }
            };
            st.requests.push(msg.clone());
            let State {
                ca,
                challenges,
                revoked,
                ..
            } = &mut *st;
            match handle(
                &msg,
                ca,
                challenges,
                revoked,
                SystemTime::now(),
                &mut rand_core::OsRng,
            ) {
                Ok(r) => {
                    eprintln!("server: {:?} {:?} {:?}", r.message_type, r.status, r.reason);
                    st.answers.push((r.message_type, r.status, r.fail_info));
                    respond(&mut stream, "200 OK", PKI_MESSAGE_CONTENT_TYPE, &r.bytes)
                }
                Err(e) => respond(
                    &mut stream,
                    "400 Bad Request",
                    "text/plain",
                    e.to_string().as_bytes(),
                ),
            }
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", b""),
    }
}

fn start(state: Arc<Mutex<State>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            serve_one(stream, &state);
        }
    });
    format!("http://{addr}/scep")
}

/// Runs scepclient in `dir` (key.pem, cert.pem there); true when it got a certificate.
fn scepclient(url: &str, dir: &Path, cn: &str, challenge: &str) -> bool {
    let out = Command::new("scepclient")
        .current_dir(dir)
        .args(["-server-url", url, "-cn", cn, "-challenge", challenge])
        .arg("-private-key")
        .arg(dir.join("key.pem"))
        .arg("-certificate")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("scepclient runs");
    eprintln!(
        "scepclient {cn} {challenge}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

fn available() -> bool {
    let found = Command::new("scepclient").arg("-version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "scepclient is missing (apt-get install scep) and CI=true"
        );
        eprintln!("SKIPPED: no scepclient on PATH (apt-get install scep)");
    }
    found
}

fn read_cert(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    ::pem::parse(text).unwrap().into_contents()
}

#[test]
fn scepclient_enrolls_renews_and_is_refused() {
    if !available() {
        return;
    }
    let ca = common::fixture_ca();
    let ca_subject = {
        let (_, c) = parse_x509_certificate(ca.certificate_der()).unwrap();
        c.subject().as_raw().to_vec()
    };
    let now = SystemTime::now();
    let mut challenges = common::MemoryChallenges::default();
    challenges.add("good-1", "enr-A", now + Duration::from_secs(3600));
    challenges.add("old", "enr-old", now - Duration::from_secs(1));
    let state = Arc::new(Mutex::new(State {
        ca,
        challenges,
        revoked: common::Revoked::default(),
        requests: Vec::new(),
        answers: Vec::new(),
    }));
    let url = start(state.clone());

    // Enrollment.
    let a = tempfile::tempdir().unwrap();
    assert!(scepclient(&url, a.path(), "device-a", "good-1"));
    let der = read_cert(&a.path().join("cert.pem"));
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    assert_eq!(cert.issuer().as_raw(), &ca_subject[..]);
    let cn: Vec<_> = cert.subject().iter_common_name().collect();
    assert_eq!(cn[0].as_str().unwrap(), "device-a");
    let ou: Vec<_> = cert.subject().iter_organizational_unit().collect();
    assert_eq!(ou[0].as_str().unwrap(), "enr-A");
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .client_auth
    );
    let first_serial = cert.raw_serial().to_vec();

    if std::env::var_os("SCEP_WRITE_FIXTURES").is_some() {
        let st = state.lock().unwrap();
        let data = common::data_dir();
        std::fs::write(
            data.join("scepclient-pkcsreq.der"),
            st.requests.last().unwrap(),
        )
        .unwrap();
        std::fs::copy(a.path().join("key.pem"), data.join("scepclient-key.pem")).unwrap();
    }

    // The same challenge again, a wrong one, an expired one.
    for (cn, challenge) in [
        ("device-b", "good-1"),
        ("device-c", "nope"),
        ("device-d", "old"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        assert!(!scepclient(&url, dir.path(), cn, challenge), "{challenge}");
        assert!(!dir.path().join("cert.pem").exists());
    }

    // Renewal: scepclient signs with the certificate it holds (RenewalReq).
    assert!(scepclient(&url, a.path(), "device-a", "unused"));
    let renewed = read_cert(&a.path().join("cert.pem"));
    assert_ne!(renewed, der);
    let (_, renewed_cert) = parse_x509_certificate(&renewed).unwrap();
    assert_ne!(renewed_cert.raw_serial(), &first_serial[..]);
    let ou: Vec<_> = renewed_cert.subject().iter_organizational_unit().collect();
    assert_eq!(
        ou[0].as_str().unwrap(),
        "enr-A",
        "the enrollment id survives renewal"
    );
    assert_eq!(
        state.lock().unwrap().answers.last().unwrap(),
        &(Some(MessageType::RenewalReq), PkiStatus::Success, None)
    );
    if std::env::var_os("SCEP_WRITE_FIXTURES").is_some() {
        let st = state.lock().unwrap();
        let data = common::data_dir();
        std::fs::write(
            data.join("scepclient-renewalreq.der"),
            st.requests.last().unwrap(),
        )
        .unwrap();
    }

    // Renewal with a revoked certificate.
    state
        .lock()
        .unwrap()
        .revoked
        .0
        .insert(hex::encode(renewed_cert.raw_serial()));
    assert!(!scepclient(&url, a.path(), "device-a", "unused"));
    assert_eq!(
        read_cert(&a.path().join("cert.pem")),
        renewed,
        "the certificate is kept"
    );
    let answers = state.lock().unwrap().answers.clone();
    let refused = (
        Some(MessageType::PkcsReq),
        PkiStatus::Failure,
        Some(FailInfo::BadRequest),
    );
    assert_eq!(
        answers,
        [
            (Some(MessageType::PkcsReq), PkiStatus::Success, None),
            refused,
            refused,
            refused,
            (Some(MessageType::RenewalReq), PkiStatus::Success, None),
            (
                Some(MessageType::RenewalReq),
                PkiStatus::Failure,
                Some(FailInfo::BadRequest)
            ),
        ]
    );
}

/// A raw HTTP/1.1 GET against the test server: (status line, content type, body).
fn http_get(base: &str, query: &str) -> (String, String, Vec<u8>) {
    let rest = base.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /{path}?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.lines().next().unwrap().to_string();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, content_type, raw[split + 4..].to_vec())
}

/// The GET forms (no scepclient needed): caps, the CA certificate, and a PKIOperation whose
/// message is base64 in the query, URL-encoded.
#[test]
fn the_get_forms_are_served() {
    let mut challenges = common::MemoryChallenges::default();
    challenges.add(
        "good-1",
        "enr-get",
        SystemTime::now() + Duration::from_secs(60),
    );
    let state = Arc::new(Mutex::new(State {
        ca: common::fixture_ca(),
        challenges,
        revoked: common::Revoked::default(),
        requests: Vec::new(),
        answers: Vec::new(),
    }));
    let url = start(state.clone());

    let (status, content_type, body) = http_get(&url, "operation=GetCACaps");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(content_type, "text/plain");
    let caps = String::from_utf8(body).unwrap();
    for cap in [
        "POSTPKIOperation",
        "SHA-256",
        "AES",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(caps.lines().any(|l| l == cap), "{cap}");
    }

    let (status, content_type, body) = http_get(&url, "operation=GetCACert&message=any");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(content_type, CA_CERT_CONTENT_TYPE);
    assert_eq!(body, common::fixture_ca().certificate_der());

    let request = std::fs::read(common::data_dir().join("scepclient-pkcsreq.der")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&request);
    let encoded = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (status, content_type, body) =
        http_get(&url, &format!("operation=PKIOperation&message={encoded}"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(content_type, PKI_MESSAGE_CONTENT_TYPE);
    assert!(!body.is_empty());
    assert_eq!(
        state.lock().unwrap().answers,
        [(Some(MessageType::PkcsReq), PkiStatus::Success, None)]
    );

    // Garbage is an HTTP 400, not a CertRep.
    let (status, _, _) = http_get(&url, "operation=PKIOperation&message=Z2FyYmFnZQ%3D%3D");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
}
