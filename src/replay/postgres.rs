//! [`PostgresReplayStore`]: replay records shared by every replica (feature `postgres`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use super::sql::{backend, existing, PurgeTicker, DONE, IN_FLIGHT, PURGE_BATCH, RESERVE_ATTEMPTS};
use super::{expiry, Outcome, ReplayError, ReplayFuture, ReplayStore, Reservation};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tower_webhooks_replay (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    run_id TEXT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tower_webhooks_replay_expires_at
    ON tower_webhooks_replay (expires_at);";

/// A [`ReplayStore`] in PostgreSQL: every replica connected to one database (and schema)
/// shares de-duplication.
///
/// A reservation is one `INSERT … ON CONFLICT DO UPDATE … WHERE expired`: the row lock makes
/// exactly one concurrent caller [`Fresh`](Reservation::Fresh). Expired rows are ignored at
/// once and deleted a bounded batch at a time, on one reservation in 64 or through
/// [`purge_expired`](Self::purge_expired). Cloning shares the pool.
///
/// ```no_run
/// use tower_webhooks::replay::PostgresReplayStore;
///
/// # async fn run() -> Result<(), tower_webhooks::replay::ReplayError> {
/// let store = PostgresReplayStore::connect("postgres://app@db/app", Some("webhooks")).await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresReplayStore {
    pool: PgPool,
    purge: Arc<PurgeTicker>,
}

impl fmt::Debug for PostgresReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresReplayStore")
            .finish_non_exhaustive()
    }
}

impl PostgresReplayStore {
    /// Connects to `url` and creates the table, in `schema` (created when missing; letters,
    /// digits and `_`, at most 40) or else the connection's search path.
    ///
    /// # Errors
    ///
    /// A bad URL or schema name, or a database that cannot be reached.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, ReplayError> {
        let mut options: PgConnectOptions = url
            .parse()
            .map_err(|_| ReplayError::new("not a PostgreSQL URL"))?;
        options = options.application_name("tower-webhooks/replay");
        let mut conn = options.connect().await.map_err(backend)?;
        if let Some(schema) = schema {
            if schema.is_empty()
                || schema.len() > 40
                || !schema
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(ReplayError::new(format!("invalid schema name `{schema}`")));
            }
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut conn)
                .await
                .map_err(backend)?;
            sqlx::query(&format!("SET search_path TO \"{schema}\""))
                .execute(&mut conn)
                .await
                .map_err(backend)?;
            options = options.options([("search_path", schema)]);
        }
        // Replicas starting together would race on `CREATE TABLE IF NOT EXISTS`.
        let mut transaction = conn.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tower_webhooks_replay'))")
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *transaction)
            .await
            .map_err(backend)?;
        transaction.commit().await.map_err(backend)?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(backend)?;
        Ok(Self {
            pool,
            purge: Arc::default(),
        })
    }

    /// Deletes up to 256 records expired at `now` (Unix seconds); returns how many.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, ReplayError> {
        purge(&self.pool, now).await
    }
}

async fn purge(pool: &PgPool, now: i64) -> Result<u64, ReplayError> {
    let done = sqlx::query(
        "DELETE FROM tower_webhooks_replay WHERE key IN \
         (SELECT key FROM tower_webhooks_replay WHERE expires_at <= $1 LIMIT $2 \
          FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(PURGE_BATCH)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected())
}

super::sql::sql_replay_store!(PostgresReplayStore, PgPool);
