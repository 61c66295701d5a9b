//! The maintenance side of [`PostgresStore`](super::PostgresStore): re-sends, bulk failures
//! and retention (rows another replica holds are skipped, never waited for).

use std::time::SystemTime;

use super::Inner;
use crate::store::sql::{self, FailRow, Filter};
use crate::store::StoreError;
use crate::time::unix_millis;

impl Inner {
    pub(super) async fn resend(
        &self,
        id: String,
        signing: Option<(String, String)>,
    ) -> Result<(), StoreError> {
        let (scheme, secrets) = signing.unzip();
        let now = unix_millis(SystemTime::now());
        let (done, retried) = self
            .retry("resend", |pool| {
                Box::pin(
                    sqlx::query(
                        "UPDATE deliveries SET state = 'pending', manual = TRUE, \
                         next_attempt_at = $1, due_at = $1, last_error = NULL, updated_at = $1, \
                         scheme = COALESCE($2, scheme), secrets = COALESCE($3, secrets) \
                         WHERE id = $4 AND state IN ('delivered', 'failed', 'refused')",
                    )
                    .bind(now)
                    .bind(&scheme)
                    .bind(&secrets)
                    .bind(&id)
                    .execute(pool),
                )
            })
            .await?;
        if done.rows_affected() == 0 && !retried {
            return Err(match self.missing(&id).await {
                StoreError::LeaseLost(id) => StoreError::NotFinal(id),
                other => other,
            });
        }
        Ok(())
    }

    pub(super) async fn resend_matching(
        &self,
        filter: Filter,
        signing: Option<(String, String)>,
    ) -> Result<usize, StoreError> {
        let now = unix_millis(SystemTime::now());
        let (rows, _) = self
            .retry("resend_matching", |pool| {
                Box::pin(
                    self.statements
                        .resend_matching::<sqlx::Postgres>(&filter, now, signing.as_ref())
                        .fetch_all(pool),
                )
            })
            .await?;
        Ok(rows.len())
    }

    /// Makes the deliveries of `request` final as failed, releasing any lease (rows locked
    /// elsewhere are skipped); returns their ids.
    pub(super) async fn fail_matching(&self, request: FailRow) -> Result<Vec<String>, StoreError> {
        let now = unix_millis(SystemTime::now());
        let (rows, _) = self
            .retry(request.operation(), |pool| {
                Box::pin(
                    self.statements
                        .fail_matching::<sqlx::Postgres>(&request, now)
                        .fetch_all(pool),
                )
            })
            .await?;
        sql::ids(&rows)
    }

    /// Deletes a batch of old final deliveries and their attempts in one statement.
    pub(super) async fn purge(
        &self,
        state: &'static str,
        before: i64,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let sql = format!(
            "WITH gone AS (DELETE FROM deliveries WHERE seq IN ({}) RETURNING id), \
             attempts_gone AS (DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM gone)) \
             SELECT COUNT(*) FROM gone",
            sql::purge_candidates::<sqlx::Postgres>()
        );
        let (purged, _) = self
            .retry("purge", |pool| {
                Box::pin(
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(state)
                        .bind(before)
                        .bind(limit)
                        .fetch_one(pool),
                )
            })
            .await?;
        Ok(usize::try_from(purged).unwrap_or(0))
    }
}
