//! The `magicpush` command line: one module per subcommand, wired here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cert;

#[derive(Debug, Parser)]
#[command(name = "magicpush", version, about = "APNs MDM push engine and check-in server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect MDM push certificates and check renewals.
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

/// Parses the command line, runs the subcommand, and maps errors to a message and exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cert(cmd) => cert::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
