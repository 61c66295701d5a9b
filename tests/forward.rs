//! `WebhookForwardLayer` and the delivery engine against real local receivers (axum servers on
//! 127.0.0.1 started here): signatures checked with Cerebrium's documented algorithm, the whole
//! retry table, timeouts, refused connections, async and legacy modes, the SSRF guard,
//! backpressure and graceful drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tower::{Layer as _, ServiceExt};
use tower_webhooks::delivery::{AttemptOutcome, Decision, DeliveryState};
use tower_webhooks::delivery::{DeliveryEngine, DeliveryReport, EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::forward::{ForwardTo, RunId, WebhookForwardLayer};

const SECRET: &str = "my-webhook-secret";

// ---------------------------------------------------------------------------------------------
// Receivers

#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body: Bytes::from_static(b"ok"),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    notify: Arc<Notify>,
}

impl Receiver {
    /// A receiver answering every request with `behave(index, hit)`.
    async fn start(behave: impl Fn(usize, &Hit) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let behave = Arc::new(behave);
        let (h, n) = (hits.clone(), notify.clone());
        let app = Router::new().fallback(move |request: Request| {
            let (hits, notify, behave) = (h.clone(), n.clone(), behave.clone());
            async move {
                let (parts, body) = request.into_parts();
                let hit = Hit {
                    at: Instant::now(),
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body: to_bytes(body, usize::MAX).await.unwrap(),
                };
                let index = {
                    let mut hits = hits.lock().unwrap();
                    hits.push(hit.clone());
                    hits.len() - 1
                };
                notify.notify_waiters();
                let reply = behave(index, &hit);
                tokio::time::sleep(reply.delay).await;
                let mut response = (reply.status, reply.body).into_response();
                for (name, value) in reply.headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, hits, notify }
    }

    async fn status(status: u16) -> Self {
        Self::start(move |_, _| Reply::status(status)).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    async fn wait_hits(&self, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let notified = self.notify.notified();
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} hits, got {}",
                hits.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

fn encode(url: &str) -> String {
    url.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Cerebrium's documented verification, verbatim logic: HMAC-SHA256 hex over `{id}.{ts}.{body}`.
fn verify_cerebrium(hit: &Hit, secret: &str) -> bool {
    let header = |name: &str| {
        hit.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signature = header("x-cerebrium-webhook-signature");
    let signature = signature.split_once(',').map_or(signature, |(_, s)| s);
    let signed = [
        header("x-request-id").as_bytes(),
        b".",
        header("x-cerebrium-webhook-timestamp").as_bytes(),
        b".",
        &hit.body,
    ]
    .concat();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&signed);
    hex::encode(mac.finalize().into_bytes()) == signature
}

fn gaps(hits: &[Hit]) -> Vec<Duration> {
    hits.windows(2).map(|w| w[1].at - w[0].at).collect()
}

// ---------------------------------------------------------------------------------------------
// The engine and the app under test

struct Harness {
    engine: DeliveryEngine,
    reports: tokio::sync::Mutex<mpsc::UnboundedReceiver<DeliveryReport>>,
}

impl Harness {
    fn new(builder: EngineBuilder) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = builder
            .on_finished(move |report| {
                let _ = tx.send(report.clone());
            })
            .build();
        Self {
            engine,
            reports: tokio::sync::Mutex::new(rx),
        }
    }

    /// Loopback allowed, 50 ms retry delays, 3 s attempts.
    fn fast() -> Self {
        Self::new(
            DeliveryEngine::builder()
                .guard(SsrfGuard::new().allow_loopback())
                .policy(fast_policy())
                .attempt_timeout(Duration::from_secs(3)),
        )
    }

    async fn finished(&self) -> DeliveryReport {
        tokio::time::timeout(Duration::from_secs(15), self.reports.lock().await.recv())
            .await
            .expect("a delivery finished in time")
            .expect("engine alive")
    }

    fn layer(&self) -> WebhookForwardLayer {
        WebhookForwardLayer::new(self.engine.clone())
    }
}

fn fast_policy() -> Policy {
    Policy::cerebrium().with_delays([Duration::from_millis(50); 2])
}

#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A Cerebrium-like app: `POST /v4/{project}/{app}/{function}` and a few misbehaving routes.
fn app(layer: WebhookForwardLayer, calls: &Calls) -> Router {
    let demo_calls = calls.clone();
    Router::new()
        .route(
            "/v4/{project}/{app}/{function}",
            post(move |request: Request| {
                demo_calls.0.fetch_add(1, Ordering::SeqCst);
                async move {
                    let run_id = request.extensions().get::<RunId>().map(|r| r.0.clone());
                    let saw_secret = request.headers().contains_key("x-webhook-secret");
                    let body = to_bytes(request.into_body(), usize::MAX).await.unwrap();
                    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    Json(json!({"smile": "wave", "run_id": run_id, "saw_secret": saw_secret, "input": input}))
                }
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Json(json!({"slow": true}))
            }),
        )
        .route(
            "/panic",
            post(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
        .route("/text", post(|| async { "plain text result" }))
        .route(
            "/self-chosen",
            post(|request: Request| async move {
                let target = request.headers()["x-target"].to_str().unwrap().to_owned();
                let mut response = Json(json!({"chosen": true})).into_response();
                response.extensions_mut().insert(ForwardTo::new(target).with_secret(SECRET));
                response
            }),
        )
        .layer(layer)
}

async fn call(app: &Router, uri: &str, secret: Option<&str>, body: Value) -> Response {
    let mut request = http::Request::post(uri).header("content-type", "application/json");
    if let Some(secret) = secret {
        request = request.header("x-webhook-secret", secret);
    }
    let request = request
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    app.clone().oneshot(request).await.unwrap()
}

async fn json_body(response: Response) -> Value {
    serde_json::from_slice(&to_bytes(response.into_body(), usize::MAX).await.unwrap()).unwrap()
}

fn forward_uri(path: &str, endpoint: &str) -> String {
    format!("{path}?webhookEndpoint={}", encode(endpoint))
}

// ---------------------------------------------------------------------------------------------
// Sync mode, signatures, bodies

#[tokio::test]
async fn sync_delivery_is_signed_enveloped_and_never_delays_the_caller() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let receiver = Receiver::status(200).await;

    let response = call(
        &app,
        &forward_uri("/v4/p-1/demo/run", &receiver.url("/hook")),
        Some(SECRET),
        json!({"param": "hello world"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let run_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer = json_body(response).await;
    // The caller's answer is the inner response, unchanged; the secret never reached it.
    assert_eq!(answer["smile"], "wave");
    assert_eq!(answer["run_id"], run_id.as_str());
    assert_eq!(answer["saw_secret"], false);
    assert_eq!(answer["input"]["param"], "hello world");

    let hit = receiver.wait_hits(1).await.remove(0);
    assert_eq!(hit.path, "/hook");
    assert_eq!(hit.headers["content-type"], "application/json");
    assert_eq!(hit.headers["x-request-id"], run_id.as_str());
    assert!(hit.headers["x-cerebrium-webhook-signature"]
        .to_str()
        .unwrap()
        .starts_with("v1,"));
    assert!(
        verify_cerebrium(&hit, SECRET),
        "signature verifies with Cerebrium's documented algorithm"
    );
    assert!(!verify_cerebrium(&hit, "another-secret"));
    let ts: u64 = hit.headers["x-cerebrium-webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ts.abs_diff(now) <= 5, "timestamp in Unix seconds");

    let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(envelope["run_id"], run_id.as_str());
    assert_eq!(envelope["status_code"], 200);
    assert_eq!(envelope["result"], answer);
    assert!(envelope["run_time_ms"].as_f64().unwrap() >= 0.0);
    assert!(envelope["timestamp"].as_u64().unwrap().abs_diff(now) <= 5);
    let keys: Vec<_> = envelope.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");

    let report = harness.finished().await;
    assert_eq!(
        (report.id.as_str(), report.state, report.attempts),
        (run_id.as_str(), DeliveryState::Delivered, 1)
    );
    assert_eq!(calls.count(), 1);
}

#[tokio::test]
async fn unsigned_without_secret_raw_body_and_text_results() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let receiver = Receiver::status(200).await;

    // No secret: delivered unsigned, still with X-Request-Id; a text result is a JSON string.
    let app_envelope = app(harness.layer(), &calls);
    let response = call(
        &app_envelope,
        &forward_uri("/text", &receiver.url("/a")),
        None,
        json!({}),
    )
    .await;
    assert_eq!(
        to_bytes(response.into_body(), usize::MAX).await.unwrap(),
        "plain text result"
    );
    let hit = receiver.wait_hits(1).await.remove(0);
    assert!(hit.headers.get("x-cerebrium-webhook-signature").is_none());
    assert!(hit.headers.contains_key("x-request-id"));
    let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(envelope["result"], "plain text result");

    // Raw mode: the inner body unchanged, signed over those exact bytes.
    let app_raw = app(
        harness.layer().raw_body().default_secret("default-secret"),
        &calls,
    );
    let response = call(
        &app_raw,
        &forward_uri("/v4/p/a/f", &receiver.url("/b")),
        None,
        json!({"x": 1}),
    )
    .await;
    let inner = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let hit = receiver.wait_hits(2).await.remove(1);
    assert_eq!(hit.body, inner);
    assert!(
        verify_cerebrium(&hit, "default-secret"),
        "the default secret signs"
    );
}

#[tokio::test]
async fn programmatic_triggers() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let receiver = Receiver::status(200).await;

    // A response extension chosen by the handler.
    let app1 = app(harness.layer(), &calls);
    let request = http::Request::post("/self-chosen")
        .header("x-target", receiver.url("/chosen"))
        .body(Body::empty())
        .unwrap();
    let response = app1.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    drop(to_bytes(response.into_body(), usize::MAX).await.unwrap());
    let hit = receiver.wait_hits(1).await.remove(0);
    assert_eq!(hit.path, "/chosen");
    assert!(verify_cerebrium(&hit, SECRET));

    // A closure choosing the endpoint from the request.
    let url = receiver.url("/by-fn");
    let app2 = app(
        harness.layer().endpoint_fn(move |parts| {
            (parts.uri.path() == "/v4/p/a/by-fn").then(|| ForwardTo::new(url.clone()))
        }),
        &calls,
    );
    let response = call(&app2, "/v4/p/a/by-fn", None, json!({})).await;
    assert!(response.headers().contains_key("x-request-id"));
    drop(to_bytes(response.into_body(), usize::MAX).await.unwrap());
    let hits = receiver.wait_hits(2).await;
    assert_eq!(hits[1].path, "/by-fn");

    // Without a trigger nothing is forwarded and no X-Request-Id is added.
    let response = call(&app2, "/v4/p/a/other", None, json!({})).await;
    assert!(!response.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn bad_endpoints_are_400_problems_before_the_inner_service() {
    let harness = Harness::fast();
    let calls = Calls::default();
    // The legacy body field is on so that its bad values are checked too.
    let app = app(harness.layer().legacy_body_field(true), &calls);
    for endpoint in [
        "not a url",
        "ftp://example.com/x",
        "/relative",
        "http://user:pw@example.com/",
        "",
    ] {
        for asynchronous in ["", "&async=true"] {
            let uri = format!(
                "/v4/p/a/f?webhookEndpoint={}{asynchronous}",
                encode(endpoint)
            );
            let response = call(&app, &uri, None, json!({})).await;
            assert_eq!(response.status(), 400, "{endpoint:?}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem = json_body(response).await;
            assert_eq!(
                problem["type"],
                "tag:tower-webhooks,2026:webhook-endpoint-invalid"
            );
        }
    }
    let response = call(&app, "/v4/p/a/f", None, json!({"webhook_endpoint": 42})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(calls.count(), 0, "the inner service never ran");
}

// ---------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn retry_table_status_by_status() {
    // (status the endpoint answers, attempts expected, final state)
    let table: &[(u16, usize, DeliveryState)] = &[
        (200, 1, DeliveryState::Delivered),
        (201, 1, DeliveryState::Delivered),
        (204, 1, DeliveryState::Delivered),
        (404, 3, DeliveryState::Failed),
        (400, 1, DeliveryState::Failed),
        (401, 1, DeliveryState::Failed),
        (403, 1, DeliveryState::Failed),
        (410, 1, DeliveryState::Failed),
        (429, 1, DeliveryState::Failed),
        (500, 1, DeliveryState::Failed),
        (502, 1, DeliveryState::Failed),
        (503, 1, DeliveryState::Failed),
        (300, 3, DeliveryState::Failed),
        (302, 3, DeliveryState::Failed),
        (304, 3, DeliveryState::Failed),
        (307, 3, DeliveryState::Failed),
        (308, 3, DeliveryState::Failed),
    ];
    let harness = Harness::fast();
    let redirect_target = Receiver::status(200).await;
    let mut receivers = Vec::new();
    for &(status, _, _) in table {
        let location = redirect_target.url("/moved");
        let receiver =
            Receiver::start(move |_, _| Reply::status(status).header("location", location.clone()))
                .await;
        let id = format!("retry-{status}");
        let delivery =
            tower_webhooks::delivery::Delivery::new(id.clone(), receiver.url("/hook"), "{}");
        harness.engine.submit(delivery).await.unwrap();
        receivers.push((id, receiver));
    }
    for _ in table {
        harness.finished().await;
    }
    for ((status, attempts, state), (id, receiver)) in table.iter().zip(&receivers) {
        let hits = receiver.hits();
        assert_eq!(hits.len(), *attempts, "HTTP {status}: attempts");
        for gap in gaps(&hits) {
            assert!(
                gap >= Duration::from_millis(45),
                "HTTP {status}: gap {gap:?}"
            );
        }
        let conversation = harness.engine.conversation(id).await.unwrap().unwrap();
        assert_eq!(conversation.delivery.state, *state, "HTTP {status}");
        assert_eq!(conversation.attempts.len(), *attempts);
        assert!(conversation
            .attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::Status(*status)));
        if *attempts == 3 {
            assert!(matches!(
                conversation.attempts[0].decision,
                Decision::RetryAt(_)
            ));
            assert!(conversation
                .delivery
                .last_error
                .as_deref()
                .unwrap()
                .contains("3 attempts exhausted"));
        }
    }
    assert!(
        redirect_target.hits().is_empty(),
        "redirects are never followed"
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .guard(SsrfGuard::new().allow_loopback())
            .policy(fast_policy())
            .attempt_timeout(Duration::from_millis(200)),
    );
    let slow = Receiver::start(|_, _| Reply::status(200).delay(Duration::from_secs(3))).await;
    // A closed port: bind, learn the port, close.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let engine = &harness.engine;
    engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "slow",
            slow.url("/"),
            "{}",
        ))
        .await
        .unwrap();
    engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "closed",
            format!("http://{closed}/"),
            "{}",
        ))
        .await
        .unwrap();
    harness.finished().await;
    harness.finished().await;

    let hits = slow.hits();
    assert_eq!(hits.len(), 3, "timeouts are retried");
    for gap in gaps(&hits) {
        assert!(
            gap >= Duration::from_millis(240) && gap < Duration::from_secs(2),
            "{gap:?}"
        );
    }
    let conversation = engine.conversation("slow").await.unwrap().unwrap();
    assert!(conversation
        .attempts
        .iter()
        .all(|a| a.outcome == AttemptOutcome::Timeout));
    assert_eq!(conversation.delivery.state, DeliveryState::Failed);

    let conversation = engine.conversation("closed").await.unwrap().unwrap();
    assert_eq!(
        conversation.attempts.len(),
        3,
        "refused connections are retried"
    );
    assert!(
        conversation
            .attempts
            .iter()
            .all(|a| matches!(a.outcome, AttemptOutcome::Connect(_))),
        "{:?}",
        conversation.attempts[0].outcome
    );
    let starts: Vec<_> = conversation.attempts.iter().map(|a| a.started_at).collect();
    for pair in starts.windows(2) {
        assert!(pair[1].duration_since(pair[0]).unwrap() >= Duration::from_millis(45));
    }
}

#[tokio::test]
async fn real_cerebrium_preset_retries_at_most_5s_apart() {
    let harness = Harness::new(DeliveryEngine::builder().guard(SsrfGuard::new().allow_loopback()));
    let receiver = Receiver::status(404).await;
    harness
        .engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "preset",
            receiver.url("/"),
            "{}",
        ))
        .await
        .unwrap();
    let report = harness.finished().await;
    assert_eq!((report.state, report.attempts), (DeliveryState::Failed, 3));
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3);
    for gap in gaps(&hits) {
        assert!(gap <= Duration::from_secs(5), "at most 5 s apart: {gap:?}");
        assert!(gap >= Duration::from_secs(1), "{gap:?}");
    }
}

#[tokio::test]
async fn conversation_records_every_attempt() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    // First a 404 with a long body (kept truncated), then a 200.
    let receiver = Receiver::start(|index, _| match index {
        0 => Reply::status(404)
            .body(vec![b'x'; 30_000])
            .header("set-cookie", "session=1"),
        _ => Reply::status(200).body("thanks"),
    })
    .await;
    let response = call(
        &app,
        &forward_uri("/v4/p/a/f", &receiver.url("/h")),
        Some(SECRET),
        json!({}),
    )
    .await;
    let run_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    drop(to_bytes(response.into_body(), usize::MAX).await.unwrap());
    harness.finished().await;

    let hits = receiver.hits();
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter().all(|hit| verify_cerebrium(hit, SECRET)),
        "each attempt is signed"
    );
    assert_eq!(hits[0].body, hits[1].body, "the same bytes every attempt");
    let conversation = harness.engine.conversation(&run_id).await.unwrap().unwrap();
    assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
    let [first, second] = &conversation.attempts[..] else {
        panic!("two attempts")
    };
    assert_eq!((first.number, second.number), (1, 2));
    let header = |name: &str| first.request_headers.get(name).unwrap().to_owned();
    assert_eq!(header("x-cerebrium-webhook-signature"), "[redacted]");
    assert_eq!(header("x-request-id"), run_id);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(first.body_size, hits[0].body.len());
    assert_eq!(
        first.body_sha256,
        hex::encode(Sha256::digest(&hits[0].body))
    );
    let response = first.response.as_ref().unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.body.len(), 20_000);
    assert!(response.body_truncated);
    assert_eq!(response.headers.get("set-cookie"), Some("[redacted]"));
    assert!(matches!(first.decision, Decision::RetryAt(_)));
    assert_eq!(second.response.as_ref().unwrap().body, "thanks");
    assert_eq!(second.decision, Decision::Delivered);
    assert!(
        !format!("{conversation:?}").contains(SECRET),
        "no secret in the log"
    );
    let listed = harness
        .engine
        .conversations(
            &tower_webhooks::delivery::ConversationQuery::new().endpoint(receiver.url("/h")),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Async modes

#[tokio::test]
async fn async_mode_answers_202_then_delivers() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let receiver = Receiver::status(200).await;

    let started = Instant::now();
    let uri = format!(
        "/slow?async=true&webhookEndpoint={}",
        encode(&receiver.url("/async"))
    );
    let response = call(&app, &uri, Some(SECRET), json!({})).await;
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "answered before the work ends"
    );
    assert_eq!(response.status(), 202);
    let run_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(json_body(response).await, json!({"run_id": run_id}));

    let hit = receiver.wait_hits(1).await.remove(0);
    assert!(hit.at - started >= Duration::from_millis(300));
    assert!(verify_cerebrium(&hit, SECRET));
    let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(envelope["run_id"], run_id.as_str());
    assert_eq!(envelope["status_code"], 200);
    assert_eq!(envelope["result"], json!({"slow": true}));
    assert!(envelope["run_time_ms"].as_f64().unwrap() >= 300.0);
    assert_eq!(
        harness.finished().await.source,
        tower_webhooks::delivery::Source::origin("forward_async")
    );
}

