//! The SSRF guard options of the commands that deliver (`send`, `deliveries resend|recover`).

use clap::Args;
use tower_webhooks::delivery::SsrfGuard;

use crate::exit::Failure;

/// Which internal addresses the engine may deliver to; by default none (the guard refuses
/// loopback, private, link-local and metadata addresses).
#[derive(Debug, Clone, Args)]
pub(crate) struct GuardArgs {
    /// Allow loopback endpoints (127.0.0.0/8, ::1, localhost), for a receiver on this machine.
    #[arg(long)]
    allow_loopback: bool,
    /// Allow this address range or host too (`10.0.0.0/8`, `receiver.internal`); repeatable.
    #[arg(long, value_name = "CIDR|HOST")]
    allow: Vec<String>,
    /// Turn the guard's address checks off: every private and internal address is allowed.
    #[arg(long)]
    allow_private: bool,
}

impl GuardArgs {
    /// The guard the flags describe.
    pub(crate) fn guard(&self) -> Result<SsrfGuard, Failure> {
        if self.allow_private {
            return Ok(SsrfGuard::disabled());
        }
        let mut guard = SsrfGuard::new();
        if self.allow_loopback {
            guard = guard.allow_loopback();
        }
        for entry in &self.allow {
            guard = match guard.clone().allow_cidr(entry) {
                Ok(guard) => guard,
                Err(_) if !entry.contains('/') => guard.allow_host(entry),
                Err(e) => return Err(Failure::usage(format!("--allow {entry}: {e}"))),
            };
        }
        Ok(guard)
    }
}
