//! `magicpush devices [--csv | --json] [--search Q] [--limit N [--cursor C]]`: the device
//! list from a running server, whole or a page at a time;
//! `magicpush devices delete UDID` and `magicpush devices delete --all --confirm TOPIC` (the
//! new-topic procedure).

use std::process::ExitCode;

use super::remote::{cell, runtime, RemoteArgs};

/// Lists enrolled devices with their connectivity state.
#[derive(Debug, clap::Args)]
pub(crate) struct DevicesArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the CSV export (device name, model, OS version, serial, collected at, enrolled
    /// at, state, last seen).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print the raw JSON array.
    #[arg(long)]
    json: bool,
    /// Only devices in this state (responded, pending, unreachable, unregistered,
    /// push_failed, never_pushed, no_token).
    #[arg(long)]
    state: Option<String>,
    /// Only one tenant's devices (those enrolled with this push topic).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Only devices whose UDID, serial number or name holds this text (ignoring case).
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,
    /// One page of at most N devices (1 to 1000) instead of the whole list; the next page's
    /// cursor is printed after it.
    #[arg(long, value_name = "N", conflicts_with = "csv")]
    limit: Option<u32>,
    /// With --limit: the page after this cursor (a previous page's "next cursor").
    #[arg(long, requires = "limit")]
    cursor: Option<String>,
    #[command(subcommand)]
    action: Option<DevicesAction>,
}

#[derive(Debug, clap::Subcommand)]
enum DevicesAction {
    /// Delete one device, or every device (`--all --confirm TOPIC`, when a lost Apple ID
    /// forces a new topic: every device must then re-enroll).
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
struct DeleteArgs {
    /// The device to delete.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    udid: Option<String>,
    /// Delete every device of one tenant (and their queues).
    #[arg(long, requires = "confirm")]
    all: bool,
    /// The tenant's push topic, to confirm --all: only devices enrolled with it are deleted.
    #[arg(long, value_name = "TOPIC")]
    confirm: Option<String>,
}

const COLUMNS: &[(&str, &str)] = &[
    ("UDID", "udid"),
    ("NAME", "device_name"),
    ("MODEL", "model_name"),
    ("OS", "os_version"),
    ("SERIAL", "serial_number"),
    ("STATE", "state"),
    ("LAST SEEN", "last_seen_at"),
];

pub(crate) fn run(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let rt = runtime()?;
    if let Some(DevicesAction::Delete(delete)) = &args.action {
        let path = match (&delete.udid, &delete.confirm) {
            (Some(udid), _) => format!("/v1/devices/{}", encode(udid)),
            (None, Some(topic)) => format!("/v1/devices?all=true&confirm={}", encode(topic)),
            (None, None) => anyhow::bail!("give a UDID, or --all --confirm TOPIC"),
        };
        let answer = rt.block_on(client.call(http::Method::DELETE, &path, None))?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        match answer.get("deleted") {
            Some(serde_json::Value::Number(n)) => println!(
                "deleted {n} device(s); they must re-enroll (the tenant's certificate may now be removed with DELETE /v1/pushcert?topic=…, and one with another topic registered)"
            ),
            Some(v) => println!("deleted {}", cell(Some(v))),
            None => println!("{answer}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let limit = args.limit.map(|n| n.to_string());
    let query = query(&[
        ("state", args.state.as_deref()),
        ("topic", args.topic.as_deref()),
        ("q", args.search.as_deref()),
        ("limit", limit.as_deref()),
        ("cursor", args.cursor.as_deref()),
    ]);
    if args.csv {
        let text = rt.block_on(client.get_text(&format!("/v1/devices.csv{query}")))?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let devices = rt.block_on(client.get_json(&format!("/v1/devices{query}")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(ExitCode::SUCCESS);
    }
    // A page (with --limit) is an object around the list and the next page's cursor.
    let next_cursor = args.limit.map(|_| devices.get("next_cursor").cloned());
    let rows: Vec<Vec<String>> = devices
        .get("devices")
        .unwrap_or(&devices)
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| COLUMNS.iter().map(|(_, key)| cell(d.get(*key))).collect())
                .collect()
        })
        .unwrap_or_default();
    print!(
        "{}",
        table(COLUMNS.iter().map(|(h, _)| *h).collect(), &rows)
    );
    println!("{} device(s)", rows.len());
    match next_cursor {
        Some(Some(serde_json::Value::String(cursor))) => {
            println!(
                "next page: --limit {} --cursor {cursor}",
                limit.unwrap_or_default()
            )
        }
        Some(_) => println!("(the last page)"),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `?name=value&…` of the parameters given (empty when none is).
pub(crate) fn query(params: &[(&str, Option<&str>)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", encode((*value)?))))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(headers: Vec<&str>, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(c);
            if i + 1 < cells.len() {
                text.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(c.chars().count()),
                ));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers);
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
