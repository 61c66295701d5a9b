//! The queue side of [`SqliteStore`](super::SqliteStore): one writer connection on its own
//! thread committing concurrent writes together (group commit), and the writes it runs.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures_util::future::join;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use super::Inner;
use crate::store::sql::{
    backend, DeliveryRow, LeasedUpdate, PendingRow, RecordRow, RowExt, SqlQuery, ATTEMPT_COLUMNS,
    CHUNK, DELIVERY_COLUMNS, UPDATE_PENDING,
};
use crate::store::StoreError;
use crate::time::unix_millis;

/// Runs the writer on its own thread with its own single-threaded runtime: each statement is a
/// round trip to sqlx's SQLite worker thread, and on the application's runtime every one of
/// those answers would wait in line behind the application's tasks (the HTTP work of a busy
/// service) before the next statement is sent, stretching every transaction, and every
/// caller's wait for its commit.
pub(super) fn spawn_writer(
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

/// WAL frames (pages) past which the writer checkpoints too: SQLite's own automatic
/// checkpoint threshold, which the writer's connection turns off.
const WAL_RESTART_FRAMES: i64 = 1000;

/// Checkpoints the WAL every 100 ms while the store is open, and asks the writer to
/// checkpoint as well when the WAL has grown past [`WAL_RESTART_FRAMES`].
///
/// SQLite writes the WAL from its start again only when a write transaction begins with
/// every frame copied back; under a steady stream of commits, frames are appended while this
/// checkpoint copies the earlier ones, so that never happens here and the WAL grew without
/// end (170 MB for a 40 MB database after 40 000 deliveries), each commit appending to new
/// blocks of the file. A checkpoint on the writer's own connection, between two of its
/// transactions, copies the last few frames with nothing appended meanwhile, so its next
/// transaction starts the WAL over.
pub(super) async fn checkpoint_loop(readers: SqlitePool, alive: mpsc::WeakSender<Job>) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(writer) = alive.upgrade() else {
            return;
        };
        // Columns: busy, frames in the WAL, frames checkpointed.
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&readers)
            .await
        {
            Ok((_, frames, _)) if frames >= WAL_RESTART_FRAMES => {
                // Full queue: the writer is busy, and asked again at the next tick.
                let _ = writer.try_send(Job::Checkpoint);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %err, "webhook delivery store (SQLite): checkpoint failed");
            }
        }
    }
}

async fn checkpoint_wal(conn: &mut SqliteConnection) {
    if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(conn)
        .await
    {
        tracing::debug!(error = %err, "webhook delivery store (SQLite): checkpoint failed");
    }
}

// ---------------------------------------------------------------------------------------------
// The writer: one connection, group commit.

pub(super) type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
pub(super) type JobFuture<'c> = Pin<Box<dyn Future<Output = (bool, Finish)> + Send + 'c>>;
pub(super) type OpJob = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> JobFuture<'c> + Send>;
pub(super) type OpFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;
pub(super) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// One write. Enqueues and recorded attempts, the hot path, are written many rows per
/// statement; everything else runs as its own operation in the same transaction.
pub(super) enum Job {
    Enqueue(DeliveryRow, Reply),
    Record(RecordRow, Reply),
    Op(OpJob),
    /// A checkpoint after the batch's commit (see [`checkpoint_loop`]).
    Checkpoint,
}

impl Inner {
    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))
    }

    /// Sends a bulk job and waits for its transaction to commit.
    pub(super) async fn write_row(&self, job: impl FnOnce(Reply) -> Job) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(job(reply)).await?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?
    }

    /// Runs `op` on the writer connection, inside the next group transaction; answers once
    /// that transaction has committed.
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
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

