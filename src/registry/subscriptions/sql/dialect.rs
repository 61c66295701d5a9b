//! What differs between SQLite and PostgreSQL for the subscription tables: a few fragments of
//! SQL, how the list of event types is stored, the registry's migrations, and the typed calls
//! that run a statement (one line each per backend, see `subscription_dialect!`).

use std::future::Future;
use std::pin::Pin;

use crate::store::migrations::Embedded;
use crate::store::sql::{Dialect, RowExt, SqlQuery};
use crate::store::StoreError;

use super::super::SubscriptionError;

/// A boxed, `Send` future borrowing for `'a`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the one generic `SqlSubscriptions` needs to know about its database beyond the
/// shared [`Dialect`].
pub(crate) trait SubscriptionDialect: Dialect {
    /// The store's name in `Debug` (`SqliteSubscriptions`, `PostgresSubscriptions`).
    const STORE_NAME: &'static str;

    /// The statement opening a transaction that reads a webhook and writes it back
    /// ([`modify`](super::super::SubscriptionStore::modify)), `None` for a plain `BEGIN`.
    /// SQLite takes the write lock first (`BEGIN IMMEDIATE`), so the read and the write see
    /// one version; PostgreSQL locks the row instead ([`LOCK_ROW`](Self::LOCK_ROW)).
    const BEGIN_WRITE: Option<&'static str>;

    /// Appended to the `SELECT` of [`modify`](super::super::SubscriptionStore::modify).
    const LOCK_ROW: &'static str;

    /// The condition "the webhook subscribes to the event type `$1`" over `event_types`.
    const SUBSCRIBES_TO: &'static str;

    /// Records a failure: binds owner, id, the failure time (ms), the window's start (ms) and
    /// how many to keep; returns the count as `n`.
    const RECORD_FAILURE: &'static str;

    /// Takes a turn: binds owner, id, now (µs) and the interval (µs); returns the bucket's new
    /// theoretical arrival time (µs) as `n`.
    const TAKE_TURN: &'static str;

    /// The registry's migrations for this database.
    const MIGRATIONS: Embedded;

    /// Binds a flag.
    fn flag(query: SqlQuery<'_, Self>, value: bool) -> SqlQuery<'_, Self>;

    /// Binds the event types as the `event_types` column stores them.
    fn event_types<'q>(
        query: SqlQuery<'q, Self>,
        types: &[String],
    ) -> Result<SqlQuery<'q, Self>, SubscriptionError>;

    /// The `event_types` column of a row.
    fn read_event_types(row: &Self::Row) -> Result<Vec<String>, SubscriptionError>;

    /// A row's columns by name.
    fn columns(row: &Self::Row) -> &dyn RowExt;

    /// Runs the registry's migrations on `pool`.
    fn migrate(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every row `query` returns.
    fn fetch_all<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>>;

    /// The row `query` returns, if any.
    fn fetch_optional<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>>;

    /// Runs `query`; how many rows it changed.
    fn execute<'c, 'q: 'c>(
        conn: &'c mut Self::Connection,
        query: SqlQuery<'q, Self>,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;
}

/// Implements the calls of [`SubscriptionDialect`] that only name sqlx's concrete types:
/// `$run_migrations` runs an [`Embedded`] set on a pool, `$encode_types` makes the list of event
/// types a value of the `event_types` column.
macro_rules! subscription_calls {
    ($run_migrations:path, $encode_types:expr) => {
        fn flag(query: SqlQuery<'_, Self>, value: bool) -> SqlQuery<'_, Self> {
            query.bind(value)
        }

        fn event_types<'q>(
            query: SqlQuery<'q, Self>,
            types: &[String],
        ) -> Result<SqlQuery<'q, Self>, SubscriptionError> {
            let encode = $encode_types;
            Ok(query.bind(encode(types)?))
        }

        fn columns(row: &Self::Row) -> &dyn RowExt {
            row
        }

        fn migrate(pool: &sqlx::Pool<Self>) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin($run_migrations(pool, Self::MIGRATIONS))
        }

        fn fetch_all<'c, 'q: 'c>(
            conn: &'c mut Self::Connection,
            query: SqlQuery<'q, Self>,
        ) -> BoxFuture<'c, Result<Vec<Self::Row>, sqlx::Error>> {
            Box::pin(query.fetch_all(conn))
        }

        fn fetch_optional<'c, 'q: 'c>(
            conn: &'c mut Self::Connection,
            query: SqlQuery<'q, Self>,
        ) -> BoxFuture<'c, Result<Option<Self::Row>, sqlx::Error>> {
            Box::pin(query.fetch_optional(conn))
        }

        fn execute<'c, 'q: 'c>(
            conn: &'c mut Self::Connection,
            query: SqlQuery<'q, Self>,
        ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
            Box::pin(async move { Ok(query.execute(conn).await?.rows_affected()) })
        }
    };
}

