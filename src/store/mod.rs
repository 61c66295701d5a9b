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
//! | [`fail_pending`](DeliveryStore::fail_pending) | gives up the pending deliveries to an endpoint that answered `410 Gone` |
//! | [`cancel_endpoint`](DeliveryStore::cancel_endpoint) | cancels the queued deliveries of a registered endpoint (a deleted webhook) |
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
//! scheme's description ([`Signer::describe`](crate::scheme::Signer::describe)) and the
//! **secrets as given** (for the forward layer, the caller's `X-Webhook-Secret`), plus the
//! delivery's extra request headers. With encryption keys (`SqliteOptions::encryption_keys`,
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
//! - [`Signing`] holds an `Arc<dyn Signer>`: persist [`Signer::name`](crate::scheme::Signer::name)
//!   (and the scheme's configuration) plus the secrets, and rebuild the signer when loading.
//!   Attempts are signed when sent, so a retry hours later carries a fresh timestamp.
//! - The engine bounds what it claims ([`EngineBuilder::max_claimed`](crate::delivery::EngineBuilder::max_claimed))
//!   and counts its capacity only for deliveries it accepted itself.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_webhooks::store::{
//!     Delivery, DeliveryState, DeliveryStore, MemoryStore, Next, ConversationQuery,
//! };
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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use serde::{Serialize, Serializer};

use crate::scheme::SharedSigner;
use crate::secret::SecretSet;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod encryption;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
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
pub use memory::{
    MemoryStore, DEFAULT_MAX_FINISHED, DEFAULT_MAX_FINISHED_BYTES, DEFAULT_MAX_UNFINISHED,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};

/// The crate's one rule for secret header values, also reachable here.
pub use crate::sensitive::{is_sensitive_header, redacted_headers};

/// The future every [`DeliveryStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting in the queue until [`Delivery::next_attempt_at`].
    Pending,
    /// Claimed by a worker; an attempt is being made.
    InFlight,
    /// An attempt got a 2xx answer. Final.
    Delivered,
    /// The policy gave up (a permanent status, or attempts exhausted). Final, a dead letter.
    Failed,
    /// The SSRF guard refused the endpoint; nothing was sent. Final.
    Refused,
}

impl DeliveryState {
    /// Whether no further attempt will be made.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Failed | Self::Refused)
    }

    /// The lowercase name (`"pending"`, `"in_flight"`, …), as stored and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Refused => "refused",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What created a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// A response forwarded in sync mode by [`WebhookForwardLayer`](crate::WebhookForwardLayer).
    Forward,
    /// A result delivered in async mode (`?async=true`, or a programmatic async trigger).
    ForwardAsync,
    /// A result delivered for the legacy `webhook_endpoint` body field.
    ForwardLegacy,
    /// A published event of this type (the subscription registry).
    Event(String),
    /// A manual re-send of an earlier delivery.
    Resend,
    /// Anything else, named by the application.
    Other(String),
}

/// How a delivery is signed: the format and its secrets.
///
/// `Debug` prints the scheme name and a redacted secret set.
#[derive(Clone)]
pub struct Signing {
    /// The format ([`Cerebrium`](crate::scheme::Cerebrium) by default in the forward layer).
    pub signer: SharedSigner,
    /// The secrets; the primary one signs (several during a rotation, where the format allows).
    pub secrets: SecretSet,
}

impl Signing {
    /// Signing with `signer` and `secrets`.
    pub fn new(signer: SharedSigner, secrets: impl Into<SecretSet>) -> Self {
        Self {
            signer,
            secrets: secrets.into(),
        }
    }
}

