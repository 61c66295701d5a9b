//! The conversation log side of [`PostgresStore`](super::PostgresStore): reads.

use std::time::SystemTime;

use sqlx::postgres::PgRow;

use super::Inner;
use crate::delivery::model::{Attempt, Conversation, ConversationQuery, DeliveryState};
use crate::store::sql::{self, RowExt, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};
use crate::store::{StoreError, StoreStats};
use crate::time::from_unix_millis;

/// Final deliveries `stats` counts one by one; beyond this many it estimates them (see
/// [`StoreStats::finished`]), so reading the figures costs the same at any table size.
pub(super) const FINISHED_COUNTED_UP_TO: usize = 10_000;

/// The `finished` figure: `counted` (at most [`FINISHED_COUNTED_UP_TO`]) when the count stopped
/// short of the bound, else the table's estimated rows less the `unfinished` ones (counted
/// exactly), never below the bound.
fn finished(counted: usize, estimated_rows: Option<usize>, unfinished: usize) -> usize {
    if counted < FINISHED_COUNTED_UP_TO {
        return counted;
    }
    estimated_rows
        .map_or(0, |rows| rows.saturating_sub(unfinished))
        .max(counted)
}

impl Inner {
    async fn conversations(&self, rows: &[PgRow]) -> Result<Vec<Conversation>, StoreError> {
        sql::conversations_of(rows, &self.signers, |ids| self.attempts_of(ids)).await
    }

    async fn attempts_of(&self, ids: Vec<String>) -> Result<Vec<(String, Attempt)>, StoreError> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ANY($1) \
             ORDER BY delivery_id, number, seq"
        );
        let (rows, _) = self
            .retry("attempts", |pool| {
                Box::pin(sqlx::query(&sql).bind(ids.as_slice()).fetch_all(pool))
            })
            .await?;
        rows.iter().map(sql::attempt_from_row).collect()
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
        let (row, _) = self
            .retry("get", |pool| {
                Box::pin(sqlx::query(&sql).bind(id).fetch_optional(pool))
            })
            .await?;
        Ok(self.conversations(row.as_slice()).await?.pop())
    }

    pub(super) async fn list(
        &self,
        query: &ConversationQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        let (rows, _) = self
            .retry("list", |pool| {
                Box::pin(
                    self.statements
                        .list::<sqlx::Postgres>(query)
                        .fetch_all(pool),
                )
            })
            .await?;
        self.conversations(&rows).await
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (rows, _) = self
            .retry("stats", |pool| {
                Box::pin(
                    sqlx::query(
                        // The unfinished rows by state, read from the due index alone (it
                        // carries the state); the finished rows counted up to the bound, and
                        // the table's estimated size (the statistics' live-row count, or
                        // pg_class's density times the table's current pages, whichever is
                        // larger: each lags in its own way) for beyond it.
                        "SELECT state, COUNT(*)::BIGINT AS n FROM deliveries \
                           WHERE due_at IS NOT NULL GROUP BY state \
                         UNION ALL \
                         SELECT 'finished', COUNT(*)::BIGINT FROM (SELECT 1 FROM deliveries \
                           WHERE due_at IS NULL LIMIT $1) AS counted \
                         UNION ALL \
                         SELECT 'rows', GREATEST(pg_stat_get_live_tuples(c.oid), \
                           CASE WHEN c.relpages > 0 AND c.reltuples >= 0 \
                             THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) \
                               / current_setting('block_size')::BIGINT) END)::BIGINT \
                           FROM pg_class c WHERE c.oid = 'deliveries'::regclass \
                         UNION ALL \
                         SELECT 'oldest_due', (SELECT due_at FROM deliveries \
                           WHERE due_at IS NOT NULL AND state = 'pending' \
                           ORDER BY due_at LIMIT 1)",
                    )
                    .bind(sql::count(FINISHED_COUNTED_UP_TO))
                    .fetch_all(pool),
                )
            })
            .await?;
        let mut stats = StoreStats::default();
        let mut counted = 0;
        let mut estimated_rows = None;
        for row in &rows {
            let state = row.text("state")?;
            let n = row.opt_int("n")?;
            let count = || usize::try_from(n.unwrap_or(0)).unwrap_or(0);
            match state.as_str() {
                "oldest_due" => stats.oldest_due = n.map(from_unix_millis),
                "finished" => counted = count(),
                "rows" => estimated_rows = n.map(|_| count()),
                state => match sql::decode_state(state)? {
                    DeliveryState::Pending => stats.pending += count(),
                    DeliveryState::InFlight => stats.in_flight += count(),
                    // A final row always has no due time; counted with the finished ones.
                    _ => counted += count(),
                },
            }
        }
        stats.finished = finished(counted, estimated_rows, stats.pending + stats.in_flight);
        Ok(stats)
    }

    pub(super) async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_is_exact_below_the_bound_and_estimated_beyond() {
        // Below the bound the count is the figure, whatever the statistics say.
        assert_eq!(finished(42, Some(1_000_000), 10), 42);
        assert_eq!(finished(0, None, 3), 0);
        let bound = FINISHED_COUNTED_UP_TO;
        // At the bound: the estimated rows less the unfinished ones...
        assert_eq!(finished(bound, Some(1_000_000), 200_000), 800_000);
        // ...never below what was counted (statistics lag behind a growing table, or were
        // reset), and the bound when there are no statistics at all.
        assert_eq!(finished(bound, Some(bound + 5), 200_000), bound);
        assert_eq!(finished(bound, None, 0), bound);
    }
}
