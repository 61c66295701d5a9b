//! [`PostgresStore`]: the shared, durable [`DeliveryStore`] for several replicas (feature
//! `postgres`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, Notify};

use super::migrations::{self, Embedded};
use super::sql::{
    self, backend, DeliveryRow, PendingRow, RecordRow, RowExt, Signers, Statements, UPDATE_PENDING,
};
#[cfg(doc)]
use super::DeliveryStore;
use super::StoreError;
use crate::delivery::model::Delivery;
use crate::time::unix_millis;

mod log;
mod maintenance;
mod queue;

use queue::{
    batcher, enqueue_many, enqueue_sql, listen, record_many, Channel, EnqueueColumns, Reply,
};

sql::impl_row_ext!(PgRow);

/// The PostgreSQL migrations shipped in `migrations/postgres/`.
const MIGRATIONS: Embedded = migrations::store_migrations!(
    "postgres",
    (
        6,
        "counts without triggers",
        "0006_counts_without_triggers.sql"
    ),
);

/// The `NOTIFY` payload of [`PostgresStore::enqueue_in_transaction`].
const OUTBOX_PAYLOAD: &str = "outbox";

/// How long a store operation keeps retrying through a lost connection or a database
/// restart before it reports the error.
const RETRY_FOR: Duration = Duration::from_secs(20);

/// Configures a [`PostgresStore`]; [`connect`](Self::connect) opens it.
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresOptions {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    migrate: bool,
    listen: bool,
    signers: Signers,
    owner: Option<String>,
}

impl PostgresOptions {
    /// Options for the database at `url` (`postgres://user:password@host:5432/db`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 10,
            migrate: true,
            listen: true,
            signers: Signers::default(),
            owner: None,
        }
    }

    /// Keeps the tables in this schema (created when missing) instead of the default search
    /// path: ASCII letters, digits and `_` only.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The pool size (10 by default; one connection is kept for `LISTEN`).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(2);
        self
    }

    /// Whether idle workers are woken by `LISTEN/NOTIFY` when any replica enqueues (on by
    /// default); without it they find new work at the engine's poll interval.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// Connects, creates the schema and runs the migrations (unless turned off), and starts
    /// listening for enqueues from other replicas.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a bad URL or schema name, [`StoreError::Backend`] when the
    /// database cannot be reached or migrated.
    pub async fn connect(self) -> Result<PostgresStore, StoreError> {
        if !self.signers.encrypts() {
            super::encryption::warn_unencrypted("postgres");
        }
        let mut options: PgConnectOptions = self
            .url
            .parse()
            .map_err(|_| StoreError::Invalid("not a PostgreSQL URL".into()))?;
        let application = match &self.schema {
            Some(schema) => format!("tower-webhooks/{schema}"),
            None => "tower-webhooks".to_owned(),
        };
        options = options.application_name(&application);
        let channel = match &self.schema {
            Some(schema) => {
                if schema.is_empty()
                    || schema.len() > 40
                    || !schema
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(StoreError::Invalid(format!(
                        "invalid schema name `{schema}`"
                    )));
                }
                let mut conn = options.connect().await.map_err(backend)?;
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .execute(&mut conn)
                    .await
                    .map_err(backend)?;
                let _ = conn.close().await;
                options = options.options([("search_path", schema.as_str())]);
                format!("tower_webhooks_{schema}")
            }
            None => "tower_webhooks".to_owned(),
        };
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // No ping before every use: a dead connection fails its query, which is retried
            // on a fresh one.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(backend)?;
        if self.migrate {
            migrations::run_postgres(&pool, MIGRATIONS).await?;
        }
        let owner = self.owner.unwrap_or_else(sql::owner_name);
        let channel = Channel {
            name: channel,
            owner: owner.clone(),
        };
        let notify = Arc::new(Notify::new());
        let listener = if self.listen {
            let task = tokio::spawn(listen(pool.clone(), channel.clone(), notify.clone()));
            Some(task.abort_handle())
        } else {
            None
        };
        let enqueues = batcher(pool.clone(), channel.clone(), enqueue_many);
        let records = batcher(pool.clone(), channel.clone(), record_many);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                enqueues,
                records,
                owner,
                signers: self.signers,
                statements: Statements::new::<sqlx::Postgres>(),
                schema: self.schema,
                channel: channel.name,
                notify,
                listener,
            }),
        })
    }
}

