//! [`PostgresStore`]: the shared, durable [`DeliveryStore`] for several replicas (feature
//! `postgres`).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::migrations::{self, Embedded};
use super::sql::{
    self, backend, conversations, delivery_from_row, lease_from_row, AttemptRow, DeliveryRow,
    NextRow, RowExt, Signers, ATTEMPT_COLUMNS, DELIVERY_COLUMNS,
};
use super::{DeliveryStore, StoreError, StoreFuture, StoreStats};
use crate::delivery::model::{
    Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState, Lease, Next,
    SigningSpec,
};
use crate::time::{from_unix_millis, unix_millis};

sql::impl_row_ext!(PgRow);

/// The PostgreSQL migrations shipped in `migrations/postgres/`.
const MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "deliveries",
        include_str!("../../migrations/postgres/0001_deliveries.sql"),
    ),
    (
        2,
        "finished index",
        include_str!("../../migrations/postgres/0002_finished_index.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../../migrations/postgres/0003_webhooks.sql"),
    ),
    (
        4,
        "endpoint state",
        include_str!("../../migrations/postgres/0004_endpoint_state.sql"),
    ),
]);

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

    /// Whether [`connect`](Self::connect) runs the migrations (on by default; concurrent
    /// replicas serialise on an advisory lock). When off, call [`PostgresStore::migrate`].
    ///
    /// Their history is kept in the schema's `tower_webhooks_migrations` table, not in sqlx's
    /// `_sqlx_migrations`, so the application's own `sqlx::migrate!()` can run in the same
    /// schema, before or after.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether idle workers are woken by `LISTEN/NOTIFY` when any replica enqueues (on by
    /// default); without it they find new work at the engine's poll interval.
    pub fn listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// The lease owner recorded on claimed rows (by default the process id and a random
    /// suffix); useful to tell replicas apart when looking at the table.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Encrypts the secrets kept in the tables (signing secrets and custom header values,
    /// also those of [`PostgresSubscriptions`](crate::registry::PostgresSubscriptions) built on
    /// this store) with the newest key of `keys`; older keys still decrypt, and values
    /// written before a key was configured still read. Without keys,
    /// [`connect`](Self::connect) logs a warning. Every replica needs the same ring.
    pub fn encryption_keys(mut self, keys: crate::store::EncryptionKeys) -> Self {
        self.signers.set_keys(keys);
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
            run_migrations(&pool).await?;
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
                schema: self.schema,
                channel: channel.name,
                notify,
                listener,
            }),
        })
    }
}

async fn run_migrations(pool: &PgPool) -> Result<(), StoreError> {
    migrations::run_postgres(pool, MIGRATIONS).await
}

/// Wakes the engine's idle workers on every notification; reconnects after a lost
/// connection (and wakes them then too, as notifications may have been missed).
async fn listen(pool: PgPool, channel: Channel, notify: Arc<Notify>) {
    let wake = || {
        notify.notify_waiters();
        // A dispatcher between two waits finds the permit.
        notify.notify_one();
    };
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::debug!(error = %err, "webhook delivery store: LISTEN connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(err) = listener.listen(&channel.name).await {
            tracing::debug!(error = %err, "webhook delivery store: LISTEN failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.payload() == channel.owner => {}
                Ok(Some(_)) => wake(),
                // Reconnected: what was sent meanwhile is lost, look anyway.
                Ok(None) => wake(),
                Err(err) => {
                    tracing::debug!(error = %err, "webhook delivery store: LISTEN lost");
                    wake();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
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

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .field("owner", &self.inner.owner)
            .field("channel", &self.inner.channel)
            .field("signers", &self.inner.signers)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` with the defaults ([`PostgresOptions::new`]).
    ///
    /// # Errors
    ///
    /// As [`PostgresOptions::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Self, StoreError> {
        PostgresOptions::new(url).connect().await
    }

    /// Options for the database at `url`.
    pub fn builder(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions::new(url)
    }

    /// Runs the migrations (when [`PostgresOptions::migrate`] was turned off).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        run_migrations(&self.inner.pool).await
    }

    /// The migrations as a sqlx [`Migrator`], to run them with your own tooling.
    ///
    /// A sqlx migrator records them in `_sqlx_migrations`, beside the application's own;
    /// [`migrate`](Self::migrate) and [`connect`](PostgresOptions::connect) keep the crate's
    /// history in `tower_webhooks_migrations` (in the store's schema) instead, out of the way
    /// of the application's `sqlx::migrate!()`. Use one or the other on a database, not both.
    pub async fn migrator() -> Migrator {
        migrations::migrator(MIGRATIONS).await
    }

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

// ---------------------------------------------------------------------------------------------
// Retries through connection loss.

/// Whether an error is worth retrying: the connection or the server went away.
fn transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // connection_exception, admin/crash shutdown, cannot_connect_now,
            // serialization failure, deadlock.
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
        }),
        _ => false,
    }
}

type SqlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

impl Inner {
    /// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed; the flag
    /// says whether it was retried (its first try may have committed).
    async fn retry<'a, T>(
        &'a self,
        what: &'static str,
        mut op: impl FnMut(&'a PgPool) -> SqlFuture<'a, T>,
    ) -> Result<(T, bool), StoreError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut retried = false;
        loop {
            match op(&self.pool).await {
                Ok(value) => return Ok((value, retried)),
                Err(err) if transient(&err) && started.elapsed() < RETRY_FOR => {
                    tracing::warn!(error = %err, operation = what, "webhook delivery store: retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    retried = true;
                }
                Err(err) => return Err(backend(err)),
            }
        }
    }

    /// `NotFound` or `LeaseLost`, for an update that matched no row.
    async fn missing(&self, id: &str) -> StoreError {
        let found = self
            .retry("check", |pool| {
                Box::pin(
                    sqlx::query("SELECT 1 FROM deliveries WHERE id = $1")
                        .bind(id.to_owned())
                        .fetch_optional(pool),
                )
            })
            .await;
        match found {
            Ok((Some(_), _)) => StoreError::LeaseLost(id.to_owned()),
            Ok((None, _)) => StoreError::NotFound(id.to_owned()),
            Err(err) => err,
        }
    }

    async fn enqueue(&self, delivery: Delivery) -> Result<(), StoreError> {
        let row = DeliveryRow::new(&delivery, &self.signers)?;
        self.insert(row).await
    }

    async fn enqueue_claimed(
        &self,
        mut delivery: Delivery,
        until: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        let mut row = DeliveryRow::new(&delivery, &self.signers)?;
        let until = unix_millis(until);
        row.claimed_until = Some(until);
        self.insert(row).await?;
        delivery.state = DeliveryState::InFlight;
        delivery.updated_at = SystemTime::now();
        Ok(Some(Claim {
            delivery,
            lease: Lease {
                token: 1,
                until: from_unix_millis(until),
            },
        }))
    }

