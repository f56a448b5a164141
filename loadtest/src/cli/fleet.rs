//! `magicpush-loadtest fleet`: a simulated fleet against a magicpush server, end to end, with
//! progress bars and a final table (or one JSON object on the last line with `--json`).
//! Also the hidden `serve-child` subcommand that runs the server under test.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fleet::{self, FleetConfig, FleetDeviceAuth, Phase, Progress, ServerMode};

/// Arguments of `fleet`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Devices to simulate.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Fraction (0..=1) of devices that never answer their push.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    offline_fraction: f64,
    /// Fraction (0..=1) of devices whose token APNs answers 410 Unregistered.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    unregistered_fraction: f64,
    /// Milliseconds a woken device waits before it reports.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Use this running server (http://host:port) instead of starting one. It must push to
    /// this run's mock APNs (--mock-listen) with the certificates in --pki-dir.
    #[arg(long, requires_all = ["api_key", "pki_dir"])]
    server: Option<String>,
    /// Admin API key of --server.
    #[arg(long, env = "MAGICPUSH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Directory with ca.pem, ca.key.pem, server.pem, server.key.pem, push.pem, push.key.pem
    /// (written there if missing; ca.key.pem is needed for --topics above 1). Default: a
    /// fresh set in a temporary directory.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// Address of the mock APNs (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    mock_listen: SocketAddr,
    /// Concurrent device connections.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// Longest wait, in seconds, for the devices to report after the refresh.
    #[arg(long, default_value_t = 120)]
    wait_s: u64,
    /// Seed of the fleet's identities and roles.
    #[arg(long)]
    seed: Option<u64>,
    /// `--push-concurrency` of the started server.
    #[arg(long, default_value_t = 256)]
    push_concurrency: usize,
    /// How the devices authenticate: `signature` (each has its own identity certificate and
    /// signs every check-in and report with Mdm-Signature, as real devices do) or `none` (the
    /// server runs with --insecure-no-device-auth, for comparison).
    #[arg(long, value_enum, default_value = "signature")]
    device_auth: FleetDeviceAuth,
    /// First run the identical workload against a trivial MDM stand-in (answers every
    /// check-in 200, hands each Idle a canned command, stores nothing) and report the floor:
    /// `floor_s`, `wall_s`, `wall_over_floor`. Always on with --json.
    #[arg(long)]
    baseline: bool,
    /// Tenants: push certificates with a topic each (the first is the server's --cert, the
    /// others fresh P-256 ones from the same CA, registered through the admin API's
    /// POST /v1/topics before enrollment); device i enrolls with topic i % T.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    topics: u32,
    /// Give each tenant's devices adjacent UDIDs (sorted tenant by tenant) instead of random
    /// ones. No real fleet looks so: the stores key a device's rows by tenant, then UDID, and
    /// this measures what is still ordered by UDID alone (the UDID index, the device
    /// listings) against that (BENCHMARKS.md §7a). Up to 4,096 tenants.
    #[arg(long)]
    udids_by_tenant: bool,
    /// Server processes (nodes) to start, all on --database-url; each device request
    /// (Authenticate, TokenUpdate, each report after the push) goes to a node chosen at random
    /// with --seed; the refresh is started, and the counts read, through the last node
    /// started. More than 1 needs --database-url.
    #[arg(long, default_value_t = 1, conflicts_with = "server")]
    nodes: usize,
    /// Run the nodes on PostgreSQL at this URL instead of SQLite: in a schema of the run's own
    /// (created, and dropped at the end), with a fresh secrets key shared by the nodes. The
    /// fleet creates the schema over plain TCP (sslmode=disable or prefer; a loopback
    /// server). Not MAGICPUSH_DATABASE_URL, so that a server's own database is never loaded
    /// by accident.
    #[arg(
        long,
        env = "MAGICPUSH_FLEET_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "server"
    )]
    database_url: Option<String>,
    /// Devices get their identity from the server first, as real ones do: the fleet creates
    /// an invitation per tenant (POST /v1/enrollments), each device fetches its profile
    /// (GET /enroll/{id}) and enrolls at /scep with an RSA-2048 key, then signs its
    /// check-ins with the certificate issued. The started server uses its built-in device CA
    /// and --public-url. Key generation is the device's cost, not the server's: a pool of 8
    /// keys is generated once (in parallel, before timing) and device i has key i % 8.
    /// Reported as enroll_s, enrollments, enrollments_per_s (not in wall_s); the floors
    /// (--baseline) run without enrollment, as the stand-in has no SCEP, signing with the
    /// fleet's own RSA-2048 identities (a pool of 8 keys too). Needs --device-auth signature.
    #[arg(long)]
    enroll: bool,
    /// Print one JSON object (last line) instead of progress bars and a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden `serve-child`: passed to `magicpush serve` unchanged.
