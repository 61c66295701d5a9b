//! The subscription registry: a complete webhook API for an application's users, mounted as
//! one [`axum::Router`], and [`publish`](WebhookRegistry::publish) to fan events out to them.
//!
//! Users register endpoints for the event types the application declares (the
//! [Nextmv](https://docs.nextmv.io/docs/platform/run-app-remotely/webhooks) model: caller-chosen
//! ids, a signing secret per webhook, `Nextmv-Signature: t=..,v1=..` by default); the
//! application calls `publish("run.status", payload)`; each subscribed webhook gets its own
//! signed [`Delivery`] through the same
//! [`DeliveryEngine`] as the forward layer — retries, SSRF guard, conversations, and the
//! durability of whichever [store](crate::store) the engine has.
//!
//! # Example
//!
//! ```no_run
//! use tower_webhooks::registry::{BearerTokens, EventType, RunState, RunStatus, WebhookRegistry};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = WebhookRegistry::builder()
//!     .event_type(EventType::run_status())
//!     .auth(BearerTokens::new().token("api-key-of-acme", "acme"))
//!     .build();
//!
//! let app = axum::Router::new().merge(registry.router());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! // Whenever a run changes state:
//! let status = RunStatus::new("run-1", "routing-app", RunState::Succeeded, std::time::SystemTime::now());
//! let report = registry.publish(RunStatus::TYPE, &status).await?;
//! println!("{} deliveries queued", report.deliveries.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! All under `/v1/webhooks` (and `/v1/event-types`), JSON in and out, `Authorization: Bearer <key>` checked by the
//! application's [`Authenticate`]; every error is `application/problem+json` with a stable
//! `type` ([`Problem`](crate::Problem)). A tenant asking for another tenant's webhook gets
//! `404`, never `403`.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/webhooks` | `201` the webhook (`409` for a duplicate id) |
//! | `GET /v1/webhooks?limit=&cursor=` | `200` a page of webhooks, ordered by id |
//! | `GET /v1/webhooks/{id}` | `200` the webhook |
//! | `PUT /v1/webhooks/{id}` | `200` all fields replaced |
//! | `DELETE /v1/webhooks/{id}` | `204` |
//! | `GET /v1/webhooks/{id}/secret` | `200` `{"secret": …}` (the only place a secret appears) |
//! | `POST /v1/webhooks/{id}/secret/rotate` | `200` the new secret; the old one keeps signing for the grace period (24 h) |
//! | `PUT /v1/webhooks/{id}/headers` | `200` custom headers set |
//! | `POST /v1/webhooks/{id}/disable`, `/enable` | `200` |
//! | `GET /v1/webhooks/{id}/conversations?limit=&cursor=&state=` | `200` deliveries with every attempt, newest first (`offset=` still accepted) |
//! | `GET /v1/webhooks/{id}/conversations/{delivery_id}` | `200` one conversation |
//! | `POST /v1/webhooks/{id}/trigger` | `202` a test event queued |
//! | `POST /v1/webhooks/{id}/conversations/{delivery_id}/resend` | `202` one manual attempt queued |
//! | `POST /v1/webhooks/{id}/recover` `{"since": "<RFC 3339>"}` | `202` every failed delivery since then re-sent |
//! | `GET /v1/webhooks/openapi.json` | `200` the [OpenAPI document](WebhookRegistry::openapi) (no authentication) |
//! | `GET /v1/event-types` | `200` the declared event types: name, description, schema, example |
//!
//! Merge the [router](WebhookRegistry::router) into the application's, or nest it under a
//! prefix (`Router::new().nest("/api", registry.router())`): `Location` headers and the paths
//! of the served OpenAPI document follow the mount point.
//!
//! List routes page by an opaque `cursor` (the `next_cursor` of the previous page, `null` on
//! the last one): keyset pagination, stable while new records arrive. A bad cursor is a `400`
//! `invalid-pagination` problem.
//!
//! # Durable subscriptions
//!
//! [`MemorySubscriptions`] (the default) loses every webhook on restart. With feature
//! `sqlite`, `SqliteSubscriptions` keeps them in a SQLite file (the delivery store's file
//! is fine); with feature `postgres`, `PostgresSubscriptions` keeps them in a
//! `PostgresStore`'s database and schema. Both keep every
//! field of a [`Webhook`], secrets included. Configure encryption keys
//! (`SqliteSubscriptions::connect_encrypted`, `PostgresOptions::encryption_keys`) so the
//! signing secrets and custom header values are stored encrypted (XChaCha20-Poly1305, key
//! rotation by key id); without them **the database is as sensitive as the secrets**
//! (restrict access to it; secrets never appear in `Debug` or logs).
//!
//! # Transactional outbox (PostgreSQL)
//!
//! With feature `postgres`, `WebhookRegistry::publish_in_transaction` writes the deliveries
//! through the application's own `sqlx` transaction, into the tables of the store given to
//! `RegistryBuilder::outbox`: the event is recorded if and only if the application's change
//! commits, and workers are woken by a `NOTIFY` that PostgreSQL delivers on commit only.
//!
//! # Delivered events
//!
//! Each delivery's body is an [`Event`]:
//! `{"id": "evt_…", "type": "run.status", "created_at": "<RFC 3339>", "data": {…}}`, POSTed
//! with `Content-Type: application/json`, `X-Request-Id: dlv_…` (the delivery id: the same on
//! every retry and re-send, what receivers de-duplicate on), the webhook's custom headers and
//! its signature header. With the default Nextmv scheme a receiver verifies exactly as in
//! Nextmv's handler: HMAC-SHA256 over `{t}.{body}` with the secret from the secret route,
//! lowercase hex, compared with the `v1` value.
//!
//! # Secret rotation
//!
//! `POST /v1/webhooks/{id}/secret/rotate` makes a new current secret; the previous one keeps
//! signing until the grace period ends ([`RegistryBuilder::rotation_grace`], 24 h by default,
//! or `{"grace_period_seconds": n}` in the request). Nextmv, Stripe and Standard Webhooks
//! carry one signature per secret (`t=..,v1=<new>,v1=<old>` / `v1,<new> v1,<old>`), so
//! receivers that still hold the old secret keep verifying. A receiver must accept several
//! `v1` entries for this (split on `,`, keep every `v1=`): Nextmv's sample handler unpacks
//! exactly two comma-separated parts and rejects the header during a rotation. Cerebrium,
//! GitHub and Slack carry one signature: the new secret signs at once.
//!
//! # Endpoint health
//!
//! An endpoint whose deliveries keep failing is disabled by the [`HealthRule`]: by default
//! after 10 deliveries that **exhausted their attempts** (or were refused) within 24 h, with no
//! successful delivery in between, and at once when it answers `410 Gone`. The application
//! hears of it through [`RegistryBuilder::on_disabled`] and, when it declares
//! [`EventType::endpoint_disabled`], an `endpoint.disabled` event to the owner's webhooks.
//! `POST /v1/webhooks/{id}/enable` brings it back.
//!
//! The registry learns outcomes from the engine's
//! [`on_finished`](crate::delivery::EngineBuilder::on_finished) hook, which it installs on the
//! engine it builds ([`RegistryBuilder::engine`]). An engine shared with other sources
//! ([`RegistryBuilder::shared_engine`]) must pass its reports to
//! [`WebhookRegistry::observe`].
//!
//! # Rate limits
//!
//! A webhook may carry a [`RateLimit`]; the registry then spaces the first attempts of its
//! deliveries (a token bucket that sets each delivery's due time), so bursts wait in the
//! queue rather than being dropped. Retries follow the engine's policy; the engine also caps
//! concurrent attempts per endpoint host
//! ([`max_per_endpoint`](crate::delivery::EngineBuilder::max_per_endpoint)).
//!
//! # Several replicas
//!
//! The failure counts and the rate limits' buckets live in the subscription store's
//! [`EndpointState`]: with `SqliteSubscriptions` or `PostgresSubscriptions`, in the database,
//! so registries on one PostgreSQL schema count every failure once, disable a webhook once for
//! all of them, and share one bucket per webhook. [`MemorySubscriptions`] counts per process.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::delivery::{Delivery, Source};
use crate::delivery::{DeliveryEngine, DeliveryReport, EngineBuilder, EnqueueError, Policy};
use crate::store::StoreError;

