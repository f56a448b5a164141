//! The `magicpush` binary: `serve` refuses unusable certificates, keeps a certificate
//! installed through the admin API across restarts, and `devices`, `report` and
//! `refresh --all` talk to a running server.

mod common;

use common::Serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_fixtures::plists::{self, Device};
use magicpush_fixtures::TestPki;
use magicpush_loadtest::mock_apns::{MockApns, MockConfig};
use magicpush_server::client::AdminClient;

const KEY: &str = "cli-test-key";
const BIN: &str = env!("CARGO_BIN_EXE_magicpush");

fn serve(args: &[&str], extra: &[(&str, &Path)]) -> Serve {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    for (flag, path) in extra {
        cmd.arg(flag).arg(path);
    }
    // These tests are about other things than device identity (which has its own).
    if !extra.iter().any(|(flag, _)| *flag == "--device-ca") {
        cmd.arg("--insecure-no-device-auth");
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Serve::listening(child).expect("serve printed its address")
}

/// Runs the binary to completion (bounded), returning its output.
fn run(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    run_with_env(args, paths, &[])
}

/// [`run`] with extra environment variables.
fn run_with_env(args: &[&str], paths: &[(&str, &Path)], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    let mut child = cmd
        .env_remove("MAGICPUSH_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("magicpush {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fixture(name: &str) -> PathBuf {
    magicpush_fixtures::dir().join("certs").join(name)
}

#[test]
fn serve_refuses_unusable_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("push-expired.pem", "push-expired.key.pem", "expired"),
        (
            "non-mdm.pem",
            "non-mdm.key.pem",
            "not an MDM push certificate",
        ),
        ("key-mismatch.pem", "key-mismatch.key.pem", "does not match"),
        (
            "push-not-yet-valid.pem",
            "push-not-yet-valid.key.pem",
            "not valid before",
        ),
    ];
    for (cert, key, needle) in cases {
        let out = run(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--insecure-no-device-auth",
            ],
            &[
                ("--data-dir", dir.path()),
                ("--cert", &fixture(cert)),
                ("--key", &fixture(key)),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert}: started");
        assert!(stderr.contains(needle), "{cert}: {stderr}");
    }
    // Without any certificate the server starts (the manual's first page: issue a request
    // first) and says so.
    let bare = serve(&["--api-key", KEY], &[("--data-dir", dir.path())]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = AdminClient::new(&bare.url, Some(KEY.into()), None).unwrap();
    let health = rt.block_on(admin.get_json("/healthz")).unwrap();
    assert_eq!(health["push_certificate"], "missing", "{health}");
    let err = rt.block_on(admin.get_json("/v1/pushcert")).unwrap_err();
    assert!(
        err.to_string().contains("no push certificate registered"),
        "{err}"
    );
    drop(bare);
    // Secure by default without --device-ca: the built-in device CA (enroll_cli.rs).
    let out = run(
        &["serve", "--unreachable-after", "5 minutes"],
        &[("--data-dir", dir.path())],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"));
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_installed_through_the_api_survives_a_restart() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let data = dir.path().join("data");
    let paths = [
        ("--data-dir", data.as_path()),
        ("--cert", &cert),
        ("--key", &key),
    ];
    let args = ["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"];

    let first = serve(&args, &paths);
    let admin = AdminClient::new(&first.url, Some(KEY.into()), None).unwrap();
    let before = admin.get_json("/v1/pushcert").await.unwrap();
    let bundle = format!("{}{}", pki.push_renewal.cert_pem, pki.push_renewal.key_pem);
    let (s, body) = admin
        .request(
            Method::PUT,
            "/v1/pushcert",
            Some(("application/x-pem-file", Bytes::from(bundle))),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body:?}");
    admin
        .send_json(
            Method::PUT,
            "/v1/pushcert/memo",
            &serde_json::json!({"apple_id": "ops@example.jp"}),
        )
        .await
        .unwrap();
    drop(first);

    // Same flags (still naming the old certificate): the newer installed one wins.
    let second = serve(&args, &paths);
    let admin = AdminClient::new(&second.url, Some(KEY.into()), None).unwrap();
    let after = admin.get_json("/v1/pushcert").await.unwrap();
    assert_ne!(after["serial"], before["serial"], "{after}");
    assert!(after["days_left"].as_i64().unwrap() > 600, "{after}");
    assert_eq!(after["apple_id"], "ops@example.jp");
}

/// A data directory from before the store kept the push certificates' state: `serve` moves
/// the files into the store at its first start, keeps them as `.migrated` backups, and serves
/// what they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_data_directory_is_migrated_into_the_store() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let bundle = format!("{}{}", pki.push_renewal.cert_pem, pki.push_renewal.key_pem);
    std::fs::write(data.join("pushcert.pem"), bundle).unwrap();
    std::fs::write(
        data.join("pushcert-memo.json"),
        br#"{"apple_id": "ops@example.jp"}"#,
    )
    .unwrap();
    let args = ["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"];
    let server = serve(&args, &[("--data-dir", data.as_path())]);
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    let view = admin.get_json("/v1/pushcert").await.unwrap();
    assert_eq!(view["topic"], pki.topic.as_str(), "{view}");
    assert!(
        view["days_left"].as_i64().unwrap() > 600,
        "the renewal: {view}"
    );
    assert_eq!(view["apple_id"], "ops@example.jp");
    for name in ["pushcert.pem", "pushcert-memo.json"] {
        assert!(!data.join(name).exists(), "{name} moved into the store");
        assert!(
            data.join(format!("{name}.migrated")).exists(),
            "{name} kept"
        );
    }
    drop(server);
    // The next start reads the store alone.
    let again = serve(&args, &[("--data-dir", data.as_path())]);
    let admin = AdminClient::new(&again.url, Some(KEY.into()), None).unwrap();
    let view = admin.get_json("/v1/pushcert").await.unwrap();
    assert_eq!(view["apple_id"], "ops@example.jp");
    assert_eq!(view["topic"], pki.topic.as_str());
}

/// E320 at start: with devices enrolled under one topic, `serve` refuses a certificate of
/// another, naming both; with nobody enrolled it starts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_another_topic_while_devices_are_enrolled() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let (other_cert, other_key) = write_pair(
        dir.path(),
        "other",
        &pki.other_topic.cert_pem,
        &pki.other_topic.key_pem,
    );
    let other_topic =
        magicpush_engine::cert::CertificateInfo::from_pem(pki.other_topic.cert_pem.as_bytes())
            .unwrap()
            .topic()
            .to_owned();
    let data = dir.path().join("data");
    let args = ["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"];

    // Nobody enrolled yet: another topic is fine.
    let empty = serve(
        &args,
        &[
            ("--data-dir", data.as_path()),
            ("--cert", &other_cert),
            ("--key", &other_key),
        ],
    );
    drop(empty);
    let first = serve(
        &args,
        &[
            ("--data-dir", data.as_path()),
            ("--cert", &cert),
            ("--key", &key),
        ],
    );
    let admin = AdminClient::new(&first.url, Some(KEY.into()), None).unwrap();
    put(
        &admin,
        "/mdm/checkin",
        &plists::authenticate(&device(1), &pki.topic),
    )
    .await;
    put(
        &admin,
        "/mdm/checkin",
        &plists::token_update(&device(1), &pki.topic),
    )
    .await;
    drop(first);

    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ],
        &[
            ("--data-dir", data.as_path()),
            ("--cert", &other_cert),
            ("--key", &other_key),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with another topic: {stderr}"
    );
    assert!(stderr.contains("E320"), "{stderr}");
    assert!(
        stderr.contains(&pki.topic) && stderr.contains(&other_topic),
        "both topics named: {stderr}"
    );
    // The registered topic still starts.
    drop(serve(
        &args,
        &[
            ("--data-dir", data.as_path()),
            ("--cert", &cert),
            ("--key", &key),
        ],
    ));
}

