//! [`MemoryReplayStore`]: a bounded, per-process [`ReplayStore`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{expiry, Outcome, ReplayFuture, ReplayRecord, ReplayStore, Reservation};

/// A bounded in-memory [`ReplayStore`] for a single process.
///
/// Holds at most `capacity` keys: expired keys are dropped first, then the oldest. Under
/// that pressure an evicted key can be processed again, so size it for the deliveries you
/// expect within the TTL (each entry is the key plus ~40 bytes). Cloning shares the store.
#[derive(Clone)]
pub struct MemoryReplayStore {
    inner: Arc<Mutex<Slots>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    InFlight,
    Done(ReplayRecord),
}

struct Slot {
    state: SlotState,
    expires_at: i64,
    generation: u64,
}

struct Slots {
    capacity: usize,
    map: HashMap<Arc<str>, Slot>,
    /// Insertion order (key, generation); entries whose generation no longer matches the map
    /// are stale and skipped.
    order: VecDeque<(Arc<str>, u64)>,
    next_generation: u64,
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.lock();
        f.debug_struct("MemoryReplayStore")
            .field("capacity", &slots.capacity)
            .field("len", &slots.map.len())
            .finish()
    }
}

impl Default for MemoryReplayStore {
    /// A store for 10 000 keys.
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl MemoryReplayStore {
    /// A store holding at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Mutex::new(Slots {
                capacity,
                map: HashMap::with_capacity(capacity.min(4096)),
                order: VecDeque::new(),
                next_generation: 0,
            })),
        }
    }

    /// Number of keys currently held (including expired ones not yet purged).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // The critical sections cannot panic half-way, so a poisoned lock holds valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous core of [`ReplayStore::reserve`].
    pub(crate) fn reserve_now(&self, key: &str, now: i64, ttl: Duration) -> Reservation {
        let mut slots = self.lock();
        if let Some(slot) = slots.map.get(key) {
            if slot.expires_at > now {
                return match slot.state {
                    SlotState::InFlight => Reservation::InFlight,
                    SlotState::Done(record) => Reservation::Done(record),
                };
            }
        }
        slots.insert(key, SlotState::InFlight, expiry(now, ttl), now);
        Reservation::Fresh
    }

    /// The synchronous core of [`ReplayStore::complete`].
    pub(crate) fn complete_now(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) {
        let mut slots = self.lock();
        match outcome {
            Outcome::Processed(record) => match slots.map.get_mut(key) {
                Some(slot) => {
                    slot.state = SlotState::Done(record);
                    slot.expires_at = expiry(now, ttl);
                }
                None => slots.insert(key, SlotState::Done(record), expiry(now, ttl), now),
            },
            Outcome::Failed => {
                if slots
                    .map
                    .get(key)
                    .is_some_and(|slot| slot.state == SlotState::InFlight)
                {
                    slots.map.remove(key);
                }
            }
        }
    }
}

impl Slots {
    fn insert(&mut self, key: &str, state: SlotState, expires_at: i64, now: i64) {
        self.purge(now);
        while self.map.len() >= self.capacity {
            // Evict the oldest live key.
            let Some((old, generation)) = self.order.pop_front() else {
                break;
            };
            if self
                .map
                .get(&old)
                .is_some_and(|s| s.generation == generation)
            {
                self.map.remove(&old);
            }
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let key: Arc<str> = Arc::from(key);
        self.map.insert(
            key.clone(),
            Slot {
                state,
                expires_at,
                generation,
            },
        );
        self.order.push_back((key, generation));
        if self.order.len() > self.capacity.saturating_mul(2) {
            let map = &self.map;
            self.order.retain(|(key, generation)| {
                map.get(key).is_some_and(|s| s.generation == *generation)
            });
        }
    }

    /// Drops stale and expired entries at the front of the insertion order.
    fn purge(&mut self, now: i64) {
        while let Some((key, generation)) = self.order.front() {
            match self.map.get(key) {
                Some(slot) if slot.generation == *generation => {
                    if slot.expires_at > now {
                        break;
                    }
                    self.map.remove(key);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

impl ReplayStore for MemoryReplayStore {
    fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation> {
        let reservation = self.reserve_now(key, now, ttl);
        Box::pin(std::future::ready(Ok(reservation)))
    }

    fn complete(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) -> ReplayFuture<()> {
        self.complete_now(key, outcome, now, ttl);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(100);
    const DONE: ReplayRecord = ReplayRecord::new(uuid::Uuid::from_u128(7));

    #[test]
    fn failure_releases_and_success_is_remembered() {
        let store = MemoryReplayStore::new(8);
        assert_eq!(store.reserve_now("a", 0, TTL), Reservation::Fresh);
        assert_eq!(store.reserve_now("a", 1, TTL), Reservation::InFlight);
        store.complete_now("a", Outcome::Failed, 2, TTL);
        assert_eq!(store.reserve_now("a", 3, TTL), Reservation::Fresh);
        store.complete_now("a", Outcome::Processed(DONE), 4, TTL);
        assert_eq!(store.reserve_now("a", 5, TTL), Reservation::Done(DONE));
        // A late failure report never forgets a processed key.
        store.complete_now("a", Outcome::Failed, 6, TTL);
        assert_eq!(store.reserve_now("a", 7, TTL), Reservation::Done(DONE));
        assert_eq!(store.reserve_now("a", 104, TTL), Reservation::Fresh);
    }

    #[test]
    fn bounded_evicts_expired_then_oldest() {
        let store = MemoryReplayStore::new(3);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(store.reserve_now(key, i as i64, TTL), Reservation::Fresh);
        }
        assert_eq!(store.reserve_now("d", 10, TTL), Reservation::Fresh);
        assert_eq!(store.len(), 3);
        // "a" was the oldest and was evicted.
        assert_eq!(store.reserve_now("b", 10, TTL), Reservation::InFlight);
        assert_eq!(store.reserve_now("a", 10, TTL), Reservation::Fresh);
        // Everything expired: purged on the next insert.
        assert_eq!(store.reserve_now("z", 1_000, TTL), Reservation::Fresh);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn order_stays_bounded_under_churn() {
        let store = MemoryReplayStore::new(4);
        assert_eq!(
            store.reserve_now("keep", 0, Duration::from_secs(1_000_000)),
            Reservation::Fresh
        );
        for i in 0..10_000 {
            let key = format!("k{}", i % 3);
            store.reserve_now(&key, 1, TTL);
            store.complete_now(&key, Outcome::Failed, 1, TTL);
        }
        assert!(
            store.lock().order.len() <= 8,
            "{}",
            store.lock().order.len()
        );
        assert_eq!(store.reserve_now("keep", 2, TTL), Reservation::InFlight);
    }

    #[test]
    fn overflowing_times_do_not_panic() {
        let store = MemoryReplayStore::new(2);
        assert_eq!(
            store.reserve_now("a", i64::MAX, Duration::MAX),
            Reservation::Fresh
        );
        assert_eq!(
            store.reserve_now("b", i64::MIN, Duration::MAX),
            Reservation::Fresh
        );
        store.complete_now("a", Outcome::Processed(DONE), i64::MAX, Duration::MAX);
    }
}
