//! [`DeliveryEngine`]: the queue workers, the attempts and their records.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::future::{select, Either};
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::client::{ClientBody, DeliveryClient};
use super::enqueue::EnqueueError;
use super::owners::{delivery_owner, endpoint_host, Owners};
use super::policy::{parse_retry_after, Policy, Verdict};
use super::ssrf::{Refusal, SsrfGuard};
use super::BoxError;
use crate::scheme::Message;
use crate::store::{
    redacted_headers, Attempt, AttemptOutcome, AttemptResponse, Claim, Conversation,
    ConversationQuery, Decision, Delivery, DeliveryState, DeliveryStore, Lease, MemoryStore, Next,
    Signing, Source, StoreError, StoreStats,
};

/// The default number of deliveries accepted and not yet final.
pub const DEFAULT_CAPACITY: usize = 1024;
/// The default number of attempts in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// The default number of attempts in flight at once to one endpoint host.
pub const DEFAULT_MAX_PER_ENDPOINT: usize = 8;
/// The default number of attempts in flight at once for one owner
/// ([`delivery_owner`](super::delivery_owner)).
pub const DEFAULT_MAX_IN_FLIGHT_PER_OWNER: usize = 16;
/// The default number of unfinished deliveries one owner may hold in an engine.
pub const DEFAULT_MAX_QUEUED_PER_OWNER: usize = 256;
/// How long delivered deliveries are kept by default.
pub const DEFAULT_RETAIN_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long dead letters (failed and refused deliveries) are kept by default.
pub const DEFAULT_RETAIN_FAILED: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most response-body bytes read and kept per attempt.
pub const DEFAULT_RESPONSE_BODY_LIMIT: usize = 20_000;

type FinishHook = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;
type RecordedHeaders = Vec<(String, String)>;

/// A delivery that reached a final state, as passed to [`EngineBuilder::on_finished`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// The delivery (run) id.
    pub id: String,
    /// The endpoint URL.
    pub endpoint: String,
    /// The registered endpoint id, if any.
    pub endpoint_id: Option<String>,
    /// What created it.
    pub source: Source,
    /// [`Delivered`](DeliveryState::Delivered), [`Failed`](DeliveryState::Failed) or
    /// [`Refused`](DeliveryState::Refused).
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's outcome.
    pub outcome: AttemptOutcome,
    /// Whether the policy asks for the endpoint to be disabled (`410 Gone` under
    /// [`Policy::standard`]).
    pub disable_endpoint: bool,
}

/// What [`DeliveryEngine::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "deliveries left unfinished are lost with a memory store"]
pub struct ShutdownReport {
    /// Every accepted delivery reached a final state before the deadline.
    pub drained: bool,
    /// Deliveries accepted by this engine and not final at the deadline (returned to the
    /// store; lost with a [`MemoryStore`]).
    pub unfinished: usize,
}

/// Engine figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// Deliveries accepted (or reserved) by this engine and not final.
    pub outstanding: usize,
    /// The capacity for those.
    pub capacity: usize,
    /// Attempts being sent right now.
    pub in_flight: usize,
    /// The store's figures.
    pub store: StoreStats,
}

#[derive(Debug, Clone)]
struct Config {
    capacity: usize,
    max_in_flight: usize,
    max_per_endpoint: usize,
    max_in_flight_per_owner: usize,
    max_queued_per_owner: usize,
    max_claimed: usize,
    batch: usize,
    attempt_timeout: Duration,
    connect_timeout: Duration,
    response_body_limit: usize,
    poll_interval: Duration,
    lease: Duration,
    busy_retry_after: Duration,
    user_agent: HeaderValue,
    retain_delivered: Option<Duration>,
    retain_failed: Option<Duration>,
    retention_interval: Duration,
    retention_batch: usize,
    metrics_interval: Option<Duration>,
    hold: Duration,
}

/// Configures a [`DeliveryEngine`].
#[must_use]
pub struct EngineBuilder {
    store: Option<Arc<dyn DeliveryStore>>,
    client: Option<DeliveryClient>,
    guard: SsrfGuard,
    policy: Policy,
    config: Config,
    hook: Option<FinishHook>,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("guard", &self.guard)
            .field("policy", &self.policy)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// Defaults: [`MemoryStore`], [`Policy::cerebrium`], SSRF guard on, capacity 1024
    /// (bounding a memory store only), 64 attempts in flight (16 per owner, 8 per endpoint
    /// host), 256 unfinished deliveries per owner, 5 s connect / 15 s total per attempt,
    /// responses read up to 20 000 bytes, delivered deliveries kept 7 days and dead letters
    /// 30 days.
    pub fn new() -> Self {
        Self {
            store: None,
            client: None,
            guard: SsrfGuard::new(),
            policy: Policy::cerebrium(),
            config: Config {
                capacity: DEFAULT_CAPACITY,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
                max_per_endpoint: DEFAULT_MAX_PER_ENDPOINT,
                max_in_flight_per_owner: DEFAULT_MAX_IN_FLIGHT_PER_OWNER,
                max_queued_per_owner: DEFAULT_MAX_QUEUED_PER_OWNER,
                max_claimed: 0,
                batch: 64,
                attempt_timeout: Duration::from_secs(15),
                connect_timeout: Duration::from_secs(5),
                response_body_limit: DEFAULT_RESPONSE_BODY_LIMIT,
                poll_interval: Duration::from_secs(1),
                lease: Duration::from_secs(60),
                busy_retry_after: Duration::from_secs(1),
                user_agent: HeaderValue::from_static(concat!(
                    "tower-webhooks/",
                    env!("CARGO_PKG_VERSION")
                )),
                retain_delivered: Some(DEFAULT_RETAIN_DELIVERED),
                retain_failed: Some(DEFAULT_RETAIN_FAILED),
                retention_interval: Duration::from_secs(60),
                retention_batch: 500,
                metrics_interval: Some(Duration::from_secs(10)),
                hold: Duration::from_secs(30),
            },
            hook: None,
        }
    }

