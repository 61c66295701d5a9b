//! Cost as the work grows: each figure next to the same figure at the smallest size, in one
//! run.
//!
//! 1. **Stores** (memory, SQLite, PostgreSQL when `TOWER_WEBHOOKS_POSTGRES_URL` is set): with
//!    1 k, 100 k and 1 M deliveries already in the table (one in five pending, due tomorrow;
//!    the rest final, each with its attempt), deliveries per second through the store
//!    (`enqueue` of a batch, `claim_due`, `record_attempt` of each), `claim_due`'s p50/p99,
//!    and the mean time of `stats`, `next_due`, `list` (first page) and `list` of a tenant
//!    with few deliveries (`endpoint_id` filter).
//! 2. **Publish fan-out** (`WebhookRegistry::broadcast`) of one event to 1, 100 and 10,000
//!    subscribed endpoints: deliveries per second received, `broadcast` p50/p99; and
//!    `publish` to one tenant's one endpoint with that many endpoints registered.
//! 3. **Inbound** (`WebhookSignatureLayer`, Cerebrium, 1 KiB): ns per verified request with a
//!    tenant lookup (`SecretSource` closure over a map) of 1, 10 and 1,000 tenants, and with
//!    one tenant holding 1, 10 and 1,000 secrets (a rotation; the request signed with the
//!    last).
//!
//! ```text
//! cargo bench --all-features --bench scale
//! SCALE_BENCH_MAX_ROWS=100000 SCALE_BENCH_N=2000 SCALE_BENCH_PARTS=store \
//!     cargo bench --all-features --bench scale
//! ```
//!
//! 4. **Re-send** (memory store): `resend_matching` of one endpoint's 1,000 newest failed
//!    deliveries among 10,000, 100,000 and 1,000,000 final ones: µs per re-sent delivery (a
//!    re-send once searched the final entries from the oldest, so re-sending recent deliveries
//!    cost the whole table each); and `fail_queued` (a `410 Gone`) of one endpoint's 1,000
//!    pending deliveries among 10,000, 100,000 and 1,000,000 pending ones, in the engine's
//!    batches of 500: µs per given-up delivery.
//!
//! Knobs: `SCALE_BENCH_MAX_ROWS` (largest table, 1,000,000), `SCALE_BENCH_N` (deliveries
//! timed per store and size, 5,000), `SCALE_BENCH_PARTS` (comma-separated `store`, `fanout`,
//! `inbound`, `resend`; all by default), `SCALE_BENCH_STORES` (`memory`, `sqlite`, `postgres`).

#[path = "../examples/gateway/run_status.rs"]
mod run_status;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::FutureExt;
use http::{HeaderMap, Request, Response};
use http_body_util::{Empty, Full};
use tokio::sync::Notify;
use tower::{service_fn, Layer, Service};
use tower_webhooks::delivery::{
    Attempt, AttemptOutcome, ConversationQuery, Decision, Delivery, DeliveryState, EngineBuilder,
    Next, Policy, SsrfGuard,
};
use tower_webhooks::inbound::{VerifiedBody, WebhookSignatureLayer};
use tower_webhooks::registry::{BearerTokens, Endpoint, Owner, SigningScheme, WebhookRegistry};
use tower_webhooks::scheme::{Cerebrium, Message, RequestHead, Scheme};
use tower_webhooks::store::{AttemptRecord, DeliveryStore, FailRequest, MemoryStore, SqliteStore};
use tower_webhooks::SecretSet;

use crate::run_status::{RunState, RunStatus};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn wanted(variable: &str, name: &str) -> bool {
    match std::env::var(variable) {
        Ok(list) if !list.is_empty() => list.split(',').any(|s| s.trim() == name),
        _ => true,
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1000.0)
}

fn growth(value: f64, base: f64) -> String {
    format!("{:.2}x", value / base)
}

// ---------------------------------------------------------------------------------------------
// 1. Stores.

