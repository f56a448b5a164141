//! Durability: `kill -9` the real `magicpush serve` during a burst of check-ins, restart it on
//! the same data dir, and find every check-in that was answered 200.

mod common;

use common::Serve;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_fixtures::plists::{self, Device};
use magicpush_fixtures::TestPki;
use magicpush_server::client::AdminClient;

const KEY: &str = "durability-key";

fn start(dir: &Path) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_magicpush"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--cert")
        .arg(dir.join("push.pem"))
        .arg("--key")
        .arg(dir.join("push.key.pem"))
        // Nothing listens there: pushes are not part of this test.
        .args(["--apns-url", "https://127.0.0.1:9", "--api-key", KEY])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn magicpush serve");
    Serve::listening(child).expect("server printed its address")
}

fn device(n: usize) -> Device {
    let mut d = Device::iphone();
    d.udid = format!("DURABLE-{n:08}");
    d.serial_number = format!("S{n:08}");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_checkin_survives_kill_9() {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("push.pem"), &pki.push.cert_pem).unwrap();
    std::fs::write(dir.path().join("push.key.pem"), &pki.push.key_pem).unwrap();
    let topic = pki.topic.clone();

    let mut server = start(dir.path());
    let client = AdminClient::new(&server.url, Some(KEY.into()), None)
        .unwrap()
        .with_timeout(Duration::from_secs(5));

    // Writers: each sends Authenticate check-ins for fresh UDIDs until the server is gone.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..16 {
        let (client, acked, next, dead, topic) = (
            client.clone(),
            acked.clone(),
            next.clone(),
            dead.clone(),
            topic.clone(),
        );
        writers.push(tokio::spawn(async move {
            while !dead.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let d = device(n);
                let body = Bytes::from(plists::to_xml(&plists::authenticate(&d, &topic)));
                match client
                    .request(
                        Method::PUT,
                        "/mdm/checkin",
                        Some(("application/x-apple-aspen-mdm-checkin", body)),
                    )
                    .await
                {
                    Ok((StatusCode::OK, _)) => {
                        acked.lock().unwrap().insert(d.udid);
                    }
                    Ok((status, body)) => panic!("{status}: {body:?}"),
                    // Refused or reset by the killed server: not acknowledged, may or may
                    // not be stored.
                    Err(_) => {}
                }
            }
        }));
    }

    // Let the burst run, then kill -9 in the middle of it.
    let until = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < until, "burst too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    // Keep sending briefly so requests meet the dead socket, then stop the writers.
    tokio::time::sleep(Duration::from_millis(100)).await;
    dead.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    let sent = next.load(Ordering::Relaxed);
    assert!(acked.len() >= 300 && sent > acked.len());
    drop(server);

    let server = start(dir.path());
    let client = AdminClient::new(&server.url, Some(KEY.into()), None)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let devices = client.get_json("/v1/devices").await.unwrap();
    let stored: HashSet<String> = devices
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["udid"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged check-ins lost after kill -9: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    // Only check-ins that were sent can be stored.
    assert!(stored.len() <= sent, "{} stored, {sent} sent", stored.len());
    eprintln!(
        "sent {sent}, acknowledged {}, stored after restart {}",
        acked.len(),
        stored.len()
    );
}
