//! The delivery engine on durable stores, against real local receivers: the policy table
//! (status classes, `Retry-After`, `410`), resume after a restart, re-sends, retention,
//! metrics; and on PostgreSQL (when `TOWER_WEBHOOKS_POSTGRES_URL` is set) lease takeover,
//! fencing, `LISTEN/NOTIFY` wake-ups and connection loss.

mod support;

use std::collections::HashMap;
#[cfg(feature = "postgres")]
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use support::{verify_cerebrium, Receiver, Reply};
use tokio::sync::mpsc;
use tower_webhooks::delivery::{
    AttemptOutcome, ConversationQuery, Decision, Delivery, DeliveryState, SigningSpec,
};
use tower_webhooks::delivery::{DeliveryEngine, DeliveryReport, EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::scheme::Cerebrium;
#[cfg(feature = "postgres")]
use tower_webhooks::store::{AttemptRecord, DeliveryStore};
use tower_webhooks::store::{SqliteStore, StoreError};

const SECRET: &str = "durable-secret";

fn builder() -> EngineBuilder {
    DeliveryEngine::builder()
        .guard(SsrfGuard::new().allow_loopback())
        .attempt_timeout(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(50))
}

fn signed(id: &str, endpoint: &str, body: &str) -> Delivery {
    Delivery::new(id, endpoint, body.to_owned())
        .with_signing(SigningSpec::new(Cerebrium::new(), SECRET))
}

async fn sqlite(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::connect(dir.path().join("webhooks.db"))
        .await
        .unwrap()
}

/// An engine whose finished deliveries are reported on a channel.
fn reporting(builder: EngineBuilder) -> (DeliveryEngine, mpsc::UnboundedReceiver<DeliveryReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = builder
        .on_finished(move |report| {
            let _ = tx.send(report.clone());
        })
        .build();
    (engine, rx)
}

async fn next_report(reports: &mut mpsc::UnboundedReceiver<DeliveryReport>) -> DeliveryReport {
    tokio::time::timeout(Duration::from_secs(15), reports.recv())
        .await
        .expect("a delivery finished in time")
        .expect("engine alive")
}

async fn wait_state(engine: &DeliveryEngine, id: &str, state: DeliveryState) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let conversation = engine.conversation(id).await.unwrap();
        if conversation.as_ref().map(|c| c.delivery.state) == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {state}: {conversation:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn policy_table_on_a_durable_store() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::standard()
        .with_delays([Duration::from_millis(30); 3])
        .with_jitter(0.0)
        .with_retry_after(Some(Duration::from_millis(1200)));
    let (engine, mut reports) = reporting(builder().store(sqlite(&dir).await).policy(policy));

    // Every status class, connect errors and timeouts.
    let ok = Receiver::status(204).await;
    let client_error = Receiver::status(400).await;
    let server_error = Receiver::status(500).await;
    let redirect = Receiver::status(302).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/hook")
    };
    let cases = [
        ("ok", ok.url("/"), DeliveryState::Delivered, 1),
        ("4xx", client_error.url("/"), DeliveryState::Failed, 4),
        ("5xx", server_error.url("/"), DeliveryState::Failed, 4),
        ("3xx", redirect.url("/"), DeliveryState::Failed, 4),
        ("connect", closed, DeliveryState::Failed, 4),
    ];
    for (id, url, _, _) in &cases {
        engine.submit(signed(id, url, "{}")).await.unwrap();
    }
    let mut finished = HashMap::new();
    for _ in 0..cases.len() {
        let report = next_report(&mut reports).await;
        finished.insert(report.id.clone(), report);
    }
    for (id, _, state, attempts) in &cases {
        let report = &finished[*id];
        assert_eq!((report.state, report.attempts), (*state, *attempts), "{id}");
        let conversation = engine.conversation(id).await.unwrap().unwrap();
        assert_eq!(conversation.attempts.len() as u32, *attempts, "{id}");
        if *state == DeliveryState::Failed {
            let reason = conversation.delivery.last_error.unwrap();
            assert!(reason.contains("4 attempts exhausted"), "{id}: {reason}");
        }
    }
    assert!(ok.hits().iter().all(|hit| verify_cerebrium(hit, SECRET)));

    // 429 and 503 with Retry-After: honoured within the clamp (1.2 s), not below it.
    let limited = Receiver::start(|index, _| match index {
        0 => Reply::status(429).header("retry-after", "1"),
        1 => Reply::status(503).header("retry-after", "3600"),
        _ => Reply::status(200),
    })
    .await;
    engine
        .submit(signed("limited", &limited.url("/"), "{}"))
        .await
        .unwrap();
    let report = next_report(&mut reports).await;
    assert_eq!(
        (report.state, report.attempts),
        (DeliveryState::Delivered, 3)
    );
    let hits = limited.hits();
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(950),
        "429 Retry-After: 1 honoured: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(1150) && gaps[1] < Duration::from_millis(2500),
        "503 Retry-After: 3600 clamped to 1.2 s: {gaps:?}"
    );

    // 410 Gone: one attempt, the endpoint is to be disabled, and the other pending
    // deliveries to it are given up without being sent.
    let gone = Receiver::status(410).await;
    let later = SystemTime::now() + Duration::from_secs(3600);
    engine
        .submit(signed("gone-later", &gone.url("/"), "{}").not_before(later))
        .await
        .unwrap();
    engine
        .submit(signed("gone", &gone.url("/"), "{}"))
        .await
        .unwrap();
    let report = next_report(&mut reports).await;
    assert_eq!(report.id, "gone");
    assert!(report.disable_endpoint);
    assert_eq!((report.state, report.attempts), (DeliveryState::Failed, 1));
    let attempt = &engine.conversation("gone").await.unwrap().unwrap().attempts[0];
    assert_eq!(attempt.decision, Decision::DisableEndpoint);
    let other = engine.conversation("gone-later").await.unwrap().unwrap();
    assert_eq!(other.delivery.state, DeliveryState::Failed);
    assert!(other.attempts.is_empty());
    assert_eq!(gone.hits().len(), 1);
    let dead = engine
        .dead_letters(&ConversationQuery::new())
        .await
        .unwrap();
    assert_eq!(dead.len(), 6, "4xx, 5xx, 3xx, connect, gone, gone-later");
    // Every slot came back.
    assert_eq!(engine.stats().await.unwrap().outstanding, 0);
}