pub mod api;
mod auth;
mod event;
mod health;
mod model;
mod operations;
#[cfg(feature = "portal")]
mod portal;
mod rate_limit;
mod subscriptions;

pub use auth::{bearer_token, AuthFuture, Authenticate, BearerTokens, PartsAuth};
pub use event::{rfc3339, EndpointDisabled, Event, EventType, RunState, RunStatus};
pub use health::{DisabledNotice, HealthRule};
pub use model::{Owner, RateLimit, SigningScheme, Webhook, WebhookSecret};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use subscriptions::PostgresSubscriptions;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use subscriptions::SqliteSubscriptions;
pub use subscriptions::{
    EndpointState, MemoryEndpointState, MemorySubscriptions, Modification, SubscriptionError,
    SubscriptionFuture, SubscriptionStore,
};

/// The `last_error` of the queued deliveries cancelled because their webhook was deleted
/// ([`WebhookRegistry::delete`]).
pub const WEBHOOK_DELETED: &str = "webhook deleted: not sent";

/// The default number of webhooks one owner may register through the API.
pub const DEFAULT_MAX_WEBHOOKS_PER_OWNER: usize = 100;

/// The default grace period of a rotated-out secret.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The registry's source of time: secrets' grace periods, health windows, record timestamps.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

type DisabledHook = Arc<dyn Fn(&DisabledNotice) + Send + Sync>;
type FinishedHook = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;