    async fn insert(&self, row: DeliveryRow) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.enqueues
            .send((row, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn claim(
        &self,
        now: SystemTime,
        limit: usize,
        lease_for: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        let sql = format!(
            "UPDATE deliveries AS d SET state = 'in_flight', lease_owner = $1, \
             lease_expires_at = $2, due_at = $2, lease_token = d.lease_token + 1, \
             updated_at = $3 \
             FROM (SELECT seq FROM deliveries WHERE due_at IS NOT NULL AND due_at <= $3 \
                   ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS due \
             WHERE d.seq = due.seq \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let (now_ms, until) = (unix_millis(now), unix_millis(now + lease_for));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (rows, _) = self
            .retry("claim", |pool| {
                Box::pin(
                    sqlx::query(&sql)
                        .bind(&self.owner)
                        .bind(until)
                        .bind(now_ms)
                        .bind(limit)
                        .fetch_all(pool),
                )
            })
            .await?;
        let mut claims = rows
            .iter()
            .map(|row| {
                Ok(Claim {
                    delivery: delivery_from_row(row, &self.signers)?,
                    lease: lease_from_row(row)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claims.sort_by_key(|claim| claim.delivery.next_attempt_at);
        Ok(claims)
    }

    async fn record(
        &self,
        id: &str,
        lease: Lease,
        attempt: Attempt,
        next: Next,
    ) -> Result<(), StoreError> {
        let row = RecordRow {
            id: id.to_owned(),
            token: i64::try_from(lease.token).unwrap_or(i64::MAX),
            attempt: AttemptRow::new(&attempt),
            next: NextRow::new(&next),
        };
        let (reply, answer) = oneshot::channel();
        self.records
            .send((row, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// An update of one row by id (and lease token); `NotFound`/`LeaseLost` when none matched.
    async fn update_leased(
        &self,
        what: &'static str,
        sql: &'static str,
        id: &str,
        token: i64,
        time: i64,
    ) -> Result<(), StoreError> {
        let (done, retried) = self
            .retry(what, |pool| {
                Box::pin(
                    sqlx::query(sql)
                        .bind(time)
                        .bind(id)
                        .bind(token)
                        .execute(pool),
                )
            })
            .await?;
        if done.rows_affected() == 0 && !retried {
            return Err(self.missing(id).await);
        }
        Ok(())
    }

    async fn resend(&self, id: &str, signing: Option<SigningSpec>) -> Result<(), StoreError> {
        let (scheme, secrets) = encode(signing, &self.signers)?.unzip();
        let now = unix_millis(SystemTime::now());
        let (done, retried) = self
            .retry("resend", |pool| {
                Box::pin(
                    sqlx::query(
                        "UPDATE deliveries SET state = 'pending', manual = TRUE, \
                         next_attempt_at = $1, due_at = $1, last_error = NULL, updated_at = $1, \
                         scheme = COALESCE($2, scheme), secrets = COALESCE($3, secrets) \
                         WHERE id = $4 AND state IN ('delivered', 'failed', 'refused')",
                    )
                    .bind(now)
                    .bind(&scheme)
                    .bind(&secrets)
                    .bind(id)
                    .execute(pool),
                )
            })
            .await?;
        if done.rows_affected() == 0 && !retried {
            return Err(match self.missing(id).await {
                StoreError::LeaseLost(id) => StoreError::NotFinal(id),
                other => other,
            });
        }
        Ok(())
    }

    async fn resend_matching(
        &self,
        query: &ConversationQuery,
        signing: Option<SigningSpec>,
    ) -> Result<usize, StoreError> {
        let state = query.state.unwrap_or(DeliveryState::Failed);
        if !state.is_final() {
            return Err(StoreError::NotFinal(format!("deliveries in state {state}")));
        }
        let mut filter = Filter::new(query, usize::MAX >> 1);
        filter.state = Some(state.as_str());
        let (scheme, secrets) = encode(signing, &self.signers)?.unzip();
        let now = unix_millis(SystemTime::now());
        let sql = format!(
            "UPDATE deliveries SET state = 'pending', manual = TRUE, next_attempt_at = $6, \
             due_at = $6, last_error = NULL, updated_at = $6, scheme = COALESCE($7, scheme), \
             secrets = COALESCE($8, secrets) \
             WHERE seq IN (SELECT seq FROM deliveries WHERE {FILTER} ORDER BY seq DESC \
                           LIMIT $5 FOR UPDATE SKIP LOCKED)"
        );
        let (done, _) = self
            .retry("resend_matching", |pool| {
                Box::pin(
                    filter
                        .bind(sqlx::query(&sql))
                        .bind(now)
                        .bind(&scheme)
                        .bind(&secrets)
                        .execute(pool),
                )
            })
            .await?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    /// Makes up to `limit` deliveries matching `condition` (`$2` is now, `$3` is `key`) final
    /// as failed with `reason`, releasing any lease (rows locked elsewhere are skipped);
    /// returns their ids.
    async fn fail_matching(
        &self,
        what: &'static str,
        condition: &'static str,
        key: &str,
        reason: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let now = unix_millis(SystemTime::now());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "UPDATE deliveries SET state = 'failed', last_error = $1, due_at = NULL, \
             manual = FALSE, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
             WHERE seq IN (SELECT seq FROM deliveries WHERE {condition} \
                           LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id"
        );
        let (rows, _) = self
            .retry(what, |pool| {
                Box::pin(
                    sqlx::query(&sql)
                        .bind(reason)
                        .bind(now)
                        .bind(key)
                        .bind(limit)
                        .fetch_all(pool),
                )
            })
            .await?;
        rows.iter().map(|row| row.text("id")).collect()
    }

    async fn purge(
        &self,
        state: DeliveryState,
        before: SystemTime,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if !state.is_final() {
            return Ok(0);
        }
        let before = unix_millis(before);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (purged, _) = self
            .retry("purge", |pool| {
                Box::pin(
                    sqlx::query_scalar::<_, i64>(
                        "WITH gone AS (DELETE FROM deliveries WHERE seq IN \
                           (SELECT seq FROM deliveries WHERE due_at IS NULL AND state = $1 AND updated_at < $2 \
                            ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id), \
                         attempts_gone AS (DELETE FROM attempts \
                           WHERE delivery_id IN (SELECT id FROM gone)) \
                         SELECT COUNT(*) FROM gone",
                    )
                    .bind(state.as_str())
                    .bind(before)
                    .bind(limit)
                    .fetch_one(pool),
                )
            })
            .await?;
        Ok(usize::try_from(purged).unwrap_or(0))
    }

    async fn attempts_of(&self, ids: &[String]) -> Result<Vec<(String, Attempt)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ANY($1) \
             ORDER BY delivery_id, number, seq"
        );
        let (rows, _) = self
            .retry("attempts", |pool| {
                Box::pin(sqlx::query(&sql).bind(ids).fetch_all(pool))
            })
            .await?;
        rows.iter().map(sql::attempt_from_row).collect()
    }

    async fn get(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
        let (row, _) = self
            .retry("get", |pool| {
                Box::pin(sqlx::query(&sql).bind(id).fetch_optional(pool))
            })
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let delivery = delivery_from_row(&row, &self.signers)?;
        let attempts = self.attempts_of(&[id.to_owned()]).await?;
        Ok(conversations(vec![delivery], attempts).pop())
    }

    async fn list(&self, query: &ConversationQuery) -> Result<Vec<Conversation>, StoreError> {
        let filter = Filter::new(query, 100);
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {FILTER} AND {AFTER} \
             ORDER BY seq DESC LIMIT $5"
        );
        let after_id = query.after.as_ref().map(|p| p.id.as_str());
        let after_created = query.after.as_ref().map(|p| unix_millis(p.created_at));
        let (rows, _) = self
            .retry("list", |pool| {
                Box::pin(
                    filter
                        .bind(sqlx::query(&sql))
                        .bind(after_id)
                        .bind(after_created)
                        .fetch_all(pool),
                )
            })
            .await?;
        let deliveries: Vec<Delivery> = rows
            .iter()
            .map(|row| delivery_from_row(row, &self.signers))
            .collect::<Result<_, _>>()?;
        let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
        let attempts = self.attempts_of(&ids).await?;
        Ok(conversations(deliveries, attempts))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (rows, _) = self
            .retry("stats", |pool| {
                Box::pin(
                    sqlx::query(
                        "SELECT state, COUNT(*) AS n FROM deliveries WHERE due_at IS NOT NULL \
                         GROUP BY state \
                         UNION ALL SELECT 'finished', COUNT(*) FROM deliveries \
                         WHERE due_at IS NULL \
                         UNION ALL \
                         SELECT 'oldest_due', (SELECT due_at FROM deliveries \
                           WHERE due_at IS NOT NULL AND state = 'pending' \
                           ORDER BY due_at LIMIT 1)",
                    )
                    .fetch_all(pool),
                )
            })
            .await?;
        let mut stats = StoreStats::default();
        for row in &rows {
            let state = row.text("state")?;
            let n = row.opt_int("n")?;
            if state == "oldest_due" {
                stats.oldest_due = n.map(from_unix_millis);
                continue;
            }
            let n = usize::try_from(n.unwrap_or(0)).unwrap_or(0);
            if state == "finished" {
                stats.finished += n;
                continue;
            }
            match sql::decode_state(&state)? {
                DeliveryState::Pending => stats.pending += n,
                DeliveryState::InFlight => stats.in_flight += n,
                _ => stats.finished += n,
            }
        }
        Ok(stats)
    }

    async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let (next, _) = self
            .retry("next_due", |pool| {
                Box::pin(
                    sqlx::query_scalar::<_, i64>(
                        "SELECT due_at FROM deliveries WHERE due_at IS NOT NULL \
                         ORDER BY due_at LIMIT 1",
                    )
                    .fetch_optional(pool),
                )
            })
            .await?;
        Ok(next.map(from_unix_millis))
    }
}

// ---------------------------------------------------------------------------------------------
// Batching: concurrent enqueues (and recorded attempts) share one statement and one commit.

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// Rows per multi-row statement.
const CHUNK: usize = 64;
/// Batches executed at once (each on its own connection).
const BATCHES_IN_FLIGHT: usize = 2;

fn stopped() -> StoreError {
    StoreError::Backend("the PostgreSQL store has stopped".into())
}

/// A recorded attempt waiting for its batch.
struct RecordRow {
    id: String,
    token: i64,
    attempt: AttemptRow,
    next: NextRow,
}

type BatchFuture = Pin<Box<dyn Future<Output = Vec<Result<(), StoreError>>> + Send>>;

/// The `NOTIFY` channel, and this store's owner name as the payload (its own notifications
/// are not worth a wake-up: a local enqueue wakes the engine already).
#[derive(Clone)]
struct Channel {
    name: String,
    owner: String,
}

/// Starts a loop that takes whatever is queued (up to [`CHUNK`]) and runs it as one batch,
/// with up to [`BATCHES_IN_FLIGHT`] batches at once; it ends when the store is dropped.
fn batcher<T: Send + 'static>(
    pool: PgPool,
    channel: Channel,
    run: fn(PgPool, Channel, Vec<T>) -> BatchFuture,
) -> mpsc::Sender<(T, Reply)> {
    let (tx, mut rx) = mpsc::channel::<(T, Reply)>(CHUNK * 16);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        let mut queued = Vec::with_capacity(CHUNK);
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            if rx.recv_many(&mut queued, CHUNK).await == 0 {
                return;
            }
            let (rows, replies): (Vec<T>, Vec<Reply>) = queued.drain(..).unzip();
            let batch = run(pool.clone(), channel.clone(), rows);
            tokio::spawn(async move {
                let results = batch.await;
                for (result, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(result);
                }
                drop(slot);
            });
        }
    });
    tx
}

/// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed; the flag says
/// whether it was retried (its first try may have committed).
async fn retry_on<T, F, Fut>(what: &'static str, mut op: F) -> Result<(T, bool), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut retried = false;
    loop {
        match op().await {
            Ok(value) => return Ok((value, retried)),
            Err(err) if transient(&err) && started.elapsed() < RETRY_FOR => {
                tracing::warn!(error = %err, operation = what, "webhook delivery store: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                retried = true;
            }
            Err(err) => return Err(backend(err)),
        }
    }
}

/// The bind columns of a batch of new deliveries, for [`enqueue_sql`].
struct EnqueueColumns {
    ids: Vec<String>,
    endpoints: Vec<Option<String>>,
    endpoint_ids: Vec<Option<String>>,
    sources: Vec<Option<String>>,
    schemes: Vec<Option<String>>,
    secrets: Vec<Option<String>>,
    headers: Vec<Option<String>>,
    bodies: Vec<Vec<u8>>,
    next: Vec<i64>,
    created: Vec<i64>,
    updated: Vec<i64>,
    states: Vec<&'static str>,
    due: Vec<i64>,
    tokens: Vec<i64>,
    leases: Vec<Option<i64>>,
    /// Whether some row is pending (not claimed as it is inserted): only those wake the
    /// other replicas.
    any_pending: bool,
}

impl EnqueueColumns {
    /// The columns of `rows`, each id once (the first row of an id wins).
    fn new<'r>(rows: impl IntoIterator<Item = &'r DeliveryRow>) -> Self {
        let mut first = HashSet::new();
        let fresh: Vec<&DeliveryRow> = rows
            .into_iter()
            .filter(|row| first.insert(&row.id))
            .collect();
        let column = |f: fn(&DeliveryRow) -> Option<String>| -> Vec<Option<String>> {
            fresh.iter().map(|row| f(row)).collect()
        };
        let queue: Vec<_> = fresh.iter().map(|row| row.queue_columns()).collect();
        Self {
            ids: fresh.iter().map(|row| row.id.clone()).collect(),
            endpoints: column(|row| Some(row.endpoint.clone())),
            endpoint_ids: column(|row| row.endpoint_id.clone()),
            sources: column(|row| Some(row.source.clone())),
            schemes: column(|row| row.scheme.clone()),
            secrets: column(|row| row.secrets.clone()),
            headers: column(|row| Some(row.headers.clone())),
            bodies: fresh.iter().map(|row| row.body.to_vec()).collect(),
            next: fresh.iter().map(|row| row.next_attempt_at).collect(),
            created: fresh.iter().map(|row| row.created_at).collect(),
            updated: fresh.iter().map(|row| row.updated_at).collect(),
            states: queue.iter().map(|q| q.0).collect(),
            due: queue.iter().map(|q| q.1).collect(),
            tokens: queue.iter().map(|q| q.2).collect(),
            leases: queue.iter().map(|q| q.3).collect(),
            any_pending: fresh.iter().any(|row| row.claimed_until.is_none()),
        }
    }

    /// [`enqueue_sql`] with its binds: `owner` is recorded on the rows claimed as they are
    /// inserted; `notify` (channel, payload) is sent with the insert (inside a transaction,
    /// on commit only) and must be given exactly when `sql` was made with `notify`.
    fn query<'q>(
        &'q self,
        sql: &'q str,
        owner: &'q str,
        notify: Option<(&'q str, &'q str)>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let query = sqlx::query(sql)
            .bind(&self.ids)
            .bind(&self.endpoints)
            .bind(&self.endpoint_ids)
            .bind(&self.sources)
            .bind(&self.schemes)
            .bind(&self.secrets)
            .bind(&self.headers)
            .bind(&self.bodies)
            .bind(&self.next)
            .bind(&self.created)
            .bind(&self.updated)
            .bind(&self.states)
            .bind(&self.due)
            .bind(&self.tokens)
            .bind(owner)
            .bind(&self.leases);
        match notify {
            Some((channel, payload)) => query.bind(channel).bind(payload),
            None => query,
        }
    }
}

/// The one statement that inserts new deliveries into `table` (arrays unnested: one prepared
/// statement whatever the batch size; a row claimed as it is inserted starts in flight under
/// `$15`'s lease), optionally notifying the listening replicas (`$17` channel, `$18`
/// payload); it returns the ids inserted (an id already present is skipped).
fn enqueue_sql(table: &str, notify: bool) -> String {
    let insert = format!(
        "INSERT INTO {table} (id, endpoint, endpoint_id, source, \
         scheme, secrets, headers, body, state, attempts, manual, next_attempt_at, \
         due_at, lease_token, lease_owner, lease_expires_at, created_at, updated_at) \
         SELECT id, endpoint, endpoint_id, source, scheme, secrets, headers, body, \
         state, 0, FALSE, next_at, due_at, token, \
         CASE WHEN lease_until IS NULL THEN NULL ELSE $15 END, lease_until, created_at, \
         updated_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::text[], $7::text[], $8::bytea[], $9::int8[], $10::int8[], $11::int8[], \
         $12::text[], $13::int8[], $14::int8[], $16::int8[]) \
         AS t (id, endpoint, endpoint_id, source, scheme, secrets, headers, body, \
         next_at, created_at, updated_at, state, due_at, token, lease_until) \
         ON CONFLICT (id) DO NOTHING RETURNING id"
    );
    if notify {
        format!(
            "WITH inserted AS ({insert}) SELECT inserted.id FROM inserted \
             CROSS JOIN (SELECT pg_notify($17, $18)) AS notified"
        )
    } else {
        insert
    }
}

/// Inserts a batch of deliveries in one statement and notifies the other replicas of the
/// pending ones (rows claimed as they are inserted are this replica's already).
fn enqueue_many(pool: PgPool, channel: Channel, rows: Vec<DeliveryRow>) -> BatchFuture {
    Box::pin(async move {
        let columns = EnqueueColumns::new(&rows);
        let notify = columns.any_pending;
        let sql = enqueue_sql("deliveries", notify);
        let result = retry_on("enqueue", || {
            let wake = notify.then_some((channel.name.as_str(), channel.owner.as_str()));
            columns.query(&sql, &channel.owner, wake).fetch_all(&pool)
        })
        .await;
        let (inserted, retried) = match result {
            Ok((found, retried)) => {
                let ids: Result<HashSet<String>, StoreError> =
                    found.iter().map(|row| row.text("id")).collect();
                match ids {
                    Ok(ids) => (ids, retried),
                    Err(err) => return vec![Err(err); rows.len()],
                }
            }
            Err(err) => return vec![Err(err); rows.len()],
        };
        let mut seen = HashSet::new();
        rows.iter()
            .map(|row| {
                let first_of_id = seen.insert(&row.id);
                // After a retry, a conflict is the first try's own commit.
                if first_of_id && (retried || inserted.contains(&row.id)) {
                    Ok(())
                } else {
                    Err(StoreError::Duplicate(row.id.clone()))
                }
            })
            .collect()
    })
}

/// Records a batch of attempts in one statement: each applies only while its lease token is
/// current.
fn record_many(pool: PgPool, _channel: Channel, rows: Vec<RecordRow>) -> BatchFuture {
    Box::pin(async move {
        let now = unix_millis(SystemTime::now());
        macro_rules! column {
            ($row:ident => $value:expr) => {
                rows.iter().map(|$row| $value).collect::<Vec<_>>()
            };
        }
        let ids = column!(r => r.id.clone());
        let tokens = column!(r => r.token);
        let states = column!(r => r.next.state.to_owned());
        let numbers = column!(r => r.attempt.number);
        let due = column!(r => r.next.due_at);
        let errors = column!(r => r.next.last_error.clone());
        let manual = column!(r => r.attempt.manual);
        let started = column!(r => r.attempt.started_at);
        let latency = column!(r => r.attempt.latency_us);
        let request_headers = column!(r => r.attempt.request_headers.clone());
        let sizes = column!(r => r.attempt.body_size);
        let digests = column!(r => r.attempt.body_sha256.clone());
        let outcomes = column!(r => r.attempt.outcome.to_owned());
        let details = column!(r => r.attempt.outcome_detail.clone());
        let decisions = column!(r => r.attempt.decision.to_owned());
        let retry_at = column!(r => r.attempt.retry_at);
        let statuses = column!(r => r.attempt.response_status);
        let response_headers = column!(r => r.attempt.response_headers.clone());
        let response_bodies = column!(r => r.attempt.response_body.clone());
        let truncated = column!(r => r.attempt.response_truncated);
        let sql = format!(
            "WITH v AS (SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], \
                 $4::int8[], $5::int8[], $6::text[], $7::bool[], $8::int8[], $9::int8[], \
                 $10::text[], $11::int8[], $12::text[], $13::text[], $14::text[], $15::text[], \
                 $16::int8[], $17::int8[], $18::text[], $19::bytea[], $20::bool[]) \
                 AS t (id, token, state, number, due_at, last_error, manual, started_at, \
                 latency_us, request_headers, body_size, body_sha256, outcome, outcome_detail, \
                 decision, retry_at, response_status, response_headers, response_body, \
                 response_truncated)), \
                 updated AS (UPDATE deliveries AS d SET state = v.state, \
                 attempts = GREATEST(d.attempts, v.number), \
                 next_attempt_at = COALESCE(v.due_at, d.next_attempt_at), due_at = v.due_at, \
                 lease_owner = NULL, lease_expires_at = NULL, manual = FALSE, \
                 last_error = CASE WHEN v.state = 'pending' THEN d.last_error \
                 ELSE v.last_error END, updated_at = $21 \
                 FROM v WHERE d.id = v.id AND d.lease_token = v.token \
                 AND d.state = 'in_flight' RETURNING d.id, d.lease_token), \
                 recorded AS (INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
                 SELECT v.id, v.number, v.manual, v.started_at, v.latency_us, \
                 v.request_headers, v.body_size, v.body_sha256, v.outcome, v.outcome_detail, \
                 v.decision, v.retry_at, v.response_status, v.response_headers, \
                 v.response_body, v.response_truncated \
                 FROM v JOIN updated ON updated.id = v.id AND updated.lease_token = v.token) \
                 SELECT id, lease_token FROM updated"
        );
        let result = retry_on("record_attempt", || {
            sqlx::query(&sql)
                .bind(&ids)
                .bind(&tokens)
                .bind(&states)
                .bind(&numbers)
                .bind(&due)
                .bind(&errors)
                .bind(&manual)
                .bind(&started)
                .bind(&latency)
                .bind(&request_headers)
                .bind(&sizes)
                .bind(&digests)
                .bind(&outcomes)
                .bind(&details)
                .bind(&decisions)
                .bind(&retry_at)
                .bind(&statuses)
                .bind(&response_headers)
                .bind(&response_bodies)
                .bind(&truncated)
                .bind(now)
                .fetch_all(&pool)
        })
        .await;
        let (applied, retried) = match result {
            Ok((found, retried)) => {
                let applied: Result<HashSet<(String, i64)>, StoreError> = found
                    .iter()
                    .map(|row| Ok((row.text("id")?, row.int("lease_token")?)))
                    .collect();
                match applied {
                    Ok(applied) => (applied, retried),
                    Err(err) => return vec![Err(err); rows.len()],
                }
            }
            Err(err) => return vec![Err(err); rows.len()],
        };
        let mut results = Vec::with_capacity(rows.len());
        for row in &rows {
            if applied.contains(&(row.id.clone(), row.token)) {
                results.push(Ok(()));
                continue;
            }
            results.push(not_applied(&pool, row, retried).await);
        }
        results
    })
}

/// Why a recorded attempt did not apply: its first try committed (after a retry), the lease
/// was lost, or the delivery is gone.
async fn not_applied(pool: &PgPool, row: &RecordRow, retried: bool) -> Result<(), StoreError> {
    if retried {
        let found = retry_on("record_attempt", || {
            sqlx::query(
                "SELECT 1 FROM attempts WHERE delivery_id = $1 AND number = $2 AND started_at = $3",
            )
            .bind(&row.id)
            .bind(row.attempt.number)
            .bind(row.attempt.started_at)
            .fetch_optional(pool)
        })
        .await?;
        if found.0.is_some() {
            return Ok(());
        }
    }
    let (found, _) = retry_on("check", || {
        sqlx::query("SELECT 1 FROM deliveries WHERE id = $1")
            .bind(&row.id)
            .fetch_optional(pool)
    })
    .await?;
    Err(match found {
        Some(_) => StoreError::LeaseLost(row.id.clone()),
        None => StoreError::NotFound(row.id.clone()),
    })
}

/// The filter bind values of a [`ConversationQuery`].
struct Filter {
    endpoint: Option<String>,
    endpoint_id: Option<String>,
    state: Option<&'static str>,
    since: Option<i64>,
    limit: i64,
}

/// `WHERE` over the filter, its binds at `$1..$4` (`$5` is the limit).
const FILTER: &str = "($1::text IS NULL OR endpoint = $1) \
     AND ($2::text IS NULL OR endpoint_id = $2) AND ($3::text IS NULL OR state = $3) \
     AND ($4::bigint IS NULL OR created_at >= $4)";

/// The keyset of [`ConversationQuery::after`], its binds at `$6` (the id) and `$7` (its
/// creation time): the rows stored before that delivery, or created before it once purged.
const AFTER: &str = "($6::text IS NULL OR COALESCE(\
     seq < (SELECT a.seq FROM deliveries AS a WHERE a.id = $6), created_at < $7::bigint))";

impl Filter {
    fn new(query: &ConversationQuery, default_limit: usize) -> Self {
        let limit = if query.limit == 0 {
            default_limit
        } else {
            query.limit
        };
        Self {
            endpoint: query.endpoint.clone(),
            endpoint_id: query.endpoint_id.clone(),
            state: query.state.map(DeliveryState::as_str),
            since: query.since.map(unix_millis),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
        }
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.endpoint)
            .bind(&self.endpoint_id)
            .bind(self.state)
            .bind(self.since)
            .bind(self.limit)
    }
}