pub(super) async fn write_loop(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    owner: String,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut finishes: Vec<Finish> = Vec::with_capacity(max_batch);
    // Whether the next batch's transaction has begun already (see the end of the loop).
    let mut begun = false;
    while jobs.recv_many(&mut batch, max_batch).await > 0 {
        // Every job of a batch was submitted concurrently, so any order is a valid one:
        // the enqueues first, then the recorded attempts, then the rest.
        let mut enqueues = Vec::new();
        let mut records = Vec::new();
        let mut ops = Vec::new();
        let mut checkpoint = false;
        for job in batch.drain(..) {
            match job {
                Job::Enqueue(row, reply) => enqueues.push((row, reply)),
                Job::Record(row, reply) => records.push((row, reply)),
                Job::Op(op) => ops.push(op),
                Job::Checkpoint => checkpoint = true,
            }
        }
        if enqueues.is_empty() && records.is_empty() && ops.is_empty() {
            // A checkpoint alone: it must run outside a transaction (one begun for this
            // batch has written nothing).
            if std::mem::take(&mut begun) {
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
            }
            checkpoint_wal(&mut conn).await;
            continue;
        }
        if !std::mem::take(&mut begun) {
            if let Err(err) = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await {
                // Dropping the jobs answers their callers with an error.
                tracing::error!(error = %err, "webhook delivery store (SQLite): cannot begin");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
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
        let (enqueued, replies): (Vec<_>, Vec<_>) = enqueues.into_iter().unzip();
        if !enqueued.is_empty() {
            bulk(enqueue_many(&mut conn, &owner, &enqueued).await, replies);
        }
        let (recorded, replies): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        if !recorded.is_empty() {
            bulk(record_many(&mut conn, &recorded).await, replies);
        }
        for op in ops {
            let (poison, finish) = op(&mut conn).await;
            poisoned |= poison;
            finishes.push(finish);
        }
        // The batch's rows are freed while the commit (its fsync) runs rather than before it:
        // the writer is the one path every caller waits on, and freeing a batch's rows takes
        // a good share of its time.
        let rows = async move { drop((enqueued, recorded)) };
        let failed = if poisoned {
            let (_, ()) = join(sqlx::query("ROLLBACK").execute(&mut conn), rows).await;
            Some(StoreError::Backend(
                "a write in the same transaction failed; nothing was written".into(),
            ))
        } else {
            match join(sqlx::query("COMMIT").execute(&mut conn), rows).await {
                (Ok(_), ()) => None,
                (Err(err), ()) => {
                    tracing::error!(error = %err, "webhook delivery store (SQLite): commit failed");
                    let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                    Some(backend(err))
                }
            }
        };
        let answer = |finishes: &mut Vec<Finish>| {
            for finish in finishes.drain(..) {
                finish(failed.as_ref());
            }
        };
        if failed.is_none() && !checkpoint && !jobs.is_empty() {
            // More writes wait: their transaction begins while this batch's callers are
            // answered (waking each caller's task is the rest of the writer's time).
            let answered = async { answer(&mut finishes) };
            match join(sqlx::query("BEGIN IMMEDIATE").execute(&mut conn), answered).await {
                (Ok(_), ()) => begun = true,
                (Err(err), ()) => {
                    tracing::debug!(error = %err, "webhook delivery store (SQLite): cannot begin");
                }
            }
        } else {
            answer(&mut finishes);
        }
        if checkpoint {
            checkpoint_wal(&mut conn).await;
        }
    }
    if begun {
        let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
    }
    let _ = conn.close().await;
}

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
pub(super) async fn enqueue_many(
    conn: &mut SqliteConnection,
    owner: &str,
    rows: &[DeliveryRow],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut inserted: HashSet<&str> = HashSet::new();
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
        query.push(") WHERE column1 IS NOT NULL ON CONFLICT (id) DO NOTHING");
        let done = query
            .build()
            .persistent(true)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        let count = done.rows_affected() as usize;
        if count == chunk.0.len() {
            // Every row inserted, the usual case: no row to read back.
            inserted.extend(chunk.0.iter().map(|row| row.id.as_str()));
        } else if count > 0 {
            // Some ids were taken: the rows this statement inserted are the last `count`
            // (`seq` only grows, and this connection is the only writer).
            let before = done.last_insert_rowid() - count as i64;
            let found = sqlx::query("SELECT id FROM deliveries WHERE seq > $1")
                .bind(before)
                .fetch_all(&mut *conn)
                .await
                .map_err(backend)?;
            for row in &found {
                let id = row.text("id")?;
                if let Some(row) = chunk.0.iter().find(|row| row.id == id) {
                    inserted.insert(row.id.as_str());
                }
            }
        }
    }
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            if first.binary_search(&i).is_ok() && inserted.contains(row.id.as_str()) {
                Ok(())
            } else {
                Err(StoreError::Duplicate(row.id.clone()))
            }
        })
        .collect())
}

/// The rows a batch statement returns. The statement stays prepared: a batch's statements
/// differ only in their number of rows, which [`padded`] keeps to a few sizes.
async fn batch_rows(
    conn: &mut SqliteConnection,
    query: &mut sqlx::QueryBuilder<'_, sqlx::Sqlite>,
) -> Result<Vec<SqliteRow>, StoreError> {
    query
        .build()
        .persistent(true)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)
}

/// Records attempts, many per statement: each applies only while its lease token is current.
pub(super) async fn record_many(
    conn: &mut SqliteConnection,
    rows: &[RecordRow],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let now = unix_millis(SystemTime::now());
    // (id, lease token) of the rows the update applied to, sorted for look-ups by reference.
    let mut applied: Vec<(String, i64)> = Vec::with_capacity(rows.len());
    for chunk in chunks(rows) {
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
        for row in &batch_rows(conn, &mut query).await? {
            applied.push((row.text("id")?, row.int("lease_token")?));
        }
    }
    applied.sort_unstable();
    let is_applied = |row: &RecordRow| {
        applied
            .binary_search_by(|(id, token)| (id.as_str(), *token).cmp(&(&row.id, row.token)))
            .is_ok()
    };
    let winners: Vec<&RecordRow> = rows.iter().filter(|row| is_applied(row)).collect();
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
    for row in rows {
        results.push(if is_applied(row) {
            Ok(())
        } else {
            Err(missing(conn, row.id.clone()).await)
        });
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Write operations (run inside the writer's transaction).

pub(super) async fn recover(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
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

pub(super) async fn claim(
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

pub(super) async fn update_pending(
    conn: &mut SqliteConnection,
    row: PendingRow,
) -> Result<(), StoreError> {
    let now = unix_millis(SystemTime::now());
    let query = sqlx::query(UPDATE_PENDING)
        .bind(row.due)
        .bind(row.body)
        .bind(now)
        .bind(&row.id);
    update_one(conn, query, &row.id).await
}

/// Runs `update` (fenced by its lease token).
pub(super) async fn update_leased(
    conn: &mut SqliteConnection,
    update: LeasedUpdate,
) -> Result<(), StoreError> {
    let query = sqlx::query(update.sql)
        .bind(update.at)
        .bind(&update.id)
        .bind(update.token);
    update_one(conn, query, &update.id).await
}

/// Runs `query`, an update of the row `id`; no row changed means the delivery is gone or not
/// in the state the update requires, which `missing` tells apart.
pub(super) async fn update_one(
    conn: &mut SqliteConnection,
    query: SqlQuery<'_, sqlx::Sqlite>,
    id: &str,
) -> Result<(), StoreError> {
    let done = query.execute(&mut *conn).await.map_err(backend)?;
    if done.rows_affected() == 0 {
        return Err(missing(conn, id.to_owned()).await);
    }
    Ok(())
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
