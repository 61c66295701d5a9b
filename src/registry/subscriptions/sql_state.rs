//! [`EndpointState`] in the SQL subscription stores' database (tables `webhook_failures` and
//! `webhook_rate_limits`, migration `0004_endpoint_state.sql`): every replica on the database
//! counts the same failures and takes turns from the same bucket.
//!
//! Each count is one statement, `INSERT … ON CONFLICT (owner, id) DO UPDATE … RETURNING`:
//! the database locks the webhook's row for it, so concurrent replicas apply their updates
//! one after the other and each reads the count its own update produced. Exactly one
//! replica sees the failure that reaches the health rule's threshold; turns never repeat.
//! The two dialects differ only in how the list of failure times is written (a `BIGINT[]`
//! in PostgreSQL, a JSON array in SQLite) and in `GREATEST` versus SQLite's scalar `MAX`.

use std::time::{Duration, SystemTime};

use super::endpoint_state::{turn_at, EndpointState};
use super::sql::backend;
use super::SubscriptionFuture;
use crate::registry::model::{EndpointRateLimit as RateLimit, Owner};
use crate::time::{from_unix_micros, unix_micros, unix_millis};

// Bucket times are Unix microseconds: the shortest interval a [`RateLimit`] allows
// (10 000 per second) is 100 µs, which milliseconds would round away.

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Failure times are Unix milliseconds, like every other time the stores keep.
fn window_start(at: SystemTime, within: Duration) -> i64 {
    unix_millis(at).saturating_sub(i64::try_from(within.as_millis()).unwrap_or(i64::MAX))
}

const FORGET_FAILURES: &str = "DELETE FROM webhook_failures WHERE owner = $1 AND id = $2";
const FORGET_BUCKET: &str = "DELETE FROM webhook_rate_limits WHERE owner = $1 AND id = $2";

/// Implements [`EndpointState`] for a SQL subscription store whose `pool` runs `$database`
/// statements: `$record_failure` binds owner, id, the failure time (ms), the window's start
/// (ms) and how many to keep, and returns the count; `$take_turn` binds owner, id, now (µs)
/// and the interval (µs), and returns the bucket's new theoretical arrival time (µs).
macro_rules! sql_endpoint_state {
    ($store:ty, $database:ty, $record_failure:expr, $take_turn:expr) => {
        impl EndpointState for $store {
            fn record_failure<'a>(
                &'a self,
                owner: &'a Owner,
                id: &'a str,
                at: SystemTime,
                within: Duration,
                keep: u32,
            ) -> SubscriptionFuture<'a, u32> {
                Box::pin(async move {
                    let count: i64 = sqlx::query_scalar::<$database, i64>($record_failure)
                        .bind(owner.as_str())
                        .bind(id)
                        .bind(unix_millis(at))
                        .bind(window_start(at, within))
                        .bind(i64::from(keep.max(1)))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(backend)?;
                    Ok(u32::try_from(count).unwrap_or(u32::MAX))
                })
            }

            fn forget_failures<'a>(
                &'a self,
                owner: &'a Owner,
                id: &'a str,
            ) -> SubscriptionFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query::<$database>(FORGET_FAILURES)
                        .bind(owner.as_str())
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .map_err(backend)?;
                    Ok(())
                })
            }

            fn take_turn<'a>(
                &'a self,
                owner: &'a Owner,
                id: &'a str,
                limit: RateLimit,
                now: SystemTime,
            ) -> SubscriptionFuture<'a, Option<SystemTime>> {
                Box::pin(async move {
                    let tat: i64 = sqlx::query_scalar::<$database, i64>($take_turn)
                        .bind(owner.as_str())
                        .bind(id)
                        .bind(unix_micros(now))
                        .bind(micros(limit.interval()))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(backend)?;
                    Ok(turn_at(from_unix_micros(tat), limit, now))
                })
            }

            fn forget<'a>(&'a self, owner: &'a Owner, id: &'a str) -> SubscriptionFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(backend)?;
                    for statement in [FORGET_FAILURES, FORGET_BUCKET] {
                        sqlx::query::<$database>(statement)
                            .bind(owner.as_str())
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    tx.commit().await.map_err(backend)?;
                    Ok(())
                })
            }
        }
    };
}

#[cfg(feature = "postgres")]
sql_endpoint_state!(
    super::PostgresSubscriptions,
    sqlx::Postgres,
    "INSERT INTO webhook_failures AS f (owner, id, failed_at) VALUES ($1, $2, ARRAY[$3::bigint]) \
     ON CONFLICT (owner, id) DO UPDATE SET failed_at = ARRAY( \
         SELECT t FROM unnest(array_prepend($3::bigint, f.failed_at)) AS t \
         WHERE t >= $4 ORDER BY t DESC LIMIT $5) \
     RETURNING cardinality(failed_at)::bigint",
    "INSERT INTO webhook_rate_limits AS r (owner, id, tat) VALUES ($1, $2, $3 + $4) \
     ON CONFLICT (owner, id) DO UPDATE SET tat = GREATEST(r.tat, $3) + $4 \
     RETURNING tat"
);

#[cfg(feature = "sqlite")]
sql_endpoint_state!(
    super::SqliteSubscriptions,
    sqlx::Sqlite,
    "INSERT INTO webhook_failures (owner, id, failed_at) VALUES ($1, $2, json_array($3)) \
     ON CONFLICT (owner, id) DO UPDATE SET failed_at = ( \
         SELECT json_group_array(t) FROM ( \
             SELECT t FROM ( \
                 SELECT $3 AS t \
                 UNION ALL SELECT value FROM json_each(webhook_failures.failed_at)) \
             WHERE t >= $4 ORDER BY t DESC LIMIT $5)) \
     RETURNING json_array_length(failed_at)",
    "INSERT INTO webhook_rate_limits (owner, id, tat) VALUES ($1, $2, $3 + $4) \
     ON CONFLICT (owner, id) DO UPDATE SET tat = MAX(webhook_rate_limits.tat, $3) + $4 \
     RETURNING tat"
);
