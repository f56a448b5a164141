//! A small live fleet behind one real server, for a person or a browser test to work with
//! (`magicpush-loadtest demo`): the mock APNs and one `magicpush serve` started as the fleet
//! starts them, devices enrolled through the check-in endpoints (signed), each having
//! answered a first DeviceInformation; then, until stopped, every push the mock accepts for
//! an online device makes it report and answer its queue.
//!
//! - `answers`: what a device answers to each command.
//! - `wake`: the devices woken by pushes, one exchange at a time each.
//! - `keyfile`: the admin API key file, read or created.
//! - `summary`: the counters and the summary at the end.
//! - this module: the setup, the wait and the stop.

mod answers;
mod keyfile;
mod summary;
mod wake;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use magicpush_server::client::AdminClient;
use tokio::signal::unix::{signal, SignalKind};

use super::device::{self, Role};
use super::nodes::NodeRoutes;
use super::pki::{self, FleetPki};
use super::server::{Launch, NodeStore, ServeDeviceAuth, ServeSettings, ServerProcess, LOG_TAIL};
use super::{admin_err, enroll, issue_signers, issue_tenants, refresh_all, start_mock};
use super::{tenants, FleetError, Progress};
use summary::{Counters, Population};
pub use summary::{LiveSummary, StoppedBy};
use wake::LiveDevices;

/// How long the server may take to answer `/healthz` once it listens.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Device connections during enrollment and the first DeviceInformation.
const ENROLL_CONNECTIONS: usize = 16;
/// Devices per `POST /v1/commands` of the first DeviceInformation.
const COMMAND_BATCH: usize = 1000;

/// How a live fleet runs.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// A program with the `serve-child` subcommand (normally this one).
    pub exe: PathBuf,
    /// The server's `--listen`.
    pub listen: SocketAddr,
    /// The server's `--data-dir`; `None`: a temporary directory, removed at the end.
    pub data_dir: Option<PathBuf>,
    /// The certificates (read, or written there); `None`: a temporary directory.
    pub pki_dir: Option<PathBuf>,
    /// The admin API key file (read if it exists, else a fresh key written there, 0600);
    /// `None`: one in the temporary directory.
    pub api_key_file: Option<PathBuf>,
    /// Tenants (push certificates, one topic each); the devices spread over them.
    pub topics: usize,
    /// Devices to enroll.
    pub devices: usize,
    /// Fraction (0..=1) of devices that never answer a push.
    pub offline_fraction: f64,
    /// Fraction (0..=1) of devices whose token APNs answers 410.
    pub unregistered_fraction: f64,
    /// How long a pushed device waits before it contacts the server (plus jitter).
    pub report_delay: Duration,
    /// Start one refresh of every device once enrolled.
    pub refresh: bool,
    /// Stop after this long; `None`: at SIGINT or SIGTERM only.
    pub run_for: Option<Duration>,
    /// Seed of the devices' identities and roles.
    pub seed: u64,
    /// Address of the mock APNs.
    pub mock_listen: SocketAddr,
    /// The server's `--unreachable-after`.
    pub unreachable_after: Duration,
}

impl LiveConfig {
    /// The defaults: 40 devices, a tenth offline, on 127.0.0.1:28080.
    pub fn new(exe: PathBuf) -> LiveConfig {
        LiveConfig {
            exe,
            listen: SocketAddr::from(([127, 0, 0, 1], 28080)),
            data_dir: None,
            pki_dir: None,
            api_key_file: None,
            topics: 1,
            devices: 40,
            offline_fraction: 0.1,
            unregistered_fraction: 0.0,
            report_delay: Duration::from_millis(300),
            refresh: false,
            run_for: None,
            seed: 0x6d61_6769_6370_7573,
            mock_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            unreachable_after: Duration::from_secs(60),
        }
    }
}