impl fmt::Debug for Signing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signing")
            .field("scheme", &self.signer.name())
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// One message to deliver: a row of the queue and the head of a conversation.
///
/// The id is the run id: it is sent as `X-Request-Id` (and as the signed message id) and stays
/// the same across attempts, so receivers de-duplicate on it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Delivery {
    /// The delivery (run) id.
    pub id: String,
    /// The absolute `http`/`https` URL the body is POSTed to.
    pub endpoint: String,
    /// The registered endpoint (subscription) this delivery belongs to, if any.
    pub endpoint_id: Option<String>,
    /// How to sign each attempt; `None` sends unsigned.
    #[serde(skip)]
    pub signing: Option<Signing>,
    /// The exact body bytes sent on every attempt.
    #[serde(serialize_with = "ser_body")]
    pub body: Bytes,
    /// Extra request headers sent on every attempt (besides `Content-Type`, `X-Request-Id` and
    /// the signature headers).
    #[serde(serialize_with = "ser_header_map")]
    pub headers: HeaderMap,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while [`DeliveryState::Pending`]).
    #[serde(serialize_with = "ser_time")]
    pub next_attempt_at: SystemTime,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// When it was accepted.
    #[serde(serialize_with = "ser_time")]
    pub created_at: SystemTime,
    /// When it last changed.
    #[serde(serialize_with = "ser_time")]
    pub updated_at: SystemTime,
    /// What created it.
    pub source: Source,
    /// A short reason for the final state (`"410 Gone"`, `"3 attempts exhausted"`, …).
    pub last_error: Option<String>,
    /// Whether the next attempt is a manual re-send ([`DeliveryStore::resend`]): exactly one
    /// attempt, recorded with [`Attempt::manual`], whatever the policy says.
    pub manual: bool,
}

impl Delivery {
    /// A pending delivery of `body` to `endpoint`, due now, unsigned, from [`Source::Forward`].
    pub fn new(id: impl Into<String>, endpoint: impl Into<String>, body: impl Into<Bytes>) -> Self {
        let now = SystemTime::now();
        Self {
            id: id.into(),
            endpoint: endpoint.into(),
            endpoint_id: None,
            signing: None,
            body: body.into(),
            headers: HeaderMap::new(),
            attempts: 0,
            next_attempt_at: now,
            state: DeliveryState::Pending,
            created_at: now,
            updated_at: now,
            source: Source::Forward,
            last_error: None,
            manual: false,
        }
    }

    /// Signs every attempt with `signing`.
    pub fn with_signing(mut self, signing: Signing) -> Self {
        self.signing = Some(signing);
        self
    }

    /// Sets what created the delivery.
    pub fn with_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Ties the delivery to a registered endpoint (subscription) id.
    pub fn with_endpoint_id(mut self, id: impl Into<String>) -> Self {
        self.endpoint_id = Some(id.into());
        self
    }

    /// Adds extra request headers. Their values are write-only: marked sensitive, so `Debug`
    /// and logging layers never show them, and redacted in recorded attempts.
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers
            .extend(headers.into_iter().map(|(name, mut value)| {
                value.set_sensitive(true);
                (name, value)
            }));
        self
    }

    /// Delays the first attempt until `at`.
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.next_attempt_at = at;
        self
    }

    /// An approximate size in memory, for byte budgets.
    pub(crate) fn approx_size(&self) -> usize {
        256 + self.id.len()
            + self.endpoint.len()
            + self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 16)
                .sum::<usize>()
    }
}

/// What happened on one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The endpoint answered with this status.
    Status(u16),
    /// No (complete) answer within the attempt's timeout, connect included.
    Timeout,
    /// The connection could not be made (refused, reset, DNS failure, TLS failure).
    Connect(String),
    /// The connection broke after it was made (or another transport error).
    Network(String),
    /// The SSRF guard refused the endpoint; nothing was sent.
    Refused(String),
    /// The message could not be signed; nothing was sent.
    SignFailed(String),
}

impl AttemptOutcome {
    /// The HTTP status, when the endpoint answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status(status) => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "HTTP {status}"),
            Self::Timeout => f.write_str("timeout"),
            Self::Connect(why) => write!(f, "connect error: {why}"),
            Self::Network(why) => write!(f, "network error: {why}"),
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::SignFailed(why) => write!(f, "signing failed: {why}"),
        }
    }
}

/// What the engine decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Decision {
    /// Delivered; no more attempts.
    Delivered,
    /// Another attempt at this time.
    #[serde(serialize_with = "ser_time_variant")]
    RetryAt(SystemTime),
    /// Given up: permanent failure, or attempts exhausted.
    GaveUp,
    /// Given up, and the policy asks for the endpoint to be disabled (`410 Gone`).
    DisableEndpoint,
    /// Refused by the SSRF guard.
    Refused,
}