#[tokio::test]
async fn restart_resumes_remaining_attempts_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::status(503).await;
    let policy = || {
        Policy::custom([
            Duration::from_millis(100),
            Duration::from_millis(100),
            Duration::from_secs(2),
            Duration::from_millis(100),
        ])
    };
    {
        let engine = builder().store(sqlite(&dir).await).policy(policy()).build();
        engine
            .submit(signed("run-1", &receiver.url("/hook"), r#"{"result":42}"#))
            .await
            .unwrap();
        // Three attempts, then the engine (the process) goes away in the 2 s wait.
        receiver.wait_hits(3, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = engine.shutdown(Duration::ZERO).await;
        assert!(!report.drained);
    }
    receiver.behave(|_, _| Reply::status(200));
    let engine = builder().store(sqlite(&dir).await).policy(policy()).build();
    wait_state(&engine, "run-1", DeliveryState::Delivered).await;
    let conversation = engine.conversation("run-1").await.unwrap().unwrap();
    assert_eq!(conversation.delivery.attempts, 4);
    let outcomes: Vec<_> = conversation
        .attempts
        .iter()
        .map(|a| a.outcome.clone())
        .collect();
    assert_eq!(
        outcomes,
        [503, 503, 503, 200].map(AttemptOutcome::Status),
        "the history before the restart is kept"
    );
    let hits = receiver.hits();
    assert_eq!(hits.len(), 4);
    for hit in &hits {
        assert_eq!(hit.header("x-request-id"), "run-1");
        assert_eq!(&hit.body[..], br#"{"result":42}"#);
        assert!(
            verify_cerebrium(hit, SECRET),
            "signed with the stored secret"
        );
    }
}

#[tokio::test]
async fn resend_one_and_every_failed_delivery_since() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::status(500).await;
    let (engine, mut reports) = reporting(builder().store(sqlite(&dir).await));
    let since = SystemTime::now();
    for id in ["r1", "r2", "r3"] {
        engine
            .submit(signed(id, &receiver.url("/"), id))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(next_report(&mut reports).await.state, DeliveryState::Failed);
    }
    // Cerebrium: a 500 is not retried, so three dead letters of one attempt each.
    let dead = engine
        .dead_letters(&ConversationQuery::new().endpoint(receiver.url("/")))
        .await
        .unwrap();
    assert_eq!(dead.len(), 3);
    assert!(matches!(
        engine.resend("nope").await,
        Err(StoreError::NotFound(_))
    ));

    receiver.behave(|_, _| Reply::status(200));
    // One delivery, signed with the current (rotated) secret: one manual attempt.
    engine
        .resend_signed("r1", SigningSpec::new(Cerebrium::new(), "rotated"))
        .await
        .unwrap();
    let report = next_report(&mut reports).await;
    assert_eq!(
        (report.id.as_str(), report.state),
        ("r1", DeliveryState::Delivered)
    );
    let conversation = engine.conversation("r1").await.unwrap().unwrap();
    assert_eq!(conversation.attempts.len(), 2);
    assert!(!conversation.attempts[0].manual && conversation.attempts[1].manual);
    let hit = receiver.hits().pop().unwrap();
    assert_eq!(
        hit.header("x-request-id"),
        "r1",
        "same id: the idempotency key"
    );
    assert!(verify_cerebrium(&hit, "rotated"));

    // Every failed delivery to the endpoint since then.
    let queued = engine
        .resend_failed(
            &ConversationQuery::new()
                .endpoint(receiver.url("/"))
                .since(since),
            None,
        )
        .await
        .unwrap();
    assert_eq!(queued, 2);
    for _ in 0..2 {
        assert_eq!(
            next_report(&mut reports).await.state,
            DeliveryState::Delivered
        );
    }
    assert!(engine
        .dead_letters(&ConversationQuery::new())
        .await
        .unwrap()
        .is_empty());

    // A manual attempt that fails is not retried.
    receiver.behave(|_, _| Reply::status(404));
    engine.resend("r2").await.unwrap();
    let report = next_report(&mut reports).await;
    assert_eq!((report.state, report.attempts), (DeliveryState::Failed, 3));
    let conversation = engine.conversation("r2").await.unwrap().unwrap();
    assert!(conversation
        .delivery
        .last_error
        .unwrap()
        .contains("manual re-send failed"));
}

#[tokio::test]
async fn retention_deletes_old_delivered_rows_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Receiver::status(200).await;
    let failing = Receiver::status(400).await;
    let (engine, mut reports) = reporting(
        builder()
            .store(sqlite(&dir).await)
            .retain_delivered(Duration::from_millis(200))
            .retention_schedule(Duration::from_millis(100), 3),
    );
    for i in 0..10 {
        engine
            .submit(signed(&format!("ok{i}"), &ok.url("/"), "{}"))
            .await
            .unwrap();
    }
    engine
        .submit(signed("dead", &failing.url("/"), "{}"))
        .await
        .unwrap();
    for _ in 0..11 {
        next_report(&mut reports).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = engine.stats().await.unwrap().store;
        if stats.finished == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not run: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(engine.conversation("ok0").await.unwrap().is_none());
    assert!(
        engine.conversation("dead").await.unwrap().is_some(),
        "dead letters kept"
    );
}

#[tokio::test]
async fn a_backlog_to_one_slow_endpoint_is_claimed_in_bounded_batches() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Receiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(15))).await;
    let (engine, mut reports) = reporting(
        builder()
            .store(sqlite(&dir).await)
            .capacity(1000)
            .max_in_flight(4)
            .max_per_endpoint(2)
            .max_claimed(8),
    );
    for i in 0..120 {
        engine
            .submit(signed(&format!("b{i}"), &slow.url("/"), "{}"))
            .await
            .unwrap();
    }
    let mut most_claimed = 0;
    for _ in 0..120 {
        next_report(&mut reports).await;
        let stats = engine.stats().await.unwrap().store;
        most_claimed = most_claimed.max(stats.in_flight);
    }
    // The claim budget (8), as many parked for the endpoint (8), the endpoint's cap (2).
    assert!(most_claimed <= 18, "claimed at once: {most_claimed}");
    assert_eq!(slow.hits().len(), 120);
}

