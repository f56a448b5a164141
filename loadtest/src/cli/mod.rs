//! The `magicpush-loadtest` command line: one module per subcommand, wired here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod apns_bench;
pub mod checkin_bench;
pub mod demo;
pub mod fleet;
pub mod mock_apns;
pub mod soak;

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
    /// Benchmark the engine against the mock APNs (optionally beside h2load).
    ApnsBench(apns_bench::ApnsBenchArgs),
    /// Benchmark durable check-ins against the in-memory store and a trivial 200 server.
    CheckinBench(checkin_bench::CheckinBenchArgs),
    /// Simulate a device fleet against a magicpush server: enroll, refresh all, devices
    /// answer their pushes; report rates, latency, state counts, lost devices and memory.
    Fleet(fleet::FleetArgs),
    /// A small live fleet behind a real server until Ctrl-C: devices enrolled through the
    /// check-in endpoints answer every push; for the browser console and its tests.
    Demo(demo::DemoArgs),
    /// Good check-ins' latency while idle sockets, slow bodies and plist bombs hit the server.
    Soak(soak::SoakArgs),
    /// Run `magicpush serve` (the fleet's server under test; exits when stdin closes).
    #[command(hide = true)]
    ServeChild(fleet::ServeChildArgs),
}

/// Parses the command line, runs the subcommand, and maps errors to a message and exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {
        Command::MockApns(args) => mock_apns::run(args),
        Command::ApnsBench(args) => apns_bench::run(args),
        Command::CheckinBench(args) => checkin_bench::run(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Soak(args) => soak::run(args),
        Command::ServeChild(args) => fleet::serve_child(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
