//! [`MemoryStore`]: the in-memory, bounded [`DeliveryStore`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{
    AttemptRecord, DeliveryStore, FailRequest, FailTarget, PendingUpdate, PurgeRequest, StoreError,
    StoreFuture, StoreStats,
};
use crate::delivery::model::{
    Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState, Lease, Next,
    SigningSpec,
};
use crate::delivery::FastMap;

mod finished;
mod index;
mod maintenance;

use finished::FinishedQueue;
use index::Indexes;

/// The default number of final conversations kept.
pub(crate) const DEFAULT_MAX_FINISHED: usize = 10_000;
/// The default byte budget of final conversations kept (64 MiB).
pub(crate) const DEFAULT_MAX_FINISHED_BYTES: usize = 64 * 1024 * 1024;
/// The default bound on deliveries not yet final (pending or in flight).
pub(crate) const DEFAULT_MAX_UNFINISHED: usize = 100_000;

/// An in-memory [`DeliveryStore`]: the queue and the conversation log in one map.
///
/// Memory is bounded: at most [`max_unfinished`](Self::max_unfinished) deliveries wait or
/// run (beyond that [`enqueue`](DeliveryStore::enqueue) answers [`StoreError::Full`]; the
/// engine's own capacity is normally far lower), and the conversations of final deliveries are
/// evicted oldest first beyond [`max_finished`](Self::max_finished) conversations or
/// [`max_finished_bytes`](Self::max_finished_bytes) bytes.
///
/// A [`list`](DeliveryStore::list) filtered by endpoint, endpoint id or state walks only the
/// entries with that value (indexes kept in step with every change), newest first, so a
/// small tenant's page costs the same beside a million other deliveries.
///
/// Everything is lost when the process exits: use a durable store where that matters.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_finished: usize,
    max_finished_bytes: usize,
    max_unfinished: usize,
}

struct Entry {
    delivery: Delivery,
    attempts: Vec<Attempt>,
    /// Insertion sequence (the `order` key).
    seq: u64,
    /// The current lease token (0 when not claimed).
    lease: u64,
    lease_until: SystemTime,
    size: usize,
}

#[derive(Default)]
struct Inner {
    entries: FastMap<String, Entry>,
    /// Pending deliveries by due time.
    due: BTreeSet<(SystemTime, u64)>,
    /// Every entry by insertion sequence.
    order: BTreeMap<u64, String>,
    /// The entries by endpoint, endpoint id and state, for a filtered `list`.
    index: Indexes,
    /// Final entries, oldest first (eviction order).
    finished: FinishedQueue,
    finished_bytes: usize,
    unfinished: usize,
    in_flight: usize,
    seq: u64,
    token: u64,
}

/// The in-flight entry `id` while `lease` holds it.
fn leased<'a>(
    entries: &'a mut FastMap<String, Entry>,
    id: &str,
    lease: Lease,
) -> Result<&'a mut Entry, StoreError> {
    let entry = entries
        .get_mut(id)
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    if entry.lease != lease.token || entry.delivery.state != DeliveryState::InFlight {
        return Err(StoreError::LeaseLost(id.to_owned()));
    }
    Ok(entry)
}

impl Inner {
    /// Where a page of `query` starts (keyset): the entries inserted before the position's
    /// delivery, or (purged) those created before it.
    fn keyset(&self, query: &ConversationQuery) -> (u64, Option<SystemTime>) {
        match &query.after {
            None => (u64::MAX, None),
            Some(position) => match self.entries.get(&position.id) {
                Some(entry) => (entry.seq, None),
                None => (u64::MAX, Some(position.created_at)),
            },
        }
    }
}