#[tokio::test]
async fn legacy_body_field_answers_200_with_message() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let app = app(harness.layer().legacy_body_field(true), &calls);
    let receiver = Receiver::status(200).await;
    let endpoint = receiver.url("/legacy");

    let body =
        json!({"prompt": "An astronaut riding a horse in space", "webhook_endpoint": endpoint});
    let response = call(&app, "/v4/p/a/predict", None, body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer = json_body(response).await;
    let run_id = answer["run_id"].as_str().unwrap().to_owned();
    assert_eq!(answer["webhook_endpoint"], endpoint.as_str());
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("when the task is complete"));

    let hit = receiver.wait_hits(1).await.remove(0);
    assert_eq!(hit.headers["x-request-id"], run_id.as_str());
    let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(
        envelope["result"]["input"], body,
        "the inner service saw the body intact"
    );
    assert_eq!(envelope["result"]["run_id"], run_id.as_str());

    // A JSON body without the field is passed through untouched.
    let response = call(&app, "/v4/p/a/predict", None, json!({"prompt": "x"})).await;
    assert_eq!(json_body(response).await["input"], json!({"prompt": "x"}));
    assert_eq!(calls.count(), 2);
}

/// Without `legacy_body_field(true)` a `webhook_endpoint` field is the inner service's own
/// data: no run starts, no delivery is made, and the body reaches the service untouched.
#[tokio::test]
async fn legacy_body_field_is_off_by_default() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let receiver = Receiver::status(200).await;

    let body = json!({"prompt": "x", "webhook_endpoint": receiver.url("/legacy")});
    let response = call(&app, "/v4/p/a/predict", Some(SECRET), body.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(
        !response.headers().contains_key("x-request-id"),
        "no run was started"
    );
    let answer = json_body(response).await;
    assert_eq!(answer["smile"], "wave", "the inner service answered");
    assert_eq!(answer["input"], body, "it saw the body intact");
    assert_eq!(answer["run_id"], Value::Null, "and no run id");
    assert_eq!(calls.count(), 1);
    let stats = harness.engine.stats().await.unwrap();
    assert_eq!(stats.outstanding, 0, "no delivery slot was taken");
    let stored = stats.store.pending + stats.store.in_flight + stats.store.finished;
    assert_eq!(stored, 0, "nothing was stored");
}

