//! Endpoint health: the [`HealthRule`] that disables an endpoint whose deliveries keep
//! failing, fed by [`WebhookRegistry::observe`].
//!
//! The failures are counted in the registry's [`EndpointState`](super::EndpointState): with a
//! SQL subscription store, in its database, so replicas sharing it count every failure once
//! and the one that sees the threshold reached disables the webhook (a row state every
//! replica reads). The `modify` of the store locks the row, so only one replica changes it
//! and only that one calls [`on_disabled`](super::RegistryBuilder::on_disabled).

use std::time::{Duration, SystemTime};

use futures_util::FutureExt as _;

use super::event::EndpointDisabled;
use super::model::{split_endpoint_key, Endpoint, Owner};
use super::WebhookRegistry;
use super::{EndpointFailure, SubscriptionError, WebhookKey};
use crate::delivery::DeliveryReport;
use crate::delivery::{DeliveryState, Source};

/// When an endpoint is disabled automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthRule {
    /// Failed deliveries (attempts exhausted, given up, or refused by the SSRF guard) that
    /// disable the endpoint; `0` never disables on a count.
    pub failures: u32,
    /// The period they must fall within (a successful delivery starts it afresh).
    pub within: Duration,
    /// Whether a `410 Gone` answer disables the endpoint at once.
    pub disable_on_gone: bool,
}

impl Default for HealthRule {
    fn default() -> Self {
        Self::new(10, Duration::from_secs(24 * 3600))
    }
}

impl HealthRule {
    /// `failures` failed deliveries within `within` disable the endpoint; so does `410 Gone`.
    pub fn new(failures: u32, within: Duration) -> Self {
        Self {
            failures,
            within,
            disable_on_gone: true,
        }
    }

    /// Never disables anything automatically.
    pub fn never() -> Self {
        Self {
            failures: 0,
            within: Duration::ZERO,
            disable_on_gone: false,
        }
    }

    /// Whether `410 Gone` disables at once.
    pub fn disable_on_gone(mut self, on: bool) -> Self {
        self.disable_on_gone = on;
        self
    }
}

/// A webhook the [`HealthRule`] disabled, as passed to
/// [`RegistryBuilder::on_disabled`](super::RegistryBuilder::on_disabled).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DisabledNotice {
    /// Its owner.
    pub owner: Owner,
    /// Its id.
    pub webhook_id: String,
    /// Its endpoint.
    pub endpoint_url: String,
    /// Why (`"the endpoint answered 410 Gone"`, `"10 failed deliveries within 86400 s"`).
    pub reason: String,
    /// When.
    pub at: SystemTime,
}

impl WebhookRegistry {
    /// Feeds a finished delivery to the [`HealthRule`]. The registry calls it itself for the
    /// engine it builds; call it from the `on_finished` hook of a
    /// [shared engine](super::RegistryBuilder::shared_engine). Reports of deliveries the
    /// registry did not create are ignored. Needs a Tokio runtime (it spawns the update when
    /// the counts live in a database); without one it does nothing.
    pub fn observe(&self, report: &DeliveryReport) {
        let Some(key) = report.endpoint_id.as_deref() else {
            return;
        };
        // A database's futures need the runtime even for their first poll.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !matches!(report.source, Source::Event(_)) {
            return;
        }
        let Some((owner, id)) = split_endpoint_key(key) else {
            return;
        };
        let id = id.to_owned();
        let registry = self.clone();
        let update = if report.state == DeliveryState::Delivered {
            // The common case: a success forgets the endpoint's failures. In memory that
            // completes at once, without a task.
            let mut forget = async move { registry.forget_failures(&owner, &id).await }.boxed();
            if (&mut forget).now_or_never().is_some() {
                return;
            }
            forget
        } else {
            let report = report.clone();
            async move { registry.on_failure(owner, &id, report).await }.boxed()
        };
        handle.spawn(update);
    }

    /// Forgets `owner`'s webhook `id`'s recorded failures (logged when the store fails).
    pub(super) async fn forget_failures(&self, owner: &Owner, id: &str) {
        if let Err(err) = self
            .inner
            .state
            .forget_failures(WebhookKey::new(owner, id))
            .await
        {
            tracing::warn!(webhook = %id, error = %err, "failure count not reset");
        }
    }

    async fn on_failure(&self, owner: Owner, id: &str, report: DeliveryReport) {
        let rule = self.inner.health;
        let now = self.now();
        if !matches!(report.state, DeliveryState::Failed | DeliveryState::Refused) {
            return;
        }
        let gone = report.outcome.status() == Some(410) || report.disable_endpoint;
        let reason = if gone && rule.disable_on_gone {
            "the endpoint answered 410 Gone".to_owned()
        } else if rule.failures == 0 {
            return;
        } else {
            let recorded = self
                .inner
                .state
                .record_failure(EndpointFailure {
                    webhook: WebhookKey::new(&owner, id),
                    at: now,
                    within: rule.within,
                    keep: rule.failures,
                })
                .await;
            match recorded {
                Ok(count) if count >= rule.failures => format!(
                    "{count} failed deliveries within {} s (last: {})",
                    rule.within.as_secs(),
                    report.outcome
                ),
                Ok(_) => return,
                Err(err) => {
                    tracing::error!(webhook = %id, error = %err, "failed delivery not counted");
                    return;
                }
            }
        };
        self.disable(&owner, id, reason, now).await;
    }

    /// Disables the webhook for the health rule, and tells the application and the owner —
    /// when this call is the one that changed it.
    async fn disable(&self, owner: &Owner, id: &str, reason: String, now: SystemTime) {
        match self
            .set_enabled(owner, id, false, Some(reason.clone()))
            .await
        {
            Ok(Some((webhook, true))) => {
                tracing::warn!(webhook = %id, reason = %reason, "webhook disabled by the health rule");
                let notice = DisabledNotice {
                    owner: owner.clone(),
                    webhook_id: id.to_owned(),
                    endpoint_url: webhook.endpoint_url.clone(),
                    reason: reason.clone(),
                    at: now,
                };
                if let Some(hook) = &self.inner.on_disabled {
                    hook(&notice);
                }
                if self.inner.events.contains_key(EndpointDisabled::TYPE) {
                    let payload = EndpointDisabled {
                        webhook_id: notice.webhook_id,
                        endpoint_url: notice.endpoint_url,
                        reason,
                        disabled_at: now,
                    };
                    if let Err(err) = self.publish(owner, EndpointDisabled::TYPE, &payload).await {
                        tracing::warn!(error = %err, "endpoint.disabled not published");
                    }
                }
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "webhook not disabled"),
        }
    }

    /// Enables or disables `owner`'s webhook `id`; returns it and whether it changed
    /// (`None` when there is no such webhook). Enabling forgets its recent failures.
    ///
    /// # Errors
    ///
    /// The subscription store's error.
    pub async fn set_enabled(
        &self,
        owner: &Owner,
        id: &str,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<Option<(Endpoint, bool)>, SubscriptionError> {
        let now = self.now();
        let mut changed = false;
        let webhook = self
            .inner
            .subscriptions
            .modify(
                WebhookKey::new(owner, id),
                Box::new(|webhook| {
                    changed = webhook.enabled != enabled;
                    if changed {
                        webhook.enabled = enabled;
                        webhook.disabled_reason = if enabled { None } else { reason };
                        webhook.updated_at = now;
                    }
                }),
            )
            .await?;
        if webhook.is_some() {
            self.forget_failures(owner, id).await;
        }
        Ok(webhook.map(|w| (w, changed)))
    }
}
