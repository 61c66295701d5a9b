//! [`RegistryBuilder`]: the subscription store, the engine, the declared event types, the
//! authentication and the rules a [`WebhookRegistry`] is built with.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use super::{
    Authenticate, Clock, DisabledHook, EventType, FinishedHook, HealthRule, Inner,
    MemorySubscriptions, SubscriptionStore, WebhookRegistry, DEFAULT_MAX_WEBHOOKS_PER_OWNER,
    DEFAULT_ROTATION_GRACE,
};
use crate::delivery::{DeliveryEngine, DeliveryReport, EngineBuilder, Policy};
use crate::registry::subscriptions;
use crate::registry::DisabledNotice;

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
    ///     .event_type(EventType::new("run.status", "A run changed state."))
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
        self.clock = Some(Clock::new(clock));
        self
    }

    /// How many webhooks one owner may create through the API (100 by default); beyond it `POST /v1/webhooks` answers
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
    ///     .event_type(EventType::new("run.status", "A run changed state."))
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
            clock: self.clock.unwrap_or_default(),
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

impl WebhookRegistry {
    /// Configures a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::new()
    }
}
