//! De-duplication of webhook deliveries already processed within the replay window.
//!
//! Each scheme's timestamp window ([`ReplayWindow`](crate::scheme::ReplayWindow); the README's
//! "Replay windows" table lists the defaults) already refuses old captures. Inside the window, a captured or
//! retried request would be processed twice; a [`ReplayStore`] remembers the
//! [`Verified::replay_key`](crate::Verified::replay_key) of each delivery (derived by the
//! scheme from **signed** material only: the signed message id, or the MAC itself for formats
//! such as GitHub whose delivery id is unsigned) and lets
//! [`WebhookSignatureLayer`](crate::WebhookSignatureLayer) answer duplicates without calling
//! the handler again.
//!
//! # Semantics
//!
//! For each verified request with a replay key, the layer calls [`ReplayStore::reserve`]:
//!
//! | reservation | what the layer does |
//! |---|---|
//! | [`Reservation::Fresh`] | calls the handler; then [`ReplayStore::complete`] with [`Outcome::Processed`] if the handler answered `2xx`, else [`Outcome::Failed`] (the key is released, so the sender's retry is processed) |
//! | [`Reservation::InFlight`] | `409 Conflict` with `Retry-After`: the first delivery is still being handled |
//! | [`Reservation::Done`] | `200 OK` with `{"status":"duplicate"}` (or the scheme's own success response, such as Valohai's `ok`) **without** calling the handler: a `4xx` would make senders retry or disable the endpoint |
//!
//! If the response future is dropped while the handler runs (client gone, handler panic),
//! the reservation is released as [`Outcome::Failed`].
//!
//! Keys are kept for the layer's TTL (`replay_ttl`, default 600 s: the widest default window,
//! Standard Webhooks' 300 s back plus 300 s ahead). Widen it together with the scheme's window; for schemes without a
//! timestamp (GitHub) the TTL is the de-duplication horizon.
//!
//! # Several replicas: a shared store
//!
//! [`MemoryReplayStore`] is per process. Behind a load balancer, implement [`ReplayStore`]
//! over a shared store; both methods return a boxed `'static` future, so an implementation
//! clones its (cheap, `Arc`-based) client handle into it:
//!
//! - **Redis**: `reserve` = `SET key "inflight" NX PX ttl`; if the `SET` did not happen, `GET`
//!   the key and map `"inflight"`/`"done"` to [`Reservation::InFlight`]/[`Reservation::Done`].
//!   `complete(Processed)` = `SET key "done" PX ttl`; `complete(Failed)` = `DEL key` (only if
//!   still `"inflight"`, with a small Lua script or `WATCH`).
//! - **Postgres**: a table `(key text primary key, state text, expires_at timestamptz)`;
//!   `reserve` = `INSERT .. ON CONFLICT (key) DO UPDATE SET state = 'inflight', expires_at = ..
//!   WHERE webhook_replay.expires_at < now() RETURNING state` (no row returned → read the
//!   existing state); `complete` = `UPDATE`/`DELETE`; expired rows are purged periodically.
//!
//! An error from the store makes the layer answer `503` with `Retry-After` (fail closed):
//! senders retry, nothing is processed twice.
//!
//! ```
//! use std::time::Duration;
//! use tower_webhooks::replay::{MemoryReplayStore, Outcome, ReplayStore, Reservation};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryReplayStore::new(10_000);
//! let ttl = Duration::from_secs(360);
//! let now = 1_700_000_000;
//! assert_eq!(store.reserve("msg_1", now, ttl).await.unwrap(), Reservation::Fresh);
//! assert_eq!(store.reserve("msg_1", now, ttl).await.unwrap(), Reservation::InFlight);
//! store.complete("msg_1", Outcome::Processed, now, ttl).await.unwrap();
//! assert_eq!(store.reserve("msg_1", now + 1, ttl).await.unwrap(), Reservation::Done);
//! // After the TTL the key is forgotten.
//! assert_eq!(store.reserve("msg_1", now + 400, ttl).await.unwrap(), Reservation::Fresh);
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The boxed future a [`ReplayStore`] returns.
pub type ReplayFuture<T> = Pin<Box<dyn Future<Output = Result<T, ReplayError>> + Send + 'static>>;

/// The state of a replay key when a delivery arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Not seen within the TTL: it is now reserved (in flight) for this delivery.
    Fresh,
    /// Another delivery with the same key is being processed.
    InFlight,
    /// A delivery with the same key was processed successfully.
    Done,
}

/// How the handler answered a reserved delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `2xx`: remember the key as processed for the TTL.
    Processed,
    /// Anything else (or no answer): release the key so a retry is processed.
    Failed,
}

/// A replay store could not answer.
#[derive(Debug)]
pub struct ReplayError(Box<dyn std::error::Error + Send + Sync>);

impl ReplayError {
    /// Wraps the backend's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay store error: {}", self.0)
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Remembers which deliveries are in flight or done. See the [module docs](self).
///
/// `now` is the layer's clock (Unix seconds); a shared store may use its own clock and
/// native expiry instead.
pub trait ReplayStore: Send + Sync + 'static {
    /// Looks `key` up and, when it is unknown or expired, reserves it as in flight for `ttl`.
    /// Must be atomic across concurrent callers (only one of them gets [`Reservation::Fresh`]).
    fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation>;

    /// Records how the handler answered a delivery reserved by [`ReplayStore::reserve`]:
    /// [`Outcome::Processed`] keeps the key as done for `ttl`, [`Outcome::Failed`] forgets it.
    fn complete(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) -> ReplayFuture<()>;
}

impl<T: ReplayStore + ?Sized> ReplayStore for Arc<T> {
    fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation> {
        (**self).reserve(key, now, ttl)
    }

    fn complete(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) -> ReplayFuture<()> {
        (**self).complete(key, outcome, now, ttl)
    }
}

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
    Done,
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
    pub fn reserve_now(&self, key: &str, now: i64, ttl: Duration) -> Reservation {
        let mut slots = self.lock();
        if let Some(slot) = slots.map.get(key) {
            if slot.expires_at > now {
                return match slot.state {
                    SlotState::InFlight => Reservation::InFlight,
                    SlotState::Done => Reservation::Done,
                };
            }
        }
        slots.insert(key, SlotState::InFlight, expiry(now, ttl), now);
        Reservation::Fresh
    }

    /// The synchronous core of [`ReplayStore::complete`].
    pub fn complete_now(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) {
        let mut slots = self.lock();
        match outcome {
            Outcome::Processed => match slots.map.get_mut(key) {
                Some(slot) => {
                    slot.state = SlotState::Done;
                    slot.expires_at = expiry(now, ttl);
                }
                None => slots.insert(key, SlotState::Done, expiry(now, ttl), now),
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

fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
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

    #[test]
    fn failure_releases_and_success_is_remembered() {
        let store = MemoryReplayStore::new(8);
        assert_eq!(store.reserve_now("a", 0, TTL), Reservation::Fresh);
        assert_eq!(store.reserve_now("a", 1, TTL), Reservation::InFlight);
        store.complete_now("a", Outcome::Failed, 2, TTL);
        assert_eq!(store.reserve_now("a", 3, TTL), Reservation::Fresh);
        store.complete_now("a", Outcome::Processed, 4, TTL);
        assert_eq!(store.reserve_now("a", 5, TTL), Reservation::Done);
        // A late failure report never forgets a processed key.
        store.complete_now("a", Outcome::Failed, 6, TTL);
        assert_eq!(store.reserve_now("a", 7, TTL), Reservation::Done);
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
        store.complete_now("a", Outcome::Processed, i64::MAX, Duration::MAX);
    }
}
