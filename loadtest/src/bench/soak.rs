//! The soak benchmark: do idle sockets, slow bodies and plist bombs hurt the devices that
//! behave? One server (the `magicpush serve` child, SQLite store), three phases in one run:
//!
//! 1. baseline — good check-ins (Authenticate + TokenUpdate of fresh devices), their latency;
//! 2. under attack — the same number of good check-ins while `idle` connections sit open
//!    sending nothing and `slow` clients trickle request bodies (reconnecting when cut off);
//! 3. bombs — `bombs` concurrent 1 MiB binary plists whose one array references itself, and
//!    the server's peak RSS before and after.
//!
//! Bounded: every phase has a fixed amount of work and a time limit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::fleet::conn::{DeviceConn, CHECKIN_TYPE};
use crate::fleet::device::{generate, SimDevice};
use crate::fleet::pki::{self, FleetPki};
use crate::fleet::server::{NodeStore, ServeSettings, ServerProcess};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Program with the `serve-child` subcommand (normally this one).
    pub exe: std::path::PathBuf,
    /// Connections opened and left idle during the attack phase.
    pub idle: usize,
    /// Clients trickling request bodies during the attack phase.
    pub slow: usize,
    /// Good check-ins per phase (half Authenticate, half TokenUpdate).
    pub checkins: usize,
    /// Concurrent good clients.
    pub concurrency: usize,
    /// Concurrent plist bombs.
    pub bombs: usize,
    /// How long the attack runs before the good check-ins start (past the body grace
    /// period, so that slow bodies are being cut off while they are measured).
    pub hold: Duration,
}

/// Latency of the good check-ins of one phase, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub checkins: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub elapsed_s: f64,
}

/// The run; `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub idle_connections: usize,
    pub slow_clients: usize,
    pub baseline: Latency,
    pub under_attack: Latency,
    /// p99 under attack / p99 baseline.
    pub p99_ratio: f64,
    /// Idle connections the server held open through the attack phase.
    pub idle_still_open: usize,
    /// Slow bodies the server cut off (answered 408 or closed).
    pub slow_cut_off: u64,
    pub bombs: usize,
    /// Statuses the bombs were answered with.
    pub bomb_statuses: Vec<u16>,
    pub server_peak_rss_mb_before_bombs: Option<f64>,
    pub server_peak_rss_mb_after_bombs: Option<f64>,
}

/// How long a bomb may take to be answered.
const BOMB_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the three phases against a fresh server child.
pub fn run(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(soak(opts))
}