    /// The store (the queue and the conversations).
    pub fn store(mut self, store: impl DeliveryStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A shared store.
    pub fn shared_store(mut self, store: Arc<dyn DeliveryStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The HTTP client; by default [`ClientBuilder`](super::ClientBuilder) with this engine's
    /// guard and connect timeout.
    pub fn client(mut self, client: DeliveryClient) -> Self {
        self.client = Some(client);
        self
    }

    /// The SSRF guard (also used by the default client's connector).
    pub fn guard(mut self, guard: SsrfGuard) -> Self {
        self.guard = guard;
        self
    }

    /// The retry policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Deliveries accepted and not final at once when the store is not
    /// [durable](DeliveryStore::is_durable) (a [`MemoryStore`]); beyond it new ones are refused
    /// with [`EnqueueError::Full`] (every HTTP route answers `503` with `Retry-After`). A durable
    /// store is the buffer: every accepted delivery is written, and the engine sends them as
    /// its [in-flight](Self::max_in_flight) and [claim](Self::max_claimed) budgets free up.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity.max(1);
        self
    }

    /// Attempts in flight at once, over all endpoints.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max.max(1);
        self
    }

    /// Attempts in flight at once to one endpoint host, so one slow endpoint cannot take
    /// every slot.
    pub fn max_per_endpoint(mut self, max: usize) -> Self {
        self.config.max_per_endpoint = max.max(1);
        self
    }

    /// Attempts in flight at once for one owner ([`delivery_owner`](super::delivery_owner):
    /// a registry tenant, or the endpoint host of a forwarded delivery); 16 by default. An
    /// owner's attempts take their owner's permit before their endpoint's and before a global
    /// slot, so an owner whose endpoints hang holds at most this many of the
    /// [`max_in_flight`](Self::max_in_flight) slots and every other owner still finds one.
    /// Never less than [`max_per_endpoint`](Self::max_per_endpoint): an owner may always use
    /// one endpoint's whole share.
    pub fn max_in_flight_per_owner(mut self, max: usize) -> Self {
        self.config.max_in_flight_per_owner = max.max(1);
        self
    }

    /// Unfinished deliveries one owner may hold in this engine (256 by default); beyond it
    /// that owner's new ones are refused with [`EnqueueError::OwnerFull`] (`429` with
    /// `Retry-After` on every HTTP route) while other owners are still accepted. It applies to
    /// durable stores too, so one owner's backlog cannot take every claim.
    pub fn max_queued_per_owner(mut self, max: usize) -> Self {
        self.config.max_queued_per_owner = max.max(1);
        self
    }

    /// Deliveries claimed from the store and waiting for a global slot or being sent, at once
    /// (by default 4 × [`max_in_flight`](Self::max_in_flight), at least 64). A delivery
    /// whose endpoint is at its [`max_per_endpoint`](Self::max_per_endpoint) cap waits
    /// outside this budget, so a slow endpoint never blocks claiming for the others. Durable
    /// stores hold a lease on each claimed delivery.
    pub fn max_claimed(mut self, max: usize) -> Self {
        self.config.max_claimed = max.max(1);
        self
    }

    /// The most deliveries claimed in one store call.
    pub fn claim_batch(mut self, batch: usize) -> Self {
        self.config.batch = batch.max(1);
        self
    }