/// A data directory written with `--secrets-key-file` does not start without it, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_database_needs_its_key() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let secrets = dir.path().join("secrets.key");
    std::fs::write(&secrets, "11".repeat(32)).unwrap();
    let data = dir.path().join("data");
    let args = ["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"];
    let paths = [
        ("--data-dir", data.as_path()),
        ("--cert", cert.as_path()),
        ("--key", key.as_path()),
    ];
    let mut with_key = paths.to_vec();
    with_key.push(("--secrets-key-file", secrets.as_path()));
    drop(serve(&args, &with_key));
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ],
        &paths,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without its key");
    assert!(stderr.contains("--secrets-key-file"), "{stderr}");
    drop(serve(&args, &with_key));
}

fn device(n: u8) -> Device {
    let mut d = Device::iphone();
    d.udid = format!("CLI-DEVICE-{n}");
    d.serial_number = format!("CLISERIAL{n}");
    d.token = (0u8..32).map(|i| i ^ n).collect();
    d.push_magic = format!("cli-magic-{n}");
    d
}

async fn put(admin: &AdminClient, path: &str, dict: &plist::Dictionary) -> Bytes {
    let (s, body) = admin
        .request(
            Method::PUT,
            path,
            Some((
                "application/x-apple-aspen-mdm-checkin",
                Bytes::from(plists::to_xml(dict)),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK, "{body:?}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_report_and_refresh_commands_against_a_running_server() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mock = MockApns::start(
        "127.0.0.1:0".parse().unwrap(),
        &pki.server.cert_pem,
        &pki.server.key_pem,
        pki.ca.cert_pem(),
        MockConfig::default(),
    )
    .await
    .unwrap();
    let mut accepted = mock.subscribe_accepted();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.cert_pem()).unwrap();
    let data = dir.path().join("data");
    let mock_url = mock.url();
    let server = serve(
        &["--api-key", KEY, "--apns-url", &mock_url],
        &[
            ("--data-dir", &data),
            ("--cert", &cert),
            ("--key", &key),
            ("--apns-ca", &ca),
        ],
    );
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    let devices = [device(1), device(2)];
    for d in &devices {
        put(&admin, "/mdm/checkin", &plists::authenticate(d, &pki.topic)).await;
        put(&admin, "/mdm/checkin", &plists::token_update(d, &pki.topic)).await;
    }

    // Simulated devices: answer each push they receive.
    let answered = Arc::new(AtomicUsize::new(0));
    let responder = {
        let admin = admin.clone();
        let devices = devices.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            while let Some(push) = accepted.recv().await {
                let Some(d) = devices.iter().find(|d| hex::encode(&d.token) == push.token) else {
                    continue;
                };
                let body = put(&admin, "/mdm/server", &plists::report_idle(d)).await;
                let cmd: plist::Dictionary = plist::from_bytes(&body).unwrap();
                let uuid = cmd["CommandUUID"].as_string().unwrap().to_owned();
                put(
                    &admin,
                    "/mdm/server",
                    &plists::report_device_information(d, &uuid),
                )
                .await;
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let url = server.url.clone();
    let refresh = tokio::task::spawn_blocking(move || {
        run(
            &[
                "refresh",
                "--all",
                "--wait",
                "20s",
                "--server",
                &url,
                "--api-key",
                KEY,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&refresh.stdout);
    assert!(
        refresh.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&refresh.stderr)
    );
    assert!(stdout.contains("2 device(s) to push"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["responded", "2"])),
        "{stdout}"
    );
    wait_count(&answered, 2).await;

    // One device, by UDID: the CLI follows that device until it answered.
    let url = server.url.clone();
    let one = tokio::task::spawn_blocking(move || {
        run(
            &[
                "refresh",
                "--udid",
                "CLI-DEVICE-2",
                "--wait",
                "20s",
                "--server",
                &url,
                "--api-key",
                KEY,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&one.stdout);
    assert!(
        one.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert!(stdout.contains("1 device(s) to push"), "{stdout}");
    wait_count(&answered, 3).await;
    responder.abort();

    let url = server.url.clone();
    let (list, csv, report, denied, as_tls, page) = tokio::task::spawn_blocking(move || {
        let base = ["--server", url.as_str(), "--api-key", KEY];
        let tls_url = url.replacen("http://", "https://", 1);
        let with = |cmd: &[&str]| {
            let mut args = cmd.to_vec();
            args.extend_from_slice(&base);
            run(&args, &[])
        };
        (
            with(&["devices"]),
            with(&["devices", "--csv"]),
            with(&["report"]),
            run(
                &["devices", "--server", url.as_str(), "--api-key", "wrong"],
                &[],
            ),
            // https:// to a server that speaks plain HTTP.
            run(&["report", "--server", &tls_url, "--api-key", KEY], &[]),
            with(&["devices", "--search", "cliserial2", "--limit", "5"]),
        )
    })
    .await
    .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.starts_with("UDID"), "{list}");
    assert!(
        list.contains("CLI-DEVICE-1") && list.contains("CLISERIAL2"),
        "{list}"
    );
    assert!(
        list.contains("responded") && list.contains("2 device(s)"),
        "{list}"
    );
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("CLISERIAL2") && page.contains("1 device(s)"),
        "{page}"
    );
    assert!(page.contains("(the last page)"), "{page}");
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(
        csv.starts_with("UDID,Device name,Model,OS version,Serial number,"),
        "{csv}"
    );
    assert_eq!(csv.matches(",responded,").count(), 2, "{csv}");
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.split_whitespace().eq(["total", "2"])),
        "{report}"
    );
    assert!(report.contains("p50="), "{report}");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));

    // One days-left gauge: the engine's.
    let metrics = admin.get_text("/metrics").await.unwrap();
    let days_left: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("days_left"))
        .collect();
    assert_eq!(days_left.len(), 1, "{metrics}");
    assert!(
        days_left[0].starts_with("magicpush_certificate_days_left{topic="),
        "{metrics}"
    );
    // Pushes are counted per topic.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("magicpush_pushes_total{")
                && l.contains("outcome=\"delivered\"")
                && l.contains(&format!("topic=\"{}\"", pki.topic))),
        "{metrics}"
    );

    // Nobody answers now: the wait ends with exit 2 and names the silent devices.
    let url = server.url.clone();
    let silent = tokio::task::spawn_blocking(move || {
        run(
            &[
                "refresh",
                "--all",
                "--wait",
                "2s",
                "--server",
                &url,
                "--api-key",
                KEY,
            ],
            &[],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&silent.stdout);
    assert_eq!(silent.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("2 device(s) had not answered after 2s:"),
        "{stdout}"
    );
    for udid in ["CLI-DEVICE-1", "CLI-DEVICE-2"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(udid) && l.contains("pending")),
            "{udid} in {stdout}"
        );
    }
    assert!(!as_tls.status.success());
    let said = String::from_utf8_lossy(&as_tls.stderr);
    assert!(
        said.contains("does not speak TLS") && said.contains(&format!("use {}", server.url)),
        "{said}"
    );
    drop(server);
    mock.shutdown().await;
}

