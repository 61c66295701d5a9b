//! Soak: mixed inbound, forward and publish load against one in-process setup for a fixed
//! time, with a hostile tenant, then an audit of the delivery store.
//!
//! Run with `cargo bench --bench soak --features registry,sqlite` (`SOAK_SECS`, default 300; `SOAK_SECS=60`
//! for a quick run); without the `sqlite` feature the engine uses its memory store, which the
//! audit reads the same way. Loopback only, every loop bounded by the deadline. The setup:
//!
//! - an inbound route behind `WebhookSignatureLayer` (Standard Webhooks), sent correctly
//!   signed requests and one tampered request in ten;
//! - a `WebhookForwardLayer` route whose results are delivered (signed) to a local receiver,
//!   and a few whose endpoint is a hanging HTTP server (it reads the request, never answers);
//! - a registry publishing `run.status` events to a good tenant's webhooks (the receiver) and
//!   to a hostile tenant's many webhooks, which point at a TCP listener that accepts and never
//!   answers, plus one at the hanging server.
//!
//! One engine and one store (SQLite in WAL mode on a temporary file) serve both sources of
//! deliveries, with the engine's default limits. At the end it prints requests served, deliveries made, the store's account of every
//! accepted delivery (delivered, still queued, dead-lettered or refused: none may be missing)
//! and the process RSS (`VmRSS`) at the start, during and at the end of the load.

#[path = "../examples/gateway/run_status.rs"]
mod run_status;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::run_status::{RunState, RunStatus};
use axum::body::{to_bytes, Body};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_webhooks::delivery::{ConversationPosition, ConversationQuery, DeliveryState};
use tower_webhooks::delivery::{DeliveryEngine, SsrfGuard};
use tower_webhooks::forward::WebhookForwardLayer;
use tower_webhooks::registry::{
    BearerTokens, Endpoint, Owner, PublishError, SigningScheme, WebhookRegistry,
};
use tower_webhooks::scheme::{Message, Scheme, StandardWebhooks};
use tower_webhooks::store::DeliveryStore;
use tower_webhooks::{SecretSet, WebhookSignatureLayer};

/// Standard Webhooks secrets are base64 after `whsec_`.
const INBOUND_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FORWARD_SECRET: &str = "soak-forward-secret";
/// The hostile tenant's webhooks at the silent listener.
const HOSTILE_WEBHOOKS: usize = 50;
const GOOD_WEBHOOKS: usize = 3;
/// Paced rates, per second.
const INBOUND_RATE: u64 = 400;
const FORWARD_RATE: u64 = 100;
const HANGING_FORWARD_RATE: u64 = 5;
const PUBLISH_RATE: u64 = 2;
/// Concurrent callers per kind (bounded).
const CALLERS: u64 = 4;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    inbound_ok: AtomicU64,
    inbound_refused: AtomicU64,
    inbound_unexpected: AtomicU64,
    forward_accepted: AtomicU64,
    forward_busy: AtomicU64,
    forward_owner_full: AtomicU64,
    forward_unexpected: AtomicU64,
    published_events: AtomicU64,
    publish_accepted: AtomicU64,
    publish_rejected: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    silent_connections: AtomicUsize,
    hanging_requests: AtomicUsize,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The good endpoint: answers `200` to every delivery.
async fn receiver(counts: Arc<Counts>) -> String {
    serve(Router::new().fallback(move |body: Bytes| {
        let counts = counts.clone();
        async move {
            drop(body);
            add(&counts.received, 1);
            StatusCode::OK
        }
    }))
    .await
}

/// An HTTP server that reads the request and never answers.
async fn hanging(counts: Arc<Counts>) -> String {
    serve(Router::new().fallback(move |body: Bytes| {
        let counts = counts.clone();
        async move {
            drop(body);
            counts.hanging_requests.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<StatusCode>().await
        }
    }))
    .await
}

/// A TCP listener that accepts and never answers: it reads and drops whatever arrives until
/// the client gives up and closes.
async fn silent(counts: Arc<Counts>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                counts.silent_connections.fetch_add(1, Ordering::Relaxed);
                let mut buffer = [0u8; 4096];
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
                counts.silent_connections.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    format!("http://{addr}")
}

fn encoded(url: &str) -> String {
    url.replace(':', "%3A").replace('/', "%2F")
}