/// Why a live fleet could not run or stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// Setting up the mock, the certificates, the server or the devices failed.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The admin API key file could not be read or written.
    #[error("demo: cannot {what} the API key file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The admin API key file has no key on its first line.
    #[error("demo: the API key file {} is empty", path.display())]
    EmptyKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// Signal handlers could not be installed.
    #[error("demo: cannot handle SIGINT/SIGTERM: {0}")]
    Signals(#[source] std::io::Error),
    /// The server did not answer `/healthz`.
    #[error(
        "demo: the server at {url} did not answer /healthz within {HEALTH_TIMEOUT:?}: {detail}"
    )]
    Health {
        /// Its URL.
        url: String,
        /// The last failure.
        detail: String,
    },
    /// Devices could not enroll.
    #[error("demo: {failed} of {devices} devices could not enroll, e.g. {sample}")]
    Enroll {
        /// Failed enrollments.
        failed: u64,
        /// Devices.
        devices: usize,
        /// The first failure.
        sample: String,
    },
    /// The server exited while the fleet was running.
    #[error("demo: the server exited ({status}); its last log lines:\n{}", log.join("\n"))]
    ServerDied {
        /// Its exit status.
        status: String,
        /// Its last log lines.
        log: Vec<String>,
    },
    /// Writing the announcement lines failed.
    #[error("demo: cannot write to stdout: {0}")]
    Output(#[source] std::io::Error),
}

/// Runs the live fleet until a signal or [`LiveConfig::run_for`], writing its announcement
/// lines (`server URL`, `api-key-file PATH`, `data-dir PATH`, `server-pid PID`,
/// `ready N devices enrolled`, `console: URL/ui/`) to `out`, each flushed. Everything it started is stopped, and its
/// temporary directory removed, whatever the outcome.
pub async fn run<W: Write>(config: &LiveConfig, out: &mut W) -> Result<LiveSummary, LiveError> {
    if config.devices == 0 {
        return Err(FleetError::Config("--devices must be at least 1".into()).into());
    }
    if config.topics == 0 {
        return Err(FleetError::Config("--topics must be at least 1".into()).into());
    }
    let started = Instant::now();
    let mut interrupt = signal(SignalKind::interrupt()).map_err(LiveError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(LiveError::Signals)?;
    let scratch = tempfile::Builder::new()
        .prefix("magicpush-demo-")
        .tempdir()
        .map_err(FleetError::TempDir)?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("data"));
    let pki_dir = config
        .pki_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("pki"));
    let key_file = config
        .api_key_file
        .clone()
        .unwrap_or_else(|| scratch.path().join("api-key"));
    let api_key = keyfile::read_or_create(&key_file)?;

    let mut devices = device::generate(
        config.devices,
        config.offline_fraction,
        config.unregistered_fraction,
        config.seed,
    );
    for (i, d) in devices.iter_mut().enumerate() {
        d.device_name = d.display_name(i);
    }
    let devices = Arc::new(devices);
    let pki = FleetPki::load_or_create(&pki_dir)?;
    let tenants = issue_tenants(&pki, config.topics).await?;
    let signers = issue_signers(&pki, &devices).await?;
    let (mock, accepted) = start_mock(config.mock_listen, &devices, &pki).await?;

    let server = start_server(config, &pki, &mock.url(), &api_key, &key_file, &data_dir).await;
    let mut server = match server {
        Ok(server) => server,
        Err(e) => {
            mock.shutdown().await;
            return Err(e.into());
        }
    };
    let counters = Arc::new(Counters::default());
    let mut waker = None;
    let mut enrolled_count = 0;
    let url = server.url().to_owned();
    let server_pid = server.pid();
    let setup = async {
        let admin = AdminClient::new(&url, Some(api_key), None)
            .map_err(|e| admin_err("client", e))?
            .with_timeout(Duration::from_secs(60));
        wait_healthy(&admin, &url).await?;
        announce(out, &format!("server {url}"))?;
        announce(out, &format!("api-key-file {}", key_file.display()))?;
        announce(out, &format!("data-dir {}", data_dir.display()))?;
        announce(out, &format!("server-pid {server_pid}"))?;
        tenants::register(&admin, &tenants[1..]).await?;

        let routes = NodeRoutes::resolve(std::slice::from_ref(&url), config.seed).await?;
        let fleet = Arc::new(LiveDevices {
            devices: devices.clone(),
            signers: Some(signers.clone()),
            routes: routes.clone(),
            counters: counters.clone(),
        });
        waker = Some(wake::start(fleet.clone(), accepted, config.report_delay));
        let enrolled = enroll_all(&fleet, &tenants, &counters).await?;
        first_device_information(&admin, &fleet, &enrolled).await?;
        enrolled_count = enrolled.len() as u64;
        announce(out, &format!("ready {enrolled_count} devices enrolled"))?;
        announce(out, &format!("console: {url}/ui/"))?;
        if config.refresh {
            refresh_all(&admin).await?;
        }
        Ok::<_, LiveError>(())
    };
    // A signal during the setup stops it too.
    let set_up = tokio::select! {
        done = setup => Some(done),
        _ = interrupt.recv() => None,
        _ = terminate.recv() => None,
    };
    let outcome = match set_up {
        Some(Ok(())) => wait_for_stop(config, &mut server, &mut interrupt, &mut terminate).await,
        Some(Err(e)) => Err(e),
        None => Ok(StoppedBy::Signal),
    };
    // A request that failed because the server died: say that, with its log.
    let outcome = match outcome {
        Err(e) if !matches!(e, LiveError::ServerDied { .. }) => match server.exited() {
            Some(status) => Err(died(&server, status).await),
            None => Err(e),
        },
        other => other,
    };

    // --- stop, whatever happened ---
    if let Some(waker) = waker {
        waker.abort();
        let _ = waker.await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate(STOP_GRACE)).await;
    if let Ok(Some(status)) = &status {
        if !status.success() && outcome.is_ok() {
            eprintln!("demo: the server exited with {status} when stopped");
        }
    }
    mock.shutdown().await;
    drop(scratch);
    let stopped_by = outcome?;
    let count = |r: Role| devices.iter().filter(|d| d.role == r).count() as u64;
    let population = Population {
        devices: devices.len() as u64,
        enrolled: enrolled_count,
        online: count(Role::Online),
        offline: count(Role::Offline),
        unregistered: count(Role::Unregistered),
    };
    Ok(LiveSummary::new(
        population,
        &counters,
        started.elapsed().as_secs_f64(),
        stopped_by,
    ))
}

