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
//!
//! Each set of migrations ([`Embedded`]) names its own history table, so a component (the
//! delivery store, the registry) migrates its tables alone; a new history takes over the rows
//! of the tables named in [`Embedded::adopt_from`] the same way (see `docs/design.md`, "Storage"
//! item 17).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::sql::backend;
use super::StoreError;
use crate::time::unix_millis;

/// The delivery store's migration history table (the registry keeps its own).
pub(crate) const HISTORY_TABLE: &str = "tower_webhooks_migrations";

/// Where 0.1 recorded the crate's migrations (sqlx's default table).
pub(crate) const SQLX_TABLE: &str = "_sqlx_migrations";

/// Migrations embedded from `migrations/…/<backend>/`, in the `sqlx` layout
/// (`<version>_<name>.sql`), so `sqlx-cli` can apply the same files, and where their history is
/// kept.
///
/// Versions are unique across every set of the crate, so the sets can also share one
/// `_sqlx_migrations` when they are applied with sqlx's own tooling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Embedded {
    /// `(version, description, sql)`, oldest first.
    pub(crate) migrations: &'static [(i64, &'static str, &'static str)],
    /// The table that records which of them were applied.
    pub(crate) history: &'static str,
    /// Older histories that may hold this set's rows (same version and checksum): copied into
    /// a new `history`, so nothing runs twice.
    pub(crate) adopt_from: &'static [&'static str],
    /// Versions `history` may hold that belong to another set now; never reused.
    pub(crate) moved: &'static [i64],
}

/// The delivery store's migrations for `$backend` (`sqlite`, `postgres`): the versions and
/// names every backend shares, their SQL from `migrations/$backend/`, then the backend's own
/// (`$version, $name, $file`).
macro_rules! store_migrations {
    ($backend:literal $(, ($version:literal, $name:literal, $file:literal))* $(,)?) => {
        $crate::store::migrations::Embedded::store(&[
            (1, "deliveries", $crate::store::migrations::store_migrations!(@sql $backend, "0001_deliveries.sql")),
            (2, "finished index", $crate::store::migrations::store_migrations!(@sql $backend, "0002_finished_index.sql")),
            (5, "delivery counts", $crate::store::migrations::store_migrations!(@sql $backend, "0005_delivery_counts.sql")),
            $(($version, $name, $crate::store::migrations::store_migrations!(@sql $backend, $file)),)*
        ])
    };
    (@sql $backend:literal, $file:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/", $backend, "/", $file))
    };
}

pub(crate) use store_migrations;

impl Embedded {
    /// The delivery store's migrations: history in [`HISTORY_TABLE`], taken over from 0.1's
    /// `_sqlx_migrations`. Versions 3 and 4 (the registry's tables) were recorded there
    /// before the registry kept its own history; they stay reserved.
    pub(crate) const fn store(migrations: &'static [(i64, &'static str, &'static str)]) -> Self {
        Self {
            migrations,
            history: HISTORY_TABLE,
            adopt_from: &[SQLX_TABLE],
            moved: &[3, 4],
        }
    }

    fn migrations(self) -> Vec<Migration> {
        self.migrations
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
/// It ignores the versions it does not know: the crate's other sets (and the application's
/// own migrations) may share that table.
pub(crate) async fn migrator(source: Embedded) -> Migrator {
    // Resolving embedded migrations cannot fail.
    let mut migrator = match Migrator::new(source).await {
        Ok(migrator) => migrator,
        Err(_) => unreachable!("embedded migrations always resolve"),
    };
    migrator.set_ignore_missing(true);
    migrator
}

/// The migrations of `migrations` still to apply, given the history's `(version, checksum)`
/// rows; an applied migration whose checksum differs is an error (its file was edited).
/// Versions this build does not know (a newer release's) are left alone.
fn pending<'a>(
    migrations: &'a [Migration],
    applied: &[(i64, Vec<u8>)],
    moved: &[i64],
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
    let newest = applied
        .iter()
        .filter(|(version, _)| !moved.contains(version))
        .max_by_key(|(version, _)| *version);
    if let Some((newest, _)) = newest {
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

/// A boxed `Send` future. Every statement below runs through one of the functions of
/// `statements!`, whose named lifetimes let the compiler prove the future `Send` (the registry
/// migrates inside `Send` futures); written inline in the async code, sqlx's higher-ranked
/// executor lifetimes defeat that proof.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The statements of [`apply!`] on a connection of type `$conn`, and `exists`, whether a table
/// exists (`$exists`, a query binding the table name and returning a row when it does).
macro_rules! statements {
    ($conn:ty, $exists:expr) => {
        fn raw<'c>(conn: &'c mut $conn, sql: &'c str) -> Boxed<'c, ()> {
            Box::pin(async move {
                // Through the executor, whose future is boxed: `RawSql::execute`'s is not
                // provably `Send` here.
                sqlx::Executor::execute(conn, sqlx::raw_sql(sql))
                    .await
                    .map_err(backend)?;
                Ok(())
            })
        }

        fn versions<'c>(conn: &'c mut $conn, sql: String) -> Boxed<'c, Vec<(i64, Vec<u8>)>> {
            use sqlx::Row as _;
            Box::pin(async move {
                let rows = sqlx::query(&sql).fetch_all(conn).await.map_err(backend)?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            })
        }

        fn exists<'c>(conn: &'c mut $conn, table: &'c str) -> Boxed<'c, bool> {
            Box::pin(async move {
                let found = sqlx::query($exists)
                    .bind(table)
                    .fetch_optional(conn)
                    .await
                    .map_err(backend)?;
                Ok(found.is_some())
            })
        }

        fn record<'c>(
            conn: &'c mut $conn,
            history: &'c str,
            migration: &'c Migration,
            now: i64,
        ) -> Boxed<'c, ()> {
            Box::pin(async move {
                let sql = format!(
                    "INSERT INTO {history} (version, description, checksum, applied_at) \
                     VALUES ($1, $2, $3, $4)"
                );
                sqlx::query(&sql)
                    .bind(migration.version)
                    .bind(&*migration.description)
                    .bind(&*migration.checksum)
                    .bind(now)
                    .execute(conn)
                    .await
                    .map_err(backend)?;
                Ok(())
            })
        }
    };
}

