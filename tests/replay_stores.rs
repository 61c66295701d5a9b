//! One contract for every `ReplayStore` backend: memory and SQLite always, PostgreSQL and
//! Redis when their URLs are set (`--include-ignored`).

use std::time::Duration;

use tower_webhooks::replay::{MemoryReplayStore, Outcome, ReplayRecord, ReplayStore, Reservation};

const NOW: i64 = 1_731_381_205;
const TTL: Duration = Duration::from_secs(60);

/// Whether the backend expires keys on its own clock (Redis) rather than the `now` it is
/// given: the expiry check then waits for the TTL to pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expiry {
    GivenClock,
    WallClock,
}

fn record(n: u128) -> ReplayRecord {
    ReplayRecord::new(uuid::Uuid::from_u128(n))
}

/// Keys unique to one run, so runs sharing a server never meet.
fn keys() -> impl FnMut(&str) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    move |name| format!("contract/{run}/{name}")
}

async fn contract<S: ReplayStore + Clone>(store: S, expiry: Expiry) {
    let mut key = keys();
    let reserve = |store: &S, key: &str, now: i64, ttl: Duration| {
        let future = store.reserve(key, now, ttl);
        async move { future.await.unwrap() }
    };

    // Fresh, then in flight, then done with its record.
    let a = key("a");
    assert_eq!(reserve(&store, &a, NOW, TTL).await, Reservation::Fresh);
    assert_eq!(reserve(&store, &a, NOW, TTL).await, Reservation::InFlight);
    store
        .complete(&a, Outcome::Processed(record(42)), NOW, TTL)
        .await
        .unwrap();
    assert_eq!(
        reserve(&store, &a, NOW + 1, TTL).await,
        Reservation::Done(record(42))
    );
    // A late failure report never forgets a processed key.
    store
        .complete(&a, Outcome::Failed, NOW + 1, TTL)
        .await
        .unwrap();
    assert_eq!(
        reserve(&store, &a, NOW + 2, TTL).await,
        Reservation::Done(record(42))
    );

    // A failure releases the key: the retry is fresh.
    let b = key("b");
    assert_eq!(reserve(&store, &b, NOW, TTL).await, Reservation::Fresh);
    store.complete(&b, Outcome::Failed, NOW, TTL).await.unwrap();
    assert_eq!(reserve(&store, &b, NOW, TTL).await, Reservation::Fresh);
    // Releasing an unknown key is harmless.
    store
        .complete(&key("never"), Outcome::Failed, NOW, TTL)
        .await
        .unwrap();

    // Records expire after their TTL, in flight or done.
    let short = Duration::from_secs(1);
    let (c, d) = (key("c"), key("d"));
    assert_eq!(reserve(&store, &c, NOW, short).await, Reservation::Fresh);
    assert_eq!(reserve(&store, &d, NOW, short).await, Reservation::Fresh);
    store
        .complete(&d, Outcome::Processed(record(7)), NOW, short)
        .await
        .unwrap();
    if expiry == Expiry::WallClock {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    assert_eq!(reserve(&store, &c, NOW + 2, TTL).await, Reservation::Fresh);
    assert_eq!(reserve(&store, &d, NOW + 2, TTL).await, Reservation::Fresh);

    // Concurrent reservations of one key: exactly one is fresh.
    let e = key("e");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let e = e.clone();
            tokio::spawn(async move { store.reserve(&e, NOW, TTL).await.unwrap() })
        })
        .collect();
    let mut fresh = 0;
    for task in tasks {
        match task.await.unwrap() {
            Reservation::Fresh => fresh += 1,
            Reservation::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fresh, 1);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(MemoryReplayStore::new(1000), Expiry::GivenClock).await;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use tower_webhooks::replay::SqliteReplayStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteReplayStore::connect(dir.path().join("replay.db"))
            .await
            .unwrap();
        contract(store, Expiry::GivenClock).await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.db");
        let store = SqliteReplayStore::connect(&path).await.unwrap();
        store.reserve("k", NOW, TTL).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[tokio::test]
    async fn sqlite_store_is_shared_by_two_handles_and_purges_expired_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.db");
        let one = SqliteReplayStore::connect(&path).await.unwrap();
        let two = SqliteReplayStore::connect(&path).await.unwrap();
        assert_eq!(
            one.reserve("k", NOW, TTL).await.unwrap(),
            Reservation::Fresh
        );
        one.complete("k", Outcome::Processed(record(3)), NOW, TTL)
            .await
            .unwrap();
        assert_eq!(
            two.reserve("k", NOW, TTL).await.unwrap(),
            Reservation::Done(record(3))
        );
        assert_eq!(two.purge_expired(NOW).await.unwrap(), 0);
        assert_eq!(two.purge_expired(NOW + 61).await.unwrap(), 1);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use sqlx::Connection;
    use tower_webhooks::replay::PostgresReplayStore;

    fn url() -> String {
        std::env::var("TOWER_WEBHOOKS_POSTGRES_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .expect("this test needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL")
    }

    async fn drop_schema(url: &str, schema: &str) {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    async fn postgres_store_keeps_the_contract() {
        let url = url();
        let schema = format!(
            "tw_replay_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let store = PostgresReplayStore::connect(&url, Some(&schema))
            .await
            .unwrap();
        contract(store.clone(), Expiry::GivenClock).await;
        // A second replica on the same schema sees the first one's records.
        let other = PostgresReplayStore::connect(&url, Some(&schema))
            .await
            .unwrap();
        store.reserve("shared", NOW, TTL).await.unwrap();
        store
            .complete("shared", Outcome::Processed(record(9)), NOW, TTL)
            .await
            .unwrap();
        assert_eq!(
            other.reserve("shared", NOW, TTL).await.unwrap(),
            Reservation::Done(record(9))
        );
        assert!(other.purge_expired(NOW + 3600).await.unwrap() >= 1);
        drop_schema(&url, &schema).await;
    }
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use tower_webhooks::replay::RedisReplayStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Redis: set TOWER_WEBHOOKS_REDIS_URL"]
    async fn redis_store_keeps_the_contract() {
        let url = std::env::var("TOWER_WEBHOOKS_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .expect("this test needs Redis: set TOWER_WEBHOOKS_REDIS_URL");
        let prefix = format!("tw-test:{}:", uuid::Uuid::new_v4().simple());
        let store = RedisReplayStore::connect(&url)
            .await
            .unwrap()
            .prefix(prefix);
        // Every key of the run expires within the longest TTL used (60 s).
        contract(store, Expiry::WallClock).await;
    }
}
