//! The subscription registry: a complete webhook API for an application's users, mounted as
//! one [`axum::Router`], and [`publish`](WebhookRegistry::publish) to fan events out to them.
//!
//! Users register endpoints for the event types the application declares (the
//! [Nextmv](https://docs.nextmv.io/docs/platform/run-app-remotely/webhooks) model: caller-chosen
//! ids, a signing secret per webhook, `Nextmv-Signature: t=..,v1=..` by default); the
//! application calls `publish(owner, "run.status", payload)`; each subscribed webhook gets its own
//! signed [`Delivery`](crate::delivery::Delivery) through the same
//! [`DeliveryEngine`] as the forward layer — retries, SSRF guard, conversations, and the
//! durability of whichever [store](crate::store) the engine has.
//!
//! # Example
//!
//! ```no_run
//! use tower_webhooks::registry::{BearerTokens, EventType, Owner, WebhookRegistry};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = WebhookRegistry::builder()
//!     .event_type(
//!         EventType::new("run.status", "A run changed state.")
//!             .example(serde_json::json!({"run_id": "run-1", "status": "succeeded"})),
//!     )
//!     .auth(BearerTokens::new().token("api-key-of-acme", "acme"))
//!     .build();
//!
//! let app = axum::Router::new().merge(registry.router());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! // Whenever one of acme's runs changes state:
//! let status = serde_json::json!({"run_id": "run-1", "status": "succeeded"});
//! let report = registry.publish(&Owner::new("acme"), "run.status", &status).await?;
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
//! field of a [`Endpoint`], secrets included. Configure encryption keys
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
//! A webhook may carry a [`EndpointRateLimit`]; the registry then spaces the first attempts of its
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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::delivery::{DeliveryEngine, DeliveryReport};
use crate::store::StoreError;
use crate::time::Clock;

pub mod api;
mod auth;
mod builder;
mod event;
mod health;
mod model;
mod operations;
#[cfg(feature = "postgres")]
mod outbox;
#[cfg(feature = "portal")]
mod portal;
mod publish;
mod rate_limit;
mod subscriptions;

pub use auth::{bearer_token, AuthFuture, Authenticate, BearerTokens, PartsAuth};
pub use builder::RegistryBuilder;
pub use event::{EndpointDisabled, Event, EventType};
pub use health::{DisabledNotice, HealthRule};
pub use model::{Endpoint, EndpointRateLimit, Owner, SigningScheme, WebhookSecret};
pub use publish::{PublishError, PublishReport, PublishedDelivery, RejectedDelivery};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use subscriptions::PostgresSubscriptions;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use subscriptions::SqlSubscriptions;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use subscriptions::SqliteSubscriptions;
pub use subscriptions::{
    EndpointFailure, EndpointState, EndpointTurn, MemoryEndpointState, MemorySubscriptions,
    Modification, SubscriptionError, SubscriptionFuture, SubscriptionStore, WebhookKey,
    WebhookPage,
};

/// The `last_error` of the queued deliveries cancelled because their webhook was deleted
/// ([`WebhookRegistry::delete`]).
const WEBHOOK_DELETED: &str = "webhook deleted: not sent";

/// The default number of webhooks one owner may register through the API.
const DEFAULT_MAX_WEBHOOKS_PER_OWNER: usize = 100;

/// The default grace period of a rotated-out secret.
const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

type DisabledHook = Arc<dyn Fn(&DisabledNotice) + Send + Sync>;
type FinishedHook = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;

/// The subscription registry: webhooks, their management API ([`router`](Self::router)),
/// and [`publish`](Self::publish). Cheap to clone; every clone is the same registry.
///
/// See the [module docs](self).
#[derive(Clone)]
pub struct WebhookRegistry {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    subscriptions: Arc<dyn SubscriptionStore>,
    engine: DeliveryEngine,
    events: BTreeMap<String, EventType>,
    auth: Arc<dyn Authenticate>,
    api_info: Option<(String, String)>,
    /// The OpenAPI document at the root, made once: it is served without authentication.
    openapi: OnceLock<serde_json::Value>,
    /// The registry's source of time: secrets' grace periods, health windows, record
    /// timestamps.
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
        self.inner.clock.now()
    }

    /// The default grace period of a rotation.
    pub fn rotation_grace(&self) -> Duration {
        self.inner.grace
    }

    /// Deletes `owner`'s webhook `id` and cancels its queued deliveries
    /// ([`DeliveryEngine::cancel_endpoint`]): the pending ones end
    /// [failed](crate::delivery::DeliveryState::Failed) with the reason `webhook deleted: not sent` and are never sent; one in
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
        if !self
            .inner
            .subscriptions
            .delete(WebhookKey::new(owner, id))
            .await?
        {
            return Ok(false);
        }
        if let Err(err) = self.inner.state.forget(WebhookKey::new(owner, id)).await {
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
        webhook: &Endpoint,
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
        webhook: &Endpoint,
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
}