#[tokio::test]
async fn async_mode_stores_the_delivery_before_answering_202() {
    use axum::routing::post;
    use tower::ServiceExt;
    use tower_webhooks::forward::WebhookForwardLayer;

    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::status(200).await;
    let (engine, mut reports) = reporting(
        builder()
            .store(sqlite(&dir).await)
            .hold(Duration::from_millis(600)),
    );
    let app = axum::Router::new()
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                axum::Json(serde_json::json!({"done": true}))
            }),
        )
        .layer(WebhookForwardLayer::new(engine.clone()));
    let uri = format!(
        "/slow?async=true&webhookEndpoint={}",
        receiver
            .url("/hook")
            .replace(':', "%3A")
            .replace('/', "%2F")
    );
    let request = http::Request::post(uri)
        .header("x-webhook-secret", SECRET)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 202);
    let run_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // Stored before the answer: a placeholder saying the run was interrupted, due later.
    let held = engine.conversation(&run_id).await.unwrap().expect("stored");
    assert_eq!(held.delivery.state, DeliveryState::Pending);
    assert!(String::from_utf8_lossy(&held.delivery.body).contains("interrupted"));
    // Kept held through the run (longer than the hold), then completed with the result.
    let report = next_report(&mut reports).await;
    assert_eq!(
        (report.id.as_str(), report.state),
        (run_id.as_str(), DeliveryState::Delivered)
    );
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "the placeholder itself was never sent");
    let envelope: serde_json::Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(envelope["result"]["done"], true);
    assert!(verify_cerebrium(&hits[0], SECRET));
}