/// The endpoint's answer on one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AttemptResponse {
    /// The status code.
    pub status: u16,
    /// The response headers (`Set-Cookie` redacted).
    pub headers: Vec<(String, String)>,
    /// The body, truncated to the engine's response limit (20 000 bytes by default).
    #[serde(serialize_with = "ser_body")]
    pub body: Bytes,
    /// Whether the body was longer than what was kept.
    pub body_truncated: bool,
}

impl AttemptResponse {
    /// A response record.
    pub fn new(
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
        body_truncated: bool,
    ) -> Self {
        Self {
            status,
            headers,
            body,
            body_truncated,
        }
    }
}

/// One attempt of a delivery, as recorded in its conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When the attempt started.
    #[serde(serialize_with = "ser_time")]
    pub started_at: SystemTime,
    /// From the start until the answer (or the failure).
    #[serde(serialize_with = "ser_duration")]
    pub latency: Duration,
    /// The request headers sent, signatures, secrets and `Authorization` redacted.
    pub request_headers: Vec<(String, String)>,
    /// The size of the body sent.
    pub body_size: usize,
    /// The lowercase hex SHA-256 of the body sent.
    pub body_sha256: String,
    /// The answer, when there was one.
    pub response: Option<AttemptResponse>,
    /// What happened.
    pub outcome: AttemptOutcome,
    /// What the engine decided next.
    pub decision: Decision,
    /// Whether a user asked for this attempt (a re-send) rather than the schedule.
    pub manual: bool,
}

impl Attempt {
    /// A record of attempt `number` with `outcome`; the other fields are empty.
    pub fn new(number: u32, started_at: SystemTime, outcome: AttemptOutcome) -> Self {
        Self {
            number,
            started_at,
            latency: Duration::ZERO,
            request_headers: Vec::new(),
            body_size: 0,
            body_sha256: String::new(),
            response: None,
            outcome,
            decision: Decision::GaveUp,
            manual: false,
        }
    }

    pub(crate) fn approx_size(&self) -> usize {
        let headers =
            |h: &[(String, String)]| h.iter().map(|(n, v)| n.len() + v.len() + 48).sum::<usize>();
        256 + headers(&self.request_headers)
            + self
                .response
                .as_ref()
                .map_or(0, |r| r.body.len() + headers(&r.headers))
    }
}

/// What a delivery becomes after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Next {
    /// Back to the queue, due at `at`.
    Retry {
        /// When the next attempt is due.
        at: SystemTime,
    },
    /// A final state ([`DeliveryState::is_final`]) with a short reason.
    Final {
        /// The final state.
        state: DeliveryState,
        /// Why (for failures), kept as [`Delivery::last_error`].
        reason: Option<String>,
    },
}

/// A claim on a delivery: only the holder of the current lease may record its outcome
/// (a fencing token, so a worker that stalled past its lease cannot write a stale result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The fencing token, increasing with every claim.
    pub token: u64,
    /// When the claim expires and the delivery may be claimed again.
    pub until: SystemTime,
}

/// A claimed delivery and its lease.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The delivery, as stored (state [`DeliveryState::InFlight`]).
    pub delivery: Delivery,
    /// The lease to present to [`DeliveryStore::record_attempt`] / [`DeliveryStore::release`].
    pub lease: Lease,
}

/// A delivery with every attempt made so far.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Conversation {
    /// The delivery.
    pub delivery: Delivery,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// Which conversations [`DeliveryStore::list`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConversationQuery {
    /// Only deliveries to this exact endpoint URL.
    pub endpoint: Option<String>,
    /// Only deliveries of this registered endpoint id.
    pub endpoint_id: Option<String>,
    /// Only deliveries in this state.
    pub state: Option<DeliveryState>,
    /// Only deliveries created at or after this time.
    pub since: Option<SystemTime>,
    /// At most this many (0 means the store's default page, 100).
    pub limit: usize,
    /// Only conversations after this one in the newest-first order (keyset pagination of
    /// [`DeliveryStore::list`]; the bulk operations ignore it).
    pub after: Option<ConversationPosition>,
}

/// Where a page of [`ConversationQuery`] results ended: the last conversation of the
/// previous page, for keyset pagination ([`ConversationQuery::after`]).
///
/// The next page holds the deliveries stored before that one. When that delivery has been
/// purged meanwhile (retention), the stores fall back to its creation time: the deliveries
/// created strictly before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConversationPosition {
    /// The delivery id.
    pub id: String,
    /// Its creation time.
    pub created_at: SystemTime,
}

