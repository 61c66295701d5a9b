//! [`RedisReplayStore`]: replay records in Redis, with native expiry (feature `redis`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use super::{Outcome, ReplayError, ReplayFuture, ReplayRecord, ReplayStore, Reservation};

const IN_FLIGHT: &str = "inflight";
const DONE_PREFIX: &str = "done:";

/// `SET NX PX`, and the existing value when the key was taken: one round trip, atomic.
const RESERVE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return ''
end
return redis.call('GET', KEYS[1]) or ''
";

/// Deletes the key only while it is still in flight (never a processed record).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`ReplayStore`] in Redis: every replica connected to one Redis shares de-duplication.
///
/// A reservation is `SET key inflight NX PX ttl` (in a script that reads the existing value
/// when the key is taken); a processed delivery is `SET key done:<run id> PX ttl`; a failed one
/// is deleted only while still in flight (a compare-and-delete script). Redis expires every key
/// on its own. Keys carry a prefix (`tower-webhooks:replay:` by default). Cloning shares the
/// connection.
///
/// ```no_run
/// use tower_webhooks::replay::RedisReplayStore;
///
/// # async fn run() -> Result<(), tower_webhooks::replay::ReplayError> {
/// let store = RedisReplayStore::connect("redis://127.0.0.1:6379").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisReplayStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<(Script, Script)>,
}

impl fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// Connects to `url` (`redis://host:port/db`, no TLS); the connection reconnects by itself.
    ///
    /// # Errors
    ///
    /// A bad URL or a server that cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, ReplayError> {
        let client = redis::Client::open(url).map_err(ReplayError::new)?;
        let connection = client
            .get_connection_manager()
            .await
            .map_err(ReplayError::new)?;
        Ok(Self {
            connection,
            prefix: Arc::from("tower-webhooks:replay:"),
            scripts: Arc::new((Script::new(RESERVE), Script::new(RELEASE))),
        })
    }

    /// Puts every key under `prefix` instead of `tower-webhooks:replay:`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, key: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + key.len());
        out.push_str(&self.prefix);
        out.push_str(key);
        out
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn existing(value: &str) -> Result<Reservation, ReplayError> {
    if value.is_empty() {
        return Ok(Reservation::Fresh);
    }
    if value == IN_FLIGHT {
        return Ok(Reservation::InFlight);
    }
    let run_id = value
        .strip_prefix(DONE_PREFIX)
        .ok_or_else(|| ReplayError::new("unknown replay record value"))?;
    let run_id = uuid::Uuid::parse_str(run_id).map_err(ReplayError::new)?;
    Ok(Reservation::Done(ReplayRecord::new(run_id)))
}

impl ReplayStore for RedisReplayStore {
    fn reserve(&self, key: &str, _now: i64, ttl: Duration) -> ReplayFuture<Reservation> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        let scripts = Arc::clone(&self.scripts);
        Box::pin(async move {
            // The script answers `''` when it set the key; an expired key is gone already.
            let value: String = scripts
                .0
                .key(&key)
                .arg(IN_FLIGHT)
                .arg(millis(ttl))
                .invoke_async(&mut connection)
                .await
                .map_err(ReplayError::new)?;
            existing(&value)
        })
    }

    fn complete(&self, key: &str, outcome: Outcome, _now: i64, ttl: Duration) -> ReplayFuture<()> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        let scripts = Arc::clone(&self.scripts);
        Box::pin(async move {
            match outcome {
                Outcome::Processed(record) => {
                    let value = format!("{DONE_PREFIX}{}", record.run_id);
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(millis(ttl))
                        .query_async::<()>(&mut connection)
                        .await
                        .map_err(ReplayError::new)?;
                }
                Outcome::Failed => {
                    scripts
                        .1
                        .key(&key)
                        .arg(IN_FLIGHT)
                        .invoke_async::<i64>(&mut connection)
                        .await
                        .map_err(ReplayError::new)?;
                }
            }
            Ok(())
        })
    }
}