/// The body is only buffered when the legacy field is asked for: by default the inner service
/// runs while the request body is still arriving (here it never ends), and with the field on
/// the layer waits for the body before it runs.
#[tokio::test]
async fn only_the_legacy_body_field_buffers_json_bodies() {
    fn endless_json() -> http::Request<Body> {
        let first =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"{\"a\":"))]);
        let endless = futures_util::StreamExt::chain(first, futures_util::stream::pending());
        http::Request::post("/")
            .header("content-type", "application/json")
            .body(Body::from_stream(endless))
            .unwrap()
    }
    let harness = Harness::fast();
    // Answers without reading the body.
    let service = tower::service_fn(|_request: http::Request<_>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("ran")))
    });

    let default = harness.layer().layer(service);
    let response = tokio::time::timeout(Duration::from_secs(10), default.oneshot(endless_json()))
        .await
        .expect("the inner service ran without waiting for the body")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        &http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes()[..],
        b"ran"
    );

    let legacy = harness.layer().legacy_body_field(true).layer(service);
    let pending =
        tokio::time::timeout(Duration::from_millis(300), legacy.oneshot(endless_json())).await;
    assert!(
        pending.is_err(),
        "with the legacy field on, the body is read first"
    );
}

#[tokio::test]
async fn async_failures_and_panics_are_delivered() {
    let harness = Harness::fast();
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let receiver = Receiver::status(200).await;
    let uri = format!(
        "/panic?async=true&webhookEndpoint={}",
        encode(&receiver.url("/p"))
    );
    let response = call(&app, &uri, None, json!({})).await;
    assert_eq!(response.status(), 202);
    let hit = receiver.wait_hits(1).await.remove(0);
    let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(envelope["status_code"], 500);
    assert!(
        envelope["error"]
            .as_str()
            .unwrap()
            .contains("panicked: boom"),
        "{envelope}"
    );

    // An inner error status is delivered as it is.
    let uri = format!(
        "/missing?async=true&webhookEndpoint={}",
        encode(&receiver.url("/p"))
    );
    let response = call(&app, &uri, None, json!({})).await;
    assert_eq!(response.status(), 202);
    let hit = receiver.wait_hits(2).await.remove(1);
    let envelope: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(envelope["status_code"], 404);
}

