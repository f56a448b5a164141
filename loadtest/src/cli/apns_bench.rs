//! `magicpush-loadtest apns-bench`: the engine against the mock, optionally beside h2load.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::bench::apns::{self, BenchOptions, External, TopicOrder};

#[derive(Debug, clap::Args)]
pub struct ApnsBenchArgs {
    /// Pushes to send.
    #[arg(long, default_value_t = 100_000)]
    pushes: u64,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Concurrent streams per connection (also the mock's SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = 500)]
    streams: usize,
    /// Mock answer delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Engine worker threads (and h2load -t).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Push to a running APNs (mock) instead of an in-process one; needs --cert, --key, --apns-ca.
    #[arg(long, requires_all = ["cert", "key", "apns_ca"])]
    apns_url: Option<String>,
    /// Push certificate for --apns-url.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// CA of --apns-url's server certificate.
    #[arg(long)]
    apns_ca: Option<PathBuf>,
    /// Also run h2load (nghttp2-client) against the same mock and print engine / h2load.
    #[arg(long)]
    compare_h2load: bool,
    /// Run the engine (and h2load) this many times, alternating, and report the round with
    /// the median ratio; every round is printed too. Damps a noisy machine.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Spread the pushes over this many topics (push certificates from the mock's CA), evenly;
    /// each topic gets `--connections / --topics` connections, at least one.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// How the topics' pushes follow one another: `interleaved` (round robin) or `by-topic`
    /// (each topic's pushes together, as a refresh of every tenant hands them over).
    #[arg(long, value_enum, default_value_t = TopicOrder::Interleaved)]
    order: TopicOrder,
    /// Measure fairness instead: one topic's single pushes (one every 10 ms) on an idle
    /// engine, then while another topic pushes a backlog of --pushes (use --delay-ms 20).
    #[arg(long, conflicts_with_all = ["compare_h2load", "topics", "order", "apns_url"])]
    fairness: bool,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ApnsBenchArgs) -> anyhow::Result<ExitCode> {
    let external = args.apns_url.map(|url| External {
        url,
        cert: args.cert.expect("clap requires --cert"),
        key: args.key.expect("clap requires --key"),
        ca: args.apns_ca.expect("clap requires --apns-ca"),
    });
    let opts = BenchOptions {
        pushes: args.pushes,
        connections: args.connections.max(1),
        streams: args.streams.max(1),
        delay: Duration::from_millis(args.delay_ms),
        threads: args.threads.max(1),
        compare_h2load: args.compare_h2load,
        external,
        rounds: args.rounds.max(1),
        topics: args.topics.max(1),
        order: args.order,
    };
    if args.fairness {
        let f = apns::fairness(&opts)?;
        println!(
            "fairness: a topic's single pushes, median {:.2} ms idle, {:.2} ms while another \
             topic pushes {} (in {:.1} s, delay {} ms) → ratio {:.3}",
            f.idle_p50_ms, f.loaded_p50_ms, f.backlog, f.backlog_s, f.delay_ms, f.ratio
        );
        if args.json {
            println!("{}", serde_json::to_string(&f)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = apns::run(&opts)?;
    if r.rounds.len() > 1 {
        for (i, round) in r.rounds.iter().enumerate() {
            print!("round {}: engine {:.0} pushes/s", i + 1, round.pushes_per_s);
            if let Some(cpu) = round.engine_cpu_us_per_push {
                print!(" ({cpu:.1} µs CPU)");
            }
            if let (Some(h), Some(ratio)) = (round.h2load_per_s, round.ratio_vs_h2load) {
                print!(", h2load {h:.0} req/s → {ratio:.3}");
            }
            println!();
        }
        println!("median round:");
    }
    println!(
        "engine: {} pushes over {} topic(s) × {} connection(s) × {} streams, delay {} ms",
        r.pushes, r.topics, r.connections_per_topic, r.streams, r.delay_ms
    );
    if r.topics > 1 {
        let order = clap::ValueEnum::to_possible_value(&r.order)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        println!("  pushes ordered across topics: {order}");
    }
    println!(
        "  delivered {} failed {} in {:.2} s → {:.0} pushes/s",
        r.delivered, r.failed, r.elapsed_s, r.pushes_per_s
    );
    println!(
        "  latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.p50_ms, r.p99_ms, r.max_ms
    );
    print!("  peak RSS {:.1} MiB", r.peak_rss_mb);
    match r.bytes_per_held_push {
        Some(b) => println!(
            "  (≤ {b:.0} bytes per push held, {} held at most)",
            r.max_held
        ),
        None => println!(),
    }
    if let (Some(bound), Some(ratio)) = (r.bound_per_s, r.ratio_vs_bound) {
        println!("  bound connections×streams/delay {bound:.0}/s → ratio {ratio:.3}");
    }
    if let Some(cpu) = r.engine_cpu_us_per_push {
        println!("  CPU {cpu:.1} µs per push");
    }
    if let (Some(h), Some(ratio)) = (r.h2load_per_s, r.ratio_vs_h2load) {
        println!("h2load: {h:.0} req/s → engine / h2load = {ratio:.3}");
    }
    if let Some(ratio) = r.h2load_ratio_vs_bound {
        println!(
            "  h2load / bound = {ratio:.3} (what this mock and machine allow a reference client)"
        );
    }
    if let (Some(cpu), Some(ratio)) = (r.h2load_cpu_us_per_push, r.cpu_ratio_vs_h2load) {
        println!(
            "  h2load CPU {cpu:.1} µs per request → CPU efficiency engine vs h2load = {ratio:.3}"
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(if r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
