//! The crate's migrations beside an application's own sqlx migrations in the same database (and
//! schema): either order works, re-runs are no-ops, and a database migrated by 0.1 (history in
//! `_sqlx_migrations`) is taken over without running anything twice.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod support;

use std::path::Path;

use sqlx::migrate::Migrator;

/// The application's own migrations, numbered like the crate's (1, 2) so a shared history table
/// would mix them up.
async fn app_migrations(dir: &Path) -> Migrator {
    std::fs::write(
        dir.join("1_users.sql"),
        "CREATE TABLE app_users (id BIGINT PRIMARY KEY, name TEXT NOT NULL);",
    )
    .unwrap();
    std::fs::write(
        dir.join("2_orders.sql"),
        "CREATE TABLE app_orders (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL);",
    )
    .unwrap();
    Migrator::new(dir).await.unwrap()
}

/// The statement `CHANGELOG.md` gives for removing 0.1's rows from `_sqlx_migrations`.
const REMOVE_0_1_HISTORY: &str = "DELETE FROM _sqlx_migrations \
     WHERE (version, checksum) IN (SELECT version, checksum FROM tower_webhooks_migrations)";

/// The versions in `table`, in order.
macro_rules! versions {
    ($pool:expr, $table:literal) => {{
        let rows: Vec<(i64,)> =
            sqlx::query_as(concat!("SELECT version FROM ", $table, " ORDER BY version"))
                .fetch_all($pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(version,)| version)
            .collect::<Vec<_>>()
    }};
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    use tower_webhooks::store::SqliteStore;

    async fn pool(path: &Path) -> SqlitePool {
        SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn sqlite_app_migrations_before_and_after_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_migrations(dir.path()).await;
        let path = dir.path().join("app.db");
        let pool = pool(&path).await;
        app.run(&pool).await.unwrap();
        SqliteStore::connect(&path).await.unwrap();
        // The application's migrator still finds only its own history.
        app.run(&pool).await.unwrap();
        // Both again: no-ops.
        SqliteStore::connect(&path).await.unwrap();
        app.run(&pool).await.unwrap();
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
        assert_eq!(
            versions!(&pool, "tower_webhooks_migrations"),
            [1, 2, 3, 4, 5]
        );
    }

    #[tokio::test]
    async fn sqlite_store_before_the_app_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_migrations(dir.path()).await;
        let path = dir.path().join("app.db");
        let store = SqliteStore::connect(&path).await.unwrap();
        let pool = pool(&path).await;
        app.run(&pool).await.unwrap();
        store.migrate().await.unwrap();
        app.run(&pool).await.unwrap();
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
        assert_eq!(
            versions!(&pool, "tower_webhooks_migrations"),
            [1, 2, 3, 4, 5]
        );
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name IN ('app_users', 'app_orders', 'deliveries', 'webhooks') ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(tables.len(), 4);
    }

    #[tokio::test]
    async fn sqlite_history_of_0_1_in_sqlx_migrations_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let pool = pool(&path).await;
        // What 0.1's `connect` did: the crate's migrations through sqlx's own migrator.
        SqliteStore::migrator().await.run(&pool).await.unwrap();
        // Nothing runs twice (`CREATE TABLE deliveries` would fail), and the history is
        // now in the crate's table.
        SqliteStore::connect(&path).await.unwrap();
        SqliteStore::connect(&path).await.unwrap();
        assert_eq!(
            versions!(&pool, "tower_webhooks_migrations"),
            [1, 2, 3, 4, 5]
        );
        // The old rows are left to the application; the CHANGELOG's statement removes them,
        // and then the application's own migrations run.
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2, 3, 4, 5]);
        sqlx::query(REMOVE_0_1_HISTORY)
            .execute(&pool)
            .await
            .unwrap();
        let app = app_migrations(dir.path()).await;
        app.run(&pool).await.unwrap();
        SqliteStore::connect(&path).await.unwrap();
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sqlx::postgres::{PgConnectOptions, PgPool};
    use sqlx::Connection as _;
    use tower_webhooks::store::PostgresStore;

    /// A pool whose tables live in `schema` (created here), as the application's would.
    async fn pool(url: &str, schema: &str) -> PgPool {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let options: PgConnectOptions = url.parse().unwrap();
        PgPool::connect_with(options.options([("search_path", schema)]))
            .await
            .unwrap()
    }

    async fn store(url: &str, schema: &str) -> PostgresStore {
        PostgresStore::builder(url)
            .schema(schema)
            .listen(false)
            .connect()
            .await
            .unwrap()
    }

    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn postgres_app_migrations_before_and_after_the_store() {
        let url = support::postgres_url();
        let schema = support::unique_schema("mig_app");
        let dir = tempfile::tempdir().unwrap();
        let app = app_migrations(dir.path()).await;
        let pool = pool(&url, &schema).await;
        app.run(&pool).await.unwrap();
        drop(store(&url, &schema).await);
        app.run(&pool).await.unwrap();
        drop(store(&url, &schema).await);
        app.run(&pool).await.unwrap();
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
        assert_eq!(
            versions!(&pool, "tower_webhooks_migrations"),
            [1, 2, 3, 4, 5]
        );
        pool.close().await;
        support::drop_schema(&url, &schema).await;
    }

    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn postgres_store_before_the_app_migrations() {
        let url = support::postgres_url();
        let schema = support::unique_schema("mig_store");
        let dir = tempfile::tempdir().unwrap();
        let app = app_migrations(dir.path()).await;
        let store = store(&url, &schema).await;
        let pool = pool(&url, &schema).await;
        app.run(&pool).await.unwrap();
        store.migrate().await.unwrap();
        app.run(&pool).await.unwrap();
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
        assert_eq!(
            versions!(&pool, "tower_webhooks_migrations"),
            [1, 2, 3, 4, 5]
        );
        drop(store);
        pool.close().await;
        support::drop_schema(&url, &schema).await;
    }

    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn postgres_history_of_0_1_in_sqlx_migrations_is_taken_over() {
        let url = support::postgres_url();
        let schema = support::unique_schema("mig_old");
        let pool = pool(&url, &schema).await;
        PostgresStore::migrator().await.run(&pool).await.unwrap();
        drop(store(&url, &schema).await);
        drop(store(&url, &schema).await);
        assert_eq!(
            versions!(&pool, "tower_webhooks_migrations"),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2, 3, 4, 5]);
        sqlx::query(REMOVE_0_1_HISTORY)
            .execute(&pool)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let app = app_migrations(dir.path()).await;
        app.run(&pool).await.unwrap();
        drop(store(&url, &schema).await);
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
        pool.close().await;
        support::drop_schema(&url, &schema).await;
    }
}
