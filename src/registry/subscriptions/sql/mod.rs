//! The durable subscription stores: one [`SubscriptionStore`] (and [`EndpointState`]) written
//! once over `sqlx`, generic over the database, with the little SQLite and PostgreSQL do
//! differently in [`dialect`]. `SqliteSubscriptions` and `PostgresSubscriptions` are its two
//! instances, each with its own constructor.
//!
//! The tables are the registry's own, created by its migrations
//! (`migrations/registry/<backend>/`) with their own history table, apart from the delivery
//! store's.

use std::fmt;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use sqlx::{Database, Pool};
use tokio::sync::OnceCell;

use super::{
    EndpointState, Modification, SubscriptionError, SubscriptionFuture, SubscriptionStore,
    WebhookKey, WebhookPage,
};
use crate::registry::model::{Endpoint as Webhook, Owner};
use crate::store::sql::SqlQuery;
use crate::store::EncryptionKeys;

mod dialect;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
#[cfg(feature = "sqlite")]
mod sqlite;
mod state;

use dialect::SubscriptionDialect;
use record::{backend, from_store, is_unique_violation, Record, COLUMNS};

#[cfg(feature = "postgres")]
pub use postgres::PostgresSubscriptions;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteSubscriptions;

/// A durable [`SubscriptionStore`] (and [`EndpointState`]) in a SQL database `DB`, written
/// once for both: use it as `SqliteSubscriptions` (feature `sqlite`) or
/// `PostgresSubscriptions` (feature `postgres`), whose constructors differ.
pub struct SqlSubscriptions<DB: Database> {
    pool: Pool<DB>,
    keys: Option<EncryptionKeys>,
    location: Location,
    /// Set once the registry's migrations ran on `pool`.
    migrated: Arc<OnceCell<()>>,
    statements: Arc<Statements>,
}

impl<DB: Database> Clone for SqlSubscriptions<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            keys: self.keys.clone(),
            location: self.location.clone(),
            migrated: self.migrated.clone(),
            statements: self.statements.clone(),
        }
    }
}

/// Where the tables are: what `Debug` shows (never the secrets).
#[derive(Debug, Clone)]
enum Location {
    /// A SQLite file.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Path(std::path::PathBuf),
    /// A PostgreSQL schema (`None`: the search path).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Schema(Option<String>),
}

impl<DB: SubscriptionDialect> fmt::Debug for SqlSubscriptions<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(DB::STORE_NAME);
        match &self.location {
            Location::Path(path) => out.field("path", path),
            Location::Schema(schema) => out.field("schema", schema),
        };
        out.finish_non_exhaustive()
    }
}

/// The statements, as text (`format!`ed once per store).
#[derive(Debug)]
struct Statements {
    insert: String,
    get: String,
    get_for_update: String,
    list: String,
    update: String,
    subscribed: String,
}

