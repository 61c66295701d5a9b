//! [`SqliteSubscriptions`]: webhooks in a SQLite file (feature `sqlite`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};
use sqlx::Row;

use super::sql::{backend, is_unique_violation, Record, COLUMNS};
use super::{
    EndpointState, Modification, SubscriptionError, SubscriptionFuture, SubscriptionStore,
};
use crate::registry::model::{Endpoint as Webhook, Owner};
use crate::store::{EncryptionKeys, SqliteStore};

/// A durable [`SubscriptionStore`] in a SQLite file: webhooks survive a restart with
/// everything a [`Webhook`] holds (secrets with their grace expiry, custom headers, enabled
/// state and reason, rate limit, timestamps).
///
/// The table (`webhooks`) is created by the same embedded migrations as
/// [`SqliteStore`]'s (`migrations/sqlite/0003_webhooks.sql`), so one file can hold both
/// the delivery queue and the subscriptions.
///
/// It is also the registry's [`EndpointState`]: the health rule's failure counts and the rate
/// limits' buckets persist in the file (`migrations/sqlite/0004_endpoint_state.sql`), through
/// the same statements as in PostgreSQL, and registries sharing the file share them.
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
#[derive(Clone)]
pub struct SqliteSubscriptions {
    pub(super) pool: SqlitePool,
    path: PathBuf,
    keys: Option<EncryptionKeys>,
}

impl fmt::Debug for SqliteSubscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSubscriptions")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteSubscriptions {
    /// Opens (or creates, readable by its owner only) the database at `path` (WAL mode) and
    /// runs the migrations. The secrets are stored unencrypted (with a warning): see
    /// [`connect_encrypted`](Self::connect_encrypted).
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
        SqliteStore::migrate_pool(&pool).await.map_err(backend)?;
        Ok(Self { pool, path, keys })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn record(row: &SqliteRow, keys: Option<&EncryptionKeys>) -> Result<Webhook, SubscriptionError> {
    let get = |column: &str| -> Result<String, SubscriptionError> {
        row.try_get(column).map_err(backend)
    };
    let types: Vec<String> = serde_json::from_str(&get("event_types")?)
        .map_err(|_| SubscriptionError::Backend("unreadable webhook event_types column".into()))?;
    Record {
        owner: get("owner")?,
        id: get("id")?,
        endpoint_url: get("endpoint_url")?,
        event_types: types,
        description: get("description")?,
        scheme: get("scheme")?,
        secrets: get("secrets")?,
        headers: get("headers")?,
        enabled: row.try_get("enabled").map_err(backend)?,
        disabled_reason: row.try_get("disabled_reason").map_err(backend)?,
        rate_per_second: row.try_get("rate_per_second").map_err(backend)?,
        rate_burst: row.try_get("rate_burst").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    }
    .into_webhook(keys)
}

fn records(
    rows: &[SqliteRow],
    keys: Option<&EncryptionKeys>,
) -> Result<Vec<Webhook>, SubscriptionError> {
    rows.iter().map(|row| record(row, keys)).collect()
}

fn event_types(record: &Record) -> Result<String, SubscriptionError> {
    serde_json::to_string(&record.event_types).map_err(backend)
}

const UPDATE: &str = "UPDATE webhooks SET endpoint_url = $3, event_types = $4, \
     description = $5, scheme = $6, secrets = $7, headers = $8, enabled = $9, \
     disabled_reason = $10, rate_per_second = $11, rate_burst = $12, created_at = $13, \
     updated_at = $14 WHERE owner = $1 AND id = $2";

impl SubscriptionStore for SqliteSubscriptions {
    fn insert(&self, webhook: Webhook) -> SubscriptionFuture<'_, ()> {
        Box::pin(async move {
            let r = Record::new(&webhook, self.keys.as_ref())?;
            let sql = format!(
                "INSERT INTO webhooks ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            );
            let result = sqlx::query(&sql)
                .bind(&r.owner)
                .bind(&r.id)
                .bind(&r.endpoint_url)
                .bind(event_types(&r)?)
                .bind(&r.description)
                .bind(&r.scheme)
                .bind(&r.secrets)
                .bind(&r.headers)
                .bind(r.enabled)
                .bind(&r.disabled_reason)
                .bind(r.rate_per_second)
                .bind(r.rate_burst)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&self.pool)
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(err) if is_unique_violation(&err) => Err(SubscriptionError::Duplicate(r.id)),
                Err(err) => Err(backend(err)),
            }
        })
    }

    fn get<'a>(&'a self, owner: &'a Owner, id: &'a str) -> SubscriptionFuture<'a, Option<Webhook>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 AND id = $2"
            ))
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref()
                .map(|row| record(row, self.keys.as_ref()))
                .transpose()
        })
    }

    fn list<'a>(
        &'a self,
        owner: &'a Owner,
        after: Option<&'a str>,
        limit: usize,
    ) -> SubscriptionFuture<'a, Vec<Webhook>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 AND ($2 IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3"
            ))
            .bind(owner.as_str())
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            records(&rows, self.keys.as_ref())
        })
    }

    fn modify<'a>(
        &'a self,
        owner: &'a Owner,
        id: &'a str,
        change: Modification<'a>,
    ) -> SubscriptionFuture<'a, Option<Webhook>> {
        Box::pin(async move {
            // IMMEDIATE: the write lock first, so the read and the write see one version.
            let mut tx = self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(backend)?;
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 AND id = $2"
            ))
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut webhook = record(&row, self.keys.as_ref())?;
            change(&mut webhook);
            webhook.owner = owner.clone();
            webhook.id = id.to_owned();
            let r = Record::new(&webhook, self.keys.as_ref())?;
            sqlx::query(UPDATE)
                .bind(&r.owner)
                .bind(&r.id)
                .bind(&r.endpoint_url)
                .bind(event_types(&r)?)
                .bind(&r.description)
                .bind(&r.scheme)
                .bind(&r.secrets)
                .bind(&r.headers)
                .bind(r.enabled)
                .bind(&r.disabled_reason)
                .bind(r.rate_per_second)
                .bind(r.rate_burst)
                .bind(r.created_at)
                .bind(r.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(Some(webhook))
        })
    }

    fn delete<'a>(&'a self, owner: &'a Owner, id: &'a str) -> SubscriptionFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM webhooks WHERE owner = $1 AND id = $2")
                .bind(owner.as_str())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn subscribed<'a>(
        &'a self,
        event_type: &'a str,
        owner: Option<&'a Owner>,
    ) -> SubscriptionFuture<'a, Vec<Webhook>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE enabled \
                 AND ($2 IS NULL OR owner = $2) \
                 AND EXISTS (SELECT 1 FROM json_each(webhooks.event_types) AS t \
                             WHERE t.value = $1) \
                 ORDER BY owner, id"
            ))
            .bind(event_type)
            .bind(owner.map(Owner::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            records(&rows, self.keys.as_ref())
        })
    }

    fn endpoint_state(&self) -> Option<Arc<dyn EndpointState>> {
        Some(Arc::new(self.clone()))
    }
}
