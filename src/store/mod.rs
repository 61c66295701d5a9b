//! Delivery stores: one table of deliveries that is both the **queue** and the
//! **conversation log**, with the attempts hanging off each delivery.
//!
//! The [delivery engine](crate::delivery) talks to a store only through the
//! [`DeliveryStore`] trait:
//!
//! | call | what it does |
//! |---|---|
//! | [`enqueue`](DeliveryStore::enqueue) | stores a new [`Delivery`] (state [`Pending`](DeliveryState::Pending)), committed before it returns |
//! | [`enqueue_claimed`](DeliveryStore::enqueue_claimed) | stores a new delivery already claimed by the engine that accepted it (one write instead of an enqueue and a claim) |
//! | [`claim_due`](DeliveryStore::claim_due) | takes a batch of due deliveries, marks them [`InFlight`](DeliveryState::InFlight) under a [`Lease`] |
//! | [`record_attempt`](DeliveryStore::record_attempt) | appends an [`Attempt`] and moves the delivery to its [`Next`] state (fenced by the lease) |
//! | [`release`](DeliveryStore::release) | gives a claimed delivery back to the queue without an attempt (shutdown) |
//! | [`next_due`](DeliveryStore::next_due) | when the engine should look again |
//! | [`get`](DeliveryStore::get) / [`list`](DeliveryStore::list) | the conversations, for users |
//! | [`renew`](DeliveryStore::renew) | extends a held lease (same fencing token) |
//! | [`resend`](DeliveryStore::resend) / [`resend_matching`](DeliveryStore::resend_matching) | one manual attempt of final deliveries (dead letters) |
//! | [`fail_queued`](DeliveryStore::fail_queued) | gives up the pending deliveries to an endpoint that answered `410 Gone`, or cancels the queued deliveries of a registered endpoint (a deleted webhook) ([`FailRequest`]) |
//! | [`purge`](DeliveryStore::purge) | retention: deletes old final deliveries in small batches |
//! | [`work_notified`](DeliveryStore::work_notified) | wakes idle workers when another process enqueued |
//!
//! The engine never knows which store it has.
//!
//! # Choosing a store
//!
//! | store | feature | durable | processes | use it for |
//! |---|---|---|---|---|
//! | [`MemoryStore`] | `forward` | no: a crash loses what was not delivered | one | tests, best-effort webhooks |
//! | `SqliteStore` | `sqlite` | yes: committed before the caller's answer | one per file | single-instance services, the gateway example |
//! | `PostgresStore` | `postgres` | yes: committed before the caller's answer | many replicas, one queue | several replicas of a service |
//!
//! Every store is both the queue and the conversation log: one row per delivery (its state,
//! next attempt time and lease) with its attempts hanging off it. There is no second broker
//! and no dual write.
//!
//! # Guarantees
//!
//! | | memory | SQLite | PostgreSQL |
//! |---|---|---|---|
//! | an accepted delivery survives a process crash (SIGKILL) | no | yes | yes |
//! | … and a power loss | no | with `synchronous = FULL` (the default) | yes (`synchronous_commit = on`) |
//! | delivery | at least once | at least once | at least once |
//! | interrupted attempts resume | – | at start, at once | when the lease expires (another replica takes over) |
//! | a stalled worker's stale outcome | refused (fencing token) | refused (fencing token) | refused (fencing token) |
//! | memory for a large backlog | bounded by [`max_unfinished`](MemoryStore::max_unfinished) | bounded (claims in batches) | bounded (claims in batches) |
//!
//! The delivery id (`X-Request-Id`, and the signed message id such as Standard Webhooks'
//! `webhook-id`) stays the same across attempts and re-sends: it is the idempotency key
//! receivers de-duplicate on.
//!
//! # Secrets at rest
//!
//! A durable store keeps what it needs to sign every later attempt after a restart: the
//! delivery's [`SigningSpec`] (the scheme's configuration and the **secrets as given**; for
//! the forward layer, the caller's `X-Webhook-Secret`), plus its extra request headers. With encryption keys (`SqliteOptions::encryption_keys`,
//! `PostgresOptions::encryption_keys`, [`EncryptionKeys`] under the `sqlite`/`postgres`
//! features) those are stored encrypted (XChaCha20-Poly1305, rotation by key id); without
//! them, protect the database like any credential store (SQLite files are created `0600`).
//! Secrets never appear in logs, `Debug` output or conversations: the request headers
//! recorded with each attempt are redacted by [the one rule](crate::sensitive), and custom
//! header values are write-only.
//!
//! # For backend authors
//!
//! - One row per [`Delivery`] (id = run id, unique) carrying `state`, `attempts`,
//!   `next_attempt_at` and the lease (`token`, `until`) is the queue; [`Attempt`] rows reference
//!   it. `claim_due` is `… WHERE state = 'pending' AND next_attempt_at <= now OR (state =
//!   'in_flight' AND lease_until < now) ORDER BY next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED`,
//!   bumping the token; `record_attempt`/`release` check the token (fencing).
//! - A [`SigningSpec`] is data: persist its [scheme](SigningSpec::scheme) (serde) and its
//!   secrets, and build the same spec when loading; the engine turns it into a signer when it
//!   sends an attempt, so a retry hours later carries a fresh timestamp.
//! - The engine bounds what it claims ([`EngineBuilder::max_claimed`](crate::delivery::EngineBuilder::max_claimed))
//!   and counts its capacity only for deliveries it accepted itself.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_webhooks::delivery::{ConversationQuery, Delivery, DeliveryState, Next};
//! use tower_webhooks::store::{DeliveryStore, MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_webhooks::store::StoreError> {
//! let store = MemoryStore::new();
//! store.enqueue(Delivery::new("run-1", "https://example.com/hook", r#"{"ok":true}"#)).await?;
//!
//! let claims = store.claim_due(SystemTime::now(), 10, Duration::from_secs(30)).await?;
//! assert_eq!(claims.len(), 1);
//! let conversation = store.get("run-1").await?.unwrap();
//! assert_eq!(conversation.delivery.state, DeliveryState::InFlight);
//! assert!(store.list(&ConversationQuery::default()).await?.len() == 1);
//! # let _ = Next::Retry { at: SystemTime::now() };
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::delivery::model::{
    Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState, Lease, Next,
    SigningSpec,
};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod encryption;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod private_file;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use encryption::{EncryptionKey, EncryptionKeyError, EncryptionKeys, ENCRYPTION_KEYS_ENV};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// The future every [`DeliveryStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Queue figures, for metrics and health checks.
///
/// `pending`, `in_flight` and `oldest_due` are exact in every store: they are what shows a
/// backlog or a stalled queue. `finished` is exact in the memory and SQLite stores; the
/// PostgreSQL store counts it exactly up to 10,000 final deliveries and estimates it beyond
/// (the table's row estimate from PostgreSQL's statistics, less the exact unfinished count), so
/// reading the figures costs the same at any table size and no write pays for keeping a count.
/// That estimate follows the table within seconds as it grows, and after a purge once
/// autovacuum has visited the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Deliveries waiting (due or not). Exact.
    pub pending: usize,
    /// Deliveries claimed by a worker. Exact.
    pub in_flight: usize,
    /// Final deliveries still kept as conversations: exact, but an estimate beyond 10,000 of
    /// them on PostgreSQL (see above).
    pub finished: usize,
    /// When the oldest due-or-waiting delivery is due. Exact.
    pub oldest_due: Option<SystemTime>,
}

