//! The crate's SQL migrations and their own history table.
//!
//! The migrations are the `sqlx` layout of `migrations/<backend>/`, but the crate records what it
//! applied in `tower_webhooks_migrations`, never in sqlx's default `_sqlx_migrations`: an
//! application that runs its own `sqlx::migrate!()` in the same database and schema would
//! otherwise find versions it does not know there and stop with `VersionMissing` (or, with a
//! version number both use, `VersionMismatch`).
//!
//! A database migrated by 0.1, whose history is in `_sqlx_migrations`, is taken over on the
//! first run: the rows whose version and checksum are this crate's are copied (not moved) into
//! `tower_webhooks_migrations`, so nothing runs twice; see the CHANGELOG for removing them.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::sql::backend;
use super::StoreError;
use crate::time::unix_millis;

/// The crate's migration history table.
pub(crate) const HISTORY_TABLE: &str = "tower_webhooks_migrations";

/// Where 0.1 recorded the crate's migrations (sqlx's default table).
const SQLX_TABLE: &str = "_sqlx_migrations";

/// Migrations embedded from `migrations/<backend>/`, in the `sqlx` layout (`<version>_<name>.sql`),
/// so `sqlx-cli` can apply the same files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedded(pub(crate) &'static [(i64, &'static str, &'static str)]);

impl Embedded {
    fn migrations(self) -> Vec<Migration> {
        self.0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect()
    }
}

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move { Ok(self.migrations()) })
    }
}

/// The sqlx migrator for `source` (it records in `_sqlx_migrations`, as any sqlx migrator).
pub(crate) async fn migrator(source: Embedded) -> Migrator {
    // Resolving embedded migrations cannot fail.
    match Migrator::new(source).await {
        Ok(migrator) => migrator,
        Err(_) => unreachable!("embedded migrations always resolve"),
    }
}

/// The migrations of `migrations` still to apply, given the history's `(version, checksum)`
/// rows; an applied migration whose checksum differs is an error (its file was edited).
/// Versions this build does not know (a newer release's) are left alone.
fn pending<'a>(
    migrations: &'a [Migration],
    applied: &[(i64, Vec<u8>)],
) -> Result<Vec<&'a Migration>, StoreError> {
    let mut pending = Vec::new();
    for migration in migrations {
        match applied
            .iter()
            .find(|(version, _)| *version == migration.version)
        {
            Some((_, checksum)) if **checksum == *migration.checksum => {}
            Some(_) => {
                return Err(StoreError::Backend(format!(
                    "migration {} ({}) was applied with different contents",
                    migration.version, migration.description
                )))
            }
            None => pending.push(migration),
        }
    }
    if let Some((newest, _)) = applied.iter().max_by_key(|(version, _)| *version) {
        if migrations.iter().all(|m| m.version < *newest) {
            tracing::warn!(
                version = newest,
                "the database was migrated by a newer tower-webhooks; its tables are used as they are"
            );
        }
    }
    Ok(pending)
}

/// The rows of 0.1's history (`_sqlx_migrations`) that are this crate's migrations: same
/// version, same checksum, applied successfully.
fn adopted<'a>(migrations: &'a [Migration], legacy: &[(i64, Vec<u8>)]) -> Vec<&'a Migration> {
    migrations
        .iter()
        .filter(|m| {
            legacy
                .iter()
                .any(|(version, checksum)| *version == m.version && **checksum == *m.checksum)
        })
        .collect()
}