// ---------------------------------------------------------------------------------------------
// SSRF guard

#[tokio::test]
async fn ssrf_guard_refuses_internal_endpoints() {
    // The default guard: nothing internal allowed.
    let harness = Harness::new(DeliveryEngine::builder().policy(fast_policy()));
    let calls = Calls::default();
    let app = app(harness.layer().legacy_body_field(true), &calls);
    let receiver = Receiver::status(200).await;
    let port = receiver.addr.port();

    // Sync mode: the caller gets its answer; the delivery is recorded as refused.
    for (endpoint, why) in [
        (format!("http://127.0.0.1:{port}/"), "loopback"),
        (format!("http://localhost:{port}/"), "localhost resolves to"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local",
        ),
        ("http://[::ffff:169.254.169.254]/".to_owned(), "link-local"),
        ("http://10.0.0.1/".to_owned(), "private"),
    ] {
        let response = call(&app, &forward_uri("/v4/p/a/f", &endpoint), None, json!({})).await;
        assert_eq!(response.status(), 200, "{endpoint}");
        let run_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        drop(to_bytes(response.into_body(), usize::MAX).await.unwrap());
        let report = harness.finished().await;
        assert_eq!(report.id, run_id);
        assert_eq!(report.state, DeliveryState::Refused, "{endpoint}");
        assert_eq!(report.attempts, 1, "a refusal is not retried");
        let conversation = harness.engine.conversation(&run_id).await.unwrap().unwrap();
        let AttemptOutcome::Refused(detail) = &conversation.attempts[0].outcome else {
            panic!("{endpoint}: {:?}", conversation.attempts[0].outcome)
        };
        assert!(detail.contains(why), "{endpoint}: {detail}");
        assert_eq!(conversation.attempts[0].decision, Decision::Refused);
    }
    assert!(receiver.hits().is_empty(), "nothing reached the receiver");

    // Async mode: a clear 400 at once, literal or resolved.
    for endpoint in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        "http://169.254.169.254/".to_owned(),
        "http://[fe80::1]/".to_owned(),
    ] {
        let uri = format!("/v4/p/a/f?async=true&webhookEndpoint={}", encode(&endpoint));
        let response = call(&app, &uri, None, json!({})).await;
        assert_eq!(response.status(), 400, "{endpoint}");
        let problem = json_body(response).await;
        assert_eq!(
            problem["type"], "tag:tower-webhooks,2026:webhook-endpoint-refused",
            "{endpoint}"
        );
    }
    let response = call(
        &app,
        "/v4/p/a/f",
        None,
        json!({"webhook_endpoint": "http://127.0.0.1/"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        calls.count(),
        5,
        "only the sync calls ran the inner service"
    );
}

#[tokio::test]
async fn impossible_ports_and_ipv4_carrying_ipv6_endpoints_are_400_problems() {
    // Loopback is allowed, so only the port can make these fail (they used to go to port 80).
    let harness = Harness::fast();
    let calls = Calls::default();
    let loopback_app = app(harness.layer(), &calls);
    for endpoint in [
        "http://127.0.0.1:69686/",
        "http://127.0.0.1:0/",
        "http://[::1]:65536/",
    ] {
        for asynchronous in ["", "&async=true"] {
            let uri = format!(
                "/v4/p/a/f?webhookEndpoint={}{asynchronous}",
                encode(endpoint)
            );
            let response = call(&loopback_app, &uri, None, json!({})).await;
            assert_eq!(response.status(), 400, "{endpoint}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem = json_body(response).await;
            assert_eq!(
                problem["type"], "tag:tower-webhooks,2026:webhook-endpoint-invalid",
                "{endpoint}"
            );
            assert!(
                problem["detail"].as_str().unwrap().contains("port"),
                "{problem}"
            );
        }
    }
    assert_eq!(calls.count(), 0, "the inner service never ran");

    // IPv6 forms that carry a refused IPv4 address (async: refused at once).
    let harness = Harness::new(DeliveryEngine::builder().policy(fast_policy()));
    let guarded_app = app(harness.layer(), &calls);
    for endpoint in [
        "http://[64:ff9b:1::a00:1]/",
        "http://[::ffff:0:a9fe:a9fe]/",
        "http://[2001:0:5ef5:79fb::f5ff:fffe]/",
        "http://[2002:7f00:1::1]/",
        "http://[64:ff9b::7f00:1]/",
    ] {
        let uri = format!("/v4/p/a/f?async=true&webhookEndpoint={}", encode(endpoint));
        let response = call(&guarded_app, &uri, None, json!({})).await;
        assert_eq!(response.status(), 400, "{endpoint}");
        assert_eq!(
            json_body(response).await["type"],
            "tag:tower-webhooks,2026:webhook-endpoint-refused",
            "{endpoint}"
        );
    }
    assert_eq!(calls.count(), 0);
}

#[tokio::test]
async fn allow_listed_loopback_is_delivered() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .policy(fast_policy())
            .guard(SsrfGuard::new().allow_cidr("127.0.0.1/32").unwrap()),
    );
    let receiver = Receiver::status(200).await;
    harness
        .engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "ok",
            receiver.url("/"),
            "{}",
        ))
        .await
        .unwrap();
    assert_eq!(harness.finished().await.state, DeliveryState::Delivered);
    // The name is not allow-listed, only the literal range: `localhost` resolves and connects
    // only to allowed addresses (127.0.0.1 here, never ::1).
    harness
        .engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "by-name",
            format!("http://localhost:{}/", receiver.addr.port()),
            "{}",
        ))
        .await
        .unwrap();
    assert_eq!(harness.finished().await.state, DeliveryState::Delivered);
    assert_eq!(receiver.hits().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Backpressure, isolation, shutdown

#[tokio::test]
async fn full_queue_answers_503_with_retry_after() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .guard(SsrfGuard::new().allow_loopback())
            .capacity(2)
            .busy_retry_after(Duration::from_secs(3)),
    );
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let receiver =
        Receiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(800))).await;
    let uri = forward_uri("/v4/p/a/f", &receiver.url("/"));
    for _ in 0..2 {
        let response = call(&app, &uri, None, json!({})).await;
        assert_eq!(response.status(), 200);
        drop(to_bytes(response.into_body(), usize::MAX).await.unwrap());
    }
    let response = call(&app, &uri, None, json!({})).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        json_body(response).await["type"],
        "tag:tower-webhooks,2026:webhook-queue-full"
    );
    assert_eq!(calls.count(), 2, "checked before the inner service ran");
    // Requests without a trigger are unaffected.
    assert_eq!(call(&app, "/v4/p/a/f", None, json!({})).await.status(), 200);

    harness.finished().await;
    let response = call(&app, &uri, None, json!({})).await;
    assert_eq!(response.status(), 200, "a slot is free again");
}

