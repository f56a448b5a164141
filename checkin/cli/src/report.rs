//! `magicpush report`: the connectivity report (counts per state, push→report latency).

use std::process::ExitCode;

use super::remote::{cell, runtime, RemoteArgs};

/// Prints device counts per connectivity state and latency percentiles.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    /// Only one tenant's devices (those enrolled with this push topic).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
}

/// The states in the order the report lists them.
pub(crate) const STATES: &[&str] = &[
    "responded",
    "pending",
    "unreachable",
    "unregistered",
    "push_failed",
    "never_pushed",
    "no_token",
];

pub(crate) fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let path = format!(
        "/v1/connectivity{}",
        super::devices::query(&[("topic", args.topic.as_deref())])
    );
    let report = runtime()?.block_on(client.get_json(&path))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&report));
    Ok(ExitCode::SUCCESS)
}

/// The report as text.
pub(crate) fn render(report: &serde_json::Value) -> String {
    let mut out = String::from("state          devices\n");
    let states = &report["states"];
    let mut total = 0;
    for state in STATES {
        let n = states[*state].as_u64().unwrap_or(0);
        total += n;
        out.push_str(&format!("{state:<14} {n}\n"));
    }
    out.push_str(&format!("{:<14} {total}\n", "total"));
    let latency = &report["latency_ms"];
    out.push_str("push→report latency (ms):");
    for p in ["p50", "p90", "p99", "max"] {
        if latency.get(p).is_some() {
            out.push_str(&format!(" {p}={}", cell(latency.get(p))));
        }
    }
    out.push('\n');
    out
}