#[test]
fn logs_to_a_file_or_pipe_have_no_colours() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_env(
        &["serve", "--insecure-no-device-auth"],
        &[
            ("--data-dir", dir.path()),
            ("--secrets-key-file", &dir.path().join("missing-key")),
        ],
        &[("RUST_LOG", Path::new("info"))],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN"), "a log line came first: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = serve(&[], &[("--data-dir", data.as_path())]);
    let out = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ],
        &[("--data-dir", data.as_path())],
    );
    assert!(!out.status.success(), "the second server started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "in use by another magicpush process (pid {})",
            first.child.id()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--data-dir"), "{stderr}");
    drop(first);
    // The lock goes with the process, however it ended (here: killed).
    let _again = serve(&[], &[("--data-dir", data.as_path())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_and_the_data_stays() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let data = dir.path().join("data");
    let paths = [
        ("--data-dir", data.as_path()),
        ("--cert", &cert),
        ("--key", &key),
    ];
    let args = ["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"];
    let mut first = serve(&args, &paths);
    let admin = AdminClient::new(&first.url, Some(KEY.into()), None).unwrap();
    let d = device(1);
    put(
        &admin,
        "/mdm/checkin",
        &plists::authenticate(&d, &pki.topic),
    )
    .await;

    let pid = first.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let until = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = first.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < until, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    drop(first);

    let second = serve(&args, &paths);
    let admin = AdminClient::new(&second.url, Some(KEY.into()), None).unwrap();
    let stored = admin
        .get_json(&format!("/v1/devices/{}", d.udid))
        .await
        .unwrap();
    assert_eq!(stored["state"], "no_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_with_cli_over_https() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let (tls_cert, tls_key) = write_pair(
        dir.path(),
        "server",
        &pki.server.cert_pem,
        &pki.server.key_pem,
    );
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.cert_pem()).unwrap();
    let data = dir.path().join("data");
    let server = serve(
        &["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"],
        &[
            ("--data-dir", &data),
            ("--cert", &cert),
            ("--key", &key),
            ("--tls-cert", &tls_cert),
            ("--tls-key", &tls_key),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let ca_pem = pki.ca.cert_pem().as_bytes().to_vec();
    let admin = AdminClient::new(&server.url, Some(KEY.into()), Some(&ca_pem)).unwrap();
    put(
        &admin,
        "/mdm/checkin",
        &plists::authenticate(&device(5), &pki.topic),
    )
    .await;

    let url = server.url.clone();
    let (ok, no_ca, system, plain) = tokio::task::spawn_blocking(move || {
        let plain_url = url.replacen("https://", "http://", 1);
        (
            run(
                &["devices", "--server", &url, "--api-key", KEY],
                &[("--ca", &ca)],
            ),
            run(&["devices", "--server", &url, "--api-key", KEY], &[]),
            // The CA installed as the system's trust store (what OpenSSL and the platform
            // read): no --ca needed, as with a publicly trusted server certificate.
            run_with_env(
                &["devices", "--server", &url, "--api-key", KEY],
                &[],
                &[("SSL_CERT_FILE", &ca)],
            ),
            // http:// to a server that speaks TLS.
            run(&["devices", "--server", &plain_url, "--api-key", KEY], &[]),
        )
    })
    .await
    .unwrap();
    assert!(
        system.status.success(),
        "with the CA in the system store: {}",
        String::from_utf8_lossy(&system.stderr)
    );
    assert!(String::from_utf8_lossy(&system.stdout).contains("CLI-DEVICE-5"));
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains("CLI-DEVICE-5") && out.contains("no_token"),
        "{out}"
    );
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--ca"));
    assert!(!plain.status.success());
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(
        said.contains("answered with TLS")
            && said.contains(&format!("use {}", server.url))
            && !said.contains("invalid HTTP version"),
        "{said}"
    );
    drop(server);

    // With --device-ca, a device without its identity certificate is refused (403).
    let guarded = serve(
        &["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"],
        &[
            ("--data-dir", &data),
            ("--cert", &cert),
            ("--key", &key),
            ("--tls-cert", &tls_cert),
            ("--tls-key", &tls_key),
            ("--device-ca", &dir.path().join("ca.pem")),
        ],
    );
    let anon = AdminClient::new(&guarded.url, Some(KEY.into()), Some(&ca_pem)).unwrap();
    let body = Bytes::from(plists::to_xml(&plists::authenticate(
        &device(6),
        &pki.topic,
    )));
    let (s, _) = anon
        .request(
            Method::PUT,
            "/mdm/checkin",
            Some(("application/x-apple-aspen-mdm-checkin", body)),
        )
        .await
        .unwrap();
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        anon.get_json("/v1/devices").await.is_ok(),
        "admin API needs no client certificate"
    );
}

/// Waits (bounded) until the responder has answered `n` pushes: the CLI stops waiting at the
/// device's first report (Idle), a moment before its DeviceInformation result.
async fn wait_count(count: &AtomicUsize, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < until,
            "{} answers, wanted {n}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_every_setting_from_the_environment() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let child = Command::new(BIN)
        .arg("serve")
        .env("MAGICPUSH_LISTEN", "127.0.0.1:0")
        .env("MAGICPUSH_DATA_DIR", dir.path().join("data"))
        .env("MAGICPUSH_CERT", &cert)
        .env("MAGICPUSH_KEY", &key)
        .env("MAGICPUSH_APNS_URL", "https://127.0.0.1:9")
        .env("MAGICPUSH_API_KEY", KEY)
        .env("MAGICPUSH_UNREACHABLE_AFTER", "90s")
        .env("MAGICPUSH_COLLECT_EVERY", "24h")
        .env("MAGICPUSH_INSECURE_NO_DEVICE_AUTH", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Serve::listening(child).expect("listening");
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    let report = admin.get_json("/v1/connectivity").await.unwrap();
    assert_eq!(report["unreachable_after_s"], 90, "{report}");
    let health = admin.get_json("/healthz").await.unwrap();
    assert_eq!(health["device_auth"], "off", "{health}");
}

/// The new-topic procedure from the command line: `devices delete --all --confirm TOPIC`
/// (the key from --api-key-file), then a certificate of another topic starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_delete_all_confirms_the_topic() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "push", &pki.push.cert_pem, &pki.push.key_pem);
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let data = dir.path().join("data");
    let server = serve(
        &["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"],
        &[("--data-dir", &data), ("--cert", &cert), ("--key", &key)],
    );
    let admin = AdminClient::new(&server.url, Some(KEY.into()), None).unwrap();
    for n in 1..=3 {
        put(
            &admin,
            "/mdm/checkin",
            &plists::authenticate(&device(n), &pki.topic),
        )
        .await;
        put(
            &admin,
            "/mdm/checkin",
            &plists::token_update(&device(n), &pki.topic),
        )
        .await;
    }
    let url = server.url.clone();
    let topic = pki.topic.clone();
    let (wrong, missing, ok) = tokio::task::spawn_blocking(move || {
        let base = ["devices", "delete", "--all", "--server", &url];
        let wrong = run(
            &[&base[..], &["--confirm", "com.apple.mgmt.External.nope"]].concat(),
            &[("--api-key-file", &key_file)],
        );
        let missing = run(&base, &[("--api-key-file", &key_file)]);
        let ok = run(
            &[&base[..], &["--confirm", &topic]].concat(),
            &[("--api-key-file", &key_file)],
        );
        (wrong, missing, ok)
    })
    .await
    .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(!missing.status.success(), "--all needs --confirm");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("deleted 3 device(s)"));
    let devices = admin.get_json("/v1/devices").await.unwrap();
    assert!(devices.as_array().unwrap().is_empty(), "{devices}");
    drop(server);
}

