//! [`EnqueueError`]: why a delivery was not accepted, and the one problem document each reason
//! is answered with on every HTTP route (forward, trigger, resend, recover).

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::problem::Problem;
use crate::store::StoreError;

/// Why a delivery was not accepted. Nothing was stored: the caller still has the event and
/// must try again later (or give up knowingly).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The engine holds its capacity of unfinished deliveries (only with a non-durable store:
    /// a durable store is the buffer); try again after `retry_after`.
    Full {
        /// A hint for the caller's `Retry-After`.
        retry_after: Duration,
    },
    /// The delivery's owner holds its
    /// [share of queued deliveries](super::EngineBuilder::max_queued_per_owner); try again
    /// after `retry_after`. Other owners are still accepted.
    OwnerFull {
        /// A hint for the caller's `Retry-After`.
        retry_after: Duration,
    },
    /// The engine is shutting down.
    ShuttingDown,
    /// The store refused or failed.
    Store(StoreError),
}

impl EnqueueError {
    /// How long the caller should wait before trying again, when waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Full { retry_after } | Self::OwnerFull { retry_after } => Some(*retry_after),
            Self::ShuttingDown | Self::Store(_) => None,
        }
    }
}

impl fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { .. } => f.write_str("the delivery queue is full"),
            Self::OwnerFull { .. } => {
                f.write_str("the owner holds its share of the delivery queue")
            }
            Self::ShuttingDown => f.write_str("the delivery engine is shutting down"),
            Self::Store(err) => fmt::Display::fmt(err, f),
        }
    }
}

impl std::error::Error for EnqueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(err) => Some(err),
            _ => None,
        }
    }
}

/// Whole seconds for `Retry-After`, at least one.
fn seconds(retry_after: Duration) -> u64 {
    retry_after.as_secs_f64().ceil().max(1.0) as u64
}

/// Every route answers a refused delivery the same way:
///
/// | reason | status | `type` slug |
/// |---|---|---|
/// | [`Full`](EnqueueError::Full) | `503` + `Retry-After` | `webhook-queue-full` |
/// | [`OwnerFull`](EnqueueError::OwnerFull) | `429` + `Retry-After` | `webhook-owner-queue-full` |
/// | [`ShuttingDown`](EnqueueError::ShuttingDown), [`Store`](EnqueueError::Store) | `503` + `Retry-After` | `webhook-unavailable` |
impl From<EnqueueError> for Problem {
    fn from(err: EnqueueError) -> Self {
        match err {
            EnqueueError::Full { retry_after } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook-queue-full",
                "Webhook delivery queue full",
            )
            .with_detail("too many webhook deliveries are pending; retry later")
            .with_retry_after(seconds(retry_after)),
            EnqueueError::OwnerFull { retry_after } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "webhook-owner-queue-full",
                "Too many pending webhook deliveries",
            )
            .with_detail("your webhook deliveries fill your share of the queue; retry later")
            .with_retry_after(seconds(retry_after)),
            EnqueueError::ShuttingDown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook-unavailable",
                "Webhook delivery unavailable",
            )
            .with_detail("the delivery engine is shutting down")
            .with_retry_after(5),
            EnqueueError::Store(err) => {
                tracing::error!(error = %err, "webhook delivery store failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "webhook-unavailable",
                    "Webhook delivery unavailable",
                )
                .with_detail("the delivery store is unavailable")
                .with_retry_after(5)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_a_retryable_problem() {
        let full = Problem::from(EnqueueError::Full {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            full.type_uri(),
            "tag:tower-webhooks,2026:webhook-queue-full"
        );
        let owner = Problem::from(EnqueueError::OwnerFull {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(owner.status(), StatusCode::TOO_MANY_REQUESTS);
        for err in [
            EnqueueError::ShuttingDown,
            EnqueueError::Store(StoreError::Unsupported("x")),
        ] {
            let problem = Problem::from(err);
            assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                problem.type_uri(),
                "tag:tower-webhooks,2026:webhook-unavailable"
            );
        }
        let response = full.into_response_with::<bytes::Bytes>();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
    }
}
