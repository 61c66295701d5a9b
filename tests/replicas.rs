//! One truth across replicas: registries (and gateway processes) sharing one database count
//! every endpoint failure once, disable a webhook once for all of them, and take rate-limit
//! turns from one bucket.
//!
//! - the [`EndpointState`] contract, run against memory, SQLite and PostgreSQL;
//! - two `WebhookRegistry` instances on one SQLite file, then on one PostgreSQL schema: failures
//!   observed half at each reach the health rule's threshold once; a limit of N yields N
//!   immediate deliveries across both;
//! - two `examples/gateway` processes on one PostgreSQL schema (`[registry] store` and
//!   `[inbound] replay_store` both `postgres://…`): a limit of N is N across both, a webhook
//!   disabled at one is disabled at the other, and a webhook verified at one is a duplicate at
//!   the other.
//!
//! PostgreSQL tests are ignored unless run with `--include-ignored` and
//! `TOWER_WEBHOOKS_POSTGRES_URL` (one schema per test, dropped after).

#[path = "../examples/gateway/run_status.rs"]
mod run_status;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_webhooks::registry::{
    EndpointFailure, EndpointRateLimit, EndpointState, EndpointTurn, MemoryEndpointState, Owner,
    WebhookKey,
};

/// The PostgreSQL URL of the ignored tests; they fail loudly without it.
#[cfg(feature = "postgres")]
fn postgres_url() -> String {
    match std::env::var("TOWER_WEBHOOKS_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "this test needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL \
             (e.g. postgres://postgres@127.0.0.1:5432/test)"
        ),
    }
}

/// Polls `check` until it holds; panics with `what` after 20 s.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The EndpointState contract

/// A time with whole milliseconds (what the SQL stores keep for failures).
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// One failure of `owner`'s webhook `hook` at `ms`, under a rule of 3 within the hour.
async fn fail(state: &dyn EndpointState, owner: &str, ms: u64) -> u32 {
    let owner = Owner::new(owner);
    let failure = EndpointFailure {
        webhook: WebhookKey::new(&owner, "hook"),
        at: at(ms),
        within: Duration::from_secs(3600),
        keep: 3,
    };
    state.record_failure(failure).await.unwrap()
}

/// One turn of `owner`'s webhook `id` under 10 a second, burst 2.
async fn turn(
    state: &dyn EndpointState,
    owner: &str,
    id: &str,
    now: SystemTime,
) -> Option<SystemTime> {
    let owner = Owner::new(owner);
    let turn = EndpointTurn {
        webhook: WebhookKey::new(&owner, id),
        limit: EndpointRateLimit::per_second(10).with_burst(2),
        now,
    };
    state.take_turn(turn).await.unwrap()
}

async fn endpoint_state_contract(state: &dyn EndpointState) {
    let acme = Owner::new("acme");
    let t0 = 1_700_000_000_000;
    assert_eq!(fail(state, "acme", t0).await, 1);
    assert_eq!(fail(state, "acme", t0 + 10_000).await, 2);
    assert_eq!(
        fail(state, "globex", t0 + 10_000).await,
        1,
        "scoped by owner"
    );
    // The first failure falls out of the hour.
    assert_eq!(fail(state, "acme", t0 + 3_600_001).await, 2);
    assert_eq!(fail(state, "acme", t0 + 3_600_002).await, 3);
    // Never more than the threshold kept.
    assert_eq!(fail(state, "acme", t0 + 3_600_003).await, 3);
    state
        .forget_failures(WebhookKey::new(&acme, "hook"))
        .await
        .unwrap();
    assert_eq!(fail(state, "acme", t0 + 3_600_004).await, 1);
    assert_eq!(
        fail(state, "globex", t0 + 10_001).await,
        2,
        "the other owner's count stays"
    );

    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let ms = Duration::from_millis;
    assert_eq!(turn(state, "acme", "paced", now).await, None);
    assert_eq!(turn(state, "acme", "paced", now).await, None);
    assert_eq!(turn(state, "acme", "paced", now).await, Some(now + ms(100)));
    assert_eq!(turn(state, "acme", "paced", now).await, Some(now + ms(200)));
    assert_eq!(turn(state, "acme", "other", now).await, None);
    assert_eq!(turn(state, "globex", "paced", now).await, None);
    // A quiet second refills the bucket.
    let later = now + Duration::from_secs(1);
    assert_eq!(turn(state, "acme", "paced", later).await, None);
    assert_eq!(turn(state, "acme", "paced", later).await, None);
    assert!(turn(state, "acme", "paced", later).await.is_some());

    // A deleted webhook starts afresh.
    state.forget(WebhookKey::new(&acme, "paced")).await.unwrap();
    state.forget(WebhookKey::new(&acme, "hook")).await.unwrap();
    assert_eq!(turn(state, "acme", "paced", later).await, None);
    assert_eq!(fail(state, "acme", t0 + 3_600_005).await, 1);
}

