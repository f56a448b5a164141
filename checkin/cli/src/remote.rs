//! What the admin-API subcommands (`devices`, `refresh`, `report`) share: where the server is
//! and how to authenticate.

use std::path::PathBuf;

use anyhow::Context;

use super::secret_arg::SecretArg;
use magicpush_server::client::AdminClient;

/// `--server`, `--api-key` / `--api-key-file`, `--ca` (global: they may follow a
/// subcommand's own subcommand, as in `magicpush devices delete … --server URL`).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Base URL of the running server's admin API.
    #[arg(
        long,
        global = true,
        env = "MAGICPUSH_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) server: String,
    /// The admin API key the server was started with. Prefer MAGICPUSH_API_KEY or
    /// --api-key-file: a command line is visible to every local user.
    #[arg(long, global = true, env = "MAGICPUSH_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<SecretArg>,
    /// File holding the admin API key (its first line); it wins over --api-key /
    /// MAGICPUSH_API_KEY.
    #[arg(long, global = true, env = "MAGICPUSH_API_KEY_FILE")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// PEM file with a private CA to trust for an https:// server, besides the public web
    /// roots (trusted by default).
    #[arg(long, global = true, env = "MAGICPUSH_CA")]
    pub(crate) ca: Option<PathBuf>,
}

/// The first line of a key file, or an error naming the file.
pub(crate) fn read_key_file(path: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_owned();
    if key.is_empty() {
        anyhow::bail!("{flag} {} is empty", path.display());
    }
    Ok(key)
}

impl RemoteArgs {
    fn api_key(&self) -> anyhow::Result<Option<String>> {
        match &self.api_key_file {
            Some(path) => read_key_file(path, "--api-key-file").map(Some),
            None => Ok(self.api_key.as_ref().map(|k| k.expose().to_owned())),
        }
    }

    pub(crate) fn client(&self) -> anyhow::Result<AdminClient> {
        let ca = match &self.ca {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => None,
        };
        Ok(AdminClient::new(
            &self.server,
            self.api_key()?,
            ca.as_deref(),
        )?)
    }
}

/// A current-thread runtime for one subcommand.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A JSON value as display text: strings bare, null as "-".
pub(crate) fn cell(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(s)) if s.is_empty() => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}