/// Why [`WebhookRegistry::publish`] did not queue the event for every subscribed webhook.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The event type was not declared on the [`RegistryBuilder`].
    UnknownEventType(String),
    /// The payload does not serialise to JSON.
    Payload(serde_json::Error),
    /// The subscription store failed.
    Subscriptions(SubscriptionError),
    /// `publish_in_transaction` (feature `postgres`) was called on a registry without an
    /// outbox (`RegistryBuilder::outbox`).
    NoOutbox,
    /// The delivery rows could not be written through the caller's transaction (the
    /// transaction is then aborted: roll it back).
    Store(StoreError),
    /// The event was queued for some webhooks ([`PublishReport::deliveries`]) but not for the
    /// others ([`PublishReport::rejected`], each with why: the engine was full, the owner held
    /// its share, the store failed). The rejected ones are lost unless published again, to
    /// those webhooks (see [`EnqueueError::retry_after`]).
    NotQueued(Box<PublishReport>),
}

impl PublishError {
    /// The `Retry-After` hint when waiting helps (every rejected webhook's reason said so).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::NotQueued(report) => report
                .rejected
                .iter()
                .map(|rejected| rejected.error.retry_after())
                .try_fold(Duration::ZERO, |longest, wait| Some(longest.max(wait?))),
            _ => None,
        }
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownEventType(name) => write!(f, "unknown event type `{name}`"),
            Self::Payload(err) => write!(f, "the event payload does not serialise: {err}"),
            Self::Subscriptions(err) => fmt::Display::fmt(err, f),
            Self::NoOutbox => f.write_str(
                "publishing in a transaction needs the registry's PostgreSQL outbox \
                 (RegistryBuilder::outbox)",
            ),
            Self::Store(err) => write!(f, "the event was not recorded: {err}"),
            Self::NotQueued(report) => write!(
                f,
                "event {} not queued for {} of {} webhooks: {}",
                report.event_id,
                report.rejected.len(),
                report.rejected.len() + report.deliveries.len(),
                report
                    .rejected
                    .first()
                    .map_or_else(String::new, |rejected| rejected.error.to_string())
            ),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Payload(err) => Some(err),
            Self::Subscriptions(err) => Some(err),
            Self::Store(err) => Some(err),
            Self::NotQueued(report) => report
                .rejected
                .first()
                .map(|rejected| &rejected.error as &(dyn std::error::Error + 'static)),
            Self::UnknownEventType(_) | Self::NoOutbox => None,
        }
    }
}

impl From<SubscriptionError> for PublishError {
    fn from(err: SubscriptionError) -> Self {
        Self::Subscriptions(err)
    }
}

/// One delivery queued by [`WebhookRegistry::publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishedDelivery {
    /// The webhook's owner.
    pub owner: Owner,
    /// The webhook.
    pub webhook_id: String,
    /// The delivery (its conversation id and `X-Request-Id`).
    pub delivery_id: String,
    /// When its first attempt is due, when a [`RateLimit`] delayed it.
    pub not_before: Option<SystemTime>,
}

/// A webhook the event could not be queued for (the engine was full or shutting down, or
/// its store failed). The application may publish again later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedDelivery {
    /// The webhook's owner.
    pub owner: Owner,
    /// The webhook.
    pub webhook_id: String,
    /// Why.
    pub error: EnqueueError,
}

/// What [`WebhookRegistry::publish`] did, per webhook.
///
/// `publish` returns it in `Ok` only when the event is queued for every subscribed webhook
/// (`rejected` is then empty); a partial fan-out is [`PublishError::NotQueued`] carrying it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "a publish report lists the deliveries made"]
pub struct PublishReport {
    /// The event's id (the body's `id`).
    pub event_id: String,
    /// One delivery per enabled subscribed webhook it was queued for.
    pub deliveries: Vec<PublishedDelivery>,
    /// The webhooks it could not be queued for, each with why.
    pub rejected: Vec<RejectedDelivery>,
}

impl PublishReport {
    /// Whether the event was queued for every subscribed webhook.
    pub fn is_complete(&self) -> bool {
        self.rejected.is_empty()
    }
}

enum EngineSource {
    Build(Box<EngineBuilder>),
    Shared(DeliveryEngine),
}

