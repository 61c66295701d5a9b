//! The crate's migrations beside an application's own sqlx migrations in the same database (and
//! schema): either order works, re-runs are no-ops, and a database migrated by 0.1 (history in
//! `_sqlx_migrations`) is taken over without running anything twice. The registry's tables have
//! their own migrations and history: a database whose registry tables were created by the
//! delivery store's migrations (versions 3 and 4 in `tower_webhooks_migrations`) still opens.
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

/// The statement `CHANGELOG.md` gives for removing 0.1's rows from `_sqlx_migrations` (the
/// registry's history exists once a registry store opened the database).
const REMOVE_0_1_HISTORY: &str = "DELETE FROM _sqlx_migrations \
     WHERE (version, checksum) IN (SELECT version, checksum FROM tower_webhooks_migrations) \
     OR (version, checksum) IN \
        (SELECT version, checksum FROM tower_webhooks_registry_migrations)";

/// The versions a migrator knows.
fn known(migrator: &Migrator) -> Vec<i64> {
    migrator.iter().map(|m| m.version).collect()
}

/// The registry's history table as the delivery store's: the layout before the registry kept
/// its own, with every set's rows in `tower_webhooks_migrations` (`$blob` is the checksum type).
/// With `up_to`, only the migrations up to that version are applied (a database of an older
/// release).
#[cfg(any(feature = "registry", feature = "postgres"))]
macro_rules! old_layout {
    ($pool:expr, $blob:literal, $migrators:expr) => {
        old_layout!($pool, $blob, $migrators, up_to = i64::MAX)
    };
    ($pool:expr, $blob:literal, $migrators:expr, up_to = $up_to:expr) => {{
        sqlx::raw_sql(concat!(
            "CREATE TABLE tower_webhooks_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, checksum ",
            $blob,
            " NOT NULL, applied_at BIGINT NOT NULL)"
        ))
        .execute($pool)
        .await
        .unwrap();
        for migrator in $migrators {
            for migration in migrator.iter().filter(|m| m.version <= $up_to) {
                sqlx::raw_sql(&migration.sql).execute($pool).await.unwrap();
                sqlx::query(
                    "INSERT INTO tower_webhooks_migrations \
                     (version, description, checksum, applied_at) VALUES ($1, $2, $3, 0)",
                )
                .bind(migration.version)
                .bind(&*migration.description)
                .bind(&*migration.checksum)
                .execute($pool)
                .await
                .unwrap();
            }
        }
    }};
}

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
            known(&SqliteStore::migrator().await)
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
            known(&SqliteStore::migrator().await)
        );
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name IN ('app_users', 'app_orders', 'deliveries', 'webhooks') ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        // The registry's tables are the registry's: the delivery store alone does not create
        // them.
        assert_eq!(tables.len(), 3);
    }

    #[tokio::test]
    async fn sqlite_history_of_0_1_in_sqlx_migrations_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let pool = pool(&path).await;
        // What 0.1's `connect` did: the crate's migrations through sqlx's own migrator (the
        // registry's were among them then).
        SqliteStore::migrator().await.run(&pool).await.unwrap();
        #[cfg(feature = "registry")]
        registry::SqliteSubscriptions::migrator()
            .await
            .run(&pool)
            .await
            .unwrap();
        // Nothing runs twice (`CREATE TABLE deliveries` would fail), and the history is
        // now in the crate's tables.
        SqliteStore::connect(&path).await.unwrap();
        SqliteStore::connect(&path).await.unwrap();
        assert_eq!(versions!(&pool, "tower_webhooks_migrations"), [1, 2, 5]);
        #[cfg(feature = "registry")]
        {
            registry::SqliteSubscriptions::connect(&path).await.unwrap();
            assert_eq!(
                versions!(&pool, "tower_webhooks_registry_migrations"),
                [3, 4]
            );
            // The old rows are left to the application; the CHANGELOG's statement removes
            // them, and then the application's own migrations run.
            assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2, 3, 4, 5]);
        }
        #[cfg(not(feature = "registry"))]
        sqlx::raw_sql(
            "CREATE TABLE tower_webhooks_registry_migrations (version BIGINT, checksum BLOB)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(REMOVE_0_1_HISTORY)
            .execute(&pool)
            .await
            .unwrap();
        let app = app_migrations(dir.path()).await;
        app.run(&pool).await.unwrap();
        SqliteStore::connect(&path).await.unwrap();
        assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2]);
    }

    /// A file migrated when the registry's tables were store migrations 3 and 4 opens, in
    /// either order, runs nothing twice, and keeps its webhooks.
    #[cfg(feature = "registry")]
    #[tokio::test]
    async fn sqlite_registry_tables_of_the_store_history_are_taken_over() {
        use tower_webhooks::registry::{SqliteSubscriptions, SubscriptionStore, WebhookKey};

        for subscriptions_first in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("split.db");
            let pool = pool(&path).await;
            old_layout!(
                &pool,
                "BLOB",
                [
                    SqliteStore::migrator().await,
                    SqliteSubscriptions::migrator().await
                ]
            );
            let webhook = registry::webhook("kept");
            sqlx::query(
                "INSERT INTO webhooks (owner, id, endpoint_url, event_types, description, \
                 scheme, secrets, headers, enabled, created_at, updated_at) \
                 VALUES ('acme', $1, 'https://example.com/hook', '[\"run.status\"]', '', \
                 'nextmv', '[]', '[]', 1, 0, 0)",
            )
            .bind(&webhook)
            .execute(&pool)
            .await
            .unwrap();
            let subscriptions = if subscriptions_first {
                let subscriptions = SqliteSubscriptions::connect(&path).await.unwrap();
                SqliteStore::connect(&path).await.unwrap();
                subscriptions
            } else {
                SqliteStore::connect(&path).await.unwrap();
                SqliteSubscriptions::connect(&path).await.unwrap()
            };
            // Copied, not moved: an earlier release still opens the file.
            assert_eq!(
                versions!(&pool, "tower_webhooks_migrations"),
                [1, 2, 3, 4, 5]
            );
            assert_eq!(
                versions!(&pool, "tower_webhooks_registry_migrations"),
                [3, 4]
            );
            let owner = tower_webhooks::registry::Owner::new("acme");
            let found = subscriptions
                .get(WebhookKey::new(&owner, &webhook))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.endpoint_url, "https://example.com/hook");
            let subscribed = subscriptions.subscribed("run.status", None).await.unwrap();
            assert_eq!(subscribed.len(), 1);
            // Re-opening runs nothing.
            SqliteSubscriptions::connect(&path).await.unwrap();
            SqliteStore::connect(&path).await.unwrap();
        }
    }

    /// The registry's tables alone, in a fresh file: its own history, none of the store's.
    #[cfg(feature = "registry")]
    #[tokio::test]
    async fn sqlite_registry_migrates_alone() {
        use tower_webhooks::registry::SqliteSubscriptions;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        SqliteSubscriptions::connect(&path).await.unwrap();
        let pool = pool(&path).await;
        assert_eq!(
            versions!(&pool, "tower_webhooks_registry_migrations"),
            known(&SqliteSubscriptions::migrator().await)
        );
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name IN ('deliveries', 'tower_webhooks_migrations') ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(tables.is_empty(), "{tables:?}");
    }
}

