//! A claimed delivery's task: its owner's, endpoint's and global permits, the attempt, the
//! policy's decision and its record.

use std::borrow::Cow;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select, Either};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::attempt::display_endpoint;
use super::engine::{lock, DeliveryReport, Shared};
use super::model::{Attempt, AttemptOutcome, Decision, Delivery, DeliveryState, Lease, Next};
use super::owners::{endpoint_host, registered_owner};
use super::policy::Verdict;
use crate::store::{AttemptRecord, FailRequest, StoreError};
use crate::telemetry::{ATTEMPTS, ATTEMPT_DURATION, DELIVERIES_FINISHED, DELIVERY_LATENCY};

/// The `outcome` label of `webhook_attempts_total`.
fn outcome_label(outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Status(100..=199) => "1xx",
        AttemptOutcome::Status(200..=299) => "2xx",
        AttemptOutcome::Status(300..=399) => "3xx",
        AttemptOutcome::Status(400..=499) => "4xx",
        AttemptOutcome::Status(_) => "5xx",
        AttemptOutcome::Timeout => "timeout",
        AttemptOutcome::Connect(_) => "connect",
        AttemptOutcome::Network(_) => "network",
        AttemptOutcome::Refused(_) => "refused",
        AttemptOutcome::SignFailed(_) => "sign_failed",
    }
}