/// A durable [`DeliveryStore`] in PostgreSQL, for several replicas sharing one queue.
///
/// - **Claims** take due rows in batches with `FOR UPDATE SKIP LOCKED`, so replicas never
///   wait on each other, and put a **lease** on each (`lease_owner`, `lease_expires_at`) with
///   a **fencing token** (`lease_token`) incremented on every claim. A delivery due now is
///   claimed by the replica that accepts it in its `INSERT`
///   ([`enqueue_claimed`](DeliveryStore::enqueue_claimed): in flight, token 1), so it needs no
///   separate claim and wakes no other replica.
/// - **Takeover**: a row whose lease expired is due again; a crashed (or stalled) replica's
///   work is claimed by another one. [`record_attempt`](DeliveryStore::record_attempt) only
///   applies while the token still matches, so a replica that stalled past its lease gets
///   [`StoreError::LeaseLost`] and its stale outcome is dropped.
/// - **Wake-up**: every enqueue of a pending row sends `NOTIFY` in the same statement; each
///   store `LISTEN`s and wakes its engine's idle workers
///   ([`work_notified`](DeliveryStore::work_notified)), with the engine's poll interval as the
///   fallback.
/// - **Connection loss and database restarts**: the pool reconnects, and each operation is
///   retried for up to 20 s on connection errors (an enqueue whose first try committed is
///   not duplicated; a claim whose answer was lost is taken over when its lease expires).
/// - **Bounded memory**: the engine claims in batches; the queue is never loaded.
///
/// The table holds the signing secrets and custom header values:
/// [`PostgresOptions::encryption_keys`] encrypts them, otherwise they are stored as given
/// (restrict access with database roles). See the [module docs](super) for the table of
/// guarantees.
///
/// ```no_run
/// use tower_webhooks::delivery::DeliveryEngine;
/// use tower_webhooks::store::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_webhooks::store::StoreError> {
/// let store = PostgresStore::connect("postgres://webhooks@db.internal/app").await?;
/// // Every replica runs the same code against the same database.
/// let engine = DeliveryEngine::builder().store(store).build();
/// # let _ = engine;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    enqueues: mpsc::Sender<(DeliveryRow, Reply)>,
    records: mpsc::Sender<(RecordRow, Reply)>,
    owner: String,
    signers: Signers,
    statements: Statements,
    schema: Option<String>,
    channel: String,
    notify: Arc<Notify>,
    listener: Option<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

sql::sql_store_api! {
    store: PostgresStore,
    options: PostgresOptions,
    target: url: impl Into<String>,
    connect_doc: "Connects to `url` with the defaults",
    builder_doc: "Options for the database at `url`.",
    migrations: migrations::run_postgres, on pool,
    debug: [schema, owner, channel, signers],
}

impl PostgresStore {
    /// The connection pool (the tables live in the configured schema).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// This store's lease owner name.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The schema the tables live in, when one was [configured](PostgresOptions::schema).
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// The ring encrypting stored secrets, when [configured](PostgresOptions::encryption_keys).
    #[cfg(feature = "registry")]
    pub(crate) fn encryption_keys(&self) -> Option<&crate::store::EncryptionKeys> {
        self.inner.signers.keys()
    }

    /// The `deliveries` table, schema-qualified when a schema is configured, for statements
    /// run on connections that are not the store's own (whose `search_path` it does not set).
    pub(crate) fn qualified(&self, table: &str) -> String {
        match &self.inner.schema {
            // The name was checked at connect: letters, digits and `_` only.
            Some(schema) => format!("\"{schema}\".{table}"),
            None => table.to_owned(),
        }
    }

    /// Enqueues `deliveries` through the caller's connection — typically the application's
    /// own transaction (`&mut tx`) — instead of the store's pool: the **transactional
    /// outbox**. The rows are written by the same statement as [`enqueue`](DeliveryStore::enqueue),
    /// and the `NOTIFY` that wakes the workers is sent inside the transaction, so PostgreSQL
    /// delivers it on commit only: if the transaction rolls back, there is no delivery and
    /// no wake-up; once it commits, any replica's engine on this database sends them.
    ///
    /// The engine does not count these deliveries against its
    /// [capacity](crate::delivery::EngineBuilder::capacity) (they are like deliveries
    /// enqueued by another replica), and its workers must be running
    /// ([`DeliveryEngine::start`](crate::delivery::DeliveryEngine::start)) to be woken.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a signing that cannot be persisted,
    /// [`StoreError::Duplicate`] when an id is already stored (the other rows are inserted:
    /// roll back to undo them), [`StoreError::Backend`] when the statement fails (the
    /// transaction is then aborted, as PostgreSQL aborts it on any error). Nothing is retried:
    /// the transaction is the caller's.
    pub async fn enqueue_in_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let rows = deliveries
            .iter()
            .map(|delivery| DeliveryRow::new(delivery, &self.inner.signers))
            .collect::<Result<Vec<_>, _>>()?;
        let columns = EnqueueColumns::new(&rows);
        let sql = enqueue_sql(&self.qualified("deliveries"), true);
        // Not this store's owner name: its own listener must wake its engine too, since
        // that engine did not enqueue these. No row is claimed, so no owner is recorded.
        let found = columns
            .query(
                &sql,
                OUTBOX_PAYLOAD,
                Some((&self.inner.channel, OUTBOX_PAYLOAD)),
            )
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        let inserted = found
            .iter()
            .map(|row| row.text("id"))
            .collect::<Result<HashSet<String>, _>>()?;
        let mut seen = HashSet::new();
        match rows
            .iter()
            .find(|row| !seen.insert(&row.id) || !inserted.contains(&row.id))
        {
            Some(row) => Err(StoreError::Duplicate(row.id.clone())),
            None => Ok(()),
        }
    }
}

sql::sql_delivery_store!(PostgresStore);

/// The operations of [`sql::sql_delivery_store!`] that are one statement each; the others
/// are in `queue`, `log` and `maintenance`.
impl Inner {
    async fn update_pending(&self, row: PendingRow) -> Result<(), StoreError> {
        let now = unix_millis(SystemTime::now());
        let (done, retried) = self
            .retry("update_pending", |pool| {
                Box::pin(
                    sqlx::query(UPDATE_PENDING)
                        .bind(row.due)
                        .bind(&row.body)
                        .bind(now)
                        .bind(&row.id)
                        .execute(pool),
                )
            })
            .await?;
        if done.rows_affected() == 0 && !retried {
            return Err(self.missing(&row.id).await);
        }
        Ok(())
    }

    fn work_notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}
