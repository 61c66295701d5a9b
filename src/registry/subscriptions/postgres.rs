//! [`PostgresSubscriptions`]: webhooks in PostgreSQL (feature `postgres`).

use std::fmt;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use super::sql::{backend, is_unique_violation, Record, COLUMNS};
use super::{
    EndpointState, Modification, SubscriptionError, SubscriptionFuture, SubscriptionStore,
};
use crate::registry::model::{Endpoint as Webhook, Owner};
use crate::store::{EncryptionKeys, PostgresStore};

/// A durable [`SubscriptionStore`] in PostgreSQL, shared by every replica: webhooks survive
/// a restart with everything a [`Webhook`] holds (secrets with their grace expiry, custom
/// headers, enabled state and reason, rate limit, timestamps).
///
/// It uses a [`PostgresStore`]'s pool, hence its database and schema; the table
/// (`webhooks`) is created by the store's embedded migrations
/// (`migrations/postgres/0003_webhooks.sql`). [`modify`](SubscriptionStore::modify) locks
/// the row (`SELECT … FOR UPDATE`), so concurrent changes from several replicas apply one
/// after the other.
///
/// It is also the registry's [`EndpointState`]: the health rule's failure counts and the rate
/// limits' buckets live in tables beside the webhooks
/// (`migrations/postgres/0004_endpoint_state.sql`), so replicas on one database and schema
/// disable an endpoint once, for all, and share one bucket per webhook.
///
/// # Sensitive data
///
/// The table holds every webhook's **signing secrets** and custom header values (often an
/// endpoint's credentials), encrypted with the store's
/// [encryption keys](crate::store::PostgresOptions::encryption_keys) when configured, as
/// given otherwise: restrict access to it (database roles, encrypted backups) like any
/// credential store. `Debug` prints the schema only.
///
/// ```no_run
/// use tower_webhooks::delivery::EngineBuilder;
/// use tower_webhooks::registry::{PostgresSubscriptions, WebhookRegistry};
/// use tower_webhooks::store::PostgresStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
/// let registry = WebhookRegistry::builder()
///     .subscriptions(PostgresSubscriptions::new(&store))
///     .engine(EngineBuilder::new().store(store.clone()))
///     .outbox(store)
///     .build();
/// # let _ = registry;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresSubscriptions {
    pub(super) pool: PgPool,
    schema: Option<String>,
    keys: Option<EncryptionKeys>,
}

impl fmt::Debug for PostgresSubscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSubscriptions")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresSubscriptions {
    /// Webhooks in `store`'s database and schema, through its pool (the store ran the
    /// migrations, unless they were [turned off](crate::store::PostgresOptions::migrate)), and
    /// its [encryption keys](crate::store::PostgresOptions::encryption_keys).
    pub fn new(store: &PostgresStore) -> Self {
        Self {
            pool: store.pool().clone(),
            schema: store.schema().map(str::to_owned),
            keys: store.encryption_keys().cloned(),
        }
    }
}

fn record(row: &PgRow, keys: Option<&EncryptionKeys>) -> Result<Webhook, SubscriptionError> {
    let get = |column: &str| -> Result<String, SubscriptionError> {
        row.try_get(column).map_err(backend)
    };
    Record {
        owner: get("owner")?,
        id: get("id")?,
        endpoint_url: get("endpoint_url")?,
        event_types: row.try_get("event_types").map_err(backend)?,
        description: get("description")?,
        scheme: get("scheme")?,
        secrets: get("secrets")?,
        headers: get("headers")?,
        enabled: row.try_get("enabled").map_err(backend)?,
        disabled_reason: row.try_get("disabled_reason").map_err(backend)?,
        rate_per_second: row.try_get("rate_per_second").map_err(backend)?,
        rate_burst: row.try_get("rate_burst").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
        updated_at: row.try_get("updated_at").map_err(backend)?,
    }
    .into_webhook(keys)
}