/// One `magicpush serve` (this program's `serve-child`) on SQLite in `data_dir`, pushing to
/// the mock at `apns_url`, with the key file and device identity on, and `--public-url` its
/// own address (enrollment invitations); in a process group of its own, its log passed on and
/// its tail kept.
async fn start_server(
    config: &LiveConfig,
    pki: &FleetPki,
    apns_url: &str,
    api_key: &str,
    key_file: &Path,
    data_dir: &Path,
) -> Result<ServerProcess, FleetError> {
    let settings = ServeSettings {
        exe: config.exe.clone(),
        store: NodeStore::Sqlite {
            data_dir: data_dir.to_owned(),
        },
        cert: pki.path(pki::PUSH_CERT_FILE),
        key: pki.path(pki::PUSH_KEY_FILE),
        apns_url: apns_url.to_owned(),
        apns_ca: pki.path(pki::CA_FILE),
        api_key: api_key.to_owned(),
        unreachable_after: config.unreachable_after,
        push_concurrency: 64,
        // Warnings, and serve's start-up notes.
        log_filter: Some("warn,magicpush_cli::serve=info".into()),
        device_auth: ServeDeviceAuth::Ca(pki.path(pki::DEVICE_CA_FILE)),
    };
    let launch = Launch {
        listen: config.listen,
        api_key_file: Some(key_file.to_owned()),
        keep_log: true,
        own_process_group: true,
        // The console's Enrollment screen hands out invitations: the built-in device CA
        // (there beside --device-ca) issues their devices' identities.
        public_url: true,
    };
    tokio::task::spawn_blocking(move || ServerProcess::spawn_with(&settings, &launch))
        .await
        .map_err(|e| FleetError::Server {
            detail: e.to_string(),
        })?
}

/// One announcement line, flushed at once (a script waits on it).
fn announce<W: Write>(out: &mut W, line: &str) -> Result<(), LiveError> {
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(LiveError::Output)
}