impl StoreStats {
    /// How long the oldest due delivery has been waiting at `now` (`None` when nothing is
    /// due yet): the figure that shows a stalled queue.
    pub fn oldest_due_age(&self, now: SystemTime) -> Option<Duration> {
        self.oldest_due.and_then(|at| now.duration_since(at).ok())
    }
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A delivery with this id already exists.
    #[error("delivery `{0}` already exists")]
    Duplicate(String),
    /// No delivery with this id.
    #[error("no delivery `{0}`")]
    NotFound(String),
    /// The lease is not (or no longer) the current one for this delivery.
    #[error("the lease on delivery `{0}` is no longer held")]
    LeaseLost(String),
    /// The store is full.
    #[error("the delivery store is full")]
    Full,
    /// The delivery is not in a final state (a re-send needs a final one).
    #[error("delivery `{0}` is not final yet")]
    NotFinal(String),
    /// The delivery cannot be stored as asked (for example its signer cannot be persisted).
    #[error("invalid delivery: {0}")]
    Invalid(String),
    /// The store does not implement this operation.
    #[error("the delivery store does not support {0}")]
    Unsupported(&'static str),
    /// The backend failed.
    #[error("delivery store error: {0}")]
    Backend(String),
}

/// The queued deliveries [`DeliveryStore::fail_queued`] ends as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailTarget<'a> {
    /// The [`Pending`](DeliveryState::Pending) deliveries to exactly this endpoint URL (it
    /// answered `410 Gone`).
    Gone {
        /// The endpoint URL, as in [`Delivery::endpoint`].
        endpoint: &'a str,
    },
    /// The deliveries recorded under this registered endpoint ([`Delivery::endpoint_id`], a
    /// webhook that was deleted) that are not final and not in flight under a live lease:
    /// [`Pending`](DeliveryState::Pending) ones (whatever their due time) and
    /// [`InFlight`](DeliveryState::InFlight) ones whose lease expired (abandoned claims;
    /// moving them fences the old worker out). A delivery in flight under a live lease is left
    /// to finish its attempt.
    Deleted {
        /// The endpoint's id, as in [`Delivery::endpoint_id`].
        endpoint_id: &'a str,
    },
}

