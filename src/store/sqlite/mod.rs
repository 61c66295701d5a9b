//! [`SqliteStore`]: the embedded, durable [`DeliveryStore`] (feature `sqlite`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::ConnectOptions;
use tokio::sync::mpsc;

use super::migrations::{self, Embedded};
use super::sql::{
    self, backend, DeliveryRow, FailRow, Filter, LeasedUpdate, PendingRow, RecordRow, Signers,
    Statements,
};
#[cfg(doc)]
use super::DeliveryStore;
use super::StoreError;

mod log;
mod maintenance;
mod queue;

use maintenance::{fail_matching, purge, resend, resend_matching};
use queue::{checkpoint_loop, claim, recover, spawn_writer, update_leased, update_pending, Job};

sql::impl_row_ext!(SqliteRow);

/// The SQLite migrations shipped in `migrations/sqlite/`.
const MIGRATIONS: Embedded = migrations::store_migrations!("sqlite");

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

    /// Whether [`connect`](Self::connect) returns the deliveries that were in flight when the
    /// last process stopped to the queue at once (on by default). That is right when one
    /// process uses the file at a time, as intended; turn it off if several processes share
    /// it, and their leases expire instead.
    pub fn recover_in_flight(mut self, recover: bool) -> Self {
        self.recover = recover;
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

sql::sql_store_api! {
    store: SqliteStore,
    options: SqliteOptions,
    target: path: impl AsRef<Path>,
    connect_doc: "Opens (or creates) the store at `path` with the defaults",
    builder_doc: "Options for the store at `path`.",
    migrations: migrations::run_sqlite, on readers,
    debug: [path, owner, signers],
}

impl SqliteStore {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

sql::sql_delivery_store!(SqliteStore);

/// The operations [`sql::sql_delivery_store!`] asks of a backend, each run by the writer.
impl Inner {
    async fn insert(&self, row: DeliveryRow) -> Result<(), StoreError> {
        self.write_row(|reply| Job::Enqueue(row, reply)).await
    }

    async fn claim(&self, now: i64, until: i64, limit: i64) -> Result<Vec<SqliteRow>, StoreError> {
        let owner = self.owner.clone();
        self.write(move |conn| Box::pin(claim(conn, owner, now, until, limit)))
            .await
    }

    async fn record(&self, row: RecordRow) -> Result<(), StoreError> {
        self.write_row(|reply| Job::Record(row, reply)).await
    }

    async fn update_leased(&self, update: LeasedUpdate) -> Result<(), StoreError> {
        self.write(move |conn| Box::pin(update_leased(conn, update)))
            .await
    }

    async fn update_pending(&self, row: PendingRow) -> Result<(), StoreError> {
        self.write(move |conn| Box::pin(update_pending(conn, row)))
            .await
    }

    async fn resend(
        &self,
        id: String,
        signing: Option<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(move |conn| Box::pin(resend(conn, id, signing)))
            .await
    }

    async fn resend_matching(
        &self,
        filter: Filter,
        signing: Option<(String, String)>,
    ) -> Result<usize, StoreError> {
        let statements = self.statements.clone();
        self.write(move |conn| {
            Box::pin(async move { resend_matching(conn, &statements, filter, signing).await })
        })
        .await
    }

    async fn fail_matching(&self, request: FailRow) -> Result<Vec<String>, StoreError> {
        let statements = self.statements.clone();
        self.write(move |conn| {
            Box::pin(async move { fail_matching(conn, &statements, request).await })
        })
        .await
    }

    async fn purge(
        &self,
        state: &'static str,
        before: i64,
        limit: i64,
    ) -> Result<usize, StoreError> {
        self.write(move |conn| Box::pin(purge(conn, state, before, limit)))
            .await
    }

    /// One process per file: no other enqueues to wake up for.
    fn work_notified(&self) -> std::future::Pending<()> {
        std::future::pending()
    }
}