    /// The total time of one attempt: connect, request, response head and body.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = timeout;
        self
    }

    /// The TCP connect timeout of the default client.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How many response-body bytes are read and kept per attempt.
    pub fn response_body_limit(mut self, limit: usize) -> Self {
        self.config.response_body_limit = limit;
        self
    }

    /// How often the store is polled when it cannot say when the next delivery is due.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long a claim is leased (durable stores let another worker take it over after);
    /// 60 s by default. A claim that waited for a free slot is renewed before its attempt
    /// when less than half of it is left, so keep the lease above twice the
    /// [attempt timeout](Self::attempt_timeout).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How far ahead a [held](DeliveryEngine::hold) delivery is due (30 s by default): if its
    /// process dies before completing it, the placeholder is delivered that long after the
    /// last [`keep_held`](DeliveryEngine::keep_held). Keep it above the poll interval.
    pub fn hold(mut self, hold: Duration) -> Self {
        self.config.hold = hold.max(Duration::from_millis(10));
        self
    }

    /// Deletes [delivered](DeliveryState::Delivered) deliveries and their attempts once they
    /// are `age` old: 7 days by default ([`DEFAULT_RETAIN_DELIVERED`]), `None` keeps them
    /// forever. Retention runs every minute in batches of 500 rows, pausing between batches so
    /// the workers are not blocked.
    pub fn retain_delivered(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.config.retain_delivered = age.into();
        self
    }

    /// Deletes dead letters ([failed](DeliveryState::Failed) and
    /// [refused](DeliveryState::Refused) deliveries) once they are `age` old: 30 days by
    /// default ([`DEFAULT_RETAIN_FAILED`]), so they stay queryable and can be re-sent for a
    /// month; `None` keeps them forever.
    pub fn retain_failed(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.config.retain_failed = age.into();
        self
    }

    /// How often retention runs (every minute by default) and how many rows one batch
    /// deletes (500).
    pub fn retention_schedule(mut self, interval: Duration, batch: usize) -> Self {
        self.config.retention_interval = interval.max(Duration::from_millis(10));
        self.config.retention_batch = batch.max(1);
        self
    }

    /// How often the queue gauges (`webhook_queue_depth`, `webhook_in_flight`,
    /// `webhook_oldest_due_age_seconds`) are refreshed through the [`metrics`] facade;
    /// every 10 s by default, `None` to never query the store for them. See
    /// [`DeliveryEngine::stats`] for the same figures on demand.
    pub fn metrics_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.metrics_interval = interval.map(|i| i.max(Duration::from_millis(10)));
        self
    }

    /// The `Retry-After` suggested when the engine is full.
    pub fn busy_retry_after(mut self, retry_after: Duration) -> Self {
        self.config.busy_retry_after = retry_after;
        self
    }

    /// The `User-Agent` of every attempt.
    pub fn user_agent(mut self, user_agent: HeaderValue) -> Self {
        self.config.user_agent = user_agent;
        self
    }

    /// Calls `hook` when a delivery reaches a final state (delivered, failed, refused).
    pub fn on_finished<F>(mut self, hook: F) -> Self
    where
        F: Fn(&DeliveryReport) + Send + Sync + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Builds the engine. Its workers start at once when built inside a Tokio runtime (so
    /// deliveries left in a durable store resume), else on first use or
    /// [`DeliveryEngine::start`].
    pub fn build(self) -> DeliveryEngine {
        let mut config = self.config;
        if config.max_claimed == 0 {
            config.max_claimed = (4 * config.max_in_flight).max(64);
        }
        let client = self.client.unwrap_or_else(|| {
            super::ClientBuilder::new(self.guard.clone())
                .connect_timeout(config.connect_timeout)
                .build()
        });
        let (stop, _) = watch::channel(false);
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let engine = DeliveryEngine {
            shared: Arc::new(Shared {
                durable: store.is_durable(),
                store,
                // An owner may always use one endpoint's whole share: a forwarded delivery's
                // owner is its endpoint host, capped by `max_per_endpoint` already.
                owners: Owners::new(
                    config.max_queued_per_owner,
                    config.max_in_flight_per_owner.max(config.max_per_endpoint),
                ),
                client,
                guard: self.guard,
                policy: self.policy,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                claim_budget: Arc::new(Semaphore::new(config.max_claimed)),
                parked: Arc::new(Semaphore::new(config.max_claimed)),
                config,
                wake: Arc::new(Notify::new()),
                outstanding: AtomicUsize::new(0),
                counted: Mutex::new(HashMap::new()),
                drained: Notify::new(),
                hosts: Mutex::new(HashMap::new()),
                accepting: AtomicBool::new(true),
                started: AtomicBool::new(false),
                starved: AtomicBool::new(false),
                stop,
                hook: self.hook,
                cancelled: Mutex::new(VecDeque::new()),
            }),
        };
        engine.ensure_started();
        engine
    }
}

/// The delivery engine: accepts [`Delivery`] records into its [store](crate::store), sends
/// each attempt (signed, SSRF-guarded, time-limited) from per-delivery tasks, applies the
/// [`Policy`], and records every attempt as part of the delivery's conversation.
///
/// Cheap to clone; every clone is the same engine. See the [module docs](super) for an example.
#[derive(Clone)]
pub struct DeliveryEngine {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn DeliveryStore>,
    /// The store keeps what it accepts across restarts: the capacity does not bound it.
    durable: bool,
    /// Every owner's queued deliveries and in-flight permits.
    owners: Owners,
    client: DeliveryClient,
    guard: SsrfGuard,
    policy: Policy,
    config: Config,
    wake: Arc<Notify>,
    /// Deliveries reserved or accepted by this engine and not final.
    outstanding: AtomicUsize,
    /// Ids accepted by this engine whose slot is released when they become final, with the
    /// owner whose share they count in.
    counted: Mutex<HashMap<String, String>>,
    drained: Notify,
    in_flight: Arc<Semaphore>,
    claim_budget: Arc<Semaphore>,
    /// Room for claimed deliveries waiting for their endpoint outside the claim budget: a
    /// backlog to one capped endpoint cannot make the engine claim (and hold) the whole queue.
    parked: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    accepting: AtomicBool,
    started: AtomicBool,
    /// The dispatcher stopped claiming because the claim budget was spent.
    starved: AtomicBool,
    stop: watch::Sender<bool>,
    hook: Option<FinishHook>,
    /// Registered endpoints cancelled by this engine ([`DeliveryEngine::cancel_endpoint`]):
    /// endpoint id, when, why; newest last, at most [`CANCELLED_KEPT`].
    cancelled: Mutex<VecDeque<(String, SystemTime, String)>>,
}

