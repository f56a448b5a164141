//! What the admin-API subcommands (`devices`, `refresh`, `report`) share: where the server is
//! and how to authenticate.

use std::path::PathBuf;

use anyhow::Context;

use crate::http::client::AdminClient;

/// `--server`, `--api-key`, `--ca`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Base URL of the running server's admin API.
    #[arg(
        long,
        env = "MAGICPUSH_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) server: String,
    /// The admin API key the server was started with.
    #[arg(long, env = "MAGICPUSH_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// PEM file with the CA that signed the server's TLS certificate (for https:// URLs).
    #[arg(long, env = "MAGICPUSH_CA")]
    pub(crate) ca: Option<PathBuf>,
}

impl RemoteArgs {
    pub(crate) fn client(&self) -> anyhow::Result<AdminClient> {
        let ca = match &self.ca {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => None,
        };
        Ok(AdminClient::new(
            &self.server,
            self.api_key.clone(),
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