impl MemoryStore {
    /// A store with the default bounds.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_finished: DEFAULT_MAX_FINISHED,
            max_finished_bytes: DEFAULT_MAX_FINISHED_BYTES,
            max_unfinished: DEFAULT_MAX_UNFINISHED,
        }
    }

    /// Keeps at most `max` conversations of final deliveries.
    pub fn max_finished(mut self, max: usize) -> Self {
        self.max_finished = max;
        self
    }

    /// Keeps at most about `bytes` bytes of conversations of final deliveries.
    pub fn max_finished_bytes(mut self, bytes: usize) -> Self {
        self.max_finished_bytes = bytes;
        self
    }

    /// Accepts at most `max` deliveries that are not final yet.
    pub fn max_unfinished(mut self, max: usize) -> Self {
        self.max_unfinished = max;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is applied
        // before anything that can panic), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn enqueue_now(&self, delivery: Delivery) -> Result<(), StoreError> {
        self.insert_now(delivery, None).map(|_| ())
    }

    /// Inserts a new delivery, pending or (`claim_until`) claimed at once.
    fn insert_now(
        &self,
        mut delivery: Delivery,
        claim_until: Option<SystemTime>,
    ) -> Result<Option<Claim>, StoreError> {
        // What allocates is done before the lock: the store's one mutex is every caller's and
        // every worker's.
        delivery.updated_at = SystemTime::now();
        delivery.state = match claim_until {
            Some(_) => DeliveryState::InFlight,
            None => DeliveryState::Pending,
        };
        let size = delivery.approx_size();
        let key = delivery.id.clone();
        let order_key = delivery.id.clone();
        let claimed = claim_until.map(|until| (delivery.clone(), until));
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.entries.contains_key(&key) {
            return Err(StoreError::Duplicate(key));
        }
        if inner.unfinished >= self.max_unfinished {
            return Err(StoreError::Full);
        }
        inner.seq += 1;
        let seq = inner.seq;
        let (lease, lease_until) = match claim_until {
            Some(until) => {
                inner.token += 1;
                inner.in_flight += 1;
                (inner.token, until)
            }
            None => {
                inner.due.insert((delivery.next_attempt_at, seq));
                (0, SystemTime::UNIX_EPOCH)
            }
        };
        inner.order.insert(seq, order_key);
        inner.index.add(&delivery, seq);
        inner.unfinished += 1;
        inner.entries.insert(
            key,
            Entry {
                delivery,
                attempts: Vec::new(),
                seq,
                lease,
                lease_until,
                size,
            },
        );
        drop(guard);
        Ok(claimed.map(|(delivery, until)| Claim {
            delivery,
            lease: Lease {
                token: lease,
                until,
            },
        }))
    }

    fn claim_now(&self, now: SystemTime, limit: usize, lease_for: Duration) -> Vec<Claim> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut claims = Vec::new();
        while claims.len() < limit {
            let Some(&(at, seq)) = inner.due.first() else {
                break;
            };
            if at > now {
                break;
            }
            inner.due.pop_first();
            let Some(entry) = inner
                .order
                .get(&seq)
                .and_then(|id| inner.entries.get_mut(id))
            else {
                continue;
            };
            inner.token += 1;
            entry.lease = inner.token;
            entry.lease_until = now + lease_for;
            inner
                .index
                .set_state(&mut entry.delivery, seq, DeliveryState::InFlight);
            entry.delivery.updated_at = now;
            inner.in_flight += 1;
            claims.push(Claim {
                delivery: entry.delivery.clone(),
                lease: Lease {
                    token: entry.lease,
                    until: entry.lease_until,
                },
            });
        }
        // The memory store lives and dies with its engine, so an expired lease means a worker
        // that is merely slow: it keeps the delivery (no takeover needed in one process).
        claims
    }

    fn record_now(&self, record: AttemptRecord<'_>) -> Result<(), StoreError> {
        let AttemptRecord {
            id,
            lease,
            attempt,
            next,
        } = record;
        let size = attempt.approx_size();
        let now = SystemTime::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let entry = leased(&mut inner.entries, id, lease)?;
        entry.delivery.attempts = entry.delivery.attempts.max(attempt.number);
        entry.delivery.updated_at = now;
        entry.delivery.manual = false;
        entry.lease = 0;
        entry.size += size;
        // Room for exactly this attempt: most deliveries end after one, and a first push makes
        // room for four (a 1.4 KB block, which glibc's malloc serves from its large bins after
        // consolidating its fast bins).
        entry.attempts.reserve_exact(1);
        entry.attempts.push(attempt);
        inner.in_flight -= 1;
        let mut evicted = None;
        match next {
            Next::Retry { at } => {
                inner
                    .index
                    .set_state(&mut entry.delivery, entry.seq, DeliveryState::Pending);
                entry.delivery.next_attempt_at = at;
                inner.due.insert((at, entry.seq));
            }
            Next::Final { state, reason } => {
                inner.index.set_state(&mut entry.delivery, entry.seq, state);
                entry.delivery.last_error = reason;
                inner.unfinished -= 1;
                inner.finished.push(entry.seq);
                inner.finished_bytes += entry.size;
                // A full log evicts one conversation per new one: it is freed after the lock
                // is released (a dozen frees, often of another thread's memory, would hold
                // every other enqueue and record up). The rare further ones go at once.
                evicted = self.evict_one(inner);
                self.evict(inner);
            }
        }
        drop(guard);
        drop(evicted);
        Ok(())
    }

    fn evict(&self, inner: &mut Inner) {
        while self.evict_one(inner).is_some() {}
    }

    /// Takes the oldest final entry out when the log is over its bounds.
    fn evict_one(&self, inner: &mut Inner) -> Option<Entry> {
        while self.over_bounds(inner) {
            let seq = inner.finished.pop_oldest()?;
            if let Some(entry) = Self::remove_entry(inner, seq) {
                return Some(entry);
            }
        }
        None
    }

    fn over_bounds(&self, inner: &Inner) -> bool {
        inner.finished.len() > self.max_finished
            || (inner.finished_bytes > self.max_finished_bytes && !inner.finished.is_empty())
    }

    /// Removes entry `seq` (final) and forgets it in the indexes.
    fn remove_entry(inner: &mut Inner, seq: u64) -> Option<Entry> {
        let id = inner.order.remove(&seq)?;
        let entry = inner.entries.remove(&id)?;
        inner.index.remove(&entry.delivery, seq);
        inner.finished_bytes = inner.finished_bytes.saturating_sub(entry.size);
        Some(entry)
    }

    fn release_now(&self, id: &str, lease: Lease) -> Result<(), StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let entry = leased(&mut inner.entries, id, lease)?;
        let now = SystemTime::now();
        entry.lease = 0;
        inner
            .index
            .set_state(&mut entry.delivery, entry.seq, DeliveryState::Pending);
        entry.delivery.next_attempt_at = now;
        entry.delivery.updated_at = now;
        inner.due.insert((now, entry.seq));
        inner.in_flight -= 1;
        Ok(())
    }

    fn renew_now(&self, id: &str, lease: Lease, until: SystemTime) -> Result<Lease, StoreError> {
        let mut inner = self.lock();
        let entry = leased(&mut inner.entries, id, lease)?;
        entry.lease_until = until;
        Ok(Lease {
            token: lease.token,
            until,
        })
    }

    fn conversation(entry: &Entry) -> Conversation {
        Conversation {
            delivery: entry.delivery.clone(),
            attempts: entry.attempts.clone(),
        }
    }

    fn list_now(&self, query: &ConversationQuery) -> Vec<Conversation> {
        let limit = if query.limit == 0 { 100 } else { query.limit };
        let inner = self.lock();
        let (before, created_before) = inner.keyset(query);
        // Newest first, through the narrowest index of the query's filters: a page costs the
        // entries of that endpoint (or state) it skips, not the whole table.
        let page = |seqs: &mut dyn Iterator<Item = u64>| -> Vec<Conversation> {
            seqs.filter_map(|seq| inner.order.get(&seq))
                .filter_map(|id| inner.entries.get(id))
                .filter(|entry| created_before.is_none_or(|at| entry.delivery.created_at < at))
                .filter(|entry| query.matches(&entry.delivery))
                .take(limit)
                .map(Self::conversation)
                .collect()
        };
        match inner.index.candidates(query) {
            Some(seqs) => page(&mut seqs.range(..before).rev().copied()),
            None => page(&mut inner.order.range(..before).rev().map(|(&seq, _)| seq)),
        }
    }

    fn stats_now(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats {
            pending: inner.due.len(),
            in_flight: inner.in_flight,
            finished: inner.finished.len(),
            oldest_due: inner.due.first().map(|&(at, _)| at),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats_now();
        f.debug_struct("MemoryStore")
            .field("pending", &stats.pending)
            .field("in_flight", &stats.in_flight)
            .field("finished", &stats.finished)
            .field("max_finished", &self.max_finished)
            .field("max_finished_bytes", &self.max_finished_bytes)
            .finish()
    }
}

