//! The conversation log side of [`PostgresStore`](super::PostgresStore): reads.

use std::time::SystemTime;

use super::Inner;
use crate::delivery::model::{Attempt, Conversation, ConversationQuery, Delivery, DeliveryState};
use crate::store::sql::{
    self, conversations, delivery_from_row, Filter, RowExt, ATTEMPT_COLUMNS, DELIVERY_COLUMNS,
};
use crate::store::{StoreError, StoreStats};
use crate::time::from_unix_millis;

impl Inner {
    async fn attempts_of(&self, ids: &[String]) -> Result<Vec<(String, Attempt)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ANY($1) \
             ORDER BY delivery_id, number, seq"
        );
        let (rows, _) = self
            .retry("attempts", |pool| {
                Box::pin(sqlx::query(&sql).bind(ids).fetch_all(pool))
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
        let Some(row) = row else {
            return Ok(None);
        };
        let delivery = delivery_from_row(&row, &self.signers)?;
        let attempts = self.attempts_of(&[id.to_owned()]).await?;
        Ok(conversations(vec![delivery], attempts).pop())
    }

    pub(super) async fn list(
        &self,
        query: &ConversationQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        let filter = Filter::new(query, 100);
        let (rows, _) = self
            .retry("list", |pool| {
                Box::pin(
                    self.statements
                        .list::<sqlx::Postgres>(&filter, query)
                        .fetch_all(pool),
                )
            })
            .await?;
        let deliveries: Vec<Delivery> = rows
            .iter()
            .map(|row| delivery_from_row(row, &self.signers))
            .collect::<Result<_, _>>()?;
        let ids: Vec<String> = deliveries.iter().map(|d| d.id.clone()).collect();
        let attempts = self.attempts_of(&ids).await?;
        Ok(conversations(deliveries, attempts))
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (rows, _) = self
            .retry("stats", |pool| {
                Box::pin(
                    sqlx::query(
                        // The counts the triggers of migration 0005 keep: this statement's
                        // snapshot holds every committed change; the changes are folded into
                        // one row per bucket on the way, so the next read sums a few rows.
                        "WITH folded AS (DELETE FROM delivery_count_changes \
                           RETURNING bucket, delta), \
                         kept AS (INSERT INTO delivery_count_changes (bucket, delta) \
                           SELECT bucket, SUM(delta) FROM folded GROUP BY bucket \
                           HAVING SUM(delta) <> 0) \
                         SELECT bucket AS state, SUM(delta)::BIGINT AS n \
                         FROM delivery_count_changes GROUP BY bucket \
                         UNION ALL \
                         SELECT 'oldest_due', (SELECT due_at FROM deliveries \
                           WHERE due_at IS NOT NULL AND state = 'pending' \
                           ORDER BY due_at LIMIT 1)",
                    )
                    .fetch_all(pool),
                )
            })
            .await?;
        let mut stats = StoreStats::default();
        for row in &rows {
            let state = row.text("state")?;
            let n = row.opt_int("n")?;
            if state == "oldest_due" {
                stats.oldest_due = n.map(from_unix_millis);
                continue;
            }
            let n = usize::try_from(n.unwrap_or(0)).unwrap_or(0);
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
