//! `serve` (not written yet).

use std::process::ExitCode;

use clap::Args;

/// `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {}

pub(crate) fn run(_args: ServeArgs) -> ExitCode {
    ExitCode::from(2)
}
