//! The check-in benchmark: device check-ins per second against the magicpush server with its
//! durable SQLite store, side by side in one run with the same server on the in-memory store
//! and with a bare hyper server that answers a trivial 200 — so the cost of durability (and of
//! the server's own work) shows as a ratio, not as a number that depends on the machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use magicpush_checkin::http::{self as server, AdminKey, App, ListenerSettings};
use magicpush_checkin::push::{FakePusher, PushSender};
use magicpush_checkin::service::{PushCertState, Service, ServiceConfig};
use magicpush_checkin::store::{MemoryStore, SqliteStore, Store};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::fleet::conn::{DeviceConn, CHECKIN_TYPE};
use crate::fleet::device::{generate, SimDevice};

/// What to measure.
#[derive(Debug, Clone)]
pub struct CheckinBenchOptions {
    /// Simulated devices; each sends Authenticate then TokenUpdate (two check-ins).
    pub devices: usize,
    /// Concurrent keep-alive connections.
    pub concurrency: usize,
}

/// One server variant's result.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    pub checkins: u64,
    pub elapsed_s: f64,
    pub checkins_per_s: f64,
    /// Writes per SQLite commit: how well group commit batched (durable mode only).
    pub writes_per_commit: Option<f64>,
}

/// The whole run; `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct CheckinBenchReport {
    pub devices: usize,
    pub concurrency: usize,
    pub trivial: ModeResult,
    pub memory: ModeResult,
    pub durable: ModeResult,
    /// durable / trivial check-ins per second.
    pub ratio_durable_vs_trivial: f64,
    /// durable / memory check-ins per second.
    pub ratio_durable_vs_memory: f64,
}

const TOPIC: &str = "com.apple.mgmt.External.bench";

/// Runs the three variants one after the other on one runtime.
pub fn run(opts: &CheckinBenchOptions) -> anyhow::Result<CheckinBenchReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let trivial = {
            let (addr, stop) = trivial_server().await?;
            let r = drive("trivial", addr, opts).await?;
            let _ = stop.send(());
            r
        };
        let memory = {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let (addr, handle) = magicpush_server(store).await?;
            let r = drive("memory", addr, opts).await?;
            handle.shutdown().await;
            r
        };
        let durable = {
            let dir = tempfile::tempdir()?;
            let sqlite = Arc::new(SqliteStore::open(dir.path()).context("opening SQLite")?);
            let store: Arc<dyn Store> = sqlite.clone();
            let (addr, handle) = magicpush_server(store).await?;
            let mut r = drive("durable", addr, opts).await?;
            handle.shutdown().await;
            let stats = sqlite.commit_stats();
            r.writes_per_commit = Some(stats.writes as f64 / stats.commits.max(1) as f64);
            r
        };
        Ok(CheckinBenchReport {
            devices: opts.devices,
            concurrency: opts.concurrency,
            ratio_durable_vs_trivial: durable.checkins_per_s / trivial.checkins_per_s,
            ratio_durable_vs_memory: durable.checkins_per_s / memory.checkins_per_s,
            trivial,
            memory,
            durable,
        })
    })
}

/// Sends every device's Authenticate and TokenUpdate over `concurrency` connections.
async fn drive(
    mode: &'static str,
    addr: SocketAddr,
    opts: &CheckinBenchOptions,
) -> anyhow::Result<ModeResult> {
    let devices: Arc<Vec<SimDevice>> = Arc::new(generate(opts.devices, 0.0, 0.0, 7));
    let workers = opts.concurrency.clamp(1, opts.devices.max(1));
    let authority = addr.to_string();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let devices = devices.clone();
        let authority = authority.clone();
        tasks.spawn(async move {
            let mut conn = DeviceConn::new(addr, &authority, Duration::from_secs(30));
            let mut sent = 0u64;
            for d in devices.iter().skip(w).step_by(workers) {
                for body in [d.authenticate(TOPIC), d.token_update(TOPIC)] {
                    let (status, answer) = conn.put("/mdm/checkin", CHECKIN_TYPE, body).await?;
                    if !status.is_success() {
                        anyhow::bail!(
                            "{mode}: check-in answered {status}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                    sent += 1;
                }
            }
            Ok::<u64, anyhow::Error>(sent)
        });
    }
    let mut checkins = 0;
    while let Some(done) = tasks.join_next().await {
        checkins += done??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(ModeResult {
        mode,
        checkins,
        elapsed_s: elapsed,
        checkins_per_s: checkins as f64 / elapsed,
        writes_per_commit: None,
    })
}

/// The magicpush server (routing, plist decoding, service, `store`) on a loopback port.
async fn magicpush_server(
    store: Arc<dyn Store>,
) -> anyhow::Result<(SocketAddr, server::ServerHandle)> {
    let pusher: Arc<dyn PushSender> = FakePusher::new();
    let service = Arc::new(Service::new(
        store,
        pusher,
        PushCertState::new(None, None),
        ServiceConfig::default(),
    ));
    let app = Arc::new(App::new(
        service,
        AdminKey::new(None),
        server::DEFAULT_BODY_LIMIT,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let handle = server::spawn(listener, None, app, ListenerSettings::default())?;
    Ok((handle.local_addr(), handle))
}

/// A bare hyper server on the same runtime that reads the body and answers 200: the ceiling
/// of the HTTP path on this machine.
async fn trivial_server() -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                _ = &mut stopped => return,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, stop))
}
