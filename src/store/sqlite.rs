//! [`SqliteStore`]: the embedded, durable [`DeliveryStore`] (feature `sqlite`).

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

use super::sql::{
    self, backend, conversations, delivery_from_row, lease_from_row, AttemptRow, DeliveryRow,
    Embedded, NextRow, RowExt, Signers, ATTEMPT_COLUMNS, DELIVERY_COLUMNS,
};
use super::{
    unix_millis, Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState,
    DeliveryStore, Lease, Next, Signing, StoreError, StoreFuture, StoreStats,
};
use crate::scheme::SharedSigner;

sql::impl_row_ext!(SqliteRow);

/// The SQLite migrations shipped in `migrations/sqlite/`.
const MIGRATIONS: Embedded = Embedded(&[(
    1,
    "deliveries",
    include_str!("../../migrations/sqlite/0001_deliveries.sql"),
)]);

/// How hard SQLite pushes each commit to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `synchronous = FULL` (the default): every commit is on the disk (fsync) before it
    /// returns, so an accepted delivery also survives a power loss or an OS crash. Concurrent
    /// writes share one commit (group commit), so this costs one fsync per batch.
    #[default]
    Full,
    /// `synchronous = NORMAL`: a commit survives the process being killed, but the last
    /// commits may be lost on a power loss or an OS crash (WAL mode stays consistent).
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

    /// Registers a signer that is not a built-in scheme, so deliveries signed with it can be
    /// stored and signed again after a restart (found by [name](crate::scheme::Signer::name)).
    /// Built-in schemes need no registration.
    pub fn custom_signer(mut self, signer: SharedSigner) -> Self {
        self.signers.add(signer);
        self
    }

    /// The lease owner recorded on claimed rows (by default the process id and a random
    /// suffix).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
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
        let writer = options.connect().await.map_err(backend)?;
        let (jobs, receiver) = mpsc::channel(self.max_batch.max(64) * 4);
        tokio::spawn(write_loop(writer, receiver, self.max_batch));
        let store = SqliteStore {
            inner: Arc::new(Inner {
                jobs,
                readers,
                owner: self.owner.unwrap_or_else(sql::owner_name),
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

async fn run_migrations(pool: &SqlitePool) -> Result<(), StoreError> {
    sql::migrator(MIGRATIONS)
        .await
        .run(pool)
        .await
        .map_err(backend)
}

/// A durable [`DeliveryStore`] in one SQLite file: the embedded default for single-instance
/// services.
///
/// - **WAL mode**, `synchronous = FULL` by default ([`Synchronous`]): the delivery row is
///   committed before [`enqueue`](DeliveryStore::enqueue) returns, so the caller's answer
///   means "on disk".
/// - **One writer**: every write goes through one connection, and writes that arrive while
///   a commit is under way are committed together (group commit: one fsync for many
///   deliveries). Reads use a small pool.
/// - **Resume**: on [`connect`](SqliteOptions::connect), deliveries left in flight by a
///   crash return to the queue; pending ones keep their schedule, attempt count and history.
/// - **Bounded memory**: the engine claims due rows in batches; the queue is never loaded.
/// - One process per file (see [`recover_in_flight`](SqliteOptions::recover_in_flight)).
///
/// The file holds the signing secrets as given: protect it (file permissions, disk
/// encryption). See the [module docs](super) for the table of guarantees.
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
            .field("custom_signers", &self.inner.signers)
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

    /// The migrations, to run them with your own tooling.
    pub async fn migrator() -> Migrator {
        sql::migrator(MIGRATIONS).await
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
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c> + Send>;
type OpFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

impl Inner {
    /// Runs `op` on the writer connection, inside the next group transaction; answers once
    /// that transaction has committed.
    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> OpFuture<'c, T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = op(conn).await;
                // A backend error may have left half an operation: the batch rolls back.
                let poison = matches!(result, Err(StoreError::Backend(_)));
                let finish: Finish = Box::new(move |failed| {
                    let result = match (failed, result) {
                        (_, Err(err)) => Err(err),
                        (Some(err), Ok(_)) => Err(err.clone()),
                        (None, ok) => ok,
                    };
                    let _ = reply.send(result);
                });
                (poison, finish)
            })
        });
        let closed = || StoreError::Backend("the SQLite writer has stopped".into());
        self.jobs.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn write_loop(mut conn: SqliteConnection, mut jobs: mpsc::Receiver<Job>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut finishes = Vec::with_capacity(max_batch);
    while jobs.recv_many(&mut batch, max_batch).await > 0 {
        if let Err(err) = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await {
            // Dropping the jobs answers their callers with an error.
            tracing::error!(error = %err, "webhook delivery store (SQLite): cannot begin");
            batch.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let mut poisoned = false;
        for job in batch.drain(..) {
            let (poison, finish) = job(&mut conn).await;
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

// ---------------------------------------------------------------------------------------------
// Write operations (run inside the writer's transaction).

async fn recover(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
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

async fn enqueue(conn: &mut SqliteConnection, row: DeliveryRow) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO deliveries (id, endpoint, endpoint_id, source, scheme, secrets, headers, \
         body, state, attempts, manual, next_attempt_at, due_at, lease_token, created_at, \
         updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, 0, $9, $9, 0, $10, $11) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&row.id)
    .bind(&row.endpoint)
    .bind(&row.endpoint_id)
    .bind(&row.source)
    .bind(&row.scheme)
    .bind(&row.secrets)
    .bind(&row.headers)
    .bind(&row.body[..])
    .bind(row.next_attempt_at)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Duplicate(row.id));
    }
    Ok(())
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

async fn record(
    conn: &mut SqliteConnection,
    id: String,
    token: i64,
    attempt: AttemptRow,
    next: NextRow,
) -> Result<(), StoreError> {
    let now = unix_millis(SystemTime::now());
    let done = sqlx::query(
        "UPDATE deliveries SET state = $1, attempts = MAX(attempts, $2), \
         next_attempt_at = COALESCE($3, next_attempt_at), due_at = $3, lease_owner = NULL, \
         lease_expires_at = NULL, manual = 0, \
         last_error = CASE WHEN $1 = 'pending' THEN last_error ELSE $4 END, updated_at = $5 \
         WHERE id = $6 AND lease_token = $7 AND state = 'in_flight'",
    )
    .bind(next.state)
    .bind(attempt.number)
    .bind(next.due_at)
    .bind(&next.last_error)
    .bind(now)
    .bind(&id)
    .bind(token)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(missing(conn, id).await);
    }
    sqlx::query(&format!(
        "INSERT INTO attempts ({ATTEMPT_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(&id)
    .bind(attempt.number)
    .bind(attempt.manual)
    .bind(attempt.started_at)
    .bind(attempt.latency_us)
    .bind(attempt.request_headers)
    .bind(attempt.body_size)
    .bind(attempt.body_sha256)
    .bind(attempt.outcome)
    .bind(attempt.outcome_detail)
    .bind(attempt.decision)
    .bind(attempt.retry_at)
    .bind(attempt.response_status)
    .bind(attempt.response_headers)
    .bind(attempt.response_body)
    .bind(attempt.response_truncated)
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(())
}

async fn release(conn: &mut SqliteConnection, id: String, token: i64) -> Result<(), StoreError> {
    let now = unix_millis(SystemTime::now());
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'pending', due_at = $1, next_attempt_at = $1, \
         lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
         WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
    )
    .bind(now)
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

async fn renew(
    conn: &mut SqliteConnection,
    id: String,
    token: i64,
    until: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET lease_expires_at = $1, due_at = $1 \
         WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
    )
    .bind(until)
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

async fn fail_pending(
    conn: &mut SqliteConnection,
    endpoint: String,
    reason: String,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let now = unix_millis(SystemTime::now());
    let rows = sqlx::query(
        "UPDATE deliveries SET state = 'failed', last_error = $1, due_at = NULL, manual = 0, \
         updated_at = $2 \
         WHERE seq IN (SELECT seq FROM deliveries WHERE endpoint = $3 AND state = 'pending' \
         LIMIT $4) RETURNING id",
    )
    .bind(reason)
    .bind(now)
    .bind(endpoint)
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
         WHERE state = $1 AND updated_at < $2 ORDER BY updated_at LIMIT $3) RETURNING id",
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
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {FILTER} ORDER BY seq DESC LIMIT $5"
        ))
        .bind(filter.endpoint)
        .bind(filter.endpoint_id)
        .bind(filter.state)
        .bind(filter.since)
        .bind(filter.limit)
        .fetch_all(&self.readers)
        .await
        .map_err(backend)?;
        let deliveries = self.deliveries(&rows)?;
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let attempts = self.attempts_of(&ids).await?;
        Ok(conversations(deliveries, attempts))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        let mut stats = StoreStats::default();
        for row in &rows {
            let n = usize::try_from(row.int("n")?).unwrap_or(0);
            match sql::decode_state(&row.text("state")?)? {
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
        stats.oldest_due = oldest.map(sql::from_millis);
        Ok(stats)
    }

    async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM deliveries WHERE due_at IS NOT NULL ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        Ok(next.map(sql::from_millis))
    }
}

fn token(lease: Lease) -> i64 {
    i64::try_from(lease.token).unwrap_or(i64::MAX)
}

fn encode(
    signing: Option<Signing>,
    signers: &Signers,
) -> Result<Option<(String, String)>, StoreError> {
    signing
        .map(|signing| sql::encode_signing(&signing, signers))
        .transpose()
}

impl DeliveryStore for SqliteStore {
    fn enqueue(&self, delivery: Delivery) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let row = DeliveryRow::new(&delivery, &self.inner.signers)?;
            self.inner
                .write(move |conn| Box::pin(enqueue(conn, row)))
                .await
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
        let (id, token) = (id.to_owned(), token(lease));
        let (attempt, next) = (AttemptRow::new(&attempt), NextRow::new(&next));
        Box::pin(
            self.inner
                .write(move |conn| Box::pin(record(conn, id, token, attempt, next))),
        )
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

    fn resend<'a>(&'a self, id: &'a str, signing: Option<Signing>) -> StoreFuture<'a, ()> {
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
        signing: Option<Signing>,
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
        Box::pin(
            self.inner
                .write(move |conn| Box::pin(fail_pending(conn, endpoint, reason, limit))),
        )
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
