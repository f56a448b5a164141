//! `magicpush push`: send MDM pushes through the engine and summarise what happened.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use magicpush_engine::cert::PushCertificate;
use magicpush_engine::{Client, DevicePush, DeviceToken, Endpoint};

use super::push_cert::CertFlags;
use super::secret_arg::SecretArg;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["token", "tokens_file"])))]
pub(crate) struct PushArgs {
    /// MDM push certificate: PEM with --key, one PEM file holding both, or PKCS#12 (.p12;
    /// its password from --cert-password-file or MAGICPUSH_P12_PASSWORD).
    #[arg(long, env = "MAGICPUSH_CERT")]
    cert: PathBuf,
    /// Private key of a PEM certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "MAGICPUSH_KEY")]
    key: Option<PathBuf>,
    /// File holding the password of a PKCS#12 --cert (its first line).
    #[arg(long, env = "MAGICPUSH_CERT_PASSWORD_FILE")]
    cert_password_file: Option<PathBuf>,
    /// Password of a PKCS#12 --cert. Prefer MAGICPUSH_P12_PASSWORD or --cert-password-file.
    #[arg(long, env = "MAGICPUSH_P12_PASSWORD", hide_env_values = true)]
    cert_password: Option<SecretArg>,
    /// APNs endpoint: production (default), sandbox, or https://host:port.
    #[arg(long, env = "MAGICPUSH_APNS_URL", default_value = "production")]
    apns_url: Endpoint,
    /// Extra CA (PEM) to trust for the APNs endpoint, e.g. a mock's.
    #[arg(long, env = "MAGICPUSH_APNS_CA")]
    apns_ca: Option<PathBuf>,
    /// HTTP proxy for the APNs connections, http://[user:password@]host[:port] (port 80 when
    /// absent): each connection is a CONNECT tunnel with TLS to APNs inside. Give a password
    /// through MAGICPUSH_APNS_PROXY rather than the command line, which every local user can
    /// see; logs and errors show it masked.
    #[arg(long, env = "MAGICPUSH_APNS_PROXY", hide_env_values = true)]
    apns_proxy: Option<SecretArg>,
    /// One device token, hex.
    #[arg(long, requires = "magic")]
    token: Option<String>,
    /// The device's PushMagic.
    #[arg(long, requires = "token")]
    magic: Option<String>,
    /// A file of lines `<hex token> <push magic>` (blank lines and lines starting with # are skipped).
    #[arg(long, conflicts_with_all = ["token", "magic"])]
    tokens_file: Option<PathBuf>,
    /// HTTP/2 connections to APNs.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Per-push deadline in seconds.
    #[arg(long, default_value_t = 30)]
    deadline_s: u64,
    /// Print one JSON object on the last line: {"sent", "delivered", "failed": {reason: n}, "elapsed_s"}.
    #[arg(long)]
    json: bool,
}

/// Exit status when every push was accepted: 0; when some failed: 2; errors: 1.
const SOME_FAILED: u8 = 2;

pub(crate) fn run(args: PushArgs) -> anyhow::Result<ExitCode> {
    let cert = super::push_cert::load(&CertFlags {
        cert: &args.cert,
        key: args.key.as_deref(),
        password_file: args.cert_password_file.as_deref(),
        password: args.cert_password.as_ref(),
    })?;
    let pushes = match (&args.token, &args.magic, &args.tokens_file) {
        (Some(token), Some(magic), None) => {
            let token = DeviceToken::from_hex(token)?;
            vec![DevicePush::new(token, magic.clone())]
        }
        (None, None, Some(file)) => read_tokens_file(file)?,
        _ => bail!("give either --token and --magic, or --tokens-file"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(send_all(args, cert, pushes))
}

async fn send_all(
    args: PushArgs,
    cert: PushCertificate,
    pushes: Vec<DevicePush>,
) -> anyhow::Result<ExitCode> {
    let mut builder = Client::builder()
        .certificate(cert)
        .endpoint(args.apns_url.clone())
        .connections(args.connections)
        .deadline(Duration::from_secs(args.deadline_s));
    if let Some(url) = &args.apns_proxy {
        builder = builder.proxy(url.expose()).context("--apns-proxy")?;
    }
    if let Some(ca) = &args.apns_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        builder = builder
            .trust_anchor_pem(&pem)
            .with_context(|| format!("reading {}", ca.display()))?;
    }
    let client = builder.build()?;
    let single = pushes.len() == 1 && args.tokens_file.is_none();
    let bar = if single || args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(pushes.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} pushes  {per_sec}  eta {eta}  {msg}",
            )
            .expect("static template is valid"),
        );
        bar
    };
    let mut bulk = client.push_bulk(pushes);
    while let Some(item) = bulk.next().await {
        bar.inc(1);
        match &item.result {
            Ok(delivered) if single => println!(
                "delivered to {} (apns-id {}, {} ms)",
                item.token,
                delivered.apns_id,
                delivered.latency.as_millis()
            ),
            Err(e) if single || !args.json => {
                bar.suspend(|| eprintln!("{}: {e}", item.token));
            }
            _ => {}
        }
    }
    bar.finish_and_clear();
    let summary = bulk.summary();
    client.shutdown().await;
    print_summary(
        summary.sent,
        summary.delivered,
        &summary.failed,
        summary.elapsed,
        args.json,
    );
    Ok(if summary.delivered == summary.sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(SOME_FAILED)
    })
}

fn print_summary(
    sent: u64,
    delivered: u64,
    failed: &BTreeMap<String, u64>,
    elapsed: Duration,
    json: bool,
) {
    let secs = elapsed.as_secs_f64();
    if json {
        let line = serde_json::json!({
            "sent": sent,
            "delivered": delivered,
            "failed": failed,
            "elapsed_s": (secs * 1000.0).round() / 1000.0,
        });
        println!("{line}");
        return;
    }
    println!("sent:      {sent}");
    println!("delivered: {delivered}");
    if failed.is_empty() {
        println!("failed:    0");
    } else {
        println!("failed:    {}", failed.values().sum::<u64>());
        for (reason, n) in failed {
            println!("  {reason:<24} {n}");
        }
    }
    let rate = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    println!("elapsed:   {secs:.3} s ({rate:.0} pushes/s)");
}

/// Reads and validates the whole file before anything is sent, so a bad line never leaves a
/// half-sent batch behind.
fn read_tokens_file(path: &Path) -> anyhow::Result<Vec<DevicePush>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut pushes = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if let Some(push) =
            parse_line(&line).with_context(|| format!("{}:{}: {line:?}", path.display(), i + 1))?
        {
            pushes.push(push);
        }
    }
    if pushes.is_empty() {
        bail!("{} holds no `<token> <push magic>` lines", path.display());
    }
    Ok(pushes)
}

fn parse_line(line: &str) -> anyhow::Result<Option<DevicePush>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let token = parts.next().expect("non-empty line has a first word");
    let Some(magic) = parts.next() else {
        bail!("expected `<hex token> <push magic>`, found only one field");
    };
    if parts.next().is_some() {
        bail!("expected two fields, found more");
    }
    Ok(Some(DevicePush::new(DeviceToken::from_hex(token)?, magic)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines() {
        let p = parse_line("  AABB  magic-1 ").unwrap().unwrap();
        assert_eq!(p.token.as_hex(), "aabb");
        assert_eq!(p.magic, "magic-1");
        assert!(parse_line("# comment").unwrap().is_none());
        assert!(parse_line("").unwrap().is_none());
        assert!(parse_line("aabb").is_err());
        assert!(parse_line("zz magic").is_err());
        assert!(parse_line("aabb m extra").is_err());
    }
}
