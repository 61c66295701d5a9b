//! [`SqliteStore`]: the embedded, durable [`DeliveryStore`] (feature `sqlite`).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};

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

sql::impl_row_ext!(SqliteRow);

/// The SQLite migrations shipped in `migrations/sqlite/`.
const MIGRATIONS: Embedded = Embedded(&[
    (
        1,
        "deliveries",
        include_str!("../../migrations/sqlite/0001_deliveries.sql"),
    ),
    (
        2,
        "finished index",
        include_str!("../../migrations/sqlite/0002_finished_index.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../../migrations/sqlite/0003_webhooks.sql"),
    ),
    (
        4,
        "endpoint state",
        include_str!("../../migrations/sqlite/0004_endpoint_state.sql"),
    ),
]);

/// How hard SQLite pushes each commit to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = FULL` (the default): every commit is on the disk (fsync) before it
    /// returns, so an accepted delivery also survives a power loss or an OS crash. Concurrent
    /// writes share one commit (group commit), so this costs one fsync per batch (up to a few
    /// hundred deliveries and recorded attempts): in the `durability` benchmark on 2 cores the
    /// difference from [`Normal`](Self::Normal) is within the noise of a shared machine, and
    /// it grows with the disk's fsync latency (each caller waits for its batch's fsync).
    #[default]
    Full,
    /// `synchronous = NORMAL`: a commit survives the process being killed (SIGKILL, OOM,
    /// a crash), but the last commits may be lost on a power loss or an OS crash (WAL mode
    /// stays consistent). The usual choice when the host's disk is not the last line of
    /// defence.
    Normal,
}

/// Configures a [`SqliteStore`]; [`connect`](Self::connect) opens it.
#[derive(Debug, Clone)]
#[must_use]
pub struct SqliteOptions {
    path: PathBuf,
    synchronous: Synchronous,
    readers: u32,
    max_batch: usize,
    migrate: bool,
    recover: bool,
    signers: Signers,
    owner: Option<String>,
}

impl SqliteOptions {
    /// Options for the database file at `path` (created when missing).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            synchronous: Synchronous::Full,
            readers: 4,
            max_batch: 256,
            migrate: true,
            recover: true,
            signers: Signers::default(),
            owner: None,
        }
    }

    /// The durability of each commit ([`Synchronous::Full`] by default).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Connections for reads (conversations, statistics); 4 by default. Writes go through one
    /// writer connection.
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The most writes committed together in one transaction (256 by default).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Whether [`connect`](Self::connect) runs the migrations (on by default); when off, call
    /// [`SqliteStore::migrate`] yourself.
    ///
    /// Their history is kept in the `tower_webhooks_migrations` table, not in sqlx's
    /// `_sqlx_migrations`, so the application's own `sqlx::migrate!()` can run on the same
    /// file, before or after.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Whether [`connect`](Self::connect) returns the deliveries that were in flight when the
    /// last process stopped to the queue at once (on by default). That is right when one
    /// process uses the file at a time, as intended; turn it off if several processes share
    /// it, and their leases expire instead.
    pub fn recover_in_flight(mut self, recover: bool) -> Self {
        self.recover = recover;
        self
    }

    /// The lease owner recorded on claimed rows (by default the process id and a random
    /// suffix).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Encrypts the secrets kept in the file (signing secrets and custom header values) with
    /// the newest key of `keys`; older keys still decrypt, and values written before a key
    /// was configured still read. Without keys, [`connect`](Self::connect) logs a warning.
    /// See [`EncryptionKeys`](crate::store::EncryptionKeys).
    pub fn encryption_keys(mut self, keys: crate::store::EncryptionKeys) -> Self {
        self.signers.set_keys(keys);
        self
    }

    fn connect_options(&self) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match self.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
    }

    /// Opens (or creates) the database, runs the migrations unless turned off, and returns
    /// interrupted deliveries to the queue.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the file cannot be opened or migrated.
    pub async fn connect(self) -> Result<SqliteStore, StoreError> {
        super::private_file::create_private_file(&self.path).map_err(backend)?;
        if !self.signers.encrypts() {
            super::encryption::warn_unencrypted("sqlite");
        }
        let options = self.connect_options();
        let readers = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .min_connections(0)
            .connect_with(options.clone())
            .await
            .map_err(backend)?;
        if self.migrate {
            run_migrations(&readers).await?;
        }
        // The writer never checkpoints: a background task does, on a reader connection, so
        // copying the WAL back into the database runs beside the writes, not between them.
        let writer = options
            .clone()
            .pragma("wal_autocheckpoint", "0")
            .connect()
            .await
            .map_err(backend)?;
        let (jobs, receiver) = mpsc::channel(self.max_batch.max(64) * 4);
        let owner = self.owner.unwrap_or_else(sql::owner_name);
        spawn_writer(writer, receiver, self.max_batch, owner.clone())?;
        tokio::spawn(checkpoint_loop(readers.clone(), jobs.downgrade()));
        let store = SqliteStore {
            inner: Arc::new(Inner {
                jobs,
                readers,
                owner,
                signers: self.signers,
                path: self.path,
            }),
        };
        if self.recover {
            let recovered = store.inner.write(|conn| Box::pin(recover(conn))).await?;
            if recovered > 0 {
                tracing::info!(
                    recovered,
                    "webhook delivery store: interrupted deliveries returned to the queue"
                );
            }
        }
        Ok(store)
    }
}

