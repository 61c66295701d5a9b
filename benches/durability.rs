//! The cost of durability, in one run: end-to-end deliveries per second from a
//! `WebhookForwardLayer` app to a local receiver, and the p50/p99 latency of the caller's
//! answer (which, with a durable store, waits for the delivery row's commit), for the memory,
//! SQLite and PostgreSQL stores side by side (PostgreSQL when `TOWER_WEBHOOKS_POSTGRES_URL` is
//! set).
//!
//! ```text
//! cargo bench --bench durability --features sqlite,postgres
//! TOWER_WEBHOOKS_BENCH_N=20000 TOWER_WEBHOOKS_BENCH_ROUNDS=5 TOWER_WEBHOOKS_BENCH_CALLERS=128 \
//!     cargo bench --bench durability --features sqlite,postgres
//! ```
//!
//! Targets: SQLite ≥ 0.6× and PostgreSQL ≥ 0.4× the memory store's throughput, and
//! SQLite ≥ 1,000 durable deliveries/s on a 2-core machine.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::Notify;
use tower::ServiceExt;
use tower_webhooks::delivery::{ClientBuilder, DeliveryEngine, Policy, SsrfGuard};
use tower_webhooks::forward::WebhookForwardLayer;
use tower_webhooks::store::{DeliveryStore, MemoryStore, SqliteStore, Synchronous};

