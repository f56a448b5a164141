//! A simulated device fleet against a real magicpush server, end to end: enroll → refresh all →
//! push (mock APNs) → device wakes → Idle → DeviceInformation → Acknowledged → recorded →
//! connectivity report.
//!
//! # Layout
//! - [`device`]: the simulated devices, their roles and the plists they send.
//! - `xml`: the plist writer and the reader for the server's command answers.
//! - `conn`: a keep-alive HTTP/1.1 connection to the device endpoints.
//! - `enrollment`, [`keypool`], `profile`: `--enroll`, devices that get their identity
//!   from an invitation's profile and the server's `/scep`, with keys from a small pool.
//! - [`server`]: the server under test as a child process (`serve-child`).
//! - [`nodes`]: the server nodes of a run (`--nodes`) and which node each request goes to.
//! - [`database`]: a run's own PostgreSQL schema (`--database-url`).
//! - [`pki`]: the certificates, fresh or from a directory.
//! - [`tenants`]: the tenants (`--topics`), the devices spread over them, their registration.
//! - [`report`]: the figures, the count check and the table.
//! - `exchange`: a device's report exchange (Idle, answers, until nothing is queued).
//! - [`live`]: the long-running fleet behind one server (`demo`).
//! - this module: the phases.

pub(crate) mod conn;
pub mod database;
pub mod device;
mod enrollment;
mod exchange;
pub mod keypool;
pub mod live;
pub mod nodes;
pub mod pki;
mod profile;
pub mod report;
pub mod server;
pub mod signer;
pub mod standin;
pub mod tenants;
mod xml;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use magicpush_server::client::AdminClient;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::mock_apns::{AcceptedPush, MockApns, MockConfig, MockError, MockHandle, Reason};
use conn::CHECKIN_TYPE;
use device::{Role, SimDevice};
use enrollment::{EnrollPhase, Identities};
use keypool::KeyPool;
use nodes::{NodeConns, NodePlan, NodeRoutes, NodeSet};
use pki::FleetPki;
use report::{EnrollmentReport, FleetReport, Injected, LatencyMs, NodeReport, Phases};
use server::{NodeStore, ServeDeviceAuth, ServeSettings};
use signer::DeviceSigner;
use tenants::{tenant_of, Tenant};

/// Where the server under test comes from.
#[derive(Debug, Clone)]
pub enum ServerMode {
    /// Start [`FleetConfig::nodes`] child processes of `exe` (a program with the
    /// `serve-child` subcommand): on SQLite in a temporary directory, or on PostgreSQL at
    /// [`FleetConfig::database_url`].
    Spawn {
        /// Normally `std::env::current_exe()`.
        exe: PathBuf,
    },
    /// Use a running server (plain `http://`) that pushes to this run's mock APNs.
    Existing {
        /// Base URL, `http://host:port`.
        url: String,
        /// Its admin API key.
        api_key: String,
    },
}

/// How a fleet run goes.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Devices to simulate.
    pub devices: usize,
    /// Fraction (0..=1) of devices that never answer a push.
    pub offline_fraction: f64,
    /// Fraction (0..=1) of devices whose token APNs answers 410.
    pub unregistered_fraction: f64,
    /// How long a woken device waits before it reports Idle.
    pub delay: Duration,
    /// The server under test.
    pub server: ServerMode,
    /// Connections (and concurrent requests) of the simulated devices.
    pub connections: usize,
    /// Longest wait from the refresh until every online device reported and the server's
    /// report settled.
    pub wait: Duration,
    /// Seed of the fleet (identities and roles).
    pub seed: u64,
    /// Read (or write) the certificates here instead of a temporary directory.
    pub pki_dir: Option<PathBuf>,
    /// Address of the mock APNs.
    pub mock_listen: SocketAddr,
    /// `--unreachable-after` of a spawned server.
    pub unreachable_after: Duration,
    /// `--push-concurrency` of a spawned server.
    pub push_concurrency: usize,
    /// How the simulated devices prove who they are.
    pub device_auth: FleetDeviceAuth,
    /// First run the identical workload against the trivial MDM stand-in ([`standin`]) and
    /// report the floor it sets (`floor_s`, `wall_over_floor`).
    pub baseline: bool,
    /// Tenants: push certificates with a topic each, the devices spread over them round
    /// robin. The server starts with the first; the others are registered through
    /// `POST /v1/topics`.
    pub topics: usize,
    /// Each tenant's devices get adjacent UDIDs ([`device::UdidLayout::ByTenant`]) instead of
    /// random ones: what a store keyed by tenant first would see. Not a real fleet's layout.
    pub udids_by_tenant: bool,
    /// Server processes to start (spawned mode), all on [`FleetConfig::database_url`]; each
    /// device request goes to one of them, chosen with the seed. More than one needs a
    /// database.
    pub nodes: usize,
    /// PostgreSQL for the spawned nodes (a schema of the run's own, dropped at the end);
    /// `None`: one node on SQLite.
    pub database_url: Option<String>,
    /// Each device first gets its identity from the server: an invitation's profile, then
    /// SCEP at `/scep` with an RSA-2048 key of a pool of [`keypool::POOL_SIZE`] (device `i`
    /// has key `i % pool`). Spawned nodes run with their built-in device CA and
    /// `--public-url`. Needs [`FleetDeviceAuth::Signature`]. The floors (the stand-in has no
    /// SCEP) run without enrollment, with the fleet's own identities: RSA-2048, a pool as
    /// large, certificates from its device CA.
    pub enroll: bool,
}

/// How the fleet's devices authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FleetDeviceAuth {
    /// Each device has its own identity certificate (P-256, from the fleet's device CA; with
    /// `--enroll`, RSA-2048 from the server's `/scep`) and signs every check-in and report
    /// with `Mdm-Signature`; the server requires it.
    #[default]
    Signature,
    /// No identities; the server runs with `--insecure-no-device-auth` (for comparison).
    None,
}

