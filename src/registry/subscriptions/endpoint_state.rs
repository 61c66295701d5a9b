//! [`EndpointState`]: what the registry counts per webhook between deliveries — its recent
//! failed deliveries (the [`HealthRule`](crate::registry::HealthRule)) and its rate limiter's
//! bucket ([`RateLimit`]) — kept where every replica sees the same numbers.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{SubscriptionFuture, SubscriptionStore, WebhookKey};
use crate::registry::model::{EndpointRateLimit as RateLimit, Owner};

/// The per-webhook counters behind the [`HealthRule`](crate::registry::HealthRule) and
/// [`RateLimit`]s.
///
/// Several replicas of one application must share them, or each replica counts a share of
/// the failures and spends its own bucket: N replicas would then disable an endpoint only
/// after N times the rule's failures and let N times its rate through. The registry takes
/// them from its [`SubscriptionStore::endpoint_state`]: the SQL stores
/// (`SqliteSubscriptions`, `PostgresSubscriptions`) keep them in their own tables, updated by
/// one atomic statement each (`INSERT … ON CONFLICT … DO UPDATE … RETURNING`), so concurrent
/// replicas apply one limit and one disable rule. A store without shared state (like
/// [`MemorySubscriptions`](super::MemorySubscriptions)) leaves the registry with
/// [`MemoryEndpointState`], counters in process memory.
///
/// Webhooks are named by their [`WebhookKey`], `(owner, id)` as in the [`SubscriptionStore`].
pub trait EndpointState: Send + Sync + 'static {
    /// Records `failure` and forgets the webhook's failures before `failure.at -
    /// failure.within`; returns how many remain. Only the newest `failure.keep` need be kept
    /// (and counted): the rule asks whether that many fall within the period.
    fn record_failure<'a>(&'a self, failure: EndpointFailure<'a>) -> SubscriptionFuture<'a, u32>;

    /// Forgets the webhook's recorded failures (a delivery succeeded, or it was re-enabled).
    fn forget_failures<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, ()>;

    /// Takes the webhook's next turn under `turn.limit` (the generic cell rate algorithm, a
    /// token bucket): `None` when a delivery may go at `turn.now`, else the time its first
    /// attempt is due. Every call takes a turn, whether it is now or later.
    fn take_turn<'a>(
        &'a self,
        turn: EndpointTurn<'a>,
    ) -> SubscriptionFuture<'a, Option<SystemTime>>;

    /// Forgets everything about the webhook (it was deleted).
    fn forget<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, ()>;
}

/// A failed delivery of `webhook`, for [`EndpointState::record_failure`], counted under the
/// [`HealthRule`](crate::registry::HealthRule)'s window.
#[derive(Debug, Clone, Copy)]
pub struct EndpointFailure<'a> {
    /// Whose delivery failed.
    pub webhook: WebhookKey<'a>,
    /// When it failed.
    pub at: SystemTime,
    /// The period failures count within: those before `at - within` are forgotten.
    pub within: Duration,
    /// The most failures that need be kept (the rule's threshold).
    pub keep: u32,
}

/// A turn of `webhook` under its rate limit `limit` at `now`, for
/// [`EndpointState::take_turn`].
#[derive(Debug, Clone, Copy)]
pub struct EndpointTurn<'a> {
    /// Whose turn it is.
    pub webhook: WebhookKey<'a>,
    /// The webhook's limit.
    pub limit: RateLimit,
    /// The time of the turn.
    pub now: SystemTime,
}

/// The rate limiter's arithmetic, shared by every [`EndpointState`]: given the theoretical
/// arrival time after this turn was taken (`tat`), when the turn's delivery may go.
pub(crate) fn turn_at(tat: SystemTime, limit: RateLimit, now: SystemTime) -> Option<SystemTime> {
    let tolerance = limit.interval() * limit.burst.saturating_sub(1);
    let earliest = tat
        .checked_sub(limit.interval() + tolerance)
        .map_or(now, |t| t.max(now));
    (earliest > now).then_some(earliest)
}

/// [`EndpointState`] in process memory: one replica's counts (lost on restart). The default
/// for stores without shared state.
#[derive(Default)]
pub struct MemoryEndpointState {
    /// Recent failed deliveries per webhook, oldest first.
    failures: Mutex<HashMap<(Owner, String), VecDeque<SystemTime>>>,
    /// The theoretical arrival time per webhook.
    buckets: Mutex<HashMap<(Owner, String), SystemTime>>,
}

impl fmt::Debug for MemoryEndpointState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEndpointState")
            .field("failing", &lock(&self.failures).len())
            .field("buckets", &lock(&self.buckets).len())
            .finish()
    }
}

