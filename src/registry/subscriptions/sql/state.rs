//! [`EndpointState`] in the SQL subscription stores' database (tables `webhook_failures` and
//! `webhook_rate_limits`, the registry's migration `0004_endpoint_state.sql`): every replica on
//! the database counts the same failures and takes turns from the same bucket.
//!
//! Each count is one statement, `INSERT … ON CONFLICT (owner, id) DO UPDATE … RETURNING`:
//! the database locks the webhook's row for it, so concurrent replicas apply their updates
//! one after the other and each reads the count its own update produced. Exactly one
//! replica sees the failure that reaches the health rule's threshold; turns never repeat.
//! The two dialects differ only in how the list of failure times is written (a `BIGINT[]`
//! in PostgreSQL, a JSON array in SQLite) and in `GREATEST` versus SQLite's scalar `MAX`:
//! those two statements are the dialect's ([`SubscriptionDialect::RECORD_FAILURE`],
//! [`SubscriptionDialect::TAKE_TURN`]), the rest is written once.

use std::time::{Duration, SystemTime};

use super::dialect::SubscriptionDialect;
use super::record::{backend, from_store};
use super::{connection, key, run_migrations, SqlSubscriptions};
use crate::registry::subscriptions::endpoint_state::{
    turn_at, EndpointFailure, EndpointState, EndpointTurn,
};
use crate::registry::subscriptions::{SubscriptionError, SubscriptionFuture, WebhookKey};
use crate::store::sql::SqlQuery;
use crate::time::{from_unix_micros, unix_micros, unix_millis};

// Bucket times are Unix microseconds: the shortest interval an [`EndpointRateLimit`] allows
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

/// `sql` with the webhook's key at `$1`, `$2` and `values` after it.
fn bound<'q, DB: SubscriptionDialect>(
    sql: &'q str,
    webhook: WebhookKey<'_>,
    values: &[i64],
) -> SqlQuery<'q, DB> {
    values.iter().fold(key(sql, webhook), |query, value| {
        DB::int(query, Some(*value))
    })
}

/// The `n` column of the one row `query` returns.
async fn count<DB: SubscriptionDialect>(
    store: &SqlSubscriptions<DB>,
    query: SqlQuery<'_, DB>,
) -> Result<i64, SubscriptionError> {
    let mut conn = connection(store).await?;
    let row = DB::fetch_optional(&mut *conn, query)
        .await
        .map_err(backend)?
        .ok_or_else(|| SubscriptionError::Backend("no row returned".into()))?;
    DB::columns(&row).int("n").map_err(from_store)
}

impl<DB: SubscriptionDialect> EndpointState for SqlSubscriptions<DB> {
    fn record_failure<'a>(&'a self, failure: EndpointFailure<'a>) -> SubscriptionFuture<'a, u32> {
        Box::pin(async move {
            let at = failure.at;
            let values = [
                unix_millis(at),
                window_start(at, failure.within),
                i64::from(failure.keep.max(1)),
            ];
            let count = count(self, bound(DB::RECORD_FAILURE, failure.webhook, &values)).await?;
            Ok(u32::try_from(count).unwrap_or(u32::MAX))
        })
    }

    fn forget_failures<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = connection(self).await?;
            DB::execute(&mut *conn, bound(FORGET_FAILURES, webhook, &[]))
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn take_turn<'a>(
        &'a self,
        turn: EndpointTurn<'a>,
    ) -> SubscriptionFuture<'a, Option<SystemTime>> {
        Box::pin(async move {
            let EndpointTurn { limit, now, .. } = turn;
            let values = [unix_micros(now), micros(limit.interval())];
            let tat = count(self, bound(DB::TAKE_TURN, turn.webhook, &values)).await?;
            Ok(turn_at(from_unix_micros(tat), limit, now))
        })
    }

    fn forget<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, ()> {
        Box::pin(async move {
            run_migrations(self).await?;
            let mut tx = self.pool.begin().await.map_err(backend)?;
            for statement in [FORGET_FAILURES, FORGET_BUCKET] {
                DB::execute(&mut *tx, bound(statement, webhook, &[]))
                    .await
                    .map_err(backend)?;
            }
            tx.commit().await.map_err(backend)?;
            Ok(())
        })
    }
}