impl FleetConfig {
    /// Defaults for `devices` devices against a spawned server.
    pub fn new(devices: usize, exe: PathBuf) -> FleetConfig {
        FleetConfig {
            devices,
            offline_fraction: 0.0,
            unregistered_fraction: 0.0,
            delay: Duration::ZERO,
            server: ServerMode::Spawn { exe },
            connections: 128,
            wait: Duration::from_secs(120),
            seed: 0x6d61_6769_6370_7573,
            pki_dir: None,
            mock_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            unreachable_after: Duration::from_secs(600),
            push_concurrency: 256,
            device_auth: FleetDeviceAuth::Signature,
            baseline: false,
            topics: 1,
            udids_by_tenant: false,
            nodes: 1,
            database_url: None,
            enroll: false,
        }
    }
}

/// Why a fleet run could not be carried out (as opposed to a run whose figures fail).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The configuration cannot work.
    #[error("fleet: {0}")]
    Config(String),
    /// Certificates could not be generated, written or read.
    #[error("fleet certificates: {0}")]
    Pki(String),
    /// The mock APNs did not start.
    #[error(transparent)]
    Mock(#[from] MockError),
    /// The server child did not start.
    #[error("fleet server: {detail}")]
    Server {
        /// What happened.
        detail: String,
    },
    /// A device request failed after its retries.
    #[error("device {path}: {detail}")]
    Device {
        /// The endpoint (and method, when not PUT).
        path: &'static str,
        /// What happened.
        detail: String,
    },
    /// An admin API call failed.
    #[error("admin API {what}: {detail}")]
    Admin {
        /// Which call.
        what: &'static str,
        /// What happened.
        detail: String,
    },
    /// A tenant (`--topics`) could not be registered with `POST /v1/topics`.
    #[error("admin API POST /v1/topics, tenant {topic}: {detail}")]
    Register {
        /// The tenant's topic.
        topic: String,
        /// What happened.
        detail: String,
    },
    /// `--nodes` above 1 without a database: SQLite holds one server's devices.
    #[error(
        "fleet: --nodes {nodes} needs --database-url (or MAGICPUSH_FLEET_DATABASE_URL): several \
         nodes share one PostgreSQL database; SQLite serves a single node"
    )]
    NodesNeedDatabase {
        /// The nodes asked for.
        nodes: usize,
    },
    /// The run's PostgreSQL schema could not be created or dropped.
    #[error("fleet database (--database-url): {what}: {detail}")]
    Database {
        /// What was being done.
        what: &'static str,
        /// What happened.
        detail: String,
    },
    /// A temporary directory could not be made.
    #[error("fleet: cannot create a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
}

/// The phase a run is in, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Certificates, mock APNs, server.
    Setup = 0,
    /// With `--enroll`: profiles and SCEP.
    Identify = 1,
    /// Authenticate + TokenUpdate.
    Enroll = 2,
    /// Refresh, pushes, device reports.
    PushReport = 3,
    /// Waiting for the server's report to settle.
    Settle = 4,
    /// Reading the device list.
    Verify = 5,
    /// Finished.
    Done = 6,
}

/// Live counters of a run, read by the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    /// With `--enroll`: devices whose SCEP enrollment finished (either way).
    pub identified: AtomicU64,
    /// Devices whose enrollment finished (either way).
    pub enrolled: AtomicU64,
    /// Pushes the mock APNs accepted.
    pub pushed: AtomicU64,
    /// Online devices that finished their report (either way).
    pub reported: AtomicU64,
    /// Devices in the fleet.
    pub devices: AtomicU64,
    /// Online devices (reports to expect).
    pub online: AtomicU64,
    /// Pushes the mock is expected to accept (online + offline).
    pub pushable: AtomicU64,
}

impl Progress {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Setup,
            1 => Phase::Identify,
            2 => Phase::Enroll,
            3 => Phase::PushReport,
            4 => Phase::Settle,
            5 => Phase::Verify,
            _ => Phase::Done,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Zeroes the counts of a run, before the next run of the same devices (each floor, then
    /// the server): a push phase waits until its own run's devices all reported.
    fn start_run(&self) {
        self.identified.store(0, Ordering::Relaxed);
        self.enrolled.store(0, Ordering::Relaxed);
        self.pushed.store(0, Ordering::Relaxed);
        self.reported.store(0, Ordering::Relaxed);
    }

    /// Marks the run finished (also after an error), so a display stops.
    pub fn mark_done(&self) {
        self.set_phase(Phase::Done);
    }
}

/// Failed requests: a count and the first few messages.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    count: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Failures {
    const SAMPLES: usize = 8;

    /// Failures so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The first few messages.
    pub(crate) fn samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() < Self::SAMPLES {
            samples.push(what);
        }
    }
}