impl ConversationPosition {
    /// The position of delivery `id`, created at `created_at`.
    pub fn new(id: impl Into<String>, created_at: SystemTime) -> Self {
        Self {
            id: id.into(),
            created_at,
        }
    }

    /// The position of `delivery`.
    pub fn of(delivery: &Delivery) -> Self {
        Self::new(delivery.id.clone(), delivery.created_at)
    }
}

impl ConversationQuery {
    /// Every conversation (first page).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only deliveries to `endpoint`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Only deliveries of the registered endpoint `id`.
    pub fn endpoint_id(mut self, id: impl Into<String>) -> Self {
        self.endpoint_id = Some(id.into());
        self
    }

    /// Only deliveries in `state`.
    pub fn state(mut self, state: DeliveryState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only deliveries created at or after `since`.
    pub fn since(mut self, since: SystemTime) -> Self {
        self.since = Some(since);
        self
    }

    /// At most `limit` conversations.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only the conversations after `position` (the last one of the previous page) in the
    /// newest-first order.
    pub fn after(mut self, position: ConversationPosition) -> Self {
        self.after = Some(position);
        self
    }

    /// Whether `delivery` matches the filters.
    pub fn matches(&self, delivery: &Delivery) -> bool {
        self.endpoint
            .as_ref()
            .is_none_or(|e| *e == delivery.endpoint)
            && self
                .endpoint_id
                .as_ref()
                .is_none_or(|id| Some(id) == delivery.endpoint_id.as_ref())
            && self.state.is_none_or(|s| s == delivery.state)
            && self.since.is_none_or(|t| delivery.created_at >= t)
    }
}

/// Queue figures, for metrics and health checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Deliveries waiting (due or not).
    pub pending: usize,
    /// Deliveries claimed by a worker.
    pub in_flight: usize,
    /// Final deliveries still kept as conversations.
    pub finished: usize,
    /// When the oldest due-or-waiting delivery is due.
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// A delivery with this id already exists.
    Duplicate(String),
    /// No delivery with this id.
    NotFound(String),
    /// The lease is not (or no longer) the current one for this delivery.
    LeaseLost(String),
    /// The store is full.
    Full,
    /// The delivery is not in a final state (a re-send needs a final one).
    NotFinal(String),
    /// The delivery cannot be stored as asked (for example its signer cannot be persisted).
    Invalid(String),
    /// The store does not implement this operation.
    Unsupported(&'static str),
    /// The backend failed.
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duplicate(id) => write!(f, "delivery `{id}` already exists"),
            Self::NotFound(id) => write!(f, "no delivery `{id}`"),
            Self::LeaseLost(id) => write!(f, "the lease on delivery `{id}` is no longer held"),
            Self::Full => f.write_str("the delivery store is full"),
            Self::NotFinal(id) => write!(f, "delivery `{id}` is not final yet"),
            Self::Invalid(why) => write!(f, "invalid delivery: {why}"),
            Self::Unsupported(what) => write!(f, "the delivery store does not support {what}"),
            Self::Backend(why) => write!(f, "delivery store error: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A queue of deliveries and their conversations.
///
/// Contract for implementations (the engine relies on it):
/// - [`enqueue`](Self::enqueue) returns only once the delivery is stored (durably, for a durable
///   backend); an existing id is [`StoreError::Duplicate`].
/// - [`claim_due`](Self::claim_due) returns at most `limit` deliveries that are
///   [`Pending`](DeliveryState::Pending) with `next_attempt_at <= now` (or
///   [`InFlight`](DeliveryState::InFlight) with an expired lease), oldest due first, each
///   moved to `InFlight` under a fresh [`Lease`] with a larger token. Never loads the whole queue.
/// - [`record_attempt`](Self::record_attempt) appends the attempt, sets `attempts` to its number,
///   and applies `next`, atomically, only if `lease` is still current
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

    /// Records an attempt and the delivery's next state.
    fn record_attempt<'a>(
        &'a self,
        id: &'a str,
        lease: Lease,
        attempt: Attempt,
        next: Next,
    ) -> StoreFuture<'a, ()>;

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
    fn resend<'a>(&'a self, id: &'a str, signing: Option<Signing>) -> StoreFuture<'a, ()> {
        let _ = (id, signing);
        Box::pin(std::future::ready(Err(StoreError::Unsupported("resend"))))
    }

    /// [`resend`](Self::resend) for every delivery matching `query` (its state, by default
    /// [`Failed`](DeliveryState::Failed), must be final; `limit` 0 means all); returns how
    /// many were queued.
    fn resend_matching<'a>(
        &'a self,
        query: &'a ConversationQuery,
        signing: Option<Signing>,
    ) -> StoreFuture<'a, usize> {
        let _ = (query, signing);
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "resend_matching",
        ))))
    }

    /// Gives up at most `limit` [`Pending`](DeliveryState::Pending) deliveries to exactly
    /// `endpoint` (the endpoint answered `410 Gone`): they become
    /// [`Failed`](DeliveryState::Failed) dead letters with `reason`. Returns their ids.
    fn fail_pending<'a>(
        &'a self,
        endpoint: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let _ = (endpoint, reason, limit);
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "fail_pending",
        ))))
    }

    /// Cancels at most `limit` deliveries recorded under `endpoint_id`
    /// ([`Delivery::endpoint_id`], a registered endpoint that was deleted) that are not final
    /// and not in flight under a live lease: [`Pending`](DeliveryState::Pending) ones (whatever
    /// their due time) and [`InFlight`](DeliveryState::InFlight) ones whose lease expired
    /// (abandoned claims; moving them fences the old worker out). They become
    /// [`Failed`](DeliveryState::Failed) with `reason` as their `last_error` and are never
    /// attempted again (unless re-sent by hand); their conversations stay queryable. A
    /// delivery in flight under a live lease is left to finish its attempt. Returns the ids.
    ///
    /// The default answers [`StoreError::Unsupported`]: a store that does not implement it
    /// keeps sending a deleted endpoint's queued deliveries on their retry schedule.
    fn cancel_endpoint<'a>(
        &'a self,
        endpoint_id: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let _ = (endpoint_id, reason, limit);
        Box::pin(std::future::ready(Err(StoreError::Unsupported(
            "cancel_endpoint",
        ))))
    }

    /// Deletes at most `limit` deliveries in the final `state` last updated before `before`,
    /// with their attempts (retention); returns how many.
    fn purge(
        &self,
        state: DeliveryState,
        before: SystemTime,
        limit: usize,
    ) -> StoreFuture<'_, usize> {
        let _ = (state, before, limit);
        Box::pin(std::future::ready(Err(StoreError::Unsupported("purge"))))
    }

    /// Rewrites a [`Pending`](DeliveryState::Pending) delivery that has not been attempted
    /// yet: its due time, and its body when given. The engine holds an async-mode delivery
    /// this way (a placeholder saying the run was interrupted, due later and postponed while
    /// the run goes on) and completes it with the run's result.
    ///
    /// [`StoreError::LeaseLost`] when the delivery is no longer pending and unattempted
    /// (another worker took the placeholder), [`StoreError::NotFound`].
    fn update_pending<'a>(
        &'a self,
        id: &'a str,
        body: Option<Bytes>,
        due: SystemTime,
    ) -> StoreFuture<'a, ()> {
        let _ = (id, body, due);
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

/// Unix milliseconds of `time` (negative before 1970).
pub fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`unix_millis`] (saturating at the epoch for unrepresentable times).
#[cfg(any(feature = "registry", feature = "sqlite", feature = "postgres"))]
pub(crate) fn from_unix_millis(ms: i64) -> SystemTime {
    let span = Duration::from_millis(ms.unsigned_abs());
    let time = if ms >= 0 {
        UNIX_EPOCH.checked_add(span)
    } else {
        UNIX_EPOCH.checked_sub(span)
    };
    time.unwrap_or(UNIX_EPOCH)
}

fn ser_time<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_i64(unix_millis(*time))
}

fn ser_time_variant<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    ser_time(time, serializer)
}

fn ser_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
}

fn ser_body<S: Serializer>(body: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(body))
}

fn ser_header_map<S: Serializer>(headers: &HeaderMap, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(redacted_headers(headers))
}