/// Runs `callers` loops that together call `step` `rate` times a second until `deadline`.
fn paced<F, Fut>(
    rate: u64,
    callers: u64,
    deadline: Instant,
    step: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let callers = callers.min(rate).max(1);
    (0..callers)
        .map(|caller| {
            let step = step.clone();
            tokio::spawn(async move {
                let mut interval =
                    tokio::time::interval(Duration::from_micros(1_000_000 * callers / rate));
                // A slow answer is not made up for with a burst: the load stays at most `rate`.
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = caller;
                while Instant::now() < deadline {
                    interval.tick().await;
                    step(i).await;
                    i += callers;
                }
            })
        })
        .collect()
}

/// Every delivery in the store in state `state`, counted page by page.
async fn count(store: &dyn DeliveryStore, state: DeliveryState) -> usize {
    let mut total = 0;
    let mut query = ConversationQuery::new().state(state).limit(500);
    loop {
        let page = store.list(&query).await.expect("the store lists");
        total += page.len();
        match page.last() {
            Some(last) if page.len() == 500 => {
                query = query.after(ConversationPosition::of(&last.delivery));
            }
            _ => return total,
        }
    }
}

fn main() {
    let secs = env_secs("SOAK_SECS", 300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(soak(Duration::from_secs(secs)));
}

async fn soak(duration: Duration) {
    let counts = Arc::new(Counts::default());
    let receiver = receiver(counts.clone()).await;
    let hanging = hanging(counts.clone()).await;
    let silent = silent(counts.clone()).await;

    #[cfg(feature = "sqlite")]
    let dir = tempfile::tempdir().unwrap();
    #[cfg(feature = "sqlite")]
    let (store, store_name) = (
        tower_webhooks::store::SqliteStore::connect(dir.path().join("soak.db"))
            .await
            .expect("the SQLite store opens"),
        "SQLite",
    );
    #[cfg(not(feature = "sqlite"))]
    let (store, store_name) = (tower_webhooks::store::MemoryStore::new(), "memory");
    let registry_slot: Arc<OnceLock<WebhookRegistry>> = Arc::new(OnceLock::new());
    let engine = DeliveryEngine::builder()
        .store(store)
        .guard(SsrfGuard::new().allow_loopback())
        .metrics_interval(None)
        .on_finished({
            let slot = registry_slot.clone();
            move |report| {
                if let Some(registry) = slot.get() {
                    registry.observe(report);
                }
            }
        })
        .build();
    let registry = WebhookRegistry::builder()
        .shared_engine(engine.clone())
        .event_type(crate::run_status::event_type())
        .auth(BearerTokens::new())
        .build();
    let _ = registry_slot.set(registry.clone());
    let now = SystemTime::now();
    let mut webhooks = Vec::new();
    for i in 0..GOOD_WEBHOOKS {
        webhooks.push((
            "tenant-good",
            format!("good-{i}"),
            format!("{receiver}/good/{i}"),
        ));
    }
    for i in 0..HOSTILE_WEBHOOKS {
        webhooks.push((
            "tenant-hostile",
            format!("silent-{i}"),
            format!("{silent}/hook/{i}"),
        ));
    }
    webhooks.push((
        "tenant-hostile",
        "hanging".into(),
        format!("{hanging}/hook"),
    ));
    for (owner, id, url) in webhooks {
        let webhook = Endpoint::new(
            Owner::new(owner),
            id,
            url,
            vec![RunStatus::TYPE.to_owned()],
            SigningScheme::StandardWebhooks,
            now,
        );
        registry.subscriptions().insert(webhook).await.unwrap();
    }

    let app = Router::new()
        .route(
            "/inbound",
            post(|body: Bytes| async move { format!("{}", body.len()) }).layer(
                WebhookSignatureLayer::new(StandardWebhooks::new(), INBOUND_SECRET),
            ),
        )
        .merge(
            Router::new()
                .route(
                    "/v4/{project}/{app}/{function}",
                    post(|| async { Json(serde_json::json!({"smile": "wave"})) }),
                )
                .layer(WebhookForwardLayer::new(engine.clone())),
        );

    println!(
        "soak: {}s; inbound {INBOUND_RATE}/s, forward {FORWARD_RATE}/s to the receiver + \
         {HANGING_FORWARD_RATE}/s to a hanging endpoint, publish {PUBLISH_RATE} events/s to \
         {GOOD_WEBHOOKS} good + {} hostile webhooks ({HOSTILE_WEBHOOKS} at a silent listener); \
         one engine (default limits), {store_name} store",
        duration.as_secs(),
        HOSTILE_WEBHOOKS + 1
    );
    let rss_start = rss_kib();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();

    let inbound_secrets = SecretSet::from(INBOUND_SECRET);
    tasks.extend(paced(INBOUND_RATE, CALLERS, deadline, {
        let (app, counts) = (app.clone(), counts.clone());
        move |i| {
            let (app, counts, secrets) = (app.clone(), counts.clone(), inbound_secrets.clone());
            async move {
                let body = format!(r#"{{"type":"run.status","n":{i}}}"#);
                let id = format!("msg_{i}");
                let mut headers = HeaderMap::new();
                let timestamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                StandardWebhooks::new()
                    .sign(
                        &Message::new(&id, timestamp, body.as_bytes()),
                        &secrets,
                        &mut headers,
                    )
                    .unwrap();
                let tampered = i % 10 == 9;
                let mut request = http::Request::post("/inbound")
                    .body(Body::from(if tampered { format!("{body} ") } else { body }))
                    .unwrap();
                *request.headers_mut() = headers;
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let _ = to_bytes(response.into_body(), 1 << 20).await;
                match (status, tampered) {
                    (StatusCode::OK, false) => add(&counts.inbound_ok, 1),
                    (StatusCode::UNAUTHORIZED, true) => add(&counts.inbound_refused, 1),
                    _ => add(&counts.inbound_unexpected, 1),
                }
            }
        }
    }));

    for (rate, endpoint) in [
        (FORWARD_RATE, format!("{receiver}/forwarded")),
        (HANGING_FORWARD_RATE, format!("{hanging}/forwarded")),
    ] {
        let uri = format!("/v4/p-soak/app/run?webhookEndpoint={}", encoded(&endpoint));
        tasks.extend(paced(rate, CALLERS, deadline, {
            let (app, counts) = (app.clone(), counts.clone());
            move |_| {
                let (app, counts, uri) = (app.clone(), counts.clone(), uri.clone());
                async move {
                    let request = http::Request::post(&uri)
                        .header("content-type", "application/json")
                        .header("x-webhook-secret", FORWARD_SECRET)
                        .body(Body::from(r#"{"param":"hello"}"#))
                        .unwrap();
                    let response = app.oneshot(request).await.unwrap();
                    let status = response.status();
                    let accepted = response.headers().contains_key("x-request-id");
                    // The delivery is committed when the body ends.
                    let complete = to_bytes(response.into_body(), 1 << 20).await.is_ok();
                    match status {
                        StatusCode::OK if accepted && complete => add(&counts.forward_accepted, 1),
                        StatusCode::SERVICE_UNAVAILABLE => add(&counts.forward_busy, 1),
                        // The hanging endpoint's host holds its whole owner share.
                        StatusCode::TOO_MANY_REQUESTS => add(&counts.forward_owner_full, 1),
                        _ => add(&counts.forward_unexpected, 1),
                    }
                }
            }
        }));
    }

    tasks.extend(paced(PUBLISH_RATE, 1, deadline, {
        let (registry, counts) = (registry.clone(), counts.clone());
        move |i| {
            let (registry, counts) = (registry.clone(), counts.clone());
            async move {
                let status = RunStatus::new(
                    format!("run-{i}"),
                    "soak-app",
                    RunState::Succeeded,
                    SystemTime::now(),
                );
                match registry.broadcast(RunStatus::TYPE, &status).await {
                    Ok(report) => {
                        add(&counts.published_events, 1);
                        add(&counts.publish_accepted, report.deliveries.len() as u64);
                        add(&counts.publish_rejected, report.rejected.len() as u64);
                    }
                    // A partial fan-out is an error that still reports what was queued.
                    Err(PublishError::NotQueued(report)) => {
                        add(&counts.published_events, 1);
                        add(&counts.publish_accepted, report.deliveries.len() as u64);
                        add(&counts.publish_rejected, report.rejected.len() as u64);
                    }
                    Err(_) => add(&counts.publish_errors, 1),
                }
            }
        }
    }));

    // RSS and queue samples while the load runs.
    let samples = 6u32;
    let mut rss_samples = Vec::new();
    for k in 1..=samples {
        tokio::time::sleep_until((started + duration * k / samples).into()).await;
        let rss = rss_kib();
        rss_samples.push(rss);
        let stats = engine.stats().await.expect("engine stats");
        println!(
            "  t={:>4}s rss {:>7} KiB | inbound {} ok | forwarded {} accepted, {} busy | \
             published {} accepted, {} rejected | received {} | outstanding {}/{}, pending {}, \
             in flight {} | silent connections {}, hanging requests {}",
            started.elapsed().as_secs(),
            rss,
            get(&counts.inbound_ok),
            get(&counts.forward_accepted),
            get(&counts.forward_busy),
            get(&counts.publish_accepted),
            get(&counts.publish_rejected),
            get(&counts.received),
            stats.outstanding,
            stats.capacity,
            stats.store.pending,
            stats.in_flight,
            counts.silent_connections.load(Ordering::Relaxed),
            counts.hanging_requests.load(Ordering::Relaxed),
        );
    }
    for task in tasks {
        task.await.expect("a load loop panicked");
    }
    let load_time = started.elapsed();
    let rss_end = rss_kib();

    // The audit: stop the engine (unfinished deliveries go back to the store), then every
    // accepted delivery must be found in the store, final or still queued.
    let store = engine.store().clone();
    let shutdown = engine.shutdown(Duration::from_secs(5)).await;
    let delivered = count(&*store, DeliveryState::Delivered).await;
    let pending = count(&*store, DeliveryState::Pending).await;
    let in_flight = count(&*store, DeliveryState::InFlight).await;
    let failed = count(&*store, DeliveryState::Failed).await;
    let refused = count(&*store, DeliveryState::Refused).await;
    let stored = delivered + pending + in_flight + failed + refused;
    let accepted = (get(&counts.forward_accepted) + get(&counts.publish_accepted)) as usize;
    let lost = accepted.saturating_sub(stored);

    let served = get(&counts.inbound_ok)
        + get(&counts.inbound_refused)
        + get(&counts.inbound_unexpected)
        + get(&counts.forward_accepted)
        + get(&counts.forward_busy)
        + get(&counts.forward_owner_full)
        + get(&counts.forward_unexpected);
    let secs = load_time.as_secs_f64();
    println!();
    println!("load time:          {secs:.1} s");
    println!(
        "requests served:    {served} ({:.0}/s): inbound {} verified, {} tampered refused (401), \
         {} unexpected; forward {} accepted, {} refused busy (503), {} refused over the \
         owner's share (429), {} unexpected",
        served as f64 / secs,
        get(&counts.inbound_ok),
        get(&counts.inbound_refused),
        get(&counts.inbound_unexpected),
        get(&counts.forward_accepted),
        get(&counts.forward_busy),
        get(&counts.forward_owner_full),
        get(&counts.forward_unexpected),
    );
    println!(
        "published:          {} events, {} deliveries accepted, {} rejected (queue or owner share full), {} errors",
        get(&counts.published_events),
        get(&counts.publish_accepted),
        get(&counts.publish_rejected),
        get(&counts.publish_errors),
    );
    println!(
        "deliveries made:    {delivered} delivered per the store ({} requests at the receiver)",
        get(&counts.received)
    );
    println!(
        "store audit:        {accepted} accepted = {delivered} delivered + {pending} queued + \
         {in_flight} in flight + {failed} dead-lettered + {refused} refused ({stored} stored); \
         lost: {lost}; shutdown drained: {}, unfinished returned to the store: {}",
        shutdown.drained, shutdown.unfinished
    );
    // The first sample is taken once connections, pools and the queue have filled: growth
    // after it is what a leak would look like.
    let warm = rss_samples.first().copied().unwrap_or(rss_start);
    println!(
        "RSS:                start {rss_start} KiB, end {rss_end} KiB; samples {rss_samples:?} KiB; \
         end vs first sample {:+.1}%",
        (rss_end as f64 / warm as f64 - 1.0) * 100.0,
    );
    assert_eq!(lost, 0, "accepted deliveries are missing from the store");
    assert_eq!(
        get(&counts.inbound_unexpected),
        0,
        "an inbound request got a wrong status"
    );
}