/// A handler's `ForwardTo` that the full engine cannot take is answered with
/// the problem (it was logged and dropped, the caller seeing a `200`).
#[tokio::test]
async fn a_refused_forward_to_is_a_problem_not_a_silent_drop() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .guard(SsrfGuard::new().allow_loopback())
            .capacity(1),
    );
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let receiver =
        Receiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(800))).await;
    let response = call(
        &app,
        &forward_uri("/v4/p/a/f", &receiver.url("/")),
        None,
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request = http::Request::post("/self-chosen")
        .header("content-type", "application/json")
        .header("x-target", receiver.url("/chosen"))
        .body(Body::from("{}"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        json_body(response).await["type"],
        "tag:tower-webhooks,2026:webhook-queue-full"
    );
}

/// A forwarded delivery's owner is its endpoint host. A host holding its
/// share of queued deliveries gets `429` + `Retry-After`; another host is still accepted.
#[tokio::test]
async fn a_host_over_its_share_gets_429_and_other_hosts_do_not() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .guard(SsrfGuard::new().allow_loopback())
            .max_queued_per_owner(1)
            .busy_retry_after(Duration::from_secs(2)),
    );
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let slow = Receiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(800))).await;
    let other = Receiver::status(200).await;
    let slow_uri = forward_uri("/v4/p/a/f", &slow.url("/"));
    assert_eq!(call(&app, &slow_uri, None, json!({})).await.status(), 200);
    let response = call(&app, &slow_uri, None, json!({})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        json_body(response).await["type"],
        "tag:tower-webhooks,2026:webhook-owner-queue-full"
    );
    let other_uri = forward_uri("/v4/p/a/f", &other.url("/"));
    assert_eq!(call(&app, &other_uri, None, json!({})).await.status(), 200);
}

