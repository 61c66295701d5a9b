//! Nothing accepted is dropped, and one tenant cannot starve
//! another. A flooding tenant's webhooks point at listeners that accept connections and never
//! answer; the other tenant's events must still arrive, and every refusal is an error the
//! caller sees (an `Err` from `publish`, a problem with `Retry-After` from the API).

#[path = "../examples/gateway/run_status.rs"]
mod run_status;
mod support;

use std::time::{Duration, SystemTime};

use crate::run_status::{RunState, RunStatus};
use axum::body::{to_bytes, Body};
use axum::Router;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use support::Receiver;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_webhooks::delivery::{EngineBuilder, EnqueueError, Policy, SsrfGuard};
use tower_webhooks::registry::{
    BearerTokens, Owner, PublishError, RegistryBuilder, WebhookRegistry,
};

const ACME: &str = "key-acme";
const GLOBEX: &str = "key-globex";

/// Listeners that accept every connection and never answer; kept open while they live.
struct Hanging {
    urls: Vec<String>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hanging {
    async fn start(listeners: usize) -> Self {
        let mut urls = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.push(format!("http://{}/hook", listener.local_addr().unwrap()));
            tasks.push(tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            }));
        }
        Self {
            urls,
            _tasks: tasks,
        }
    }
}

fn registry(
    engine: EngineBuilder,
    configure: impl FnOnce(RegistryBuilder) -> RegistryBuilder,
) -> (WebhookRegistry, Router) {
    let builder = WebhookRegistry::builder()
        .engine(engine.guard(SsrfGuard::new().allow_host("127.0.0.1")))
        .event_type(crate::run_status::event_type())
        .auth(
            BearerTokens::new()
                .token(ACME, "acme")
                .token(GLOBEX, "globex"),
        );
    let registry = configure(builder).build();
    let router = registry.router();
    (registry, router)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Answer {
    fn problem(&self) -> &str {
        assert_eq!(self.headers["content-type"], "application/problem+json");
        self.json["type"]
            .as_str()
            .unwrap()
            .strip_prefix("tag:tower-webhooks,2026:")
            .unwrap()
    }
}

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

async fn create(router: &Router, token: &str, id: &str, url: &str) -> Answer {
    call(
        router,
        Method::POST,
        "/v1/webhooks",
        token,
        Some(json!({"id": id, "endpoint_url": url, "event_types": ["run.status"]})),
    )
    .await
}

fn status(state: RunState) -> RunStatus {
    RunStatus::new("run-1", "app-1", state, SystemTime::now())
}

/// Tenant acme floods 400 hanging endpoints (40 on each of 10 hosts: at 8 attempts per host,
/// more than the 64 global slots, so without per-owner shares its attempts would hold every
/// global slot for the whole attempt timeout and queue for the next ones); tenant
/// globex's three `run.status` events and its trigger still arrive at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_owner_does_not_starve_another() {
    let hanging = Hanging::start(10).await;
    let receiver = Receiver::status(200).await;
    let engine = EngineBuilder::new().policy(Policy::custom([Duration::from_millis(10)]));
    let (registry, router) = registry(engine, |builder| builder.max_webhooks_per_owner(500));
    for i in 0..400 {
        let url = &hanging.urls[i % hanging.urls.len()];
        let answer = create(&router, ACME, &format!("flood-{i}"), url).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json);
    }
    let answer = create(&router, GLOBEX, "mine", &receiver.url("/hook")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json);

    // The flood: acme's share of queued deliveries (256 by default) is taken, and acme is
    // told which webhooks the event was not queued for.
    let acme = Owner::new("acme");
    match registry
        .publish(&acme, RunStatus::TYPE, &status(RunState::Queued))
        .await
    {
        Err(PublishError::NotQueued(report)) => {
            assert_eq!(report.deliveries.len() + report.rejected.len(), 400);
            assert!(!report.rejected.is_empty());
            assert!(report
                .rejected
                .iter()
                .all(|r| matches!(r.error, EnqueueError::OwnerFull { .. })));
        }
        other => panic!("acme's flood beyond its share must be an error: {other:?}"),
    }
    let refused = call(
        &router,
        Method::POST,
        "/v1/webhooks/flood-0/trigger",
        ACME,
        None,
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.json
    );
    assert_eq!(refused.problem(), "webhook-owner-queue-full");
    assert!(refused.headers.contains_key("retry-after"));

    // Globex is not affected: its events are queued and arrive while acme's attempts hang.
    let globex = Owner::new("globex");
    for state in [RunState::Queued, RunState::Running, RunState::Succeeded] {
        let report = registry
            .publish(&globex, RunStatus::TYPE, &status(state))
            .await
            .expect("globex's events are queued");
        assert_eq!(report.deliveries.len(), 1);
    }
    let triggered = call(
        &router,
        Method::POST,
        "/v1/webhooks/mine/trigger",
        GLOBEX,
        None,
    )
    .await;
    assert_eq!(
        triggered.status,
        StatusCode::ACCEPTED,
        "{:?}",
        triggered.json
    );
    // The bound a tenant is promised: every one of globex's deliveries within 5 s.
    let hits = receiver.wait_hits(4, Duration::from_secs(5)).await;
    assert_eq!(hits.len(), 4);
}

