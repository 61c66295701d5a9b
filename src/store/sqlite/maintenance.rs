//! The maintenance side of [`SqliteStore`](super::SqliteStore): re-sends, bulk failures and
//! retention, run in the writer's transaction.

use std::time::SystemTime;

use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::Sqlite;

use super::queue::update_one;
use crate::store::sql::{self, backend, FailRow, Filter, SqlQuery, Statements};
use crate::store::StoreError;
use crate::time::unix_millis;

pub(super) async fn resend(
    conn: &mut SqliteConnection,
    id: String,
    signing: Option<(String, String)>,
) -> Result<(), StoreError> {
    let now = unix_millis(SystemTime::now());
    let (scheme, secrets) = signing.unzip();
    let query = sqlx::query(
        "UPDATE deliveries SET state = 'pending', manual = 1, next_attempt_at = $1, due_at = $1, \
         last_error = NULL, updated_at = $1, scheme = COALESCE($2, scheme), \
         secrets = COALESCE($3, secrets) \
         WHERE id = $4 AND state IN ('delivered', 'failed', 'refused')",
    )
    .bind(now)
    .bind(scheme)
    .bind(secrets)
    .bind(&id);
    // A row that is there but not final answers as a lost lease would.
    update_one(conn, query, &id).await.map_err(|err| match err {
        StoreError::LeaseLost(id) => StoreError::NotFinal(id),
        other => other,
    })
}

/// The rows of the bulk statement `at` binds to the current time.
async fn fetch_now<'q>(
    conn: &mut SqliteConnection,
    at: impl FnOnce(i64) -> SqlQuery<'q, Sqlite>,
) -> Result<Vec<SqliteRow>, StoreError> {
    let now = unix_millis(SystemTime::now());
    at(now).fetch_all(conn).await.map_err(backend)
}

pub(super) async fn resend_matching(
    conn: &mut SqliteConnection,
    statements: &Statements,
    filter: Filter,
    signing: Option<(String, String)>,
) -> Result<usize, StoreError> {
    let signing = signing.as_ref();
    let rows = fetch_now(conn, |now| {
        statements.resend_matching(&filter, now, signing)
    })
    .await?;
    Ok(rows.len())
}

pub(super) async fn fail_matching(
    conn: &mut SqliteConnection,
    statements: &Statements,
    request: FailRow,
) -> Result<Vec<String>, StoreError> {
    sql::ids(&fetch_now(conn, |now| statements.fail_matching(&request, now)).await?)
}

/// Deletes a batch of old final deliveries, then their attempts (SQLite has no `DELETE` in a
/// `WITH`; both run in the writer's one transaction).
pub(super) async fn purge(
    conn: &mut SqliteConnection,
    state: &'static str,
    before: i64,
    limit: i64,
) -> Result<usize, StoreError> {
    let rows = sqlx::query(&format!(
        "DELETE FROM deliveries WHERE seq IN ({}) RETURNING id",
        sql::purge_candidates::<sqlx::Sqlite>()
    ))
    .bind(state)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids = sql::ids(&rows)?;
    let mut query = sqlx::QueryBuilder::new("DELETE FROM attempts WHERE delivery_id IN (");
    let mut list = query.separated(", ");
    for id in &ids {
        list.push_bind(id);
    }
    query.push(")");
    query.build().execute(conn).await.map_err(backend)?;
    Ok(ids.len())
}
