//! `tower-webhooks`: the crate's schemes, delivery engine, stores and gateway from a shell.
//!
//! ```text
//! tower-webhooks sign   --scheme stripe --secret-env STRIPE_SECRET --body-file event.json
//! tower-webhooks verify --scheme github --secret-env GH_SECRET --headers-file head.txt --body-file -
//! tower-webhooks listen --scheme svix --secret-env SVIX_SECRET --port 4000 --forward http://127.0.0.1:3000/hook
//! tower-webhooks send   --scheme standard --secret-env SECRET --allow-loopback --count 100 http://127.0.0.1:4000/
//! tower-webhooks deliveries --store sqlite:deliveries.db list --state failed
//! tower-webhooks serve  --config gateway.toml
//! ```
//!
//! Exit status: 0 success (valid, delivered), 1 a negative answer (invalid signature, a
//! delivery that failed), 2 a usage or input error, 3 an environment failure (a port in use,
//! an unreachable store).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod deliveries;
mod exit;
/// The gateway example's own code, behind `serve`.
#[path = "../../../examples/gateway/main.rs"]
mod gateway;
mod input;
mod listen;
mod network;
mod send;
mod serve;
mod sign;
mod summary;

// The example's modules name the helpers they share `crate::…` (the example's root): these
// imports make the same paths resolve here.
use gateway::{encryption_keys, inbox, run_status, without_password};

/// Sign, verify, receive and send webhooks of every built-in scheme; inspect and re-send a
/// store's deliveries; run the gateway.
#[derive(Debug, Parser)]
#[command(name = "tower-webhooks", version, about, long_about = None)]
#[command(
    after_help = "Exit status: 0 success, 1 invalid or undelivered, 2 usage or input \
                        error, 3 environment failure (port, store, network)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the headers a scheme puts on a body.
    Sign(sign::SignArgs),
    /// Check a request's signature headers against a body (exit 0 valid, 1 invalid).
    Verify(sign::VerifyArgs),
    /// A local receiver: verify and print every request, optionally forward the verified ones.
    Listen(listen::ListenArgs),
    /// Sign and POST events through the delivery engine (retries, SSRF guard).
    Send(send::SendArgs),
    /// Inspect a delivery store's queue and dead letters, and re-send them.
    Deliveries(deliveries::DeliveriesArgs),
    /// Run the gateway from a TOML configuration (see examples/gateway.toml).
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sign(args) => sign::sign(args),
        Command::Verify(args) => sign::verify(args),
        Command::Listen(args) => exit::runtime().and_then(|rt| rt.block_on(listen::run(args))),
        Command::Send(args) => exit::runtime().and_then(|rt| rt.block_on(send::run(args))),
        Command::Deliveries(args) => {
            exit::runtime().and_then(|rt| rt.block_on(deliveries::run(args)))
        }
        // The gateway builds its own runtime.
        Command::Serve(args) => return serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
