//! The console (`/ui/`) in headless Chromium: `magicpush-loadtest demo` starts a server with a
//! small fleet that enrolled through the check-in endpoints and answers its pushes, and
//! `console/console.test.mjs` (playwright-core) signs in, pages, filters, refreshes,
//! downloads, issues a request, is refused a wrong-topic certificate, creates and withdraws an
//! enrollment invitation, switches language and signs out, writing a screenshot of each screen
//! to `target/screenshots/console/`.
//!
//! Needs Node.js, Debian's `chromium` (or `CHROMIUM=/path`) and `npm ci` in
//! `loadtest/console/`. Without them the test says so and passes, except under
//! `CI=true`, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEVICES: usize = 60;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What is missing to run the browser, if anything.
fn missing_tools(chromium: &Path, tests: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (Node.js 20 or newer)".to_owned());
    }
    if !chromium.exists() {
        missing.push(format!(
            "{} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    if !tests.join("node_modules/playwright-core").exists() {
        missing.push(format!("playwright-core (npm ci in {})", tests.display()));
    }
    missing
}

/// The demo, killed when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGINT first: the demo stops its server and removes its files.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_console_in_a_browser() {
    let tests = manifest_dir().join("console");
    let chromium =
        PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    let missing = missing_tools(&chromium, &tests);
    if !missing.is_empty() {
        let text = format!("the console's browser tests need: {}", missing.join(", "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{text}");
        }
        eprintln!("SKIPPED: {text}");
        return;
    }

    let scratch = tempfile::tempdir().expect("a scratch directory");
    let key_file = scratch.path().join("api-key");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_magicpush-loadtest"))
        .args(["demo", "--devices", &DEVICES.to_string()])
        .args([
            "--topics",
            "2",
            "--offline-fraction",
            "0",
            "--report-delay-ms",
            "200",
        ])
        .args(["--listen", &listen, "--for-s", "300"])
        .arg("--api-key-file")
        .arg(&key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start magicpush-loadtest demo");
    let stdout = child.stdout.take().expect("the demo's stdout");
    let demo = Demo(child);

    // The demo's lines: `server URL`, …, `ready N devices enrolled`.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut url = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the demo says `ready` within 120 s");
        if let Some(u) = line.strip_prefix("server ") {
            url = Some(u.trim().to_owned());
        }
        if line.starts_with("ready ") {
            assert!(
                line.starts_with(&format!("ready {DEVICES} ")),
                "every device enrolled: {line}"
            );
            break;
        }
    }
    let url = url.expect("the demo names its server");
    let api_key = std::fs::read_to_string(&key_file).expect("the demo's API key file");

    // The wrong-topic certificate: the fixtures' other topic, with its key.
    let fixtures = manifest_dir().join("../fixtures/certs");
    let mut pem = std::fs::read(fixtures.join("push-other-topic.pem")).expect("fixture");
    pem.extend(std::fs::read(fixtures.join("push-other-topic.key.pem")).expect("fixture"));
    let wrong_topic = scratch.path().join("other-topic.pem");
    std::fs::write(&wrong_topic, pem).expect("write the wrong-topic certificate");

    let shots = manifest_dir()
        .parent()
        .expect("the workspace")
        .join("target/screenshots/console");
    let status = Command::new("node")
        .arg(tests.join("console.test.mjs"))
        .current_dir(&tests)
        .env("MAGICPUSH_URL", &url)
        .env("MAGICPUSH_API_KEY", api_key.trim())
        .env("CONSOLE_DEVICES", DEVICES.to_string())
        .env("CONSOLE_WRONG_TOPIC_PEM", &wrong_topic)
        .env("CONSOLE_SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("run node");
    drop(demo);
    assert!(
        status.success(),
        "the console's browser test failed ({status}); screenshots in {}",
        shots.display()
    );
}