impl MemoryEndpointState {
    /// No counts yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Buckets past their theoretical arrival time are full again: forgetting them changes
/// nothing, and keeps the map small.
const PRUNE_ABOVE: usize = 4096;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready<'a, T: Send + 'a>(value: T) -> SubscriptionFuture<'a, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl EndpointState for MemoryEndpointState {
    fn record_failure<'a>(&'a self, failure: EndpointFailure<'a>) -> SubscriptionFuture<'a, u32> {
        let EndpointFailure { at, within, .. } = failure;
        let mut failures = lock(&self.failures);
        let window = failures.entry(failure.webhook.owned()).or_default();
        window.push_back(at);
        while window
            .front()
            .is_some_and(|t| at.duration_since(*t).unwrap_or_default() > within)
            || window.len() > failure.keep.max(1) as usize
        {
            window.pop_front();
        }
        ready(u32::try_from(window.len()).unwrap_or(u32::MAX))
    }

    fn forget_failures<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, ()> {
        let mut failures = lock(&self.failures);
        if !failures.is_empty() {
            failures.remove(&webhook.owned());
        }
        ready(())
    }

    fn take_turn<'a>(
        &'a self,
        turn: EndpointTurn<'a>,
    ) -> SubscriptionFuture<'a, Option<SystemTime>> {
        let EndpointTurn { limit, now, .. } = turn;
        let mut buckets = lock(&self.buckets);
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, tat| *tat > now);
        }
        let bucket = buckets.entry(turn.webhook.owned()).or_insert(now);
        *bucket = (*bucket).max(now) + limit.interval();
        ready(turn_at(*bucket, limit, now))
    }

    fn forget<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, ()> {
        let key = webhook.owned();
        lock(&self.failures).remove(&key);
        lock(&self.buckets).remove(&key);
        ready(())
    }
}

/// The registry's counters: the store's own, or in memory.
pub(crate) fn of(store: &dyn SubscriptionStore) -> std::sync::Arc<dyn EndpointState> {
    store
        .endpoint_state()
        .unwrap_or_else(|| std::sync::Arc::new(MemoryEndpointState::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn of `owner`'s `id` under 10 a second, burst 2.
    fn turn<'a>(owner: &'a Owner, id: &'a str, now: SystemTime) -> EndpointTurn<'a> {
        let limit = RateLimit::per_second(10).with_burst(2);
        let webhook = WebhookKey::new(owner, id);
        EndpointTurn {
            webhook,
            limit,
            now,
        }
    }

    /// A failure of `owner`'s `k` under a rule of 3 within the hour.
    fn failure(owner: &Owner, at: SystemTime) -> EndpointFailure<'_> {
        let within = Duration::from_secs(3600);
        EndpointFailure {
            webhook: WebhookKey::new(owner, "k"),
            at,
            within,
            keep: 3,
        }
    }

    fn block<T>(future: SubscriptionFuture<'_, T>) -> T {
        use futures_util::FutureExt as _;
        future
            .now_or_never()
            .expect("memory is immediate")
            .expect("memory never fails")
    }

    #[test]
    fn token_bucket_spaces_turns() {
        let state = MemoryEndpointState::new();
        let owner = Owner::new("acme");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(block(state.take_turn(turn(&owner, "k", now))), None);
        assert_eq!(block(state.take_turn(turn(&owner, "k", now))), None);
        let third = block(state.take_turn(turn(&owner, "k", now)));
        let fourth = block(state.take_turn(turn(&owner, "k", now)));
        assert_eq!(third, Some(now + Duration::from_millis(100)));
        assert_eq!(fourth, Some(now + Duration::from_millis(200)));
        assert_eq!(block(state.take_turn(turn(&owner, "other", now))), None);
        // A quiet second refills the bucket.
        let later = now + Duration::from_secs(1);
        assert_eq!(block(state.take_turn(turn(&owner, "k", later))), None);
    }

    #[test]
    fn failures_slide_out_of_the_window_and_are_forgotten() {
        let state = MemoryEndpointState::new();
        let owner = Owner::new("acme");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(block(state.record_failure(failure(&owner, at(0)))), 1);
        assert_eq!(block(state.record_failure(failure(&owner, at(10)))), 2);
        // The first falls out of the hour.
        assert_eq!(block(state.record_failure(failure(&owner, at(3601)))), 2);
        assert_eq!(block(state.record_failure(failure(&owner, at(3602)))), 3);
        // Never more than `keep`.
        assert_eq!(block(state.record_failure(failure(&owner, at(3603)))), 3);
        block(state.forget_failures(WebhookKey::new(&owner, "k")));
        assert_eq!(block(state.record_failure(failure(&owner, at(3604)))), 1);
    }
}