#[tokio::test]
async fn memory_endpoint_state_contract() {
    endpoint_state_contract(&MemoryEndpointState::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_endpoint_state_contract() {
    use tower_webhooks::registry::{SqliteSubscriptions, SubscriptionStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteSubscriptions::connect(dir.path().join("state.db"))
        .await
        .unwrap();
    let state = store.endpoint_state().expect("SQLite keeps the counts");
    endpoint_state_contract(state.as_ref()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
async fn postgres_endpoint_state_contract() {
    use tower_webhooks::registry::{PostgresSubscriptions, SubscriptionStore};
    use tower_webhooks::store::PostgresStore;
    let url = postgres_url();
    let schema = support::unique_schema("state");
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let state = PostgresSubscriptions::new(&store)
        .endpoint_state()
        .expect("PostgreSQL keeps the counts");
    endpoint_state_contract(state.as_ref()).await;
    drop((state, store));
    support::drop_schema(&url, &schema).await;
}

// ---------------------------------------------------------------------------------------------
// Two registries on one database

/// Registries on one SQLite file or PostgreSQL schema.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod two_registries {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::run_status::{RunState, RunStatus};
    use tower_webhooks::delivery::{EngineBuilder, Policy, SsrfGuard};
    use tower_webhooks::registry::{
        DisabledNotice, Endpoint, HealthRule, SigningScheme, SubscriptionStore, WebhookRegistry,
    };

    use super::support::Receiver;
    use super::*;

    /// One replica: a registry on the shared subscription store, with its own (in-memory)
    /// delivery engine, so the deliveries it publishes are attempted, and observed, by it.
    struct Replica {
        registry: WebhookRegistry,
        finished: Arc<AtomicUsize>,
        notices: Arc<Mutex<Vec<DisabledNotice>>>,
    }

    fn replica(subscriptions: Arc<dyn SubscriptionStore>, rule: HealthRule) -> Replica {
        let finished = Arc::new(AtomicUsize::new(0));
        let notices = Arc::new(Mutex::new(Vec::new()));
        let registry = WebhookRegistry::builder()
            .shared_subscriptions(subscriptions)
            .engine(
                EngineBuilder::new()
                    .guard(SsrfGuard::new().allow_host("127.0.0.1"))
                    // One attempt: each delivery to a failing endpoint is one failure.
                    .policy(Policy::custom([]))
                    .attempt_timeout(Duration::from_secs(5)),
            )
            .event_type(crate::run_status::event_type())
            .health(rule)
            .on_finished({
                let finished = finished.clone();
                move |_| {
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            })
            .on_disabled({
                let notices = notices.clone();
                move |notice| notices.lock().unwrap().push(notice.clone())
            })
            .build();
        Replica {
            registry,
            finished,
            notices,
        }
    }

    fn webhook(id: &str, url: String) -> Endpoint {
        Endpoint::new(
            Owner::new("acme"),
            id,
            url,
            vec![RunStatus::TYPE.to_owned()],
            SigningScheme::Nextmv,
            SystemTime::now(),
        )
    }

    fn status() -> RunStatus {
        RunStatus::new("run-1", "app", RunState::Running, SystemTime::now())
    }

    async fn enabled(store: &dyn SubscriptionStore, id: &str) -> bool {
        store
            .get(WebhookKey::new(&Owner::new("acme"), id))
            .await
            .unwrap()
            .expect("the webhook exists")
            .enabled
    }

    /// Four failed deliveries, two observed by each replica, under a rule of four: the webhook
    /// is disabled once, for both. (With per-process counts each replica saw two: never.)
    async fn failures_at_two_replicas_disable_once(
        a: Arc<dyn SubscriptionStore>,
        b: Arc<dyn SubscriptionStore>,
    ) {
        let failing = Receiver::status(503).await;
        a.insert(webhook("flaky", failing.url("/hook")))
            .await
            .unwrap();
        let rule = HealthRule::new(4, Duration::from_secs(3600));
        let (one, two) = (replica(a.clone(), rule), replica(b.clone(), rule));
        for replica in [&one, &one, &two, &two] {
            let report = replica
                .registry
                .broadcast(RunStatus::TYPE, &status())
                .await
                .unwrap();
            assert_eq!(
                report.deliveries.len(),
                1,
                "enabled until the fourth failure"
            );
        }
        eventually("two failed deliveries at each replica", || async {
            one.finished.load(Ordering::SeqCst) == 2 && two.finished.load(Ordering::SeqCst) == 2
        })
        .await;
        eventually("the webhook disabled", || async {
            !enabled(b.as_ref(), "flaky").await
        })
        .await;
        assert!(!enabled(a.as_ref(), "flaky").await, "disabled for both");
        let notices = || one.notices.lock().unwrap().len() + two.notices.lock().unwrap().len();
        eventually("the on_disabled notice", || async { notices() > 0 }).await;
        assert_eq!(notices(), 1, "disabled once");
        let stored = a
            .get(WebhookKey::new(&Owner::new("acme"), "flaky"))
            .await
            .unwrap()
            .unwrap();
        let reason = stored.disabled_reason.unwrap();
        assert!(
            reason.starts_with("4 failed deliveries within 3600 s"),
            "{reason}"
        );
        for replica in [&one, &two] {
            let report = replica
                .registry
                .broadcast(RunStatus::TYPE, &status())
                .await
                .unwrap();
            assert!(report.deliveries.is_empty(), "neither publishes to it");
        }
    }

    /// A limit of 3 (burst 3, one a second) over six events published alternately at two
    /// replicas: three go at once, the other three wait their turn, one second apart — one
    /// bucket. (With per-process buckets all six went at once.)
    async fn rate_limit_at_two_replicas_is_one_bucket(
        a: Arc<dyn SubscriptionStore>,
        b: Arc<dyn SubscriptionStore>,
    ) {
        let receiver = Receiver::status(200).await;
        let mut paced = webhook("paced", receiver.url("/hook"));
        paced.rate_limit = Some(EndpointRateLimit::per_second(1).with_burst(3));
        a.insert(paced).await.unwrap();
        let rule = HealthRule::default();
        let (one, two) = (replica(a, rule), replica(b, rule));
        let mut not_before = Vec::new();
        for replica in [&one, &two, &one, &two, &one, &two] {
            let report = replica
                .registry
                .broadcast(RunStatus::TYPE, &status())
                .await
                .unwrap();
            not_before.push(report.deliveries[0].not_before);
        }
        let immediate = not_before.iter().filter(|t| t.is_none()).count();
        assert_eq!(immediate, 3, "{not_before:?}");
        let mut later: Vec<SystemTime> = not_before.into_iter().flatten().collect();
        later.sort();
        for pair in later.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap();
            assert!(gap >= Duration::from_millis(999), "{gap:?} apart");
        }
    }

    #[cfg(feature = "sqlite")]
    async fn two_sqlite_stores(dir: &tempfile::TempDir) -> [Arc<dyn SubscriptionStore>; 2] {
        use tower_webhooks::registry::SqliteSubscriptions;
        let path = dir.path().join("registry.db");
        let a = SqliteSubscriptions::connect(&path).await.unwrap();
        let b = SqliteSubscriptions::connect(&path).await.unwrap();
        [Arc::new(a), Arc::new(b)]
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_failures_at_two_registries_disable_once() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b] = two_sqlite_stores(&dir).await;
        failures_at_two_replicas_disable_once(a, b).await;
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_rate_limit_at_two_registries_is_one_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b] = two_sqlite_stores(&dir).await;
        rate_limit_at_two_replicas_is_one_bucket(a, b).await;
    }

    /// Two connections (pools) on one schema, as two replicas have.
    #[cfg(feature = "postgres")]
    async fn two_postgres_stores(
        url: &str,
        schema: &str,
    ) -> (
        [Arc<dyn SubscriptionStore>; 2],
        [tower_webhooks::store::PostgresStore; 2],
    ) {
        use tower_webhooks::registry::PostgresSubscriptions;
        use tower_webhooks::store::PostgresStore;
        let connect = || async {
            PostgresStore::builder(url)
                .schema(schema)
                .connect()
                .await
                .unwrap()
        };
        let (a, b) = (connect().await, connect().await);
        (
            [
                Arc::new(PostgresSubscriptions::new(&a)),
                Arc::new(PostgresSubscriptions::new(&b)),
            ],
            [a, b],
        )
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    async fn postgres_failures_at_two_registries_disable_once() {
        let url = postgres_url();
        let schema = support::unique_schema("health");
        let ([a, b], stores) = two_postgres_stores(&url, &schema).await;
        failures_at_two_replicas_disable_once(a, b).await;
        drop(stores);
        support::drop_schema(&url, &schema).await;
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    async fn postgres_rate_limit_at_two_registries_is_one_bucket() {
        let url = postgres_url();
        let schema = support::unique_schema("ratelimit");
        let ([a, b], stores) = two_postgres_stores(&url, &schema).await;
        rate_limit_at_two_replicas_is_one_bucket(a, b).await;
        drop(stores);
        support::drop_schema(&url, &schema).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Two gateway processes on one PostgreSQL schema

#[cfg(feature = "postgres")]
mod gateways {
    use std::process::Stdio;

    use serde_json::{json, Value};
    use std::time::Instant;
    use tokio::process::{Child, Command};

    use super::support::{self, Receiver};
    use super::*;

    const KEY: &str = "test-key";
    const INBOUND_SECRET: &str = "replicas-inbound-secret";

    struct Gateway {
        port: u16,
        _child: Child,
    }

    /// Starts `examples/gateway` (built by `cargo test`) with `config` on a free port.
    async fn start(config: &std::path::Path) -> Gateway {
        let mut binary = std::env::current_exe().unwrap();
        binary.pop();
        if binary.ends_with("deps") {
            binary.pop();
        }
        let binary = binary.join("examples").join("gateway");
        assert!(
            binary.exists(),
            "{} is missing: run `cargo test` (it builds examples)",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(&binary)
            .arg("--config")
            .arg(config)
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("the gateway exited: {exit}");
            }
            assert!(Instant::now() < deadline, "the gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Gateway {
            port,
            _child: child,
        }
    }

    /// One HTTP/1.1 exchange over a fresh connection: the status and the JSON body.
    async fn http(gateway: &Gateway, method: &str, path: &str, body: &str) -> (u16, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
            .await
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// One Cerebrium-signed delivery with message id `id` to the gateway's `/hook` route: the
    /// raw response.
    async fn inbound(gateway: &Gateway, id: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request =
            support::cerebrium_request("/hook", id, r#"{"event":"replicas"}"#, INBOUND_SECRET);
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }

    async fn view(gateway: &Gateway, id: &str) -> Value {
        let (status, view) = http(gateway, "GET", &format!("/v1/webhooks/{id}"), "").await;
        assert_eq!(status, 200, "{view}");
        view
    }

    async fn create(gateway: &Gateway, body: Value) {
        let (status, answer) = http(gateway, "POST", "/v1/webhooks", &body.to_string()).await;
        assert_eq!(status, 201, "{answer}");
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    async fn two_gateways_on_one_postgres_schema_are_one_registry() {
        let url = postgres_url();
        let schema = support::unique_schema("gateways");
        let config = std::env::temp_dir().join(format!("replicas-{schema}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\n[registry]\nallow_loopback = true\n\
                 run_step_secs = 0.05\nstore = \"{url}\"\nschema = \"{schema}\"\n\
                 [registry.api_keys]\n\"{KEY}\" = \"tester\"\n\
                 [inbound]\nreplay_store = \"{url}\"\nreplay_schema = \"{schema}\"\n\
                 [[routes]]\npath = \"/hook\"\nsecrets = \"{INBOUND_SECRET}\"\n\
                 scheme = {{ type = \"cerebrium\" }}\n"
            ),
        )
        .unwrap();
        let one = start(&config).await;
        let two = start(&config).await;

        // A limit of 3 is 3 across both: six triggers, alternately at each, three go at once,
        // three wait their turns, one second apart.
        let receiver = Receiver::status(200).await;
        create(
            &one,
            json!({"id": "paced", "endpoint_url": receiver.url("/hook"),
                   "event_types": ["run.status"], "rate_limit": {"per_second": 1, "burst": 3}}),
        )
        .await;
        let mut not_before = Vec::new();
        for gateway in [&one, &two, &one, &two, &one, &two] {
            let (status, queued) = http(gateway, "POST", "/v1/webhooks/paced/trigger", "").await;
            assert_eq!(status, 202, "{queued}");
            not_before.push(queued["not_before"].as_str().and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
                    .map(SystemTime::from)
            }));
        }
        let immediate = not_before.iter().filter(|t| t.is_none()).count();
        assert_eq!(immediate, 3, "{not_before:?}");
        let mut later: Vec<SystemTime> = not_before.into_iter().flatten().collect();
        later.sort();
        for pair in later.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap();
            assert!(gap >= Duration::from_millis(999), "{gap:?} apart");
        }

        // Disabled through the API at one: disabled at the other.
        let (status, _) = http(&two, "POST", "/v1/webhooks/paced/disable", "").await;
        assert_eq!(status, 200);
        let seen = view(&one, "paced").await;
        assert_eq!(seen["enabled"], false);
        assert_eq!(seen["disabled_reason"], "disabled through the API");

        // Disabled by the health rule at one (the endpoint answers 410 Gone to the delivery
        // triggered there): disabled at the other.
        let gone = Receiver::status(410).await;
        create(
            &one,
            json!({"id": "gone", "endpoint_url": gone.url("/hook"), "event_types": ["run.status"]}),
        )
        .await;
        let (status, _) = http(&two, "POST", "/v1/webhooks/gone/trigger", "").await;
        assert_eq!(status, 202);
        eventually("`gone` disabled, as seen at the other gateway", || async {
            view(&one, "gone").await["enabled"] == false
        })
        .await;
        assert_eq!(
            view(&one, "gone").await["disabled_reason"],
            "the endpoint answered 410 Gone"
        );
        assert_eq!(view(&two, "gone").await["enabled"], false);

        // Verified at one: a duplicate at the other, which does not call its handler again.
        let id = uuid::Uuid::new_v4().to_string();
        let first = inbound(&one, &id).await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains("\"accepted\":true"), "{first}");
        let again = inbound(&two, &id).await;
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        assert!(again.contains("{\"status\":\"duplicate\"}"), "{again}");

        drop((one, two));
        let _ = std::fs::remove_file(&config);
        support::drop_schema(&url, &schema).await;
    }
}