#[cfg(feature = "registry")]
mod registry {
    pub use tower_webhooks::registry::*;

    /// A webhook id unique to the test.
    pub fn webhook(name: &str) -> String {
        format!("{name}-{}", uuid::Uuid::new_v4().simple())
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
            known(&PostgresStore::migrator().await)
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
            known(&PostgresStore::migrator().await)
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
        #[cfg(feature = "registry")]
        registry::PostgresSubscriptions::migrator()
            .await
            .run(&pool)
            .await
            .unwrap();
        drop(store(&url, &schema).await);
        drop(store(&url, &schema).await);
        assert_eq!(versions!(&pool, "tower_webhooks_migrations"), [1, 2, 5, 6]);
        #[cfg(feature = "registry")]
        {
            let store = store(&url, &schema).await;
            registry::PostgresSubscriptions::new(&store)
                .migrate()
                .await
                .unwrap();
            assert_eq!(
                versions!(&pool, "tower_webhooks_registry_migrations"),
                [3, 4]
            );
            assert_eq!(versions!(&pool, "_sqlx_migrations"), [1, 2, 3, 4, 5, 6]);
        }
        #[cfg(not(feature = "registry"))]
        sqlx::raw_sql(
            "CREATE TABLE tower_webhooks_registry_migrations (version BIGINT, checksum BYTEA)",
        )
        .execute(&pool)
        .await
        .unwrap();
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

    /// A schema migrated when the registry's tables were store migrations 3 and 4 opens, in
    /// either order, runs nothing twice, and keeps its webhooks.
    #[cfg(feature = "registry")]
    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn postgres_registry_tables_of_the_store_history_are_taken_over() {
        use tower_webhooks::registry::{
            Owner, PostgresSubscriptions, SubscriptionStore, WebhookKey,
        };

        let url = support::postgres_url();
        for subscriptions_first in [false, true] {
            let schema = support::unique_schema("mig_split");
            let pool = pool(&url, &schema).await;
            old_layout!(
                &pool,
                "BYTEA",
                [
                    PostgresStore::migrator().await,
                    PostgresSubscriptions::migrator().await
                ]
            );
            let webhook = registry::webhook("kept");
            sqlx::query(
                "INSERT INTO webhooks (owner, id, endpoint_url, event_types, description, \
                 scheme, secrets, headers, enabled, created_at, updated_at) \
                 VALUES ('acme', $1, 'https://example.com/hook', ARRAY['run.status'], '', \
                 'nextmv', '[]', '[]', TRUE, 0, 0)",
            )
            .bind(&webhook)
            .execute(&pool)
            .await
            .unwrap();
            let store = if subscriptions_first {
                let plain = PostgresStore::builder(&url)
                    .schema(&schema)
                    .listen(false)
                    .migrate(false)
                    .connect()
                    .await
                    .unwrap();
                PostgresSubscriptions::new(&plain).migrate().await.unwrap();
                store(&url, &schema).await
            } else {
                store(&url, &schema).await
            };
            let subscriptions = PostgresSubscriptions::new(&store);
            subscriptions.migrate().await.unwrap();
            // Copied, not moved: an earlier release still opens the schema.
            assert_eq!(
                versions!(&pool, "tower_webhooks_migrations"),
                [1, 2, 3, 4, 5, 6]
            );
            assert_eq!(
                versions!(&pool, "tower_webhooks_registry_migrations"),
                [3, 4]
            );
            let owner = Owner::new("acme");
            let found = subscriptions
                .get(WebhookKey::new(&owner, &webhook))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.endpoint_url, "https://example.com/hook");
            let subscribed = subscriptions.subscribed("run.status", None).await.unwrap();
            assert_eq!(subscribed.len(), 1);
            drop((subscriptions, store));
            pool.close().await;
            support::drop_schema(&url, &schema).await;
        }
    }