/// Applies the migrations of `$source` inside the open transaction `$tx`: creates the history
/// table (`$create`), takes over 0.1's rows when the history is new and `$legacy_exists` (a
/// `bool` query on `$tx`) finds `_sqlx_migrations`, runs what is pending, and commits.
macro_rules! apply {
    ($tx:ident, $source:expr, $create:expr, $legacy_exists:expr) => {{
        use sqlx::Row as _;

        let migrations = $source.migrations();
        sqlx::raw_sql($create)
            .execute(&mut *$tx)
            .await
            .map_err(backend)?;
        let history = |table: &str| format!("SELECT version, checksum FROM {table}");
        let mut applied: Vec<(i64, Vec<u8>)> = sqlx::query(&history(HISTORY_TABLE))
            .fetch_all(&mut *$tx)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let now = unix_millis(SystemTime::now());
        let record = format!(
            "INSERT INTO {HISTORY_TABLE} (version, description, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)"
        );
        let mut adopt = Vec::new();
        if applied.is_empty() && $legacy_exists {
            let legacy: Vec<(i64, Vec<u8>)> =
                sqlx::query(&format!("{} WHERE success", history(SQLX_TABLE)))
                    .fetch_all(&mut *$tx)
                    .await
                    .map_err(backend)?
                    .iter()
                    .map(|row| (row.get(0), row.get(1)))
                    .collect();
            adopt = adopted(&migrations, &legacy);
            applied.extend(adopt.iter().map(|m| (m.version, m.checksum.to_vec())));
        }
        let pending = pending(&migrations, &applied)?;
        for migration in pending.iter().copied() {
            sqlx::raw_sql(&migration.sql)
                .execute(&mut *$tx)
                .await
                .map_err(backend)?;
        }
        for migration in adopt.into_iter().chain(pending) {
            sqlx::query(&record)
                .bind(migration.version)
                .bind(&*migration.description)
                .bind(&*migration.checksum)
                .bind(now)
                .execute(&mut *$tx)
                .await
                .map_err(backend)?;
        }
        $tx.commit().await.map_err(backend)
    }};
}

/// Applies the SQLite migrations of `source` not yet in the history, in one `IMMEDIATE`
/// transaction (so two processes opening one file apply them once).
#[cfg(feature = "sqlite")]
pub(crate) async fn run_sqlite(
    pool: &sqlx::SqlitePool,
    source: Embedded,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    apply!(
        tx,
        source,
        &format!(
            "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
                version     INTEGER PRIMARY KEY,
                description TEXT    NOT NULL,
                checksum    BLOB    NOT NULL,
                applied_at  INTEGER NOT NULL
            )"
        ),
        sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(SQLX_TABLE)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some()
    )
}

/// Applies the PostgreSQL migrations of `source` not yet in the history (of the connection's
/// schema), in one transaction under an advisory lock, so replicas starting together apply them
/// once.
#[cfg(feature = "postgres")]
pub(crate) async fn run_postgres(pool: &sqlx::PgPool, source: Embedded) -> Result<(), StoreError> {
    /// The advisory lock replicas serialise on: held to the transaction's end, so a lost
    /// connection releases it.
    const LOCK: i64 = i64::from_be_bytes(*b"\0tw-migr");

    let mut tx = pool.begin().await.map_err(backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
    apply!(
        tx,
        source,
        &format!(
            "CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
                version     BIGINT PRIMARY KEY,
                description TEXT   NOT NULL,
                checksum    BYTEA  NOT NULL,
                applied_at  BIGINT NOT NULL
            )"
        ),
        // Resolved through the search path, as 0.1's sqlx migrator did.
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(SQLX_TABLE)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: Embedded = Embedded(&[(1, "one", "SELECT 1;"), (2, "two", "SELECT 2;")]);

    #[test]
    fn pending_skips_applied_and_refuses_edited_migrations() {
        let migrations = SOURCE.migrations();
        let first = (1, migrations[0].checksum.to_vec());
        let left = pending(&migrations, std::slice::from_ref(&first)).unwrap();
        assert_eq!(left.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
        assert!(pending(&migrations, &[(1, vec![0; 48])]).is_err());
        // A newer release's version is not this build's concern.
        let newer = [first, (2, migrations[1].checksum.to_vec()), (9, vec![1])];
        assert!(pending(&migrations, &newer).unwrap().is_empty());
    }

    #[test]
    fn only_the_crates_own_legacy_rows_are_adopted() {
        let migrations = SOURCE.migrations();
        let legacy = [
            (1, migrations[0].checksum.to_vec()),
            // The application's own version 2, with other contents.
            (2, vec![7; 48]),
        ];
        let adopted = adopted(&migrations, &legacy);
        assert_eq!(adopted.iter().map(|m| m.version).collect::<Vec<_>>(), [1]);
    }
}
