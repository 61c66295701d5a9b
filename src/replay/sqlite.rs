//! [`SqliteReplayStore`]: replay records in a SQLite file (feature `sqlite`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::sql::{backend, existing, PurgeTicker, DONE, IN_FLIGHT, PURGE_BATCH, RESERVE_ATTEMPTS};
use super::{expiry, Outcome, ReplayError, ReplayFuture, ReplayStore, Reservation};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tower_webhooks_replay (
    key TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    run_id TEXT,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tower_webhooks_replay_expires_at
    ON tower_webhooks_replay (expires_at);";

/// A [`ReplayStore`] in a SQLite file: shared by the processes of one host (WAL mode), kept
/// across restarts. The file is created private to its owner (mode `0600` on Unix).
///
/// Expired rows are ignored at once and deleted a bounded batch at a time, on one
/// reservation in 64 or through [`purge_expired`](Self::purge_expired). Cloning shares the
/// pool.
///
/// ```no_run
/// use tower_webhooks::replay::SqliteReplayStore;
/// use tower_webhooks::scheme::Cerebrium;
/// use tower_webhooks::WebhookSignatureLayer;
///
/// # async fn run() -> Result<(), tower_webhooks::replay::ReplayError> {
/// let store = SqliteReplayStore::connect("replay.db").await?;
/// let layer = WebhookSignatureLayer::new(Cerebrium::new(), "secret").replay_store(store);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteReplayStore {
    pool: SqlitePool,
    purge: Arc<PurgeTicker>,
}

impl fmt::Debug for SqliteReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteReplayStore").finish_non_exhaustive()
    }
}

impl SqliteReplayStore {
    /// Opens (or creates, mode `0600`) the file at `path` and its table.
    ///
    /// # Errors
    ///
    /// When the file cannot be created or opened, or the table cannot be created.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, ReplayError> {
        let path = path.as_ref();
        crate::store::private_file::create_private_file(path).map_err(ReplayError::new)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
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

async fn purge(pool: &SqlitePool, now: i64) -> Result<u64, ReplayError> {
    let done = sqlx::query(
        "DELETE FROM tower_webhooks_replay WHERE key IN \
         (SELECT key FROM tower_webhooks_replay WHERE expires_at <= ?1 LIMIT ?2)",
    )
    .bind(now)
    .bind(PURGE_BATCH)
    .execute(pool)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected())
}

super::sql::sql_replay_store!(SqliteReplayStore, SqlitePool);
