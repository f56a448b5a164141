//! `magicpush migrate --database-url URL`: applies the PostgreSQL schema's migrations this
//! build has and the database lacks, then exits. `serve --database-url` does the same at
//! start (under the same advisory lock, so nodes starting together migrate once); this lets
//! an operator migrate before rolling out new servers.

use std::process::ExitCode;

use anyhow::Context;

use super::secret_arg::SecretArg;

/// Migrates a PostgreSQL database's schema.
#[derive(Debug, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The database (`postgres://user:password@host/db?sslmode=verify-full`).
    #[arg(long, env = "MAGICPUSH_DATABASE_URL")]
    database_url: SecretArg,
}

pub(crate) fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let applied = runtime
        .block_on(magicpush_postgres::migrate(args.database_url.expose()))
        .context("cannot migrate the database (--database-url)")?;
    println!(
        "schema version {}: {applied} migration{} applied",
        magicpush_postgres::SCHEMA_VERSION,
        if applied == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}
