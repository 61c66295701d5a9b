//! Metrics (the inbound span is in `tests/inbound_span.rs`): each test records into its
//! own recorder (`metrics::with_local_recorder` around a current-thread runtime, so every
//! task of the test, and only they, record into it), and `docs/metrics.md` is checked
//! against the table the code describes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::post;
use axum::Router;
use http::{HeaderMap, Request, StatusCode};
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use tower::ServiceExt;
use tower_webhooks::inbound::WebhookSignatureLayer;
use tower_webhooks::replay::MemoryReplayStore;
use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
use tower_webhooks::telemetry::{MetricKind, METRICS};
use tower_webhooks::SecretSet;

const SECRET: &str = "telemetry-secret";

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// What a test recorded: counters and gauges by `name,label=value,...`, histogram samples,
/// and the descriptions (type, help) handed over by `describe_*`.
#[derive(Default)]
struct Recorded {
    values: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    samples: Mutex<BTreeMap<String, Arc<Samples>>>,
    described: Mutex<BTreeMap<String, (&'static str, String)>>,
}

fn key_string(key: &Key) -> String {
    let mut name = key.name().to_owned();
    for label in key.labels() {
        name.push_str(&format!(",{}={}", label.key(), label.value()));
    }
    name
}

impl Recorded {
    fn value(&self, key: &str) -> Option<u64> {
        let values = self.values.lock().unwrap();
        values.get(key).map(|value| value.load(Ordering::SeqCst))
    }

    #[cfg(feature = "forward")]
    fn samples(&self, key: &str) -> Vec<f64> {
        let samples = self.samples.lock().unwrap();
        samples
            .get(key)
            .map(|samples| samples.0.lock().unwrap().clone())
            .unwrap_or_default()
    }

    fn describe(&self, kind: &'static str, name: KeyName, help: SharedString) {
        let mut described = self.described.lock().unwrap();
        described.insert(name.as_str().to_owned(), (kind, help.to_string()));
    }
}

#[derive(Clone, Default)]
struct TestRecorder(Arc<Recorded>);

impl metrics::Recorder for TestRecorder {
    fn describe_counter(&self, name: KeyName, _: Option<Unit>, help: SharedString) {
        self.0.describe("counter", name, help);
    }
    fn describe_gauge(&self, name: KeyName, _: Option<Unit>, help: SharedString) {
        self.0.describe("gauge", name, help);
    }
    fn describe_histogram(&self, name: KeyName, _: Option<Unit>, help: SharedString) {
        self.0.describe("histogram", name, help);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut values = self.0.values.lock().unwrap();
        Counter::from_arc(values.entry(key_string(key)).or_default().clone())
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut values = self.0.values.lock().unwrap();
        Gauge::from_arc(values.entry(key_string(key)).or_default().clone())
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut samples = self.0.samples.lock().unwrap();
        Histogram::from_arc(samples.entry(key_string(key)).or_default().clone())
    }
}

/// Runs `test` on a current-thread runtime with its own recorder; returns what it recorded.
fn recorded<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) -> Arc<Recorded> {
    recorded_with(|_| test())
}

/// [`recorded`], for a test that looks at what it recorded while it runs.
fn recorded_with<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(Arc<Recorded>) -> F,
) -> Arc<Recorded> {
    let recorder = TestRecorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(test(recorder.0.clone())));
    recorder.0
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signed_request(id: &str, body: &'static str) -> Request<axum::body::Body> {
    signed_with(SECRET, id, body)
}

fn signed_with(secret: &str, id: &str, body: &'static str) -> Request<axum::body::Body> {
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(id, now(), body.as_bytes()),
            &SecretSet::from(secret),
            &mut headers,
        )
        .unwrap();
    let mut request = Request::post("/hook")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    request.headers_mut().extend(headers);
    request
}

fn app() -> Router {
    Router::new().route("/hook", post(|| async { "ok" })).layer(
        WebhookSignatureLayer::new(Cerebrium::new(), SECRET)
            .replay_store(MemoryReplayStore::new(100)),
    )
}

async fn status(app: &Router, request: Request<axum::body::Body>) -> StatusCode {
    app.clone().oneshot(request).await.unwrap().status()
}

#[test]
fn inbound_counters_by_scheme_rejection_kind_and_duplicates() {
    let recorded = recorded(|| async {
        let app = app();
        assert_eq!(
            status(&app, signed_request("m-1", "{}")).await,
            StatusCode::OK
        );
        // The same message again: a duplicate, answered without the handler.
        assert_eq!(
            status(&app, signed_request("m-1", "{}")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, signed_request("m-2", "{}")).await,
            StatusCode::OK
        );
        let forged = signed_with("another-secret", "m-3", "{}");
        assert_eq!(status(&app, forged).await, StatusCode::UNAUTHORIZED);
        let unsigned = Request::post("/hook")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        assert_eq!(status(&app, unsigned).await, StatusCode::BAD_REQUEST);
    });
    let value = |key: &str| recorded.value(key).unwrap_or(0);
    assert_eq!(value("webhook_inbound_accepted_total,scheme=cerebrium"), 2);
    assert_eq!(
        value("webhook_inbound_duplicates_total,scheme=cerebrium"),
        1
    );
    assert_eq!(
        value("webhook_inbound_rejected_total,scheme=cerebrium,kind=invalid-signature"),
        1
    );
    assert_eq!(
        value("webhook_inbound_rejected_total,scheme=cerebrium,kind=missing-header"),
        1
    );
}