#[derive(Debug, Args)]
pub struct ServeChildArgs {
    /// `magicpush serve` flags.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

pub(crate) fn fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

/// Runs `serve-child`.
pub fn serve_child(args: ServeChildArgs) -> anyhow::Result<ExitCode> {
    Ok(fleet::server::serve_child_main(&args.args))
}

/// Runs `fleet`.
pub fn run(args: FleetArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program to start the server")?;
    let mut config = FleetConfig::new(args.devices, exe);
    config.offline_fraction = args.offline_fraction;
    config.unregistered_fraction = args.unregistered_fraction;
    config.delay = Duration::from_millis(args.delay_ms);
    config.connections = args.connections.max(1);
    config.wait = Duration::from_secs(args.wait_s);
    config.pki_dir = args.pki_dir;
    config.mock_listen = args.mock_listen;
    config.push_concurrency = args.push_concurrency.max(1);
    config.device_auth = args.device_auth;
    config.baseline = args.baseline || args.json;
    config.topics = args.topics as usize;
    if args.udids_by_tenant && config.topics > fleet::device::UDID_PREFIXES {
        anyhow::bail!(
            "--udids-by-tenant keeps at most {} tenants apart (--topics {})",
            fleet::device::UDID_PREFIXES,
            config.topics
        );
    }
    config.udids_by_tenant = args.udids_by_tenant;
    config.nodes = args.nodes;
    config.database_url = args.database_url;
    if args.enroll && args.device_auth != FleetDeviceAuth::Signature {
        anyhow::bail!(
            "--enroll needs --device-auth signature: enrolled devices sign every check-in with \
             the certificate /scep issued them (--device-auth none has no identities)"
        );
    }
    config.enroll = args.enroll;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(url) = args.server {
        config.server = ServerMode::Existing {
            url,
            api_key: args.api_key.unwrap_or_default(),
        };
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let progress = Arc::new(Progress::default());
    let show = !args.json && std::io::stderr().is_terminal();
    let report = runtime.block_on(async {
        let bars = show.then(|| tokio::spawn(draw(progress.clone())));
        let result = fleet::run(&config, progress.clone()).await;
        progress.mark_done();
        if let Some(bars) = bars {
            let _ = bars.await;
        }
        result
    })?;

    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "fleet: {} devices, {} node(s) on {}",
            report.devices,
            report.nodes.len(),
            report.store.map_or("--server", |s| s.as_str())
        );
        print!("{}", report.table());
        println!(
            "{}",
            if report.passed() {
                "PASS"
            } else {
                "FAIL: lost devices, wrong state or per-topic counts, or failed requests"
            }
        );
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Progress bars on stderr until the run is done.
async fn draw(progress: Arc<Progress>) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let bar = |prefix: &'static str, len: u64| {
        let b = multi.add(ProgressBar::new(len));
        b.set_style(style.clone());
        b.set_prefix(prefix);
        b
    };
    let devices = progress.devices.load(Ordering::Relaxed);
    let mut identify: Option<ProgressBar> = None;
    let mut enroll: Option<ProgressBar> = None;
    let mut push: Option<ProgressBar> = None;
    let mut report: Option<ProgressBar> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let phase = progress.phase();
        let devices = progress.devices.load(Ordering::Relaxed).max(devices);
        if phase == Phase::Identify || (phase > Phase::Identify && identify.is_some()) {
            let b = identify.get_or_insert_with(|| bar("scep", devices));
            if !b.is_finished() {
                b.set_position(progress.identified.load(Ordering::Relaxed));
                if phase > Phase::Identify {
                    b.finish();
                }
            }
        }
        if phase >= Phase::Enroll {
            let b = enroll.get_or_insert_with(|| bar("enroll", devices));
            if !b.is_finished() {
                b.set_position(progress.enrolled.load(Ordering::Relaxed));
                if phase > Phase::Enroll {
                    b.finish();
                }
            }
        }
        if phase >= Phase::PushReport {
            let p = push
                .get_or_insert_with(|| bar("pushed", progress.pushable.load(Ordering::Relaxed)));
            let r = report
                .get_or_insert_with(|| bar("reported", progress.online.load(Ordering::Relaxed)));
            for (b, count) in [(p, &progress.pushed), (r, &progress.reported)] {
                if !b.is_finished() {
                    b.set_position(count.load(Ordering::Relaxed));
                    if phase > Phase::PushReport {
                        b.finish();
                    }
                }
            }
        }
        if phase == Phase::Done {
            break;
        }
    }
    let _ = multi.clear();
}
