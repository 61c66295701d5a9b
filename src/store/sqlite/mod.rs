//! [`SqliteStore`]: the embedded, durable [`DeliveryStore`] (feature `sqlite`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::ConnectOptions;
use tokio::sync::mpsc;

use super::migrations::{self, Embedded};
use super::sql::{
    self, backend, delivery_from_row, lease_from_row, AttemptRow, DeliveryRow, FailCondition,
    Filter, NextRow, RecordRow, Signers, Statements,
};
use super::{DeliveryStore, StoreError, StoreFuture, StoreStats};
use crate::delivery::model::{
    Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState, Lease, Next,
    SigningSpec,
};
use crate::time::{from_unix_millis, unix_millis};

mod log;
mod maintenance;
mod queue;

use maintenance::{fail_matching, purge, resend, resend_matching};
use queue::{checkpoint_loop, claim, recover, release, renew, spawn_writer, update_pending, Job};

sql::impl_row_ext!(SqliteRow);

/// The SQLite migrations shipped in `migrations/sqlite/`.
const MIGRATIONS: Embedded = Embedded::store(&[
    (
        1,
        "deliveries",
        include_str!("../../../migrations/sqlite/0001_deliveries.sql"),
    ),
    (
        2,
        "finished index",
        include_str!("../../../migrations/sqlite/0002_finished_index.sql"),
    ),
    (
        5,
        "delivery counts",
        include_str!("../../../migrations/sqlite/0005_delivery_counts.sql"),
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
            migrations::run_sqlite(&readers, MIGRATIONS).await?;
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
                statements: Arc::new(Statements::new::<sqlx::Sqlite>()),
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
/// use tower_webhooks::delivery::Delivery;
/// use tower_webhooks::store::{DeliveryStore, SqliteStore};
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
    statements: Arc<Statements>,
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
        migrations::run_sqlite(&self.inner.readers, MIGRATIONS).await
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

    fn fail_matching(
        &self,
        condition: FailCondition,
        key: String,
        reason: String,
        limit: usize,
    ) -> StoreFuture<'_, Vec<String>> {
        let statements = self.inner.statements.clone();
        let limit = sql::count(limit);
        Box::pin(self.inner.write(move |conn| {
            Box::pin(async move {
                fail_matching(conn, &statements, condition, key, reason, limit).await
            })
        }))
    }
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
            token: sql::token(lease.token),
            attempt: AttemptRow::new(&attempt),
            next: NextRow::new(&next),
        };
        Box::pin(self.inner.write_row(|reply| Job::Record(row, reply)))
    }

    fn release<'a>(&'a self, id: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        let (id, token) = (id.to_owned(), sql::token(lease.token));
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
        let (id, token, ms) = (id.to_owned(), sql::token(lease.token), unix_millis(until));
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
            let signing = sql::encode_optional(signing, &self.inner.signers)?;
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
            let filter = Filter::resend(query)?;
            let signing = sql::encode_optional(signing, &self.inner.signers)?;
            let statements = self.inner.statements.clone();
            self.inner
                .write(move |conn| {
                    Box::pin(
                        async move { resend_matching(conn, &statements, filter, signing).await },
                    )
                })
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
        self.fail_matching(FailCondition::Pending, endpoint, reason, limit)
    }

    fn cancel_endpoint<'a>(
        &'a self,
        endpoint_id: &'a str,
        reason: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<String>> {
        let (endpoint_id, reason) = (endpoint_id.to_owned(), reason.to_owned());
        self.fail_matching(FailCondition::Endpoint, endpoint_id, reason, limit)
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
            let limit = sql::count(limit);
            self.inner
                .write(move |conn| Box::pin(purge(conn, state, before, limit)))
                .await
        })
    }
}