#[tokio::test]
async fn a_slow_endpoint_does_not_stall_the_others() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .guard(SsrfGuard::new().allow_loopback())
            .policy(fast_policy())
            .max_in_flight(4)
            .max_per_endpoint(2)
            .attempt_timeout(Duration::from_secs(5)),
    );
    let slow = Receiver::start(|_, _| Reply::status(200).delay(Duration::from_millis(1500))).await;
    let fast = Receiver::status(200).await;
    for i in 0..8 {
        let delivery =
            tower_webhooks::delivery::Delivery::new(format!("slow-{i}"), slow.url("/"), "{}");
        harness.engine.submit(delivery).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    harness
        .engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "fast",
            fast.url("/"),
            "{}",
        ))
        .await
        .unwrap();
    let report = harness.finished().await;
    assert_eq!(report.id, "fast");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert!(
        slow.hits().len() <= 2,
        "at most 2 in flight to one endpoint"
    );
}

#[tokio::test]
async fn shutdown_drains_within_the_deadline() {
    let harness = Harness::fast();
    let receiver = Receiver::start(|index, _| match index {
        // One retry during the drain.
        0 => Reply::status(404),
        _ => Reply::status(200).delay(Duration::from_millis(200)),
    })
    .await;
    for i in 0..5 {
        let delivery =
            tower_webhooks::delivery::Delivery::new(format!("d{i}"), receiver.url("/"), "{}");
        harness.engine.submit(delivery).await.unwrap();
    }
    let report = harness.engine.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained, "{report:?}");
    assert_eq!(report.unfinished, 0);
    assert_eq!(receiver.hits().len(), 6);
    for i in 0..5 {
        let conversation = harness
            .engine
            .conversation(&format!("d{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
    }
    // After shutdown, forward requests get 503.
    let calls = Calls::default();
    let app = app(harness.layer(), &calls);
    let response = call(
        &app,
        &forward_uri("/v4/p/a/f", &receiver.url("/")),
        None,
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(calls.count(), 0);
}

#[tokio::test]
async fn shutdown_gives_up_at_the_deadline() {
    let harness = Harness::new(
        DeliveryEngine::builder()
            .guard(SsrfGuard::new().allow_loopback())
            .attempt_timeout(Duration::from_secs(30)),
    );
    let receiver = Receiver::start(|_, _| Reply::status(200).delay(Duration::from_secs(5))).await;
    harness
        .engine
        .submit(tower_webhooks::delivery::Delivery::new(
            "stuck",
            receiver.url("/"),
            "{}",
        ))
        .await
        .unwrap();
    receiver.wait_hits(1).await;
    let started = Instant::now();
    let report = harness.engine.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!report.drained);
    assert_eq!(report.unfinished, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let conversation = harness.engine.conversation("stuck").await.unwrap().unwrap();
    assert_eq!(
        conversation.delivery.state,
        DeliveryState::Pending,
        "returned to the queue"
    );
    assert!(conversation.attempts.is_empty());
}