/// Configures a [`WebhookRegistry`].
#[must_use]
pub struct RegistryBuilder {
    subscriptions: Option<Arc<dyn SubscriptionStore>>,
    engine: EngineSource,
    events: Vec<EventType>,
    auth: Option<Arc<dyn Authenticate>>,
    api_info: Option<(String, String)>,
    clock: Option<Clock>,
    grace: Duration,
    max_webhooks: usize,
    health: HealthRule,
    on_disabled: Option<DisabledHook>,
    on_finished: Option<FinishedHook>,
    #[cfg(feature = "postgres")]
    outbox: Option<crate::store::PostgresStore>,
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field(
                "events",
                &self.events.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .field("grace", &self.grace)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryBuilder {
    /// Defaults: [`MemorySubscriptions`], an engine with [`Policy::standard`] retries and the
    /// SSRF guard on, no event types, **every request refused** until [`auth`](Self::auth),
    /// a 24 h rotation grace, 100 webhooks per owner, [`HealthRule::default`], the system
    /// clock.
    pub fn new() -> Self {
        Self {
            subscriptions: None,
            engine: EngineSource::Build(Box::new(EngineBuilder::new().policy(Policy::standard()))),
            events: Vec::new(),
            auth: None,
            api_info: None,
            clock: None,
            grace: DEFAULT_ROTATION_GRACE,
            max_webhooks: DEFAULT_MAX_WEBHOOKS_PER_OWNER,
            health: HealthRule::default(),
            on_disabled: None,
            on_finished: None,
            #[cfg(feature = "postgres")]
            outbox: None,
        }
    }

    /// The subscription store.
    pub fn subscriptions(self, store: impl SubscriptionStore) -> Self {
        self.shared_subscriptions(Arc::new(store))
    }

    /// A shared subscription store.
    pub fn shared_subscriptions(mut self, store: Arc<dyn SubscriptionStore>) -> Self {
        self.subscriptions = Some(store);
        self
    }

    /// Builds the delivery engine from `engine` (its store, client, guard, policy, capacity).
    /// The registry installs its own [`on_finished`](EngineBuilder::on_finished) hook, which
    /// replaces one set on `engine`; use [`on_finished`](Self::on_finished) here instead.
    pub fn engine(mut self, engine: EngineBuilder) -> Self {
        self.engine = EngineSource::Build(Box::new(engine));
        self
    }

    /// Uses an engine built elsewhere (shared with a [`WebhookForwardLayer`](crate::WebhookForwardLayer)).
    /// Its `on_finished` hook must call [`WebhookRegistry::observe`] for the health rule to
    /// see outcomes:
    ///
    /// ```
    /// use std::sync::{Arc, OnceLock};
    /// use tower_webhooks::delivery::DeliveryEngine;
    /// use tower_webhooks::registry::{EventType, WebhookRegistry};
    ///
    /// let registry_slot: Arc<OnceLock<WebhookRegistry>> = Arc::new(OnceLock::new());
    /// let engine = DeliveryEngine::builder()
    ///     .on_finished({
    ///         let slot = registry_slot.clone();
    ///         move |report| {
    ///             if let Some(registry) = slot.get() {
    ///                 registry.observe(report);
    ///             }
    ///         }
    ///     })
    ///     .build();
    /// let registry = WebhookRegistry::builder()
    ///     .shared_engine(engine.clone())
    ///     .event_type(EventType::run_status())
    ///     .build();
    /// let _ = registry_slot.set(registry.clone());
    /// // `engine` also serves a `WebhookForwardLayer`.
    /// ```
    pub fn shared_engine(mut self, engine: DeliveryEngine) -> Self {
        self.engine = EngineSource::Shared(engine);
        self
    }

    /// Declares an event type webhooks can subscribe to (declaring a name again replaces it).
    ///
    /// # Panics
    ///
    /// If the name is not 1 to 64 letters, digits, `.`, `_` or `-`.
    pub fn event_type(mut self, event_type: EventType) -> Self {
        assert!(
            EventType::valid_name(&event_type.name),
            "invalid event type name `{}`",
            event_type.name
        );
        self.events.retain(|e| e.name != event_type.name);
        self.events.push(event_type);
        self
    }

    /// The `info` of the served OpenAPI document: the application's API `title` and
    /// `version` (by default the crate's generic `Webhooks` document).
    pub fn api_info(mut self, title: impl Into<String>, version: impl Into<String>) -> Self {
        self.api_info = Some((title.into(), version.into()));
        self
    }

    /// The authentication of management requests (see [`Authenticate`]).
    pub fn auth(mut self, auth: impl Authenticate) -> Self {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// The clock (tests move it to end a grace period).
    pub fn clock<F>(mut self, clock: F) -> Self
    where
        F: Fn() -> SystemTime + Send + Sync + 'static,
    {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// How many webhooks one owner may create through the API (100 by default,
    /// [`DEFAULT_MAX_WEBHOOKS_PER_OWNER`]); beyond it `POST /v1/webhooks` answers
    /// `422 webhook-limit-reached`. It bounds what one tenant can make the engine send per
    /// event. Webhooks inserted into the subscription store directly are not counted against it.
    pub fn max_webhooks_per_owner(mut self, max: usize) -> Self {
        self.max_webhooks = max.max(1);
        self
    }

    /// How long a rotated-out secret keeps signing (24 h by default).
    pub fn rotation_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// When endpoints are disabled automatically.
    pub fn health(mut self, rule: HealthRule) -> Self {
        self.health = rule;
        self
    }

    /// Calls `hook` when the [`HealthRule`] disables a webhook.
    pub fn on_disabled<F>(mut self, hook: F) -> Self
    where
        F: Fn(&DisabledNotice) + Send + Sync + 'static,
    {
        self.on_disabled = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` for every delivery that reaches a final state (the engine's
    /// [`on_finished`](EngineBuilder::on_finished), which the registry takes for itself when it
    /// builds the engine).
    pub fn on_finished<F>(mut self, hook: F) -> Self
    where
        F: Fn(&DeliveryReport) + Send + Sync + 'static,
    {
        self.on_finished = Some(Arc::new(hook));
        self
    }

    /// The PostgreSQL store that [`publish_in_transaction`](WebhookRegistry::publish_in_transaction)
    /// writes delivery rows through: **the same store (same database and schema) as the
    /// engine's**, given to [`EngineBuilder::store`] as well, so that the engine's workers
    /// claim what the application's transactions commit.
    ///
    /// ```no_run
    /// use tower_webhooks::delivery::EngineBuilder;
    /// use tower_webhooks::registry::{EventType, WebhookRegistry};
    /// use tower_webhooks::store::PostgresStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
    /// let registry = WebhookRegistry::builder()
    ///     .engine(EngineBuilder::new().store(store.clone()))
    ///     .outbox(store)
    ///     .event_type(EventType::run_status())
    ///     .build();
    /// # let _ = registry;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn outbox(mut self, store: crate::store::PostgresStore) -> Self {
        self.outbox = Some(store);
        self
    }

    /// Builds the registry (and its engine, whose workers start inside a Tokio runtime).
    pub fn build(self) -> WebhookRegistry {
        let link: Arc<OnceLock<Weak<Inner>>> = Arc::new(OnceLock::new());
        let engine = match self.engine {
            EngineSource::Shared(engine) => engine,
            EngineSource::Build(builder) => {
                let link = link.clone();
                let user = self.on_finished.clone();
                builder
                    .on_finished(move |report| {
                        if let Some(inner) = link.get().and_then(Weak::upgrade) {
                            WebhookRegistry { inner }.observe(report);
                        }
                        if let Some(user) = &user {
                            user(report);
                        }
                    })
                    .build()
            }
        };
        let subscriptions = self
            .subscriptions
            .unwrap_or_else(|| Arc::new(MemorySubscriptions::new()));
        let inner = Arc::new(Inner {
            state: subscriptions::endpoint_state::of(subscriptions.as_ref()),
            subscriptions,
            engine,
            events: self
                .events
                .into_iter()
                .map(|e| (e.name.to_string(), e))
                .collect(),
            auth: self
                .auth
                .unwrap_or_else(|| Arc::new(|_: &http::HeaderMap| None)),
            api_info: self.api_info,
            openapi: OnceLock::new(),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemTime::now)),
            grace: self.grace,
            max_webhooks: self.max_webhooks,
            health: self.health,
            on_disabled: self.on_disabled,
            #[cfg(feature = "postgres")]
            outbox: self.outbox,
        });
        let _ = link.set(Arc::downgrade(&inner));
        WebhookRegistry { inner }
    }
}

/// The subscription registry: webhooks, their management API ([`router`](Self::router)),
/// and [`publish`](Self::publish). Cheap to clone; every clone is the same registry.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct WebhookRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    subscriptions: Arc<dyn SubscriptionStore>,
    engine: DeliveryEngine,
    events: BTreeMap<String, EventType>,
    auth: Arc<dyn Authenticate>,
    api_info: Option<(String, String)>,
    /// The OpenAPI document at the root, made once: it is served without authentication.
    openapi: OnceLock<serde_json::Value>,
    clock: Clock,
    grace: Duration,
    max_webhooks: usize,
    health: HealthRule,
    on_disabled: Option<DisabledHook>,
    /// Failure counts (health rule) and rate limit buckets: the subscription store's when it
    /// shares them between replicas, else in memory.
    state: Arc<dyn EndpointState>,
    /// Where `publish_in_transaction` writes.
    #[cfg(feature = "postgres")]
    outbox: Option<crate::store::PostgresStore>,
}

impl fmt::Debug for WebhookRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookRegistry")
            .field("events", &self.inner.events.keys().collect::<Vec<_>>())
            .field("engine", &self.inner.engine)
            .field("grace", &self.inner.grace)
            .field("health", &self.inner.health)
            .finish_non_exhaustive()
    }
}

