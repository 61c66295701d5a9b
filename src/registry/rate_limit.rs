//! Per-webhook rate limits: a [`EndpointRateLimit`] spaces the first attempts of a webhook's
//! deliveries (a token bucket that sets each delivery's due time), so bursts wait in the
//! queue rather than being dropped.
//!
//! The bucket lives in the registry's [`EndpointState`](super::EndpointState): with a SQL
//! subscription store, in its database, so replicas sharing it take turns from one bucket
//! and a limit of N per second is N across all of them.

use std::time::SystemTime;

use super::model::Endpoint;
use super::{EndpointTurn, WebhookKey, WebhookRegistry};

impl WebhookRegistry {
    /// Takes `webhook`'s next turn under its rate limit: when its delivery's first attempt is
    /// due, `None` for now (or when it has no limit).
    ///
    /// A store that fails to count lets the delivery go now (logged): an accepted event is
    /// never held back by the limiter's own trouble.
    pub(super) async fn not_before(&self, webhook: &Endpoint) -> Option<SystemTime> {
        let limit = webhook.rate_limit?.normalised();
        let turn = EndpointTurn {
            webhook: WebhookKey::new(&webhook.owner, &webhook.id),
            limit,
            now: self.now(),
        };
        let turn = self.inner.state.take_turn(turn).await;
        turn.unwrap_or_else(|err| {
            tracing::warn!(webhook = %webhook.id, error = %err, "rate limit not applied");
            None
        })
    }
}
