//! `magicpush-loadtest checkin-bench`: durable check-ins per second, beside the same server on
//! the in-memory store and a bare HTTP server answering 200.

use std::process::ExitCode;

use crate::bench::checkin::{self, CheckinBenchOptions};

#[derive(Debug, clap::Args)]
pub struct CheckinBenchArgs {
    /// Simulated devices (each sends Authenticate and TokenUpdate).
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CheckinBenchArgs) -> anyhow::Result<ExitCode> {
    let r = checkin::run(&CheckinBenchOptions {
        devices: args.devices.max(1),
        concurrency: args.concurrency.max(1),
    })?;
    println!(
        "{} devices, {} check-ins each mode, {} connections",
        r.devices, r.durable.checkins, r.concurrency
    );
    for m in [&r.trivial, &r.memory, &r.durable] {
        print!(
            "  {:<8} {:>9.0} check-ins/s  ({:.2} s)",
            m.mode, m.checkins_per_s, m.elapsed_s
        );
        match m.writes_per_commit {
            Some(w) => println!("  {w:.1} writes per commit"),
            None => println!(),
        }
    }
    println!(
        "durable / trivial 200 = {:.3}   durable / in-memory = {:.3}",
        r.ratio_durable_vs_trivial, r.ratio_durable_vs_memory
    );
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}
