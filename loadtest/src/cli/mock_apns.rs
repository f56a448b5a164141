//! `magicpush-loadtest mock-apns`: runs the mock APNs until Ctrl-C.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::mock_apns::{judge::valid_token, ClientAuth, MockApns, MockConfig};

/// Arguments of `mock-apns`.
#[derive(Debug, Args)]
pub struct MockApnsArgs {
    /// Address to listen on, e.g. 127.0.0.1:2197 (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// CA that issues the accepted client (push) certificates (PEM).
    #[arg(long)]
    client_ca: PathBuf,
    /// Whether clients must present a certificate (`optional` lets h2load connect).
    #[arg(long, value_enum, default_value_t = ClientAuthArg::Required)]
    client_auth: ClientAuthArg,
    /// SETTINGS_MAX_CONCURRENT_STREAMS to advertise and enforce.
    #[arg(long, default_value_t = 1000)]
    max_streams: u32,
    /// Delay every answer by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// File with one hex device token per line, answered 410 Unregistered.
    #[arg(long)]
    unregistered: Option<PathBuf>,
    /// Fraction (0..=1) of valid requests answered 429 TooManyRequests.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    rate_429: f64,
    /// Fraction (0..=1) of requests answered 503 ServiceUnavailable.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    rate_503: f64,
    /// Fraction (0..=1) of streams reset with REFUSED_STREAM.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    reset_rate: f64,
    /// Send a graceful GOAWAY after every N requests on a connection.
    #[arg(long)]
    goaway_every: Option<u64>,
    /// Abruptly close every connection every T seconds.
    #[arg(long)]
    drop_every_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClientAuthArg {
    Required,
    Optional,
}

fn fraction(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not between 0 and 1"))
    }
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// Reads a file of hex tokens, one a line; blank lines and `#` comments are skipped.
pub fn read_tokens(path: &PathBuf) -> anyhow::Result<HashSet<String>> {
    let text = read(path, "unregistered tokens file")?;
    let mut tokens = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !valid_token(line) {
            bail!(
                "{}:{}: {line:?} is not a hex device token",
                path.display(),
                n + 1
            );
        }
        tokens.insert(line.to_ascii_lowercase());
    }
    Ok(tokens)
}

impl MockApnsArgs {
    fn config(&self) -> anyhow::Result<MockConfig> {
        let drop_every = match self.drop_every_s {
            None => None,
            Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
            Some(s) => bail!("--drop-every-s must be a positive number of seconds, not {s}"),
        };
        if self.goaway_every == Some(0) {
            bail!("--goaway-every must be at least 1");
        }
        Ok(MockConfig {
            client_auth: match self.client_auth {
                ClientAuthArg::Required => ClientAuth::Required,
                ClientAuthArg::Optional => ClientAuth::Optional,
            },
            max_streams: self.max_streams,
            delay: Duration::from_millis(self.delay_ms),
            rate_429: self.rate_429,
            rate_503: self.rate_503,
            reset_rate: self.reset_rate,
            goaway_every: self.goaway_every,
            drop_every,
            unregistered: match &self.unregistered {
                Some(path) => read_tokens(path)?,
                None => HashSet::new(),
            },
            ..MockConfig::default()
        })
    }
}

/// Runs the mock until Ctrl-C, then prints its statistics.
pub fn run(args: MockApnsArgs) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config = args.config()?;
    let cert = read(&args.cert, "server certificate")?;
    let key = read(&args.key, "server key")?;
    let client_ca = read(&args.client_ca, "client CA")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    runtime.block_on(async move {
        let unregistered = config.unregistered.len();
        let handle = MockApns::start(args.listen, &cert, &key, &client_ca, config).await?;
        eprintln!(
            "mock APNs listening on {} (client auth {:?}, max streams {}, {} unregistered tokens); Ctrl-C stops",
            handle.url(),
            args.client_auth,
            args.max_streams,
            unregistered
        );
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        let stats = handle.stats();
        handle.shutdown().await;
        println!("{stats}");
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_token_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.txt");
        let token = "AB".repeat(32);
        std::fs::write(
            &path,
            format!("# unregistered\n{token}\n\n  {}  \n", "cd".repeat(40)),
        )
        .unwrap();
        let tokens = read_tokens(&path).unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.contains(&token.to_ascii_lowercase()));
        std::fs::write(&path, "nothex\n").unwrap();
        let err = read_tokens(&path).unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
    }

    #[test]
    fn rejects_bad_fractions() {
        assert_eq!(fraction("0.25"), Ok(0.25));
        assert!(fraction("1.5").is_err());
        assert!(fraction("x").is_err());
    }
}