/// Runs the writer on its own thread with its own single-threaded runtime: each statement is a
/// round trip to sqlx's SQLite worker thread, and on the application's runtime every one of
/// those answers would wait in line behind the application's tasks (the HTTP work of a busy
/// service) before the next statement is sent, stretching every transaction, and every
/// caller's wait for its commit.
fn spawn_writer(
    writer: SqliteConnection,
    receiver: mpsc::Receiver<Job>,
    max_batch: usize,
    owner: String,
) -> Result<(), StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(backend)?;
    std::thread::Builder::new()
        .name("tower-webhooks-sqlite-writer".into())
        .spawn(move || runtime.block_on(write_loop(writer, receiver, max_batch, owner)))
        .map_err(backend)?;
    Ok(())
}

/// Checkpoints the WAL every 100 ms while the store is open.
async fn checkpoint_loop(readers: SqlitePool, alive: mpsc::WeakSender<Job>) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&readers)
            .await
        {
            tracing::debug!(error = %err, "webhook delivery store (SQLite): checkpoint failed");
        }
    }
}

async fn run_migrations(pool: &SqlitePool) -> Result<(), StoreError> {
    migrations::run_sqlite(pool, MIGRATIONS).await
}

/// A durable [`DeliveryStore`] in one SQLite file: the embedded default for single-instance
/// services.
///
/// - **WAL mode**, `synchronous = FULL` by default ([`Synchronous`]): the delivery row is
///   committed before [`enqueue`](DeliveryStore::enqueue) returns, so the caller's answer
///   means "on disk".
/// - **One writer**: every write goes through one connection, driven from its own thread, and
///   writes that arrive while a commit is under way are committed together (group commit: one
///   fsync for many deliveries; concurrent enqueues and recorded attempts become multi-row
///   statements of a few fixed shapes, prepared once).
/// - **Claim on insert**: a delivery due now is stored already in flight under the engine's
///   lease ([`enqueue_claimed`](DeliveryStore::enqueue_claimed)), so its attempt needs no
///   separate claim.
///   Reads use a small pool, which also checkpoints the WAL in the background.
/// - **Resume**: on [`connect`](SqliteOptions::connect), deliveries left in flight by a
///   crash return to the queue; pending ones keep their schedule, attempt count and history.
/// - **Bounded memory**: the engine claims due rows in batches; the queue is never loaded.
/// - One process per file (see [`recover_in_flight`](SqliteOptions::recover_in_flight)).
///
/// The file holds the signing secrets and custom header values. It is created readable by its
/// owner only (`0600`); [`SqliteOptions::encryption_keys`] encrypts those values, otherwise
/// they are stored as given (protect the file and its backups). See the
/// [module docs](super) for the table of guarantees.
///
/// ```
/// use tower_webhooks::store::{Delivery, DeliveryStore, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_webhooks::store::StoreError> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::connect(dir.path().join("webhooks.db")).await?;
/// store.enqueue(Delivery::new("run-1", "https://example.com/hook", "{}")).await?;
/// assert_eq!(store.stats().await?.pending, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    readers: SqlitePool,
    owner: String,
    signers: Signers,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("owner", &self.inner.owner)
            .field("signers", &self.inner.signers)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` with the defaults ([`SqliteOptions::new`]).
    ///
    /// # Errors
    ///
    /// As [`SqliteOptions::connect`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        SqliteOptions::new(path).connect().await
    }

    /// Options for the store at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteOptions {
        SqliteOptions::new(path)
    }

    /// Runs the migrations (when [`SqliteOptions::migrate`] was turned off).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        run_migrations(&self.inner.readers).await
    }

    /// Runs the migrations on `pool` (the subscriptions' own pool on the same file).
    #[cfg(feature = "registry")]
    pub(crate) async fn migrate_pool(pool: &SqlitePool) -> Result<(), StoreError> {
        run_migrations(pool).await
    }

    /// The migrations as a sqlx [`Migrator`], to run them with your own tooling.
    ///
    /// A sqlx migrator records them in `_sqlx_migrations`, beside the application's own;
    /// [`migrate`](Self::migrate) and [`connect`](SqliteOptions::connect) keep the crate's
    /// history in `tower_webhooks_migrations` instead, out of the way of the application's
    /// `sqlx::migrate!()`. Use one or the other on a database, not both.
    pub async fn migrator() -> Migrator {
        migrations::migrator(MIGRATIONS).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

// ---------------------------------------------------------------------------------------------
// The writer: one connection, group commit.

type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type JobFuture<'c> = Pin<Box<dyn Future<Output = (bool, Finish)> + Send + 'c>>;
type OpJob = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c> + Send>;
type OpFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;
type Reply = oneshot::Sender<Result<(), StoreError>>;

/// One write. Enqueues and recorded attempts, the hot path, are written many rows per
/// statement; everything else runs as its own operation in the same transaction.
enum Job {
    Enqueue(DeliveryRow, Reply),
    Record(RecordRow, Reply),
    Op(OpJob),
}

/// A recorded attempt waiting for the writer.
struct RecordRow {
    id: String,
    token: i64,
    attempt: AttemptRow,
    next: NextRow,
}

impl Inner {
    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))
    }

    /// Sends a bulk job and waits for its transaction to commit.
    async fn write_row(&self, job: impl FnOnce(Reply) -> Job) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(job(reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }

    /// Runs `op` on the writer connection, inside the next group transaction; answers once
    /// that transaction has committed.
    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> OpFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: OpJob = Box::new(move |conn| {
            Box::pin(async move {
                let result = op(conn).await;
                // A backend error may have left half an operation: the batch rolls back.
                let poison = matches!(result, Err(StoreError::Backend(_)));
                let finish: Finish = Box::new(move |failed| {
                    let _ = reply.send(settle(failed, result));
                });
                (poison, finish)
            })
        });
        self.send(Job::Op(job)).await?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }
}

/// An operation's answer once its transaction is settled (`failed`: it rolled back).
fn settle<T>(failed: Option<&StoreError>, result: Result<T, StoreError>) -> Result<T, StoreError> {
    match (failed, result) {
        (_, Err(err)) => Err(err),
        (Some(err), Ok(_)) => Err(err.clone()),
        (None, ok) => ok,
    }
}

async fn write_loop(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    owner: String,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut finishes: Vec<Finish> = Vec::with_capacity(max_batch);
    while jobs.recv_many(&mut batch, max_batch).await > 0 {
        if let Err(err) = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await {
            // Dropping the jobs answers their callers with an error.
            tracing::error!(error = %err, "webhook delivery store (SQLite): cannot begin");
            batch.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // Every job of a batch was submitted concurrently, so any order is a valid one:
        // the enqueues first, then the recorded attempts, then the rest.
        let mut enqueues = Vec::new();
        let mut records = Vec::new();
        let mut ops = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Enqueue(row, reply) => enqueues.push((row, reply)),
                Job::Record(row, reply) => records.push((row, reply)),
                Job::Op(op) => ops.push(op),
            }
        }
        let mut poisoned = false;
        let mut bulk = |results: Result<Vec<Result<(), StoreError>>, StoreError>,
                        replies: Vec<Reply>| {
            let results = match results {
                Ok(results) => results,
                Err(err) => {
                    poisoned = true;
                    vec![Err(err); replies.len()]
                }
            };
            for (result, reply) in results.into_iter().zip(replies) {
                let finish: Finish = Box::new(move |failed| {
                    let _ = reply.send(settle(failed, result));
                });
                finishes.push(finish);
            }
        };
        if !enqueues.is_empty() {
            let (rows, replies): (Vec<_>, Vec<_>) = enqueues.into_iter().unzip();
            bulk(enqueue_many(&mut conn, &owner, rows).await, replies);
        }
        if !records.is_empty() {
            let (rows, replies): (Vec<_>, Vec<_>) = records.into_iter().unzip();
            bulk(record_many(&mut conn, rows).await, replies);
        }
        for op in ops {
            let (poison, finish) = op(&mut conn).await;
            poisoned |= poison;
            finishes.push(finish);
        }
        let failed = if poisoned {
            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            Some(StoreError::Backend(
                "a write in the same transaction failed; nothing was written".into(),
            ))
        } else {
            match sqlx::query("COMMIT").execute(&mut conn).await {
                Ok(_) => None,
                Err(err) => {
                    tracing::error!(error = %err, "webhook delivery store (SQLite): commit failed");
                    let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                    Some(backend(err))
                }
            }
        };
        for finish in finishes.drain(..) {
            finish(failed.as_ref());
        }
    }
    let _ = conn.close().await;
}

/// Rows per multi-row statement (well under SQLite's 32 766 variables).
const CHUNK: usize = 64;

/// `items` in chunks of at most [`CHUNK`], each with the number of rows its statement has: the
/// chunk's length rounded up to a power of two, the extra rows being padding (all `NULL`, which
/// each statement skips). So a multi-row statement comes in one of seven shapes, each prepared
/// once and kept in the connection's statement cache, instead of one statement parsed afresh
/// for every batch size, and a batch still takes one statement per [`CHUNK`] rows.
fn chunks<T>(items: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    items
        .chunks(CHUNK)
        .map(|chunk| (chunk, chunk.len().next_power_of_two()))
}

/// A chunk's rows and then its padding (`None`).
fn padded<T>((chunk, size): (&[T], usize)) -> impl Iterator<Item = Option<&T>> {
    chunk
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, size - chunk.len()))
}

/// Inserts new deliveries, many per statement; a duplicate id fails alone.
async fn enqueue_many(
    conn: &mut SqliteConnection,
    owner: &str,
    rows: Vec<DeliveryRow>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut inserted = HashSet::new();
    let mut in_batch = HashSet::new();
    let mut first = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        if in_batch.insert(row.id.as_str()) {
            first.push(i);
        }
    }
    let fresh: Vec<&DeliveryRow> = first.iter().map(|&i| &rows[i]).collect();
    for chunk in chunks(&fresh) {
        let mut query = sqlx::QueryBuilder::new(
            "INSERT INTO deliveries (id, endpoint, endpoint_id, source, scheme, secrets, headers, \
             body, state, attempts, manual, next_attempt_at, due_at, lease_token, lease_owner, \
             lease_expires_at, created_at, updated_at) SELECT * FROM (",
        );
        query.push_values(padded(chunk), |mut values, row| {
            let Some(row) = row else {
                for _ in 0..18 {
                    values.push_bind(None::<i64>);
                }
                return;
            };
            let (state, due_at, token, lease_expires_at) = row.queue_columns();
            values
                .push_bind(&row.id)
                .push_bind(&row.endpoint)
                .push_bind(&row.endpoint_id)
                .push_bind(&row.source)
                .push_bind(&row.scheme)
                .push_bind(&row.secrets)
                .push_bind(&row.headers)
                .push_bind(&row.body[..])
                .push_bind(state)
                .push_bind(0_i64)
                .push_bind(0_i64)
                .push_bind(row.next_attempt_at)
                .push_bind(due_at)
                .push_bind(token)
                .push_bind(lease_expires_at.map(|_| owner))
                .push_bind(lease_expires_at)
                .push_bind(row.created_at)
                .push_bind(row.updated_at);
        });
        // `WHERE` skips the padding (and makes `ON CONFLICT` parse as the upsert clause).
        query.push(") WHERE column1 IS NOT NULL ON CONFLICT (id) DO NOTHING RETURNING id");
        let ids = query
            .build()
            .persistent(true)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for row in &ids {
            inserted.insert(row.text("id")?);
        }
    }
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            if first.binary_search(&i).is_ok() && inserted.contains(&row.id) {
                Ok(())
            } else {
                Err(StoreError::Duplicate(row.id.clone()))
            }
        })
        .collect())
}

/// Records attempts, many per statement: each applies only while its lease token is current.
async fn record_many(
    conn: &mut SqliteConnection,
    rows: Vec<RecordRow>,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let now = unix_millis(SystemTime::now());
    let mut applied: HashSet<(String, i64)> = HashSet::new();
    for chunk in chunks(&rows) {
        let mut query = sqlx::QueryBuilder::new(
            "UPDATE deliveries SET state = v.column3, attempts = MAX(deliveries.attempts, v.column4), \
             next_attempt_at = COALESCE(v.column5, deliveries.next_attempt_at), due_at = v.column5, \
             lease_owner = NULL, lease_expires_at = NULL, manual = 0, \
             last_error = CASE WHEN v.column3 = 'pending' THEN deliveries.last_error \
             ELSE v.column6 END, updated_at = ",
        );
        query.push_bind(now);
        query.push(" FROM (");
        query.push_values(padded(chunk), |mut values, row| {
            let Some(row) = row else {
                // Padding: an id that matches no row.
                for _ in 0..6 {
                    values.push_bind(None::<i64>);
                }
                return;
            };
            values
                .push_bind(&row.id)
                .push_bind(row.token)
                .push_bind(row.next.state)
                .push_bind(row.attempt.number)
                .push_bind(row.next.due_at)
                .push_bind(&row.next.last_error);
        });
        query.push(
            ") AS v WHERE deliveries.id = v.column1 AND deliveries.lease_token = v.column2 \
             AND deliveries.state = 'in_flight' RETURNING deliveries.id, deliveries.lease_token",
        );
        let done = query
            .build()
            .persistent(true)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for row in &done {
            applied.insert((row.text("id")?, row.int("lease_token")?));
        }
    }
    let winners: Vec<&RecordRow> = rows
        .iter()
        .filter(|row| applied.contains(&(row.id.clone(), row.token)))
        .collect();
    for chunk in chunks(&winners) {
        let mut query = sqlx::QueryBuilder::new(format!(
            "INSERT INTO attempts ({ATTEMPT_COLUMNS}) SELECT * FROM ("
        ));
        query.push_values(padded(chunk), |mut values, row| {
            let Some(row) = row else {
                for _ in 0..16 {
                    values.push_bind(None::<i64>);
                }
                return;
            };
            let a = &row.attempt;
            values
                .push_bind(&row.id)
                .push_bind(a.number)
                .push_bind(a.manual)
                .push_bind(a.started_at)
                .push_bind(a.latency_us)
                .push_bind(&a.request_headers)
                .push_bind(a.body_size)
                .push_bind(&a.body_sha256)
                .push_bind(a.outcome)
                .push_bind(&a.outcome_detail)
                .push_bind(a.decision)
                .push_bind(a.retry_at)
                .push_bind(a.response_status)
                .push_bind(&a.response_headers)
                .push_bind(&a.response_body)
                .push_bind(a.response_truncated);
        });
        query.push(") WHERE column1 IS NOT NULL");
        query
            .build()
            .persistent(true)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    let mut results = Vec::with_capacity(rows.len());
    for row in &rows {
        results.push(if applied.contains(&(row.id.clone(), row.token)) {
            Ok(())
        } else {
            Err(missing(conn, row.id.clone()).await)
        });
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Write operations (run inside the writer's transaction).

async fn recover(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let migrated =
        sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
    if migrated.is_none() {
        // Not migrated yet: nothing can be in flight.
        return Ok(0);
    }
    let now = unix_millis(SystemTime::now());
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'pending', due_at = $1, next_attempt_at = $1, \
         lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
         WHERE state = 'in_flight'",
    )
    .bind(now)
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(done.rows_affected())
}

async fn claim(
    conn: &mut SqliteConnection,
    owner: String,
    now: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<SqliteRow>, StoreError> {
    sqlx::query(&format!(
        "UPDATE deliveries SET state = 'in_flight', lease_owner = $1, lease_expires_at = $2, \
         due_at = $2, lease_token = lease_token + 1, updated_at = $3 \
         WHERE seq IN (SELECT seq FROM deliveries WHERE due_at IS NOT NULL AND due_at <= $3 \
         ORDER BY due_at LIMIT $4) \
         RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(owner)
    .bind(until)
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(backend)
}

/// `NotFound` or `LeaseLost`, for an update that matched no row.
async fn missing(conn: &mut SqliteConnection, id: String) -> StoreError {
    match sqlx::query("SELECT 1 FROM deliveries WHERE id = $1")
        .bind(&id)
        .fetch_optional(conn)
        .await
    {
        Ok(Some(_)) => StoreError::LeaseLost(id),
        Ok(None) => StoreError::NotFound(id),
        Err(err) => backend(err),
    }
}

async fn update_pending(
    conn: &mut SqliteConnection,
    id: String,
    body: Option<Vec<u8>>,
    due: i64,
) -> Result<(), StoreError> {
    let now = unix_millis(SystemTime::now());
    let done = sqlx::query(
        "UPDATE deliveries SET next_attempt_at = $1, due_at = $1, body = COALESCE($2, body), \
         updated_at = $3 WHERE id = $4 AND state = 'pending' AND attempts = 0",
    )
    .bind(due)
    .bind(body)
    .bind(now)
    .bind(&id)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(missing(conn, id).await);
    }
    Ok(())
}

async fn release(conn: &mut SqliteConnection, id: String, token: i64) -> Result<(), StoreError> {
    fenced_update(
        conn,
        "UPDATE deliveries SET state = 'pending', due_at = $1, next_attempt_at = $1, \
         lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
         WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
        unix_millis(SystemTime::now()),
        id,
        token,
    )
    .await
}

async fn renew(
    conn: &mut SqliteConnection,
    id: String,
    token: i64,
    until: i64,
) -> Result<(), StoreError> {
    fenced_update(
        conn,
        "UPDATE deliveries SET lease_expires_at = $1, due_at = $1 \
         WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
        until,
        id,
        token,
    )
    .await
}

/// Runs an update of an in-flight row that only applies while the caller's lease token is the
/// current one (`$1` = a time, `$2` = id, `$3` = token); no row changed means the lease is lost
/// or the delivery is gone, which `missing` tells apart.
async fn fenced_update(
    conn: &mut SqliteConnection,
    sql: &'static str,
    at: i64,
    id: String,
    token: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(sql)
        .bind(at)
        .bind(&id)
        .bind(token)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(missing(conn, id).await);
    }
    Ok(())
}

async fn resend(
    conn: &mut SqliteConnection,
    id: String,
    signing: Option<(String, String)>,
) -> Result<(), StoreError> {
    let now = unix_millis(SystemTime::now());
    let (scheme, secrets) = signing.unzip();
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'pending', manual = 1, next_attempt_at = $1, due_at = $1, \
         last_error = NULL, updated_at = $1, scheme = COALESCE($2, scheme), \
         secrets = COALESCE($3, secrets) \
         WHERE id = $4 AND state IN ('delivered', 'failed', 'refused')",
    )
    .bind(now)
    .bind(scheme)
    .bind(secrets)
    .bind(&id)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(match missing(conn, id).await {
            StoreError::LeaseLost(id) => StoreError::NotFinal(id),
            other => other,
        });
    }
    Ok(())
}

/// The filter bind values of a [`ConversationQuery`].
struct Filter {
    endpoint: Option<String>,
    endpoint_id: Option<String>,
    state: Option<&'static str>,
    since: Option<i64>,
    limit: i64,
}

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
}

/// `WHERE` over the filter, its binds at `$1..$4`.
const FILTER: &str = "($1 IS NULL OR endpoint = $1) AND ($2 IS NULL OR endpoint_id = $2) \
     AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR created_at >= $4)";

/// The keyset of [`ConversationQuery::after`], its binds at `$6` (the id) and `$7` (its
/// creation time): the rows stored before that delivery, or created before it once purged.
const AFTER: &str = "($6 IS NULL OR COALESCE(\
     seq < (SELECT a.seq FROM deliveries AS a WHERE a.id = $6), created_at < $7))";

async fn resend_matching(
    conn: &mut SqliteConnection,
    filter: Filter,
    signing: Option<(String, String)>,
) -> Result<usize, StoreError> {
    let now = unix_millis(SystemTime::now());
    let (scheme, secrets) = signing.unzip();
    let done = sqlx::query(&format!(
        "UPDATE deliveries SET state = 'pending', manual = 1, next_attempt_at = $6, due_at = $6, \
         last_error = NULL, updated_at = $6, scheme = COALESCE($7, scheme), \
         secrets = COALESCE($8, secrets) \
         WHERE seq IN (SELECT seq FROM deliveries WHERE {FILTER} ORDER BY seq DESC LIMIT $5)"
    ))
    .bind(filter.endpoint)
    .bind(filter.endpoint_id)
    .bind(filter.state)
    .bind(filter.since)
    .bind(filter.limit)
    .bind(now)
    .bind(scheme)
    .bind(secrets)
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
}

/// Makes up to `limit` deliveries matching `condition` (`$2` is now, `$3` is `key`) final
/// as failed with `reason`, releasing any lease; returns their ids.
async fn fail_matching(
    conn: &mut SqliteConnection,
    condition: &'static str,
    key: String,
    reason: String,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let now = unix_millis(SystemTime::now());
    let rows = sqlx::query(&format!(
        "UPDATE deliveries SET state = 'failed', last_error = $1, due_at = NULL, manual = 0, \
         lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
         WHERE seq IN (SELECT seq FROM deliveries WHERE {condition} LIMIT $4) RETURNING id"
    ))
    .bind(reason)
    .bind(now)
    .bind(key)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(backend)?;
    rows.iter().map(|row| row.text("id")).collect()
}

async fn purge(
    conn: &mut SqliteConnection,
    state: &'static str,
    before: i64,
    limit: i64,
) -> Result<usize, StoreError> {
    let rows = sqlx::query(
        "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM deliveries \
         WHERE due_at IS NULL AND state = $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3) RETURNING id",
    )
    .bind(state)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.text("id"))
        .collect::<Result<_, _>>()?;
    let mut query = sqlx::QueryBuilder::new("DELETE FROM attempts WHERE delivery_id IN (");
    let mut list = query.separated(", ");
    for id in &ids {
        list.push_bind(id);
    }
    query.push(")");
    query.build().execute(conn).await.map_err(backend)?;
    Ok(ids.len())
}

// ---------------------------------------------------------------------------------------------
// Reads (the pool).

impl Inner {
    fn deliveries(&self, rows: &[SqliteRow]) -> Result<Vec<Delivery>, StoreError> {
        rows.iter()
            .map(|row| delivery_from_row(row, &self.signers))
            .collect()
    }

    async fn attempts_of(&self, ids: &[&str]) -> Result<Vec<(String, Attempt)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = sqlx::QueryBuilder::new(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id IN ("
        ));
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(") ORDER BY delivery_id, number, seq");
        let rows = query
            .build()
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        rows.iter().map(sql::attempt_from_row).collect()
    }

    async fn get(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let delivery = delivery_from_row(&row, &self.signers)?;
        let attempts = self.attempts_of(&[id]).await?;
        Ok(conversations(vec![delivery], attempts).pop())
    }

    async fn list(&self, query: &ConversationQuery) -> Result<Vec<Conversation>, StoreError> {
        let filter = Filter::new(query, 100);
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {FILTER} AND {AFTER} \
             ORDER BY seq DESC LIMIT $5"
        ))
        .bind(filter.endpoint)
        .bind(filter.endpoint_id)
        .bind(filter.state)
        .bind(filter.since)
        .bind(filter.limit)
        .bind(query.after.as_ref().map(|p| p.id.as_str()))
        .bind(query.after.as_ref().map(|p| unix_millis(p.created_at)))
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        let deliveries = self.deliveries(&rows)?;
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let attempts = self.attempts_of(&ids).await?;
        Ok(conversations(deliveries, attempts))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // The queue through the due index, the finished rows through theirs.
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM deliveries WHERE due_at IS NOT NULL GROUP BY state \
             UNION ALL SELECT 'finished', COUNT(*) FROM deliveries WHERE due_at IS NULL",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        let mut stats = StoreStats::default();
        for row in &rows {
            let n = usize::try_from(row.int("n")?).unwrap_or(0);
            let state = row.text("state")?;
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
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM deliveries WHERE due_at IS NOT NULL AND state = 'pending' \
             ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        stats.oldest_due = oldest.map(from_unix_millis);
        Ok(stats)
    }

    async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM deliveries WHERE due_at IS NOT NULL ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        Ok(next.map(from_unix_millis))
    }
}

fn token(lease: Lease) -> i64 {
    i64::try_from(lease.token).unwrap_or(i64::MAX)
}

fn encode(
    signing: Option<SigningSpec>,
    signers: &Signers,
) -> Result<Option<(String, String)>, StoreError> {
    signing
        .map(|signing| sql::encode_signing(&signing, signers))
        .transpose()
}

impl DeliveryStore for SqliteStore {
    fn is_durable(&self) -> bool {
        true
    }

    fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let row = DeliveryRow::new(&delivery, &self.inner.signers)?;
            self.inner.write_row(|reply| Job::Enqueue(row, reply)).await
        })
    }

    fn enqueue_claimed(
        &self,
        mut delivery: Delivery,
        until: SystemTime,
    ) -> StoreFuture<'_, Option<Claim>> {
        Box::pin(async move {
            let mut row = DeliveryRow::new(&delivery, &self.inner.signers)?;
            let until_ms = unix_millis(until);
            row.claimed_until = Some(until_ms);
            self.inner
                .write_row(|reply| Job::Enqueue(row, reply))
                .await?;
            delivery.state = DeliveryState::InFlight;
            delivery.updated_at = SystemTime::now();
            Ok(Some(Claim {
                delivery,
                lease: Lease {
                    token: 1,
                    until: from_unix_millis(until_ms),
                },
            }))
        })
    }

    fn claim_due(
        &self,
        now: SystemTime,
        limit: usize,
        lease_for: Duration,
    ) -> StoreFuture<'_, Vec<Claim>> {
        Box::pin(async move {
            let owner = self.inner.owner.clone();
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let (now, until) = (unix_millis(now), unix_millis(now + lease_for));
            let rows = self
                .inner
                .write(move |conn| Box::pin(claim(conn, owner, now, until, limit)))
                .await?;
            let mut claims = rows
                .iter()
                .map(|row| {
                    Ok(Claim {
                        delivery: delivery_from_row(row, &self.inner.signers)?,
                        lease: lease_from_row(row)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            claims.sort_by_key(|claim| claim.delivery.next_attempt_at);
            Ok(claims)
        })
    }

    fn record_attempt<'a>(
        &'a self,
        id: &'a str,
        lease: Lease,
        attempt: Attempt,
        next: Next,
    ) -> StoreFuture<'a, ()> {
        let row = RecordRow {
            id: id.to_owned(),
            token: token(lease),
            attempt: AttemptRow::new(&attempt),
            next: NextRow::new(&next),
        };
        Box::pin(self.inner.write_row(|reply| Job::Record(row, reply)))
    }

    fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        let (id, token) = (id.to_owned(), token(lease));
        Box::pin(
            self.inner
                .write(move |conn| Box::pin(release(conn, id, token))),
        )
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
        let (id, token, ms) = (id.to_owned(), token(lease), unix_millis(until));
        Box::pin(async move {
            self.inner
                .write(move |conn| Box::pin(renew(conn, id, token, ms)))
                .await?;
            Ok(Lease {
                token: lease.token,
                until,
            })
        })
    }

    fn update_pending<'a>(
        &'a self,
        id: &'a str,
        body: Option<bytes::Bytes>,
        due: SystemTime,
    ) -> StoreFuture<'a, ()> {
        let (id, body, due) = (id.to_owned(), body.map(|b| b.to_vec()), unix_millis(due));
        Box::pin(
            self.inner
                .write(move |conn| Box::pin(update_pending(conn, id, body, due))),
        )
    }

    fn resend<'a>(&'a self, id: &'a str, signing: Option<SigningSpec>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let signing = encode(signing, &self.inner.signers)?;
            let id = id.to_owned();
            self.inner
                .write(move |conn| Box::pin(resend(conn, id, signing)))
                .await
        })
    }

    fn resend_matching<'a>(
        &'a self,
        query: &'a ConversationQuery,
        signing: Option<SigningSpec>,
    ) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let state = query.state.unwrap_or(DeliveryState::Failed);
            if !state.is_final() {
                return Err(StoreError::NotFinal(format!("deliveries in state {state}")));
            }
            let mut filter = Filter::new(query, usize::MAX >> 1);
            filter.state = Some(state.as_str());
            let signing = encode(signing, &self.inner.signers)?;
            self.inner
                .write(move |conn| Box::pin(resend_matching(conn, filter, signing)))
                .await
        })
    }

    fn fail_pending<'a>(
        &'a self,
        endpoint: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let (endpoint, reason) = (endpoint.to_owned(), reason.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Box::pin(self.inner.write(move |conn| {
            Box::pin(fail_matching(
                conn,
                sql::FAIL_PENDING_CONDITION,
                endpoint,
                reason,
                limit,
            ))
        }))
    }

    fn cancel_endpoint<'a>(
        &'a self,
        endpoint_id: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let (endpoint_id, reason) = (endpoint_id.to_owned(), reason.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Box::pin(self.inner.write(move |conn| {
            Box::pin(fail_matching(
                conn,
                sql::CANCEL_ENDPOINT_CONDITION,
                endpoint_id,
                reason,
                limit,
            ))
        }))
    }

    fn purge(
        &self,
        state: DeliveryState,
        before: SystemTime,
        limit: usize,
    ) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            if !state.is_final() {
                return Ok(0);
            }
            let (state, before) = (state.as_str(), unix_millis(before));
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            self.inner
                .write(move |conn| Box::pin(purge(conn, state, before, limit)))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_padded_to_powers_of_two_up_to_the_limit() {
        let items: Vec<usize> = (0..CHUNK * 2 + 45).collect();
        let sizes: Vec<(usize, usize)> = chunks(&items)
            .map(|(chunk, size)| (chunk.len(), size))
            .collect();
        assert_eq!(sizes, [(CHUNK, CHUNK), (CHUNK, CHUNK), (45, 64)]);
        let rows: Vec<Option<&usize>> = chunks(&items).flat_map(padded).collect();
        assert_eq!(rows.len(), CHUNK * 3);
        assert_eq!(rows.iter().flatten().count(), items.len());
        assert_eq!(chunks::<u8>(&[]).count(), 0);
        assert_eq!(chunks(&[1]).next().map(|(_, size)| size), Some(1));
    }
}
