//! A [`DeliveryStore`] for the engine's unit tests: a plain queue that logs every call the
//! engine makes, fails the calls a test picks, and takes over expired leases as a durable
//! store does (so a claim whose outcome was never recorded is attempted again).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::wait_until;
use crate::delivery::engine::lock;
use crate::delivery::{
    Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState, Lease, Next,
};
use crate::store::{
    AttemptRecord, DeliveryStore, FailRequest, FailTarget, PendingUpdate, PurgeRequest, StoreError,
    StoreFuture, StoreStats,
};
use crate::time::Clock;

/// One call the engine made, as the store received it (failed ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    Enqueue(String),
    Claim {
        now: SystemTime,
    },
    Record {
        id: String,
        next: Next,
    },
    Release(String),
    Renew(String),
    FailPending(String),
    Purge {
        state: DeliveryState,
        before: SystemTime,
    },
    UpdatePending {
        id: String,
        due: SystemTime,
    },
}

type Matcher = fn(&Call) -> bool;

pub(super) struct FakeStore {
    /// Release makes a delivery due now: this store's now, the test's clock.
    clock: Clock,
    inner: Mutex<Inner>,
    /// Every call wakes the tests waiting for a condition on the store.
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    rows: BTreeMap<String, Row>,
    seq: u64,
    token: u64,
    calls: Vec<Call>,
    /// The next call each matcher matches fails with its error, once.
    failures: Vec<(Matcher, StoreError)>,
}

struct Row {
    seq: u64,
    delivery: Delivery,
    attempts: Vec<Attempt>,
    lease: Option<Lease>,
}

impl FakeStore {
    pub(super) fn new(clock: Clock) -> Self {
        Self {
            clock,
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
        }
    }

    /// Makes the next call that `matches` fail with `error`.
    pub(super) fn fail_once(&self, matches: Matcher, error: StoreError) {
        lock(&self.inner).failures.push((matches, error));
    }

    pub(super) fn calls(&self) -> Vec<Call> {
        lock(&self.inner).calls.clone()
    }

    /// The stored delivery and its attempts, as the engine left them.
    pub(super) fn conversation(&self, id: &str) -> Conversation {
        lock(&self.inner)
            .rows
            .get(id)
            .map(Row::conversation)
            .expect("the delivery was stored")
    }

    /// Waits until `ready` holds for the calls made so far.
    pub(super) async fn wait_for_calls(&self, ready: impl Fn(&[Call]) -> bool) {
        wait_until(&self.changed, "the store calls", || {
            ready(&lock(&self.inner).calls)
        })
        .await;
    }

    /// Logs `call` and answers the failure scripted for it, if any.
    fn called(&self, inner: &mut Inner, call: Call) -> Result<(), StoreError> {
        let failure = inner
            .failures
            .iter()
            .position(|(matches, _)| matches(&call))
            .map(|at| inner.failures.remove(at).1);
        inner.calls.push(call);
        self.changed.notify_waiters();
        failure.map_or(Ok(()), Err)
    }

    fn run<T: Send + 'static>(
        &self,
        call: Call,
        body: impl FnOnce(&mut Inner) -> Result<T, StoreError>,
    ) -> StoreFuture<'_, T> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let result = self.called(inner, call).and_then(|()| body(inner));
        Box::pin(std::future::ready(result))
    }
}

impl Row {
    fn conversation(&self) -> Conversation {
        Conversation {
            delivery: self.delivery.clone(),
            attempts: self.attempts.clone(),
        }
    }
}

/// The row under `lease`, or why it is not.
fn leased<'a>(inner: &'a mut Inner, id: &str, lease: Lease) -> Result<&'a mut Row, StoreError> {
    let row = inner
        .rows
        .get_mut(id)
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    match row.lease {
        Some(held) if held.token == lease.token => Ok(row),
        _ => Err(StoreError::LeaseLost(id.to_owned())),
    }
}

