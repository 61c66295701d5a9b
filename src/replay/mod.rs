//! De-duplication of webhook deliveries already processed within the replay window.
//!
//! Each scheme's timestamp window ([`ReplayWindow`](crate::scheme::ReplayWindow); the README's
//! "Replay windows" table lists the defaults) already refuses old captures. Inside the window, a captured or
//! retried request would be processed twice; a [`ReplayStore`] remembers the
//! [`Verified::replay_key`](crate::Verified::replay_key) of each delivery (derived by the
//! scheme from **signed** material only: the signed message id, or the MAC itself for formats
//! such as GitHub whose delivery id is unsigned) and lets
//! [`WebhookSignatureLayer`](crate::WebhookSignatureLayer) answer duplicates without calling
//! the handler again.
//!
//! # Keys are scoped by route and tenant
//!
//! The layer never stores the scheme's key alone: it stores `{scope}/{tenant}/{key}`, the
//! scheme's [`Verified::replay_key`](crate::Verified::replay_key) prefixed with the
//! route's name ([`WebhookSignatureLayer::replay_scope`](crate::WebhookSignatureLayer::replay_scope),
//! by default the scheme's name) and a fingerprint of the secret that matched (a keyed hash:
//! it identifies the tenant of a [`SecretSource`](crate::inbound::SecretSource) route without
//! revealing the secret; `-` when the scheme reports none). So on a multi-tenant route one tenant cannot pre-empt another's
//! message ids, and two routes sharing a store do not collide. Both parts are stable across
//! restarts and replicas. During a rotation a retry signed with the other secret is a
//! different key.
//!
//! # Semantics
//!
//! For each verified request with a replay key, the layer calls [`ReplayStore::reserve`]:
//!
//! | reservation | what the layer does |
//! |---|---|
//! | [`Reservation::Fresh`] | charges the scheme's quotas ([`Scheme::admit`](crate::scheme::Scheme::admit)), calls the handler; then [`ReplayStore::complete`] with [`Outcome::Processed`] (and the [`ReplayRecord`] a duplicate is answered from) if the handler answered `2xx`, else [`Outcome::Failed`] (the key is released, so the sender's retry is processed) |
//! | [`Reservation::InFlight`] | `409 Conflict` with `Retry-After`: the first delivery is still being handled |
//! | [`Reservation::Done`] | `200 OK` with `{"status":"duplicate"}` (or the scheme's own success response with the **original** run id, such as Valohai's) **without** calling the handler or charging a quota: a `4xx` would make senders retry or disable the endpoint |
//!
//! If the response future is dropped while the handler runs (client gone, handler panic),
//! the reservation is released as [`Outcome::Failed`].
//!
//! Keys are kept for the layer's TTL (`replay_ttl`, default 600 s: the widest default window,
//! Standard Webhooks' 300 s back plus 300 s ahead). Widen it together with the scheme's window; for schemes without a
//! timestamp (GitHub) the TTL is the de-duplication horizon.
//!
//! # Backends
//!
//! - [`MemoryReplayStore`]: bounded, per process.
//! - `SqliteReplayStore` (feature `sqlite`): one file shared by the processes of one host.
//! - `PostgresReplayStore` (feature `postgres`) and `RedisReplayStore` (feature `redis`):
//!   shared by every replica behind a load balancer.
//!
//! Every backend is atomic across concurrent callers (only one gets [`Reservation::Fresh`])
//! and forgets expired keys on its own. An error from the store makes the layer answer `503`
//! with `Retry-After` (fail closed): senders retry, nothing is processed twice.
//!
//! ```
//! use std::time::Duration;
//! use tower_webhooks::replay::{
//!     MemoryReplayStore, Outcome, ReplayRecord, ReplayStore, Reservation,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryReplayStore::new(10_000);
//! let ttl = Duration::from_secs(360);
//! let now = 1_700_000_000;
//! let record = ReplayRecord::new(uuid::Uuid::from_u128(1));
//! assert_eq!(store.reserve("msg_1", now, ttl).await.unwrap(), Reservation::Fresh);
//! assert_eq!(store.reserve("msg_1", now, ttl).await.unwrap(), Reservation::InFlight);
//! store.complete("msg_1", Outcome::Processed(record), now, ttl).await.unwrap();
//! assert_eq!(store.reserve("msg_1", now + 1, ttl).await.unwrap(), Reservation::Done(record));
//! // After the TTL the key is forgotten.
//! assert_eq!(store.reserve("msg_1", now + 400, ttl).await.unwrap(), Reservation::Fresh);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryReplayStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresReplayStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisReplayStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteReplayStore;

/// The boxed future a [`ReplayStore`] returns.
pub type ReplayFuture<T> = Pin<Box<dyn Future<Output = Result<T, ReplayError>> + Send + 'static>>;