/// How many cancelled endpoints an engine remembers for the attempts in flight when they were
/// cancelled.
const CANCELLED_KEPT: usize = 1024;

impl fmt::Debug for DeliveryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryEngine")
            .field(
                "outstanding",
                &self.shared.outstanding.load(Ordering::Relaxed),
            )
            .field("capacity", &self.shared.config.capacity)
            .field("policy", &self.shared.policy)
            .field("guard", &self.shared.guard)
            .finish_non_exhaustive()
    }
}

/// A slot in the engine's capacity, taken before the work that produces a delivery (the
/// forward layer takes it before calling the inner service). Dropping it unused frees it.
#[must_use = "a reservation is released when dropped"]
pub struct Reservation {
    shared: Option<Arc<Shared>>,
    /// The owner whose share of queued deliveries this reservation holds.
    owner: Option<String>,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("armed", &self.shared.is_some())
            .field("owner", &self.owner)
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            if let Some(owner) = self.owner.take() {
                shared.owners.release(&owner);
            }
            shared.release_slot();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl DeliveryEngine {
    /// An engine with the defaults ([`EngineBuilder::new`]).
    pub fn new() -> Self {
        EngineBuilder::new().build()
    }

    /// Configures an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// The SSRF guard.
    pub fn guard(&self) -> &SsrfGuard {
        &self.shared.guard
    }

    /// The retry policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DeliveryStore> {
        &self.shared.store
    }

    /// Takes a capacity slot for a delivery to come. The delivery counts in its owner's
    /// share when it is [enqueued](Self::enqueue), without a limit: prefer
    /// [`try_reserve_for`](Self::try_reserve_for) when the owner is known.
    ///
    /// # Errors
    ///
    /// [`EnqueueError::Full`] at capacity (never with a [durable](DeliveryStore::is_durable)
    /// store), [`EnqueueError::ShuttingDown`] after [`shutdown`](Self::shutdown).
    pub fn try_reserve(&self) -> Result<Reservation, EnqueueError> {
        self.reserve(None)
    }

