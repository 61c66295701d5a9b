//! The subscription registry through its HTTP API: every route's success and error answers,
//! tenant isolation, publishing to real local receivers (axum servers on 127.0.0.1 started
//! here) verified with Nextmv's documented algorithm, secret rotation with an injectable clock,
//! endpoint health (auto-disable, `410 Gone`, re-enable), rate limits, and the OpenAPI
//! document against the router.
#![cfg(feature = "registry")]

#[path = "../examples/gateway/run_status.rs"]
mod run_status;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::run_status::{RunState, RunStatus};
use axum::body::{to_bytes, Body};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_webhooks::delivery::DeliveryState;
use tower_webhooks::delivery::{EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::registry::{
    api, BearerTokens, DisabledNotice, EventType, HealthRule, Owner, PublishError, WebhookKey,
    WebhookRegistry,
};
use tower_webhooks::scheme::{Scheme, StandardWebhooks, Verification};
use tower_webhooks::SecretSet;

/// The `last_error` of a delivery cancelled by `WebhookRegistry::delete`.
const WEBHOOK_DELETED: &str = "webhook deleted: not sent";

const ACME: &str = "key-acme";
const GLOBEX: &str = "key-globex";

// ---------------------------------------------------------------------------------------------
// Receivers

#[derive(Clone, Debug)]
struct Hit {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
    notify: Arc<Notify>,
}

impl Receiver {
    async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// A receiver on `addr` (a port a test kept down until now).
    async fn start_on(addr: SocketAddr) -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let notify = Arc::new(Notify::new());
        let app = Router::new().route(
            "/{*path}",
            any({
                let (hits, status, notify) = (hits.clone(), status.clone(), notify.clone());
                move |headers: HeaderMap, body: Bytes| {
                    let (hits, status, notify) = (hits.clone(), status.clone(), notify.clone());
                    async move {
                        hits.lock().unwrap().push(Hit { headers, body });
                        notify.notify_waiters();
                        StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            hits,
            status,
            notify,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.notify.notified();
            let hits = self.hits();
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} requests, got {}",
                hits.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A registry, a clock, and requests

#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }

    fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.0.load(Ordering::SeqCst))
    }
}

struct Setup {
    registry: WebhookRegistry,
    router: Router,
    clock: TestClock,
    notices: Arc<Mutex<Vec<DisabledNotice>>>,
}

fn engine() -> EngineBuilder {
    EngineBuilder::new()
        .guard(SsrfGuard::new().allow_host("127.0.0.1"))
        .policy(Policy::custom([Duration::from_millis(10)]))
        .attempt_timeout(Duration::from_secs(5))
}

fn setup() -> Setup {
    setup_with(|builder| builder)
}

fn setup_with(
    configure: impl FnOnce(
        tower_webhooks::registry::RegistryBuilder,
    ) -> tower_webhooks::registry::RegistryBuilder,
) -> Setup {
    let clock = TestClock::default();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let builder = WebhookRegistry::builder()
        .engine(engine())
        .event_type(crate::run_status::event_type())
        .event_type(EventType::new(
            "app.deployed",
            "An application version went live",
        ))
        .auth(
            BearerTokens::new()
                .token(ACME, "acme")
                .token(GLOBEX, "globex"),
        )
        .clock({
            let clock = clock.clone();
            move || clock.now()
        })
        .on_disabled({
            let notices = notices.clone();
            move |notice| notices.lock().unwrap().push(notice.clone())
        });
    let registry = configure(builder).build();
    Setup {
        router: registry.router(),
        registry,
        clock,
        notices,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Answer {
    /// The problem `type` slug.
    fn problem(&self) -> &str {
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{:?}",
            self.json
        );
        self.json["type"]
            .as_str()
            .unwrap()
            .strip_prefix("tag:tower-webhooks,2026:")
            .unwrap()
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Answer {
        status,
        headers,
        json,
    }
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    send(router, request.body(body).unwrap()).await
}

async fn raw(
    router: &Router,
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .unwrap();
    send(router, request).await
}

async fn create(router: &Router, token: &str, body: Value) -> Answer {
    call(router, Method::POST, "/v1/webhooks", token, Some(body)).await
}

async fn create_ok(router: &Router, token: &str, id: &str, url: &str) -> Value {
    let answer = create(
        router,
        token,
        json!({"id": id, "endpoint_url": url, "event_types": ["run.status"], "description": "test"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json);
    answer.json
}

async fn secret(router: &Router, token: &str, id: &str) -> Value {
    let answer = call(
        router,
        Method::GET,
        &format!("/v1/webhooks/{id}/secret"),
        token,
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    answer.json
}

async fn webhook(router: &Router, token: &str, id: &str) -> Value {
    let answer = call(
        router,
        Method::GET,
        &format!("/v1/webhooks/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    answer.json
}

fn run_status(status: RunState) -> RunStatus {
    RunStatus::new("run-1", "routing-app", status, SystemTime::now())
}

/// Waits until `check` holds for the webhook's JSON view.
async fn wait_webhook(
    router: &Router,
    token: &str,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = webhook(router, token, id).await;
        if check(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "webhook never reached the state: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the conversation reaches `state`.
async fn wait_conversation(
    router: &Router,
    token: &str,
    id: &str,
    delivery: &str,
    state: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = call(
            router,
            Method::GET,
            &format!("/v1/webhooks/{id}/conversations/{delivery}"),
            token,
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        if answer.json["state"] == state {
            return answer.json;
        }
        assert!(
            Instant::now() < deadline,
            "conversation stuck: {}",
            answer.json
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Nextmv's documented verification algorithm

/// `check_signature` from Nextmv's handler, generalised to several `v1` entries: split the
/// header on `,`, take `t`, recompute HMAC-SHA256 over `{t}.{body}` with the raw UTF-8 secret,
/// lowercase hex, and compare with each `v1` value.
fn nextmv_verifies(header: &str, body: &[u8], secret: &str) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.split_once('=').unwrap();
        match key {
            "t" => t = Some(value),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let t = t.expect("t in the header");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature_time: i64 = t.parse().unwrap();
    // Nextmv's documented window: not older than 5 minutes and not in the future.
    assert!(now - 300 < signature_time && signature_time < now + 60);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let recomputed = hex::encode(mac.finalize().into_bytes());
    signatures.iter().any(|s| *s == recomputed)
}

// ---------------------------------------------------------------------------------------------
// End to end

#[tokio::test]
async fn end_to_end_run_status_nextmv_signature_and_rotation() {
    let Setup {
        registry,
        router,
        clock,
        ..
    } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "runs", &receiver.url("/webhookhandler")).await;
    let answer = call(
        &router,
        Method::PUT,
        "/v1/webhooks/runs/headers",
        ACME,
        Some(json!({"headers": {"X-Tenant": "acme", "X-Api-Key": "receiver-key"}})),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    // Custom header values are write-only.
    assert_eq!(answer.json["headers"]["x-tenant"], "[redacted]");
    assert_eq!(answer.json["headers"]["x-api-key"], "[redacted]");
    let first = secret(&router, ACME, "runs").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.len(), 64, "32 random bytes in hex");

    // A run goes through its states; each one is published.
    for state in [RunState::Queued, RunState::Running, RunState::Succeeded] {
        let report = registry
            .broadcast(RunStatus::TYPE, &run_status(state))
            .await
            .unwrap();
        assert_eq!(report.deliveries.len(), 1);
        assert!(report.rejected.is_empty());
    }
    let hits = receiver.wait_for(3).await;
    let mut states = Vec::new();
    for hit in &hits {
        let header = hit.headers["nextmv-signature"].to_str().unwrap();
        // One secret: exactly the two parts Nextmv's documented handler unpacks (`t, sig = ….split(",")`).
        assert_eq!(header.split(',').count(), 2, "{header}");
        assert!(nextmv_verifies(header, &hit.body, &first));
        assert!(!nextmv_verifies(header, &hit.body, "another-secret"));
        assert_eq!(hit.headers["content-type"], "application/json");
        assert_eq!(hit.headers["x-tenant"], "acme");
        assert_eq!(hit.headers["x-api-key"], "receiver-key");
        let event: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(event["type"], "run.status");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert!(event["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(event["data"]["run_id"], "run-1");
        assert_eq!(event["data"]["application_id"], "routing-app");
        states.push(event["data"]["status"].as_str().unwrap().to_owned());
        // The delivery id is the conversation's id.
        let delivery = hit.headers["x-request-id"].to_str().unwrap();
        assert!(delivery.starts_with("dlv_"));
        let conversation = wait_conversation(&router, ACME, "runs", delivery, "delivered").await;
        assert_eq!(conversation["event_type"], "run.status");
        assert_eq!(conversation["attempts"][0]["response"]["status"], 200);
        let recorded = conversation["attempts"][0]["request_headers"].to_string();
        assert!(
            !recorded.contains(&first),
            "the secret is not in conversations"
        );
        assert!(
            !recorded.contains("receiver-key"),
            "custom credential headers are redacted"
        );
    }
    states.sort();
    assert_eq!(states, ["queued", "running", "succeeded"]);

    // Rotation: both secrets sign during the grace period.
    let rotated = call(
        &router,
        Method::POST,
        "/v1/webhooks/runs/secret/rotate",
        ACME,
        None,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.json);
    let second = rotated.json["secret"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(rotated.json["previous"][0]["secret"], first.as_str());
    let view = webhook(&router, ACME, "runs").await;
    assert!(view["rotation_ends_at"].is_string());
    let shown = secret(&router, ACME, "runs").await;
    assert_eq!(shown["secret"], second.as_str());
    assert_eq!(shown["previous"].as_array().unwrap().len(), 1);

    let _published = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Failed))
        .await
        .unwrap();
    let hit = receiver.wait_for(4).await.pop().unwrap();
    let header = hit.headers["nextmv-signature"].to_str().unwrap();
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    assert!(
        nextmv_verifies(header, &hit.body, &first),
        "old secret during grace"
    );
    assert!(
        nextmv_verifies(header, &hit.body, &second),
        "new secret during grace"
    );

    // After the grace period (24 h by default) only the new one signs.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert!(secret(&router, ACME, "runs").await["previous"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(webhook(&router, ACME, "runs").await["rotation_ends_at"].is_null());
    let _published = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Canceled))
        .await
        .unwrap();
    let hit = receiver.wait_for(5).await.pop().unwrap();
    let header = hit.headers["nextmv-signature"].to_str().unwrap();
    assert_eq!(header.split(',').count(), 2, "{header}");
    assert!(nextmv_verifies(header, &hit.body, &second));
    assert!(!nextmv_verifies(header, &hit.body, &first));
}

#[tokio::test]
async fn standard_webhooks_scheme_signs_with_both_secrets_during_rotation() {
    let Setup {
        registry, router, ..
    } = setup();
    let receiver = Receiver::start().await;
    let created = create(
        &router,
        ACME,
        json!({"id": "std", "endpoint_url": receiver.url("/hook"), "event_types": ["run.status"], "scheme": "standard_webhooks"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json["scheme"], "standard_webhooks");
    let first = secret(&router, ACME, "std").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first.starts_with("whsec_"));
    let rotated = call(
        &router,
        Method::POST,
        "/v1/webhooks/std/secret/rotate",
        ACME,
        Some(json!({"grace_period_seconds": 3600})),
    )
    .await;
    let second = rotated.json["secret"].as_str().unwrap().to_owned();
    let _published = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Succeeded))
        .await
        .unwrap();
    let hit = receiver.wait_for(1).await.pop().unwrap();
    let signatures = hit.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    for secret in [&first, &second] {
        let (mut head, ()) = Request::post("/hook").body(()).unwrap().into_parts();
        head.headers = hit.headers.clone();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut verification = StandardWebhooks::new()
            .begin(&head, &SecretSet::from(secret.as_str()), now)
            .unwrap();
        verification.update(&hit.body);
        verification.finish(&hit.body).expect("verifies");
    }
}

// ---------------------------------------------------------------------------------------------
// Routes: success and errors

#[tokio::test]
async fn create_get_list_with_pagination() {
    let Setup { router, .. } = setup();
    let created = create(
        &router,
        ACME,
        json!({"id": "a-1", "endpoint_url": "https://93.184.215.14/hook", "event_types": ["run.status", "run.status"],
               "description": "first", "scheme": "stripe", "rate_limit": {"per_second": 5}}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json);
    assert_eq!(created.headers["location"], "/v1/webhooks/a-1");
    assert_eq!(created.json["event_types"], json!(["run.status"]));
    assert_eq!(created.json["scheme"], "stripe");
    assert_eq!(created.json["enabled"], true);
    assert_eq!(
        created.json["rate_limit"],
        json!({"per_second": 5, "burst": 5})
    );
    assert!(created.json.get("secret").is_none());
    for id in ["a-2", "a-3"] {
        create_ok(&router, ACME, id, "https://93.184.215.14/hook").await;
    }
    assert_eq!(webhook(&router, ACME, "a-1").await["description"], "first");

    let page = call(&router, Method::GET, "/v1/webhooks?limit=2", ACME, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json["data"].as_array().unwrap().len(), 2);
    // An opaque cursor, not the id.
    let cursor = page.json["next_cursor"].as_str().unwrap().to_owned();
    assert_ne!(cursor, "a-2");
    assert!(cursor.starts_with("v1."), "{cursor}");
    let page = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks?limit=2&cursor={cursor}"),
        ACME,
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.json);
    assert_eq!(page.json["data"][0]["id"], "a-3");
    assert_eq!(page.json["data"].as_array().unwrap().len(), 1);
    assert!(page.json["next_cursor"].is_null());
    // Older clients' cursor, the last id, still works.
    let page = call(
        &router,
        Method::GET,
        "/v1/webhooks?limit=2&cursor=a-2",
        ACME,
        None,
    )
    .await;
    assert_eq!(page.json["data"][0]["id"], "a-3");
    // A cursor is scoped by the owner like everything else: globex sees none of acme's.
    let other = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks?cursor={cursor}"),
        GLOBEX,
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(other.json["data"].as_array().unwrap().is_empty());
    let all = call(&router, Method::GET, "/v1/webhooks", ACME, None).await;
    assert_eq!(all.json["data"].as_array().unwrap().len(), 3);

    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "cursor=a%20b",
        "cursor=v1.",
        "cursor=v1.%%%",
        "cursor=v1.Yy0xOmRsdl94",
        "cursor=v1.d2EgYg",
        "offset=2",
        "limit=1&limit=2",
    ] {
        let answer = call(
            &router,
            Method::GET,
            &format!("/v1/webhooks?{query}"),
            ACME,
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.problem(), "invalid-pagination", "{query}");
    }
    let missing = call(&router, Method::GET, "/v1/webhooks/nope", ACME, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.problem(), "webhook-not-found");
}

#[tokio::test]
async fn create_errors_are_problems() {
    let Setup { router, .. } = setup();
    let valid = json!({"id": "x", "endpoint_url": "https://93.184.215.14/hook", "event_types": ["run.status"]});
    assert_eq!(
        create(&router, ACME, valid.clone()).await.status,
        StatusCode::CREATED
    );

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (valid.clone(), StatusCode::CONFLICT, "webhook-exists"),
        (
            json!({"id": "bad id", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-id",
        ),
        (
            json!({"id": "", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-id",
        ),
        (
            json!({"id": "y", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.created"]}),
            StatusCode::BAD_REQUEST,
            "unknown-event-type",
        ),
        (
            json!({"id": "y", "endpoint_url": "https://93.184.215.14/", "event_types": []}),
            StatusCode::BAD_REQUEST,
            "invalid-event-types",
        ),
        (
            json!({"id": "y", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"], "scheme": "valohai"}),
            StatusCode::BAD_REQUEST,
            "invalid-scheme",
        ),
        (
            json!({"id": "y", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"], "rate_limit": {"per_second": 0}}),
            StatusCode::BAD_REQUEST,
            "invalid-rate-limit",
        ),
        (
            json!({"id": "y", "endpoint_url": "ftp://example.com/", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-endpoint-url",
        ),
        (
            json!({"id": "y", "endpoint_url": "not a url", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-endpoint-url",
        ),
        (
            json!({"id": "y", "endpoint_url": "/relative", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-endpoint-url",
        ),
        (
            json!({"id": "y", "endpoint_url": "http://10.0.0.5/hook", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "endpoint-not-allowed",
        ),
        (
            json!({"id": "y", "endpoint_url": "http://169.254.169.254/latest/meta-data", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "endpoint-not-allowed",
        ),
        (
            json!({"id": "y", "endpoint_url": "http://[::1]:8080/", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "endpoint-not-allowed",
        ),
        (
            json!({"id": "y", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"], "secret": "mine"}),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            json!({"endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            json!({"id": 7, "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]}),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (json!([1, 2]), StatusCode::BAD_REQUEST, "invalid-request"),
    ];
    for (body, status, slug) in cases {
        let answer = create(&router, ACME, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.json);
        assert_eq!(answer.problem(), slug, "{body}");
    }

    let bad_json = raw(
        &router,
        Method::POST,
        "/v1/webhooks",
        ACME,
        "application/json",
        "{\"id\": ",
    )
    .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_json.problem(), "invalid-json");
    let garbage = raw(
        &router,
        Method::POST,
        "/v1/webhooks",
        ACME,
        "application/json",
        "not json",
    )
    .await;
    assert_eq!(garbage.problem(), "invalid-json");
    let empty = raw(
        &router,
        Method::POST,
        "/v1/webhooks",
        ACME,
        "application/json",
        "",
    )
    .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.problem(), "invalid-request");
    let form = raw(
        &router,
        Method::POST,
        "/v1/webhooks",
        ACME,
        "application/x-www-form-urlencoded",
        "id=x",
    )
    .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(form.problem(), "unsupported-media-type");
    let huge = raw(
        &router,
        Method::POST,
        "/v1/webhooks",
        ACME,
        "application/json",
        &"x".repeat(3 << 20),
    )
    .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(huge.problem(), "payload-too-large");
}

#[tokio::test]
async fn impossible_ports_and_ipv4_carrying_ipv6_endpoints_are_refused_at_registration() {
    let Setup { router, .. } = setup();
    // 127.0.0.1 is allow-listed here, so only the port can refuse these.
    for url in [
        "http://127.0.0.1:69686/hook",
        "http://127.0.0.1:0/hook",
        "https://93.184.215.14:65536/",
    ] {
        let answer = create(
            &router,
            ACME,
            json!({"id": "p", "endpoint_url": url, "event_types": ["run.status"]}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(answer.problem(), "invalid-endpoint-url", "{url}");
        assert!(answer.json["detail"].as_str().unwrap().contains("port"));
    }
    for url in [
        "http://[64:ff9b:1::a00:1]/",
        "http://[::ffff:0:a9fe:a9fe]/",
        "http://[2001:0:5ef5:79fb::f5ff:fffe]/",
        "http://[3fff::1]/",
    ] {
        let answer = create(
            &router,
            ACME,
            json!({"id": "v6", "endpoint_url": url, "event_types": ["run.status"]}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(answer.problem(), "endpoint-not-allowed", "{url}");
    }
}

#[tokio::test]
async fn authentication_is_required_everywhere() {
    let Setup { router, .. } = setup();
    for (method, path) in api::routes() {
        if path.ends_with("openapi.json") {
            continue;
        }
        let path = path.replace("{id}", "x").replace("{delivery_id}", "y");
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Basic a2V5LWFjbWU6"),
            Some("key-acme"),
        ] {
            let mut request = Request::builder().method(method.clone()).uri(&path);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let answer = send(&router, request.body(Body::from("{")).unwrap()).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {authorization:?}"
            );
            assert_eq!(answer.problem(), "unauthorized");
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
    }
}

#[tokio::test]
async fn tenants_cannot_see_each_other() {
    let Setup {
        registry, router, ..
    } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "shared-name", &receiver.url("/acme")).await;

    // Every route on another tenant's webhook is a 404, as if it did not exist.
    for (method, path) in api::routes() {
        if !path.contains("{id}") {
            continue;
        }
        let path = path
            .replace("{id}", "shared-name")
            .replace("{delivery_id}", "dlv_x");
        let body = match (method.as_str(), path.as_str()) {
            ("PUT", p) if p.ends_with("/headers") => Some(json!({"headers": {}})),
            ("PUT", _) => Some(
                json!({"endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]}),
            ),
            ("POST", p) if p.ends_with("/recover") => {
                Some(json!({"since": "2020-01-01T00:00:00Z"}))
            }
            _ => None,
        };
        let answer = call(&router, method.clone(), &path, GLOBEX, body).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {:?}",
            answer.json
        );
        assert_eq!(answer.problem(), "webhook-not-found", "{method} {path}");
    }
    let list = call(&router, Method::GET, "/v1/webhooks", GLOBEX, None).await;
    assert!(list.json["data"].as_array().unwrap().is_empty());

    // The same id is free for another tenant, with its own secret and conversations.
    create_ok(&router, GLOBEX, "shared-name", &receiver.url("/globex")).await;
    let acme_secret = secret(&router, ACME, "shared-name").await["secret"].clone();
    let globex_secret = secret(&router, GLOBEX, "shared-name").await["secret"].clone();
    assert_ne!(acme_secret, globex_secret);

    let report = registry
        .publish(
            &Owner::new("acme"),
            RunStatus::TYPE,
            &run_status(RunState::Running),
        )
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 1);
    let delivery = report.deliveries[0].delivery_id.clone();
    receiver.wait_for(1).await;
    wait_conversation(&router, ACME, "shared-name", &delivery, "delivered").await;
    let theirs = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks/shared-name/conversations/{delivery}"),
        GLOBEX,
        None,
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.problem(), "delivery-not-found");
    let resend = call(
        &router,
        Method::POST,
        &format!("/v1/webhooks/shared-name/conversations/{delivery}/resend"),
        GLOBEX,
        None,
    )
    .await;
    assert_eq!(resend.status, StatusCode::NOT_FOUND);
    let listed = call(
        &router,
        Method::GET,
        "/v1/webhooks/shared-name/conversations",
        GLOBEX,
        None,
    )
    .await;
    assert!(listed.json["data"].as_array().unwrap().is_empty());

    // Publishing to everyone reaches both.
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Succeeded))
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 2);
    let owners: BTreeSet<String> = report
        .deliveries
        .iter()
        .map(|d| d.owner.to_string())
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from(["acme".to_owned(), "globex".to_owned()])
    );
}

#[tokio::test]
async fn update_and_delete() {
    let Setup { router, .. } = setup();
    create_ok(&router, ACME, "u", "https://93.184.215.14/old").await;
    let before = secret(&router, ACME, "u").await["secret"].clone();
    let updated = call(
        &router,
        Method::PUT,
        "/v1/webhooks/u",
        ACME,
        Some(json!({"id": "u", "endpoint_url": "https://93.184.215.14/new", "event_types": ["app.deployed"], "description": "new", "scheme": "stripe"})),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.json);
    assert_eq!(updated.json["endpoint_url"], "https://93.184.215.14/new");
    assert_eq!(updated.json["event_types"], json!(["app.deployed"]));
    assert_eq!(updated.json["description"], "new");
    assert_eq!(updated.json["scheme"], "stripe");
    // Nextmv and Stripe take the same kind of secret: kept.
    assert_eq!(secret(&router, ACME, "u").await["secret"], before);
    // Standard Webhooks needs a `whsec_<base64>` one: regenerated.
    let updated = call(
        &router,
        Method::PUT,
        "/v1/webhooks/u",
        ACME,
        Some(json!({"endpoint_url": "https://93.184.215.14/new", "event_types": ["run.status"], "scheme": "svix"})),
    )
    .await;
    assert_eq!(updated.json["scheme"], "standard_webhooks");
    assert_eq!(updated.json["description"], "", "PUT replaces every field");
    let now = secret(&router, ACME, "u").await;
    assert!(now["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(now["previous"].as_array().unwrap().is_empty());

    let mismatch = call(
        &router,
        Method::PUT,
        "/v1/webhooks/u",
        ACME,
        Some(json!({"id": "other", "endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]})),
    )
    .await;
    assert_eq!(mismatch.problem(), "id-mismatch");
    let invalid = call(
        &router,
        Method::PUT,
        "/v1/webhooks/u",
        ACME,
        Some(json!({"endpoint_url": "http://192.168.1.1/", "event_types": ["run.status"]})),
    )
    .await;
    assert_eq!(invalid.problem(), "endpoint-not-allowed");
    let missing = call(
        &router,
        Method::PUT,
        "/v1/webhooks/nope",
        ACME,
        Some(json!({"endpoint_url": "https://93.184.215.14/", "event_types": ["run.status"]})),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = raw(
        &router,
        Method::PUT,
        "/v1/webhooks/u",
        ACME,
        "application/json",
        "{",
    )
    .await;
    assert_eq!(bad.problem(), "invalid-json");

    let deleted = call(&router, Method::DELETE, "/v1/webhooks/u", ACME, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let again = call(&router, Method::DELETE, "/v1/webhooks/u", ACME, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.problem(), "webhook-not-found");
    let gone = call(&router, Method::GET, "/v1/webhooks/u/secret", ACME, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn secrets_only_in_the_secret_route() {
    let Setup {
        registry, router, ..
    } = setup();
    create_ok(&router, ACME, "s", "https://93.184.215.14/hook").await;
    let answer = call(&router, Method::GET, "/v1/webhooks/s/secret", ACME, None).await;
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.json["scheme"], "nextmv");
    let secret = answer.json["secret"].as_str().unwrap().to_owned();
    let listed = call(&router, Method::GET, "/v1/webhooks", ACME, None).await;
    assert!(!listed.json.to_string().contains(&secret));
    assert!(!webhook(&router, ACME, "s")
        .await
        .to_string()
        .contains(&secret));
    let stored = registry
        .subscriptions()
        .get(WebhookKey::new(&Owner::new("acme"), "s"))
        .await
        .unwrap()
        .unwrap();
    assert!(!format!("{stored:?}").contains(&secret));
    assert!(!format!("{registry:?}").contains(&secret));

    let rotate = call(
        &router,
        Method::POST,
        "/v1/webhooks/s/secret/rotate",
        ACME,
        Some(json!({"grace_period_seconds": 99999999})),
    )
    .await;
    assert_eq!(rotate.problem(), "invalid-grace-period");
    let rotate = raw(
        &router,
        Method::POST,
        "/v1/webhooks/s/secret/rotate",
        ACME,
        "application/json",
        "{\"grace\": 1}",
    )
    .await;
    assert_eq!(rotate.problem(), "invalid-request");
    let rotate = call(
        &router,
        Method::POST,
        "/v1/webhooks/s/secret/rotate",
        ACME,
        Some(json!({"grace_period_seconds": 0})),
    )
    .await;
    assert_eq!(rotate.status, StatusCode::OK);
    assert_ne!(rotate.json["secret"], secret.as_str());
    assert!(
        rotate.json["previous"].as_array().unwrap().is_empty(),
        "no grace: ended at once"
    );
    let missing = call(
        &router,
        Method::POST,
        "/v1/webhooks/nope/secret/rotate",
        ACME,
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn custom_header_values_are_write_only_in_get_and_conversations() {
    let Setup {
        router, registry, ..
    } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "w", &receiver.url("/hook")).await;
    let values = [
        ("X-Auth-Token", "tok-value-1"),
        ("X-Tenant-Credential", "cred-value-2"),
        ("X-Tenant", "tenant-value-3"),
    ];
    let headers: serde_json::Map<String, Value> = values
        .iter()
        .map(|(name, value)| ((*name).to_owned(), json!(value)))
        .collect();
    let answer = call(
        &router,
        Method::PUT,
        "/v1/webhooks/w/headers",
        ACME,
        Some(json!({ "headers": headers })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    for view in [answer.json, webhook(&router, ACME, "w").await] {
        for (name, _) in values {
            assert_eq!(
                view["headers"][name.to_ascii_lowercase()],
                "[redacted]",
                "{view}"
            );
        }
    }
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Queued))
        .await
        .unwrap();
    let hit = &receiver.wait_for(1).await[0];
    for (name, value) in values {
        assert_eq!(hit.headers[name], value, "the endpoint gets the values");
    }
    let delivery = hit.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(report.deliveries.len(), 1);
    let conversation = wait_conversation(&router, ACME, "w", &delivery, "delivered").await;
    let recorded = conversation["attempts"][0]["request_headers"].to_string();
    // What the engine keeps (the store's record) redacts them too, not only the view.
    let stored = registry
        .engine()
        .conversation(&delivery)
        .await
        .unwrap()
        .unwrap();
    let stored = format!("{:?}", stored.attempts[0].request_headers);
    for (name, value) in values {
        assert!(!recorded.contains(value), "{name} in the view: {recorded}");
        assert!(!stored.contains(value), "{name} in the record: {stored}");
        assert!(recorded
            .to_ascii_lowercase()
            .contains(&name.to_ascii_lowercase()));
    }
}

#[tokio::test]
async fn custom_headers_are_validated() {
    let Setup { router, .. } = setup();
    create_ok(&router, ACME, "h", "https://93.184.215.14/hook").await;
    for name in [
        "Host",
        "Content-Length",
        "Connection",
        "Transfer-Encoding",
        "Upgrade",
        "TE",
        "Nextmv-Signature",
        "Stripe-Signature",
        "webhook-signature",
        "webhook-id",
        "X-Request-Id",
        "Authorization",
    ] {
        let answer = call(
            &router,
            Method::PUT,
            "/v1/webhooks/h/headers",
            ACME,
            Some(json!({"headers": {name: "v"}})),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(answer.problem(), "invalid-header", "{name}");
    }
    for headers in [json!({"bad name": "v"}), json!({"x-ok": "line\nbreak"})] {
        let answer = call(
            &router,
            Method::PUT,
            "/v1/webhooks/h/headers",
            ACME,
            Some(json!({"headers": headers})),
        )
        .await;
        assert_eq!(answer.problem(), "invalid-header", "{headers}");
    }
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let answer = call(
        &router,
        Method::PUT,
        "/v1/webhooks/h/headers",
        ACME,
        Some(json!({"headers": many})),
    )
    .await;
    assert_eq!(answer.problem(), "invalid-header");
    let answer = call(
        &router,
        Method::PUT,
        "/v1/webhooks/h/headers",
        ACME,
        Some(json!({"x": 1})),
    )
    .await;
    assert_eq!(answer.problem(), "invalid-request");
    let ok = call(
        &router,
        Method::PUT,
        "/v1/webhooks/h/headers",
        ACME,
        Some(json!({"headers": {"X-Environment": "staging"}})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.json["headers"],
        json!({"x-environment": "[redacted]"}),
        "values are write-only"
    );
    let cleared = call(
        &router,
        Method::PUT,
        "/v1/webhooks/h/headers",
        ACME,
        Some(json!({"headers": {}})),
    )
    .await;
    assert_eq!(cleared.json["headers"], json!({}));
}

#[tokio::test]
async fn disable_and_enable_routes() {
    let Setup {
        registry, router, ..
    } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "d", &receiver.url("/hook")).await;
    let disabled = call(&router, Method::POST, "/v1/webhooks/d/disable", ACME, None).await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.json["enabled"], false);
    assert_eq!(disabled.json["disabled_reason"], "disabled through the API");
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Queued))
        .await
        .unwrap();
    assert!(
        report.deliveries.is_empty(),
        "disabled webhooks get nothing"
    );
    let enabled = call(&router, Method::POST, "/v1/webhooks/d/enable", ACME, None).await;
    assert_eq!(enabled.json["enabled"], true);
    assert!(enabled.json["disabled_reason"].is_null());
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Queued))
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 1);
    receiver.wait_for(1).await;
    for path in ["/v1/webhooks/nope/disable", "/v1/webhooks/nope/enable"] {
        assert_eq!(
            call(&router, Method::POST, path, ACME, None).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

/// A webhook `t` of ACME's that received two test events (the default type and
/// `app.deployed`), then failed three `run.status` deliveries (each after its two attempts):
/// what the conversation, re-send and recover routes work on.
struct FailedDeliveries {
    router: Router,
    receiver: Receiver,
    /// The failed deliveries' ids, oldest first.
    failed: Vec<String>,
}

impl FailedDeliveries {
    async fn new() -> Self {
        let Setup {
            registry, router, ..
        } = setup();
        let receiver = Receiver::start().await;
        create_ok(&router, ACME, "t", &receiver.url("/hook")).await;
        for event_type in [None, Some(json!({"event_type": "app.deployed"}))] {
            let triggered = call(
                &router,
                Method::POST,
                "/v1/webhooks/t/trigger",
                ACME,
                event_type,
            )
            .await;
            assert_eq!(
                triggered.status,
                StatusCode::ACCEPTED,
                "{:?}",
                triggered.json
            );
        }
        receiver.wait_for(2).await;
        receiver.answer(500);
        let mut failed = Vec::new();
        for _ in 0..3 {
            let report = registry
                .broadcast(RunStatus::TYPE, &run_status(RunState::Failed))
                .await
                .unwrap();
            failed.push(report.deliveries[0].delivery_id.clone());
        }
        for id in &failed {
            wait_conversation(&router, ACME, "t", id, "failed").await;
        }
        Self {
            router,
            receiver,
            failed,
        }
    }
}

#[tokio::test]
async fn trigger_sends_the_event_types_example() {
    let Setup { router, .. } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "t", &receiver.url("/hook")).await;

    // Trigger: a test event with the type's example payload.
    let triggered = call(&router, Method::POST, "/v1/webhooks/t/trigger", ACME, None).await;
    assert_eq!(
        triggered.status,
        StatusCode::ACCEPTED,
        "{:?}",
        triggered.json
    );
    let hit = receiver.wait_for(1).await.pop().unwrap();
    let event: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(event["id"], triggered.json["event_id"]);
    assert_eq!(event["data"]["run_id"], "test-run");
    assert_eq!(
        hit.headers["x-request-id"],
        triggered.json["delivery_id"].as_str().unwrap()
    );
    let bad = call(
        &router,
        Method::POST,
        "/v1/webhooks/t/trigger",
        ACME,
        Some(json!({"event_type": "nope"})),
    )
    .await;
    assert_eq!(bad.problem(), "unknown-event-type");
    let other = call(
        &router,
        Method::POST,
        "/v1/webhooks/t/trigger",
        ACME,
        Some(json!({"event_type": "app.deployed"})),
    )
    .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    receiver.wait_for(2).await;
}

#[tokio::test]
async fn failed_conversations_hold_every_attempt() {
    let FailedDeliveries { router, failed, .. } = FailedDeliveries::new().await;
    for id in &failed {
        let conversation = wait_conversation(&router, ACME, "t", id, "failed").await;
        let attempts = conversation["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[1]["response"]["status"], 500);
        assert_eq!(
            attempts[1]["outcome"],
            json!({"kind": "status", "status": 500, "detail": "HTTP 500"})
        );
    }
}

#[tokio::test]
async fn conversations_are_listed_newest_first_by_offset_and_cursor() {
    let FailedDeliveries { router, failed, .. } = FailedDeliveries::new().await;
    // Conversations: newest first, paginated, filtered.
    let page = call(
        &router,
        Method::GET,
        "/v1/webhooks/t/conversations?limit=2",
        ACME,
        None,
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(page.json["next_offset"], 2);
    assert_eq!(page.json["data"][0]["delivery_id"], failed[2].as_str());
    // Five in all: two test events and three failures.
    let rest = call(
        &router,
        Method::GET,
        "/v1/webhooks/t/conversations?limit=2&offset=3",
        ACME,
        None,
    )
    .await;
    assert_eq!(rest.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(rest.json["next_offset"], Value::Null);
    assert_eq!(rest.json["next_cursor"], Value::Null);

    // Cursor pages: the same five, newest first.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/webhooks/t/conversations?limit=2".to_owned(),
            Some(cursor) => format!("/v1/webhooks/t/conversations?limit=2&cursor={cursor}"),
        };
        let page = call(&router, Method::GET, &path, ACME, None).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.json);
        if cursor.is_some() {
            assert_eq!(page.json["next_offset"], Value::Null, "cursor mode");
        }
        for conversation in page.json["data"].as_array().unwrap() {
            listed.push(conversation["delivery_id"].as_str().unwrap().to_owned());
        }
        pages += 1;
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(listed.len(), 5);
    assert_eq!(
        listed[..3],
        [failed[2].clone(), failed[1].clone(), failed[0].clone()]
    );
    let unique: BTreeSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), 5);
    // Filtered by state, with a cursor.
    let first = call(
        &router,
        Method::GET,
        "/v1/webhooks/t/conversations?state=failed&limit=1",
        ACME,
        None,
    )
    .await;
    let next = first.json["next_cursor"].as_str().unwrap();
    let second = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks/t/conversations?state=failed&limit=5&cursor={next}"),
        ACME,
        None,
    )
    .await;
    assert!(second.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["state"] == "failed"));
    let only_failed = call(
        &router,
        Method::GET,
        "/v1/webhooks/t/conversations?state=failed",
        ACME,
        None,
    )
    .await;
    assert_eq!(only_failed.json["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn conversation_queries_are_validated() {
    let Setup { router, .. } = setup();
    create_ok(&router, ACME, "t", "https://93.184.215.14/hook").await;
    create_ok(&router, ACME, "u", "https://93.184.215.14/hook").await;
    // A webhook cursor is not a conversation cursor.
    let webhooks = call(&router, Method::GET, "/v1/webhooks?limit=1", ACME, None).await;
    let webhook_cursor = webhooks.json["next_cursor"]
        .as_str()
        .expect("two webhooks, one a page: a next cursor");
    let answer = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks/t/conversations?cursor={webhook_cursor}"),
        ACME,
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.problem(), "invalid-pagination");
    for query in [
        "limit=0",
        "limit=x",
        "offset=-1",
        "offset=10001",
        "state=lost",
        "cursor=",
        "cursor=dlv_x",
        "cursor=v1.not-base64!",
        "cursor=v1.YzotMTpkbHY",
        "cursor=v1.Yzp4OmRsdg",
        "cursor=v1.YzE6",
        "cursor=v1.YzE6ZGx2&offset=2",
    ] {
        let answer = call(
            &router,
            Method::GET,
            &format!("/v1/webhooks/t/conversations?{query}"),
            ACME,
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.problem(), "invalid-pagination", "{query}");
    }
    let missing = call(
        &router,
        Method::GET,
        "/v1/webhooks/t/conversations/dlv_nope",
        ACME,
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.problem(), "delivery-not-found");
}

#[tokio::test]
async fn resend_redelivers_a_failed_delivery_under_its_id() {
    let FailedDeliveries {
        router,
        receiver,
        failed,
    } = FailedDeliveries::new().await;
    receiver.answer(200);
    let before = receiver.hits().len();
    let resent = call(
        &router,
        Method::POST,
        &format!("/v1/webhooks/t/conversations/{}/resend", failed[0]),
        ACME,
        None,
    )
    .await;
    assert_eq!(resent.status, StatusCode::ACCEPTED, "{:?}", resent.json);
    let conversation = wait_conversation(&router, ACME, "t", &failed[0], "delivered").await;
    let attempts = conversation["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2]["manual"], true);
    let hit = receiver.wait_for(before + 1).await.pop().unwrap();
    assert_eq!(
        hit.headers["x-request-id"],
        failed[0].as_str(),
        "same delivery id on a re-send"
    );
    let missing = call(
        &router,
        Method::POST,
        "/v1/webhooks/t/conversations/dlv_nope/resend",
        ACME,
        None,
    )
    .await;
    assert_eq!(missing.problem(), "delivery-not-found");
}

#[tokio::test]
async fn recover_requeues_the_failed_deliveries_since_a_time() {
    let FailedDeliveries {
        router,
        receiver,
        failed,
    } = FailedDeliveries::new().await;
    receiver.answer(200);
    let since = "2000-01-01T00:00:00Z";
    let bad_time = call(
        &router,
        Method::POST,
        "/v1/webhooks/t/recover",
        ACME,
        Some(json!({"since": "yesterday"})),
    )
    .await;
    assert_eq!(bad_time.problem(), "invalid-time");
    let no_body = call(&router, Method::POST, "/v1/webhooks/t/recover", ACME, None).await;
    assert_eq!(no_body.problem(), "invalid-request");
    let future = call(
        &router,
        Method::POST,
        "/v1/webhooks/t/recover",
        ACME,
        Some(json!({"since": "2999-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(future.json["queued"], 0);
    let recovered = call(
        &router,
        Method::POST,
        "/v1/webhooks/t/recover",
        ACME,
        Some(json!({"since": since})),
    )
    .await;
    assert_eq!(
        recovered.status,
        StatusCode::ACCEPTED,
        "{:?}",
        recovered.json
    );
    assert_eq!(recovered.json["queued"], 3);
    for id in &failed {
        wait_conversation(&router, ACME, "t", id, "delivered").await;
    }
}

#[tokio::test]
async fn resend_of_a_pending_delivery_is_a_conflict_and_rate_limits_delay() {
    let Setup {
        registry, router, ..
    } = setup();
    let receiver = Receiver::start().await;
    let created = create(
        &router,
        ACME,
        json!({"id": "slow", "endpoint_url": receiver.url("/hook"), "event_types": ["run.status"],
               "rate_limit": {"per_second": 5, "burst": 1}}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let started = Instant::now();
    let mut last = None;
    for _ in 0..5 {
        let report = registry
            .broadcast(RunStatus::TYPE, &run_status(RunState::Running))
            .await
            .unwrap();
        last = Some(report.deliveries[0].clone());
    }
    let last = last.unwrap();
    assert!(last.not_before.is_some(), "the fifth waits for its turn");
    let conflict = call(
        &router,
        Method::POST,
        &format!(
            "/v1/webhooks/slow/conversations/{}/resend",
            last.delivery_id
        ),
        ACME,
        None,
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.problem(), "delivery-not-final");
    // Nothing dropped: five arrive, spaced by the rate (4 gaps of 200 ms).
    receiver.wait_for(5).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
}

// ---------------------------------------------------------------------------------------------
// Endpoint health

#[tokio::test]
async fn failing_endpoint_is_disabled_and_re_enabled() {
    let Setup {
        registry,
        router,
        notices,
        ..
    } = setup_with(|builder| {
        builder
            .health(HealthRule::new(3, Duration::from_secs(3600)))
            .event_type(EventType::endpoint_disabled())
    });
    let failing = Receiver::start().await;
    let watcher = Receiver::start().await;
    failing.answer(503);
    create_ok(&router, ACME, "flaky", &failing.url("/hook")).await;
    let watch = create(
        &router,
        ACME,
        json!({"id": "ops", "endpoint_url": watcher.url("/ops"), "event_types": ["endpoint.disabled"]}),
    )
    .await;
    assert_eq!(watch.status, StatusCode::CREATED);

    // One bad attempt is not enough, nor are two exhausted deliveries.
    for _ in 0..2 {
        let report = registry
            .broadcast(RunStatus::TYPE, &run_status(RunState::Running))
            .await
            .unwrap();
        wait_conversation(
            &router,
            ACME,
            "flaky",
            &report.deliveries[0].delivery_id,
            "failed",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(webhook(&router, ACME, "flaky").await["enabled"], true);

    // The third exhausted delivery within the hour disables it.
    let _published = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Running))
        .await
        .unwrap();
    let view = wait_webhook(&router, ACME, "flaky", |v| v["enabled"] == false).await;
    let reason = view["disabled_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("3 failed deliveries within 3600 s"),
        "{reason}"
    );
    let notice = notices.lock().unwrap()[0].clone();
    assert_eq!(notice.webhook_id, "flaky");
    assert_eq!(notice.owner, Owner::new("acme"));
    // The owner's `endpoint.disabled` subscribers hear of it.
    let hit = watcher.wait_for(1).await.pop().unwrap();
    let event: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(event["type"], "endpoint.disabled");
    assert_eq!(event["data"]["webhook_id"], "flaky");

    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Running))
        .await
        .unwrap();
    assert!(report.deliveries.is_empty());

    // Re-enabled, it gets events again, and the failure count starts afresh.
    failing.answer(200);
    let enabled = call(
        &router,
        Method::POST,
        "/v1/webhooks/flaky/enable",
        ACME,
        None,
    )
    .await;
    assert_eq!(enabled.json["enabled"], true);
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Succeeded))
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 1);
    wait_conversation(
        &router,
        ACME,
        "flaky",
        &report.deliveries[0].delivery_id,
        "delivered",
    )
    .await;
    assert_eq!(notices.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn gone_disables_at_once() {
    let Setup {
        registry,
        router,
        notices,
        ..
    } = setup();
    let receiver = Receiver::start().await;
    receiver.answer(410);
    create_ok(&router, ACME, "gone", &receiver.url("/hook")).await;
    let _published = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Running))
        .await
        .unwrap();
    let view = wait_webhook(&router, ACME, "gone", |v| v["enabled"] == false).await;
    assert_eq!(view["disabled_reason"], "the endpoint answered 410 Gone");
    assert_eq!(receiver.hits().len(), 1, "410 is not retried");
    assert_eq!(notices.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn delete_cancels_queued_deliveries() {
    let Setup {
        registry, router, ..
    } = setup_with(|builder| {
        builder.engine(engine().policy(Policy::custom([Duration::from_millis(200); 20])))
    });
    // A receiver that is down: a port nobody listens on (yet).
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    create_ok(&router, ACME, "doomed", &format!("http://{addr}/hook")).await;
    let report = registry
        .publish(
            &Owner::new("acme"),
            RunStatus::TYPE,
            &run_status(RunState::Running),
        )
        .await
        .unwrap();
    let delivery = report.deliveries[0].delivery_id.clone();
    // Wait for a failed attempt and its scheduled retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = call(
            &router,
            Method::GET,
            &format!("/v1/webhooks/doomed/conversations/{delivery}"),
            ACME,
            None,
        )
        .await
        .json;
        if view["state"] == "pending" && !view["attempts"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never retried: {view}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Another tenant cannot delete it, nor cancel anything.
    let theirs = call(&router, Method::DELETE, "/v1/webhooks/doomed", GLOBEX, None).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    let conversation = registry
        .engine()
        .conversation(&delivery)
        .await
        .unwrap()
        .unwrap();
    assert!(!conversation.delivery.state.is_final());

    let deleted = call(&router, Method::DELETE, "/v1/webhooks/doomed", ACME, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let receiver = Receiver::start_on(addr).await;
    // Several retry delays go by: nothing arrives.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        receiver.hits().is_empty(),
        "a deleted webhook's delivery was sent"
    );

    // The conversation stays, final, with the reason.
    let conversation = registry
        .engine()
        .conversation(&delivery)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conversation.delivery.state, DeliveryState::Failed);
    assert_eq!(
        conversation.delivery.last_error.as_deref(),
        Some(WEBHOOK_DELETED)
    );
    assert!(!conversation.attempts.is_empty());
    let stats = registry.engine().stats().await.unwrap();
    assert_eq!(stats.outstanding, 0, "{stats:?}");
}

#[tokio::test]
async fn delete_during_an_attempt_stops_its_retries() {
    let Setup {
        registry, router, ..
    } = setup_with(|builder| {
        builder.engine(engine().policy(Policy::custom([Duration::from_millis(100); 20])))
    });
    // A receiver that holds the first request until the webhook is deleted, then fails it.
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let hits = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/{*path}",
        any({
            let (entered, release, hits) = (entered.clone(), release.clone(), hits.clone());
            move || {
                let (entered, release, hits) = (entered.clone(), release.clone(), hits.clone());
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                        entered.notify_one();
                        release.notified().await;
                    }
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    create_ok(&router, ACME, "busy", &format!("http://{addr}/hook")).await;
    let report = registry
        .publish(
            &Owner::new("acme"),
            RunStatus::TYPE,
            &run_status(RunState::Running),
        )
        .await
        .unwrap();
    let delivery = report.deliveries[0].delivery_id.clone();
    tokio::time::timeout(Duration::from_secs(10), entered.notified())
        .await
        .expect("the first attempt arrives");
    let deleted = call(&router, Method::DELETE, "/v1/webhooks/busy", ACME, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    release.notify_one();

    // The attempt in flight finishes (503) and is not retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let conversation = loop {
        let conversation = registry
            .engine()
            .conversation(&delivery)
            .await
            .unwrap()
            .unwrap();
        if conversation.delivery.state.is_final() {
            break conversation;
        }
        assert!(Instant::now() < deadline, "never final: {conversation:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(conversation.delivery.state, DeliveryState::Failed);
    assert_eq!(
        conversation.delivery.last_error.as_deref(),
        Some(WEBHOOK_DELETED)
    );
    assert_eq!(conversation.attempts.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "retried after the delete");
}

// ---------------------------------------------------------------------------------------------
// Publishing

#[tokio::test]
async fn publish_checks_the_event_type_and_scopes_owners() {
    let Setup {
        registry, router, ..
    } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "p", &receiver.url("/a")).await;
    create_ok(&router, GLOBEX, "p", &receiver.url("/g")).await;
    let err = registry
        .broadcast("run.created", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::UnknownEventType(ref t) if t == "run.created"));
    // Declared, but nobody subscribes.
    let report = registry
        .broadcast("app.deployed", &json!({"v": 2}))
        .await
        .unwrap();
    assert!(report.deliveries.is_empty());
    let report = registry
        .publish(
            &Owner::new("globex"),
            RunStatus::TYPE,
            &run_status(RunState::Queued),
        )
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 1);
    assert_eq!(report.deliveries[0].owner, Owner::new("globex"));
    let hit = receiver.wait_for(1).await.pop().unwrap();
    let secret = secret(&router, GLOBEX, "p").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(nextmv_verifies(
        hit.headers["nextmv-signature"].to_str().unwrap(),
        &hit.body,
        &secret
    ));
}

// ---------------------------------------------------------------------------------------------
// OpenAPI

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let Setup { router, .. } = setup();
    let request = Request::get("/v1/webhooks/openapi.json")
        .body(Body::empty())
        .unwrap();
    let answer = send(&router, request).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "served without authentication"
    );
    let document = answer.json;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = api::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    assert_eq!(
        documented, routed,
        "every route documented, every documented route served"
    );
    assert_eq!(routed.len(), 17);
    // The documented bounds are the enforced ones (`400 invalid-pagination` outside them).
    for path in ["/v1/webhooks", "/v1/webhooks/{id}/conversations"] {
        let params = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["minimum"], 1, "{path}: {limit}");
        assert_eq!(limit["schema"]["maximum"], 100, "{path}: {limit}");
    }

    // And each documented route is really answered by a handler (not a router miss).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "missing")
            .replace("{delivery_id}", "dlv_missing");
        let answer = call(
            &router,
            Method::from_bytes(method.as_bytes()).unwrap(),
            &concrete,
            ACME,
            None,
        )
        .await;
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let content_type = answer.headers["content-type"].to_str().unwrap();
        assert!(
            content_type.contains("json"),
            "{method} {path}: {content_type}"
        );
    }
    // Pagination parameters and cursors are documented.
    let params = |path: &str| -> Vec<String> {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(params("/v1/webhooks"), ["limit", "cursor"]);
    assert_eq!(
        params("/v1/webhooks/{id}/conversations"),
        ["id", "limit", "cursor", "offset", "state"]
    );
    let schemas = &document["components"]["schemas"];
    assert!(schemas["WebhookList"]["properties"]["next_cursor"].is_object());
    assert!(schemas["ConversationList"]["properties"]["next_cursor"].is_object());
    assert!(schemas["ConversationList"]["properties"]["next_offset"].is_object());

    // A known path with another method: 405 as a problem, with `Allow`.
    let answer = call(&router, Method::PATCH, "/v1/webhooks/x", ACME, None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.problem(), "method-not-allowed");
    assert_eq!(answer.headers["allow"], "GET, PUT, DELETE");
}

// ---------------------------------------------------------------------------------------------
// The gateway example

/// A minimal HTTP/1.1 exchange over a fresh connection: the status and the body.
async fn http(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
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

/// `examples/gateway` (built by `cargo test`) mounts the registry; a demo run publishes
/// `run.status` as it goes queued → running → succeeded, verified with the Nextmv algorithm.
#[tokio::test]
async fn gateway_example_publishes_run_status() {
    let mut binary = std::env::current_exe().unwrap();
    binary.pop();
    if binary.ends_with("deps") {
        binary.pop();
    }
    let binary = binary.join("examples").join("gateway");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --all-features` builds it, or \
         `cargo build --all-features --examples`",
        binary.display()
    );
    let config = std::env::temp_dir().join(format!("registry-gateway-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n[registry]\nallow_loopback = true\nrun_step_secs = 0.05\n\
         [registry.api_keys]\n\"test-key\" = \"tester\"\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receiver = Receiver::start().await;
    let body = json!({"id": "mine", "endpoint_url": receiver.url("/webhookhandler"), "event_types": ["run.status"]});
    let (status, _) = http(port, "POST", "/v1/webhooks", "test-key", &body.to_string()).await;
    assert_eq!(status, 201);
    let (status, _) = http(port, "POST", "/v1/webhooks", "wrong-key", &body.to_string()).await;
    assert_eq!(status, 401);
    let (_, secret) = http(port, "GET", "/v1/webhooks/mine/secret", "test-key", "").await;
    let secret = secret["secret"].as_str().unwrap().to_owned();
    let (status, run) = http(port, "POST", "/v1/runs", "test-key", "").await;
    assert_eq!(status, 202);
    let hits = receiver.wait_for(3).await;
    let mut states = Vec::new();
    for hit in &hits {
        assert!(nextmv_verifies(
            hit.headers["nextmv-signature"].to_str().unwrap(),
            &hit.body,
            &secret
        ));
        let event: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(event["data"]["run_id"], run["run_id"]);
        states.push(event["data"]["status"].as_str().unwrap().to_owned());
    }
    states.sort();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    let _ = child.kill().await;
    let _ = std::fs::remove_file(config);
}

// ---------------------------------------------------------------------------------------------
// A durable store under the registry

/// The registry over the SQLite delivery store: deliveries, conversations listed per webhook,
/// a re-send signed with the rotated secret, and a recovery, all through the durable store.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn registry_on_the_sqlite_store() {
    use tower_webhooks::store::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(dir.path().join("webhooks.db"))
        .await
        .unwrap();
    let Setup {
        registry, router, ..
    } = setup_with(|builder| builder.engine(engine().store(store)));
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "durable", &receiver.url("/hook")).await;
    receiver.answer(500);
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Failed))
        .await
        .unwrap();
    let delivery = report.deliveries[0].delivery_id.clone();
    let failed = wait_conversation(&router, ACME, "durable", &delivery, "failed").await;
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 2);
    let listed = call(
        &router,
        Method::GET,
        "/v1/webhooks/durable/conversations",
        ACME,
        None,
    )
    .await;
    assert_eq!(listed.json["data"][0]["delivery_id"], delivery.as_str());

    receiver.answer(200);
    let rotated = call(
        &router,
        Method::POST,
        "/v1/webhooks/durable/secret/rotate",
        ACME,
        Some(json!({"grace_period_seconds": 0})),
    )
    .await;
    let new_secret = rotated.json["secret"].as_str().unwrap().to_owned();
    let resent = call(
        &router,
        Method::POST,
        &format!("/v1/webhooks/durable/conversations/{delivery}/resend"),
        ACME,
        None,
    )
    .await;
    assert_eq!(resent.status, StatusCode::ACCEPTED, "{:?}", resent.json);
    wait_conversation(&router, ACME, "durable", &delivery, "delivered").await;
    let hit = receiver.hits().pop().unwrap();
    assert_eq!(hit.headers["x-request-id"], delivery.as_str());
    assert!(
        nextmv_verifies(
            hit.headers["nextmv-signature"].to_str().unwrap(),
            &hit.body,
            &new_secret
        ),
        "a re-send is signed with the current secret"
    );

    receiver.answer(500);
    let report = registry
        .broadcast(RunStatus::TYPE, &run_status(RunState::Failed))
        .await
        .unwrap();
    let second = report.deliveries[0].delivery_id.clone();
    wait_conversation(&router, ACME, "durable", &second, "failed").await;
    receiver.answer(200);
    let recovered = call(
        &router,
        Method::POST,
        "/v1/webhooks/durable/recover",
        ACME,
        Some(json!({"since": "2000-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(recovered.json["queued"], 1);
    wait_conversation(&router, ACME, "durable", &second, "delivered").await;
}

// ---------------------------------------------------------------------------------------------
// The transactional outbox (PostgreSQL)

#[cfg(feature = "postgres")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
#[tokio::test]
async fn postgres_publish_in_transaction_commits_or_rolls_back_with_the_application() {
    use sqlx::Connection;
    use tower_webhooks::store::PostgresStore;

    let url = support::postgres_url();
    let schema = support::unique_schema("outbox");
    let store = PostgresStore::builder(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let Setup {
        registry, router, ..
    } = setup_with(|builder| {
        builder
            .engine(engine().store(store.clone()))
            .outbox(store.clone())
    });
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "orders", &receiver.url("/hook")).await;
    let secret = secret(&router, ACME, "orders").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // The application's own connection: its default search path, not the store's schema.
    let mut app = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!(
        "CREATE TABLE \"{schema}\".orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)"
    ))
    .execute(&mut app)
    .await
    .unwrap();
    let count = |sql: String| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // Rolled back: no row, nothing sent.
    let mut tx = app.begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".orders VALUES ('o-1', 'failed')"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let report = registry
        .broadcast_in_transaction(&mut tx, RunStatus::TYPE, &run_status(RunState::Failed))
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 1);
    assert!(report.rejected.is_empty());
    let rolled_back = report.deliveries[0].delivery_id.clone();
    tx.rollback().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.hits().is_empty());
    assert_eq!(count("SELECT COUNT(*) FROM deliveries".into()).await, 0);
    assert!(registry
        .engine()
        .conversation(&rolled_back)
        .await
        .unwrap()
        .is_none());
    let missing = call(
        &router,
        Method::GET,
        &format!("/v1/webhooks/orders/conversations/{rolled_back}"),
        ACME,
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Committed: invisible until the commit, then delivered, signed, and queryable.
    let mut tx = app.begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".orders VALUES ('o-2', 'succeeded')"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let report = registry
        .broadcast_in_transaction(&mut tx, RunStatus::TYPE, &run_status(RunState::Succeeded))
        .await
        .unwrap();
    let delivery = report.deliveries[0].delivery_id.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count("SELECT COUNT(*) FROM deliveries".into()).await, 0);
    assert!(
        receiver.hits().is_empty(),
        "nothing goes out before the commit"
    );
    tx.commit().await.unwrap();

    let hit = receiver.wait_for(1).await.remove(0);
    assert_eq!(hit.headers["x-request-id"], delivery.as_str());
    assert!(nextmv_verifies(
        hit.headers["nextmv-signature"].to_str().unwrap(),
        &hit.body,
        &secret
    ));
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(body["id"], report.event_id.as_str());
    assert_eq!(body["type"], "run.status");
    assert_eq!(body["data"]["status"], "succeeded");
    let conversation = wait_conversation(&router, ACME, "orders", &delivery, "delivered").await;
    assert_eq!(conversation["event_type"], "run.status");
    assert_eq!(conversation["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) FROM \"{schema}\".orders WHERE id = 'o-2'"
        ))
        .await,
        1
    );

    // Without an outbox the call is refused.
    let plain = setup_with(|builder| builder.engine(engine())).registry;
    let mut tx = app.begin().await.unwrap();
    assert!(matches!(
        plain
            .broadcast_in_transaction(&mut tx, RunStatus::TYPE, &run_status(RunState::Failed))
            .await,
        Err(PublishError::NoOutbox)
    ));
    tx.rollback().await.unwrap();

    drop(app);
    let _ = registry.engine().shutdown(Duration::from_secs(1)).await;
    support::drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn conversation_cursors_are_stable_while_deliveries_arrive() {
    let Setup {
        registry, router, ..
    } = setup();
    let receiver = Receiver::start().await;
    create_ok(&router, ACME, "busy", &receiver.url("/hook")).await;
    let mut published = Vec::new();
    let publish = || async {
        registry
            .broadcast(RunStatus::TYPE, &run_status(RunState::Running))
            .await
            .unwrap()
            .deliveries[0]
            .delivery_id
            .clone()
    };
    for _ in 0..5 {
        published.push(publish().await);
    }
    let page = |cursor: Option<String>| {
        let router = router.clone();
        async move {
            let path = match cursor {
                None => "/v1/webhooks/busy/conversations?limit=2".to_owned(),
                Some(c) => format!("/v1/webhooks/busy/conversations?limit=2&cursor={c}"),
            };
            let answer = call(&router, Method::GET, &path, ACME, None).await;
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
            let ids: Vec<String> = answer.json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["delivery_id"].as_str().unwrap().to_owned())
                .collect();
            (ids, answer.json["next_cursor"].as_str().map(str::to_owned))
        }
    };
    let (first, next) = page(None).await;
    assert_eq!(first, [published[4].clone(), published[3].clone()]);
    // Two new deliveries: an offset would now repeat the first page's; the cursor does not.
    let newer = [publish().await, publish().await];
    let (second, next) = page(next).await;
    assert_eq!(second, [published[2].clone(), published[1].clone()]);
    let (third, next) = page(next).await;
    assert_eq!(third, [published[0].clone()]);
    assert!(next.is_none());
    let (fresh, _) = page(None).await;
    assert_eq!(fresh, [newer[1].clone(), newer[0].clone()]);
}
