//! A small forwarding server on a durable store: the process the crash tests kill.
//!
//! ```text
//! cargo run --example durable_forwarder --features sqlite -- --sqlite /tmp/webhooks.db
//! cargo run --example durable_forwarder --features sqlite,postgres -- \
//!     --postgres postgres://postgres@127.0.0.1:5432/test --schema demo
//! ```
//!
//! Every `POST` answers `{"ok": true, "input": <the JSON body>}`; with
//! `?webhookEndpoint=<url-encoded URL>` (and `X-Webhook-Secret`) that answer is also delivered
//! there, signed, through the durable engine. `GET /metrics` serves the crate's metrics
//! (`docs/metrics.md`) through `metrics-exporter-prometheus`.
//! Loopback endpoints are allowed (a development setting).
//!
//! Options: `--listen ADDR` (default `127.0.0.1:3000`; port 0 picks one), `--sqlite PATH` or
//! `--postgres URL [--schema NAME]`, `--retry-ms N` and `--attempts N` (a fixed schedule;
//! default 200 ms, 1000 attempts), `--lease-ms N`, `--poll-ms N`, `--hold-ms N` (how long an
//! async run's placeholder waits), `--owner NAME`. `POST /slow` takes a minute.
//! The first line printed is `listening on http://ADDR`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use tower_webhooks::delivery::{DeliveryEngine, Policy, SsrfGuard};
use tower_webhooks::forward::WebhookForwardLayer;
use tower_webhooks::store::{DeliveryStore, SqliteStore};

struct Args {
    listen: String,
    sqlite: Option<String>,
    postgres: Option<String>,
    schema: Option<String>,
    retry: Duration,
    attempts: u32,
    lease: Duration,
    poll: Duration,
    hold: Duration,
    owner: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        listen: "127.0.0.1:3000".into(),
        sqlite: None,
        postgres: None,
        schema: None,
        retry: Duration::from_millis(200),
        attempts: 1000,
        lease: Duration::from_secs(60),
        poll: Duration::from_millis(500),
        hold: Duration::from_secs(30),
        owner: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let ms = |v: String| Duration::from_millis(v.parse().expect("milliseconds"));
        match flag.as_str() {
            "--listen" => args.listen = value(),
            "--sqlite" => args.sqlite = Some(value()),
            "--postgres" => args.postgres = Some(value()),
            "--schema" => args.schema = Some(value()),
            "--retry-ms" => args.retry = ms(value()),
            "--attempts" => args.attempts = value().parse().expect("a number"),
            "--lease-ms" => args.lease = ms(value()),
            "--poll-ms" => args.poll = ms(value()),
            "--hold-ms" => args.hold = ms(value()),
            "--owner" => args.owner = Some(value()),
            other => panic!("unknown option {other}"),
        }
    }
    args
}

async fn store(args: &Args) -> Arc<dyn DeliveryStore> {
    if let Some(url) = &args.postgres {
        #[cfg(feature = "postgres")]
        {
            let mut options = tower_webhooks::store::PostgresStore::builder(url.clone());
            if let Some(schema) = &args.schema {
                options = options.schema(schema.clone());
            }
            if let Some(owner) = &args.owner {
                options = options.owner(owner.clone());
            }
            return Arc::new(options.connect().await.expect("PostgreSQL store"));
        }
        #[cfg(not(feature = "postgres"))]
        panic!("--postgres {url}: built without the `postgres` feature");
    }
    let path = args.sqlite.clone().unwrap_or_else(|| "webhooks.db".into());
    Arc::new(SqliteStore::connect(path).await.expect("SQLite store"))
}

/// Every metric of the process in the Prometheus text format.
async fn metrics(State(prometheus): State<PrometheusHandle>) -> String {
    prometheus.run_upkeep();
    prometheus.render()
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0],
        )
        .and_then(PrometheusBuilder::install_recorder)
        .expect("the only metrics recorder of the process");
    let args = args();
    let store = store(&args).await;
    let delays = vec![args.retry; args.attempts.saturating_sub(1) as usize];
    let engine = DeliveryEngine::builder()
        .shared_store(store)
        .guard(SsrfGuard::new().allow_loopback())
        .policy(Policy::cerebrium().with_delays(delays))
        .capacity(100_000)
        .attempt_timeout(Duration::from_secs(5))
        .lease(args.lease)
        .poll_interval(args.poll)
        .hold(args.hold)
        .metrics_interval(Some(Duration::from_secs(1)))
        .build();

    let app = Router::new()
        .route("/metrics", get(metrics).with_state(prometheus))
        // A run that takes a minute: killed mid-run in the crash tests.
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Json(json!({"slow": true}))
            }),
        )
        .fallback(post(|Json(input): Json<Value>| async move {
            Json(json!({"ok": true, "input": input}))
        }))
        .layer(WebhookForwardLayer::new(engine.clone()));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .expect("bind");
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}
