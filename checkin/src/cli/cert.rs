//! `magicpush cert …` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertCommand {}

pub(crate) fn run(cmd: CertCommand) -> anyhow::Result<ExitCode> {
    match cmd {}
}