/// What [`DeliveryStore::fail_queued`] fails: at most `limit` deliveries of `target`, which
/// get `reason` as their last error.
///
/// Like every request struct of the store traits, it is plain data built as a literal (or
/// with [`gone`](Self::gone) and [`deleted`](Self::deleted)); a new field is a breaking change
/// of the trait it belongs to, as a new parameter would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailRequest<'a> {
    /// Whose deliveries.
    pub target: FailTarget<'a>,
    /// Their `last_error`.
    pub reason: &'a str,
    /// The most failed by one call.
    pub limit: usize,
}

impl<'a> FailRequest<'a> {
    /// At most `limit` pending deliveries to `endpoint`, which answered `410 Gone`
    /// ([`FailTarget::Gone`]).
    pub fn gone(endpoint: &'a str, reason: &'a str, limit: usize) -> Self {
        let target = FailTarget::Gone { endpoint };
        Self {
            target,
            reason,
            limit,
        }
    }

    /// At most `limit` queued deliveries of the deleted registered endpoint `endpoint_id`
    /// ([`FailTarget::Deleted`]).
    pub fn deleted(endpoint_id: &'a str, reason: &'a str, limit: usize) -> Self {
        let target = FailTarget::Deleted { endpoint_id };
        Self {
            target,
            reason,
            limit,
        }
    }
}

/// What [`DeliveryStore::record_attempt`] records: an attempt of the claimed delivery `id`,
/// under the claim's `lease`, and what comes next for the delivery.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    /// The delivery.
    pub id: &'a str,
    /// The lease it was claimed under (the fencing token the store checks).
    pub lease: Lease,
    /// The attempt, appended to the delivery's conversation.
    pub attempt: Attempt,
    /// The delivery's next state.
    pub next: Next,
}

/// What [`DeliveryStore::purge`] deletes: at most `limit` deliveries in the final `state`
/// last updated before `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeRequest {
    /// A final state (nothing else is purged).
    pub state: DeliveryState,
    /// Those last updated before this time.
    pub before: SystemTime,
    /// The most deleted by one call.
    pub limit: usize,
}

/// What [`DeliveryStore::update_pending`] rewrites in the pending delivery `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpdate<'a> {
    /// The delivery.
    pub id: &'a str,
    /// Its new body; `None` keeps it.
    pub body: Option<Bytes>,
    /// Its new due time.
    pub due: SystemTime,
}

