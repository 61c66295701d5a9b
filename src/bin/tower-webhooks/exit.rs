//! How a command ends: the exit status and the one line on stderr that explains it.

use std::fmt;
use std::process::ExitCode;

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A negative answer the command printed itself (an invalid signature, an undelivered
    /// event): exit status 1, nothing more on stderr.
    Negative,
    /// Bad arguments or unreadable input: exit status 2.
    Usage(String),
    /// The environment failed (a port in use, an unreachable store): exit status 3.
    Environment(String),
}

impl Failure {
    pub(crate) fn usage(message: impl fmt::Display) -> Self {
        Self::Usage(message.to_string())
    }

    pub(crate) fn environment(message: impl fmt::Display) -> Self {
        Self::Environment(message.to_string())
    }

    /// Prints the reason (when there is one) and gives the exit status.
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Self::Negative => ExitCode::from(1),
            Self::Usage(message) => {
                eprintln!("tower-webhooks: {message}");
                ExitCode::from(2)
            }
            Self::Environment(message) => {
                eprintln!("tower-webhooks: {message}");
                ExitCode::from(3)
            }
        }
    }
}

/// The multi-threaded Tokio runtime the network commands run on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::environment(format!("cannot start the runtime: {e}")))
}
