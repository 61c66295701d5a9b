//! [`PostgresSubscriptions`]: webhooks in PostgreSQL (feature `postgres`).

use sqlx::migrate::Migrator;

use super::{on_pool, run_migrations, sqlx_migrator, Location, SqlSubscriptions};
use crate::registry::subscriptions::SubscriptionError;
#[cfg(doc)]
use crate::registry::subscriptions::{EndpointState, SubscriptionStore};
#[cfg(doc)]
use crate::registry::Endpoint as Webhook;
use crate::store::PostgresStore;

/// A durable [`SubscriptionStore`] in PostgreSQL, shared by every replica: webhooks survive
/// a restart with everything a [`Webhook`] holds (secrets with their grace expiry, custom
/// headers, enabled state and reason, rate limit, timestamps).
///
/// It uses a [`PostgresStore`]'s pool, hence its database and schema; the table
/// (`webhooks`) is created by the registry's own embedded migrations
/// (`migrations/registry/postgres/0003_webhooks.sql`, history in
/// `tower_webhooks_registry_migrations`), run before the first statement (or by
/// [`migrate`](PostgresSubscriptions::migrate), to fail at startup instead).
/// [`modify`](SubscriptionStore::modify) locks the row (`SELECT … FOR UPDATE`), so
/// concurrent changes from several replicas apply one after the other.
///
/// It is also the registry's [`EndpointState`]: the health rule's failure counts and the rate
/// limits' buckets live in tables beside the webhooks
/// (`migrations/registry/postgres/0004_endpoint_state.sql`), so replicas on one database and
/// schema disable an endpoint once, for all, and share one bucket per webhook.
///
/// # Sensitive data
///
/// The table holds every webhook's **signing secrets** and custom header values (often an
/// endpoint's credentials), encrypted with the store's
/// [encryption keys](crate::store::PostgresOptions::encryption_keys) when configured, as
/// given otherwise: restrict access to it (database roles, encrypted backups) like any
/// credential store. `Debug` prints the schema only.
///
/// ```no_run
/// use tower_webhooks::delivery::EngineBuilder;
/// use tower_webhooks::registry::{PostgresSubscriptions, WebhookRegistry};
/// use tower_webhooks::store::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// let registry = WebhookRegistry::builder()
///     .subscriptions(PostgresSubscriptions::new(&store))
///     .engine(EngineBuilder::new().store(store.clone()))
///     .outbox(store)
///     .build();
/// # let _ = registry;
/// # Ok(())
/// # }
/// ```
pub type PostgresSubscriptions = SqlSubscriptions<sqlx::Postgres>;

impl SqlSubscriptions<sqlx::Postgres> {
    /// Webhooks in `store`'s database and schema, through its pool, and its
    /// [encryption keys](crate::store::PostgresOptions::encryption_keys). The registry's
    /// tables are created before the first statement (see [`migrate`](Self::migrate)).
    pub fn new(store: &PostgresStore) -> Self {
        on_pool(
            store.pool().clone(),
            store.encryption_keys().cloned(),
            Location::Schema(store.schema().map(str::to_owned)),
        )
    }

    /// Creates the registry's tables (`webhooks` and the [`EndpointState`] counters) when
    /// missing, as the first statement would; call it to fail at startup instead. Replicas
    /// starting together apply each migration once (an advisory lock).
    ///
    /// The history is kept in the schema's `tower_webhooks_registry_migrations`, beside the
    /// delivery store's `tower_webhooks_migrations` and out of the way of the application's
    /// own `sqlx::migrate!()`. A database whose registry tables were created by the delivery
    /// store's migrations of an earlier release (versions 3 and 4) is taken over as it is.
    ///
    /// # Errors
    ///
    /// [`SubscriptionError::Backend`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), SubscriptionError> {
        run_migrations(self).await
    }

    /// The registry's migrations as a sqlx [`Migrator`], to run them with your own tooling.
    /// It records them in `_sqlx_migrations` and ignores the versions it does not know there
    /// (the delivery store's, the application's); the crate keeps its own history
    /// (`tower_webhooks_registry_migrations`) instead. Use one or the other on a database,
    /// not both.
    pub async fn migrator() -> Migrator {
        sqlx_migrator::<sqlx::Postgres>().await
    }
}
