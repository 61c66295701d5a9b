//! The conversation log side of [`SqliteStore`](super::SqliteStore): reads, on the pool of
//! reader connections (WAL mode lets them run beside the writer).

use std::time::SystemTime;

use sqlx::sqlite::SqliteRow;

use super::Inner;
use crate::delivery::model::{Attempt, Conversation, ConversationQuery, DeliveryState};
use crate::store::sql::{self, backend, RowExt, ATTEMPT_COLUMNS, DELIVERY_COLUMNS};
use crate::store::{StoreError, StoreStats};
use crate::time::from_unix_millis;

impl Inner {
    async fn conversations(&self, rows: &[SqliteRow]) -> Result<Vec<Conversation>, StoreError> {
        sql::conversations_of(rows, &self.signers, |ids| self.attempts_of(ids)).await
    }

    async fn attempts_of(&self, ids: Vec<String>) -> Result<Vec<(String, Attempt)>, StoreError> {
        let mut query = sqlx::QueryBuilder::new(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id IN ("
        ));
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(id);
        }
        query.push(") ORDER BY delivery_id, number, seq");
        let rows = query
            .build()
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        rows.iter().map(sql::attempt_from_row).collect()
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        Ok(self.conversations(row.as_slice()).await?.pop())
    }

    pub(super) async fn list(
        &self,
        query: &ConversationQuery,
    ) -> Result<Vec<Conversation>, StoreError> {
        let rows = self
            .statements
            .list::<sqlx::Sqlite>(query)
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        self.conversations(&rows).await
    }

    pub(super) async fn stats(&self) -> Result<StoreStats, StoreError> {
        // The counts the triggers of migration 0005 keep, not a count of the table.
        let rows = sqlx::query("SELECT bucket AS state, n FROM delivery_counts")
            .fetch_all(&self.readers)
            .await
            .map_err(backend)?;
        let mut stats = StoreStats::default();
        for row in &rows {
            let n = usize::try_from(row.int("n")?).unwrap_or(0);
            let state = row.text("state")?;
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
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM deliveries WHERE due_at IS NOT NULL AND state = 'pending' \
             ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        stats.oldest_due = oldest.map(from_unix_millis);
        Ok(stats)
    }

    pub(super) async fn next_due(&self) -> Result<Option<SystemTime>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT due_at FROM deliveries WHERE due_at IS NOT NULL ORDER BY due_at LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await
        .map_err(backend)?;
        Ok(next.map(from_unix_millis))
    }
}
