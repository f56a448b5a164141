//! `magicpush-loadtest demo`: a small live fleet behind a real server, until Ctrl-C (or
//! `--for-s`), for the browser console and its tests. Announces itself on stdout, one line
//! each: `server URL`, `api-key-file PATH`, `data-dir PATH`, `server-pid PID`,
//! `ready N devices enrolled`, `console: URL/ui/`; with `--json`, a summary as the last line.
//! Its server has `--public-url` its own address, so that the console hands out enrollment
//! invitations (`POST /v1/enrollments`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::fleet::live::{self, LiveConfig};

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address the server listens on.
    #[arg(long, default_value = "127.0.0.1:28080")]
    listen: SocketAddr,
    /// The server's data directory (kept). Default: a temporary directory, removed at exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory with the fleet's certificates (written there if missing). Default: a
    /// temporary directory.
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// File with the admin API key: read if it exists, else a fresh random key is written
    /// there (mode 0600). Default: a file in the temporary directory (its path is printed).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Tenants (push certificates, a topic each); the devices are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    topics: u32,
    /// Devices to enroll.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    devices: u32,
    /// Fraction (0..=1) of devices that never answer their pushes.
    #[arg(long, default_value_t = 0.1, value_parser = super::fleet::fraction)]
    offline_fraction: f64,
    /// Fraction (0..=1) of devices whose token APNs answers 410 Unregistered.
    #[arg(long, default_value_t = 0.0, value_parser = super::fleet::fraction)]
    unregistered_fraction: f64,
    /// Milliseconds a pushed device waits before it contacts the server (plus up to as
    /// much again of jitter, at least 200 ms, so that answers arrive spread out).
    #[arg(long, default_value_t = 300)]
    report_delay_ms: u64,
    /// Start one refresh of every device once they are enrolled (POST /v1/refresh
    /// {"all": true}). Without it, nothing is pushed until someone asks.
    #[arg(long)]
    refresh: bool,
    /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
    #[arg(long)]
    for_s: Option<u64>,
    /// Seed of the devices' identities (serial numbers, names, models) and roles.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds before a pushed device that has not answered is `unreachable` (the server's
    /// --unreachable-after).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    unreachable_after_s: u64,
    /// Address of the mock APNs (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    mock_listen: SocketAddr,
    /// Print a JSON summary (pushes, reports, commands answered by type) as the last line.
    #[arg(long)]
    json: bool,
}

/// Runs `demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program to start the server")?;
    let mut config = LiveConfig::new(exe);
    config.listen = args.listen;
    config.data_dir = args.data_dir;
    config.pki_dir = args.pki_dir;
    config.api_key_file = args.api_key_file;
    config.topics = args.topics as usize;
    config.devices = args.devices as usize;
    config.offline_fraction = args.offline_fraction;
    config.unregistered_fraction = args.unregistered_fraction;
    config.report_delay = Duration::from_millis(args.report_delay_ms);
    config.refresh = args.refresh;
    config.run_for = args.for_s.map(Duration::from_secs);
    config.unreachable_after = Duration::from_secs(args.unreachable_after_s);
    config.mock_listen = args.mock_listen;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(live::run(&config, &mut std::io::stdout()))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}