/// Every this-many seeded deliveries is pending (due tomorrow); the others are final.
const PENDING_EVERY: i64 = 5;
/// The seeded endpoints: `i % ENDPOINTS`.
const ENDPOINTS: i64 = 1_000;
/// Seeded deliveries (the oldest ones) of the tenant with few deliveries.
const RARE: i64 = 10;
const RARE_TENANT: &str = "tenant-rare/hook";
/// Deliveries per enqueue / claim / record round.
const ROUND: usize = 50;

struct StoreFigures {
    rows: usize,
    seeded_in: Duration,
    per_second: f64,
    claim_p50: Duration,
    claim_p99: Duration,
    stats: Duration,
    next_due: Duration,
    list: Duration,
    list_rare: Duration,
}

/// The seed rows, as one `INSERT … SELECT` over `{series}` (a column `i`, 1..=n): the
/// same rows for SQLite and PostgreSQL.
fn seed_sql(series: &str, now: i64, n: i64, day: i64) -> (String, String) {
    let deliveries = format!(
        "INSERT INTO deliveries (id, endpoint, endpoint_id, source, scheme, secrets, headers, \
         body, state, attempts, manual, next_attempt_at, due_at, lease_token, created_at, \
         updated_at) \
         SELECT 'seed-' || i, 'http://127.0.0.1:9/seed/' || (i % {ENDPOINTS}), \
         CASE WHEN i <= {RARE} THEN '{RARE_TENANT}' ELSE 'tenant-' || (i % {ENDPOINTS}) || '/hook' END, \
         'forward', NULL, NULL, '[]', {body}, \
         CASE WHEN i % {PENDING_EVERY} = 0 THEN 'pending' ELSE 'delivered' END, \
         CASE WHEN i % {PENDING_EVERY} = 0 THEN 0 ELSE 1 END, {f}, \
         {now} - {n} + i, \
         CASE WHEN i % {PENDING_EVERY} = 0 THEN {now} + {day} + i ELSE NULL END, \
         CASE WHEN i % {PENDING_EVERY} = 0 THEN 0 ELSE 1 END, \
         {now} - {n} + i, {now} - {n} + i \
         FROM {series}",
        body = if series.contains("generate_series") {
            "'\\x7b226f6b223a747275657d'::bytea"
        } else {
            "x'7b226f6b223a747275657d'"
        },
        f = if series.contains("generate_series") {
            "FALSE"
        } else {
            "0"
        },
    );
    let attempts = format!(
        "INSERT INTO attempts (delivery_id, number, manual, started_at, latency_us, \
         request_headers, body_size, body_sha256, outcome, outcome_detail, decision, retry_at, \
         response_status, response_headers, response_body, response_truncated) \
         SELECT 'seed-' || i, 1, {f}, {now} - {n} + i, 900, '[]', 11, 'seed', 'status', NULL, \
         'delivered', NULL, 200, '[]', NULL, {f} FROM {series} WHERE i % {PENDING_EVERY} <> 0",
        f = if series.contains("generate_series") {
            "FALSE"
        } else {
            "0"
        },
    );
    (deliveries, attempts)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn seed_sqlite(path: &std::path::Path, n: usize) {
    use sqlx::{Connection, Executor};
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let series = format!(
        "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
         SELECT i FROM s)"
    );
    let (deliveries, attempts) = seed_sql(&series, now_ms(), n as i64, 86_400_000);
    conn.execute("PRAGMA busy_timeout = 60000").await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    tx.execute(deliveries.as_str()).await.unwrap();
    tx.execute(attempts.as_str()).await.unwrap();
    tx.commit().await.unwrap();
    conn.execute("ANALYZE").await.unwrap();
    conn.close().await.unwrap();
}