/// A queue of deliveries and their conversations.
///
/// Contract for implementations (the engine relies on it):
/// - [`enqueue`](Self::enqueue) returns only once the delivery is stored (durably, for a durable
///   backend); an existing id is [`StoreError::Duplicate`].
/// - [`claim_due`](Self::claim_due) returns at most `limit` deliveries that are
///   [`Pending`](DeliveryState::Pending) with `next_attempt_at <= now` (or
///   [`InFlight`](DeliveryState::InFlight) with an expired lease), oldest due first, each
///   moved to `InFlight` under a fresh [`Lease`] with a larger token. Never loads the whole queue.
/// - [`record_attempt`](Self::record_attempt) appends the record's attempt, sets `attempts` to
///   its number, and applies its `next`, atomically, only if its `lease` is still current
///   (else [`StoreError::LeaseLost`]).
/// - Memory stays bounded: conversations of final deliveries may be evicted oldest first.
pub trait DeliveryStore: Send + Sync + 'static {
    /// Stores a new delivery.
    fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()>;

    /// Stores a new delivery already claimed by the caller (claim on insert): the same as
    /// [`enqueue`](Self::enqueue) followed by a [`claim_due`](Self::claim_due) that takes
    /// exactly this delivery under a lease until `until`, in one write, so the engine that
    /// accepted a delivery due now sends it without a second round trip to the store. The
    /// row is stored [`InFlight`](DeliveryState::InFlight) with a fresh fencing token and
    /// `until` as its lease expiry, so a crash before the attempt is recorded is recovered
    /// like any interrupted claim (at start for SQLite, at lease expiry elsewhere).
    ///
    /// Returns the claim, or `None` when the store stored the delivery
    /// [`Pending`](DeliveryState::Pending) instead (the default: [`enqueue`](Self::enqueue);
    /// the engine's dispatcher claims it then). Errors as [`enqueue`](Self::enqueue).
    fn enqueue_claimed(
        &self,
        delivery: Delivery,
        until: SystemTime,
    ) -> StoreFuture<'_, Option<Claim>> {
        let _ = until;
        let stored = self.enqueue(delivery);
        Box::pin(async move { stored.await.map(|()| None) })
    }

    /// Claims up to `limit` due deliveries for `lease_for`.
    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease_for: Duration,
    ) -> StoreFuture<'_, Vec<Claim>>;

    /// Records an attempt and the delivery's next state ([`AttemptRecord`]).
    fn record_attempt<'a>(&'a self, record: AttemptRecord<'a>) -> StoreFuture<'a, ()>;

    /// Returns a claimed delivery to the queue, due now, without recording an attempt.
    fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()>;

    /// When the earliest pending delivery is due (`None` when the queue is empty).
    /// A backend that cannot tell cheaply may return `None` and rely on the engine's poll
    /// interval.
    fn next_due(&self) -> StoreFuture<'_, Option<SystemTime>>;

    /// One conversation.
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Conversation>>;

    /// Conversations matching `query`, newest first.
    fn list<'a>(&'a self, query: &'a ConversationQuery) -> StoreFuture<'a, Vec<Conversation>>;

    /// Queue figures.
    fn stats(&self) -> StoreFuture<'_, StoreStats>;

    /// Extends a held lease until `until`, keeping its token (the engine renews a claim that
    /// waited for a free slot before it sends the attempt).
    ///
    /// [`StoreError::LeaseLost`] when `lease` is no longer current. The default answers
    /// [`StoreError::Unsupported`] and the engine goes on with the lease it has.
    fn renew<'a>(&'a self, id: &'a str, lease: Lease, until: SystemTime) -> StoreFuture<'a, Lease> {
        let _ = (id, lease, until);
        Box::pin(std::future::ready(Err(StoreError::Unsupported("renew"))))
    }

    /// Makes a final delivery due now for one manual attempt ([`Delivery::manual`]), keeping
    /// its id and history; `signing` replaces the stored signing (the endpoint's current
    /// secret), `None` keeps it.
    ///
    /// [`StoreError::NotFound`], or [`StoreError::NotFinal`] when it is pending or in flight.
    fn resend<'a>(&'a self, id: &'a str, signing: Option<SigningSpec>) -> StoreFuture<'a, ()> {
        let _ = (id, signing);
        Box::pin(std::future::ready(Err(StoreError::Unsupported("resend"))))
    }

    /// [`resend`](Self::resend) for every delivery matching `query` (its state, by default
    /// [`Failed`](DeliveryState::Failed), must be final; `limit` 0 means all); returns how
    /// many were queued.
    fn resend_matching<'a>(
        &'a self,
        query: &'a ConversationQuery,
        signing: Option<SigningSpec>,
    ) -> StoreFuture<'a, usize> {
        let _ = (query, signing);
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "resend_matching",
        ))))
    }

    /// Ends at most `request.limit` queued deliveries of [`request.target`](FailTarget) as
    /// [`Failed`](DeliveryState::Failed) dead letters with `request.reason` as their
    /// `last_error`: they are never attempted again (unless re-sent by hand) and their
    /// conversations stay queryable. Returns their ids; the caller repeats while a full batch
    /// comes back.
    ///
    /// The default answers [`StoreError::Unsupported`]: a store that does not implement it
    /// keeps retrying a gone endpoint's deliveries and keeps sending a deleted endpoint's
    /// queued deliveries on their retry schedule.
    fn fail_queued<'a>(&'a self, request: FailRequest<'a>) -> StoreFuture<'a, Vec<String>> {
        let _ = request;
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "fail_queued",
        ))))
    }

    /// Deletes the deliveries of `request` with their attempts (retention); returns how many.
    fn purge(&self, request: PurgeRequest) -> StoreFuture<'_, usize> {
        let _ = request;
        Box::pin(std::future::ready(Err(StoreError::Unsupported("purge"))))
    }

    /// Rewrites a [`Pending`](DeliveryState::Pending) delivery that has not been attempted
    /// yet ([`PendingUpdate`]): its due time, and its body when given. The engine holds an
    /// async-mode delivery this way (a placeholder saying the run was interrupted, due later
    /// and postponed while the run goes on) and completes it with the run's result.
    ///
    /// [`StoreError::LeaseLost`] when the delivery is no longer pending and unattempted
    /// (another worker took the placeholder), [`StoreError::NotFound`].
    fn update_pending<'a>(&'a self, update: PendingUpdate<'a>) -> StoreFuture<'a, ()> {
        let _ = update;
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "update_pending",
        ))))
    }

    /// Whether what it accepts survives a restart of the process (a database, not memory).
    /// The engine then lets the store buffer every accepted delivery instead of refusing new
    /// ones at its [capacity](crate::delivery::EngineBuilder::capacity). `false` by default.
    fn is_durable(&self) -> bool {
        false
    }

    /// Resolves when work may have arrived from elsewhere (another process enqueued a
    /// delivery: PostgreSQL's `LISTEN/NOTIFY`), so idle workers need not wait for the next
    /// poll. The engine calls it again after each wake-up; it never calls into the engine.
    /// The default never resolves.
    fn work_notified(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::pending())
    }
}
