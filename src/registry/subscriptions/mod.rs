//! [`SubscriptionStore`]: where webhooks are kept, in memory ([`MemorySubscriptions`]), in a
//! SQLite file (`SqliteSubscriptions`, feature `sqlite`) or in PostgreSQL
//! (`PostgresSubscriptions`, feature `postgres`).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::model::{Endpoint as Webhook, Owner};

pub(crate) mod endpoint_state;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

pub use endpoint_state::{EndpointFailure, EndpointState, EndpointTurn, MemoryEndpointState};

#[cfg(feature = "postgres")]
pub use sql::PostgresSubscriptions;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlSubscriptions;
#[cfg(feature = "sqlite")]
pub use sql::SqliteSubscriptions;

/// The future every [`SubscriptionStore`] method returns.
pub type SubscriptionFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SubscriptionError>> + Send + 'a>>;

/// A change applied to one stored webhook by [`SubscriptionStore::modify`].
pub type Modification<'a> = Box<dyn FnOnce(&mut Webhook) + Send + 'a>;

/// A subscription store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    /// The owner already has a webhook with this id.
    #[error("a webhook `{0}` already exists")]
    Duplicate(String),
    /// The backend failed.
    #[error("subscription store error: {0}")]
    Backend(String),
}

/// A webhook's key in the [`SubscriptionStore`] (and the [`EndpointState`]): its owner and
/// its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookKey<'a> {
    /// The webhook's owner.
    pub owner: &'a Owner,
    /// The webhook's id.
    pub id: &'a str,
}

impl<'a> WebhookKey<'a> {
    /// `owner`'s webhook `id`.
    pub fn new(owner: &'a Owner, id: &'a str) -> Self {
        Self { owner, id }
    }

    /// The key as the in-memory maps hold it.
    pub(crate) fn owned(self) -> (Owner, String) {
        (self.owner.clone(), self.id.to_owned())
    }
}

/// A page of an owner's webhooks, for [`SubscriptionStore::list`]: at most `limit` of them
/// ordered by id, those after `after` only (keyset pagination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookPage<'a> {
    /// Whose webhooks.
    pub owner: &'a Owner,
    /// The last id of the previous page; `None` for the first.
    pub after: Option<&'a str>,
    /// The most returned.
    pub limit: usize,
}

/// Where the registry keeps its [`Webhook`]s. Every read and write is scoped by [`Owner`],
/// and `(owner, id)` is the key.
///
/// Six calls, each one statement or one short transaction in SQL:
///
/// | call | SQL sketch |
/// |---|---|
/// | [`insert`](Self::insert) | `INSERT` (unique `(owner, id)` → [`SubscriptionError::Duplicate`]) |
/// | [`get`](Self::get) | `SELECT … WHERE owner = $1 AND id = $2` |
/// | [`list`](Self::list) | `SELECT … WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3` (keyset pagination) |
/// | [`modify`](Self::modify) | `SELECT … FOR UPDATE`, apply the closure, `UPDATE`, in one transaction |
/// | [`delete`](Self::delete) | `DELETE … WHERE owner = $1 AND id = $2` |
/// | [`subscribed`](Self::subscribed) | `SELECT … WHERE enabled AND $1 = ANY(event_types) [AND owner = $2]` |
///
/// A [`Webhook`] holds its secrets: a durable implementation stores them like any other
/// credential (encrypted at rest where the database allows). The built-in durable stores,
/// `SqliteSubscriptions` and `PostgresSubscriptions`, keep every field of the [`Webhook`]
/// (secrets with their grace expiry, custom headers, enabled state, rate limit, timestamps),
/// so a restart loses nothing; their database is therefore as sensitive as the secrets.
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Stores a new webhook.
    fn insert(&self, webhook: Webhook) -> SubscriptionFuture<'_, ()>;

    /// One webhook.
    fn get<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, Option<Webhook>>;

    /// One page of an owner's webhooks, ordered by id.
    fn list<'a>(&'a self, page: WebhookPage<'a>) -> SubscriptionFuture<'a, Vec<Webhook>>;

    /// Applies `change` to one webhook atomically and returns the result (`None` when there is
    /// no such webhook). The change must not alter the owner or the id.
    fn modify<'a>(
        &'a self,
        webhook: WebhookKey<'a>,
        change: Modification<'a>,
    ) -> SubscriptionFuture<'a, Option<Webhook>>;

    /// Removes one webhook; whether it existed.
    fn delete<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, bool>;

    /// The **enabled** webhooks subscribed to `event_type`, of `owner` only when given.
    fn subscribed<'a>(
        &'a self,
        event_type: &'a str,
        owner: Option<&'a Owner>,
    ) -> SubscriptionFuture<'a, Vec<Webhook>>;

    /// Where the registry keeps its per-webhook counters (failures for the health rule, rate
    /// limit buckets) when this store can share them between replicas; `None` (the default)
    /// leaves them in the registry's process memory ([`MemoryEndpointState`]). The SQL stores
    /// return their own tables.
    fn endpoint_state(&self) -> Option<Arc<dyn EndpointState>> {
        None
    }
}