    /// [`try_reserve`](Self::try_reserve) for a delivery of `owner`
    /// ([`delivery_owner`](super::delivery_owner)), also taking a place in the owner's share
    /// ([`EngineBuilder::max_queued_per_owner`]).
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve), and [`EnqueueError::OwnerFull`] when `owner`
    /// holds its share.
    pub fn try_reserve_for(&self, owner: &str) -> Result<Reservation, EnqueueError> {
        self.reserve(Some(owner))
    }

    fn reserve(&self, owner: Option<&str>) -> Result<Reservation, EnqueueError> {
        let shared = &self.shared;
        if !shared.accepting.load(Ordering::Acquire) {
            return Err(EnqueueError::ShuttingDown);
        }
        if let Some(owner) = owner {
            if !shared.owners.try_admit(owner) {
                return Err(EnqueueError::OwnerFull {
                    retry_after: shared.config.busy_retry_after,
                });
            }
        }
        // A durable store is the buffer: the count is kept (shutdown drains it) but not capped.
        let capacity = if shared.durable {
            usize::MAX
        } else {
            shared.config.capacity
        };
        let mut current = shared.outstanding.load(Ordering::Acquire);
        loop {
            if current >= capacity {
                if let Some(owner) = owner {
                    shared.owners.release(owner);
                }
                return Err(EnqueueError::Full {
                    retry_after: shared.config.busy_retry_after,
                });
            }
            match shared.outstanding.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.ensure_started();
        Ok(Reservation {
            shared: Some(shared.clone()),
            owner: owner.map(str::to_owned),
        })
    }

    /// Stores `delivery` using `reservation`'s slot and wakes a worker. Returns once the
    /// store has it.
    ///
    /// # Errors
    ///
    /// [`EnqueueError::Store`] when the store refuses it (a duplicate id, a backend failure);
    /// the slot is then freed.
    pub async fn enqueue(
        &self,
        reservation: Reservation,
        delivery: Delivery,
    ) -> Result<(), EnqueueError> {
        let id = delivery.id.clone();
        let owner = delivery_owner(&delivery);
        {
            let mut counted = lock(&self.shared.counted);
            if counted.contains_key(&id) {
                return Err(EnqueueError::Store(StoreError::Duplicate(id)));
            }
            counted.insert(id.clone(), owner.clone());
        }
        let mut reservation = reservation;
        if reservation.owner.as_deref() != Some(owner.as_str()) {
            // Reserved without an owner (or for another one): the delivery's own owner is
            // charged; the reservation's share, if any, is given back.
            if let Some(reserved) = reservation.owner.take() {
                self.shared.owners.release(&reserved);
            }
            self.shared.owners.admit(&owner);
            reservation.owner = Some(owner);
        }
        self.ensure_started();
        let shared = &self.shared;
        // A delivery due now is claimed as it is stored when the claim budget has room:
        // one write instead of an enqueue and then a claim, and no trip through the
        // dispatcher before its attempt.
        let now = SystemTime::now();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let budget = if delivery.next_attempt_at <= now && runtime.is_some() {
            shared.claim_budget.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let stored = match budget {
            Some(_) => {
                shared
                    .store
                    .enqueue_claimed(delivery, now + shared.config.lease)
                    .await
            }
            None => shared.store.enqueue(delivery).await.map(|()| None),
        };
        match stored {
            Ok(claimed) => {
                // The slot and the owner's place now belong to the delivery and are freed
                // when it is final.
                reservation.shared = None;
                reservation.owner = None;
                match (claimed, budget, runtime) {
                    (Some(claim), Some(permit), Some(runtime)) => {
                        runtime.spawn(run(shared.clone(), claim, permit));
                    }
                    _ => shared.wake.notify_one(),
                }
                Ok(())
            }
            Err(err) => {
                lock(&self.shared.counted).remove(&id);
                drop(reservation);
                Err(EnqueueError::Store(err))
            }
        }
    }

    /// Stores `placeholder` using `reservation`'s slot for a result that is not ready yet,
    /// due only after the [hold](EngineBuilder::hold) time: async mode answers `202` once
    /// the placeholder is stored, so a crash during the run still delivers it (its body says
    /// the run was interrupted). While the run goes on, call [`keep_held`](Self::keep_held)
    /// more often than the hold time; then [`complete_held`](Self::complete_held) with the
    /// result.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue).
    pub async fn hold(
        &self,
        reservation: Reservation,
        placeholder: Delivery,
    ) -> Result<(), EnqueueError> {
        let held = placeholder.not_before(SystemTime::now() + self.shared.config.hold);
        self.enqueue(reservation, held).await
    }

    /// How often a held delivery must be [kept](Self::keep_held): a third of the hold time.
    pub fn keep_held_every(&self) -> Duration {
        self.shared.config.hold / 3
    }

    /// Postpones a held delivery by the hold time.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when it is no longer held (a worker took the placeholder),
    /// or the store's error.
    pub async fn keep_held(&self, id: &str) -> Result<(), StoreError> {
        let due = SystemTime::now() + self.shared.config.hold;
        self.shared.store.update_pending(id, None, due).await
    }

    /// Replaces a held delivery's body with the result and makes it due now.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when it is no longer held (the placeholder was delivered:
    /// the result came too late), or the store's error.
    pub async fn complete_held(&self, id: &str, body: Bytes) -> Result<(), StoreError> {
        self.shared
            .store
            .update_pending(id, Some(body), SystemTime::now())
            .await?;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// [`try_reserve_for`](Self::try_reserve_for) the delivery's owner, then
    /// [`enqueue`](Self::enqueue).
    ///
    /// # Errors
    ///
    /// As those two.
    pub async fn submit(&self, delivery: Delivery) -> Result<(), EnqueueError> {
        let reservation = self.try_reserve_for(&delivery_owner(&delivery))?;
        self.enqueue(reservation, delivery).await
    }

    /// One conversation: the delivery and every attempt.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.shared.store.get(id).await
    }

    /// Conversations matching `query`, newest first.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.shared.store.list(query).await
    }

    /// Engine and queue figures.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn stats(&self) -> Result<EngineStats, StoreError> {
        let store = self.shared.store.stats().await?;
        Ok(EngineStats {
            outstanding: self.shared.outstanding.load(Ordering::Acquire),
            capacity: self.shared.config.capacity,
            in_flight: self.shared.config.max_in_flight - self.shared.in_flight.available_permits(),
            store,
        })
    }

    /// Dead letters: [failed](DeliveryState::Failed) deliveries matching `query` (its state,
    /// when set, wins: ask for [`Refused`](DeliveryState::Refused) ones that way), newest
    /// first.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn dead_letters(
        &self,
        query: &ConversationQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        let mut query = query.clone();
        query.state = Some(query.state.unwrap_or(DeliveryState::Failed));
        self.shared.store.list(&query).await
    }

    /// Re-sends one final delivery (a dead letter, or a delivered one the receiver lost):
    /// **one** attempt, due now, with the same id, signed afresh with the stored secret,
    /// recorded as [manual](Attempt::manual) in the same conversation. It does not take a
    /// capacity slot, but with a non-durable store it is refused ([`StoreError::Full`]) while
    /// the engine is at its capacity, as new deliveries are.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::NotFinal`] when the delivery is still pending
    /// or in flight, or the store's error.
    pub async fn resend(&self, id: &str) -> Result<(), StoreError> {
        self.resend_inner(id, None).await
    }

    /// [`resend`](Self::resend) signed with `signing` (the endpoint's current secret) instead
    /// of the stored one; the delivery keeps the new signing.
    ///
    /// # Errors
    ///
    /// As [`resend`](Self::resend).
    pub async fn resend_signed(&self, id: &str, signing: Signing) -> Result<(), StoreError> {
        self.resend_inner(id, Some(signing)).await
    }

    async fn resend_inner(&self, id: &str, signing: Option<Signing>) -> Result<(), StoreError> {
        self.check_room()?;
        self.shared.store.resend(id, signing).await?;
        self.ensure_started();
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Re-sends every final delivery matching `query`, one manual attempt each: by default
    /// the [failed](DeliveryState::Failed) ones, typically to one endpoint since a time
    /// (`ConversationQuery::new().endpoint(url).since(t)`); `signing`, when given, replaces
    /// their stored signing. Returns how many were queued.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFinal`] when `query` asks for a state that is not final, or the
    /// store's error.
    pub async fn resend_failed(
        &self,
        query: &ConversationQuery,
        signing: Option<Signing>,
    ) -> Result<usize, StoreError> {
        self.check_room()?;
        let queued = self.shared.store.resend_matching(query, signing).await?;
        if queued > 0 {
            self.ensure_started();
            self.shared.wake.notify_one();
        }
        Ok(queued)
    }

    /// Cancels the queued deliveries of the registered endpoint `endpoint_id`
    /// ([`Delivery::endpoint_id`]; the [registry](crate::registry) calls it when a webhook is
    /// deleted): every one that is pending (or whose claim was abandoned) becomes
    /// [failed](DeliveryState::Failed) with `reason` and is never sent
    /// ([`DeliveryStore::cancel_endpoint`]); the conversations stay. A delivery in flight
    /// finishes its current attempt; if this engine runs that attempt, it is not retried
    /// (it ends failed with `reason`). An attempt that another process (another replica on
    /// the same PostgreSQL store) has in flight keeps its retry schedule: that process does not
    /// know of the cancellation (calling this again once the attempt is recorded cancels the
    /// retry). Returns how many were cancelled.
    ///
    /// # Errors
    ///
    /// The store's error ([`StoreError::Unsupported`] when the store cannot cancel).
    pub async fn cancel_endpoint(
        &self,
        endpoint_id: &str,
        reason: &str,
    ) -> Result<usize, StoreError> {
        const BATCH: usize = 500;
        {
            let mut cancelled = lock(&self.shared.cancelled);
            cancelled.retain(|(id, _, _)| id != endpoint_id);
            if cancelled.len() >= CANCELLED_KEPT {
                cancelled.pop_front();
            }
            cancelled.push_back((endpoint_id.to_owned(), SystemTime::now(), reason.to_owned()));
        }
        let mut total = 0;
        loop {
            let ids = self
                .shared
                .store
                .cancel_endpoint(endpoint_id, reason, BATCH)
                .await?;
            for id in &ids {
                self.shared.finish(id);
            }
            total += ids.len();
            if ids.len() < BATCH {
                break;
            }
        }
        Ok(total)
    }

    /// Starts the workers now (they otherwise start when the engine is built inside a Tokio
    /// runtime, or on first use), so deliveries left in a durable store resume. Does nothing
    /// outside a Tokio runtime or when already started.
    pub fn start(&self) {
        self.ensure_started();
    }

    /// Stops accepting deliveries, keeps delivering (retries included) until every accepted
    /// delivery is final or `deadline` has passed, then stops the workers; attempts still
    /// running are abandoned and their deliveries returned to the store.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let shared = &self.shared;
        shared.accepting.store(false, Ordering::Release);
        let until = tokio::time::Instant::now() + deadline;
        let drained = loop {
            let notified = shared.drained.notified();
            let mut notified = pin!(notified);
            notified.as_mut().enable();
            if shared.outstanding.load(Ordering::Acquire) == 0 {
                break true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                break shared.outstanding.load(Ordering::Acquire) == 0;
            }
        };
        shared.stop.send_replace(true);
        shared.wake.notify_one();
        let unfinished = shared.outstanding.load(Ordering::Acquire);
        tracing::info!(drained, unfinished, "webhook delivery engine stopped");
        ShutdownReport {
            drained,
            unfinished,
        }
    }

    /// A re-send is refused with [`StoreError::Full`] while a non-durable engine is at its
    /// capacity (the same moment new deliveries get [`EnqueueError::Full`]).
    fn check_room(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        if !shared.durable && shared.outstanding.load(Ordering::Acquire) >= shared.config.capacity {
            return Err(StoreError::Full);
        }
        Ok(())
    }

    fn ensure_started(&self) {
        if self.shared.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return;
        }
        handle.spawn(dispatch(
            Arc::downgrade(&self.shared),
            self.shared.wake.clone(),
            self.shared.store.clone(),
        ));
        let config = &self.shared.config;
        if config.retain_delivered.is_some() || config.retain_failed.is_some() {
            handle.spawn(retention(Arc::downgrade(&self.shared)));
        }
        if let Some(interval) = config.metrics_interval {
            handle.spawn(gauges(Arc::downgrade(&self.shared), interval));
        }
    }
}

