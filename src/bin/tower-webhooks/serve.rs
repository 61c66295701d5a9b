//! `serve`: the gateway (`examples/gateway/`, included by `main.rs`) as this binary's
//! subcommand, so it runs without a Rust toolchain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// `serve`: run the gateway.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The configuration (format: examples/gateway.toml, which is used when this is absent).
    /// `PORT`, `STORE`, `REPLAY_STORE` and TOWER_WEBHOOKS_ENCRYPTION_KEYS apply as in the example.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub(crate) fn run(args: ServeArgs) -> ExitCode {
    let mut gateway_args = Vec::new();
    if let Some(config) = args.config {
        gateway_args.push("--config".to_owned());
        gateway_args.push(config.to_string_lossy().into_owned());
    }
    crate::gateway::run(gateway_args)
}