fn encode(
    signing: Option<SigningSpec>,
    signers: &Signers,
) -> Result<Option<(String, String)>, StoreError> {
    signing
        .map(|signing| sql::encode_signing(&signing, signers))
        .transpose()
}

impl DeliveryStore for PostgresStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()> {
        Box::pin(self.inner.enqueue(delivery))
    }

    fn enqueue_claimed(
        &self,
        delivery: Delivery,
        until: SystemTime,
    ) -> StoreFuture<'_, Option<Claim>> {
        Box::pin(self.inner.enqueue_claimed(delivery, until))
    }

    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease_for: Duration,
    ) -> StoreFuture<'_, Vec<Claim>> {
        Box::pin(self.inner.claim(now, limit, lease_for))
    }

    fn record_attempt<'a>(
        &'a self,
        id: &'a str,
        lease: Lease,
        attempt: Attempt,
        next: Next,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.inner.record(id, lease, attempt, next))
    }

    fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        let token = i64::try_from(lease.token).unwrap_or(i64::MAX);
        Box::pin(self.inner.update_leased(
            "release",
            "UPDATE deliveries SET state = 'pending', due_at = $1, next_attempt_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
            id,
            token,
            unix_millis(SystemTime::now()),
        ))
    }

    fn next_due(&self) -> StoreFuture<'_, Option<SystemTime>> {
        Box::pin(self.inner.next_due())
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Conversation>> {
        Box::pin(self.inner.get(id))
    }

    fn list<'a>(&'a self, query: &'a ConversationQuery) -> StoreFuture<'a, Vec<Conversation>> {
        Box::pin(self.inner.list(query))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.inner.stats())
    }

    fn renew<'a>(&'a self, id: &'a str, lease: Lease, until: SystemTime) -> StoreFuture<'a, Lease> {
        let token = i64::try_from(lease.token).unwrap_or(i64::MAX);
        Box::pin(async move {
            self.inner
                .update_leased(
                    "renew",
                    "UPDATE deliveries SET lease_expires_at = $1, due_at = $1 \
                     WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
                    id,
                    token,
                    unix_millis(until),
                )
                .await?;
            Ok(Lease {
                token: lease.token,
                until,
            })
        })
    }

    fn resend<'a>(&'a self, id: &'a str, signing: Option<SigningSpec>) -> StoreFuture<'a, ()> {
        Box::pin(self.inner.resend(id, signing))
    }

    fn update_pending<'a>(
        &'a self,
        id: &'a str,
        body: Option<bytes::Bytes>,
        due: SystemTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let body = body.map(|b| b.to_vec());
            let (due, now) = (unix_millis(due), unix_millis(SystemTime::now()));
            let (done, retried) = self
                .inner
                .retry("update_pending", |pool| {
                    Box::pin(
                        sqlx::query(
                            "UPDATE deliveries SET next_attempt_at = $1, due_at = $1, \
                             body = COALESCE($2, body), updated_at = $3 \
                             WHERE id = $4 AND state = 'pending' AND attempts = 0",
                        )
                        .bind(due)
                        .bind(&body)
                        .bind(now)
                        .bind(id)
                        .execute(pool),
                    )
                })
                .await?;
            if done.rows_affected() == 0 && !retried {
                return Err(self.inner.missing(id).await);
            }
            Ok(())
        })
    }

    fn resend_matching<'a>(
        &'a self,
        query: &'a ConversationQuery,
        signing: Option<SigningSpec>,
    ) -> StoreFuture<'a, usize> {
        Box::pin(self.inner.resend_matching(query, signing))
    }

    fn fail_pending<'a>(
        &'a self,
        endpoint: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(self.inner.fail_matching(
            "fail_pending",
            sql::FAIL_PENDING_CONDITION,
            endpoint,
            reason,
            limit,
        ))
    }

    fn cancel_endpoint<'a>(
        &'a self,
        endpoint_id: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(self.inner.fail_matching(
            "cancel_endpoint",
            sql::CANCEL_ENDPOINT_CONDITION,
            endpoint_id,
            reason,
            limit,
        ))
    }

    fn purge(
        &self,
        state: DeliveryState,
        before: SystemTime,
        limit: usize,
    ) -> StoreFuture<'_, usize> {
        Box::pin(self.inner.purge(state, before, limit))
    }

    fn work_notified(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.inner.notify.notified())
    }
}