impl Shared {
    pub(super) fn release_slot(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(super) fn finish(&self, id: &str) {
        let owner = lock(&self.counted).remove(id);
        if let Some(owner) = owner {
            self.owners.release(&owner);
            self.release_slot();
        }
    }

    pub(super) fn host_semaphore(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = lock(&self.hosts);
        // Looked up by `&str` first: the key is allocated only for a new host.
        if let Some(semaphore) = hosts.get(host) {
            return semaphore.clone();
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_endpoint)))
            .clone()
    }

    pub(super) fn forget_host(&self, host: &str, semaphore: Arc<Semaphore>) {
        let mut hosts = lock(&self.hosts);
        // Only the map's reference and ours left: nobody waits on this host.
        if Arc::strong_count(&semaphore) == 2 {
            hosts.remove(host);
        }
    }

    /// Runs one claimed delivery's attempt and records it.
    pub(super) async fn run_claim(
        &self,
        delivery: Delivery,
        lease: Lease,
        budget: OwnedSemaphorePermit,
    ) {
        let number = delivery.attempts + 1;
        let host = endpoint_host(&delivery.endpoint);
        let semaphore = self.host_semaphore(&host);
        // The host is read once: it is also the owner of an unregistered endpoint.
        let owner = registered_owner(&delivery).map_or_else(|| host.clone(), Cow::Borrowed);
        let share = self.owners.in_flight(&owner);
        let mut stop = self.stop.subscribe();
        let work = async {
            // The owner's permit, then the endpoint's, then a global slot: an owner or an
            // endpoint at its cap waits without holding a global slot, so its hanging
            // attempts spend only its own share and every other owner's attempt finds a slot.
            let permits = async {
                let own = share.clone().try_acquire_owned().ok();
                let endpoint = match &own {
                    Some(_) => semaphore.clone().try_acquire_owned().ok(),
                    None => None,
                };
                let (own, endpoint) = match (own, endpoint) {
                    (Some(own), Some(endpoint)) => (Some(own), Some(endpoint)),
                    (own, _) => {
                        // Wait without the claim budget while there is room to park, so other
                        // owners' and endpoints' deliveries keep being claimed and sent.
                        let parked = self.parked.clone().try_acquire_owned().ok();
                        if parked.is_some() {
                            drop(budget);
                            self.wake.notify_one();
                        }
                        let own = match own {
                            Some(own) => Some(own),
                            None => share.clone().acquire_owned().await.ok(),
                        };
                        let endpoint = semaphore.clone().acquire_owned().await.ok();
                        drop(parked);
                        (own, endpoint)
                    }
                };
                let slot = self.in_flight.acquire(&owner).await;
                (own, endpoint, slot)
            };
            // Waiting for a free slot may outlast the lease: keep renewing it meanwhile.
            let mut permits = pin!(permits);
            let mut current = lease;
            let check = (self.config.lease / 3).max(Duration::from_millis(10));
            let _permits = loop {
                match tokio::time::timeout(check, permits.as_mut()).await {
                    Ok(permits) => break permits,
                    Err(_) if self.keep_lease(&delivery.id, &mut current).await => {}
                    Err(_) => return None,
                }
            };
            if !self.keep_lease(&delivery.id, &mut current).await {
                return None;
            }
            // Not boxed: a worker's future is allocated once, when the worker starts.
            Some(
                self.attempt(&delivery, number)
                    .instrument(tracing::debug_span!("webhook.attempt", number))
                    .await,
            )
        };
        let stopped = stop.wait_for(|stopped| *stopped);
        let (result, lease_lost) = match select(pin!(work), pin!(stopped)).await {
            Either::Left((result, _)) => (result, true),
            Either::Right(_) => (None, false),
        };
        self.forget_host(&host, semaphore);
        self.owners.forget(&owner, share);
        if result.is_none() && lease_lost {
            tracing::warn!("lease lost before the attempt: another worker has the delivery");
            self.finish(&delivery.id);
            return;
        }
        let Some((attempt, retry_after)) = result else {
            tracing::info!("shutdown: delivery returned to the queue");
            if let Err(err) = self.store.release(&delivery.id, lease).await {
                tracing::error!(error = %err, "webhook delivery store: release failed");
            }
            return;
        };
        self.conclude(delivery, lease, attempt, retry_after).await;
    }

    /// Applies the policy to an attempt, records it, and finishes a final delivery.
    pub(super) async fn conclude(
        &self,
        delivery: Delivery,
        lease: Lease,
        mut attempt: Attempt,
        retry_after: Option<Duration>,
    ) {
        let number = attempt.number;
        attempt.manual = delivery.manual;
        let (mut next, disable) = self.decide(&mut attempt, retry_after);
        if let Next::Retry { .. } = next {
            if let Some(reason) = self.cancelled_reason(&delivery) {
                // Its endpoint was cancelled while this attempt was in flight: no retry.
                next = Next::Final {
                    state: DeliveryState::Failed,
                    reason: Some(reason),
                };
            }
        }
        let outcome = attempt.outcome.clone();
        let engine = self.config.name;
        let class = outcome_label(&outcome);
        metrics::counter!(ATTEMPTS, "engine" => engine, "outcome" => class).increment(1);
        metrics::histogram!(ATTEMPT_DURATION, "engine" => engine, "outcome" => class)
            .record(attempt.latency.as_secs_f64());
        match &next {
            Next::Retry { at } => tracing::info!(
                outcome = %outcome,
                retry_in_ms = at.duration_since(self.now()).unwrap_or_default().as_millis() as u64,
                "webhook attempt failed, will retry"
            ),
            Next::Final {
                state: DeliveryState::Delivered,
                ..
            } => {
                tracing::info!(outcome = %outcome, latency_ms = attempt.latency.as_millis() as u64, "webhook delivered");
            }
            Next::Final { state, reason } => tracing::warn!(
                state = %state,
                outcome = %outcome,
                reason = reason.as_deref().unwrap_or(""),
                "webhook delivery failed"
            ),
        }
        match self
            .store
            .record_attempt(AttemptRecord {
                id: &delivery.id,
                lease,
                attempt,
                next: next.clone(),
            })
            .await
        {
            Ok(()) => {}
            Err(StoreError::LeaseLost(_)) => {
                // Fencing: the lease expired and another worker claimed the delivery; its
                // outcome counts, this one is dropped.
                tracing::warn!(outcome = %outcome, "lease lost: this attempt's outcome was not recorded");
                self.finish(&delivery.id);
                return;
            }
            Err(err) => {
                // The claim stays leased in the store; it is attempted again once the lease
                // expires (at least once).
                tracing::error!(error = %err, "webhook delivery store: recording the attempt failed");
                return;
            }
        }
        if let Next::Retry { .. } = next {
            // The dispatcher learns when the retry is due.
            self.wake.notify_one();
        }
        if disable {
            self.give_up_endpoint(&delivery.endpoint).await;
        }
        if let Next::Final { state, .. } = next {
            metrics::counter!(DELIVERIES_FINISHED, "engine" => engine, "state" => state.as_str())
                .increment(1);
            let latency = self
                .now()
                .duration_since(delivery.created_at)
                .unwrap_or_default();
            metrics::histogram!(DELIVERY_LATENCY, "engine" => engine, "state" => state.as_str())
                .record(latency.as_secs_f64());
            self.finish(&delivery.id);
            if let Some(hook) = &self.hook {
                hook(&DeliveryReport {
                    id: delivery.id.clone(),
                    endpoint: delivery.endpoint.clone(),
                    endpoint_id: delivery.endpoint_id.clone(),
                    source: delivery.source.clone(),
                    state,
                    attempts: number,
                    outcome,
                    disable_endpoint: disable,
                });
            }
        }
    }

    /// Renews `lease` when less than half of it is left (the claim waited for a slot);
    /// `false` when it is lost.
    pub(super) async fn keep_lease(&self, id: &str, lease: &mut Lease) -> bool {
        let now = self.now();
        let left = lease.until.duration_since(now).unwrap_or_default();
        if left >= self.config.lease / 2 {
            return true;
        }
        match self.store.renew(id, *lease, now + self.config.lease).await {
            Ok(renewed) => {
                *lease = renewed;
                true
            }
            Err(StoreError::LeaseLost(_) | StoreError::NotFound(_)) => false,
            Err(err) => {
                tracing::debug!(error = %err, "webhook delivery store: lease not renewed");
                true
            }
        }
    }

    /// Why the delivery's registered endpoint was cancelled after it was created, if it was.
    pub(super) fn cancelled_reason(&self, delivery: &Delivery) -> Option<String> {
        let endpoint_id = delivery.endpoint_id.as_deref()?;
        let cancelled = lock(&self.cancelled);
        cancelled
            .iter()
            .rev()
            .find(|(id, at, _)| id == endpoint_id && delivery.created_at <= *at)
            .map(|(_, _, reason)| reason.clone())
    }

    /// `410 Gone`: gives up every other pending delivery to the endpoint (dead letters that
    /// can be re-sent), in batches.
    pub(super) async fn give_up_endpoint(&self, endpoint: &str) {
        const BATCH: usize = 500;
        let reason = "the endpoint answered 410 Gone: not retried";
        loop {
            let request = FailRequest::gone(endpoint, reason, BATCH);
            match self.store.fail_queued(request).await {
                Ok(ids) => {
                    for id in &ids {
                        self.finish(id);
                    }
                    if !ids.is_empty() {
                        tracing::warn!(
                            endpoint = %display_endpoint(endpoint),
                            given_up = ids.len(),
                            "410 Gone: pending deliveries to the endpoint given up"
                        );
                    }
                    if ids.len() < BATCH {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "410 Gone: pending deliveries not given up");
                    return;
                }
            }
        }
    }

    /// Applies the policy: the attempt's decision, the delivery's next state, and whether to
    /// disable the endpoint. A manual attempt ([`Attempt::manual`]) is never retried.
    pub(super) fn decide(
        &self,
        attempt: &mut Attempt,
        retry_after: Option<Duration>,
    ) -> (Next, bool) {
        let outcome = &attempt.outcome;
        let fail = |reason: String| Next::Final {
            state: DeliveryState::Failed,
            reason: Some(reason),
        };
        let (decision, next, disable) = match outcome {
            AttemptOutcome::Refused(why) => (
                Decision::Refused,
                Next::Final {
                    state: DeliveryState::Refused,
                    reason: Some(why.clone()),
                },
                false,
            ),
            _ => match self.policy.decide(attempt.number, outcome, retry_after) {
                Verdict::Delivered => (
                    Decision::Delivered,
                    Next::Final {
                        state: DeliveryState::Delivered,
                        reason: None,
                    },
                    false,
                ),
                Verdict::Retry(_) if attempt.manual => (
                    Decision::GaveUp,
                    fail(format!("manual re-send failed: {outcome}")),
                    false,
                ),
                Verdict::Retry(delay) => {
                    let at = self.now() + delay;
                    (Decision::RetryAt(at), Next::Retry { at }, false)
                }
                Verdict::DisableEndpoint => (
                    Decision::DisableEndpoint,
                    fail(format!("{outcome}: endpoint should be disabled")),
                    true,
                ),
                _ => {
                    let reason = if attempt.manual {
                        format!("manual re-send failed: {outcome}")
                    } else if attempt.number >= self.policy.max_attempts()
                        && self.policy.classify(outcome) == super::Class::Retry
                    {
                        format!("{} attempts exhausted, last: {outcome}", attempt.number)
                    } else {
                        outcome.to_string()
                    };
                    (Decision::GaveUp, fail(reason), false)
                }
            },
        };
        attempt.decision = decision;
        (next, disable)
    }
}