/// Polls `/healthz` until it answers 200.
async fn wait_healthy(admin: &AdminClient, url: &str) -> Result<(), LiveError> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let detail = match admin.request(Method::GET, "/healthz", None).await {
            Ok((status, _)) if status.is_success() => return Ok(()),
            Ok((status, body)) => format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(LiveError::Health {
                url: url.to_owned(),
                detail,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Authenticate + TokenUpdate for every device (signed), on the tenants round robin; the
/// indices of the devices enrolled. Any failure is an error: a demo fleet is whole.
async fn enroll_all(
    fleet: &Arc<LiveDevices>,
    tenants: &[tenants::Tenant],
    counters: &Arc<Counters>,
) -> Result<Vec<usize>, LiveError> {
    let topics: Arc<[String]> = tenants.iter().map(|t| t.topic.clone()).collect();
    let failures = Arc::new(super::Failures::default());
    let enrolled = enroll(
        &fleet.devices,
        fleet.signers.as_ref(),
        None,
        &topics,
        &fleet.routes,
        ENROLL_CONNECTIONS,
        &Arc::new(Progress::default()),
        &failures,
    )
    .await;
    if failures.count() > 0 {
        for sample in failures.samples() {
            counters.failures.record(sample);
        }
        return Err(LiveError::Enroll {
            failed: failures.count(),
            devices: fleet.devices.len(),
            sample: failures.samples().first().cloned().unwrap_or_default(),
        });
    }
    Ok(enrolled
        .iter()
        .enumerate()
        .filter_map(|(i, ok)| ok.then_some(i))
        .collect())
}

/// Queues a DeviceInformation for the `enrolled` devices without pushing them, and has each
/// device fetch and answer it, as a device does right after enrolling: every device (the
/// offline ones too, which are online while they enroll) has its facts collected once.
async fn first_device_information(
    admin: &AdminClient,
    fleet: &Arc<LiveDevices>,
    enrolled: &[usize],
) -> Result<(), LiveError> {
    // In batches: one request body for every device of a large fleet would be large.
    for batch in enrolled.chunks(COMMAND_BATCH) {
        let udids: Vec<&str> = batch
            .iter()
            .map(|&i| fleet.devices[i].udid.as_str())
            .collect();
        let request = serde_json::json!({
            "udids": udids,
            "request_type": magicpush_mdm::DEVICE_INFORMATION,
            "params": {"Queries": magicpush_mdm::DEVICE_INFORMATION_QUERIES},
            "push": false,
        });
        admin
            .send_json(Method::POST, "/v1/commands", &request)
            .await
            .map_err(|e| admin_err("POST /v1/commands", e))?;
    }
    fleet
        .answer_all(enrolled.to_vec(), ENROLL_CONNECTIONS)
        .await;
    let failed = fleet.counters.failures.count();
    if failed > 0 {
        return Err(FleetError::Device {
            path: "/mdm/server",
            detail: format!(
                "{failed} devices could not answer their first DeviceInformation, e.g. {}",
                fleet
                    .counters
                    .failures
                    .samples()
                    .first()
                    .cloned()
                    .unwrap_or_default()
            ),
        }
        .into());
    }
    Ok(())
}

/// The error of a server that exited on its own, with its last log lines.
async fn died(server: &ServerProcess, status: std::process::ExitStatus) -> LiveError {
    // The log reader may still be passing on the last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut log = server.log_tail();
    log.truncate(LOG_TAIL);
    LiveError::ServerDied {
        status: status.to_string(),
        log,
    }
}

/// Waits for SIGINT, SIGTERM or the end of `run_for`; an error if the server exits first.
async fn wait_for_stop(
    config: &LiveConfig,
    server: &mut ServerProcess,
    interrupt: &mut tokio::signal::unix::Signal,
    terminate: &mut tokio::signal::unix::Signal,
) -> Result<StoppedBy, LiveError> {
    let until = config.run_for.map(|d| Instant::now() + d);
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        let timer = async {
            match until {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => return Ok(StoppedBy::Signal),
            _ = terminate.recv() => return Ok(StoppedBy::Signal),
            () = timer => return Ok(StoppedBy::Time),
            _ = check.tick() => {
                if let Some(status) = server.exited() {
                    return Err(died(server, status).await);
                }
            }
        }
    }
}