async fn soak(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    let scratch = tempfile::tempdir()?;
    let pki = FleetPki::load_or_create(&scratch.path().join("pki"))?;
    let settings = ServeSettings {
        exe: opts.exe.clone(),
        store: NodeStore::Sqlite {
            data_dir: scratch.path().join("data"),
        },
        cert: pki.path(pki::PUSH_CERT_FILE),
        key: pki.path(pki::PUSH_KEY_FILE),
        // Pushes are not part of this benchmark: nothing listens there.
        apns_url: "https://127.0.0.1:9".into(),
        apns_ca: pki.path(pki::CA_FILE),
        api_key: uuid::Uuid::new_v4().simple().to_string(),
        unreachable_after: Duration::from_secs(600),
        push_concurrency: 16,
        log_filter: Some("error".into()),
        device_auth: crate::fleet::server::ServeDeviceAuth::Insecure,
    };
    let server = tokio::task::spawn_blocking(move || ServerProcess::spawn(&settings)).await??;
    let url = server.url().to_owned();
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .context("server address")?;
    // Each device sends Authenticate + TokenUpdate; half of them before the attack, half in it.
    let all = generate(opts.checkins.max(4) / 2 * 2, 0.0, 0.0, 11);
    let (first, second) = all.split_at(all.len() / 2);
    let (first, second) = (Arc::new(first.to_vec()), Arc::new(second.to_vec()));
    let topic: Arc<str> = Arc::from(pki.topic.as_str());

    let baseline = good_checkins(addr, &first, &topic, opts).await;

    // The attack: idle sockets and trickling bodies, held through the second phase.
    let mut idle = Vec::with_capacity(opts.idle);
    for _ in 0..opts.idle {
        match TcpStream::connect(addr).await {
            Ok(s) => idle.push(s),
            Err(e) => anyhow::bail!("opening idle connection {}: {e}", idle.len() + 1),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cut_off = Arc::new(AtomicU64::new(0));
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..opts.slow {
        let (stop, cut_off) = (stop.clone(), cut_off.clone());
        slow.spawn(async move { trickle(addr, stop, cut_off).await });
    }
    tokio::time::sleep(opts.hold).await;
    let under_attack = good_checkins(addr, &second, &topic, opts).await;
    let idle_still_open = idle.iter().filter(|s| still_open(s)).count();
    stop.store(true, Ordering::Relaxed);
    slow.abort_all();
    while slow.join_next().await.is_some() {}
    drop(idle);

    let before = server.peak_rss_mb();
    // Just under the server's 1 MiB body limit, so that it is parsed, not refused by size.
    let bomb = Arc::new(magicpush_fixtures::plists::self_referencing_bplist(
        (1 << 20) - 64,
    ));
    let mut bombs = tokio::task::JoinSet::new();
    for _ in 0..opts.bombs {
        let bomb = bomb.clone();
        let authority = addr.to_string();
        bombs.spawn(async move {
            let mut conn = DeviceConn::new(addr, &authority, BOMB_TIMEOUT);
            conn.put("/mdm/checkin", CHECKIN_TYPE, bomb.to_vec(), None)
                .await
                .map(|(s, _)| s.as_u16())
                .unwrap_or(0)
        });
    }
    let mut bomb_statuses = Vec::new();
    while let Some(s) = bombs.join_next().await {
        bomb_statuses.push(s.unwrap_or(0));
    }
    bomb_statuses.sort_unstable();
    let after = server.peak_rss_mb();
    tokio::task::spawn_blocking(move || server.stop()).await?;
    Ok(SoakReport {
        idle_connections: opts.idle,
        slow_clients: opts.slow,
        p99_ratio: under_attack.p99_ms / baseline.p99_ms.max(1e-3),
        baseline,
        under_attack,
        idle_still_open,
        slow_cut_off: cut_off.load(Ordering::Relaxed),
        bombs: opts.bombs,
        bomb_statuses,
        server_peak_rss_mb_before_bombs: before,
        server_peak_rss_mb_after_bombs: after,
    })
}

/// Every device's Authenticate and TokenUpdate over `concurrency` keep-alive connections,
/// one request at a time each, timed.
async fn good_checkins(
    addr: std::net::SocketAddr,
    devices: &Arc<Vec<SimDevice>>,
    topic: &Arc<str>,
    opts: &SoakOptions,
) -> Latency {
    let workers = opts.concurrency.clamp(1, devices.len());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (devices, topic) = (devices.clone(), topic.clone());
        tasks.spawn(async move {
            let mut conn = DeviceConn::new(addr, &addr.to_string(), Duration::from_secs(30));
            let mut hist = histogram();
            let mut failed = 0u64;
            for d in devices.iter().skip(w).step_by(workers) {
                for body in [d.authenticate(&topic), d.token_update(&topic)] {
                    let t = Instant::now();
                    match conn.put("/mdm/checkin", CHECKIN_TYPE, body, None).await {
                        Ok((s, _)) if s.is_success() => {
                            let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                        }
                        _ => failed += 1,
                    }
                }
            }
            (hist, failed)
        });
    }
    let mut all = histogram();
    let mut failed = 0;
    while let Some(Ok((h, f))) = tasks.join_next().await {
        let _ = all.add(&h);
        failed += f;
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        checkins: all.len(),
        failed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: all.max() as f64 / 1000.0,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}

/// A client that sends a check-in's headers and then its body at 2 bytes a second,
/// reconnecting whenever the server cuts it off, until `stop`.
async fn trickle(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, cut_off: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let head = b"PUT /mdm/checkin HTTP/1.1\r\nHost: soak\r\nContent-Type: application/x-apple-aspen-mdm-checkin\r\nContent-Length: 100000\r\n\r\n";
        if s.write_all(head).await.is_err() {
            continue;
        }
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if s.write_all(b"x").await.is_err() || !still_open(&s) {
                cut_off.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// Whether the peer has not closed the socket (a zero-byte peek means it has).
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match s.try_read(&mut buf) {
        Ok(0) => false,
        Ok(_) => false, // an answer (408) means it was cut off too
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

fn histogram() -> hdrhistogram::Histogram<u64> {
    // One microsecond to ten minutes, three significant digits: valid constant bounds.
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}
