//! `[forward]`: Cerebrium-style forwarding — `POST /v4/{project}/{app}/{function}` runs a demo
//! function and delivers its result, signed, to `?webhookEndpoint=` (or the legacy
//! `webhook_endpoint` body field), with `?async=true`; a durable store keeps accepted
//! deliveries across restarts; `/metrics` serves every metric of the process (inbound
//! verifications, both engines) through `metrics-exporter-prometheus`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_webhooks::delivery::{DeliveryEngine, SsrfGuard};
use tower_webhooks::forward::{RunId, WebhookForwardLayer};
use tower_webhooks::store::DeliveryStore;
use tower_webhooks::Problem;

/// The `[forward]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardConfig {
    /// CIDRs and host names the SSRF guard lets through (development: loopback).
    #[serde(default)]
    allow: Vec<String>,
    /// `memory`, `sqlite:PATH` (feature `sqlite`) or `postgres://…` (feature `postgres`);
    /// the `STORE` environment variable overrides it.
    #[serde(default = "memory")]
    pub(crate) store: String,
    /// Signs deliveries when the caller sends no `X-Webhook-Secret`.
    default_secret: Option<tower_webhooks::Secret>,
}

fn memory() -> String {
    "memory".into()
}

async fn store(spec: &str) -> Result<Option<Arc<dyn DeliveryStore>>, String> {
    if spec == "memory" {
        return Ok(None);
    }
    if let Some(path) = spec.strip_prefix("sqlite:") {
        #[cfg(feature = "sqlite")]
        {
            let mut options = tower_webhooks::store::SqliteStore::builder(path);
            if let Some(keys) = crate::encryption_keys()? {
                options = options.encryption_keys(keys);
            }
            return options
                .connect()
                .await
                .map(|s| Some(Arc::new(s) as Arc<dyn DeliveryStore>))
                .map_err(|e| format!("sqlite:{path}: {e}"));
        }
        #[cfg(not(feature = "sqlite"))]
        {
            eprintln!("gateway: store `sqlite:{path}` needs `--features sqlite`; deliveries stay in memory");
            return Ok(None);
        }
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let mut options = tower_webhooks::store::PostgresStore::builder(spec.to_owned());
            if let Some(keys) = crate::encryption_keys()? {
                options = options.encryption_keys(keys);
            }
            return options
                .connect()
                .await
                .map(|s| Some(Arc::new(s) as Arc<dyn DeliveryStore>))
                .map_err(|e| format!("postgres: {e}"));
        }
        #[cfg(not(feature = "postgres"))]
        return Err("a postgres store needs `--features postgres`".into());
    }
    Err(format!(
        "unknown store `{spec}` (memory | sqlite:PATH | postgres://…)"
    ))
}

pub(crate) async fn routes(config: &ForwardConfig) -> Result<(Router, DeliveryEngine), String> {
    let mut guard = SsrfGuard::new();
    for entry in &config.allow {
        guard = match guard.clone().allow_cidr(entry) {
            Ok(guard) => guard,
            Err(_) => guard.allow_host(entry),
        };
    }
    // Installed before the engine is built, so the engine's gauges land in it.
    prometheus();
    let spec = std::env::var("STORE").unwrap_or_else(|_| config.store.clone());
    let mut builder = DeliveryEngine::builder().name("forward").guard(guard);
    if let Some(store) = store(&spec).await? {
        builder = builder.shared_store(store);
    }
    let engine = builder.build();
    let mut layer = WebhookForwardLayer::new(engine.clone()).legacy_body_field(true);
    if let Some(secret) = &config.default_secret {
        layer = layer.default_secret(secret.clone());
    }
    let forwarded = Router::new()
        .route("/v4/{project}/{app}/{function}", post(function))
        .layer(layer);
    let router = Router::new()
        .route("/demo/receiver", post(receiver))
        .route("/v4/runs/{run_id}/conversation", get(conversation))
        .route("/metrics", get(metrics))
        .with_state(engine.clone())
        .merge(forwarded);
    Ok((router, engine))
}

