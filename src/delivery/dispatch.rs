//! The dispatcher: claims due deliveries within the claim budget and hands each to a worker
//! (`pool`); and the engine's housekeeping (retention, queue gauges).

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use tokio::sync::Notify;

use super::engine::Shared;
use super::model::DeliveryState;
use crate::store::{DeliveryStore, PurgeRequest};
use crate::telemetry::{
    ATTEMPTS_RUNNING, DELIVERIES_PURGED, IN_FLIGHT, OLDEST_DUE_AGE, QUEUE_DEPTH,
};

/// The shortest time between two claims when woken repeatedly (a backlog is still claimed
/// batch after batch without waiting).
const CLAIM_GAP: Duration = Duration::from_millis(2);

/// The dispatcher: claims due deliveries and hands each to a worker.
pub(super) async fn dispatch(
    shared: Weak<Shared>,
    wake: Arc<Notify>,
    store: Arc<dyn DeliveryStore>,
) {
    let mut stop = match shared.upgrade() {
        Some(shared) => shared.stop.subscribe(),
        None => return,
    };
    let mut last: Option<Instant> = None;
    loop {
        // Wake-ups that come faster than this share one claim (a store round trip).
        if let Some(since) = last.map(|last| last.elapsed()) {
            if since < CLAIM_GAP {
                tokio::time::sleep(CLAIM_GAP - since).await;
            }
        }
        let wait = match shared.upgrade() {
            Some(shared) if !*shared.stop.borrow() => shared.dispatch_once().await,
            _ => return,
        };
        last = Some(Instant::now());
        // Woken by a local enqueue, by the store (another process enqueued), or the timer.
        let local = pin!(wake.notified());
        let remote = store.work_notified();
        let notified = tokio::time::timeout(wait, select(local, remote));
        let stopped = stop.wait_for(|stopped| *stopped);
        if let Either::Right((_, _)) = select(pin!(notified), pin!(stopped)).await {
            return;
        }
    }
}

/// Sleeps `period` unless the engine stops first; `false` when it stopped (or is gone).
async fn idle(shared: &Weak<Shared>, period: Duration) -> bool {
    let Some(mut stop) = shared.upgrade().map(|shared| shared.stop.subscribe()) else {
        return false;
    };
    let stopped = pin!(stop.wait_for(|stopped| *stopped));
    let sleep = pin!(tokio::time::sleep(period));
    let slept = matches!(select(sleep, stopped).await, Either::Left(_));
    slept
}

/// Retention: deletes old final deliveries in small batches, pausing between batches.
pub(super) async fn retention(shared: Weak<Shared>) {
    let Some(interval) = shared
        .upgrade()
        .map(|shared| shared.config.retention_interval)
    else {
        return;
    };
    while idle(&shared, interval).await {
        let Some(engine) = shared.upgrade() else {
            return;
        };
        let config = &engine.config;
        let rules = [
            (DeliveryState::Delivered, config.retain_delivered),
            (DeliveryState::Failed, config.retain_failed),
            (DeliveryState::Refused, config.retain_failed),
        ];
        let store = engine.store.clone();
        let batch = config.retention_batch;
        let name = config.name;
        let clock = config.clock.clone();
        drop(engine);
        for (state, age) in rules {
            let Some(age) = age else { continue };
            let before = clock.now() - age;
            let mut total = 0;
            loop {
                let request = PurgeRequest {
                    state,
                    before,
                    limit: batch,
                };
                match store.purge(request).await {
                    Ok(purged) => {
                        total += purged;
                        if purged < batch {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, state = %state, "webhook retention failed");
                        break;
                    }
                }
                // Let the workers have the store between batches.
                if !idle(&shared, Duration::from_millis(20)).await {
                    return;
                }
            }
            if total > 0 {
                metrics::counter!(DELIVERIES_PURGED, "engine" => name, "state" => state.as_str())
                    .increment(total as u64);
                tracing::debug!(state = %state, purged = total, "webhook retention");
            }
        }
    }
}

/// Refreshes the queue gauges.
pub(super) async fn gauges(shared: Weak<Shared>, interval: Duration) {
    loop {
        let Some(engine) = shared.upgrade() else {
            return;
        };
        let store = engine.store.clone();
        let in_flight = engine.in_flight.in_use();
        let name = engine.config.name;
        let clock = engine.config.clock.clone();
        drop(engine);
        match store.stats().await {
            Ok(stats) => {
                metrics::gauge!(QUEUE_DEPTH, "engine" => name).set(stats.pending as f64);
                metrics::gauge!(IN_FLIGHT, "engine" => name).set(stats.in_flight as f64);
                metrics::gauge!(ATTEMPTS_RUNNING, "engine" => name).set(in_flight as f64);
                let age = stats
                    .oldest_due_age(clock.now())
                    .unwrap_or_default()
                    .as_secs_f64();
                metrics::gauge!(OLDEST_DUE_AGE, "engine" => name).set(age);
            }
            Err(err) => tracing::warn!(error = %err, "webhook delivery store: stats failed"),
        }
        if !idle(&shared, interval).await {
            return;
        }
    }
}

impl Shared {
    /// Claims and starts every due delivery the budget allows; returns how long to sleep.
    pub(super) async fn dispatch_once(self: &Arc<Self>) -> Duration {
        loop {
            let available = self.claim_budget.available_permits();
            if available == 0 {
                // The first task to finish wakes the dispatcher. The flag is set before the
                // budget is looked at again, so a task that finished in between is not missed.
                self.starved.store(true, Ordering::SeqCst);
                if self.claim_budget.available_permits() == 0 {
                    return self.config.poll_interval;
                }
                continue;
            }
            let limit = available.min(self.config.batch);
            let claims = match self
                .store
                .claim_due(self.now(), limit, self.config.lease)
                .await
            {
                Ok(claims) => claims,
                Err(err) => {
                    tracing::error!(error = %err, "webhook delivery store: claim failed");
                    return self.config.poll_interval;
                }
            };
            let claimed = claims.len();
            for claim in claims {
                match self.claim_budget.clone().try_acquire_owned() {
                    Ok(permit) => self.pool.start(self.clone(), claim, permit),
                    Err(_) => {
                        let _ = self.store.release(&claim.delivery.id, claim.lease).await;
                    }
                }
            }
            if claimed < limit {
                break;
            }
        }
        match self.store.next_due().await {
            Ok(Some(at)) => at
                .duration_since(self.now())
                .unwrap_or(Duration::ZERO)
                .min(self.config.poll_interval),
            _ => self.config.poll_interval,
        }
    }
}
