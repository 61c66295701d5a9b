//! Deliveries per second from `WebhookForwardLayer` to a local receiver, and the delay from the
//! inner response to the first delivery attempt, next to a bare loop that POSTs the same bodies
//! with the same client (the physical reference).
//!
//! Run with `cargo bench --bench forward` (`FORWARD_BENCH_N` deliveries per round, default
//! 20 000; `FORWARD_BENCH_CONCURRENCY` callers, default 64). `FORWARD_BENCH_PACED=0` skips the
//! paced latency rows, so that a profiler (`valgrind --tool=callgrind`, `perf record`) sees only
//! the saturated rounds; `FORWARD_BENCH_SIDE=layer` (or `bare`, `app`, `required`) runs only
//! that row's rounds, so that a profile of one row is not mixed with the others.
//!
//! Each round also times the app alone (the same calls without the trigger): with it, the
//! bench prints the ratio an engine that cost nothing would reach (the app call plus the POST
//! on the same two cores) and the engine's own cost per delivery. It also times the bare loop
//! doing the work every engine design must do for a signed, recorded delivery (stored claimed,
//! signed, digested, its attempt recorded in the engine's default store): the ratio that row
//! allows is the floor of this store and scheme, and the rest is the engine's machinery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tower::{Service, ServiceExt};
use tower_webhooks::delivery::{
    Attempt, AttemptOutcome, AttemptResponse, ClientBuilder, Decision, Delivery, DeliveryClient,
    DeliveryEngine, DeliveryState, Next, RecordedHeaders, SsrfGuard,
};
use tower_webhooks::forward::{RunId, WebhookForwardLayer};
use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
use tower_webhooks::store::{AttemptRecord, DeliveryStore, MemoryStore};
use tower_webhooks::SecretSet;

#[derive(Default)]
struct Arrivals {
    at: Mutex<HashMap<String, Instant>>,
    count: AtomicUsize,
    /// The arrival that completes the round: only it wakes the waiter. A wake per arrival
    /// would unpark the bench's own main thread once per request, a third thread competing for
    /// the two cores, and only while the layer drains its queue (the bare loop's requests are
    /// all answered before it waits), which measured as a tenth of the layer's cost.
    target: AtomicUsize,
    notify: Notify,
}

impl Arrivals {
    fn reset(&self, target: usize) {
        self.at.lock().unwrap().clear();
        self.count.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }

    async fn wait(&self, n: usize) {
        while self.count.load(Ordering::SeqCst) < n {
            let notified = self.notify.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

async fn start_receiver(arrivals: Arc<Arrivals>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(move |request: Request| {
        let arrivals = arrivals.clone();
        async move {
            let now = Instant::now();
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = to_bytes(request.into_body(), usize::MAX).await;
            arrivals.at.lock().unwrap().entry(id).or_insert(now);
            if arrivals.count.fetch_add(1, Ordering::SeqCst) + 1
                == arrivals.target.load(Ordering::SeqCst)
            {
                arrivals.notify.notify_waiters();
            }
            StatusCode::OK
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The layer: `n` forwarded calls from `concurrency` callers; returns deliveries/s and the
/// sorted inner-response → first-attempt delays.
async fn run_layer(
    app: &Router,
    responded: &Arc<Mutex<HashMap<String, Instant>>>,
    arrivals: &Arc<Arrivals>,
    uri: &str,
    n: usize,
    concurrency: usize,
) -> (f64, Vec<Duration>) {
    arrivals.reset(n);
    responded.lock().unwrap().clear();
    let started = Instant::now();
    call_app(app, uri, n, concurrency).await;
    arrivals.wait(n).await;
    let elapsed = started.elapsed();
    let responded = responded.lock().unwrap();
    let arrived = arrivals.at.lock().unwrap();
    let mut delays: Vec<Duration> = responded
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|arrival| arrival.saturating_duration_since(*at))
        })
        .collect();
    delays.sort();
    (n as f64 / elapsed.as_secs_f64(), delays)
}

/// An open loop: one forwarded call every `1/rate` s for `duration`.
async fn run_paced(
    app: &Router,
    responded: &Arc<Mutex<HashMap<String, Instant>>>,
    arrivals: &Arc<Arrivals>,
    uri: &str,
    rate: u64,
    duration: Duration,
) -> (f64, Vec<Duration>) {
    let n = (rate as f64 * duration.as_secs_f64()) as usize;
    arrivals.reset(n);
    responded.lock().unwrap().clear();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        ticks.tick().await;
        let (app, uri) = (app.clone(), uri.to_owned());
        calls.push(tokio::spawn(async move {
            let request = http::Request::post(&uri)
                .header("content-type", "application/json")
                .header("x-webhook-secret", "bench-secret")
                .body(Body::from(r#"{"param":"hello world"}"#))
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let _ = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    arrivals.wait(n).await;
    let elapsed = started.elapsed();
    let responded = responded.lock().unwrap();
    let arrived = arrivals.at.lock().unwrap();
    let mut delays: Vec<Duration> = responded
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|arrival| arrival.saturating_duration_since(*at))
        })
        .collect();
    delays.sort();
    (n as f64 / elapsed.as_secs_f64(), delays)
}

/// `n` calls of `app` at `uri` from `concurrency` callers, each answer read to its end.
async fn call_app(app: &Router, uri: &str, n: usize, concurrency: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..concurrency {
        let (app, next, uri) = (app.clone(), next.clone(), uri.to_owned());
        callers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let request = http::Request::post(&uri)
                    .header("content-type", "application/json")
                    .header("x-webhook-secret", "bench-secret")
                    .body(Body::from(r#"{"param":"hello world"}"#))
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                let _ = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
}

/// The application alone: the same calls without the trigger (no delivery), so the layer's
/// end-to-end figure can be set against what the app call and the POST cost without any
/// engine. Returns calls/s.
async fn run_caller_only(app: &Router, uri: &str, n: usize, concurrency: usize) -> f64 {
    let plain = uri.split('?').next().unwrap_or(uri);
    let started = Instant::now();
    call_app(app, plain, n, concurrency).await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// The reference: the same bodies POSTed by the same client, `concurrency` loops.
///
/// With a `store`, each POST also does what no engine design can skip for a signed, recorded
/// delivery: the delivery stored claimed (claim on insert), the Cerebrium signature, the body's
/// digest, and the attempt with its request and response headers recorded as final. What the
/// layer costs beyond that row is the engine's machinery (queueing, fairness, tasks, timers).
async fn run_bare<C>(
    client: &C,
    arrivals: &Arc<Arrivals>,
    url: &str,
    body: Bytes,
    store: Option<Arc<MemoryStore>>,
    n: usize,
    concurrency: usize,
) -> f64
where
    C: Service<http::Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone
        + Send
        + 'static,
    C::Future: Send,
    C::Error: std::fmt::Debug,
{
    arrivals.reset(n);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url, body, store) = (
            client.clone(),
            next.clone(),
            url.to_owned(),
            body.clone(),
            store.clone(),
        );
        loops.push(tokio::spawn(async move {
            let (scheme, secrets) = (Cerebrium::new(), SecretSet::from("bench-secret"));
            let no_headers = http::HeaderMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let Some(store) = &store else {
                    let request = http::Request::post(&url)
                        .header("content-type", "application/json")
                        .header("x-request-id", format!("bare-{i}"))
                        .body(Full::new(body.clone()))
                        .unwrap();
                    let response = client.clone().oneshot(request).await.unwrap();
                    let _ = response.into_body().collect().await;
                    continue;
                };
                // Unique across rounds: the store keeps finished deliveries.
                static STORED: AtomicUsize = AtomicUsize::new(0);
                let id = format!("stored-{}", STORED.fetch_add(1, Ordering::Relaxed));
                let now = SystemTime::now();
                let delivery = Delivery::new(id.clone(), url.clone(), body.clone());
                let claim = store
                    .enqueue_claimed(delivery, now + Duration::from_secs(30))
                    .await
                    .unwrap()
                    .expect("the memory store claims on insert");
                let mut headers = http::HeaderMap::new();
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                headers.insert("x-request-id", HeaderValue::from_str(&id).unwrap());
                scheme
                    .sign(
                        &Message::new(&id, 1_731_381_205, &body),
                        &secrets,
                        &mut headers,
                    )
                    .unwrap();
                let mut attempt = Attempt::new(1, now, AttemptOutcome::Status(200));
                attempt.body_size = body.len();
                let mut digest = [0u8; 64];
                hex::encode_to_slice(Sha256::digest(&body), &mut digest).unwrap();
                attempt.body_sha256 = String::from_utf8_lossy(&digest).into_owned();
                attempt.request_headers = RecordedHeaders::redacted(&headers, &no_headers);
                let mut request = http::Request::post(&url)
                    .body(Full::new(body.clone()))
                    .unwrap();
                *request.headers_mut() = headers;
                let response = client.clone().oneshot(request).await.unwrap();
                let (parts, answer) = response.into_parts();
                let answer = answer.collect().await.unwrap().to_bytes();
                let recorded = RecordedHeaders::redacted_copies(&parts.headers);
                attempt.response = Some(AttemptResponse::new(200, recorded, answer, false));
                attempt.decision = Decision::Delivered;
                let record = AttemptRecord {
                    id: &id,
                    lease: claim.lease,
                    attempt,
                    next: Next::Final {
                        state: DeliveryState::Delivered,
                        reason: None,
                    },
                };
                store.record_attempt(record).await.unwrap();
            }
        }));
    }
    for task in loops {
        task.await.unwrap();
    }
    arrivals.wait(n).await;
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("FORWARD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let concurrency: usize = std::env::var("FORWARD_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let arrivals = Arc::new(Arrivals::default());
        let addr = start_receiver(arrivals.clone()).await;
        let guard = SsrfGuard::new().allow_loopback();
        let client = ClientBuilder::new(guard.clone()).build_service();
        let engine = DeliveryEngine::builder()
            .guard(guard)
            .client(DeliveryClient::from_service(client.clone()))
            .capacity(n * 2)
            // One endpoint host is one owner: its share is the whole queue here.
            .max_queued_per_owner(n * 2)
            // The same parallelism towards the receiver as the bare loop.
            .max_in_flight(concurrency)
            .max_per_endpoint(concurrency)
            .build();

        let responded: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let marks = responded.clone();
        let app = Router::new()
            .route(
                "/v4/{project}/{app}/{function}",
                post(move |request: Request| {
                    let marks = marks.clone();
                    async move {
                        let run_id = request.extensions().get::<RunId>().map(|r| r.0.clone());
                        let result = Json(json!({"smile": "wave", "run_id": run_id, "items": [1, 2, 3, 4, 5, 6, 7, 8]}));
                        if let Some(id) = run_id {
                            marks.lock().unwrap().insert(id, Instant::now());
                        }
                        result
                    }
                }),
            )
            .layer(WebhookForwardLayer::new(engine.clone()));
        let receiver = format!("http://{addr}/hook");
        let uri = format!(
            "/v4/p-bench/app/run?webhookEndpoint={}",
            receiver.replace(':', "%3A").replace('/', "%2F")
        );

        // A delivered body of the same shape, for the bare loop.
        let (_, _) = run_layer(&app, &responded, &arrivals, &uri, 1, 1).await;
        let id = responded.lock().unwrap().keys().next().cloned().unwrap();
        let sample = engine.conversation(&id).await.unwrap().unwrap().delivery.body;

        println!("forward bench: {n} deliveries per round, {concurrency} concurrent callers, 2 worker threads");
        println!("delivered body: {} bytes, Cerebrium-signed", sample.len());
        // Warm-up.
        run_layer(&app, &responded, &arrivals, &uri, 2_000.min(n), concurrency).await;
        run_bare(&client, &arrivals, &receiver, sample.clone(), None, 2_000.min(n), concurrency).await;
        // The engine's default store, for the row of work every design must do.
        let store = Arc::new(MemoryStore::new());
        run_bare(&client, &arrivals, &receiver, sample.clone(), Some(store.clone()), 2_000.min(n), concurrency).await;

        let side = std::env::var("FORWARD_BENCH_SIDE").unwrap_or_default();
        let mut best_bare = 0f64;
        let mut best_layer = 0f64;
        let mut best_caller = 0f64;
        let mut best_required = 0f64;
        let mut best_delays = Vec::new();
        for round in 1..=2 {
            // `FORWARD_BENCH_SIDE` names the one row a profile should see; unset, all run.
            let runs = |row: &str| side.is_empty() || side == row;
            let bare = if runs("bare") {
                run_bare(&client, &arrivals, &receiver, sample.clone(), None, n, concurrency).await
            } else {
                f64::NAN
            };
            let (layer, delays) = if runs("layer") {
                run_layer(&app, &responded, &arrivals, &uri, n, concurrency).await
            } else {
                (f64::NAN, Vec::new())
            };
            let caller = if runs("app") {
                run_caller_only(&app, &uri, n, concurrency).await
            } else {
                f64::NAN
            };
            let required = if runs("required") {
                let store = Some(store.clone());
                run_bare(&client, &arrivals, &receiver, sample.clone(), store, n, concurrency).await
            } else {
                f64::NAN
            };
            println!(
                "round {round}: bare {bare:>9.0} req/s | layer {layer:>9.0} deliveries/s | app alone {caller:>9.0} calls/s | bare + required work {required:>9.0} req/s | delay p50 {:>8.2?} p99 {:>8.2?} ({} measured)",
                percentile(&delays, 0.5),
                percentile(&delays, 0.99),
                delays.len()
            );
            best_bare = best_bare.max(bare);
            best_caller = best_caller.max(caller);
            best_required = best_required.max(required);
            if layer > best_layer {
                best_layer = layer;
                best_delays = delays;
            }
        }
        println!();
        println!("bare loop (same client, same bodies): {best_bare:.0} POST/s");
        println!("WebhookForwardLayer end to end:       {best_layer:.0} deliveries/s");
        println!("the app alone (no trigger):           {best_caller:.0} calls/s");
        println!("ratio layer / bare:                   {:.2}", best_layer / best_bare);
        // Both sides use the same two cores: with an engine that cost nothing, a delivery would
        // cost the app call plus the POST, and the layer would reach this ratio.
        let floor = 1.0 / (1.0 / best_bare + 1.0 / best_caller);
        println!("ratio with a free engine (floor):     {:.2}", floor / best_bare);
        println!(
            "engine's own cost per delivery:       {:.1} µs of the machine ({:.1} µs at the floor)",
            1e6 / best_layer - 1e6 / floor,
            1e6 / floor
        );
        // The same with the work no engine design can skip (stored claimed, signed, digest,
        // attempt recorded): the most any engine built on this store and scheme can reach.
        let required_floor = 1.0 / (1.0 / best_required + 1.0 / best_caller);
        println!("bare + required work (store, sign, record): {best_required:.0} req/s ({:.2} of bare)", best_required / best_bare);
        println!("ratio with only the required work (floor): {:.2}", required_floor / best_bare);
        // The engine's own share, free of what the store and the scheme cost: 1.0 would be an
        // engine whose queueing, fairness and tasks cost nothing.
        println!("layer / required-work floor:          {:.2}", best_layer / required_floor);
        println!(
            "engine machinery per delivery:        {:.1} µs of the machine (beyond the required work)",
            1e6 / best_layer - 1e6 / required_floor
        );
        println!(
            "saturated, inner response -> first attempt: p50 {:.2?}, p99 {:.2?}",
            percentile(&best_delays, 0.5),
            percentile(&best_delays, 0.99)
        );
        // Latency below saturation: an open loop at a fixed rate, so no queue builds up.
        let paced = std::env::var("FORWARD_BENCH_PACED").map_or(true, |v| v != "0");
        for rate in [1_000u64, 5_000].into_iter().filter(|_| paced) {
            let (achieved, delays) = run_paced(&app, &responded, &arrivals, &uri, rate, Duration::from_secs(2)).await;
            println!(
                "paced at {rate}/s ({achieved:.0} deliveries/s): inner response -> first attempt p50 {:.2?}, p99 {:.2?}",
                percentile(&delays, 0.5),
                percentile(&delays, 0.99)
            );
        }
        let report = engine.shutdown(Duration::from_secs(10)).await;
        assert!(report.drained);
    });
}
