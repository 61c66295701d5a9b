//! `WebhookRegistry::publish` fan-out against local receivers, next to the engine's own
//! figure for deliveries submitted one by one, in the same run.
//!
//! Run with `cargo bench --bench registry`. Scenarios:
//!
//! 1. engine baseline: `DeliveryEngine::submit` of signed deliveries, one at a time, to 1 and
//!    to 10 endpoints;
//! 2. fan-out: `publish` of one event to 100 subscribed endpoints (repeated);
//! 3. a steady 1,000 events/s published for 3 s to 10 subscribed endpoints.
//!
//! Every endpoint is its own axum server on 127.0.0.1 (so the engine's per-host concurrency
//! cap applies per endpoint, as in production). Deliveries per second count deliveries
//! *received*, from the first submit or publish to the last arrival.

#[path = "../examples/gateway/run_status.rs"]
mod run_status;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::run_status::{RunState, RunStatus};
use axum::routing::post;
use axum::Router;
use tokio::sync::Notify;
use tower_webhooks::delivery::{Delivery, SigningSpec};
use tower_webhooks::delivery::{DeliveryEngine, EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::registry::{
    BearerTokens, Endpoint, Owner, PublishError, SigningScheme, WebhookRegistry,
};
use tower_webhooks::scheme::Nextmv;

#[derive(Clone)]
struct Counter {
    received: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

impl Counter {
    fn get(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    async fn wait_for(&self, target: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let notified = self.notify.notified();
            if self.get() >= target {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                panic!("only {} of {target} deliveries arrived", self.get());
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
    }
}

async fn receivers(n: usize, counter: &Counter) -> Vec<String> {
    let mut urls = Vec::with_capacity(n);
    for _ in 0..n {
        let counter = counter.clone();
        let app = Router::new().route(
            "/hook",
            post(move |_body: bytes::Bytes| {
                let counter = counter.clone();
                async move {
                    counter.received.fetch_add(1, Ordering::SeqCst);
                    counter.notify.notify_waiters();
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}/hook", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    urls
}

fn engine_builder() -> EngineBuilder {
    EngineBuilder::new()
        .guard(SsrfGuard::new().allow_host("127.0.0.1"))
        .policy(Policy::standard())
        .capacity(200_000)
        .max_queued_per_owner(200_000)
        .metrics_interval(None)
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// The engine alone: `n` signed deliveries submitted one at a time, round-robin over `urls`.
async fn engine_baseline(urls: &[String], n: usize, counter: &Counter) -> f64 {
    let engine: DeliveryEngine = engine_builder().build();
    let body = serde_json::to_vec(&RunStatus::example()).unwrap();
    let start = counter.get();
    let started = Instant::now();
    for i in 0..n {
        let delivery = Delivery::new(format!("b-{i}"), urls[i % urls.len()].clone(), body.clone())
            .with_signing(SigningSpec::new(Nextmv::new(), "bench-secret"));
        engine.submit(delivery).await.unwrap();
    }
    counter.wait_for(start + n, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let _ = engine.shutdown(Duration::from_secs(5)).await;
    rate(n, elapsed)
}

async fn registry_for(urls: &[String]) -> WebhookRegistry {
    let registry = WebhookRegistry::builder()
        .engine(engine_builder())
        .event_type(crate::run_status::event_type())
        .auth(BearerTokens::new())
        .build();
    let now = SystemTime::now();
    for (i, url) in urls.iter().enumerate() {
        let webhook = Endpoint::new(
            Owner::new(format!("tenant-{}", i % 7)),
            format!("hook-{i}"),
            url.clone(),
            vec![RunStatus::TYPE.to_owned()],
            SigningScheme::Nextmv,
            now,
        );
        registry.subscriptions().insert(webhook).await.unwrap();
    }
    registry
}

fn status() -> RunStatus {
    RunStatus::new("run-1", "bench-app", RunState::Succeeded, SystemTime::now())
}

/// `events` events, each fanned out to every one of `urls`, published back to back.
async fn fan_out(urls: &[String], events: usize, counter: &Counter) -> (f64, Duration) {
    let registry = registry_for(urls).await;
    let start = counter.get();
    let mut publish_times = Vec::with_capacity(events);
    let started = Instant::now();
    for _ in 0..events {
        let t = Instant::now();
        let report = registry
            .broadcast(RunStatus::TYPE, &status())
            .await
            .unwrap();
        publish_times.push(t.elapsed());
        assert_eq!(report.deliveries.len(), urls.len());
    }
    let n = events * urls.len();
    counter.wait_for(start + n, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let _ = registry.engine().shutdown(Duration::from_secs(5)).await;
    publish_times.sort();
    (rate(n, elapsed), publish_times[publish_times.len() / 2])
}

/// `per_second` events a second for `seconds`, each to every one of `urls`.
async fn steady(
    urls: &[String],
    per_second: u64,
    seconds: u64,
    counter: &Counter,
) -> (f64, f64, Duration, usize) {
    let registry = registry_for(urls).await;
    let start = counter.get();
    let total = (per_second * seconds) as usize;
    let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rejected = 0;
    let started = Instant::now();
    for _ in 0..total {
        interval.tick().await;
        rejected += match registry.broadcast(RunStatus::TYPE, &status()).await {
            Ok(_) => 0,
            Err(PublishError::NotQueued(report)) => report.rejected.len(),
            Err(err) => panic!("publish failed: {err}"),
        };
    }
    let published = started.elapsed();
    let n = total * urls.len() - rejected;
    counter.wait_for(start + n, Duration::from_secs(300)).await;
    let elapsed = started.elapsed();
    let _ = registry.engine().shutdown(Duration::from_secs(5)).await;
    (
        rate(total, published),
        rate(n, elapsed),
        elapsed.saturating_sub(published),
        rejected,
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let counter = Counter {
            received: Arc::new(AtomicUsize::new(0)),
            notify: Arc::new(Notify::new()),
        };
        let urls = receivers(100, &counter).await;
        let quick = std::env::var_os("BENCH_QUICK").is_some();
        let scale = if quick { 5 } else { 1 };

        // Warm-up (connections, allocator).
        engine_baseline(&urls[..10], 500, &counter).await;

        let one = engine_baseline(&urls[..1], 4000 / scale, &counter).await;
        let ten = engine_baseline(&urls[..10], 4000 / scale, &counter).await;
        let hundred = engine_baseline(&urls, 4000 / scale, &counter).await;
        println!("engine baseline (submit one by one, Nextmv-signed):");
        println!("  1 endpoint     {one:>9.0} deliveries/s");
        println!("  10 endpoints   {ten:>9.0} deliveries/s");
        println!("  100 endpoints  {hundred:>9.0} deliveries/s");

        let (fan, publish_p50) = fan_out(&urls, 40 / scale, &counter).await;
        println!("publish fan-out, 1 event -> 100 endpoints ({} events):", 40 / scale);
        println!(
            "  {fan:>9.0} deliveries/s  ({:.2}x the engine baseline to 100 endpoints); publish() p50 {:.2} ms",
            fan / hundred,
            publish_p50.as_secs_f64() * 1000.0
        );

        let seconds = if quick { 1 } else { 3 };
        let (offered, delivered, drain, rejected) = steady(&urls[..10], 1000, seconds, &counter).await;
        println!("steady 1,000 events/s -> 10 endpoints for {seconds} s (10,000 deliveries/s offered):");
        println!(
            "  published {offered:>7.0} events/s; delivered {delivered:>9.0} deliveries/s ({:.0}% of the offered load, \
             {:.2}x the engine baseline to 10 endpoints); queue drained {:.2} s after the last publish; {rejected} rejected",
            delivered / (offered * 10.0) * 100.0,
            delivered / ten,
            drain.as_secs_f64()
        );
    });
}