/// Runs the whole fleet and returns its figures. Errors mean the run could not be carried out;
/// a run that finishes with lost devices or wrong counts returns a report that does not
/// [pass](FleetReport::passed).
pub async fn run(config: &FleetConfig, progress: Arc<Progress>) -> Result<FleetReport, FleetError> {
    if config.devices == 0 {
        return Err(FleetError::Config("--devices must be at least 1".into()));
    }
    if config.topics == 0 {
        return Err(FleetError::Config("--topics must be at least 1".into()));
    }
    if config.enroll && config.device_auth != FleetDeviceAuth::Signature {
        return Err(FleetError::Config(
            "--enroll needs --device-auth signature: the enrolled devices sign their check-ins \
             with the certificate /scep issued them"
                .into(),
        ));
    }
    match &config.server {
        ServerMode::Spawn { .. } => nodes::check(config.nodes, config.database_url.as_deref())?,
        ServerMode::Existing { .. } if config.nodes != 1 || config.database_url.is_some() => {
            return Err(FleetError::Config(
                "--server is one running server: --nodes and --database-url are for the nodes \
                 the fleet starts"
                    .into(),
            ))
        }
        ServerMode::Existing { .. } => {}
    }
    let started = Instant::now();
    progress.set_phase(Phase::Setup);

    // --- setup: devices, certificates, mock APNs, server ---
    let layout = if config.udids_by_tenant {
        device::UdidLayout::ByTenant(config.topics)
    } else {
        device::UdidLayout::Random
    };
    let devices = Arc::new(device::generate_with(
        config.devices,
        config.offline_fraction,
        config.unregistered_fraction,
        config.seed,
        layout,
    ));
    let role_count = |r: Role| devices.iter().filter(|d| d.role == r).count() as u64;
    let injected = Injected {
        online: role_count(Role::Online),
        offline: role_count(Role::Offline),
        unregistered: role_count(Role::Unregistered),
    };
    progress
        .devices
        .store(devices.len() as u64, Ordering::Relaxed);
    progress.online.store(injected.online, Ordering::Relaxed);
    progress
        .pushable
        .store(injected.online + injected.offline, Ordering::Relaxed);

    let scratch = tempfile::Builder::new()
        .prefix("magicpush-fleet-")
        .tempdir()
        .map_err(FleetError::TempDir)?;
    let pki_dir = config
        .pki_dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("pki"));
    let pki = FleetPki::load_or_create(&pki_dir)?;
    let certs_started = Instant::now();
    let tenants = issue_tenants(&pki, config.topics).await?;
    let tenant_certs_s = certs_started.elapsed().as_secs_f64();
    let topics: Arc<[String]> = tenants.iter().map(|t| t.topic.clone()).collect();
    // With --enroll the server issues the identities; the fleet's own are for the floors:
    // RSA-2048 from a pool as large as the enrolled devices', so that signing costs the
    // devices as much in the floors as in the server's run.
    let signers: Option<Arc<Vec<DeviceSigner>>> = match config.device_auth {
        FleetDeviceAuth::None => None,
        FleetDeviceAuth::Signature if config.enroll && !config.baseline => None,
        FleetDeviceAuth::Signature if config.enroll => {
            Some(issue_rsa_signers(&pki, &devices).await?)
        }
        FleetDeviceAuth::Signature => Some(issue_signers(&pki, &devices).await?),
    };
    let keys = if config.enroll {
        Some(generate_keys().await?)
    } else {
        None
    };

    let floor_run = |verify| {
        run_floor(
            config,
            &devices,
            signers.as_ref(),
            &pki,
            &tenants,
            &progress,
            injected,
            verify,
        )
    };
    let floor = if config.baseline {
        Some(floor_run(None).await?)
    } else {
        None
    };
    // Signed runs also get the floor that verifies every signature as the server does, so
    // that the server's own work shows apart from the verifications it must make.
    let floor_verifying = if config.baseline && signers.is_some() {
        let auth =
            pki::signature_authenticator(pki.device_ca.cert_der()).map_err(FleetError::Pki)?;
        Some(floor_run(Some(Arc::new(auth))).await?)
    } else {
        None
    };
    progress.start_run();

    let (mock, accepted_rx) = start_mock(config.mock_listen, &devices, &pki).await?;
    let plan = match &config.server {
        ServerMode::Spawn { exe } => NodePlan::Spawn {
            settings: Box::new(ServeSettings {
                exe: exe.clone(),
                store: NodeStore::Sqlite {
                    data_dir: scratch.path().join("data"),
                },
                cert: pki.path(pki::PUSH_CERT_FILE),
                key: pki.path(pki::PUSH_KEY_FILE),
                apns_url: mock.url(),
                apns_ca: pki.path(pki::CA_FILE),
                api_key: uuid::Uuid::new_v4().simple().to_string(),
                unreachable_after: config.unreachable_after,
                push_concurrency: config.push_concurrency,
                log_filter: None,
                device_auth: match (config.enroll, &signers) {
                    (true, _) => ServeDeviceAuth::BuiltIn,
                    (false, Some(_)) => ServeDeviceAuth::Ca(pki.path(pki::DEVICE_CA_FILE)),
                    (false, None) => ServeDeviceAuth::Insecure,
                },
            }),
            nodes: config.nodes,
            database_url: config.database_url.as_deref(),
            scratch: scratch.path(),
        },
        ServerMode::Existing { url, api_key } => NodePlan::Existing { url, api_key },
    };
    // The nodes, and the other tenants registered through the first (not timed with the job:
    // `register_s`, apart from `setup_s`).
    let (nodes, register) = NodeSet::start(plan, &tenants[1..]).await?;
    let setup_s = (started.elapsed() - register).as_secs_f64();
    let run = ServerRun {
        config,
        devices: &devices,
        signers: signers.as_ref(),
        keys: keys.as_ref(),
        topics: &topics,
        progress: &progress,
        injected,
        nodes: &nodes,
        mock: &mock,
        started,
        setup_s,
    };
    let outcome = run.measure(accepted_rx).await;
    let stopped = nodes.stop().await;
    mock.shutdown().await;
    progress.set_phase(Phase::Done);
    let measured = outcome?;
    stopped?;

    Ok(FleetReport {
        tenant_certs_s: round3(tenant_certs_s),
        register_s: round3(register.as_secs_f64()),
        floor_s: floor.as_ref().map(|f| round3(f.floor_s)),
        wall_over_floor: floor
            .as_ref()
            .map(|f| round3(measured.wall_s / f.floor_s.max(1e-9))),
        floor: floor.map(|f| f.phases),
        floor_verifying_s: floor_verifying.as_ref().map(|f| round3(f.floor_s)),
        wall_over_verifying_floor: floor_verifying
            .as_ref()
            .map(|f| round3(measured.wall_s / f.floor_s.max(1e-9))),
        floor_verifying: floor_verifying.map(|f| f.phases),
        total_s: round3(started.elapsed().as_secs_f64()),
        enrollment: measured.enrollment.map(|e| EnrollmentReport {
            floor_without_enrollment: config.baseline,
            ..e
        }),
        ..measured
    })
}

