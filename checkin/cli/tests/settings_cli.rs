//! `serve` and the settings stored through `PUT /v1/settings`: after a restart the stored
//! setting wins over the flag, and `serve` says so in its log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_server::client::AdminClient;

const KEY: &str = "settings-test-key";
const BIN: &str = env!("CARGO_BIN_EXE_magicpush");

/// A running `serve` and the log lines it has written so far.
struct Serve {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(data: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--api-key", KEY])
            .arg("--insecure-no-device-auth")
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("serve did not start: {:?}", log.lock().unwrap()));
        Serve { child, url, log }
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(&self.url, Some(KEY.into()), None).unwrap()
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_setting_wins_over_the_flag_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--collect-every", "1h", "--unreachable-after", "5m"];
    let first = Serve::start(&data, &flags);
    let settings = first.admin().get_json("/v1/settings").await.unwrap();
    assert_eq!(settings["collect_every"], "1h", "{settings}");
    assert_eq!(settings["source"]["collect_every"], "flag", "{settings}");
    assert_eq!(settings["collecting"], true, "{settings}");
    let (status, body) = first
        .admin()
        .request(
            Method::PUT,
            "/v1/settings",
            Some((
                "application/json",
                Bytes::from_static(br#"{"collect_every": "24h"}"#),
            )),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    drop(first);

    let second = Serve::start(&data, &flags);
    let settings = second.admin().get_json("/v1/settings").await.unwrap();
    assert_eq!(settings["collect_every"], "1d", "{settings}");
    assert_eq!(settings["source"]["collect_every"], "stored", "{settings}");
    assert_eq!(settings["unreachable_after"], "5m", "{settings}");
    assert_eq!(
        settings["source"]["unreachable_after"], "flag",
        "{settings}"
    );
    let line = "--collect-every 1h given, but the stored setting 1d (changed through PUT /v1/settings) is used";
    let until = Instant::now() + Duration::from_secs(10);
    while !second.logged(line) {
        assert!(
            Instant::now() < until,
            "no override logged: {:?}",
            second.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !second.logged("--unreachable-after 5m given"),
        "a flag equal to nothing stored is not overridden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_settings_that_fail_the_start_check_with_the_flags_stop_serve() {
    // Stored 10m collection, then a start whose --unreachable-after is longer: refused
    // with the check's reason rather than run with windows that cannot work.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Serve::start(&data, &[]);
    let (status, _) = first
        .admin()
        .request(
            Method::PUT,
            "/v1/settings",
            Some((
                "application/json",
                Bytes::from_static(br#"{"collect_every": "10m"}"#),
            )),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    drop(first);
    let out = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--insecure-no-device-auth"])
        .args(["--unreachable-after", "1h", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PUT /v1/settings"), "{stderr}");
    assert!(
        stderr.contains("shorter than --unreachable-after"),
        "{stderr}"
    );
}
