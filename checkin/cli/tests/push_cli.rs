//! `magicpush push` against the mock APNs: one push, a tokens file, the JSON summary, and
//! a bad file refused before anything is sent.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use magicpush_fixtures::TestPki;
use magicpush_loadtest::mock_apns::{MockApns, MockConfig, MockHandle};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn magicpush<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_magicpush"))
        .args(args)
        .output()
        .expect("magicpush runs")
}

fn token(i: u8) -> String {
    format!("{:02x}", i).repeat(32)
}

async fn mock(pki: &TestPki, config: MockConfig) -> MockHandle {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    MockApns::start(
        addr,
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        config,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_one_device_and_a_file_with_a_json_summary() {
    let pki = TestPki::generate().unwrap();
    let mut config = MockConfig::default();
    config.unregistered.insert(token(3));
    let mock = mock(&pki, config).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "push.pem", &pki.push.cert_pem);
    let key = write(dir.path(), "push.key.pem", &pki.push.key_pem);
    let ca = write(dir.path(), "ca.pem", pki.ca.cert_pem());
    let url = mock.url();
    let base: Vec<String> = [
        "push",
        "--cert",
        &cert,
        "--key",
        &key,
        "--apns-url",
        &url,
        "--apns-ca",
        &ca,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v = base.clone();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let one = with(&["--token", &token(1), "--magic", "magic-1"]);
    let out = tokio::task::spawn_blocking(move || magicpush(&one))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered"));
    assert_eq!(mock.accepted_for(&token(1)), 1);

    let lines: String = (1..=5)
        .map(|i| format!("{} magic-{i}\n", token(i).to_uppercase()))
        .collect();
    let file = write(dir.path(), "tokens.txt", &format!("# devices\n\n{lines}"));
    let many = with(&["--tokens-file", &file, "--json"]);
    let out = tokio::task::spawn_blocking(move || magicpush(&many))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "some pushes failed → exit 2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("JSON on the last line");
    assert_eq!(summary["sent"], 5);
    assert_eq!(summary["delivered"], 4);
    assert_eq!(summary["failed"], serde_json::json!({"Unregistered": 1}));
    assert!(summary["elapsed_s"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_bad_tokens_file_is_refused_before_anything_is_sent() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "push.pem", &pki.push.cert_pem);
    let key = write(dir.path(), "push.key.pem", &pki.push.key_pem);
    let file = write(
        dir.path(),
        "tokens.txt",
        &format!("{} m1\nnot-hexx m2\n", token(1)),
    );
    // Nothing listens on port 9: a push attempt would fail differently.
    let out = magicpush(&[
        "push",
        "--cert",
        &cert,
        "--key",
        &key,
        "--apns-url",
        "https://127.0.0.1:9",
        "--tokens-file",
        &file,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens.txt:2"), "names the line: {err}");
    assert!(err.contains("not hexadecimal"), "{err}");
}

#[test]
fn an_unusable_certificate_is_a_clear_error() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "push.pem", &pki.push.cert_pem);
    let other_key = write(dir.path(), "other.key.pem", &pki.other_topic.key_pem);
    let out = magicpush(&[
        "push", "--cert", &cert, "--key", &other_key, "--token", "abcd", "--magic", "m",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("push certificate"), "{err}");
}

/// The committed fixtures: a `.p12` exported with its password pushes like PEM files do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pkcs12_certificate_pushes_with_its_password_from_a_file() {
    let certs = magicpush_fixtures::dir().join("certs");
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    let mock = MockApns::start(
        "127.0.0.1:0".parse().unwrap(),
        &read("server.pem"),
        &read("server.key.pem"),
        &read("ca.pem"),
        MockConfig::default(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = write(
        dir.path(),
        "password",
        &format!("{}\n", magicpush_fixtures::generate::P12_PASSWORD),
    );
    let p12 = certs.join("push.p12").to_string_lossy().into_owned();
    let ca = certs.join("ca.pem").to_string_lossy().into_owned();
    let url = mock.url();
    let base = [
        "push",
        "--cert",
        &p12,
        "--apns-url",
        &url,
        "--apns-ca",
        &ca,
        "--token",
    ]
    .map(str::to_owned);
    let mut args = base.to_vec();
    args.extend([token(1), "--magic".into(), "m".into()]);
    args.extend(["--cert-password-file".into(), password]);
    let out = tokio::task::spawn_blocking(move || magicpush(&args))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(mock.accepted_for(&token(1)), 1);
    assert_eq!(mock.accepted_for(&token(2)), 0);

    // Without its password: refused before anything is sent, naming how to give it.
    let mut args = base.to_vec();
    args.extend([token(2), "--magic".into(), "m".into()]);
    let out = tokio::task::spawn_blocking(move || magicpush(&args))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("MAGICPUSH_P12_PASSWORD"), "{stderr}");
    assert_eq!(mock.accepted_for(&token(1)), 1);
    assert_eq!(mock.accepted_for(&token(2)), 0);
    mock.shutdown().await;
}

#[test]
fn a_push_that_never_connects_says_why() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "push.pem", &pki.push.cert_pem);
    let key = write(dir.path(), "push.key.pem", &pki.push.key_pem);
    // Bound, then closed: the port refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("https://127.0.0.1:{port}");
    let out = magicpush(&[
        "push",
        "--cert",
        &cert,
        "--key",
        &key,
        "--apns-url",
        &url,
        "--token",
        &token(1),
        "--magic",
        "m",
        "--deadline-s",
        "1",
        "--connections",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2), "the push failed → exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "deadline of 1s passed after 0 attempt(s); last connection error: cannot reach"
        ) && err.contains(&format!("127.0.0.1:{port}: Connection refused")),
        "{err}"
    );
    // The summary still groups it by its cause's name.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DeadlineExceeded"), "{stdout}");
}

/// `--apns-proxy` from the environment: every connection goes to the proxy (here a closed
/// port), and the error names it with its password masked. An https:// proxy is refused
/// before anything is sent.
#[test]
fn the_apns_proxy_comes_from_the_environment_and_is_named_masked() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "push.pem", &pki.push.cert_pem);
    let key = write(dir.path(), "push.key.pem", &pki.push.key_pem);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = closed.local_addr().unwrap();
    drop(closed);
    let args = [
        "push",
        "--cert",
        &cert,
        "--key",
        &key,
        // Nothing listens on port 9 either: reached directly, it would fail differently.
        "--apns-url",
        "https://127.0.0.1:9",
        "--token",
        &token(1),
        "--magic",
        "m",
        "--deadline-s",
        "1",
    ];
    let run = |proxy_url: &str| {
        Command::new(env!("CARGO_BIN_EXE_magicpush"))
            .args(args)
            .env("MAGICPUSH_APNS_PROXY", proxy_url)
            .output()
            .expect("magicpush runs")
    };
    let out = run(&format!("http://u:hunter2@{proxy}"));
    assert_eq!(out.status.code(), Some(2), "the push failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach APNs proxy http://u:****@{proxy}")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let out = run("https://u:hunter2@proxy.example:443");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--apns-proxy") && err.contains("is not supported"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
