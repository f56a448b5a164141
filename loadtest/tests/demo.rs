//! `magicpush-loadtest demo` as a browser test drives it: start it, wait for `ready`, refresh
//! through the admin API with the key from the printed file, watch the online devices turn
//! `responded` while the offline ones do not, then stop it with SIGINT.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::Method;
use magicpush_server::client::AdminClient;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_magicpush-loadtest"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `demo`: its stdout lines as they come. Killed if the test fails before it exits.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(exe())
            .arg("demo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start magicpush-loadtest demo");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Lines until one starts with `prefix`; that line's rest.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(_) => panic!("no {prefix:?} line in {timeout:?}; got {:?}", self.seen),
            }
        }
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits for the exit; its status and the rest of stdout.
    fn wait(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "demo did not exit in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let rest = self.lines.try_iter().collect();
        (status, rest)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn admin(url: &str, key_file: &str) -> AdminClient {
    let key = std::fs::read_to_string(key_file).expect("the printed key file");
    AdminClient::new(url, Some(key.trim().to_owned()), None).unwrap()
}

fn states(connectivity: &serde_json::Value) -> (u64, u64) {
    let states = connectivity["states"].as_object().unwrap();
    let responded = states
        .get("responded")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let total: u64 = states.values().filter_map(|v| v.as_u64()).sum();
    (responded, total - responded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_from_the_api_turns_the_online_devices_responded() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut demo = Demo::start(&[
        "--devices",
        "12",
        "--offline-fraction",
        "0.25",
        "--listen",
        &listen,
        "--for-s",
        "60",
    ]);
    let url = demo.wait_for("server ", Duration::from_secs(60));
    assert_eq!(url, format!("http://{listen}"));
    let key_file = demo.wait_for("api-key-file ", Duration::from_secs(5));
    let data_dir = PathBuf::from(demo.wait_for("data-dir ", Duration::from_secs(5)));
    assert!(data_dir.exists());
    let ready = demo.wait_for("ready ", Duration::from_secs(60));
    assert_eq!(ready, "12 devices enrolled");
    assert_eq!(
        demo.wait_for("console: ", Duration::from_secs(5)),
        format!("{url}/ui/")
    );
    let admin = admin(&url, &key_file);

    // Enrolled, each with its facts, and nobody pushed yet: the demo does not refresh.
    let rows = admin.get_json("/v1/devices").await.unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    for row in rows {
        for field in [
            "serial_number",
            "device_name",
            "model",
            "model_name",
            "os_version",
        ] {
            let value = row[field].as_str().unwrap_or("");
            assert!(!value.is_empty(), "{field} of {row}");
        }
        assert_eq!(row["serial_number"].as_str().unwrap().len(), 12, "{row}");
        assert_eq!(row["state"], "never_pushed", "{row}");
        // The first DeviceInformation, answered right after enrolling.
        assert!(row["info_collected_at"].is_string(), "{row}");
    }
    let names: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["device_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 12, "names are distinct: {names:?}");
    assert!(names.iter().all(|n| n.ends_with(')')), "{names:?}");

    let summary = admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .unwrap();
    assert_eq!(summary["pushing"], 12, "{summary}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let report = admin.get_json("/v1/connectivity").await.unwrap();
        let counts = states(&report);
        if counts == (9, 3) || Instant::now() >= deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counts, (9, 3), "responded, not responded");

    // A command the device knows is acknowledged, one it does not is answered Error.
    let rows = admin.get_json("/v1/devices?state=responded").await.unwrap();
    let udid = rows[0]["udid"].as_str().unwrap().to_owned();
    for request_type in ["DeviceLock", "MakeCoffee"] {
        let queued = admin
            .send_json(
                Method::POST,
                "/v1/commands",
                &serde_json::json!({"udids": [udid], "request_type": request_type}),
            )
            .await
            .unwrap();
        assert_eq!(
            queued["queued"].as_array().map(Vec::len),
            Some(1),
            "{queued}"
        );
    }
    let path = format!("/v1/devices/{udid}/commands");
    let deadline = Instant::now() + Duration::from_secs(20);
    let results = loop {
        let commands = admin.get_json(&path).await.unwrap();
        let results: Vec<(String, String)> = commands["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["request_type"].as_str().unwrap_or("").to_owned(),
                    r["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let done = ["DeviceLock", "MakeCoffee"]
            .iter()
            .all(|t| results.iter().any(|(rt, _)| rt == t));
        if done || Instant::now() >= deadline {
            break results;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        results.contains(&("DeviceLock".into(), "Acknowledged".into())),
        "{results:?}"
    );
    assert!(
        results.contains(&("MakeCoffee".into(), "Error".into())),
        "{results:?}"
    );

    demo.signal(rustix::process::Signal::INT);
    let (status, _) = demo.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert!(!data_dir.exists(), "{} is removed", data_dir.display());
    let scratch = data_dir.parent().unwrap();
    assert!(!scratch.exists(), "{} is removed", scratch.display());
}

/// `--refresh`: the demo refreshes once itself; with `--for-s` it stops on its own and
/// `--json` sums up what the devices did.
#[test]
fn with_refresh_every_device_answers_and_the_summary_counts_it() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut demo = Demo::start(&[
        "--devices",
        "6",
        "--offline-fraction",
        "0",
        "--listen",
        &listen,
        "--refresh",
        "--report-delay-ms",
        "50",
        "--for-s",
        "6",
        "--json",
    ]);
    demo.wait_for("ready ", Duration::from_secs(60));
    let (status, rest) = demo.wait(Duration::from_secs(40));
    assert!(status.success(), "{status}");
    let last = rest.last().expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(summary["enrolled"], 6, "{summary}");
    assert_eq!(summary["pushes_accepted"], 6, "{summary}");
    assert_eq!(summary["pushes_unanswered"], 0, "{summary}");
    // Each device's first DeviceInformation, after enrolling, and the refresh's.
    assert_eq!(
        summary["commands_acknowledged"]["DeviceInformation"], 12,
        "{summary}"
    );
    assert_eq!(summary["reports"], 12, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["stopped_by"], "time", "{summary}");
}