impl WebhookRegistry {
    /// Configures a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::new()
    }

    /// The delivery engine (conversations, stats, shutdown).
    pub fn engine(&self) -> &DeliveryEngine {
        &self.inner.engine
    }

    /// The subscription store.
    pub fn subscriptions(&self) -> &Arc<dyn SubscriptionStore> {
        &self.inner.subscriptions
    }

    /// The declared event types.
    pub fn event_types(&self) -> impl Iterator<Item = &EventType> {
        self.inner.events.values()
    }

    /// The registry's clock.
    pub fn now(&self) -> SystemTime {
        (self.inner.clock)()
    }

    /// The default grace period of a rotation.
    pub fn rotation_grace(&self) -> Duration {
        self.inner.grace
    }

    /// Publishes an event of `event_type` with `payload` as its `data` to every enabled
    /// webhook subscribed to it, of every owner.
    ///
    /// The body is serialised once ([`Event`]); each webhook gets its own delivery, signed
    /// with its own secrets in its own scheme, with its custom headers, recorded under its
    /// key so that its conversations list it.
    ///
    /// Every matching webhook gets the event or the caller learns which did not: with a
    /// durable store the engine writes every delivery (the disk is the buffer); with a memory
    /// store a full engine (or an owner holding its share) refuses some.
    ///
    /// # Errors
    ///
    /// [`PublishError`] when the event was not queued for every webhook: before any
    /// delivery (an unknown type, a payload or subscription store failure), or
    /// [`PublishError::NotQueued`] with the per-webhook report when the engine refused some.
    pub async fn publish<T>(
        &self,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_inner(None, event_type, payload).await
    }

    /// [`publish`](Self::publish) to `owner`'s webhooks only.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn publish_for<T>(
        &self,
        owner: &Owner,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_inner(Some(owner), event_type, payload).await
    }

    /// The webhooks `event_type` goes to, the event's id and its body.
    async fn prepare<T>(
        &self,
        owner: Option<&Owner>,
        event_type: &str,
        payload: &T,
        now: SystemTime,
    ) -> Result<(Vec<Webhook>, String, Bytes), PublishError>
    where
        T: Serialize + ?Sized,
    {
        if !self.inner.events.contains_key(event_type) {
            return Err(PublishError::UnknownEventType(event_type.to_owned()));
        }
        let webhooks = self
            .inner
            .subscriptions
            .subscribed(event_type, owner)
            .await?;
        let event_id = event::new_id("evt_");
        let body = envelope(&event_id, event_type, now, payload).map_err(PublishError::Payload)?;
        Ok((webhooks, event_id, body))
    }

    async fn publish_inner<T>(
        &self,
        owner: Option<&Owner>,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        let now = self.now();
        let (webhooks, event_id, body) = self.prepare(owner, event_type, payload, now).await?;
        let sends = webhooks
            .iter()
            .map(|webhook| self.deliver(webhook, event_type, body.clone(), now));
        let results = futures_util::future::join_all(sends).await;
        let mut report = PublishReport {
            event_id,
            deliveries: Vec::with_capacity(webhooks.len()),
            rejected: Vec::new(),
        };
        for (webhook, result) in webhooks.into_iter().zip(results) {
            match result {
                Ok(delivery) => report.deliveries.push(delivery),
                Err(error) => report.rejected.push(RejectedDelivery {
                    owner: webhook.owner,
                    webhook_id: webhook.id,
                    error,
                }),
            }
        }
        if report.is_complete() {
            Ok(report)
        } else {
            Err(PublishError::NotQueued(Box::new(report)))
        }
    }

    /// [`publish`](Self::publish) through the application's own PostgreSQL transaction: the
    /// **transactional outbox**. The event is recorded if and only if the application's
    /// change commits.
    ///
    /// Fans out exactly as `publish` (same body, signing, headers, keys, rate limits), but
    /// writes every delivery row through `conn` — pass `&mut tx` for a
    /// `sqlx::Transaction<'_, Postgres>` — into the tables of the registry's
    /// [outbox](RegistryBuilder::outbox) store. The `NOTIFY` that wakes the workers is part
    /// of the transaction, so nothing is sent before the commit; after a rollback there is no
    /// delivery, no conversation, and nothing is sent. Once committed, the deliveries are
    /// ordinary rows of the engine's queue (retries, conversations, resend).
    ///
    /// The webhooks are read from the [subscription store](RegistryBuilder::subscriptions)
    /// (not through `conn`). An empty report (no subscribed webhook) writes nothing.
    ///
    /// ```no_run
    /// use tower_webhooks::delivery::EngineBuilder;
    /// use tower_webhooks::registry::{EventType, RunState, RunStatus, WebhookRegistry};
    /// use tower_webhooks::store::PostgresStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
    /// let registry = WebhookRegistry::builder()
    ///     .engine(EngineBuilder::new().store(store.clone()))
    ///     .outbox(store.clone())
    ///     .event_type(EventType::run_status())
    ///     .build();
    ///
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("UPDATE runs SET status = 'succeeded' WHERE id = $1")
    ///     .bind("run-1")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let status = RunStatus::new("run-1", "routing-app", RunState::Succeeded, std::time::SystemTime::now());
    /// registry.publish_in_transaction(&mut tx, RunStatus::TYPE, &status).await?;
    /// tx.commit().await?; // the deliveries exist (and go out) from here on
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PublishError::NoOutbox`] without an outbox store, [`PublishError::Store`] when the
    /// rows could not be written (PostgreSQL has then aborted the transaction: roll back),
    /// and as [`publish`](Self::publish). Nothing is reported as rejected: the engine's
    /// capacity does not apply (see [`PostgresStore::enqueue_in_transaction`](crate::store::PostgresStore::enqueue_in_transaction)).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn publish_in_transaction<T>(
        &self,
        conn: &mut sqlx::PgConnection,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_in_transaction_inner(conn, None, event_type, payload)
            .await
    }

    /// [`publish_in_transaction`](Self::publish_in_transaction) to `owner`'s webhooks only.
    ///
    /// # Errors
    ///
    /// As [`publish_in_transaction`](Self::publish_in_transaction).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn publish_for_in_transaction<T>(
        &self,
        conn: &mut sqlx::PgConnection,
        owner: &Owner,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_in_transaction_inner(conn, Some(owner), event_type, payload)
            .await
    }

    #[cfg(feature = "postgres")]
    async fn publish_in_transaction_inner<T>(
        &self,
        conn: &mut sqlx::PgConnection,
        owner: Option<&Owner>,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        let outbox = self.inner.outbox.as_ref().ok_or(PublishError::NoOutbox)?;
        let now = self.now();
        let (webhooks, event_id, body) = self.prepare(owner, event_type, payload, now).await?;
        let mut deliveries = Vec::with_capacity(webhooks.len());
        let mut published = Vec::with_capacity(webhooks.len());
        for webhook in &webhooks {
            let (delivery, one) = self.delivery(webhook, event_type, body.clone(), now).await;
            deliveries.push(delivery);
            published.push(one);
        }
        outbox
            .enqueue_in_transaction(conn, &deliveries)
            .await
            .map_err(PublishError::Store)?;
        // The workers must be running to hear the commit's NOTIFY.
        self.inner.engine.start();
        Ok(PublishReport {
            event_id,
            deliveries: published,
            rejected: Vec::new(),
        })
    }

    /// The delivery of `body` to `webhook` (its rate limit applied).
    async fn delivery(
        &self,
        webhook: &Webhook,
        event_type: &str,
        body: Bytes,
        now: SystemTime,
    ) -> (Delivery, PublishedDelivery) {
        let delivery_id = event::new_id("dlv_");
        let key = webhook.key();
        let mut delivery = Delivery::new(delivery_id.clone(), webhook.endpoint_url.clone(), body)
            .with_signing(webhook.signing(now))
            .with_source(Source::Event(event_type.to_owned()))
            .with_headers(webhook.header_map());
        let not_before = self.not_before(webhook).await;
        if let Some(at) = not_before {
            delivery = delivery.not_before(at);
        }
        let published = PublishedDelivery {
            owner: webhook.owner.clone(),
            webhook_id: webhook.id.clone(),
            delivery_id,
            not_before,
        };
        (delivery.with_endpoint_id(key), published)
    }

    /// Queues one delivery of `body` to `webhook`.
    pub(crate) async fn deliver(
        &self,
        webhook: &Webhook,
        event_type: &str,
        body: Bytes,
        now: SystemTime,
    ) -> Result<PublishedDelivery, EnqueueError> {
        let (delivery, published) = self.delivery(webhook, event_type, body, now).await;
        self.inner.engine.submit(delivery).await?;
        Ok(published)
    }

    /// Enables or disables `owner`'s webhook `id`; returns it and whether it changed
    /// (`None` when there is no such webhook). Enabling forgets its recent failures.
    ///
    /// # Errors
    ///
    /// The subscription store's error.
    pub async fn set_enabled(
        &self,
        owner: &Owner,
        id: &str,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<Option<(Webhook, bool)>, SubscriptionError> {
        let now = self.now();
        let mut changed = false;
        let webhook = self
            .inner
            .subscriptions
            .modify(
                owner,
                id,
                Box::new(|webhook| {
                    changed = webhook.enabled != enabled;
                    if changed {
                        webhook.enabled = enabled;
                        webhook.disabled_reason = if enabled { None } else { reason };
                        webhook.updated_at = now;
                    }
                }),
            )
            .await?;
        if webhook.is_some() {
            self.forget_failures(owner, id).await;
        }
        Ok(webhook.map(|w| (w, changed)))
    }

    /// Deletes `owner`'s webhook `id` and cancels its queued deliveries
    /// ([`DeliveryEngine::cancel_endpoint`]): the pending ones end
    /// [failed](crate::delivery::DeliveryState::Failed) with the reason [`WEBHOOK_DELETED`] and are never sent; one in
    /// flight finishes its attempt and is not retried. Their conversations stay in the delivery
    /// store until retention removes them. `false` when there is no such webhook (nothing is
    /// cancelled then: only the owner's own webhook's deliveries are touched).
    ///
    /// A delivery store that cannot cancel ([`StoreError::Unsupported`]) or fails to is
    /// logged; the webhook is deleted all the same.
    ///
    /// # Errors
    ///
    /// The subscription store's error (nothing is deleted or cancelled then).
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<bool, SubscriptionError> {
        if !self.inner.subscriptions.delete(owner, id).await? {
            return Ok(false);
        }
        if let Err(err) = self.inner.state.forget(owner, id).await {
            tracing::warn!(webhook = %id, error = %err, "webhook deleted: its counts were not");
        }
        let key = model::endpoint_key(owner, id);
        match self
            .inner
            .engine
            .cancel_endpoint(&key, WEBHOOK_DELETED)
            .await
        {
            Ok(0) => {}
            Ok(cancelled) => {
                tracing::info!(webhook = %id, cancelled, "webhook deleted: queued deliveries cancelled");
            }
            Err(err) => {
                tracing::warn!(webhook = %id, error = %err, "webhook deleted: queued deliveries not cancelled");
            }
        }
        Ok(true)
    }

    /// Re-sends one final delivery of `webhook` now: one manual attempt with the same id,
    /// signed with the webhook's current secrets.
    pub(crate) async fn resend(
        &self,
        webhook: &Webhook,
        delivery_id: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .engine
            .resend_signed(delivery_id, webhook.signing(self.now()))
            .await
    }

    /// Re-sends every failed delivery of `webhook` created at or after `since`; how many.
    pub(crate) async fn recover(
        &self,
        webhook: &Webhook,
        since: SystemTime,
    ) -> Result<usize, StoreError> {
        let query = crate::delivery::ConversationQuery::new()
            .endpoint_id(webhook.key())
            .since(since);
        self.inner
            .engine
            .resend_failed(&query, Some(webhook.signing(self.now())))
            .await
    }

    /// How many webhooks one owner may create through the API.
    pub(crate) fn api_info(&self) -> Option<(&str, &str)> {
        self.inner
            .api_info
            .as_ref()
            .map(|(title, version)| (title.as_str(), version.as_str()))
    }

    pub(crate) fn openapi_cache(&self) -> &OnceLock<serde_json::Value> {
        &self.inner.openapi
    }

    pub(crate) fn max_webhooks(&self) -> usize {
        self.inner.max_webhooks
    }

    pub(crate) fn event_type(&self, name: &str) -> Option<&EventType> {
        self.inner.events.get(name)
    }

    pub(crate) async fn authenticate(&self, parts: &http::request::Parts) -> Option<Owner> {
        self.inner.auth.authenticate_parts(parts).await
    }

    pub(crate) fn body(
        &self,
        event_type: &str,
        data: &serde_json::Value,
        now: SystemTime,
    ) -> (String, Bytes) {
        let id = event::new_id("evt_");
        // A `Value` always serialises.
        let body = envelope(&id, event_type, now, data).unwrap_or_default();
        (id, body)
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: ?Sized> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    created_at: String,
    data: &'a T,
}

fn envelope<T: Serialize + ?Sized>(
    id: &str,
    event_type: &str,
    created_at: SystemTime,
    data: &T,
) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        id,
        event_type,
        created_at: rfc3339::format(created_at),
        data,
    })
    .map(Bytes::from)
}
