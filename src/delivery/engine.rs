//! [`DeliveryEngine`]: accepting deliveries, the queries and re-sends over them, shutdown.

use std::collections::VecDeque;
use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{watch, Notify, Semaphore};

use super::builder::{Config, EngineBuilder, FinishHook};
use super::client::DeliveryClient;
use super::dispatch::{dispatch, gauges, retention};
use super::enqueue::EnqueueError;
use super::model::{
    AttemptOutcome, Conversation, ConversationQuery, Delivery, DeliveryState, SigningSpec, Source,
};
use super::owners::{delivery_owner, Owners};
use super::policy::Policy;
use super::pool::WorkerPool;
use super::slots::FairSlots;
use super::ssrf::SsrfGuard;
use super::FastMap;
use crate::store::{DeliveryStore, FailRequest, PendingUpdate, StoreError, StoreStats};

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
    /// store; lost with a [`MemoryStore`](crate::store::MemoryStore)).
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

/// The delivery engine: accepts [`Delivery`] records into its [store](crate::store), sends
/// each attempt (signed, SSRF-guarded, time-limited) from per-delivery tasks, applies the
/// [`Policy`], and records every attempt as part of the delivery's conversation.
///
/// Cheap to clone; every clone is the same engine. See the [module docs](super) for an example.
#[derive(Clone)]
pub struct DeliveryEngine {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) store: Arc<dyn DeliveryStore>,
    /// The store keeps what it accepts across restarts: the capacity does not bound it.
    pub(super) durable: bool,
    /// Every owner's queued deliveries and in-flight permits.
    pub(super) owners: Owners,
    pub(super) client: DeliveryClient,
    pub(super) guard: SsrfGuard,
    pub(super) policy: Policy,
    pub(super) config: Config,
    pub(super) wake: Arc<Notify>,
    /// Deliveries reserved or accepted by this engine and not final.
    pub(super) outstanding: AtomicUsize,
    /// Ids accepted by this engine whose slot is released when they become final, with the
    /// owner whose share they count in.
    pub(super) counted: Mutex<FastMap<String, String>>,
    pub(super) drained: Notify,
    /// The global attempt slots, round-robin over owners.
    pub(super) in_flight: Arc<FairSlots>,
    pub(super) claim_budget: Arc<Semaphore>,
    /// The workers that run claimed deliveries.
    pub(super) pool: Arc<WorkerPool>,
    /// Room for claimed deliveries waiting for their endpoint outside the claim budget: a
    /// backlog to one capped endpoint cannot make the engine claim (and hold) the whole queue.
    pub(super) parked: Arc<Semaphore>,
    pub(super) hosts: Mutex<FastMap<String, Arc<Semaphore>>>,
    pub(super) accepting: AtomicBool,
    pub(super) started: AtomicBool,
    /// The dispatcher stopped claiming because the claim budget was spent.
    pub(super) starved: AtomicBool,
    pub(super) stop: watch::Sender<bool>,
    pub(super) hook: Option<FinishHook>,
    /// Registered endpoints cancelled by this engine ([`DeliveryEngine::cancel_endpoint`]):
    /// endpoint id, when, why; newest last, at most [`CANCELLED_KEPT`].
    pub(super) cancelled: Mutex<VecDeque<(String, SystemTime, String)>>,
}

impl Shared {
    /// The engine's current time.
    pub(super) fn now(&self) -> SystemTime {
        self.config.clock.now()
    }
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
#[must_use = "the slot is released when dropped"]
pub struct CapacitySlot {
    shared: Option<Arc<Shared>>,
    /// The owner whose share of queued deliveries this reservation holds.
    owner: Option<String>,
}

impl fmt::Debug for CapacitySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapacitySlot")
            .field("armed", &self.shared.is_some())
            .field("owner", &self.owner)
            .finish()
    }
}

impl Drop for CapacitySlot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            if let Some(owner) = self.owner.take() {
                shared.owners.release(&owner);
            }
            shared.release_slot();
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
    pub fn try_reserve(&self) -> Result<CapacitySlot, EnqueueError> {
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
    pub fn try_reserve_for(&self, owner: &str) -> Result<CapacitySlot, EnqueueError> {
        self.reserve(Some(owner))
    }

    fn reserve(&self, owner: Option<&str>) -> Result<CapacitySlot, EnqueueError> {
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
        Ok(CapacitySlot {
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
        reservation: CapacitySlot,
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
        let now = shared.now();
        // A worker can start only inside a runtime.
        let budget =
            if delivery.next_attempt_at <= now && tokio::runtime::Handle::try_current().is_ok() {
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
                match (claimed, budget) {
                    (Some(claim), Some(permit)) => {
                        shared.pool.start(shared.clone(), claim, permit);
                    }
                    _ => shared.wake.notify_one(),
                }
                Ok(())
            }
            Err(err) => {
                lock(&self.shared.counted).remove(&id);
                drop(reservation);
                Err(match err {
                    // A bounded store (a `MemoryStore`'s `max_unfinished`) that is full is the
                    // same condition as a full engine, for the caller.
                    StoreError::Full => EnqueueError::Full {
                        retry_after: self.shared.config.busy_retry_after,
                    },
                    err => EnqueueError::Store(err),
                })
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
        reservation: CapacitySlot,
        placeholder: Delivery,
    ) -> Result<(), EnqueueError> {
        let held = placeholder.not_before(self.shared.now() + self.shared.config.hold);
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
        let due = self.shared.now() + self.shared.config.hold;
        let update = PendingUpdate {
            id,
            body: None,
            due,
        };
        self.shared.store.update_pending(update).await
    }

    /// Replaces a held delivery's body with the result and makes it due now.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when it is no longer held (the placeholder was delivered:
    /// the result came too late), or the store's error.
    pub async fn complete_held(&self, id: &str, body: Bytes) -> Result<(), StoreError> {
        let body = Some(body);
        let due = self.shared.now();
        let update = PendingUpdate { id, body, due };
        self.shared.store.update_pending(update).await?;
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
            in_flight: self.shared.in_flight.in_use(),
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
    /// recorded as [manual](super::Attempt::manual) in the same conversation. It does not take a
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
    pub async fn resend_signed(&self, id: &str, signing: SigningSpec) -> Result<(), StoreError> {
        self.resend_inner(id, Some(signing)).await
    }

    async fn resend_inner(&self, id: &str, signing: Option<SigningSpec>) -> Result<(), StoreError> {
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
        signing: Option<SigningSpec>,
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
    /// ([`DeliveryStore::fail_queued`]); the conversations stay. A delivery in flight
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
            let now = self.shared.now();
            cancelled.push_back((endpoint_id.to_owned(), now, reason.to_owned()));
        }
        let mut total = 0;
        loop {
            let ids = self
                .shared
                .store
                .fail_queued(FailRequest::deleted(endpoint_id, reason, BATCH))
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

    pub(super) fn ensure_started(&self) {
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
