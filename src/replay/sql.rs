//! What the SQL replay stores share: the table's states, the opportunistic purge, and the
//! reservation and completion queries (written once; sqlx binds `$N` on SQLite and PostgreSQL
//! alike, and only the purge differs between the two).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{ReplayError, ReplayRecord, Reservation};

/// A reserved key's `state` column.
pub(super) const IN_FLIGHT: &str = "inflight";
/// A processed key's `state` column (its `run_id` column holds the record).
pub(super) const DONE: &str = "done";

/// Expired rows deleted by one purge: bounded, so no reservation waits on a long delete.
pub(super) const PURGE_BATCH: i64 = 256;

/// One reservation in this many also purges a batch of expired rows.
const PURGE_EVERY: u64 = 64;

/// How often `reserve` tries again when the row it lost to vanished before it could read it
/// (released by a failed delivery in between).
pub(super) const RESERVE_ATTEMPTS: usize = 3;

/// Decides when a reservation also purges.
#[derive(Debug, Default)]
pub(super) struct PurgeTicker(AtomicU64);

impl PurgeTicker {
    pub(super) fn tick(&self) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1
    }
}

/// The reservation an existing, unexpired row stands for.
pub(super) fn existing(state: &str, run_id: Option<&str>) -> Result<Reservation, ReplayError> {
    match state {
        IN_FLIGHT => Ok(Reservation::InFlight),
        DONE => {
            let run_id = run_id
                .ok_or_else(|| ReplayError::new("a processed replay record has no run id"))?;
            let run_id = uuid::Uuid::parse_str(run_id).map_err(ReplayError::new)?;
            Ok(Reservation::Done(ReplayRecord::new(run_id)))
        }
        other => Err(ReplayError::new(format!(
            "unknown replay record state `{other}`"
        ))),
    }
}

pub(super) fn backend(error: sqlx::Error) -> ReplayError {
    ReplayError::new(error)
}

/// `reserve` and the [`ReplayStore`](super::ReplayStore) impl of a SQL store whose `pool` field
/// is a `$pool` and whose module has an `async fn purge(&$pool, now)`.
macro_rules! sql_replay_store {
    ($store:ty, $pool:ty) => {
        async fn reserve(
            pool: $pool,
            key: String,
            now: i64,
            ttl: Duration,
        ) -> Result<Reservation, ReplayError> {
            let expires_at = expiry(now, ttl);
            for _ in 0..RESERVE_ATTEMPTS {
                // Inserts, or takes over an expired row; a live row is left alone and returns
                // nothing.
                let taken = sqlx::query(
                    "INSERT INTO tower_webhooks_replay (key, state, run_id, expires_at) \
                     VALUES ($1, $2, NULL, $3) \
                     ON CONFLICT (key) DO UPDATE SET state = excluded.state, run_id = NULL, \
                     expires_at = excluded.expires_at \
                     WHERE tower_webhooks_replay.expires_at <= $4 \
                     RETURNING state",
                )
                .bind(&key)
                .bind(IN_FLIGHT)
                .bind(expires_at)
                .bind(now)
                .fetch_optional(&pool)
                .await
                .map_err(backend)?;
                if taken.is_some() {
                    return Ok(Reservation::Fresh);
                }
                let row = sqlx::query(
                    "SELECT state, run_id FROM tower_webhooks_replay \
                     WHERE key = $1 AND expires_at > $2",
                )
                .bind(&key)
                .bind(now)
                .fetch_optional(&pool)
                .await
                .map_err(backend)?;
                if let Some(row) = row {
                    let state: String = row.try_get("state").map_err(backend)?;
                    let run_id: Option<String> = row.try_get("run_id").map_err(backend)?;
                    return existing(&state, run_id.as_deref());
                }
            }
            Err(ReplayError::new(
                "replay record changed under every attempt",
            ))
        }

        impl ReplayStore for $store {
            fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation> {
                let pool = self.pool.clone();
                let key = key.to_owned();
                let purge_too = self.purge.tick();
                Box::pin(async move {
                    let reservation = reserve(pool.clone(), key, now, ttl).await?;
                    if purge_too {
                        purge(&pool, now).await?;
                    }
                    Ok(reservation)
                })
            }

            fn complete(
                &self,
                key: &str,
                outcome: Outcome,
                now: i64,
                ttl: Duration,
            ) -> ReplayFuture<()> {
                let pool = self.pool.clone();
                let key = key.to_owned();
                Box::pin(async move {
                    match outcome {
                        Outcome::Processed(record) => {
                            sqlx::query(
                                "INSERT INTO tower_webhooks_replay \
                                 (key, state, run_id, expires_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (key) DO UPDATE SET state = excluded.state, \
                                 run_id = excluded.run_id, expires_at = excluded.expires_at",
                            )
                            .bind(&key)
                            .bind(DONE)
                            .bind(record.run_id.to_string())
                            .bind(expiry(now, ttl))
                            .execute(&pool)
                            .await
                            .map_err(backend)?;
                        }
                        Outcome::Failed => {
                            sqlx::query(
                                "DELETE FROM tower_webhooks_replay WHERE key = $1 AND state = $2",
                            )
                            .bind(&key)
                            .bind(IN_FLIGHT)
                            .execute(&pool)
                            .await
                            .map_err(backend)?;
                        }
                    }
                    Ok(())
                })
            }
        }
    };
}
pub(super) use sql_replay_store;
