//! The `magicpush-loadtest` command line: one module per subcommand, wired here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod mock_apns;

#[derive(Debug, Parser)]
#[command(
    name = "magicpush-loadtest",
    version,
    about = "Mock APNs, benchmarks and a simulated device fleet"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a mock APNs (HTTP/2 + TLS) with fault injection until Ctrl-C.
    MockApns(mock_apns::MockApnsArgs),
}

/// Parses the command line, runs the subcommand, and maps errors to a message and exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::MockApns(args) => mock_apns::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