/// Concurrent callers (`TOWER_WEBHOOKS_BENCH_CALLERS`, 64 by default).
fn caller_count() -> usize {
    std::env::var("TOWER_WEBHOOKS_BENCH_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

struct Receiver {
    url: String,
    hits: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

async fn receiver() -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(Notify::new());
    let (h, n) = (hits.clone(), notify.clone());
    let app = Router::new().fallback(move |body: axum::body::Bytes| {
        let (hits, notify) = (h.clone(), n.clone());
        async move {
            std::hint::black_box(body);
            hits.fetch_add(1, Ordering::Relaxed);
            notify.notify_waiters();
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hook"),
        hits,
        notify,
    }
}

struct Figures {
    name: String,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(name: &str, store: Arc<dyn DeliveryStore>, n: usize) -> Figures {
    let receiver = receiver().await;
    let guard = SsrfGuard::new().allow_loopback();
    // As many pooled connections as attempts in flight: no connection churn.
    let client = ClientBuilder::new(guard.clone())
        .pool_max_idle_per_host(64)
        .build();
    let engine = DeliveryEngine::builder()
        .shared_store(store)
        .client(client)
        .guard(guard)
        .policy(Policy::cerebrium().with_delays([Duration::from_millis(100); 2]))
        .capacity(n + 1)
        // One endpoint host is one owner: its share is the whole queue here.
        .max_queued_per_owner(n + 1)
        .max_in_flight(64)
        .max_per_endpoint(64)
        .build();
    let app = Router::new()
        .route(
            "/v4/{project}/{app}/{function}",
            post(|Json(input): Json<serde_json::Value>| async move {
                Json(serde_json::json!({"smile": "wave", "input": input}))
            }),
        )
        .layer(WebhookForwardLayer::new(engine.clone()));
    let uri = format!(
        "/v4/p/app/run?webhookEndpoint={}",
        receiver.url.replace(':', "%3A").replace('/', "%2F")
    );

    let started = Instant::now();
    let per_caller = n / caller_count();
    let callers: Vec<_> = (0..caller_count())
        .map(|c| {
            let (app, uri) = (app.clone(), uri.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for i in 0..per_caller {
                    let request = http::Request::post(&uri)
                        .header("content-type", "application/json")
                        .header("x-webhook-secret", "bench-secret")
                        .body(Body::from(format!(r#"{{"caller":{c},"i":{i}}}"#)))
                        .unwrap();
                    let sent = Instant::now();
                    let response = app.clone().oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    to_bytes(response.into_body(), usize::MAX).await.unwrap();
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for caller in callers {
        latencies.extend(caller.await.unwrap());
    }
    let total = per_caller * caller_count();
    loop {
        let notified = receiver.notify.notified();
        if receiver.hits.load(Ordering::Relaxed) >= total {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{name}: deliveries stalled"
        );
    }
    let elapsed = started.elapsed();
    let _ = engine.shutdown(Duration::from_secs(5)).await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        name: name.to_owned(),
        per_second: total as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Deliveries through each store before it is measured.
const STORE_WARM_UP: usize = 500;

/// `run` on `store` after a short warm-up on the same store (every store alike): the timed
/// deliveries measure the steady state, not opening the pool's connections or preparing the
/// statements. The warm-up's deliveries stay in the store.
async fn measure(name: &str, store: Arc<dyn DeliveryStore>, n: usize) -> Figures {
    run("warm-up", store.clone(), STORE_WARM_UP).await;
    run(name, store, n).await
}

/// Whether the store `name` is measured (`TOWER_WEBHOOKS_BENCH_STORES`, a comma-separated
/// list of `memory`, `sqlite-full`, `sqlite-normal`, `postgres`; all by default). Only for
/// profiling one store: the ratios need `memory` in the same run.
fn wanted(name: &str) -> bool {
    match std::env::var("TOWER_WEBHOOKS_BENCH_STORES") {
        Ok(list) if !list.is_empty() => list.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

fn main() {
    let n: usize = std::env::var("TOWER_WEBHOOKS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rounds: usize = std::env::var("TOWER_WEBHOOKS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        // A warm-up so the first store measured does not pay for it.
        run("warm-up", Arc::new(MemoryStore::new()), 1_000).await;
        // The stores take turns, `rounds` times, each on a fresh database; the best round of
        // each is kept, so a burst of load from elsewhere on the machine does not decide a
        // ratio.
        let mut best: Vec<Figures> = Vec::new();
        for round in 0..rounds {
            let mut results = Vec::new();
            if wanted("memory") {
                results.push(measure("memory", Arc::new(MemoryStore::new()), n).await);
            }
            if wanted("sqlite-full") {
                let sqlite = SqliteStore::connect(dir.path().join(format!("full{round}.db")))
                    .await
                    .unwrap();
                results.push(measure("sqlite (synchronous=FULL)", Arc::new(sqlite), n).await);
            }
            if wanted("sqlite-normal") {
                let sqlite = SqliteStore::builder(dir.path().join(format!("normal{round}.db")))
                    .synchronous(Synchronous::Normal)
                    .connect()
                    .await
                    .unwrap();
                results.push(measure("sqlite (synchronous=NORMAL)", Arc::new(sqlite), n).await);
            }
            #[cfg(feature = "postgres")]
            match std::env::var("TOWER_WEBHOOKS_POSTGRES_URL") {
                Ok(url) if !url.is_empty() && wanted("postgres") => {
                    let schema = format!("tw_bench_{}_{round}", std::process::id());
                    let store = tower_webhooks::store::PostgresStore::builder(&url)
                        .schema(&schema)
                        .max_connections(16)
                        .connect()
                        .await
                        .unwrap();
                    let pool = store.pool().clone();
                    results.push(measure("postgres", Arc::new(store), n).await);
                    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                        .execute(&pool)
                        .await
                        .unwrap();
                }
                _ if round == 0 => {
                    println!("postgres: skipped (TOWER_WEBHOOKS_POSTGRES_URL is not set)")
                }
                _ => {}
            }
            for r in &results {
                println!(
                    "round {}: {:<28} {:>8.0}/s",
                    round + 1,
                    r.name,
                    r.per_second
                );
            }
            if best.is_empty() {
                best = results;
            } else {
                for (kept, r) in best.iter_mut().zip(results) {
                    if r.per_second > kept.per_second {
                        *kept = r;
                    }
                }
            }
        }
        let results = best;
        let Some(memory) = results
            .iter()
            .find(|r| r.name == "memory")
            .map(|r| r.per_second)
        else {
            return;
        };
        println!();
        println!(
            "durability: best of {rounds} rounds of {n} deliveries per store, {} concurrent \
             callers, in-process app, local receiver over TCP",
            caller_count()
        );
        println!(
            "{:<28} {:>14} {:>10} {:>12} {:>12}",
            "store", "deliveries/s", "vs memory", "caller p50", "caller p99"
        );
        for r in &results {
            println!(
                "{:<28} {:>14.0} {:>9.2}x {:>10.2}ms {:>10.2}ms",
                r.name,
                r.per_second,
                r.per_second / memory,
                r.p50.as_secs_f64() * 1000.0,
                r.p99.as_secs_f64() * 1000.0
            );
        }
        let Some(sqlite) = results
            .iter()
            .find(|r| r.name == "sqlite (synchronous=FULL)")
            .map(|r| r.per_second)
        else {
            return;
        };
        println!(
            "targets: sqlite >= 0.6x memory: {} ({:.2}x); sqlite >= 1000/s: {} ({sqlite:.0}/s)",
            if sqlite / memory >= 0.6 {
                "met"
            } else {
                "MISSED"
            },
            sqlite / memory,
            if sqlite >= 1000.0 { "met" } else { "MISSED" },
        );
        if let Some(pg) = results.iter().find(|r| r.name == "postgres") {
            let ratio = pg.per_second / memory;
            println!(
                "targets: postgres >= 0.4x memory: {} ({ratio:.2}x)",
                if ratio >= 0.4 { "met" } else { "MISSED" }
            );
        }
    });
}
