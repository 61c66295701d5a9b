//! The transactional outbox (PostgreSQL): [`WebhookRegistry::publish_in_transaction`]
//! writes an event's deliveries through the application's own transaction.

use serde::Serialize;

use super::model::Owner;
use super::publish::{PublishError, PublishReport};
use super::WebhookRegistry;

impl WebhookRegistry {
    /// [`publish`](Self::publish) to `owner`'s webhooks through the application's own
    /// PostgreSQL transaction: the **transactional outbox**. The event is recorded if and only if the application's
    /// change commits.
    ///
    /// Fans out exactly as `publish` (same body, signing, headers, keys, rate limits), but
    /// writes every delivery row through `conn` — pass `&mut tx` for a
    /// `sqlx::Transaction<'_, Postgres>` — into the tables of the registry's
    /// [outbox](super::RegistryBuilder::outbox) store. The `NOTIFY` that wakes the workers is part
    /// of the transaction, so nothing is sent before the commit; after a rollback there is no
    /// delivery, no conversation, and nothing is sent. Once committed, the deliveries are
    /// ordinary rows of the engine's queue (retries, conversations, resend).
    ///
    /// The webhooks are read from the [subscription store](super::RegistryBuilder::subscriptions)
    /// (not through `conn`). An empty report (no subscribed webhook) writes nothing.
    ///
    /// ```no_run
    /// use tower_webhooks::delivery::EngineBuilder;
    /// use tower_webhooks::registry::{EventType, WebhookRegistry};
    /// use tower_webhooks::store::PostgresStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PostgresStore::connect("postgres://app@db.internal/app").await?;
    /// let registry = WebhookRegistry::builder()
    ///     .engine(EngineBuilder::new().store(store.clone()))
    ///     .outbox(store.clone())
    ///     .event_type(EventType::new("run.status", "A run changed state."))
    ///     .build();
    ///
    /// let mut tx = store.pool().begin().await?;
    /// sqlx::query("UPDATE runs SET status = 'succeeded' WHERE id = $1")
    ///     .bind("run-1")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let status = serde_json::json!({"run_id": "run-1", "status": "succeeded"});
    /// registry.publish_in_transaction(&mut tx, &"acme".into(), "run.status", &status).await?;
    /// tx.commit().await?; // the deliveries exist (and go out) from here on
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PublishError::NoOutbox`] without an outbox store, [`PublishError::Store`] when the
    /// rows could not be written (PostgreSQL has then aborted the transaction: roll back),
    /// and as [`publish`](Self::publish). Nothing is reported as rejected: the engine's
    /// capacity does not apply (see [`PostgresStore::enqueue_in_transaction`](crate::store::PostgresStore::enqueue_in_transaction)).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn publish_in_transaction<T>(
        &self,
        conn: &mut sqlx::PgConnection,
        owner: &Owner,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_in_transaction_inner(conn, Some(owner), event_type, payload)
            .await
    }

    /// [`publish_in_transaction`](Self::publish_in_transaction) to the subscribed webhooks of
    /// every owner (as [`broadcast`](Self::broadcast)).
    ///
    /// # Errors
    ///
    /// As [`publish_in_transaction`](Self::publish_in_transaction).
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn broadcast_in_transaction<T>(
        &self,
        conn: &mut sqlx::PgConnection,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        self.publish_in_transaction_inner(conn, None, event_type, payload)
            .await
    }

    #[cfg(feature = "postgres")]
    async fn publish_in_transaction_inner<T>(
        &self,
        conn: &mut sqlx::PgConnection,
        owner: Option<&Owner>,
        event_type: &str,
        payload: &T,
    ) -> Result<PublishReport, PublishError>
    where
        T: Serialize + ?Sized,
    {
        let outbox = self.inner.outbox.as_ref().ok_or(PublishError::NoOutbox)?;
        let now = self.now();
        let (webhooks, event_id, body) = self.prepare(owner, event_type, payload, now).await?;
        let mut deliveries = Vec::with_capacity(webhooks.len());
        let mut published = Vec::with_capacity(webhooks.len());
        for webhook in &webhooks {
            let (delivery, one) = self.delivery(webhook, event_type, body.clone(), now).await;
            deliveries.push(delivery);
            published.push(one);
        }
        outbox
            .enqueue_in_transaction(conn, &deliveries)
            .await
            .map_err(PublishError::Store)?;
        // The workers must be running to hear the commit's NOTIFY.
        self.inner.engine.start();
        Ok(PublishReport {
            event_id,
            deliveries: published,
            rejected: Vec::new(),
        })
    }
}