#[tokio::test]
async fn sync_mode_answers_only_once_the_delivery_is_stored() {
    use axum::routing::post;
    use tower::ServiceExt;
    use tower_webhooks::forward::WebhookForwardLayer;

    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::status(200).await;
    let engine = builder().store(sqlite(&dir).await).build();
    let app = axum::Router::new()
        .route(
            "/json",
            post(|| async { axum::Json(serde_json::json!({"ok": 1})) }),
        )
        .route("/empty", post(|| async { http::StatusCode::NO_CONTENT }))
        .layer(WebhookForwardLayer::new(engine.clone()));
    let endpoint = receiver
        .url("/hook")
        .replace(':', "%3A")
        .replace('/', "%2F");
    for path in ["/json", "/empty"] {
        let request = http::Request::post(format!("{path}?webhookEndpoint={endpoint}"))
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let run_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        // The caller has the whole answer only once the delivery row is committed.
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(
            engine.conversation(&run_id).await.unwrap().is_some(),
            "{path}: answered before the delivery was stored"
        );
    }
    receiver.wait_hits(2, Duration::from_secs(10)).await;
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Default)]
struct Recorded(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Recorded {
    fn handle(&self, key: &metrics::Key) -> Arc<AtomicU64> {
        let mut name = key.name().to_owned();
        for label in key.labels() {
            name.push_str(&format!(",{}={}", label.key(), label.value()));
        }
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn value(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |v| v.load(Ordering::SeqCst))
    }
}

struct TestRecorder(Arc<Recorded>);

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.0.handle(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.0.handle(key))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

fn recorded() -> &'static Arc<Recorded> {
    static RECORDED: OnceLock<Arc<Recorded>> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded = Arc::new(Recorded::default());
        metrics::set_global_recorder(TestRecorder(recorded.clone())).unwrap();
        recorded
    })
}

