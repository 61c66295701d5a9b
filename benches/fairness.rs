//! One tenant cannot starve another, as figures: tenant B's delivery delay
//! (from `publish` to arrival at B's receiver) unloaded, and while tenant A floods 400
//! webhooks whose endpoints accept connections and never answer. Same run, same engine
//! defaults, so the two rows compare directly.
//!
//! Run with `cargo bench --bench fairness` (`BENCH_QUICK=1` for fewer events). Rows:
//!
//! 1. unloaded: B publishes `run.status` events one after another; p50 / p99 / max delay;
//! 2. under the flood: A publishes once to its 400 webhooks (40 on each of 10 hanging hosts,
//!    so its attempts want more than the engine's 64 slots), then B publishes as in row 1;
//! 3. reference, the old dispatch: the same flood with the per-owner share raised to the
//!    whole engine (`max_in_flight_per_owner(64)`, `max_queued_per_owner(1024)`), a few
//!    events only: the first waits behind A's attempts for one of them to time out (later
//!    ones may find slots A's timed-out attempts left while their retries wait).
//!
//! Every attempt times out after 5 s here (15 s by default) to keep row 3 short.

#[path = "../examples/gateway/run_status.rs"]
mod run_status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::run_status::{RunState, RunStatus};
use axum::routing::post;
use axum::Router;
use http::HeaderMap;
use tokio::sync::Notify;
use tower_webhooks::delivery::{EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::registry::{BearerTokens, Endpoint, Owner, SigningScheme, WebhookRegistry};

/// Arrival instants by delivery id (`X-Request-Id`).
#[derive(Clone, Default)]
struct Arrivals {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    notify: Arc<Notify>,
}

impl Arrivals {
    async fn wait(&self, id: &str) -> Instant {
        loop {
            let notified = self.notify.notified();
            if let Some(at) = self.seen.lock().unwrap().get(id) {
                return *at;
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
    }
}

async fn receiver(arrivals: Arrivals) -> String {
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, _body: bytes::Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let at = Instant::now();
                if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
                    arrivals.seen.lock().unwrap().insert(id.to_owned(), at);
                }
                arrivals.notify.notify_waiters();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Listeners that accept and never answer.
async fn hanging(n: usize) -> Vec<String> {
    let mut urls = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}/hook", listener.local_addr().unwrap()));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
    }
    urls
}

async fn registry(engine: EngineBuilder, b_url: &str, flood: &[String]) -> WebhookRegistry {
    let registry = WebhookRegistry::builder()
        .engine(
            engine
                .guard(SsrfGuard::new().allow_host("127.0.0.1"))
                .policy(Policy::standard())
                .attempt_timeout(Duration::from_secs(5))
                .metrics_interval(None),
        )
        .event_type(crate::run_status::event_type())
        .auth(BearerTokens::new())
        .build();
    let now = SystemTime::now();
    let mut hooks = vec![("tenant-b", "b-hook".to_owned(), b_url.to_owned())];
    for i in 0..400 {
        let url = flood[i % flood.len()].clone();
        hooks.push(("tenant-a", format!("a-hook-{i}"), url));
    }
    for (owner, id, url) in hooks {
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
    registry
}

fn status() -> RunStatus {
    RunStatus::new("run-1", "bench-app", RunState::Running, SystemTime::now())
}

/// B's delays for `events` events published one after another.
async fn tenant_b(registry: &WebhookRegistry, arrivals: &Arrivals, events: usize) -> Vec<Duration> {
    let b = Owner::new("tenant-b");
    let mut delays = Vec::with_capacity(events);
    for _ in 0..events {
        let started = Instant::now();
        let report = registry
            .publish(&b, RunStatus::TYPE, &status())
            .await
            .expect("tenant B's event is queued");
        let id = &report.deliveries[0].delivery_id;
        delays.push(arrivals.wait(id).await.duration_since(started));
    }
    delays
}

/// Tenant A's flood: one event to its 400 webhooks; how many were queued.
async fn flood(registry: &WebhookRegistry) -> usize {
    let a = Owner::new("tenant-a");
    match registry.publish(&a, RunStatus::TYPE, &status()).await {
        Ok(report) => report.deliveries.len(),
        Err(tower_webhooks::registry::PublishError::NotQueued(report)) => report.deliveries.len(),
        Err(err) => panic!("flood: {err}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints p50 / p99 / max; returns p99 and max.
fn row(name: &str, mut delays: Vec<Duration>) -> (Duration, Duration) {
    delays.sort();
    let (p50, p99, max) = (
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
    );
    println!(
        "  {name:<34} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   ({} events)",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        delays.len()
    );
    (p99, max)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let quick = std::env::var_os("BENCH_QUICK").is_some();
        let events = if quick { 20 } else { 200 };
        let arrivals = Arrivals::default();
        let b_url = receiver(arrivals.clone()).await;
        let flood_urls = hanging(10).await;

        println!("tenant B's delivery delay, publish -> arrival (default engine shares):");
        let unloaded_registry = registry(EngineBuilder::new(), &b_url, &flood_urls).await;
        // Warm-up (the connection to B's receiver, the allocator).
        tenant_b(&unloaded_registry, &arrivals, 10).await;
        let unloaded = row(
            "unloaded",
            tenant_b(&unloaded_registry, &arrivals, events).await,
        );

        let flooded_registry = registry(EngineBuilder::new(), &b_url, &flood_urls).await;
        tenant_b(&flooded_registry, &arrivals, 10).await;
        let queued = flood(&flooded_registry).await;
        let flooded = row(
            &format!("A flooding ({queued} hanging queued)"),
            tenant_b(&flooded_registry, &arrivals, events).await,
        );
        println!(
            "  under the flood / unloaded: p99 {:.2}x, max {:.2}x",
            flooded.0.as_secs_f64() / unloaded.0.as_secs_f64(),
            flooded.1.as_secs_f64() / unloaded.1.as_secs_f64()
        );

        let unfair = EngineBuilder::new()
            .max_in_flight_per_owner(64)
            .max_queued_per_owner(1024);
        let reference = registry(unfair, &b_url, &flood_urls).await;
        tenant_b(&reference, &arrivals, 3).await;
        let queued = flood(&reference).await;
        let old = row(
            &format!("reference, one share ({queued} queued)"),
            tenant_b(&reference, &arrivals, if quick { 2 } else { 3 }).await,
        );
        // Only some of B's events meet A's attempts holding every slot: the worst one shows it.
        println!(
            "  reference max / fair max under the flood: {:.0}x",
            old.1.as_secs_f64() / flooded.1.as_secs_f64()
        );
    });
}