#[cfg(feature = "forward")]
#[test]
fn two_engines_keep_apart_gauges_and_time_attempts_and_deliveries() {
    use std::time::{Duration, Instant};

    use support::Receiver;
    use tower_webhooks::delivery::{Delivery, DeliveryState};
    use tower_webhooks::delivery::{DeliveryEngine, SsrfGuard};

    let recorded = recorded_with(|recorded| async move {
        let receiver = Receiver::status(200).await;
        let engine = |name: &str| {
            DeliveryEngine::builder()
                .name(name)
                .guard(SsrfGuard::new().allow_loopback())
                .poll_interval(Duration::from_millis(20))
                .metrics_interval(Some(Duration::from_millis(10)))
                .build()
        };
        let alpha = engine("alpha");
        let beta = engine("beta");
        alpha
            .submit(Delivery::new("d-1", receiver.url("/"), "{}"))
            .await
            .unwrap();
        receiver.wait_hits(1, Duration::from_secs(10)).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let done = |key: &str| recorded.value(key).is_some();
        loop {
            let conversation = alpha.conversation("d-1").await.unwrap().unwrap();
            if conversation.delivery.state == DeliveryState::Delivered
                && done("webhook_queue_depth,engine=alpha")
                && done("webhook_queue_depth,engine=beta")
            {
                break;
            }
            assert!(Instant::now() < deadline, "not delivered, or no gauges");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = alpha.shutdown(Duration::from_secs(1)).await;
        let _ = beta.shutdown(Duration::from_secs(1)).await;
    });
    assert_eq!(
        recorded.value("webhook_attempts_total,engine=alpha,outcome=2xx"),
        Some(1)
    );
    assert_eq!(
        recorded.value("webhook_attempts_total,engine=beta,outcome=2xx"),
        None
    );
    assert_eq!(
        recorded.value("webhook_deliveries_finished_total,engine=alpha,state=delivered"),
        Some(1)
    );
    for engine in ["alpha", "beta"] {
        assert!(
            recorded
                .value(&format!("webhook_queue_depth,engine={engine}"))
                .is_some(),
            "{engine}'s own queue gauge"
        );
    }
    assert_eq!(
        recorded
            .samples("webhook_attempt_duration_seconds,engine=alpha,outcome=2xx")
            .len(),
        1
    );
    let latency = recorded.samples("webhook_delivery_latency_seconds,engine=alpha,state=delivered");
    assert_eq!(latency.len(), 1);
    assert!(latency[0] >= 0.0);
}

/// The rows of the table in `docs/metrics.md`: name, type, labels, help.
fn documented() -> Vec<(String, String, Vec<String>, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    text.lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "{line}");
            let labels = cells[2]
                .split(',')
                .map(|label| label.trim().trim_matches('`').to_owned())
                .filter(|label| !label.is_empty())
                .collect();
            (
                cells[0].trim_matches('`').to_owned(),
                cells[1].to_owned(),
                labels,
                cells[3].to_owned(),
            )
        })
        .collect()
}

#[test]
fn docs_metrics_md_is_the_table_the_code_describes() {
    let recorded = recorded(|| async { tower_webhooks::telemetry::describe_metrics() });
    let described = recorded.described.lock().unwrap().clone();
    let documented = documented();
    let table: Vec<(String, String, Vec<String>, String)> = METRICS
        .iter()
        .map(|metric| {
            (
                metric.name.to_owned(),
                metric.kind.as_str().to_owned(),
                metric.labels.iter().map(|l| (*l).to_owned()).collect(),
                metric.help.to_owned(),
            )
        })
        .collect();
    assert_eq!(
        documented, table,
        "docs/metrics.md differs from telemetry::METRICS"
    );
    let names: BTreeSet<&str> = described.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        METRICS.iter().map(|metric| metric.name).collect(),
        "every metric in the table is described to the recorder"
    );
    for metric in METRICS {
        let (kind, help) = &described[metric.name];
        assert_eq!(*kind, metric.kind.as_str(), "{}", metric.name);
        assert_eq!(help, metric.help, "{}", metric.name);
        assert_eq!(
            metric.name.ends_with("_total"),
            metric.kind == MetricKind::Counter
        );
    }
}

#[test]
fn the_one_call_apis_count_like_the_layer() {
    use bytes::Bytes;
    use tower_webhooks::inbound::{Delivery, WebhookVerifier};

    let recorded = recorded(|| async {
        let verifier = WebhookVerifier::new(Cerebrium::new(), SECRET)
            .replay_store(MemoryReplayStore::new(100));
        let body = Bytes::from_static(b"{}");
        let (head, _) = signed_request("one-1", "{}").into_parts();
        verifier.verify_headers(&head.headers, &body).unwrap();
        let Delivery::Fresh(fresh) = verifier.verify_bytes(&head, &body).await.unwrap() else {
            panic!("the first delivery is fresh");
        };
        fresh.processed().await.unwrap();
        assert!(matches!(
            verifier.verify_bytes(&head, &body).await.unwrap(),
            Delivery::Duplicate(_)
        ));
        let (forged, _) = signed_with("another-secret", "one-2", "{}").into_parts();
        verifier.verify_parts(&forged, &body).unwrap_err();
        let unsigned = Request::post("/hook")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        verifier.verify(unsigned).await.unwrap_err();
    });
    let value = |key: &str| recorded.value(key).unwrap_or(0);
    assert_eq!(value("webhook_inbound_accepted_total,scheme=cerebrium"), 2);
    assert_eq!(
        value("webhook_inbound_duplicates_total,scheme=cerebrium"),
        1
    );
    assert_eq!(
        value("webhook_inbound_rejected_total,scheme=cerebrium,kind=invalid-signature"),
        1
    );
    assert_eq!(
        value("webhook_inbound_rejected_total,scheme=cerebrium,kind=missing-header"),
        1
    );
}