pub(crate) fn banner(base: &str, config: &ForwardConfig) {
    let endpoint = format!("{base}/demo/receiver")
        .replace(':', "%3A")
        .replace('/', "%2F");
    println!(
        "\n  forwarding (store: {}, SSRF allow-list: {:?})",
        crate::without_password(&std::env::var("STORE").unwrap_or_else(|_| config.store.clone())),
        config.allow
    );
    println!("  sync run:   curl -sS -i -X POST '{base}/v4/p-demo/app/run?webhookEndpoint={endpoint}' -H 'Content-Type: application/json' -H 'X-Webhook-Secret: my-secret' --data '{{\"param\": \"hello world\"}}'");
    println!("  async run:  curl -sS -i -X POST '{base}/v4/p-demo/app/run?async=true&webhookEndpoint={endpoint}' -H 'Content-Type: application/json' --data '{{\"sleep_ms\": 2000}}'");
    println!(
        "  queue:      curl -sS {base}/metrics   |   curl -sS {base}/v4/runs/<run_id>/conversation"
    );
}

/// The demo function: echoes its input; `sleep_ms` makes it slow, `status_code` sets the status.
async fn function(
    Path((project, app, function)): Path<(String, String, String)>,
    request: Request,
) -> impl IntoResponse {
    let run_id = request.extensions().get::<RunId>().map(|id| id.0.clone());
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(ms) = input.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let status = input
        .get("status_code")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
        .unwrap_or(StatusCode::OK);
    (
        status,
        Json(
            json!({"project": project, "app": app, "function": function, "run_id": run_id, "input": input}),
        ),
    )
}

/// A receiver on the gateway itself, so the demo needs nothing else running.
async fn receiver(headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    tracing::info!(run_id = %header("x-request-id"), signature = %header("x-cerebrium-webhook-signature"), %body, "demo receiver got a delivery");
    StatusCode::OK
}

/// A conversation in the registry's JSON shape, so both halves of the gateway describe
/// attempts alike (RFC 3339 times, `latency_ms`, a structured `outcome`).
#[cfg(feature = "registry")]
fn view(conversation: tower_webhooks::delivery::Conversation) -> impl serde::Serialize {
    tower_webhooks::registry::api::ConversationView::from(conversation)
}

/// Without the registry, the engine's own record.
#[cfg(not(feature = "registry"))]
fn view(conversation: tower_webhooks::delivery::Conversation) -> impl serde::Serialize {
    conversation
}

async fn conversation(
    State(engine): State<DeliveryEngine>,
    Path(id): Path<String>,
) -> axum::response::Response {
    match engine.conversation(&id).await {
        Ok(Some(conversation)) => Json(view(conversation)).into_response(),
        Ok(None) => Problem::new(StatusCode::NOT_FOUND, "not-found", "No such run").into_response(),
        Err(err) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "The delivery store is unavailable",
        )
        .with_detail(err.to_string())
        .with_retry_after(5)
        .into_response(),
    }
}

/// Upper bounds (seconds) of the histogram buckets: a delivery attempt takes milliseconds
/// to its 15 s timeout, a delivery with retries up to days.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
    86400.0,
];

/// The process's Prometheus recorder, installed on first use: every `metrics` call of the
/// crate (inbound verifications, the forward and registry engines) lands in it.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            // Histograms with buckets, not the exporter's default summaries.
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .install_recorder()
            .expect("the gateway installs the process's only metrics recorder");
        // The inbound layers were built before the recorder existed: describe again.
        tower_webhooks::telemetry::describe_metrics();
        handle
    })
}

/// Every metric in the Prometheus text format (`docs/metrics.md` lists them).
async fn metrics() -> impl IntoResponse {
    let handle = prometheus();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
