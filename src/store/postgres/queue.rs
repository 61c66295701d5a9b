//! The queue side of [`PostgresStore`](super::PostgresStore): retries through a lost
//! connection, `LISTEN` for other replicas' enqueues, claims and fenced updates (the batched
//! enqueues and recorded attempts are in [`batch`](super::batch)).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgRow};
use tokio::sync::Notify;

use super::batch::{submit, Channel, Write};
use super::{Inner, RETRY_FOR};
use crate::store::sql::{backend, DeliveryRow, LeasedUpdate, RecordRow, DELIVERY_COLUMNS};
use crate::store::StoreError;

/// Wakes the engine's idle workers on every notification; reconnects after a lost
/// connection (and wakes them then too, as notifications may have been missed).
pub(super) async fn listen(pool: PgPool, channel: Channel, notify: Arc<Notify>) {
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

// ---------------------------------------------------------------------------------------------
// Retries through connection loss.

/// Whether an error is worth retrying: the connection or the server went away.
pub(super) fn transient(err: &sqlx::Error) -> bool {
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

pub(super) type SqlFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

impl Inner {
    /// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed; the flag
    /// says whether it was retried (its first try may have committed).
    pub(super) async fn retry<'a, T>(
        &'a self,
        what: &'static str,
        mut op: impl FnMut(&'a PgPool) -> SqlFuture<'a, T>,
    ) -> Result<(T, bool), StoreError> {
        retry_on(what, || op(&self.pool)).await
    }

    /// `NotFound` or `LeaseLost`, for an update that matched no row.
    pub(super) async fn missing(&self, id: &str) -> StoreError {
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

    pub(super) async fn insert(&self, row: DeliveryRow) -> Result<(), StoreError> {
        submit(&self.writes, Write::Enqueue(row)).await
    }

    pub(super) async fn claim(
        &self,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<PgRow>, StoreError> {
        let sql = format!(
            "UPDATE deliveries AS d SET state = 'in_flight', lease_owner = $1, \
             lease_expires_at = $2, due_at = $2, lease_token = d.lease_token + 1, \
             updated_at = $3 \
             FROM (SELECT seq FROM deliveries WHERE due_at IS NOT NULL AND due_at <= $3 \
                   ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS due \
             WHERE d.seq = due.seq \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let (rows, _) = self
            .retry("claim", |pool| {
                Box::pin(
                    sqlx::query(&sql)
                        .bind(&self.owner)
                        .bind(until)
                        .bind(now)
                        .bind(limit)
                        .fetch_all(pool),
                )
            })
            .await?;
        Ok(rows)
    }

    pub(super) async fn record(&self, row: RecordRow) -> Result<(), StoreError> {
        submit(&self.writes, Write::Record(row)).await
    }

    /// Runs `update` (fenced by its lease token); `NotFound`/`LeaseLost` when no row matched.
    pub(super) async fn update_leased(&self, update: LeasedUpdate) -> Result<(), StoreError> {
        let (done, retried) = self
            .retry(update.operation, |pool| {
                Box::pin(
                    sqlx::query(update.sql)
                        .bind(update.at)
                        .bind(&update.id)
                        .bind(update.token)
                        .execute(pool),
                )
            })
            .await?;
        if done.rows_affected() == 0 && !retried {
            return Err(self.missing(&update.id).await);
        }
        Ok(())
    }
}

/// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed; the flag says
/// whether it was retried (its first try may have committed).
pub(super) async fn retry_on<T, F, Fut>(
    what: &'static str,
    mut op: F,
) -> Result<(T, bool), StoreError>
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