/// What a processed delivery leaves behind for its duplicates: they are answered from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ReplayRecord {
    /// The [`Verified::run_id`](crate::Verified::run_id) the first delivery was answered
    /// with (Valohai's `{run_id}`): a duplicate gets the same one.
    pub run_id: uuid::Uuid,
}

impl ReplayRecord {
    /// A record of a delivery answered with `run_id`.
    #[must_use]
    pub const fn new(run_id: uuid::Uuid) -> Self {
        Self { run_id }
    }
}

/// The state of a replay key when a delivery arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Not seen within the TTL: it is now reserved (in flight) for this delivery.
    Fresh,
    /// Another delivery with the same key is being processed.
    InFlight,
    /// A delivery with the same key was processed successfully; what it left behind.
    Done(ReplayRecord),
}

/// How the handler answered a reserved delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `2xx`: remember the key as processed, with this record, for the TTL.
    Processed(ReplayRecord),
    /// Anything else (or no answer): release the key so a retry is processed.
    Failed,
}

/// A replay store could not answer.
#[derive(Debug)]
pub struct ReplayError(Box<dyn std::error::Error + Send + Sync>);

impl ReplayError {
    /// Wraps the backend's error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay store error: {}", self.0)
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Remembers which deliveries are in flight or done. See the [module docs](self).
///
/// `now` is the layer's clock (Unix seconds); every built-in backend keys its expiry on it
/// (Redis: the TTL is relative, so its own clock).
pub trait ReplayStore: Send + Sync + 'static {
    /// Looks `key` up and, when it is unknown or expired, reserves it as in flight for `ttl`.
    /// Must be atomic across concurrent callers (only one of them gets [`Reservation::Fresh`]).
    fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation>;

    /// Records how the handler answered a delivery reserved by [`ReplayStore::reserve`]:
    /// [`Outcome::Processed`] keeps the key as done (with its record) for `ttl`,
    /// [`Outcome::Failed`] forgets it if it is still in flight.
    fn complete(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) -> ReplayFuture<()>;
}

impl<T: ReplayStore + ?Sized> ReplayStore for Arc<T> {
    fn reserve(&self, key: &str, now: i64, ttl: Duration) -> ReplayFuture<Reservation> {
        (**self).reserve(key, now, ttl)
    }

    fn complete(&self, key: &str, outcome: Outcome, now: i64, ttl: Duration) -> ReplayFuture<()> {
        (**self).complete(key, outcome, now, ttl)
    }
}

/// The key the layer stores for a delivery: `{scope}/{tenant}/{key}`, where `scope` names the
/// route, `tenant` is 32 hex digits of HMAC-SHA256 keyed with the matched `secret` (`-` when
/// the scheme reports none) and `key` is the scheme's
/// [`Verified::replay_key`](crate::Verified::replay_key).
///
/// The fingerprint is a keyed hash of a fixed label, so it reveals nothing of the secret, yet
/// is the same in every replica and after a restart.
#[must_use]
pub(crate) fn scoped_key(scope: &str, secret: Option<&Secret>, key: &str) -> String {
    const TENANT_HEX: usize = 32;
    let mut out = String::with_capacity(scope.len() + TENANT_HEX + key.len() + 2);
    out.push_str(scope);
    out.push('/');
    match secret {
        Some(secret) => {
            let mut mac = <Hmac<Sha256>>::new_from_slice(secret.expose())
                .expect("HMAC takes keys of any length");
            mac.update(b"tower-webhooks replay scope v1");
            let digest = mac.finalize().into_bytes();
            let mut hex = [0u8; TENANT_HEX];
            hex::encode_to_slice(&digest[..TENANT_HEX / 2], &mut hex)
                .expect("the buffer is twice the bytes");
            out.push_str(std::str::from_utf8(&hex).expect("hex is ASCII"));
        }
        None => out.push('-'),
    }
    out.push('/');
    out.push_str(key);
    out
}

/// `now + ttl` in Unix seconds, saturating.
pub(crate) fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_keys_separate_routes_and_tenants_without_showing_secrets() {
        let acme = Secret::new("acme-secret");
        let globex = Secret::new("globex-secret");
        let a = scoped_key("hooks", Some(&acme), "cerebrium:m");
        assert_eq!(a, scoped_key("hooks", Some(&acme.clone()), "cerebrium:m"));
        assert_ne!(a, scoped_key("hooks", Some(&globex), "cerebrium:m"));
        assert_ne!(a, scoped_key("other", Some(&acme), "cerebrium:m"));
        assert!(!a.contains("acme"), "{a}");
        assert_eq!(a.len(), "hooks/".len() + 32 + "/cerebrium:m".len());
        assert_eq!(scoped_key("hooks", None, "k"), "hooks/-/k");
    }
}