#[cfg(feature = "postgres")]
async fn seed_postgres(pool: &sqlx::PgPool, n: usize) {
    let series = format!("generate_series(1, {n}) AS s(i)");
    let (deliveries, attempts) = seed_sql(&series, now_ms(), n as i64, 86_400_000);
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&deliveries).execute(&mut *tx).await.unwrap();
    sqlx::query(&attempts).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query("ANALYZE deliveries")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE attempts").execute(pool).await.unwrap();
}

/// The memory store through its own API: the final ones enqueued, claimed and recorded, then
/// the pending ones (due tomorrow).
async fn seed_memory(store: &MemoryStore, n: usize) {
    let now = SystemTime::now();
    let body = Bytes::from_static(br#"{"ok":true}"#);
    let delivery = |i: usize| {
        let endpoint_id = if i as i64 <= RARE {
            RARE_TENANT.to_owned()
        } else {
            format!("tenant-{}/hook", i as i64 % ENDPOINTS)
        };
        Delivery::new(
            format!("seed-{i}"),
            format!("http://127.0.0.1:9/seed/{}", i as i64 % ENDPOINTS),
            body.clone(),
        )
        .with_endpoint_id(endpoint_id)
    };
    for i in 1..=n {
        if i as i64 % PENDING_EVERY != 0 {
            store.enqueue(delivery(i)).await.unwrap();
        }
    }
    loop {
        let claims = store
            .claim_due(SystemTime::now(), 10_000, Duration::from_secs(600))
            .await
            .unwrap();
        if claims.is_empty() {
            break;
        }
        for claim in claims {
            store
                .record_attempt(AttemptRecord {
                    id: &claim.delivery.id,
                    lease: claim.lease,
                    attempt: delivered(1),
                    next: final_delivered(),
                })
                .await
                .unwrap();
        }
    }
    for i in 1..=n {
        if i as i64 % PENDING_EVERY == 0 {
            let due = now + Duration::from_secs(86_400) + Duration::from_millis(i as u64);
            store.enqueue(delivery(i).not_before(due)).await.unwrap();
        }
    }
}

fn delivered(number: u32) -> Attempt {
    let mut attempt = Attempt::new(number, SystemTime::now(), AttemptOutcome::Status(200));
    attempt.decision = Decision::Delivered;
    attempt.latency = Duration::from_micros(900);
    attempt
}

fn final_delivered() -> Next {
    Next::Final {
        state: DeliveryState::Delivered,
        reason: None,
    }
}

/// Mean time of `calls` calls of `op`.
async fn mean<F, Fut>(calls: usize, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    op().await;
    let started = Instant::now();
    for _ in 0..calls {
        op().await;
    }
    started.elapsed() / calls as u32
}

async fn measure_store(
    store: &dyn DeliveryStore,
    rows: usize,
    seeded_in: Duration,
    n: usize,
) -> StoreFigures {
    let body = Bytes::from_static(br#"{"event":"bench"}"#);
    let rounds = (n / ROUND).max(1);
    let mut claims_timed = Vec::with_capacity(rounds);
    let started = Instant::now();
    for round in 0..rounds {
        let enqueues = (0..ROUND).map(|i| {
            store.enqueue(
                Delivery::new(
                    format!("run-{round}-{i}"),
                    "http://127.0.0.1:9/hook",
                    body.clone(),
                )
                .with_endpoint_id(format!("tenant-{}/hook", i % 7)),
            )
        });
        for result in join_all(enqueues).await {
            result.unwrap();
        }
        let t = Instant::now();
        let claims = store
            .claim_due(SystemTime::now(), ROUND, Duration::from_secs(60))
            .await
            .unwrap();
        claims_timed.push(t.elapsed());
        assert_eq!(claims.len(), ROUND, "only the new deliveries are due");
        let records = claims.iter().map(|claim| {
            store.record_attempt(AttemptRecord {
                id: &claim.delivery.id,
                lease: claim.lease,
                attempt: delivered(1),
                next: final_delivered(),
            })
        });
        for result in join_all(records).await {
            result.unwrap();
        }
    }
    let elapsed = started.elapsed();
    claims_timed.sort();
    let stats = mean(20, || async {
        let stats = store.stats().await.unwrap();
        // PostgreSQL estimates the finished rows beyond 10,000 from its statistics, which
        // may lag the last second's writes.
        assert!(stats.pending + stats.finished + 1 >= rows * 9 / 10);
    })
    .await;
    let next_due = mean(200, || async {
        // The seeded pending rows are due tomorrow; the warm-up seeds none.
        assert_eq!(store.next_due().await.unwrap().is_some(), rows > 0);
    })
    .await;
    let first_page = ConversationQuery::new().limit(20);
    let list = mean(50, || async {
        assert_eq!(store.list(&first_page).await.unwrap().len(), 20);
    })
    .await;
    let rare = ConversationQuery::new().endpoint_id(RARE_TENANT).limit(20);
    let list_rare = mean(20, || async {
        assert_eq!(
            store.list(&rare).await.unwrap().len(),
            (RARE as usize).min(rows)
        );
    })
    .await;
    StoreFigures {
        rows,
        seeded_in,
        per_second: (rounds * ROUND) as f64 / elapsed.as_secs_f64(),
        claim_p50: quantile(&claims_timed, 0.5),
        claim_p99: quantile(&claims_timed, 0.99),
        stats,
        next_due,
        list,
        list_rare,
    }
}

fn print_store_table(name: &str, figures: &[StoreFigures]) {
    let Some(base) = figures.first() else {
        return;
    };
    println!();
    println!("{name}: deliveries through the store (enqueue {ROUND}, claim_due, record each), growth vs {} rows", base.rows);
    println!(
        "{:>9} {:>8} {:>12} {:>7} {:>10} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7}",
        "rows", "seeded", "deliveries/s", "growth", "claim p50", "claim p99", "growth",
        "stats", "growth", "next_due", "growth", "list", "growth", "list rare", "growth"
    );
    for f in figures {
        println!(
            "{:>9} {:>7.1}s {:>12.0} {:>7} {:>10} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7} {:>10} {:>7}",
            f.rows,
            f.seeded_in.as_secs_f64(),
            f.per_second,
            growth(base.per_second, f.per_second),
            ms(f.claim_p50),
            ms(f.claim_p99),
            growth(f.claim_p99.as_secs_f64(), base.claim_p99.as_secs_f64()),
            ms(f.stats),
            growth(f.stats.as_secs_f64(), base.stats.as_secs_f64()),
            ms(f.next_due),
            growth(f.next_due.as_secs_f64(), base.next_due.as_secs_f64()),
            ms(f.list),
            growth(f.list.as_secs_f64(), base.list.as_secs_f64()),
            ms(f.list_rare),
            growth(f.list_rare.as_secs_f64(), base.list_rare.as_secs_f64()),
        );
    }
    println!("(growth = cost at this size / cost at the smallest; deliveries/s: smallest / this)");
}

async fn stores(sizes: &[usize], n: usize) {
    let dir = tempfile::tempdir().unwrap();
    // A warm-up, so the first size measured does not pay for the allocator and the code.
    measure_store(&MemoryStore::new(), 0, Duration::ZERO, n / 5).await;
    if wanted("SCALE_BENCH_STORES", "memory") {
        let mut figures = Vec::new();
        for &rows in sizes {
            let store = MemoryStore::new()
                .max_finished(rows + n + 1)
                .max_finished_bytes(usize::MAX)
                .max_unfinished(rows + n + 1);
            let started = Instant::now();
            seed_memory(&store, rows).await;
            let seeded_in = started.elapsed();
            figures.push(measure_store(&store, rows, seeded_in, n).await);
        }
        print_store_table("memory", &figures);
    }
    if wanted("SCALE_BENCH_STORES", "sqlite") {
        let mut figures = Vec::new();
        for &rows in sizes {
            let path = dir.path().join(format!("scale-{rows}.db"));
            let store = SqliteStore::connect(&path).await.unwrap();
            let started = Instant::now();
            seed_sqlite(&path, rows).await;
            let seeded_in = started.elapsed();
            figures.push(measure_store(&store, rows, seeded_in, n).await);
        }
        print_store_table("sqlite (synchronous=FULL)", &figures);
    }
    if wanted("SCALE_BENCH_STORES", "postgres") {
        postgres_stores(sizes, n).await;
    }
}

#[cfg(feature = "postgres")]
async fn postgres_stores(sizes: &[usize], n: usize) {
    let url = match std::env::var("TOWER_WEBHOOKS_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("\npostgres: skipped: set TOWER_WEBHOOKS_POSTGRES_URL");
            return;
        }
    };
    let mut figures = Vec::new();
    for &rows in sizes {
        let schema = format!("tw_scale_{}_{rows}", std::process::id());
        let store = tower_webhooks::store::PostgresStore::builder(&url)
            .schema(&schema)
            .max_connections(16)
            .connect()
            .await
            .unwrap();
        let pool = store.pool().clone();
        let started = Instant::now();
        seed_postgres(&pool, rows).await;
        let seeded_in = started.elapsed();
        figures.push(measure_store(&store, rows, seeded_in, n).await);
        drop(store);
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
    print_store_table("postgres", &figures);
}

#[cfg(not(feature = "postgres"))]
async fn postgres_stores(_sizes: &[usize], _n: usize) {
    println!(
        "\npostgres: skipped: build with --features postgres and set TOWER_WEBHOOKS_POSTGRES_URL"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Publish fan-out.

#[derive(Clone)]
struct Counter {
    received: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

impl Counter {
    async fn wait_for(&self, target: usize) {
        let started = Instant::now();
        loop {
            let notified = self.notify.notified();
            let got = self.received.load(Ordering::SeqCst);
            if got >= target {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "only {got} of {target} deliveries arrived"
            );
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
    }
}

/// One receiver; each endpoint is its own path on it.
async fn receiver(counter: &Counter) -> String {
    let counter = counter.clone();
    let app = Router::new().route(
        "/hook/{n}",
        post(move |_body: Bytes| {
            let counter = counter.clone();
            async move {
                counter.received.fetch_add(1, Ordering::SeqCst);
                counter.notify.notify_waiters();
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn registry(base: &str, endpoints: usize) -> WebhookRegistry {
    let engine = EngineBuilder::new()
        .guard(SsrfGuard::new().allow_host("127.0.0.1"))
        .policy(Policy::standard())
        .capacity(1_000_000)
        .max_queued_per_owner(1_000_000)
        .metrics_interval(None);
    let registry = WebhookRegistry::builder()
        .engine(engine)
        .event_type(run_status::event_type())
        .auth(BearerTokens::new())
        .build();
    let now = SystemTime::now();
    for i in 0..endpoints {
        let webhook = Endpoint::new(
            Owner::new(format!("tenant-{i}")),
            format!("hook-{i}"),
            format!("{base}/{i}"),
            vec![RunStatus::TYPE.to_owned()],
            SigningScheme::Nextmv,
            now,
        );
        registry.subscriptions().insert(webhook).await.unwrap();
    }
    registry
}

struct FanOut {
    endpoints: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    one_tenant_p50: Duration,
    one_tenant_p99: Duration,
}

async fn fan_out(base: &str, endpoints: usize, deliveries: usize, counter: &Counter) -> FanOut {
    let registry = registry(base, endpoints).await;
    let status = RunStatus::new("run-1", "bench-app", RunState::Succeeded, SystemTime::now());
    let events = (deliveries / endpoints).max(3);
    let start = counter.received.load(Ordering::SeqCst);
    let mut times = Vec::with_capacity(events);
    let started = Instant::now();
    for _ in 0..events {
        let t = Instant::now();
        let report = registry.broadcast(RunStatus::TYPE, &status).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(report.deliveries.len(), endpoints);
    }
    let total = events * endpoints;
    counter.wait_for(start + total).await;
    let per_second = total as f64 / started.elapsed().as_secs_f64();
    times.sort();
    // One tenant's one endpoint, among all the others.
    let owner = Owner::new(format!("tenant-{}", endpoints / 2));
    let mut one = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let t = Instant::now();
        let report = registry
            .publish(&owner, RunStatus::TYPE, &status)
            .await
            .unwrap();
        one.push(t.elapsed());
        assert_eq!(report.deliveries.len(), 1);
    }
    counter.wait_for(start + total + 1_000).await;
    let _ = registry.engine().shutdown(Duration::from_secs(5)).await;
    one.sort();
    FanOut {
        endpoints,
        per_second,
        p50: quantile(&times, 0.5),
        p99: quantile(&times, 0.99),
        one_tenant_p50: quantile(&one, 0.5),
        one_tenant_p99: quantile(&one, 0.99),
    }
}

async fn fan_outs(deliveries: usize) {
    let counter = Counter {
        received: Arc::new(AtomicUsize::new(0)),
        notify: Arc::new(Notify::new()),
    };
    let base = receiver(&counter).await;
    // Warm-up: connections, allocator.
    fan_out(&base, 10, 2_000, &counter).await;
    let mut rows = Vec::new();
    for endpoints in [1, 100, 10_000] {
        rows.push(fan_out(&base, endpoints, deliveries, &counter).await);
    }
    let base_row = &rows[0];
    println!();
    println!(
        "publish fan-out (memory store, Nextmv-signed, one receiver, each endpoint its own \
         path; about {deliveries} deliveries per row), growth vs 1 endpoint"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>14} {:>14} {:>16} {:>16} {:>7}",
        "endpoints",
        "deliveries/s",
        "growth",
        "broadcast p50",
        "broadcast p99",
        "1 tenant p50",
        "1 tenant p99",
        "growth"
    );
    for row in &rows {
        println!(
            "{:>9} {:>12.0} {:>12} {:>14} {:>14} {:>16} {:>16} {:>7}",
            row.endpoints,
            row.per_second,
            growth(base_row.per_second, row.per_second),
            ms(row.p50),
            ms(row.p99),
            ms(row.one_tenant_p50),
            ms(row.one_tenant_p99),
            growth(
                row.one_tenant_p50.as_secs_f64(),
                base_row.one_tenant_p50.as_secs_f64()
            ),
        );
    }
    println!(
        "(deliveries/s growth: 1 endpoint's rate / this rate, per delivery; broadcast p50 is \
         for the whole fan-out, so it grows with the endpoints by nature)"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Inbound.

const TIMESTAMP: i64 = 1_731_381_205;
const ID: &str = "21eb3b98-4b10-9ad6-8681-a47172828024";

fn signed(body: &Bytes, path: &str, secret: &str) -> Request<Full<Bytes>> {
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(ID, TIMESTAMP, body),
            &SecretSet::from(secret),
            &mut headers,
        )
        .unwrap();
    let mut request = Request::post(path).body(Full::new(body.clone())).unwrap();
    for (name, value) in &headers {
        request.headers_mut().insert(
            name.clone(),
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        );
    }
    request
}

/// ns per verified request through `service`, over `requests` (built untimed, in turn).
fn per_request<S, B>(service: &mut S, requests: &[Request<Full<Bytes>>], calls: usize) -> f64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>,
{
    const BATCH: usize = 1_024;
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < calls {
        let batch: Vec<_> = (0..BATCH)
            .map(|i| requests[(done + i) % requests.len()].clone())
            .collect();
        let started = Instant::now();
        for request in batch {
            let response = service.call(request).now_or_never().unwrap().unwrap();
            assert_eq!(response.status(), 200);
        }
        elapsed += started.elapsed();
        done += BATCH;
    }
    elapsed.as_nanos() as f64 / done as f64
}

fn inner() -> impl Service<
    Request<VerifiedBody>,
    Response = Response<Empty<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|_request: Request<VerifiedBody>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    })
}

fn tenants_row(body: &Bytes, tenants: usize, calls: usize) -> f64 {
    let map: HashMap<String, SecretSet> = (0..tenants)
        .map(|t| {
            (
                format!("t{t}"),
                SecretSet::new().add_secret(format!("secret-of-t{t}")),
            )
        })
        .collect();
    let requests: Vec<_> = (0..tenants.min(256))
        .map(|t| {
            let t = t * tenants / tenants.min(256);
            signed(body, &format!("/hooks/t{t}"), &format!("secret-of-t{t}"))
        })
        .collect();
    let source = move |head: &RequestHead| {
        let tenant = head.uri.path().strip_prefix("/hooks/")?;
        map.get(tenant).cloned()
    };
    let mut service = WebhookSignatureLayer::with_secret_source(Cerebrium::new(), source)
        .clock(|| TIMESTAMP)
        .layer(inner());
    per_request(&mut service, &requests, calls / 10);
    per_request(&mut service, &requests, calls)
}

fn rotation_row(body: &Bytes, secrets: usize, calls: usize) -> f64 {
    let set = (0..secrets).fold(SecretSet::new(), |set, i| {
        set.add_secret(format!("rotated-secret-{i}"))
    });
    let last = format!("rotated-secret-{}", secrets - 1);
    let requests = vec![signed(body, "/hooks/t0", &last)];
    let mut service = WebhookSignatureLayer::new(Cerebrium::new(), set)
        .clock(|| TIMESTAMP)
        .layer(inner());
    per_request(&mut service, &requests, (calls / secrets).max(2_048) / 10);
    per_request(&mut service, &requests, (calls / secrets).max(2_048))
}

fn inbound(calls: usize) {
    let body = Bytes::from(
        (0..1024)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz012345"[i % 32])
            .collect::<Vec<u8>>(),
    );
    println!();
    println!("inbound: WebhookSignatureLayer, Cerebrium, 1 KiB body, ns per verified request");
    println!(
        "{:>9} {:>22} {:>7} {:>34} {:>9}",
        "secrets", "tenant lookup (map)", "growth", "one tenant, n secrets (last signs)", "growth"
    );
    let sizes = [1, 10, 1_000];
    let tenants: Vec<f64> = sizes
        .iter()
        .map(|&n| tenants_row(&body, n, calls))
        .collect();
    let rotation: Vec<f64> = sizes
        .iter()
        .map(|&n| rotation_row(&body, n, calls))
        .collect();
    for (i, n) in sizes.iter().enumerate() {
        println!(
            "{:>9} {:>19.0} ns {:>7} {:>31.0} ns {:>9}",
            n,
            tenants[i],
            growth(tenants[i], tenants[0]),
            rotation[i],
            growth(rotation[i], rotation[0]),
        );
    }
    println!(
        "(a rotation tries each secret in turn: n secrets cost n MACs for the last one, \
         linear by nature)"
    );
}

/// The failed deliveries [`resend_row`] re-sends.
const RESENT: usize = 1_000;

/// `resend_matching` of one endpoint's [`RESENT`] newest failed deliveries in a memory store
/// holding `rows` final ones: the time per re-sent delivery.
async fn resend_row(rows: usize) -> Duration {
    let store = MemoryStore::new()
        .max_finished(rows + 1)
        .max_finished_bytes(usize::MAX)
        .max_unfinished(rows + 1);
    let target = "http://127.0.0.1:9/resend";
    for i in 0..rows {
        let endpoint = if i >= rows - RESENT {
            target
        } else {
            "http://127.0.0.1:9/other"
        };
        store
            .enqueue(Delivery::new(format!("final-{i}"), endpoint, "{}"))
            .await
            .unwrap();
        // Final in the order enqueued: the target's deliveries are the newest.
        let claim = store
            .claim_due(SystemTime::now(), 1, Duration::from_secs(600))
            .await
            .unwrap()
            .remove(0);
        let mut attempt = Attempt::new(1, SystemTime::now(), AttemptOutcome::Status(500));
        attempt.decision = Decision::GaveUp;
        let next = Next::Final {
            state: DeliveryState::Failed,
            reason: Some("bench".into()),
        };
        store
            .record_attempt(AttemptRecord {
                id: &claim.delivery.id,
                lease: claim.lease,
                attempt,
                next,
            })
            .await
            .unwrap();
    }
    let query = ConversationQuery::new()
        .state(DeliveryState::Failed)
        .endpoint(target);
    let started = Instant::now();
    let resent = store.resend_matching(&query, None).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resent, RESENT);
    elapsed / RESENT as u32
}

/// `fail_queued` of one endpoint's [`RESENT`] pending deliveries, in batches of 500 as the
/// engine gives up an endpoint that answered `410 Gone`, among `rows` pending ones: the time
/// per given-up delivery.
async fn give_up_row(rows: usize) -> Duration {
    let store = MemoryStore::new().max_unfinished(rows + 1);
    let target = "http://127.0.0.1:9/gone";
    let later = SystemTime::now() + Duration::from_secs(3_600);
    for i in 0..rows {
        let endpoint = if i % (rows / RESENT) == 0 {
            target
        } else {
            "http://127.0.0.1:9/other"
        };
        let delivery = Delivery::new(format!("pending-{i}"), endpoint, "{}").not_before(later);
        store.enqueue(delivery).await.unwrap();
    }
    let started = Instant::now();
    let mut given_up = 0;
    loop {
        let ids = store
            .fail_queued(FailRequest::gone(target, "410 Gone", 500))
            .await
            .unwrap();
        given_up += ids.len();
        if ids.len() < 500 {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(given_up, RESENT);
    elapsed / RESENT as u32
}

async fn resends(max_rows: usize) {
    let sizes: Vec<usize> = [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&rows| rows <= max_rows)
        .collect();
    println!();
    println!("memory: resend_matching of one endpoint's {RESENT} newest failed deliveries, growth vs the smallest");
    println!("{:>9} {:>16} {:>8}", "final", "µs per re-send", "growth");
    let mut base = None;
    for rows in sizes {
        let per = resend_row(rows).await.as_secs_f64();
        let base = *base.get_or_insert(per);
        println!("{rows:>9} {:>16.3} {:>8}", per * 1e6, growth(per, base));
    }
    println!();
    println!("memory: fail_queued (410 Gone) of one endpoint's {RESENT} pending deliveries, growth vs the smallest");
    println!("{:>9} {:>16} {:>8}", "pending", "µs per give-up", "growth");
    let mut base = None;
    for rows in [10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&rows| rows <= max_rows)
    {
        let per = give_up_row(rows).await.as_secs_f64();
        let base = *base.get_or_insert(per);
        println!("{rows:>9} {:>16.3} {:>8}", per * 1e6, growth(per, base));
    }
}

fn main() {
    let max_rows = env_usize("SCALE_BENCH_MAX_ROWS", 1_000_000);
    let n = env_usize("SCALE_BENCH_N", 5_000);
    let sizes: Vec<usize> = [1_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&rows| rows <= max_rows)
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if wanted("SCALE_BENCH_PARTS", "store") {
        runtime.block_on(stores(&sizes, n));
    }
    if wanted("SCALE_BENCH_PARTS", "fanout") {
        runtime.block_on(fan_outs(env_usize("SCALE_BENCH_FANOUT_DELIVERIES", 30_000)));
    }
    if wanted("SCALE_BENCH_PARTS", "inbound") {
        inbound(env_usize("SCALE_BENCH_VERIFY_CALLS", 200_000));
    }
    if wanted("SCALE_BENCH_PARTS", "resend") {
        runtime.block_on(resends(max_rows));
    }
}