impl DeliveryStore for MemoryStore {
    fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()> {
        let result = self.enqueue_now(delivery);
        Box::pin(std::future::ready(result))
    }

    fn enqueue_claimed(
        &self,
        delivery: Delivery,
        until: SystemTime,
    ) -> StoreFuture<'_, Option<Claim>> {
        let result = self.insert_now(delivery, Some(until));
        Box::pin(std::future::ready(result))
    }

    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease_for: Duration,
    ) -> StoreFuture<'_, Vec<Claim>> {
        let claims = self.claim_now(now, limit, lease_for);
        Box::pin(std::future::ready(Ok(claims)))
    }

    fn record_attempt<'a>(&'a self, record: AttemptRecord<'a>) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.record_now(record)))
    }

    fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        let result = self.release_now(id, lease);
        Box::pin(std::future::ready(result))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<SystemTime>> {
        let next = self.lock().due.first().map(|&(at, _)| at);
        Box::pin(std::future::ready(Ok(next)))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Conversation>> {
        let found = self.lock().entries.get(id).map(Self::conversation);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list<'a>(&'a self, query: &'a ConversationQuery) -> StoreFuture<'a, Vec<Conversation>> {
        let found = self.list_now(query);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        let stats = self.stats_now();
        Box::pin(std::future::ready(Ok(stats)))
    }

    fn renew<'a>(&'a self, id: &'a str, lease: Lease, until: SystemTime) -> StoreFuture<'a, Lease> {
        Box::pin(std::future::ready(self.renew_now(id, lease, until)))
    }

    fn resend<'a>(&'a self, id: &'a str, signing: Option<SigningSpec>) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.resend_now(id, signing)))
    }

    fn resend_matching<'a>(
        &'a self,
        query: &'a ConversationQuery,
        signing: Option<SigningSpec>,
    ) -> StoreFuture<'a, usize> {
        Box::pin(std::future::ready(self.resend_matching_now(query, signing)))
    }

    fn fail_queued<'a>(&'a self, request: FailRequest<'a>) -> StoreFuture<'a, Vec<String>> {
        let filter = match request.target {
            FailTarget::Gone { endpoint } => ConversationQuery::new().endpoint(endpoint),
            FailTarget::Deleted { endpoint_id } => {
                ConversationQuery::new().endpoint_id(endpoint_id)
            }
        };
        let ids = self.give_up_pending(filter, request.reason, request.limit);
        Box::pin(std::future::ready(Ok(ids)))
    }

    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, usize> {
        let purged = self.purge_now(request.state, request.before, request.limit);
        Box::pin(std::future::ready(Ok(purged)))
    }

    fn update_pending<'a>(&'a self, update: PendingUpdate<'a>) -> StoreFuture<'a, ()> {
        let updated = self.update_pending_now(update.id, update.body, update.due);
        Box::pin(std::future::ready(updated))
    }
}

#[cfg(test)]
mod tests;
