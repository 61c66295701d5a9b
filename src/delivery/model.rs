//! The domain of the delivery engine: a [`Delivery`] (one message, a row of the queue and the
//! head of a conversation), its [`Attempt`]s and the engine's [`Decision`]s, the queue's
//! [`Lease`]s and [`Claim`]s, the [`Conversation`] views, and what to sign ([`SigningSpec`]).
//!
//! Every source of deliveries (a forwarded response, a published event) builds the same
//! [`Delivery`]. A [store](crate::store) persists these types and knows nothing of who made
//! them or how a signature is computed: a [`SigningSpec`] is data (a scheme's configuration
//! and the secrets) that the engine turns into a signer when it sends an attempt, so a
//! delivery read back after a restart signs exactly as the one that was accepted.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::scheme::{
    BuiltinScheme, Cerebrium, GitHub, Nextmv, Scheme, Slack, StandardWebhooks, Stripe, Valohai,
};
use crate::secret::SecretSet;
use crate::sensitive::redacted_headers;
use crate::time::unix_millis;

pub(crate) use super::recorded_headers::RecordedHeaders;

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

/// What created a delivery, kept with it and shown in its conversation.
///
/// Serialised as `{"event": "<type>"}`, `"resend"`, or the origin's bare label
/// (`"forward"`, `"application"`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// A published event of this type (the subscription registry).
    Event(String),
    /// A manual re-send of an earlier delivery.
    Resend,
    /// Anything else, labelled by what created it: the forward layer uses `forward`,
    /// `forward_async` and `forward_legacy`; [`Delivery::new`] starts with `application`.
    #[serde(untagged)]
    Origin(Cow<'static, str>),
}

impl Source {
    /// The label of a delivery made by the application itself ([`Delivery::new`]'s default).
    pub const APPLICATION: Self = Self::Origin(Cow::Borrowed("application"));

    /// An origin labelled `label`.
    pub fn origin(label: impl Into<Cow<'static, str>>) -> Self {
        Self::Origin(label.into())
    }
}

/// The format a delivery is signed in, as data a durable store keeps: the engine finds the
/// signer again from it after a restart.
///
/// Serialised as `{"builtin": {"type": "cerebrium", …}}` or `{"custom": "<name>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SchemeSpec {
    /// A built-in scheme with its configuration.
    Builtin(BuiltinScheme),
    /// A signer of the application's own, found by its [name](crate::scheme::Signer::name)
    /// among the engine's [custom signers](crate::delivery::EngineBuilder::custom_signer); an
    /// engine that does not know it fails the attempt instead of sending it unsigned.
    Custom(String),
}

impl SchemeSpec {
    /// A signer registered with the engine under `name`.
    pub fn custom(name: impl Into<String>) -> Self {
        Self::Custom(name.into())
    }

    /// The scheme's name (`cerebrium`, `stripe`, … or the custom signer's name).
    pub fn name(&self) -> &str {
        match self {
            Self::Builtin(scheme) => scheme.name(),
            Self::Custom(name) => name,
        }
    }
}

impl From<BuiltinScheme> for SchemeSpec {
    fn from(scheme: BuiltinScheme) -> Self {
        Self::Builtin(scheme)
    }
}

macro_rules! builtin_spec {
    ($($scheme:ident),*) => {$(
        impl From<$scheme> for SchemeSpec {
            fn from(scheme: $scheme) -> Self {
                Self::Builtin(BuiltinScheme::from(scheme))
            }
        }
    )*};
}
builtin_spec!(
    Cerebrium,
    Nextmv,
    Stripe,
    StandardWebhooks,
    GitHub,
    Slack,
    Valohai
);

/// How a delivery is signed: the format and its secrets, as data.
///
/// The engine signs every attempt from it when the attempt is sent (so a retry hours later
/// carries a fresh timestamp). `Debug` prints the scheme's name and a redacted secret set.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSpec {
    scheme: SchemeSpec,
    secrets: SecretSet,
}

impl SigningSpec {
    /// Signing in `scheme` (a built-in scheme such as
    /// [`Cerebrium`](crate::scheme::Cerebrium), or a [`SchemeSpec`]) with `secrets`; the
    /// primary secret signs (several during a rotation, where the format allows).
    pub fn new(scheme: impl Into<SchemeSpec>, secrets: impl Into<SecretSet>) -> Self {
        Self {
            scheme: scheme.into(),
            secrets: secrets.into(),
        }
    }

    /// The format.
    pub fn scheme(&self) -> &SchemeSpec {
        &self.scheme
    }

    /// The secrets.
    pub fn secrets(&self) -> &SecretSet {
        &self.secrets
    }
}

impl fmt::Debug for SigningSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningSpec")
            .field("scheme", &self.scheme.name())
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
    pub signing: Option<SigningSpec>,
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
    /// Whether the next attempt is a manual re-send ([`DeliveryStore::resend`](crate::store::DeliveryStore::resend)): exactly one
    /// attempt, recorded with [`Attempt::manual`], whatever the policy says.
    pub manual: bool,
}

impl Delivery {
    /// A pending delivery of `body` to `endpoint`, due now, unsigned, from [`Source::APPLICATION`].
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
            source: Source::APPLICATION,
            last_error: None,
            manual: false,
        }
    }

    /// Signs every attempt with `signing`.
    pub fn with_signing(mut self, signing: SigningSpec) -> Self {
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
    pub headers: RecordedHeaders,
    /// The body, truncated to the engine's response limit (20 000 bytes by default).
    #[serde(serialize_with = "ser_body")]
    pub body: Bytes,
    /// Whether the body was longer than what was kept.
    pub body_truncated: bool,
}

impl AttemptResponse {
    /// A response record.
    pub fn new(status: u16, headers: RecordedHeaders, body: Bytes, body_truncated: bool) -> Self {
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
    pub request_headers: RecordedHeaders,
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
            request_headers: RecordedHeaders::default(),
            body_size: 0,
            body_sha256: String::new(),
            response: None,
            outcome,
            decision: Decision::GaveUp,
            manual: false,
        }
    }

    pub(crate) fn approx_size(&self) -> usize {
        256 + self.request_headers.approx_size()
            + self
                .response
                .as_ref()
                .map_or(0, |r| r.body.len() + r.headers.approx_size())
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
    /// The lease to present to [`DeliveryStore::record_attempt`](crate::store::DeliveryStore::record_attempt) / [`DeliveryStore::release`](crate::store::DeliveryStore::release).
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

/// Which conversations [`DeliveryStore::list`](crate::store::DeliveryStore::list) returns, newest first.
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
    /// [`DeliveryStore::list`](crate::store::DeliveryStore::list); the bulk operations ignore it).
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