fn records(
    rows: &[PgRow],
    keys: Option<&EncryptionKeys>,
) -> Result<Vec<Webhook>, SubscriptionError> {
    rows.iter().map(|row| record(row, keys)).collect()
}

/// `sql` with every column of `r` bound at `$1..$14`, in [`COLUMNS`] order.
fn bind_all<'q>(
    sql: &'q str,
    r: &'q Record,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(&r.owner)
        .bind(&r.id)
        .bind(&r.endpoint_url)
        .bind(&r.event_types)
        .bind(&r.description)
        .bind(&r.scheme)
        .bind(&r.secrets)
        .bind(&r.headers)
        .bind(r.enabled)
        .bind(&r.disabled_reason)
        .bind(r.rate_per_second)
        .bind(r.rate_burst)
        .bind(r.created_at)
        .bind(r.updated_at)
}

const UPDATE: &str = "UPDATE webhooks SET endpoint_url = $3, event_types = $4, \
     description = $5, scheme = $6, secrets = $7, headers = $8, enabled = $9, \
     disabled_reason = $10, rate_per_second = $11, rate_burst = $12, created_at = $13, \
     updated_at = $14 WHERE owner = $1 AND id = $2";

impl SubscriptionStore for PostgresSubscriptions {
    fn insert(&self, webhook: Webhook) -> SubscriptionFuture<'_, ()> {
        Box::pin(async move {
            let r = Record::new(&webhook, self.keys.as_ref())?;
            let sql = format!(
                "INSERT INTO webhooks ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            );
            match bind_all(&sql, &r).execute(&self.pool).await {
                Ok(_) => Ok(()),
                Err(err) if is_unique_violation(&err) => {
                    Err(SubscriptionError::Duplicate(r.id.clone()))
                }
                Err(err) => Err(backend(err)),
            }
        })
    }

    fn get<'a>(&'a self, owner: &'a Owner, id: &'a str) -> SubscriptionFuture<'a, Option<Webhook>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 AND id = $2"
            ))
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
            row.as_ref()
                .map(|row| record(row, self.keys.as_ref()))
                .transpose()
        })
    }

    fn list<'a>(
        &'a self,
        owner: &'a Owner,
        after: Option<&'a str>,
        limit: usize,
    ) -> SubscriptionFuture<'a, Vec<Webhook>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 \
                 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ))
            .bind(owner.as_str())
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            records(&rows, self.keys.as_ref())
        })
    }

    fn modify<'a>(
        &'a self,
        owner: &'a Owner,
        id: &'a str,
        change: Modification<'a>,
    ) -> SubscriptionFuture<'a, Option<Webhook>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(backend)?;
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE owner = $1 AND id = $2 FOR UPDATE"
            ))
            .bind(owner.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut webhook = record(&row, self.keys.as_ref())?;
            change(&mut webhook);
            webhook.owner = owner.clone();
            webhook.id = id.to_owned();
            let r = Record::new(&webhook, self.keys.as_ref())?;
            bind_all(UPDATE, &r)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(Some(webhook))
        })
    }

    fn delete<'a>(&'a self, owner: &'a Owner, id: &'a str) -> SubscriptionFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM webhooks WHERE owner = $1 AND id = $2")
                .bind(owner.as_str())
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn subscribed<'a>(
        &'a self,
        event_type: &'a str,
        owner: Option<&'a Owner>,
    ) -> SubscriptionFuture<'a, Vec<Webhook>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM webhooks WHERE enabled \
                 AND event_types @> ARRAY[$1::text] \
                 AND ($2::text IS NULL OR owner = $2) ORDER BY owner, id"
            ))
            .bind(event_type)
            .bind(owner.map(Owner::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            records(&rows, self.keys.as_ref())
        })
    }

    fn endpoint_state(&self) -> Option<Arc<dyn EndpointState>> {
        Some(Arc::new(self.clone()))
    }
}