/// Applies the migrations of `$source` inside the open transaction `$tx` through the functions
/// of `statements!`: creates its history table (`$create`, with `{}` for its name), takes over
/// the rows of `$source.adopt_from` when the history is new, runs what is pending, and commits.
macro_rules! apply {
    ($tx:ident, $source:expr, $create:expr) => {{
        let source: Embedded = $source;
        let migrations = source.migrations();
        raw(&mut *$tx, &$create.replace("{}", source.history)).await?;
        let history = |table: &str| format!("SELECT version, checksum FROM {table}");
        let mut applied = versions(&mut *$tx, history(source.history)).await?;
        let now = unix_millis(SystemTime::now());
        let mut adopt: Vec<&Migration> = Vec::new();
        if applied.is_empty() {
            for &table in source.adopt_from {
                if !exists(&mut *$tx, table).await? {
                    continue;
                }
                // sqlx's table records failed runs too; the crate's tables only successes.
                let only = if table == SQLX_TABLE {
                    " WHERE success"
                } else {
                    ""
                };
                let legacy = versions(&mut *$tx, format!("{}{only}", history(table))).await?;
                for migration in adopted(&migrations, &legacy) {
                    if !adopt.iter().any(|m| m.version == migration.version) {
                        adopt.push(migration);
                    }
                }
            }
            applied.extend(adopt.iter().map(|m| (m.version, m.checksum.to_vec())));
        }
        let pending = pending(&migrations, &applied, source.moved)?;
        for migration in pending.iter().copied() {
            raw(&mut *$tx, &migration.sql).await?;
        }
        for migration in adopt.into_iter().chain(pending) {
            record(&mut *$tx, source.history, migration, now).await?;
        }
        $tx.commit().await.map_err(backend)
    }};
}

/// Applies the SQLite migrations of `source` not yet in its history, in one `IMMEDIATE`
/// transaction (so two processes opening one file apply them once).
#[cfg(feature = "sqlite")]
pub(crate) async fn run_sqlite(
    pool: &sqlx::SqlitePool,
    source: Embedded,
) -> Result<(), StoreError> {
    statements!(
        sqlx::SqliteConnection,
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1"
    );

    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    apply!(
        tx,
        source,
        "CREATE TABLE IF NOT EXISTS {} (
            version     INTEGER PRIMARY KEY,
            description TEXT    NOT NULL,
            checksum    BLOB    NOT NULL,
            applied_at  INTEGER NOT NULL
        )"
    )
}

/// Applies the PostgreSQL migrations of `source` not yet in its history (of the connection's
/// schema), in one transaction under an advisory lock, so replicas starting together apply them
/// once.
#[cfg(feature = "postgres")]
pub(crate) async fn run_postgres(pool: &sqlx::PgPool, source: Embedded) -> Result<(), StoreError> {
    /// The advisory lock replicas serialise on (every set of the crate's migrations): held to
    /// the transaction's end, so a lost connection releases it.
    const LOCK: i64 = i64::from_be_bytes(*b"\0tw-migr");

    // Resolved through the search path, as 0.1's sqlx migrator did.
    statements!(
        sqlx::PgConnection,
        "SELECT 1 WHERE to_regclass($1) IS NOT NULL"
    );

    let mut tx = pool.begin().await.map_err(backend)?;
    raw(&mut tx, &format!("SELECT pg_advisory_xact_lock({LOCK})")).await?;
    apply!(
        tx,
        source,
        "CREATE TABLE IF NOT EXISTS {} (
            version     BIGINT PRIMARY KEY,
            description TEXT   NOT NULL,
            checksum    BYTEA  NOT NULL,
            applied_at  BIGINT NOT NULL
        )"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: Embedded = Embedded {
        migrations: &[(1, "one", "SELECT 1;"), (2, "two", "SELECT 2;")],
        history: HISTORY_TABLE,
        adopt_from: &[SQLX_TABLE],
        moved: &[],
    };

    #[test]
    fn pending_skips_applied_and_refuses_edited_migrations() {
        let migrations = SOURCE.migrations();
        let first = (1, migrations[0].checksum.to_vec());
        let left = pending(&migrations, std::slice::from_ref(&first), &[]).unwrap();
        assert_eq!(left.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
        assert!(pending(&migrations, &[(1, vec![0; 48])], &[]).is_err());
        // A newer release's version is not this build's concern.
        let newer = [first, (2, migrations[1].checksum.to_vec()), (9, vec![1])];
        assert!(pending(&migrations, &newer, &[]).unwrap().is_empty());
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
