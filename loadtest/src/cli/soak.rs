//! `magicpush-loadtest soak`: good check-ins' latency with and without idle connections and
//! slow bodies holding the server, then concurrent plist bombs and the server's peak RSS.

use std::process::ExitCode;

use anyhow::Context;

use crate::bench::soak::{self, SoakOptions};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Connections left open and idle during the attack.
    #[arg(long, default_value_t = 2000)]
    idle: usize,
    /// Clients trickling request bodies during the attack.
    #[arg(long, default_value_t = 200)]
    slow: usize,
    /// Good check-ins per phase.
    #[arg(long, default_value_t = 4000)]
    checkins: usize,
    /// Concurrent good clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Concurrent 1 MiB plist bombs.
    #[arg(long, default_value_t = 16)]
    bombs: usize,
    /// Seconds the attack runs before the good check-ins are measured (past the server's
    /// 5 s body grace period, so slow bodies are being cut off meanwhile).
    #[arg(long, default_value_t = 6)]
    hold_s: u64,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find this program to start the server")?;
    let r = soak::run(&SoakOptions {
        exe,
        idle: args.idle,
        slow: args.slow,
        checkins: args.checkins.max(2),
        concurrency: args.concurrency.max(1),
        bombs: args.bombs,
        hold: std::time::Duration::from_secs(args.hold_s),
    })?;
    for (name, l) in [("baseline", &r.baseline), ("under attack", &r.under_attack)] {
        println!(
            "{name:<13} {} check-ins ({} failed) p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({:.2} s)",
            l.checkins, l.failed, l.p50_ms, l.p99_ms, l.max_ms, l.elapsed_s
        );
    }
    println!(
        "p99 under attack / baseline = {:.2}   ({} idle connections held, {} still open; {} slow bodies cut off)",
        r.p99_ratio, r.idle_connections, r.idle_still_open, r.slow_cut_off
    );
    println!(
        "{} bombs answered {:?}; server peak RSS {:?} MiB before, {:?} MiB after",
        r.bombs,
        r.bomb_statuses,
        r.server_peak_rss_mb_before_bombs,
        r.server_peak_rss_mb_after_bombs
    );
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    let ok = r.baseline.failed == 0
        && r.under_attack.failed == 0
        && r.bomb_statuses.iter().all(|s| *s == 400);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
