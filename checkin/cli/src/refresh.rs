//! `magicpush refresh --all | --udid U…`: asks the server to collect device information
//! (enqueue DeviceInformation and push), then shows a progress bar until every pushed device
//! has answered or `--wait` ends, and prints the final counts. Exit status 0 when every
//! pushed device answered; 2 when some did not (the first 20 are listed, then a count).

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
    /// With --all: only one tenant's devices (those enrolled with this push topic).
    #[arg(long, value_name = "TOPIC", requires = "all")]
    topic: Option<String>,
    /// How long to wait for devices to answer (e.g. 30s, 5m). The devices that did not
    /// answer are listed (the first 20, then a count) and the exit status is 2.
    #[arg(long, env = "MAGICPUSH_REFRESH_WAIT", default_value = "5m", value_parser = parse_duration)]
    wait: Duration,
    /// Return right after the server accepted the refresh.
    #[arg(long)]
    no_wait: bool,
}

/// Exit code when the wait ended with devices that had not answered (they are listed).
const EXIT_PENDING: u8 = 2;

pub(crate) fn run(args: RefreshArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let rt = runtime()?;
    rt.block_on(refresh(client, args))
}

async fn refresh(client: AdminClient, args: RefreshArgs) -> anyhow::Result<ExitCode> {
    let request = if args.all {
        match &args.topic {
            Some(topic) => serde_json::json!({ "all": true, "topic": topic }),
            None => serde_json::json!({ "all": true }),
        }
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
    let topic_query = super::devices::query(&[("topic", args.topic.as_deref())]);
    let connectivity = format!("/v1/connectivity{topic_query}");
    loop {
        let pending = if args.all {
            let report = client.get_json(&connectivity).await?;
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
    let report = client.get_json(&connectivity).await?;
    print!("{}", super::report::render(&report));
    let pushed_at = summary["pushed_at"].as_str().unwrap_or_default();
    let silent = if args.all {
        silent_after_refresh_all(&client, pushed_at, args.topic.as_deref()).await?
    } else {
        silent_among(&client, &pushed_udids).await?
    };
    if silent.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} device(s) had not answered after {}:",
        silent.len(),
        magicpush_server::config::format_duration(args.wait)
    );
    for line in silent.iter().take(LISTED) {
        println!("  {line}");
    }
    if silent.len() > LISTED {
        println!(
            "  … and {} more (magicpush devices --state pending, --state unreachable)",
            silent.len() - LISTED
        );
    }
    Ok(ExitCode::from(EXIT_PENDING))
}

/// Devices named after a refresh that did not answer, at most.
const LISTED: usize = 20;

/// The states of a pushed device that has not answered (its push may also have failed).
const SILENT_STATES: [&str; 4] = ["pending", "unreachable", "push_failed", "unregistered"];

/// One line for a device that did not answer: UDID, state, name.
fn silent_line(device: &serde_json::Value) -> String {
    let name = device["device_name"].as_str().unwrap_or("");
    format!(
        "{}  {}  {name}",
        device["udid"].as_str().unwrap_or("?"),
        device["state"].as_str().unwrap_or("?")
    )
    .trim_end()
    .to_owned()
}

/// The listed devices that have not answered.
async fn silent_among(client: &AdminClient, udids: &[String]) -> anyhow::Result<Vec<String>> {
    let mut silent = Vec::new();
    for udid in udids {
        let device = client.get_json(&format!("/v1/devices/{udid}")).await?;
        if device["state"] != "responded" {
            silent.push(silent_line(&device));
        }
    }
    Ok(silent)
}

/// The devices this refresh pushed (their `last_push_at` is its `pushed_at`) that have not
/// answered.
async fn silent_after_refresh_all(
    client: &AdminClient,
    pushed_at: &str,
    topic: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut silent = Vec::new();
    for state in SILENT_STATES {
        let query = super::devices::query(&[("state", Some(state)), ("topic", topic)]);
        let devices = client.get_json(&format!("/v1/devices{query}")).await?;
        for device in devices.as_array().into_iter().flatten() {
            if device["last_push_at"].as_str() == Some(pushed_at) {
                silent.push(silent_line(device));
            }
        }
    }
    Ok(silent)
}