    /// A schema migrated up to 0005 (counts kept by triggers) upgrades: 0006 drops the
    /// triggers, their function and table, and `stats` still counts the queue exactly.
    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn postgres_upgrade_drops_the_count_triggers() {
        use std::time::{Duration, SystemTime};
        use tower_webhooks::delivery::{
            Attempt, AttemptOutcome, Decision, Delivery, DeliveryState, Next,
        };
        use tower_webhooks::store::{AttemptRecord, DeliveryStore, PurgeRequest};

        let url = support::postgres_url();
        let schema = support::unique_schema("mig_counts");
        let pool = pool(&url, &schema).await;
        old_layout!(&pool, "BYTEA", [PostgresStore::migrator().await], up_to = 5);
        let later = SystemTime::now() + Duration::from_secs(60);
        let lease_for = Duration::from_secs(30);
        // Rows written while the triggers still ran.
        let old = PostgresStore::builder(&url)
            .schema(&schema)
            .listen(false)
            .migrate(false)
            .connect()
            .await
            .unwrap();
        for id in ["a", "b", "c"] {
            old.enqueue(Delivery::new(id, "https://example.com/hook", "{}"))
                .await
                .unwrap();
        }
        let claims = old.claim_due(later, 2, lease_for).await.unwrap();
        let mut attempt = Attempt::new(1, SystemTime::now(), AttemptOutcome::Status(200));
        attempt.decision = Decision::Delivered;
        let delivered = Next::Final {
            state: DeliveryState::Delivered,
            reason: None,
        };
        old.record_attempt(AttemptRecord {
            id: &claims[0].delivery.id,
            lease: claims[0].lease,
            attempt: attempt.clone(),
            next: delivered.clone(),
        })
        .await
        .unwrap();
        let (changes,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM delivery_count_changes")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(changes > 0, "the triggers of 0005 ran");
        drop(old);

        let store = store(&url, &schema).await;
        assert_eq!(versions!(&pool, "tower_webhooks_migrations"), [1, 2, 5, 6]);
        let (triggers, counts_table): (i64, Option<String>) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM pg_trigger \
               WHERE tgrelid = 'deliveries'::regclass AND NOT tgisinternal), \
             to_regclass('delivery_count_changes')::TEXT",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((triggers, counts_table), (0, None));
        let (due_index,): (String,) = sqlx::query_as(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'deliveries_due' \
                 AND schemaname = current_schema()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(due_index.contains("INCLUDE (state)"), "{due_index}");

        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.in_flight, stats.finished), (1, 1, 1));
        store
            .enqueue(Delivery::new("d", "https://example.com/hook", "{}"))
            .await
            .unwrap();
        store
            .record_attempt(AttemptRecord {
                id: &claims[1].delivery.id,
                lease: claims[1].lease,
                attempt,
                next: delivered,
            })
            .await
            .unwrap();
        let purged = store
            .purge(PurgeRequest {
                state: DeliveryState::Delivered,
                before: later,
                limit: 1,
            })
            .await
            .unwrap();
        assert_eq!(purged, 1);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.pending, stats.in_flight, stats.finished), (2, 0, 1));
        drop(store);
        pool.close().await;
        support::drop_schema(&url, &schema).await;
    }
}