/// With a memory store, a full engine refuses: `publish` is an `Err` naming the webhooks it
/// missed, and trigger, resend and recover answer `503 webhook-queue-full` + `Retry-After`.
#[tokio::test]
async fn a_full_memory_engine_is_an_error_on_every_path() {
    let hanging = Hanging::start(1).await;
    let receiver = Receiver::status(200).await;
    let engine = EngineBuilder::new()
        .policy(Policy::custom([Duration::from_millis(10)]))
        .capacity(2);
    let (registry, router) = registry(engine, |builder| builder);
    let answer = create(&router, ACME, "ok", &receiver.url("/hook")).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let triggered = call(&router, Method::POST, "/v1/webhooks/ok/trigger", ACME, None).await;
    assert_eq!(triggered.status, StatusCode::ACCEPTED);
    let delivered = triggered.json["delivery_id"].as_str().unwrap().to_owned();
    receiver.wait_hits(1, Duration::from_secs(5)).await;
    // Wait until the delivery is final (its slot freed) before filling the engine.
    loop {
        let conversation = registry
            .engine()
            .conversation(&delivered)
            .await
            .unwrap()
            .unwrap();
        if conversation.delivery.state.is_final() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for id in ["stuck-1", "stuck-2", "stuck-3"] {
        let answer = create(&router, ACME, id, &hanging.urls[0]).await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    // Three hanging webhooks (and `ok`) against a capacity of two.
    match registry
        .broadcast(RunStatus::TYPE, &status(RunState::Running))
        .await
    {
        Err(err @ PublishError::NotQueued(_)) => {
            assert!(
                err.retry_after().is_some(),
                "a full queue is worth retrying"
            );
            let PublishError::NotQueued(report) = err else {
                unreachable!()
            };
            assert_eq!(report.deliveries.len(), 2);
            assert_eq!(report.rejected.len(), 2);
            assert!(report
                .rejected
                .iter()
                .all(|r| matches!(r.error, EnqueueError::Full { .. })));
        }
        other => panic!("a full engine must be an error: {other:?}"),
    }

    let routes = [
        ("/v1/webhooks/stuck-1/trigger".to_owned(), None),
        (
            format!("/v1/webhooks/ok/conversations/{delivered}/resend"),
            None,
        ),
        (
            "/v1/webhooks/ok/recover".to_owned(),
            Some(json!({"since": "2000-01-01T00:00:00Z"})),
        ),
    ];
    for (path, body) in routes {
        let answer = call(&router, Method::POST, &path, ACME, body).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {:?}",
            answer.json
        );
        assert_eq!(answer.problem(), "webhook-queue-full", "{path}");
        assert!(answer.headers.contains_key("retry-after"), "{path}");
    }
}

/// The registry API refuses an owner's webhook beyond its limit, and only that owner's.
#[tokio::test]
async fn the_webhook_count_per_owner_is_limited() {
    let (_registry, router) = registry(EngineBuilder::new(), |builder| {
        builder.max_webhooks_per_owner(2)
    });
    for id in ["a", "b"] {
        let answer = create(&router, ACME, id, "https://93.184.215.14/hook").await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let refused = create(&router, ACME, "c", "https://93.184.215.14/hook").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.problem(), "webhook-limit-reached");
    let other = create(&router, GLOBEX, "c", "https://93.184.215.14/hook").await;
    assert_eq!(other.status, StatusCode::CREATED);
}

/// The default limit is 100 webhooks per owner.
#[tokio::test]
async fn the_default_webhook_limit_is_one_hundred() {
    let (_registry, router) = registry(EngineBuilder::new(), |builder| builder);
    for i in 0..100 {
        let answer = create(
            &router,
            ACME,
            &format!("w{i}"),
            "https://93.184.215.14/hook",
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let refused = create(&router, ACME, "w100", "https://93.184.215.14/hook").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// A bounded memory store that is full refuses like a full engine: `EnqueueError::Full` (a
/// `503 webhook-queue-full` with `Retry-After`), not a store failure.
#[tokio::test]
async fn a_full_memory_store_is_a_full_queue() {
    use tower_webhooks::delivery::Delivery;
    use tower_webhooks::store::MemoryStore;
    let engine = EngineBuilder::new()
        .store(MemoryStore::new().max_unfinished(1))
        .build();
    let later = SystemTime::now() + Duration::from_secs(3600);
    engine
        .submit(Delivery::new("d1", "https://93.184.215.14/", "{}").not_before(later))
        .await
        .unwrap();
    let refused = engine
        .submit(Delivery::new("d2", "https://93.184.215.14/", "{}").not_before(later))
        .await;
    assert!(
        matches!(refused, Err(EnqueueError::Full { .. })),
        "{refused:?}"
    );
}
