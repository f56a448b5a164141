//! The `magicpush` command line: one module per subcommand, wired here.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ca;
mod cert;
mod devices;
mod enrollments;
mod lock;
mod migrate;
mod push;
mod push_cert;
mod refresh;
mod remote;
mod report;
mod secret_arg;
mod serve;
mod topics;

#[derive(Debug, Parser)]
#[command(
    name = "magicpush",
    version,
    about = "APNs MDM push engine and check-in server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The built-in device CA (`ca show`: its certificate and fingerprints).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Inspect MDM push certificates and check renewals.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Send MDM pushes to one device or a file of them, and summarise the outcomes.
    Push(push::PushArgs),
    /// Run the MDM check-in server (device endpoints, admin API, scheduled collection).
    Serve(Box<serve::ServeArgs>),
    /// Bring a PostgreSQL database's schema up to this version's (what `serve
    /// --database-url` does at start), and nothing else.
    Migrate(migrate::MigrateArgs),
    /// List devices and their connectivity state from a running server.
    Devices(devices::DevicesArgs),
    /// A running server's enrollment invitations: list them, create one (its URL is what a
    /// device opens), withdraw one.
    Enrollments(enrollments::EnrollmentsArgs),
    /// Collect device information now (push and wait for the devices to answer).
    Refresh(refresh::RefreshArgs),
    /// Print the connectivity report of a running server.
    Report(report::ReportArgs),
    /// List a running server's tenants (one per push certificate topic), add one, or name
    /// one.
    Topics(topics::TopicsArgs),
}

/// Parses the command line, runs the subcommand, and maps errors to a message and exit code.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// [`main`] with the given arguments (the first is the program name). Lets another binary run
/// `magicpush serve` unchanged in a process of its own (the load test's server).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
        Command::Cert(cmd) => cert::run(cmd),
        Command::Push(args) => push::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Migrate(args) => migrate::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Enrollments(args) => enrollments::run(args),
        Command::Refresh(args) => refresh::run(args),
        Command::Report(args) => report::run(args),
        Command::Topics(args) => topics::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed command line may be logged: its secrets are not in its `Debug`.
    #[test]
    fn secrets_are_not_in_debug_output() {
        for args in [
            vec![
                "magicpush",
                "serve",
                "--data-dir",
                "d",
                "--api-key",
                "SEKRET-1",
                "--notify-secret",
                "SEKRET-2",
            ],
            vec!["magicpush", "devices", "--api-key", "SEKRET-1"],
            vec![
                "magicpush",
                "serve",
                "--database-url",
                "postgres://u:SEKRET-1@db/mp",
                "--secrets-key-file",
                "k",
            ],
            vec![
                "magicpush",
                "migrate",
                "--database-url",
                "postgres://u:SEKRET-1@db/mp",
            ],
            vec![
                "magicpush",
                "cert",
                "inspect",
                "x.p12",
                "--password",
                "SEKRET-1",
            ],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            let text = format!("{cli:?}");
            assert!(!text.contains("SEKRET"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    /// The store is SQLite in --data-dir or PostgreSQL at --database-url: one of them, not
    /// both.
    #[test]
    fn one_store_location() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(drop);
        assert!(parse(&["magicpush", "serve", "--data-dir", "d"]).is_ok());
        assert!(parse(&["magicpush", "serve", "--database-url", "postgres://db/mp"]).is_ok());
        let neither = parse(&["magicpush", "serve"]).unwrap_err().to_string();
        assert!(neither.contains("--data-dir"), "{neither}");
        let both = parse(&[
            "magicpush",
            "serve",
            "--data-dir",
            "d",
            "--database-url",
            "postgres://db/mp",
        ]);
        assert!(both.is_err());
    }

    /// A key file and a key in the environment together are not an error: the file wins
    /// (a stray MAGICPUSH_API_KEY must not break --api-key-file).
    #[test]
    fn key_files_coexist_with_keys() {
        for args in [
            vec![
                "magicpush",
                "devices",
                "--api-key",
                "a",
                "--api-key-file",
                "f",
            ],
            vec![
                "magicpush",
                "serve",
                "--data-dir",
                "d",
                "--api-key",
                "a",
                "--api-key-file",
                "f",
            ],
            vec![
                "magicpush",
                "serve",
                "--data-dir",
                "d",
                "--notify-secret",
                "a",
                "--notify-secret-file",
                "f",
            ],
        ] {
            assert!(Cli::try_parse_from(&args).is_ok(), "{args:?}");
        }
    }
}