/// Settings that cannot work are refused at start, naming the flag — never accepted and left
/// to fail later (a zero collection interval used to panic the collector task).
#[test]
fn serve_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--collect-every", "0s"],
            "--collect-every must be longer than 0s",
        ),
        (
            &["--collect-every", "1m"],
            "shorter than --unreachable-after",
        ),
        (&["--unreachable-after", "10s"], "deadline"),
        (&["--push-concurrency", "0"], "--push-concurrency"),
        (&["--expiry-warn-days", "30,0"], "--expiry-warn-days"),
        (&["--idle-timeout", "0s"], "--idle-timeout"),
        (
            &["--session-ttl", "0s"],
            "--session-ttl must be longer than 0s",
        ),
        (&["--session-idle", "0s"], "--session-idle"),
        (&["--session-idle", "10"], "missing unit"),
        (&["--csr-country", "Japan"], "country"),
        (
            &["--apns-proxy", "https://u:pw@proxy:443"],
            "--apns-proxy: invalid APNs proxy URL \"https://****@proxy:443\"",
        ),
    ];
    for (flags, needle) in cases {
        let args: Vec<&str> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
        let out = run(&args, &[("--data-dir", dir.path())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
    }
}

#[test]
fn an_unreadable_file_names_its_flag_and_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--device-ca", missing], "--device-ca"),
        (
            &[
                "--insecure-no-device-auth",
                "--tls-cert",
                missing,
                "--tls-key",
                missing,
            ],
            "--tls-cert",
        ),
        (&["--insecure-no-device-auth", "--cert", missing], "--cert"),
    ];
    for (flags, flag) in cases {
        let args: Vec<&str> = ["serve", "--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        let out = run(&args, &[("--data-dir", dir.path())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(
            stderr.contains(flag) && stderr.contains("missing.pem"),
            "{flags:?}: {stderr}"
        );
        assert_eq!(
            stderr.matches("No such file").count(),
            1,
            "{flags:?}: {stderr}"
        );
    }
}

