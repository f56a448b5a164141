//! `magicpush refresh --all | --udid U…`: asks the server to collect device information
//! (enqueue DeviceInformation and push), then shows a progress bar until every pushed device
//! has answered or `--wait` ends, and prints the final counts.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};

use super::remote::{runtime, RemoteArgs};
use magicpush_server::client::AdminClient;
use magicpush_server::config::parse_duration;

/// Refreshes devices and waits for their answers.
#[derive(Debug, clap::Args)]
pub(crate) struct RefreshArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Refresh every enrolled device.
    #[arg(long, conflicts_with = "udids", required_unless_present = "udids")]
    all: bool,
    /// Refresh this device (repeatable).
    #[arg(long = "udid", value_name = "UDID")]
    udids: Vec<String>,
    /// How long to wait for devices to answer (e.g. 30s, 5m).
    #[arg(long, env = "MAGICPUSH_REFRESH_WAIT", default_value = "5m", value_parser = parse_duration)]
    wait: Duration,
    /// Return right after the server accepted the refresh.
    #[arg(long)]
    no_wait: bool,
}

/// Exit code when the wait ended with devices still pending.
const EXIT_PENDING: u8 = 2;

pub(crate) fn run(args: RefreshArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let rt = runtime()?;
    rt.block_on(refresh(client, args))
}

async fn refresh(client: AdminClient, args: RefreshArgs) -> anyhow::Result<ExitCode> {
    let request = if args.all {
        serde_json::json!({ "all": true })
    } else {
        serde_json::json!({ "udids": args.udids })
    };
    let summary = client
        .send_json(Method::POST, "/v1/refresh", &request)
        .await
        .context("refresh request failed")?;
    let pushing = summary["pushing"].as_u64().unwrap_or(0);
    println!(
        "refresh accepted: {pushing} device(s) to push, {} command(s) enqueued, {} already queued, {} skipped",
        summary["enqueued"].as_u64().unwrap_or(0),
        summary["already_queued"].as_u64().unwrap_or(0),
        summary["skipped"].as_object().map_or(0, |s| s.values().filter_map(|v| v.as_u64()).sum::<u64>()),
    );
    if let Some(skipped) = summary["skipped"].as_object() {
        for (why, n) in skipped {
            if n.as_u64().unwrap_or(0) > 0 {
                println!("  skipped ({why}): {n}");
            }
        }
    }
    if pushing == 0 || args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let bar = ProgressBar::new(pushing);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} answered {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let deadline = Instant::now() + args.wait;
    let pushed_udids: Vec<String> = summary["pushed_udids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut pending;
    loop {
        pending = if args.all {
            let report = client.get_json("/v1/connectivity").await?;
            report["states"]["pending"].as_u64().unwrap_or(0)
        } else {
            let mut n = 0;
            for udid in &pushed_udids {
                let device = client.get_json(&format!("/v1/devices/{udid}")).await?;
                if device["state"] == "pending" {
                    n += 1;
                }
            }
            n
        };
        bar.set_position(pushing.saturating_sub(pending));
        bar.set_message(format!("({pending} pending)"));
        if pending == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bar.finish_and_clear();
    let report = client.get_json("/v1/connectivity").await?;
    print!("{}", super::report::render(&report));
    if pending > 0 {
        println!(
            "{pending} device(s) had not answered after {}",
            magicpush_server::config::format_duration(args.wait)
        );
        return Ok(ExitCode::from(EXIT_PENDING));
    }
    Ok(ExitCode::SUCCESS)
}