impl Default for DeliveryEngine {
    fn default() -> Self {
        Self::new()
    }
}

/// The shortest time between two claims when woken repeatedly (a backlog is still claimed
/// batch after batch without waiting).
const CLAIM_GAP: Duration = Duration::from_millis(2);

/// The dispatcher: claims due deliveries and spawns one task per delivery.
async fn dispatch(shared: Weak<Shared>, wake: Arc<Notify>, store: Arc<dyn DeliveryStore>) {
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
async fn retention(shared: Weak<Shared>) {
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
        drop(engine);
        for (state, age) in rules {
            let Some(age) = age else { continue };
            let before = SystemTime::now() - age;
            let mut total = 0;
            loop {
                match store.purge(state, before, batch).await {
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
                metrics::counter!("webhook_deliveries_purged_total", "state" => state.as_str())
                    .increment(total as u64);
                tracing::debug!(state = %state, purged = total, "webhook retention");
            }
        }
    }
}

/// Refreshes the queue gauges.
async fn gauges(shared: Weak<Shared>, interval: Duration) {
    loop {
        let Some(engine) = shared.upgrade() else {
            return;
        };
        let store = engine.store.clone();
        let in_flight = engine.config.max_in_flight - engine.in_flight.available_permits();
        drop(engine);
        match store.stats().await {
            Ok(stats) => {
                metrics::gauge!("webhook_queue_depth").set(stats.pending as f64);
                metrics::gauge!("webhook_in_flight").set(stats.in_flight as f64);
                metrics::gauge!("webhook_attempts_running").set(in_flight as f64);
                let age = stats
                    .oldest_due_age(SystemTime::now())
                    .unwrap_or_default()
                    .as_secs_f64();
                metrics::gauge!("webhook_oldest_due_age_seconds").set(age);
            }
            Err(err) => tracing::warn!(error = %err, "webhook delivery store: stats failed"),
        }
        if !idle(&shared, interval).await {
            return;
        }
    }
}

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
    /// Claims and starts every due delivery the budget allows; returns how long to sleep.
    async fn dispatch_once(self: &Arc<Self>) -> Duration {
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
                .claim_due(SystemTime::now(), limit, self.config.lease)
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
                    Ok(permit) => {
                        tokio::spawn(run(self.clone(), claim, permit));
                    }
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
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(self.config.poll_interval),
            _ => self.config.poll_interval,
        }
    }

    fn release_slot(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    fn finish(&self, id: &str) {
        let owner = lock(&self.counted).remove(id);
        if let Some(owner) = owner {
            self.owners.release(&owner);
            self.release_slot();
        }
    }

    fn host_semaphore(&self, host: &str) -> Arc<Semaphore> {
        lock(&self.hosts)
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_endpoint)))
            .clone()
    }

    fn forget_host(&self, host: &str, semaphore: Arc<Semaphore>) {
        let mut hosts = lock(&self.hosts);
        // Only the map's reference and ours left: nobody waits on this host.
        if Arc::strong_count(&semaphore) == 2 {
            hosts.remove(host);
        }
    }

    /// Runs one claimed delivery's attempt and records it.
    async fn run_claim(
        self: Arc<Self>,
        delivery: Delivery,
        lease: Lease,
        budget: OwnedSemaphorePermit,
    ) {
        let number = delivery.attempts + 1;
        let host = endpoint_host(&delivery.endpoint);
        let semaphore = self.host_semaphore(&host);
        let owner = delivery_owner(&delivery);
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
                let slot = self.in_flight.clone().acquire_owned().await.ok();
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
            // Boxed: a task waiting for its permits stays small.
            Some(
                Box::pin(
                    self.attempt(&delivery, number)
                        .instrument(tracing::debug_span!("webhook.attempt", number)),
                )
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
        // Boxed too, so the task's own future stays small while it waits for permits.
        Box::pin(self.conclude(delivery, lease, attempt, retry_after)).await;
    }

    /// Applies the policy to an attempt, records it, and finishes a final delivery.
    async fn conclude(
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
        metrics::counter!("webhook_attempts_total", "outcome" => outcome_label(&outcome))
            .increment(1);
        match &next {
            Next::Retry { at } => tracing::info!(
                outcome = %outcome,
                retry_in_ms = at.duration_since(SystemTime::now()).unwrap_or_default().as_millis() as u64,
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
            .record_attempt(&delivery.id, lease, attempt, next.clone())
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
            metrics::counter!("webhook_deliveries_finished_total", "state" => state.as_str())
                .increment(1);
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
    async fn keep_lease(&self, id: &str, lease: &mut Lease) -> bool {
        let now = SystemTime::now();
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
    fn cancelled_reason(&self, delivery: &Delivery) -> Option<String> {
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
    async fn give_up_endpoint(&self, endpoint: &str) {
        const BATCH: usize = 500;
        let reason = "the endpoint answered 410 Gone: not retried";
        loop {
            match self.store.fail_pending(endpoint, reason, BATCH).await {
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
    fn decide(&self, attempt: &mut Attempt, retry_after: Option<Duration>) -> (Next, bool) {
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
                    let at = SystemTime::now() + delay;
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

    /// Makes one attempt; returns its record (decision not yet set) and the `Retry-After`.
    async fn attempt(&self, delivery: &Delivery, number: u32) -> (Attempt, Option<Duration>) {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let mut attempt = Attempt::new(number, started_at, AttemptOutcome::Timeout);
        attempt.body_size = delivery.body.len();
        attempt.body_sha256 = hex::encode(Sha256::digest(&delivery.body));

        let request = match self.build_request(delivery, started_at) {
            Ok((request, headers)) => {
                attempt.request_headers = headers;
                request
            }
            Err(outcome) => {
                attempt.outcome = outcome;
                attempt.latency = started.elapsed();
                return (attempt, None);
            }
        };

        let limit = self.config.response_body_limit;
        let sent = tokio::time::timeout(self.config.attempt_timeout, async {
            let response = self.client.send(request).await?;
            let (parts, body) = response.into_parts();
            let (body, truncated) = read_limited(body, limit).await;
            Ok::<_, BoxError>((parts, body, truncated))
        })
        .await;
        attempt.latency = started.elapsed();
        let mut retry_after = None;
        attempt.outcome = match sent {
            Err(_elapsed) => AttemptOutcome::Timeout,
            Ok(Err(err)) => classify_error(&*err),
            Ok(Ok((parts, body, truncated))) => {
                retry_after = parts
                    .headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let status = parts.status.as_u16();
                attempt.response = Some(AttemptResponse::new(
                    status,
                    redacted_headers(&parts.headers),
                    body,
                    truncated,
                ));
                AttemptOutcome::Status(status)
            }
        };
        (attempt, retry_after)
    }

    /// The signed request, and its headers for the record (redacted).
    fn build_request(
        &self,
        delivery: &Delivery,
        now: SystemTime,
    ) -> Result<(Request<Full<Bytes>>, RecordedHeaders), AttemptOutcome> {
        let uri = self
            .guard
            .check_url(&delivery.endpoint)
            .map_err(|refusal| AttemptOutcome::Refused(refusal.detail().to_owned()))?;
        let mut headers = HeaderMap::with_capacity(8 + delivery.headers.len());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.config.user_agent.clone());
        let id = HeaderValue::from_str(&delivery.id).map_err(|_| {
            AttemptOutcome::SignFailed("the delivery id is not a valid header value".into())
        })?;
        headers.insert("x-request-id", id);
        for (name, value) in &delivery.headers {
            headers.append(name, value.clone());
        }
        if let Some(signing) = &delivery.signing {
            let timestamp = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            signing
                .signer
                .sign(
                    &Message::new(&delivery.id, timestamp, &delivery.body),
                    &signing.secrets,
                    &mut headers,
                )
                .map_err(|err| AttemptOutcome::SignFailed(err.to_string()))?;
        }
        let recorded = redacted_headers(&headers);
        let mut request = Request::new(Full::new(delivery.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok((request, recorded))
    }
}

/// A claimed delivery's task.
async fn run(shared: Arc<Shared>, claim: Claim, budget: OwnedSemaphorePermit) {
    let Claim { delivery, lease } = claim;
    let span = tracing::info_span!(
        "webhook.delivery",
        id = %delivery.id,
        endpoint = %display_endpoint(&delivery.endpoint),
        attempt = delivery.attempts + 1,
    );
    let task = shared.clone();
    task.run_claim(delivery, lease, budget)
        .instrument(span)
        .await;
    // Its claim budget is free again: the dispatcher is woken if it stopped for want of it
    // (a retry wakes it from `conclude`, for its due time). Not waking it after every
    // delivery spares the store a claim and a `next_due` query per finished attempt.
    if shared.starved.swap(false, Ordering::SeqCst) {
        shared.wake.notify_one();
    }
}

/// Reads at most `limit` bytes of a response body.
async fn read_limited(mut body: ClientBody, limit: usize) -> (Bytes, bool) {
    let mut buf = BytesMut::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = limit - buf.len();
                    if data.len() > room {
                        buf.extend_from_slice(&data[..room]);
                        return (buf.freeze(), true);
                    }
                    buf.extend_from_slice(&data);
                    if buf.len() == limit && !http_body::Body::is_end_stream(&body) {
                        return (buf.freeze(), true);
                    }
                }
            }
            // A body that breaks after the head still has a status worth keeping.
            Some(Err(_)) => return (buf.freeze(), true),
            None => return (buf.freeze(), false),
        }
    }
}

/// Maps a client error to an outcome: refused by the guard, timed out, connect or network.
fn classify_error(error: &(dyn std::error::Error + Send + Sync + 'static)) -> AttemptOutcome {
    if let Some(refusal) = Refusal::find(error) {
        return AttemptOutcome::Refused(refusal.detail().to_owned());
    }
    let mut message = error.to_string();
    let mut timed_out = false;
    let mut connect = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect);
    let mut source = error.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            connect |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        message.push_str(": ");
        message.push_str(&err.to_string());
        source = err.source();
    }
    if timed_out {
        AttemptOutcome::Timeout
    } else if connect {
        AttemptOutcome::Connect(message)
    } else {
        AttemptOutcome::Network(message)
    }
}

/// The endpoint without its query string (which may carry tokens), for logs.
pub(crate) fn display_endpoint(endpoint: &str) -> &str {
    endpoint.split(['?', '#']).next().unwrap_or(endpoint)
}