/// The `--enroll` key pool, generated off the async threads.
async fn generate_keys() -> Result<Arc<KeyPool>, FleetError> {
    tokio::task::spawn_blocking(|| KeyPool::generate(keypool::POOL_SIZE))
        .await
        .map_err(|e| FleetError::Pki(e.to_string()))?
        .map(Arc::new)
        .map_err(|e| FleetError::Pki(e.to_string()))
}

/// The tenants' push certificates (`count`, the first the set's own), issued off the async
/// threads.
pub(crate) async fn issue_tenants(
    pki: &FleetPki,
    count: usize,
) -> Result<Arc<[Tenant]>, FleetError> {
    let pki = pki.clone();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(
        tokio::task::spawn_blocking(move || pki.tenants(count, threads))
            .await
            .map_err(|e| FleetError::Pki(e.to_string()))??
            .into(),
    )
}

/// Each device's identity certificate and signer (the set's device CA issues them), off the
/// async threads.
pub(crate) async fn issue_signers(
    pki: &FleetPki,
    devices: &Arc<Vec<SimDevice>>,
) -> Result<Arc<Vec<DeviceSigner>>, FleetError> {
    let (pki, devices) = (pki.clone(), devices.clone());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let issued = tokio::task::spawn_blocking(move || pki.issue_identities(&devices, threads))
        .await
        .map_err(|e| FleetError::Pki(e.to_string()))??;
    Ok(Arc::new(issued))
}

/// The floors' identities in an `--enroll` run: RSA-2048 keys of a pool of
/// [`keypool::POOL_SIZE`], certificates from the set's device CA, off the async threads.
async fn issue_rsa_signers(
    pki: &FleetPki,
    devices: &Arc<Vec<SimDevice>>,
) -> Result<Arc<Vec<DeviceSigner>>, FleetError> {
    let (pki, devices) = (pki.clone(), devices.clone());
    let issued =
        tokio::task::spawn_blocking(move || pki.issue_rsa_identities(&devices, keypool::POOL_SIZE))
            .await
            .map_err(|e| FleetError::Pki(e.to_string()))??;
    Ok(Arc::new(issued))
}

/// `POST /v1/refresh {"all": true}`: every enrolled device of every tenant is sent a
/// DeviceInformation and pushed. The server's summary.
pub(crate) async fn refresh_all(admin: &AdminClient) -> Result<serde_json::Value, FleetError> {
    admin
        .send_json(
            Method::POST,
            "/v1/refresh",
            &serde_json::json!({"all": true}),
        )
        .await
        .map_err(|e| admin_err("POST /v1/refresh", e))
}

/// The run against the server nodes, once they are up: what [`ServerRun::measure`] needs.
struct ServerRun<'a> {
    config: &'a FleetConfig,
    devices: &'a Arc<Vec<SimDevice>>,
    signers: Option<&'a Arc<Vec<DeviceSigner>>>,
    /// With `--enroll`: the devices' keys (the server issues their certificates).
    keys: Option<&'a Arc<KeyPool>>,
    topics: &'a Arc<[String]>,
    progress: &'a Arc<Progress>,
    injected: Injected,
    nodes: &'a NodeSet,
    mock: &'a MockHandle,
    /// When the run started (certificates, floors and setup included).
    started: Instant,
    setup_s: f64,
}