/// Tenants from `--cert-dir` (named by their files), plus one added through the API and one
/// from `--cert`: a restart with the same flags brings every tenant back, names and all; the
/// CLI lists them (`magicpush topics`) and reports one tenant's devices (`--topic`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_cert_dir_brings_every_tenant_back() {
    use magicpush_fixtures::{push_cert, KeyKind};
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tenants");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("acme.pem"), &pki.push.cert_pem).unwrap();
    std::fs::write(certs.join("acme.key"), &pki.push.key_pem).unwrap();
    // A .pem holding its key needs no .key.
    let beta = format!("{}{}", pki.other_topic.cert_pem, pki.other_topic.key_pem);
    std::fs::write(certs.join("beta.pem"), beta).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let third = push_cert(
        &pki.ca,
        "33333333-3333-4333-8333-333333333333",
        now - day,
        now + day * 300,
        KeyKind::EcdsaP256,
    )
    .unwrap();
    let data = dir.path().join("data");
    let paths = [("--data-dir", data.as_path()), ("--cert-dir", &certs)];
    let args = ["--api-key", KEY, "--apns-url", "https://127.0.0.1:9"];

    let first = serve(&args, &paths);
    let admin = AdminClient::new(&first.url, Some(KEY.into()), None).unwrap();
    // The third tenant is added, and the first named, from the command line.
    let (third_cert, third_key) = write_pair(dir.path(), "third", &third.cert_pem, &third.key_pem);
    let cli = |args: Vec<String>| {
        let url = first.url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all = vec!["topics".to_owned(), "--server".into(), url];
                all.extend(["--api-key".into(), KEY.into()]);
                all.extend(args);
                let all: Vec<&str> = all.iter().map(String::as_str).collect();
                run(&all, &[])
            })
            .await
            .unwrap()
        }
    };
    let out = cli(vec![
        "add".into(),
        third_cert.display().to_string(),
        "--key".into(),
        third_key.display().to_string(),
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third_topic = "com.apple.mgmt.External.33333333-3333-4333-8333-333333333333";
    assert!(
        text.contains(&format!("tenant {third_topic} added")),
        "{text}"
    );
    let out = cli(vec![
        "set".into(),
        pki.topic.clone(),
        "--name".into(),
        "Acme KK".into(),
        "--apple-id".into(),
        "push@acme.example.jp".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = device(1);
    put(
        &admin,
        "/mdm/checkin",
        &plists::authenticate(&dev, &pki.other_topic_name),
    )
    .await;
    put(
        &admin,
        "/mdm/checkin",
        &plists::token_update(&dev, &pki.other_topic_name),
    )
    .await;
    drop(first);

    let second = serve(&args, &paths);
    let admin = AdminClient::new(&second.url, Some(KEY.into()), None).unwrap();
    let topics = admin.get_json("/v1/topics").await.unwrap();
    let list = topics["topics"].as_array().unwrap();
    let entry = |t: &str| {
        list.iter()
            .find(|e| e["topic"] == t)
            .unwrap_or_else(|| panic!("{t} missing from {topics}"))
            .clone()
    };
    assert_eq!(list.len(), 3, "{topics}");
    assert_eq!(entry(&pki.topic)["name"], "Acme KK", "a name set wins");
    assert_eq!(entry(&pki.topic)["apple_id"], "push@acme.example.jp");
    assert_eq!(
        entry(&pki.other_topic_name)["name"],
        "beta",
        "from its file"
    );
    assert_eq!(entry(&pki.other_topic_name)["devices"]["total"], 1);
    assert!(entry(third_topic)["name"].is_null());

    let url = second.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&["topics", "--server", &url, "--api-key", KEY], &[])
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Acme KK") && text.contains("3 tenant(s)"),
        "{text}"
    );
    let url = second.url.clone();
    let beta_topic = pki.other_topic_name.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &[
                "report",
                "--server",
                &url,
                "--api-key",
                KEY,
                "--topic",
                &beta_topic,
                "--json",
            ],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["total"], 1, "{report}");
}