impl Statements {
    fn new<DB: SubscriptionDialect>() -> Self {
        let get = format!("SELECT {COLUMNS} FROM webhooks WHERE owner = $1 AND id = $2");
        Self {
            insert: format!(
                "INSERT INTO webhooks ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            get_for_update: format!("{get}{}", DB::LOCK_ROW),
            get,
            // The casts tell PostgreSQL the type of a parameter that may be `NULL`.
            list: format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 \
                 AND (CAST($2 AS TEXT) IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            update: "UPDATE webhooks SET endpoint_url = $3, event_types = $4, \
                 description = $5, scheme = $6, secrets = $7, headers = $8, enabled = $9, \
                 disabled_reason = $10, rate_per_second = $11, rate_burst = $12, \
                 created_at = $13, updated_at = $14 WHERE owner = $1 AND id = $2"
                .to_owned(),
            subscribed: format!(
                "SELECT {COLUMNS} FROM webhooks WHERE enabled AND {} \
                 AND (CAST($2 AS TEXT) IS NULL OR owner = $2) ORDER BY owner, id",
                DB::SUBSCRIBES_TO
            ),
        }
    }
}

const DELETE: &str = "DELETE FROM webhooks WHERE owner = $1 AND id = $2";

// The helpers below are functions, not inherent methods: their bound is a crate-private
// trait, which an inherent impl of a public type may not name.

/// A store on `pool`, its migrations still to run.
fn on_pool<DB: SubscriptionDialect>(
    pool: Pool<DB>,
    keys: Option<EncryptionKeys>,
    location: Location,
) -> SqlSubscriptions<DB> {
    SqlSubscriptions {
        pool,
        keys,
        location,
        migrated: Arc::new(OnceCell::new()),
        statements: Arc::new(Statements::new::<DB>()),
    }
}

/// Runs the registry's migrations on the store's pool, once per store (and once per
/// database: concurrent processes apply each migration once).
async fn run_migrations<DB: SubscriptionDialect>(
    store: &SqlSubscriptions<DB>,
) -> Result<(), SubscriptionError> {
    store
        .migrated
        .get_or_try_init(|| async { DB::migrate(&store.pool).await.map_err(from_store) })
        .await
        .map(|_| ())
}

/// The registry's migrations as a sqlx [`Migrator`] (see `migrator` of either store).
async fn sqlx_migrator<DB: SubscriptionDialect>() -> Migrator {
    crate::store::migrations::migrator(DB::MIGRATIONS).await
}

/// A connection from the store's pool, the tables migrated.
async fn connection<DB: SubscriptionDialect>(
    store: &SqlSubscriptions<DB>,
) -> Result<sqlx::pool::PoolConnection<DB>, SubscriptionError> {
    run_migrations(store).await?;
    store.pool.acquire().await.map_err(backend)
}

/// The webhooks of the rows `query` returns.
async fn webhooks<DB: SubscriptionDialect>(
    store: &SqlSubscriptions<DB>,
    query: SqlQuery<'_, DB>,
) -> Result<Vec<Webhook>, SubscriptionError> {
    let mut conn = connection(store).await?;
    let rows = DB::fetch_all(&mut *conn, query).await.map_err(backend)?;
    rows.iter()
        .map(|row| Record::read::<DB>(row)?.into_webhook(store.keys.as_ref()))
        .collect()
}

/// `sql` with the webhook's owner and id at `$1` and `$2`.
fn key<'q, DB: SubscriptionDialect>(sql: &'q str, webhook: WebhookKey<'_>) -> SqlQuery<'q, DB> {
    let query = DB::text(sqlx::query(sql), Some(webhook.owner.as_str().to_owned()));
    DB::text(query, Some(webhook.id.to_owned()))
}

impl<DB: SubscriptionDialect> SubscriptionStore for SqlSubscriptions<DB> {
    fn insert(&self, webhook: Webhook) -> SubscriptionFuture<'_, ()> {
        Box::pin(async move {
            let record = Record::new(&webhook, self.keys.as_ref())?;
            let query = record.bind::<DB>(&self.statements.insert)?;
            let mut conn = connection(self).await?;
            match DB::execute(&mut *conn, query).await {
                Ok(_) => Ok(()),
                Err(err) if is_unique_violation(&err) => {
                    Err(SubscriptionError::Duplicate(record.id))
                }
                Err(err) => Err(backend(err)),
            }
        })
    }

    fn get<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, Option<Webhook>> {
        Box::pin(async move {
            let mut conn = connection(self).await?;
            let query = key::<DB>(&self.statements.get, webhook);
            let row = DB::fetch_optional(&mut *conn, query)
                .await
                .map_err(backend)?;
            row.map(|row| Record::read::<DB>(&row)?.into_webhook(self.keys.as_ref()))
                .transpose()
        })
    }

    fn list<'a>(&'a self, page: WebhookPage<'a>) -> SubscriptionFuture<'a, Vec<Webhook>> {
        Box::pin(async move {
            let query = DB::text(
                sqlx::query(&self.statements.list),
                Some(page.owner.as_str().to_owned()),
            );
            let query = DB::text(query, page.after.map(str::to_owned));
            let query = DB::int(query, Some(i64::try_from(page.limit).unwrap_or(i64::MAX)));
            webhooks(self, query).await
        })
    }

    fn modify<'a>(
        &'a self,
        webhook: WebhookKey<'a>,
        change: Modification<'a>,
    ) -> SubscriptionFuture<'a, Option<Webhook>> {
        Box::pin(async move {
            run_migrations(self).await?;
            let mut tx = match DB::BEGIN_WRITE {
                Some(begin) => self.pool.begin_with(begin).await,
                None => self.pool.begin().await,
            }
            .map_err(backend)?;
            let query = key::<DB>(&self.statements.get_for_update, webhook);
            let row = DB::fetch_optional(&mut *tx, query).await.map_err(backend)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut stored = Record::read::<DB>(&row)?.into_webhook(self.keys.as_ref())?;
            change(&mut stored);
            stored.owner = webhook.owner.clone();
            stored.id = webhook.id.to_owned();
            let record = Record::new(&stored, self.keys.as_ref())?;
            let query = record.bind::<DB>(&self.statements.update)?;
            DB::execute(&mut *tx, query).await.map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(Some(stored))
        })
    }

    fn delete<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = connection(self).await?;
            let deleted = DB::execute(&mut *conn, key::<DB>(DELETE, webhook))
                .await
                .map_err(backend)?;
            Ok(deleted > 0)
        })
    }

    fn subscribed<'a>(
        &'a self,
        event_type: &'a str,
        owner: Option<&'a Owner>,
    ) -> SubscriptionFuture<'a, Vec<Webhook>> {
        Box::pin(async move {
            let query = DB::text(
                sqlx::query(&self.statements.subscribed),
                Some(event_type.to_owned()),
            );
            let query = DB::text(query, owner.map(|owner| owner.as_str().to_owned()));
            webhooks(self, query).await
        })
    }

    fn endpoint_state(&self) -> Option<Arc<dyn EndpointState>> {
        Some(Arc::new(self.clone()))
    }
}