/// The registry's migrations in `migrations/registry/<backend>/`. Versions 3 and 4 were the
/// delivery store's before the registry kept its own history, so a database migrated then
/// has them in the store's history (or in 0.1's `_sqlx_migrations`): copied from there, they
/// are not run again.
macro_rules! registry_migrations {
    ($backend:literal) => {
        Embedded {
            migrations: &[
                (
                    3,
                    "webhooks",
                    include_str!(concat!(
                        "../../../../migrations/registry/",
                        $backend,
                        "/0003_webhooks.sql"
                    )),
                ),
                (
                    4,
                    "endpoint state",
                    include_str!(concat!(
                        "../../../../migrations/registry/",
                        $backend,
                        "/0004_endpoint_state.sql"
                    )),
                ),
            ],
            history: HISTORY_TABLE,
            adopt_from: &[
                crate::store::migrations::HISTORY_TABLE,
                crate::store::migrations::SQLX_TABLE,
            ],
            moved: &[],
        }
    };
}

/// The registry's migration history table, beside the delivery store's.
pub(crate) const HISTORY_TABLE: &str = "tower_webhooks_registry_migrations";

#[cfg(feature = "sqlite")]
impl SubscriptionDialect for sqlx::Sqlite {
    const STORE_NAME: &'static str = "SqliteSubscriptions";
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const LOCK_ROW: &'static str = "";
    const SUBSCRIBES_TO: &'static str = "EXISTS (SELECT 1 FROM json_each(webhooks.event_types) \
         AS t WHERE t.value = $1)";
    const RECORD_FAILURE: &'static str = "INSERT INTO webhook_failures (owner, id, failed_at) \
         VALUES ($1, $2, json_array($3)) \
         ON CONFLICT (owner, id) DO UPDATE SET failed_at = ( \
             SELECT json_group_array(t) FROM ( \
                 SELECT t FROM ( \
                     SELECT $3 AS t \
                     UNION ALL SELECT value FROM json_each(webhook_failures.failed_at)) \
                 WHERE t >= $4 ORDER BY t DESC LIMIT $5)) \
         RETURNING json_array_length(failed_at) AS n";
    const TAKE_TURN: &'static str = "INSERT INTO webhook_rate_limits (owner, id, tat) \
         VALUES ($1, $2, $3 + $4) \
         ON CONFLICT (owner, id) DO UPDATE SET tat = MAX(webhook_rate_limits.tat, $3) + $4 \
         RETURNING tat AS n";
    const MIGRATIONS: Embedded = registry_migrations!("sqlite");

    fn read_event_types(row: &Self::Row) -> Result<Vec<String>, SubscriptionError> {
        let text = row.text("event_types").map_err(super::record::from_store)?;
        serde_json::from_str(&text)
            .map_err(|_| SubscriptionError::Backend("unreadable webhook event_types column".into()))
    }

    subscription_calls!(
        crate::store::migrations::run_sqlite,
        |types: &[String]| { serde_json::to_string(types).map_err(super::record::backend) }
    );
}

#[cfg(feature = "postgres")]
impl SubscriptionDialect for sqlx::Postgres {
    const STORE_NAME: &'static str = "PostgresSubscriptions";
    const BEGIN_WRITE: Option<&'static str> = None;
    const LOCK_ROW: &'static str = " FOR UPDATE";
    const SUBSCRIBES_TO: &'static str = "event_types @> ARRAY[CAST($1 AS TEXT)]";
    const RECORD_FAILURE: &'static str =
        "INSERT INTO webhook_failures AS f (owner, id, failed_at) \
         VALUES ($1, $2, ARRAY[$3::bigint]) \
         ON CONFLICT (owner, id) DO UPDATE SET failed_at = ARRAY( \
             SELECT t FROM unnest(array_prepend($3::bigint, f.failed_at)) AS t \
             WHERE t >= $4 ORDER BY t DESC LIMIT $5) \
         RETURNING cardinality(failed_at)::bigint AS n";
    const TAKE_TURN: &'static str = "INSERT INTO webhook_rate_limits AS r (owner, id, tat) \
         VALUES ($1, $2, $3 + $4) \
         ON CONFLICT (owner, id) DO UPDATE SET tat = GREATEST(r.tat, $3) + $4 \
         RETURNING tat AS n";
    const MIGRATIONS: Embedded = registry_migrations!("postgres");

    fn read_event_types(row: &Self::Row) -> Result<Vec<String>, SubscriptionError> {
        sqlx::Row::try_get(row, "event_types").map_err(super::record::backend)
    }

    subscription_calls!(
        crate::store::migrations::run_postgres,
        |types: &[String]| { Ok::<_, SubscriptionError>(types.to_vec()) }
    );
}