impl ServerRun<'_> {
    /// Enroll (each request to a node of the seeded choice), refresh through one node, let
    /// the devices report (each request to a node of its own), wait for the counts, verify.
    /// The report's floor and total fields are the caller's.
    async fn measure(
        &self,
        accepted_rx: mpsc::UnboundedReceiver<AcceptedPush>,
    ) -> Result<FleetReport, FleetError> {
        let (config, devices, progress, injected, mock) = (
            self.config,
            self.devices,
            self.progress,
            self.injected,
            self.mock,
        );
        let routes = NodeRoutes::resolve(self.nodes.urls(), config.seed).await?;
        let refresh_node = self.nodes.refresh_node();
        let admin = self.nodes.admin(refresh_node)?;

        let failures = Arc::new(Failures::default());

        // --- with --enroll: profiles and SCEP, the devices' identities ---
        let identities: Option<Identities> = match self.keys {
            Some(keys) => {
                progress.set_phase(Phase::Identify);
                Some(
                    enrollment::enroll_identities(EnrollPhase {
                        devices,
                        topics: self.topics,
                        routes: &routes,
                        admin: &admin,
                        keys,
                        connections: config.connections,
                        progress,
                        failures: &failures,
                    })
                    .await?,
                )
            }
            None => None,
        };
        let signers = identities.as_ref().map(|i| &i.signers).or(self.signers);
        let identified = identities.as_ref().map(|i| Arc::new(i.issued.clone()));

        // --- enroll ---
        progress.set_phase(Phase::Enroll);
        let enroll_started = Instant::now();
        let enrolled_flags = enroll(
            devices,
            signers,
            identified,
            self.topics,
            &routes,
            config.connections,
            progress,
            &failures,
        )
        .await;
        let enroll_s = enroll_started.elapsed().as_secs_f64();
        // Only enrolled devices can be pushed: a failed enrollment must not make the push
        // phase wait for a push that cannot come (the run fails on the enrollment error).
        let enrolled_with = |want: &[Role]| {
            devices
                .iter()
                .zip(&enrolled_flags)
                .filter(|(d, e)| **e && want.contains(&d.role))
                .count() as u64
        };
        let enrolled = enrolled_with(&[Role::Online, Role::Offline, Role::Unregistered]);
        let expected_reports = enrolled_with(&[Role::Online]);
        let expected_pushes = enrolled;
        progress.online.store(expected_reports, Ordering::Relaxed);
        progress.pushable.store(
            enrolled_with(&[Role::Online, Role::Offline]),
            Ordering::Relaxed,
        );

        // --- refresh (through one node), pushes, reports (to any) ---
        let phase = push_phase(
            PushPhase {
                devices,
                signers,
                topics: self.topics,
                routes: &routes,
                config,
                admin: &admin,
                mock,
                progress,
                failures: &failures,
                expected_pushes,
                expected_reports,
            },
            accepted_rx,
        )
        .await?;
        let deadline = phase.deadline;
        if phase.summary["pushing"].as_u64() != Some(expected_pushes) {
            failures.record(format!(
                "refresh pushes {} devices, expected {expected_pushes}: {}",
                phase.summary["pushing"], phase.summary
            ));
        }
        let (push_s, push_report_s, answered) = (phase.push_s, phase.push_report_s, phase.answered);
        let pushes = judged_pushes(mock);

        // --- settle: the server's own report ---
        progress.set_phase(Phase::Settle);
        let settle_started = Instant::now();
        let (states, connectivity) = loop {
            let report = admin
                .get_json("/v1/connectivity")
                .await
                .map_err(|e| admin_err("GET /v1/connectivity", e))?;
            let states: BTreeMap<String, u64> = report["states"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            if report::counts_match(&states, injected) || Instant::now() >= deadline {
                break (states, report);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let settle_s = settle_started.elapsed().as_secs_f64();
        let wall_s = enroll_s + push_report_s + settle_s;

        // Before the device list: listing every device is an admin request, not the job.
        let job_rss = self.nodes.peak_rss_mb();

        // --- verify: who is lost ---
        progress.set_phase(Phase::Verify);
        let verify_started = Instant::now();
        let (lost, misplaced) = verify(&admin, devices, &answered.reported).await?;
        let verify_s = verify_started.elapsed().as_secs_f64();

        let rss = self.nodes.peak_rss_mb();
        let loadgen_peak_rss_mb = crate::rss::peak_rss_mb();
        let apns_connection_budget = connection_budget(&admin).await;
        let mock_stats = mock.stats();
        let topics = self.topics;
        let by_topic = report::topic_counts(
            topics,
            &tenants::accepted_by_tenant(
                devices.iter().map(|d| d.role),
                &enrolled_flags,
                topics.len(),
            ),
            &mock_stats.accepted_by_topic,
        );
        let requests = routes.requests();
        let node_reports: Vec<NodeReport> = self
            .nodes
            .urls()
            .iter()
            .enumerate()
            .map(|(i, url)| NodeReport {
                url: url.clone(),
                requests: requests.get(i).copied().unwrap_or(0),
                peak_rss_mb: rss.get(i).copied().flatten().map(round1),
                job_peak_rss_mb: job_rss.get(i).copied().flatten().map(round1),
            })
            .collect();
        // The largest node's, as one server's figure is compared.
        let largest = |v: &[Option<f64>]| v.iter().flatten().copied().reduce(f64::max);

        let error_samples = failures
            .samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        Ok(FleetReport {
            devices: devices.len() as u64,
            device_auth: config.device_auth,
            topics: topics.len() as u64,
            udids_by_tenant: config.udids_by_tenant,
            tenant_certs_s: 0.0,
            register_s: 0.0,
            apns_connections_peak: mock_stats.connections_peak,
            apns_connections_opened: mock_stats.connections_opened,
            apns_connection_budget,
            topics_exact: by_topic.exact,
            topic_count_errors: by_topic.wrong,
            topic_disallowed: mock_stats.rejected_with(Reason::TopicDisallowed),
            wall_s: round3(wall_s),
            floor_s: None,
            wall_over_floor: None,
            floor: None,
            floor_verifying_s: None,
            wall_over_verifying_floor: None,
            floor_verifying: None,
            total_s: round3(self.started.elapsed().as_secs_f64()),
            counts_match: report::counts_match(&states, injected),
            states,
            expected: report::expected_states(injected),
            injected,
            lost,
            misplaced,
            enrolled,
            enroll_per_s: round1(enrolled as f64 / enroll_s),
            checkins_per_s: round1(2.0 * enrolled as f64 / enroll_s),
            pushes,
            push_per_s: round1(pushes as f64 / push_s.max(1e-9)),
            push_s: round3(push_s),
            reported: answered.reported.iter().filter(|r| **r).count() as u64,
            latency_ms: LatencyMs::from_micros(&answered.latency_us),
            server_latency_ms: connectivity["latency_ms"].clone(),
            phases: Phases {
                setup_s: round3(self.setup_s),
                enroll_s: round3(enroll_s),
                push_report_s: round3(push_report_s),
                settle_s: round3(settle_s),
                verify_s: round3(verify_s),
            },
            server_peak_rss_mb: largest(&rss).map(round1),
            server_job_peak_rss_mb: largest(&job_rss).map(round1),
            loadgen_peak_rss_mb: loadgen_peak_rss_mb.map(round1),
            errors: failures.count.load(Ordering::Relaxed),
            error_samples,
            store: self.nodes.store(),
            database_schema: self.nodes.schema().map(str::to_owned),
            refresh_node,
            nodes: node_reports,
            enrollment: identities.map(|i| EnrollmentReport {
                invitations: i.invitations,
                invite_s: round3(i.invite_seconds),
                enroll_s: round3(i.seconds),
                enrollments: i.count(),
                enrollments_per_s: round1(i.count() as f64 / i.seconds.max(1e-9)),
                enroll_key_pool: self.keys.map_or(0, |k| k.len() as u64),
                enroll_key_pool_s: self
                    .keys
                    .map_or(0.0, |k| round3(k.generated_in.as_secs_f64())),
                rsa2048_private_op_ms: self
                    .keys
                    .map_or(0.0, |k| round3(k.rsa2048_private_op.as_secs_f64() * 1e3)),
                enroll_cpu_rsa2048_ops: self.keys.map_or(0.0, |k| {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                    let op = k.rsa2048_private_op.as_secs_f64().max(1e-9);
                    let per_cert = i.seconds * cores as f64 / (i.count().max(1) as f64);
                    round1(per_cert / op)
                }),
                floor_without_enrollment: false,
            }),
        })
    }
}

/// The mock APNs of a run: 410 for the unregistered devices' tokens, every accepted push
/// reported on the channel.
pub(crate) async fn start_mock(
    listen: SocketAddr,
    devices: &[SimDevice],
    pki: &FleetPki,
) -> Result<(MockHandle, mpsc::UnboundedReceiver<AcceptedPush>), FleetError> {
    let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
    let mock_config = MockConfig {
        unregistered: devices
            .iter()
            .filter(|d| d.role == Role::Unregistered)
            .map(SimDevice::token_hex)
            .collect(),
        accepted: Some(accepted_tx),
        ..MockConfig::default()
    };
    let mock = MockApns::start(
        listen,
        &pki.server_cert_pem,
        &pki.server_key_pem,
        &pki.ca_pem,
        mock_config,
    )
    .await?;
    Ok((mock, accepted_rx))
}

/// What the push phase needs: the run's devices and server, and the counts it waits for.
struct PushPhase<'a> {
    devices: &'a Arc<Vec<SimDevice>>,
    signers: Option<&'a Arc<Vec<DeviceSigner>>>,
    /// The tenants' topics: device `i` is pushed on `topics[tenant_of(i)]`.
    topics: &'a Arc<[String]>,
    /// The nodes the devices send their requests to.
    routes: &'a Arc<NodeRoutes>,
    config: &'a FleetConfig,
    admin: &'a AdminClient,
    mock: &'a MockHandle,
    progress: &'a Arc<Progress>,
    failures: &'a Arc<Failures>,
    expected_pushes: u64,
    expected_reports: u64,
}

/// How the push phase went.
struct PushPhaseResult {
    /// The refresh's answer.
    summary: serde_json::Value,
    /// Refresh until every expected push was judged by the mock.
    push_s: f64,
    /// Refresh until every expected device reported (or the deadline).
    push_report_s: f64,
    /// The push phase's deadline (the run's `wait` after the refresh).
    deadline: Instant,
    answered: Answered,
}

/// Refresh all, then let the woken devices report: waits until the mock judged every
/// expected push and every expected device reported, or the run's `wait` passed.
async fn push_phase(
    p: PushPhase<'_>,
    accepted: mpsc::UnboundedReceiver<AcceptedPush>,
) -> Result<PushPhaseResult, FleetError> {
    p.progress.set_phase(Phase::PushReport);
    let push_started = Instant::now();
    let deadline = push_started + p.config.wait;
    let reports = Reports::start(
        p.devices.clone(),
        p.signers.cloned(),
        p.topics.clone(),
        p.routes,
        p.config.connections,
        p.config.delay,
        accepted,
        p.progress.clone(),
        p.failures.clone(),
    );
    let summary = refresh_all(p.admin).await?;
    let mut push_s = None;
    loop {
        if push_s.is_none() && judged_pushes(p.mock) >= p.expected_pushes {
            push_s = Some(push_started.elapsed().as_secs_f64());
        }
        let reported = p.progress.reported.load(Ordering::Relaxed);
        if (push_s.is_some() && reported >= p.expected_reports) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let push_report_s = push_started.elapsed().as_secs_f64();
    Ok(PushPhaseResult {
        summary,
        push_s: push_s.unwrap_or(push_report_s),
        push_report_s,
        deadline,
        answered: reports.finish().await,
    })
}

/// What the stand-in run measured.
struct Floor {
    /// enroll + push_report against the stand-in.
    floor_s: f64,
    phases: report::FloorPhases,
}

/// The floor: the identical device workload (same devices, requests and signatures, a mock
/// APNs configured the same) against the trivial MDM stand-in; with `verify`, one that
/// verifies every signature.
#[allow(clippy::too_many_arguments)]
async fn run_floor(
    config: &FleetConfig,
    devices: &Arc<Vec<SimDevice>>,
    signers: Option<&Arc<Vec<DeviceSigner>>>,
    pki: &FleetPki,
    tenants: &[Tenant],
    progress: &Arc<Progress>,
    injected: Injected,
    verify: Option<Arc<magicpush_server::identity::DeviceAuthenticator>>,
) -> Result<Floor, FleetError> {
    progress.start_run();
    let (mock, accepted_rx) = start_mock(config.mock_listen, devices, pki).await?;
    let floor_err = |e: String| FleetError::Server {
        detail: format!("stand-in: {e}"),
    };
    let endpoint = mock
        .url()
        .parse()
        .map_err(|e: magicpush_engine::InvalidEndpoint| floor_err(e.to_string()))?;
    // Every tenant's certificate, as the server has them once they are registered.
    let mut builder = magicpush_engine::Client::builder();
    for t in tenants {
        let cert = magicpush_engine::cert::PushCertificate::from_pem(
            t.cert_pem.as_bytes(),
            t.key_pem.as_bytes(),
        )
        .map_err(|e| floor_err(format!("{}: {e}", t.topic)))?;
        builder = builder.certificate(cert);
    }
    let client = builder
        .endpoint(endpoint)
        .trust_anchor_pem(pki.ca_pem.as_bytes())
        .and_then(|b| b.build())
        .map_err(|e| floor_err(e.to_string()))?;
    let standin = standin::StandIn::start(client.clone(), config.push_concurrency, verify)
        .await
        .map_err(|e| floor_err(e.to_string()))?;
    let routes = NodeRoutes::resolve(&[standin.url()], config.seed).await?;
    let admin = AdminClient::new(&standin.url(), None, None)
        .map_err(|e| admin_err("stand-in client", e))?;
    let failures = Arc::new(Failures::default());
    let topics: Arc<[String]> = tenants.iter().map(|t| t.topic.clone()).collect();

    progress.set_phase(Phase::Enroll);
    let enroll_started = Instant::now();
    let enrolled = enroll(
        devices,
        signers,
        None,
        &topics,
        &routes,
        config.connections,
        progress,
        &failures,
    )
    .await;
    let enroll_s = enroll_started.elapsed().as_secs_f64();

    let expected_pushes = enrolled.iter().filter(|e| **e).count() as u64;
    let phase = push_phase(
        PushPhase {
            devices,
            signers,
            topics: &topics,
            routes: &routes,
            config,
            admin: &admin,
            mock: &mock,
            progress,
            failures: &failures,
            expected_pushes,
            expected_reports: injected.online,
        },
        accepted_rx,
    )
    .await?;
    let (push_report_s, answered) = (phase.push_report_s, phase.answered);
    standin.stop();
    client.shutdown().await;
    mock.shutdown().await;
    let reported = answered.reported.iter().filter(|r| **r).count() as u64;
    let errors = failures.count.load(Ordering::Relaxed);
    if errors > 0 || reported != injected.online {
        let sample = failures
            .samples
            .lock()
            .map(|s| s.first().cloned().unwrap_or_default())
            .unwrap_or_default();
        return Err(floor_err(format!(
            "the floor run did not complete ({reported} of {} online devices reported, {errors} errors; {sample})",
            injected.online
        )));
    }
    Ok(Floor {
        floor_s: enroll_s + push_report_s,
        phases: report::FloorPhases {
            enroll_s: round3(enroll_s),
            push_report_s: round3(push_report_s),
        },
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub(crate) fn admin_err(what: &'static str, e: impl std::fmt::Display) -> FleetError {
    FleetError::Admin {
        what,
        detail: e.to_string(),
    }
}

/// Pushes the mock answered: accepted, or 410 for an unregistered token. Polled: two atomic
/// loads, not a snapshot of every connection.
fn judged_pushes(mock: &MockHandle) -> u64 {
    mock.accepted_total() + mock.rejected_count(Reason::Unregistered)
}

/// The server's connection budget for all topics together, from its `/metrics`
/// (`magicpush_connections_budget`); `None` when it does not show one.
async fn connection_budget(admin: &AdminClient) -> Option<u64> {
    let text = admin.get_text("/metrics").await.ok()?;
    report::prometheus_value(&text, "magicpush_connections_budget").map(|v| v as u64)
}

/// Authenticate + TokenUpdate for every device by `connections` workers, each with a
/// keep-alive connection to every node (each request to the node `routes` chooses).
/// With `identified` (`--enroll`), only the devices it marks (those that got their
/// certificate) check in. Returns, per device, whether both check-ins were answered 200.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn enroll(
    devices: &Arc<Vec<SimDevice>>,
    signers: Option<&Arc<Vec<DeviceSigner>>>,
    identified: Option<Arc<Vec<bool>>>,
    topics: &Arc<[String]>,
    routes: &Arc<NodeRoutes>,
    connections: usize,
    progress: &Arc<Progress>,
    failures: &Arc<Failures>,
) -> Vec<bool> {
    let workers = connections.clamp(1, devices.len());
    let enrolled: Arc<Vec<AtomicBool>> =
        Arc::new(devices.iter().map(|_| AtomicBool::new(false)).collect());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let devices = devices.clone();
        let topics = topics.clone();
        let mut conn = routes.conns();
        let progress = progress.clone();
        let failures = failures.clone();
        let enrolled = enrolled.clone();
        let signers = signers.cloned();
        let identified = identified.clone();
        tasks.spawn(async move {
            for (i, d) in devices.iter().enumerate().skip(w).step_by(workers) {
                if identified.as_ref().is_some_and(|ok| !ok[i]) {
                    // Its SCEP enrollment failed (recorded): nothing to check in with.
                    progress.enrolled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let signer = signers.as_ref().map(|s| &s[i]);
                let topic = &topics[tenant_of(i, topics.len())];
                match enroll_one(&mut conn, i, d, signer, topic).await {
                    Ok(()) => enrolled[i].store(true, Ordering::Relaxed),
                    Err(why) => failures.record(format!("enroll {}: {why}", d.udid)),
                }
                progress.enrolled.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    enrolled.iter().map(|e| e.load(Ordering::Relaxed)).collect()
}

/// Device `index`'s Authenticate (request 0) and TokenUpdate (request 1).
async fn enroll_one(
    conn: &mut NodeConns,
    index: usize,
    d: &SimDevice,
    signer: Option<&DeviceSigner>,
    topic: &str,
) -> Result<(), String> {
    for (request, what, body) in [
        (0, "Authenticate", d.authenticate(topic)),
        (1, "TokenUpdate", d.token_update(topic)),
    ] {
        let signature = signer.map(|s| s.sign(&body));
        let (status, answer) = conn
            .put(
                index,
                request,
                "/mdm/checkin",
                CHECKIN_TYPE,
                body,
                signature,
            )
            .await
            .map_err(|e| e.to_string())?;
        if status != StatusCode::OK {
            return Err(format!(
                "{what} answered {status}: {}",
                String::from_utf8_lossy(&answer).trim()
            ));
        }
    }
    Ok(())
}

/// A device woken by an accepted push.
struct Wake {
    index: usize,
    pushed_at: Instant,
}

/// The device side of the push phase: a dispatcher that hands each accepted push to its
/// device, and workers that run the woken online devices' report exchanges.
struct Reports {
    dispatcher: tokio::task::JoinHandle<()>,
    workers: tokio::task::JoinSet<hdrhistogram::Histogram<u64>>,
    reported: Arc<Vec<AtomicBool>>,
}

/// What the devices did in the push phase.
struct Answered {
    /// Per device: it completed its report exchange (every answer 200).
    reported: Vec<bool>,
    /// Push accepted → Acknowledged answered, in microseconds.
    latency_us: hdrhistogram::Histogram<u64>,
}

impl Reports {
    #[allow(clippy::too_many_arguments)]
    fn start(
        devices: Arc<Vec<SimDevice>>,
        signers: Option<Arc<Vec<DeviceSigner>>>,
        topics: Arc<[String]>,
        routes: &Arc<NodeRoutes>,
        connections: usize,
        delay: Duration,
        mut accepted: mpsc::UnboundedReceiver<AcceptedPush>,
        progress: Arc<Progress>,
        failures: Arc<Failures>,
    ) -> Reports {
        let (wake_tx, wake_rx) = mpsc::unbounded_channel::<Wake>();
        // A push finds its device by its token, whichever node sent it: all the nodes push
        // to the one mock APNs, whose accepted pushes all come here.
        let by_token: HashMap<String, usize> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.token_hex(), i))
            .collect();
        let dispatcher = {
            let devices = devices.clone();
            let progress = progress.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let mut woken = vec![false; devices.len()];
                while let Some(push) = accepted.recv().await {
                    let pushed_at = Instant::now();
                    progress.pushed.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = by_token.get(&push.token) else {
                        failures.record(format!("push to a token of no device: {}", push.token));
                        continue;
                    };
                    let d = &devices[index];
                    if push.magic != d.push_magic {
                        failures.record(format!("{}: push magic {:?}", d.udid, push.magic));
                    }
                    let topic = &topics[tenant_of(index, topics.len())];
                    if push.topic != *topic {
                        failures.record(format!(
                            "{}: pushed on {}, enrolled with {topic}",
                            d.udid, push.topic
                        ));
                    }
                    // A device is woken once; a repeated push finds it already answering.
                    if std::mem::replace(&mut woken[index], true) {
                        continue;
                    }
                    match d.role {
                        Role::Online => {
                            let _ = wake_tx.send(Wake { index, pushed_at });
                        }
                        Role::Offline => {}
                        Role::Unregistered => {
                            failures.record(format!("{}: unregistered token was accepted", d.udid))
                        }
                    }
                }
            })
        };
        let reported: Arc<Vec<AtomicBool>> =
            Arc::new(devices.iter().map(|_| AtomicBool::new(false)).collect());
        let queue = Arc::new(tokio::sync::Mutex::new(wake_rx));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..connections.max(1) {
            let queue = queue.clone();
            let devices = devices.clone();
            let mut conn = routes.conns();
            let progress = progress.clone();
            let failures = failures.clone();
            let reported = reported.clone();
            let signers = signers.clone();
            workers.spawn(async move {
                let mut latency = latency_histogram();
                loop {
                    let wake = queue.lock().await.recv().await;
                    let Some(wake) = wake else { break };
                    if !delay.is_zero() {
                        tokio::time::sleep_until((wake.pushed_at + delay).into()).await;
                    }
                    let d = &devices[wake.index];
                    let signer = signers.as_ref().map(|s| &s[wake.index]);
                    match report_one(&mut conn, wake.index, d, signer).await {
                        Ok(()) => {
                            let us = wake.pushed_at.elapsed().as_micros() as u64;
                            let _ = latency.record(us.max(1));
                            reported[wake.index].store(true, Ordering::Relaxed);
                        }
                        Err(why) => failures.record(format!("report {}: {why}", d.udid)),
                    }
                    progress.reported.fetch_add(1, Ordering::Relaxed);
                }
                latency
            });
        }
        Reports {
            dispatcher,
            workers,
            reported,
        }
    }

    /// Stops taking pushes, lets the workers finish the devices already woken, and collects.
    async fn finish(mut self) -> Answered {
        self.dispatcher.abort();
        let _ = (&mut self.dispatcher).await;
        let mut latency_us = latency_histogram();
        while let Some(result) = self.workers.join_next().await {
            if let Ok(h) = result {
                let _ = latency_us.add(&h);
            }
        }
        Answered {
            reported: self
                .reported
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .collect(),
            latency_us,
        }
    }
}

fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    // One microsecond to one hour, three significant digits: the bounds are valid constants.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What woken device `index` does: Idle, then acknowledge each command it is given until the
/// server answers with an empty body (the [exchange](exchange::exchange)). Each of these
/// requests goes to the node the routes choose for it, so with several nodes an Idle and the
/// Acknowledged after it may reach different nodes, as behind a load balancer.
async fn report_one(
    conn: &mut NodeConns,
    index: usize,
    d: &SimDevice,
    signer: Option<&DeviceSigner>,
) -> Result<(), String> {
    const MAX_COMMANDS: usize = 8;
    let answered =
        exchange::exchange(conn, index, d, signer, MAX_COMMANDS, |c| d.acknowledged(c)).await?;
    if answered.is_empty() {
        return Err("no command queued after the push".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct DeviceRow {
    udid: String,
    state: String,
}

/// Reads the device list. `lost`: reported devices not `responded`; `misplaced`: devices not in
/// the state their role requires (offline may be pending or unreachable).
async fn verify(
    admin: &AdminClient,
    devices: &[SimDevice],
    reported: &[bool],
) -> Result<(u64, u64), FleetError> {
    let body = admin
        .call(Method::GET, "/v1/devices", None)
        .await
        .map_err(|e| admin_err("GET /v1/devices", e))?;
    let rows: Vec<DeviceRow> =
        serde_json::from_slice(&body).map_err(|e| admin_err("GET /v1/devices", e))?;
    let states: HashMap<String, String> = rows.into_iter().map(|r| (r.udid, r.state)).collect();
    let mut lost = 0;
    let mut misplaced = 0;
    for (d, reported) in devices.iter().zip(reported) {
        let state = states.get(&d.udid).map(String::as_str);
        if *reported && state != Some("responded") {
            lost += 1;
        }
        let fits = match d.role {
            Role::Online => state == Some("responded"),
            Role::Offline => matches!(state, Some("pending" | "unreachable")),
            Role::Unregistered => state == Some("unregistered"),
        };
        if !fits {
            misplaced += 1;
        }
    }
    Ok((lost, misplaced))
}
