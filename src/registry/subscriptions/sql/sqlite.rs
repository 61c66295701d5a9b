//! [`SqliteSubscriptions`]: webhooks in a SQLite file (feature `sqlite`).

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::record::backend;
use super::{on_pool, run_migrations, sqlx_migrator, Location, SqlSubscriptions};
use crate::registry::subscriptions::SubscriptionError;
#[cfg(doc)]
use crate::registry::subscriptions::{EndpointState, SubscriptionStore};
#[cfg(doc)]
use crate::registry::Endpoint as Webhook;
use crate::store::EncryptionKeys;
#[cfg(doc)]
use crate::store::SqliteStore;

/// A durable [`SubscriptionStore`] in a SQLite file: webhooks survive a restart with
/// everything a [`Webhook`] holds (secrets with their grace expiry, custom headers, enabled
/// state and reason, rate limit, timestamps).
///
/// The table (`webhooks`) is created by the registry's own embedded migrations
/// (`migrations/registry/sqlite/0003_webhooks.sql`, history in
/// `tower_webhooks_registry_migrations`), so one file can hold both [`SqliteStore`]'s
/// delivery queue and the subscriptions, or the subscriptions alone.
///
/// It is also the registry's [`EndpointState`]: the health rule's failure counts and the rate
/// limits' buckets persist in the file (`migrations/registry/sqlite/0004_endpoint_state.sql`),
/// through the same statements as in PostgreSQL, and registries sharing the file share them.
///
/// # Sensitive data
///
/// The file holds every webhook's **signing secrets** and custom header values (often an
/// endpoint's credentials). It is created readable by its owner only (`0600`), and
/// [`connect_encrypted`](Self::connect_encrypted) encrypts those columns
/// ([`EncryptionKeys`]); without keys they are stored as given, so protect the file (and its
/// backups) like any credential store. `Debug` prints the path only.
///
/// ```no_run
/// use tower_webhooks::registry::{SqliteSubscriptions, WebhookRegistry};
/// use tower_webhooks::delivery::EngineBuilder;
/// use tower_webhooks::store::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::connect("webhooks.db").await?;
/// let subscriptions = SqliteSubscriptions::connect("webhooks.db").await?;
/// let registry = WebhookRegistry::builder()
///     .engine(EngineBuilder::new().store(store))
///     .subscriptions(subscriptions)
///     .build();
/// # let _ = registry;
/// # Ok(())
/// # }
/// ```
pub type SqliteSubscriptions = SqlSubscriptions<sqlx::Sqlite>;

impl SqlSubscriptions<sqlx::Sqlite> {
    /// Opens (or creates, readable by its owner only) the database at `path` (WAL mode) and
    /// runs the registry's migrations. The secrets are stored unencrypted (with a warning):
    /// see [`connect_encrypted`](Self::connect_encrypted).
    ///
    /// # Errors
    ///
    /// [`SubscriptionError::Backend`] when the file cannot be opened or migrated.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, SubscriptionError> {
        Self::connect_encrypted(path, None).await
    }

    /// As [`connect`](Self::connect), encrypting the signing secrets and custom header values
    /// with the newest key of `keys` (older keys still decrypt; values written before a key
    /// was configured still read). `None` stores them unencrypted, with a warning.
    ///
    /// # Errors
    ///
    /// [`SubscriptionError::Backend`] when the file cannot be opened or migrated.
    pub async fn connect_encrypted(
        path: impl AsRef<Path>,
        keys: Option<EncryptionKeys>,
    ) -> Result<Self, SubscriptionError> {
        let path = path.as_ref().to_path_buf();
        crate::store::private_file::create_private_file(&path).map_err(backend)?;
        if keys.is_none() {
            crate::store::encryption::warn_unencrypted("sqlite subscriptions");
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .connect_with(options)
            .await
            .map_err(backend)?;
        let store = on_pool(pool, keys, Location::Path(path));
        run_migrations(&store).await?;
        Ok(store)
    }

    /// The registry's migrations as a sqlx [`Migrator`], to run them with your own tooling.
    /// It records them in `_sqlx_migrations` and ignores the versions it does not know there
    /// (the delivery store's, the application's); the crate keeps its own history
    /// (`tower_webhooks_registry_migrations`) instead. Use one or the other on a database,
    /// not both.
    pub async fn migrator() -> Migrator {
        sqlx_migrator::<sqlx::Sqlite>().await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        match &self.location {
            Location::Path(path) => path,
            Location::Schema(_) => Path::new(""),
        }
    }
}
