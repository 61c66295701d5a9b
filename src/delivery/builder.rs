//! [`EngineBuilder`]: an engine's configuration and its defaults.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use tokio::sync::{watch, Notify, Semaphore};

use super::client::DeliveryClient;
use super::engine::{DeliveryEngine, DeliveryReport, Shared};
use super::owners::Owners;
use super::policy::Policy;
use super::signers::CustomSigners;
use super::slots::FairSlots;
use super::ssrf::SsrfGuard;
use crate::scheme::SharedSigner;
use crate::store::{DeliveryStore, MemoryStore};
use crate::time::Clock;

/// The default number of deliveries accepted and not yet final.
const DEFAULT_CAPACITY: usize = 1024;
/// The default number of attempts in flight at once.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// The default number of attempts in flight at once to one endpoint host.
const DEFAULT_MAX_PER_ENDPOINT: usize = 8;
/// The default number of attempts in flight at once for one owner
/// ([`delivery_owner`](super::delivery_owner)).
const DEFAULT_MAX_IN_FLIGHT_PER_OWNER: usize = 16;
/// The default number of unfinished deliveries one owner may hold in an engine.
const DEFAULT_MAX_QUEUED_PER_OWNER: usize = 256;
/// How long delivered deliveries are kept by default.
const DEFAULT_RETAIN_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long dead letters (failed and refused deliveries) are kept by default.
const DEFAULT_RETAIN_FAILED: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most response-body bytes read and kept per attempt.
const DEFAULT_RESPONSE_BODY_LIMIT: usize = 20_000;

pub(super) type FinishHook = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;

#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) capacity: usize,
    pub(super) max_in_flight: usize,
    pub(super) max_per_endpoint: usize,
    pub(super) max_in_flight_per_owner: usize,
    pub(super) max_queued_per_owner: usize,
    pub(super) max_claimed: usize,
    pub(super) batch: usize,
    pub(super) attempt_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) response_body_limit: usize,
    pub(super) poll_interval: Duration,
    pub(super) lease: Duration,
    pub(super) busy_retry_after: Duration,
    pub(super) user_agent: HeaderValue,
    pub(super) retain_delivered: Option<Duration>,
    pub(super) retain_failed: Option<Duration>,
    pub(super) retention_interval: Duration,
    pub(super) retention_batch: usize,
    pub(super) metrics_interval: Option<Duration>,
    /// The `engine` label of its metrics.
    pub(super) name: &'static str,
    pub(super) hold: Duration,
    /// The application's own signers, for deliveries signed with a [`SchemeSpec::Custom`](super::SchemeSpec::Custom).
    pub(super) custom_signers: CustomSigners,
    /// Due times, leases, signature timestamps and retention ages are read from it.
    pub(super) clock: Clock,
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
                name: "default",
                hold: Duration::from_secs(30),
                custom_signers: CustomSigners::default(),
                clock: Clock::default(),
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
    /// with [`EnqueueError::Full`](super::EnqueueError::Full) (every HTTP route answers `503` with `Retry-After`). A durable
    /// store is the buffer: every accepted delivery is written, and the engine sends them as
    /// its [in-flight](Self::max_in_flight) and [claim](Self::max_claimed) budgets free up.
    /// 1024 by default.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity.max(1);
        self
    }

    /// Attempts in flight at once, over all endpoints; 64 by default.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max.max(1);
        self
    }

    /// Attempts in flight at once to one endpoint host, so one slow endpoint cannot take
    /// every slot; 8 by default.
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
    /// that owner's new ones are refused with [`EnqueueError::OwnerFull`](super::EnqueueError::OwnerFull) (`429` with
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

    /// How many response-body bytes are read and kept per attempt; 20 000 by default.
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

    /// Deletes [delivered](super::DeliveryState::Delivered) deliveries and their attempts once they
    /// are `age` old: 7 days by default, `None` keeps them
    /// forever. Retention runs every minute in batches of 500 rows, pausing between batches so
    /// the workers are not blocked.
    pub fn retain_delivered(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.config.retain_delivered = age.into();
        self
    }

    /// Deletes dead letters ([failed](super::DeliveryState::Failed) and
    /// [refused](super::DeliveryState::Refused) deliveries) once they are `age` old: 30 days by
    /// default, so they stay queryable and can be re-sent for a
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
    /// `webhook_attempts_running`, `webhook_oldest_due_age_seconds`, labelled with the
    /// engine's [`name`](Self::name)) are refreshed through the [`metrics`] facade;
    /// every 10 s by default, `None` to never query the store for them. See
    /// [`DeliveryEngine::stats`](super::DeliveryEngine::stats) for the same figures on demand.
    pub fn metrics_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.metrics_interval = interval.map(|i| i.max(Duration::from_millis(10)));
        self
    }

    /// The engine's name: the `engine` label of its metrics (default `default`), so that two
    /// engines in one process (a forwarder's and a registry's) keep apart gauges.
    ///
    /// Give a fixed name (one per engine, not per tenant): it is a label value, kept for the
    /// life of the process. [`telemetry::METRICS`](crate::telemetry::METRICS) lists every
    /// metric.
    pub fn name(mut self, name: &str) -> Self {
        self.config.name = crate::telemetry::interned(name);
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

    /// Registers a signer that is not a built-in scheme: deliveries whose
    /// [`SigningSpec`](super::SigningSpec) names it ([`SchemeSpec::custom`](super::SchemeSpec::custom)
    /// with its [name](crate::scheme::Signer::name)) are signed with it, also after a restart
    /// of a durable store. A delivery naming a signer the engine does not know fails its
    /// attempt instead of going out unsigned. Built-in schemes need no registration.
    pub fn custom_signer(mut self, signer: SharedSigner) -> Self {
        self.config.custom_signers.add(signer);
        self
    }

    /// The clock the engine schedules by, in place of the system's. Crate-private: the stores
    /// keep their own time (a released claim is due at the system time), so it only moves
    /// the engine's half of a schedule, which is what the engine's unit tests need.
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: Clock) -> Self {
        self.config.clock = clock;
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
    /// [`DeliveryEngine::start`](super::DeliveryEngine::start).
    pub fn build(self) -> DeliveryEngine {
        // The help texts reach a recorder installed before the engine is built.
        crate::telemetry::describe_metrics();
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
                in_flight: FairSlots::new(config.max_in_flight),
                claim_budget: Arc::new(Semaphore::new(config.max_claimed)),
                pool: Arc::default(),
                parked: Arc::new(Semaphore::new(config.max_claimed)),
                config,
                wake: Arc::new(Notify::new()),
                outstanding: AtomicUsize::new(0),
                counted: Mutex::default(),
                drained: Notify::new(),
                hosts: Mutex::default(),
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
