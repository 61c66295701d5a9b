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
        create_private(path).map_err(ReplayError::new)?;
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

/// Creates the file with owner-only permissions when it does not exist yet; SQLite gives its
/// `-wal` and `-shm` files the same permissions as the database.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
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

async fn reserve(
    pool: SqlitePool,
    key: String,
    now: i64,
    ttl: Duration,
) -> Result<Reservation, ReplayError> {
    let expires_at = expiry(now, ttl);
    for _ in 0..RESERVE_ATTEMPTS {
        // Inserts, or takes over an expired row; a live row is left alone and returns nothing.
        let taken = sqlx::query(
            "INSERT INTO tower_webhooks_replay (key, state, run_id, expires_at) \
             VALUES (?1, ?2, NULL, ?3) \
             ON CONFLICT (key) DO UPDATE SET state = excluded.state, run_id = NULL, \
             expires_at = excluded.expires_at WHERE tower_webhooks_replay.expires_at <= ?4 \
             RETURNING state",
        )
        .bind(&key)
        .bind(IN_FLIGHT)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&pool)
        .await
        .map_err(backend)?;
        if taken.is_some() {
            return Ok(Reservation::Fresh);
        }
        let row = sqlx::query(
            "SELECT state, run_id FROM tower_webhooks_replay WHERE key = ?1 AND expires_at > ?2",
        )
        .bind(&key)
        .bind(now)
        .fetch_optional(&pool)
        .await
        .map_err(backend)?;
        if let Some(row) = row {
            let state: String = row.try_get("state").map_err(backend)?;
            let run_id: Option<String> = row.try_get("run_id").map_err(backend)?;
            return existing(&state, run_id.as_deref());
        }
    }
    Err(ReplayError::new(
        "replay record changed under every attempt",
    ))
}

impl ReplayStore for SqliteReplayStore {
    fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation> {
        let pool = self.pool.clone();
        let key = key.to_owned();
        let purge_too = self.purge.tick();
        Box::pin(async move {
            let reservation = reserve(pool.clone(), key, now, ttl).await?;
            if purge_too {
                purge(&pool, now).await?;
            }
            Ok(reservation)
        })
    }

    fn complete(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) -> ReplayFuture<()> {
        let pool = self.pool.clone();
        let key = key.to_owned();
        Box::pin(async move {
            match outcome {
                Outcome::Processed(record) => {
                    sqlx::query(
                        "INSERT INTO tower_webhooks_replay (key, state, run_id, expires_at) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO UPDATE SET \
                         state = excluded.state, run_id = excluded.run_id, \
                         expires_at = excluded.expires_at",
                    )
                    .bind(&key)
                    .bind(DONE)
                    .bind(record.run_id.to_string())
                    .bind(expiry(now, ttl))
                    .execute(&pool)
                    .await
                    .map_err(backend)?;
                }
                Outcome::Failed => {
                    sqlx::query("DELETE FROM tower_webhooks_replay WHERE key = ?1 AND state = ?2")
                        .bind(&key)
                        .bind(IN_FLIGHT)
                        .execute(&pool)
                        .await
                        .map_err(backend)?;
                }
            }
            Ok(())
        })
    }
}