/// The in-memory [`SubscriptionStore`]: a sorted map behind a lock. Lost on restart.
#[derive(Default)]
pub struct MemorySubscriptions {
    webhooks: RwLock<BTreeMap<(Owner, String), Webhook>>,
}

impl fmt::Debug for MemorySubscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySubscriptions")
            .field("webhooks", &self.read().len())
            .finish()
    }
}

impl MemorySubscriptions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<(Owner, String), Webhook>> {
        self.webhooks.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<(Owner, String), Webhook>> {
        self.webhooks.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T, SubscriptionError>) -> SubscriptionFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl SubscriptionStore for MemorySubscriptions {
    fn insert(&self, webhook: Webhook) -> SubscriptionFuture<'_, ()> {
        let mut map = self.write();
        let key = (webhook.owner.clone(), webhook.id.clone());
        if map.contains_key(&key) {
            return ready(Err(SubscriptionError::Duplicate(webhook.id)));
        }
        map.insert(key, webhook);
        ready(Ok(()))
    }

    fn get<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, Option<Webhook>> {
        let found = self.read().get(&webhook.owned()).cloned();
        ready(Ok(found))
    }

    fn list<'a>(&'a self, page: WebhookPage<'a>) -> SubscriptionFuture<'a, Vec<Webhook>> {
        use std::ops::Bound;
        let WebhookPage {
            owner,
            after,
            limit,
        } = page;
        let map = self.read();
        let start = match after {
            Some(after) => Bound::Excluded((owner.clone(), after.to_owned())),
            None => Bound::Included((owner.clone(), String::new())),
        };
        let page = map
            .range((start, Bound::Unbounded))
            .take_while(|((o, _), _)| o == owner)
            .take(limit)
            .map(|(_, webhook)| webhook.clone())
            .collect();
        ready(Ok(page))
    }

    fn modify<'a>(
        &'a self,
        webhook: WebhookKey<'a>,
        change: Modification<'a>,
    ) -> SubscriptionFuture<'a, Option<Webhook>> {
        let mut map = self.write();
        let updated = map.get_mut(&webhook.owned()).map(|stored| {
            change(stored);
            stored.owner = webhook.owner.clone();
            stored.id = webhook.id.to_owned();
            stored.clone()
        });
        ready(Ok(updated))
    }

    fn delete<'a>(&'a self, webhook: WebhookKey<'a>) -> SubscriptionFuture<'a, bool> {
        let removed = self.write().remove(&webhook.owned()).is_some();
        ready(Ok(removed))
    }

    fn subscribed<'a>(
        &'a self,
        event_type: &'a str,
        owner: Option<&'a Owner>,
    ) -> SubscriptionFuture<'a, Vec<Webhook>> {
        let map = self.read();
        let matches = |webhook: &&Webhook| webhook.enabled && webhook.subscribes_to(event_type);
        let found = match owner {
            Some(owner) => map
                .range((owner.clone(), String::new())..)
                .take_while(|((o, _), _)| o == owner)
                .map(|(_, w)| w)
                .filter(matches)
                .cloned()
                .collect(),
            None => map.values().filter(matches).cloned().collect(),
        };
        ready(Ok(found))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::registry::SigningScheme;

    fn hook(owner: &str, id: &str, types: &[&str]) -> Webhook {
        Webhook::new(
            Owner::new(owner),
            id,
            "https://example.com/hook",
            types.iter().map(|t| (*t).to_owned()).collect(),
            SigningScheme::Nextmv,
            SystemTime::now(),
        )
    }

    #[tokio::test]
    async fn scoped_by_owner() {
        let store = MemorySubscriptions::new();
        store.insert(hook("a", "x", &["run.status"])).await.unwrap();
        store.insert(hook("b", "x", &["run.status"])).await.unwrap();
        store.insert(hook("a", "y", &["other"])).await.unwrap();
        assert_eq!(
            store.insert(hook("a", "x", &[])).await,
            Err(SubscriptionError::Duplicate("x".into()))
        );
        let a = Owner::new("a");
        let page = store
            .list(WebhookPage {
                owner: &a,
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
            ["x", "y"]
        );
        let page = store
            .list(WebhookPage {
                owner: &a,
                after: Some("x"),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(store.subscribed("run.status", None).await.unwrap().len(), 2);
        let subscribed_of_a = || async { store.subscribed("run.status", Some(&a)).await.unwrap() };
        assert_eq!(subscribed_of_a().await.len(), 1);
        let changed = store
            .modify(WebhookKey::new(&a, "x"), Box::new(|w| w.enabled = false))
            .await
            .unwrap()
            .unwrap();
        assert!(!changed.enabled);
        assert!(subscribed_of_a().await.is_empty());
        assert!(store.delete(WebhookKey::new(&a, "x")).await.unwrap());
        assert!(!store.delete(WebhookKey::new(&a, "x")).await.unwrap());
        assert!(store
            .get(WebhookKey::new(&Owner::new("b"), "x"))
            .await
            .unwrap()
            .is_some());
    }
}
