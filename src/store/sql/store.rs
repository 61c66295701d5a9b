//! The [`DeliveryStore`](crate::store::DeliveryStore) implementation the SQLite and
//! PostgreSQL stores share ([`sql_delivery_store!`]).

/// Implements [`DeliveryStore`](crate::store::DeliveryStore) for a SQL store `$store` whose
/// `inner` carries its `signers` and these operations on bind values (each backend writes how
/// they reach its database: SQLite through its one writer, PostgreSQL through its pool with
/// retries):
///
/// | operation | arguments | result |
/// | --- | --- | --- |
/// | `insert` | [`DeliveryRow`](super::DeliveryRow) | `()` |
/// | `claim` | now, lease expiry (ms), limit | the claimed rows |
/// | `record` | [`RecordRow`](super::RecordRow) | `()` |
/// | `update_leased` (`release`, `renew`) | [`LeasedUpdate`](super::LeasedUpdate) | `()` |
/// | `update_pending` | [`PendingRow`](super::PendingRow) | `()` |
/// | `resend` | id, encoded signing | `()` |
/// | `resend_matching` | [`Filter`](super::Filter), encoded signing | how many |
/// | `fail_matching` | [`FailRow`](super::FailRow) | the ids |
/// | `purge` | final state, before (ms), limit | how many |
/// | `next_due`, `get`, `list`, `stats`, `work_notified` | as the trait | as the trait |
///
/// What this writes once is the part both backends share: turning the trait's values into
/// bind values and the rows back into claims and leases. A macro, not a generic impl, so each
/// store keeps its own `impl DeliveryStore` in the documentation.
macro_rules! sql_delivery_store {
    ($store:ty) => {
        impl $crate::store::DeliveryStore for $store {
            fn is_durable(&self) -> bool {
                true
            }

            fn enqueue(
                &self,
                delivery: $crate::delivery::model::Delivery,
            ) -> $crate::store::StoreFuture<'_, ()> {
                Box::pin(async move {
                    let row = $crate::store::sql::DeliveryRow::new(&delivery, &self.inner.signers)?;
                    self.inner.insert(row).await
                })
            }

            fn enqueue_claimed(
                &self,
                delivery: $crate::delivery::model::Delivery,
                until: std::time::SystemTime,
            ) -> $crate::store::StoreFuture<'_, Option<$crate::delivery::model::Claim>> {
                Box::pin(async move {
                    let (row, claim) = $crate::store::sql::claimed_on_insert(
                        delivery,
                        until,
                        &self.inner.signers,
                    )?;
                    self.inner.insert(row).await?;
                    Ok(Some(claim))
                })
            }

            fn claim_due(
                &self,
                now: std::time::SystemTime,
                limit: usize,
                lease_for: std::time::Duration,
            ) -> $crate::store::StoreFuture<'_, Vec<$crate::delivery::model::Claim>> {
                use $crate::time::unix_millis;
                Box::pin(async move {
                    let (now, until) = (unix_millis(now), unix_millis(now + lease_for));
                    let limit = $crate::store::sql::count(limit);
                    let rows = self.inner.claim(now, until, limit).await?;
                    $crate::store::sql::claims(&rows, &self.inner.signers)
                })
            }

            fn record_attempt<'a>(
                &'a self,
                record: $crate::store::AttemptRecord<'a>,
            ) -> $crate::store::StoreFuture<'a, ()> {
                let $crate::store::AttemptRecord {
                    id,
                    lease,
                    attempt,
                    next,
                } = &record;
                let row = $crate::store::sql::RecordRow::new(id, lease, attempt, next);
                Box::pin(self.inner.record(row))
            }

            fn release<'a>(
                &'a self,
                id: &'a str,
                lease: $crate::delivery::model::Lease,
            ) -> $crate::store::StoreFuture<'a, ()> {
                let update = $crate::store::sql::LeasedUpdate::release(id, &lease);
                Box::pin(self.inner.update_leased(update))
            }

            fn next_due(&self) -> $crate::store::StoreFuture<'_, Option<std::time::SystemTime>> {
                Box::pin(self.inner.next_due())
            }

            fn get<'a>(
                &'a self,
                id: &'a str,
            ) -> $crate::store::StoreFuture<'a, Option<$crate::delivery::model::Conversation>> {
                Box::pin(self.inner.get(id))
            }

            fn list<'a>(
                &'a self,
                query: &'a $crate::delivery::model::ConversationQuery,
            ) -> $crate::store::StoreFuture<'a, Vec<$crate::delivery::model::Conversation>> {
                Box::pin(self.inner.list(query))
            }

            fn stats(&self) -> $crate::store::StoreFuture<'_, $crate::store::StoreStats> {
                Box::pin(self.inner.stats())
            }

            fn renew<'a>(
                &'a self,
                id: &'a str,
                lease: $crate::delivery::model::Lease,
                until: std::time::SystemTime,
            ) -> $crate::store::StoreFuture<'a, $crate::delivery::model::Lease> {
                let update = $crate::store::sql::LeasedUpdate::renew(id, &lease, until);
                Box::pin(async move {
                    self.inner.update_leased(update).await?;
                    Ok($crate::delivery::model::Lease {
                        token: lease.token,
                        until,
                    })
                })
            }

            fn update_pending<'a>(
                &'a self,
                update: $crate::store::PendingUpdate<'a>,
            ) -> $crate::store::StoreFuture<'a, ()> {
                let row = $crate::store::sql::PendingRow::new(update);
                Box::pin(self.inner.update_pending(row))
            }

            fn resend<'a>(
                &'a self,
                id: &'a str,
                signing: Option<$crate::delivery::model::SigningSpec>,
            ) -> $crate::store::StoreFuture<'a, ()> {
                Box::pin(async move {
                    let signing =
                        $crate::store::sql::encode_optional(signing, &self.inner.signers)?;
                    self.inner.resend(id.to_owned(), signing).await
                })
            }

            fn resend_matching<'a>(
                &'a self,
                query: &'a $crate::delivery::model::ConversationQuery,
                signing: Option<$crate::delivery::model::SigningSpec>,
            ) -> $crate::store::StoreFuture<'a, usize> {
                Box::pin(async move {
                    let filter = $crate::store::sql::Filter::resend(query)?;
                    let signing =
                        $crate::store::sql::encode_optional(signing, &self.inner.signers)?;
                    self.inner.resend_matching(filter, signing).await
                })
            }

            fn fail_queued<'a>(
                &'a self,
                request: $crate::store::FailRequest<'a>,
            ) -> $crate::store::StoreFuture<'a, Vec<String>> {
                let row = $crate::store::sql::FailRow::new(&request);
                Box::pin(self.inner.fail_matching(row))
            }

            fn purge(
                &self,
                request: $crate::store::PurgeRequest,
            ) -> $crate::store::StoreFuture<'_, usize> {
                let $crate::store::PurgeRequest {
                    state,
                    before,
                    limit,
                } = request;
                if !state.is_final() {
                    return Box::pin(std::future::ready(Ok(0)));
                }
                let before = $crate::time::unix_millis(before);
                let limit = $crate::store::sql::count(limit);
                Box::pin(self.inner.purge(state.as_str(), before, limit))
            }

            fn work_notified(
                &self,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
                Box::pin(self.inner.work_notified())
            }
        }
    };
}

pub(crate) use sql_delivery_store;