#[tokio::test]
async fn queue_depth_oldest_due_age_and_attempts_by_outcome() {
    let recorded = recorded();
    let dir = tempfile::tempdir().unwrap();
    let ok = Receiver::status(200).await;
    let (engine, mut reports) = reporting(
        builder()
            .store(sqlite(&dir).await)
            .metrics_interval(Some(Duration::from_millis(50))),
    );
    let before = recorded.value("webhook_attempts_total,engine=default,outcome=2xx");
    engine
        .submit(signed("m1", &ok.url("/"), "{}"))
        .await
        .unwrap();
    next_report(&mut reports).await;
    assert!(recorded.value("webhook_attempts_total,engine=default,outcome=2xx") > before);
    // A delivery due in the past that no worker takes (an endpoint host held busy) shows in
    // the queue depth and the age of the oldest due delivery.
    let store = engine.store().clone();
    store
        .enqueue(
            Delivery::new("waiting", "http://127.0.0.1:9/", "{}")
                .not_before(SystemTime::now() + Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while f64::from_bits(recorded.value("webhook_queue_depth,engine=default")) < 1.0 {
        assert!(Instant::now() < deadline, "queue depth gauge not updated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.store.pending, 1);
    assert_eq!(
        stats.store.oldest_due_age(SystemTime::now()),
        None,
        "not due yet"
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: several replicas on one database.

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use tower_webhooks::store::PostgresStore;

    async fn store(url: &str, schema: &str) -> PostgresStore {
        PostgresStore::builder(url)
            .schema(schema)
            .connect()
            .await
            .unwrap()
    }

    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn lease_takeover_and_fencing_between_replicas() {
        let url = support::postgres_url();
        let schema = support::unique_schema("takeover");
        let receiver = Receiver::status(200).await;
        // Replica A claims the delivery with a 1 s lease and stalls (a crash, a long pause).
        let a = store(&url, &schema).await;
        a.enqueue(signed("t1", &receiver.url("/"), "{}"))
            .await
            .unwrap();
        let claim = a
            .claim_due(
                SystemTime::now() + Duration::from_millis(5),
                10,
                Duration::from_secs(1),
            )
            .await
            .unwrap()
            .remove(0);
        // Replica B's engine takes it over once the lease has expired.
        let started = Instant::now();
        let (engine, mut reports) = reporting(
            builder()
                .store(store(&url, &schema).await)
                .lease(Duration::from_secs(1)),
        );
        let report = next_report(&mut reports).await;
        assert_eq!(
            (report.id.as_str(), report.state),
            ("t1", DeliveryState::Delivered)
        );
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "not before the lease expired"
        );
        assert!(verify_cerebrium(&receiver.hits()[0], SECRET));
        // A wakes up: its stale outcome is refused (fencing token).
        let mut stale = tower_webhooks::delivery::Attempt::new(
            1,
            SystemTime::now(),
            AttemptOutcome::Status(500),
        );
        stale.decision = Decision::GaveUp;
        let refused = a
            .record_attempt(AttemptRecord {
                id: "t1",
                lease: claim.lease,
                attempt: stale,
                next: tower_webhooks::delivery::Next::Final {
                    state: DeliveryState::Failed,
                    reason: None,
                },
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::LeaseLost(_))),
            "{refused:?}"
        );
        let conversation = engine.conversation("t1").await.unwrap().unwrap();
        assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
        assert_eq!(conversation.attempts.len(), 1);
        let _ = engine.shutdown(Duration::from_secs(1)).await;
        drop((engine, a));
        support::drop_schema(&url, &schema).await;
    }

    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn notify_wakes_idle_workers_of_other_replicas() {
        let url = support::postgres_url();
        let schema = support::unique_schema("notify");
        let receiver = Receiver::status(200).await;
        // B polls only every 30 s: only the notification can wake it.
        let (b, mut reports) = reporting(
            builder()
                .store(store(&url, &schema).await)
                .poll_interval(Duration::from_secs(30)),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = store(&url, &schema).await;
        let started = Instant::now();
        a.enqueue(signed("n1", &receiver.url("/"), "{}"))
            .await
            .unwrap();
        let report = next_report(&mut reports).await;
        assert_eq!(report.id, "n1");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken, not polled"
        );
        let _ = b.shutdown(Duration::from_secs(1)).await;
        drop((b, a));
        support::drop_schema(&url, &schema).await;
    }

    #[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
    #[tokio::test]
    async fn connection_loss_mid_work_loses_nothing() {
        let url = support::postgres_url();
        let schema = support::unique_schema("connloss");
        let receiver = Receiver::status(200).await;
        let engine = builder()
            .store(store(&url, &schema).await)
            .capacity(10_000)
            .build();
        let killer = {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                let mut killed = 0;
                for _ in 0..4 {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let rows = sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1",
                    )
                    .bind(format!("tower-webhooks/{schema}"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                    killed += rows.len();
                }
                killed
            })
        };
        let mut ids = Vec::new();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(800) {
            let batch: Vec<_> = (0..10)
                .map(|_| {
                    n += 1;
                    let id = format!("c{n}");
                    ids.push(id.clone());
                    let engine = engine.clone();
                    let url = receiver.url("/");
                    tokio::spawn(async move { engine.submit(signed(&id, &url, "{}")).await })
                })
                .collect();
            for task in batch {
                task.await
                    .unwrap()
                    .expect("accepted despite the lost connections");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let killed = killer.await.unwrap();
        assert!(killed > 0, "backends were terminated");
        let hits = receiver.wait_hits(ids.len(), Duration::from_secs(30)).await;
        let seen: HashSet<_> = hits
            .iter()
            .map(|h| h.header("x-request-id").to_owned())
            .collect();
        for id in &ids {
            assert!(seen.contains(id), "{id} was lost");
        }
        let report = engine.shutdown(Duration::from_secs(10)).await;
        assert!(report.drained, "{report:?}");
        eprintln!(
            "connection loss: {} deliveries, {killed} backends terminated, {} duplicates",
            ids.len(),
            hits.len() - seen.len()
        );
        drop(engine);
        support::drop_schema(&url, &schema).await;
    }
}

/// A durable store is the buffer. An engine whose capacity is one still
/// accepts (writes) every delivery and sends them all as its budget frees; a memory store's
/// engine refuses the second.
#[tokio::test]
async fn a_durable_store_buffers_past_the_engine_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::status(200).await;
    let engine = builder().store(sqlite(&dir).await).capacity(1).build();
    for i in 0..5 {
        engine
            .submit(signed(&format!("buffered{i}"), &receiver.url("/"), "{}"))
            .await
            .expect("a durable store takes every delivery");
    }
    receiver.wait_hits(5, Duration::from_secs(10)).await;
    for i in 0..5 {
        wait_state(&engine, &format!("buffered{i}"), DeliveryState::Delivered).await;
    }

    let memory = builder().capacity(1).build();
    let later = SystemTime::now() + Duration::from_secs(3600);
    memory
        .submit(signed("m0", &receiver.url("/"), "{}").not_before(later))
        .await
        .unwrap();
    let refused = memory
        .submit(signed("m1", &receiver.url("/"), "{}").not_before(later))
        .await;
    assert!(
        matches!(
            refused,
            Err(tower_webhooks::delivery::EnqueueError::Full { .. })
        ),
        "{refused:?}"
    );
}

/// Retention is on by default; a delivered row older than 7 days is
/// purged by an engine built without any retention setting, a recent one is kept.
#[tokio::test]
async fn a_default_engine_purges_old_delivered_rows() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::status(200).await;
    let (engine, mut reports) = reporting(
        builder()
            .store(sqlite(&dir).await)
            // Only how often it runs; the ages are the defaults.
            .retention_schedule(Duration::from_millis(50), 500),
    );
    for id in ["old", "recent"] {
        engine
            .submit(signed(id, &receiver.url("/"), "{}"))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        next_report(&mut reports).await;
    }
    let eight_days_ago = SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("webhooks.db"));
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("UPDATE deliveries SET updated_at = ? WHERE id = 'old'")
        .bind(
            // The stores keep Unix milliseconds.
            i64::try_from(
                eight_days_ago
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap(),
        )
        .execute(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.conversation("old").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "a default-built engine never purged a delivery delivered 8 days ago"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(engine.conversation("recent").await.unwrap().is_some());
}