impl DeliveryStore for FakeStore {
    fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()> {
        self.run(Call::Enqueue(delivery.id.clone()), |inner| {
            if inner.rows.contains_key(&delivery.id) {
                return Err(StoreError::Duplicate(delivery.id));
            }
            inner.seq += 1;
            let row = Row {
                seq: inner.seq,
                delivery: Delivery {
                    state: DeliveryState::Pending,
                    ..delivery
                },
                attempts: Vec::new(),
                lease: None,
            };
            inner.rows.insert(row.delivery.id.clone(), row);
            Ok(())
        })
    }

    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease_for: Duration,
    ) -> StoreFuture<'_, Vec<Claim>> {
        self.run(Call::Claim { now }, |inner| {
            let mut due: Vec<(SystemTime, u64, String)> = inner
                .rows
                .values()
                .filter(|row| match row.delivery.state {
                    DeliveryState::Pending => row.delivery.next_attempt_at <= now,
                    DeliveryState::InFlight => row.lease.is_some_and(|lease| lease.until <= now),
                    _ => false,
                })
                .map(|row| {
                    (
                        row.delivery.next_attempt_at,
                        row.seq,
                        row.delivery.id.clone(),
                    )
                })
                .collect();
            due.sort();
            let mut claims = Vec::new();
            for (_, _, id) in due.into_iter().take(limit) {
                inner.token += 1;
                let lease = Lease {
                    token: inner.token,
                    until: now + lease_for,
                };
                let row = inner.rows.get_mut(&id).expect("listed above");
                row.lease = Some(lease);
                row.delivery.state = DeliveryState::InFlight;
                row.delivery.updated_at = now;
                claims.push(Claim {
                    delivery: row.delivery.clone(),
                    lease,
                });
            }
            Ok(claims)
        })
    }

    fn record_attempt<'a>(&'a self, record: AttemptRecord<'a>) -> StoreFuture<'a, ()> {
        let call = Call::Record {
            id: record.id.to_owned(),
            next: record.next.clone(),
        };
        let (id, lease, attempt, next) = (record.id, record.lease, record.attempt, record.next);
        self.run(call, move |inner| {
            let row = leased(inner, id, lease)?;
            row.lease = None;
            row.delivery.attempts = row.delivery.attempts.max(attempt.number);
            row.delivery.manual = false;
            row.attempts.push(attempt);
            match next {
                Next::Retry { at } => {
                    row.delivery.state = DeliveryState::Pending;
                    row.delivery.next_attempt_at = at;
                }
                Next::Final { state, reason } => {
                    row.delivery.state = state;
                    row.delivery.last_error = reason;
                }
            }
            Ok(())
        })
    }

    fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        let now = self.clock.now();
        self.run(Call::Release(id.to_owned()), move |inner| {
            let row = leased(inner, id, lease)?;
            row.lease = None;
            row.delivery.state = DeliveryState::Pending;
            row.delivery.next_attempt_at = now;
            Ok(())
        })
    }

    fn next_due(&self) -> StoreFuture<'_, Option<SystemTime>> {
        let inner = lock(&self.inner);
        let due = inner
            .rows
            .values()
            .filter(|row| row.delivery.state == DeliveryState::Pending)
            .map(|row| row.delivery.next_attempt_at)
            .min();
        Box::pin(std::future::ready(Ok(due)))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Conversation>> {
        let conversation = lock(&self.inner).rows.get(id).map(Row::conversation);
        Box::pin(std::future::ready(Ok(conversation)))
    }

    fn list<'a>(&'a self, query: &'a ConversationQuery) -> StoreFuture<'a, Vec<Conversation>> {
        let inner = lock(&self.inner);
        let mut rows: Vec<&Row> = inner
            .rows
            .values()
            .filter(|row| query.state.is_none_or(|state| row.delivery.state == state))
            .collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.seq));
        let list = rows.into_iter().map(Row::conversation).collect();
        Box::pin(std::future::ready(Ok(list)))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        let inner = lock(&self.inner);
        let mut stats = StoreStats::default();
        for row in inner.rows.values() {
            match row.delivery.state {
                DeliveryState::Pending => stats.pending += 1,
                DeliveryState::InFlight => stats.in_flight += 1,
                _ => stats.finished += 1,
            }
        }
        Box::pin(std::future::ready(Ok(stats)))
    }

    fn renew<'a>(&'a self, id: &'a str, lease: Lease, until: SystemTime) -> StoreFuture<'a, Lease> {
        self.run(Call::Renew(id.to_owned()), move |inner| {
            let row = leased(inner, id, lease)?;
            let renewed = Lease { until, ..lease };
            row.lease = Some(renewed);
            Ok(renewed)
        })
    }

    fn fail_queued<'a>(&'a self, request: FailRequest<'a>) -> StoreFuture<'a, Vec<String>> {
        let FailTarget::Gone { endpoint } = request.target else {
            return Box::pin(std::future::ready(Err(StoreError::Unsupported(
                "fail_queued",
            ))));
        };
        self.run(Call::FailPending(endpoint.to_owned()), move |inner| {
            let mut given_up = Vec::new();
            for row in inner.rows.values_mut() {
                if given_up.len() < request.limit
                    && row.delivery.endpoint == endpoint
                    && row.delivery.state == DeliveryState::Pending
                {
                    row.delivery.state = DeliveryState::Failed;
                    row.delivery.last_error = Some(request.reason.to_owned());
                    given_up.push(row.delivery.id.clone());
                }
            }
            Ok(given_up)
        })
    }

    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, usize> {
        let PurgeRequest { state, before, .. } = request;
        self.run(Call::Purge { state, before }, |_| Ok(0))
    }

    fn update_pending<'a>(&'a self, update: PendingUpdate<'a>) -> StoreFuture<'a, ()> {
        let PendingUpdate { id, body, due } = update;
        let call = Call::UpdatePending {
            id: id.to_owned(),
            due,
        };
        self.run(call, move |inner| {
            let row = inner
                .rows
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            if row.delivery.state != DeliveryState::Pending || row.delivery.attempts > 0 {
                return Err(StoreError::LeaseLost(id.to_owned()));
            }
            row.delivery.next_attempt_at = due;
            if let Some(body) = body {
                row.delivery.body = body;
            }
            Ok(())
        })
    }
}
