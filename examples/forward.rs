//! `WebhookForwardLayer` on a Cerebrium-like axum app.
//!
//! Run with `cargo run --example forward`, then (the allow-list lets the demo deliver to
//! itself on 127.0.0.1):
//!
//! ```text
//! # sync: the answer now, the signed delivery in the background
//! curl -s -X POST 'http://127.0.0.1:3000/v4/p-demo/app/run?webhookEndpoint=http%3A%2F%2F127.0.0.1%3A3000%2Freceiver' \
//!      -H 'Content-Type: application/json' -H 'X-Webhook-Secret: my-secret' --data '{"param": "hello world"}'
//! # async: 202 {"run_id"} now, the result later
//! curl -s -X POST 'http://127.0.0.1:3000/v4/p-demo/app/run?async=true&webhookEndpoint=http%3A%2F%2F127.0.0.1%3A3000%2Freceiver' \
//!      -H 'Content-Type: application/json' --data '{"sleep_ms": 2000}'
//! # legacy body field: 200 {"run_id", "webhook_endpoint", "message"}
//! curl -s -X POST 'http://127.0.0.1:3000/v4/p-demo/app/run' -H 'Content-Type: application/json' \
//!      --data '{"param": 1, "webhook_endpoint": "http://127.0.0.1:3000/receiver"}'
//! # the conversation of a run
//! curl -s http://127.0.0.1:3000/conversations/<run_id>
//! ```
//!
//! Settings (environment): `FORWARD_ADDR` (default `127.0.0.1:3000`), `FORWARD_ALLOW` (a comma
//! list of CIDRs or host names the SSRF guard lets through; default `127.0.0.0/8,localhost`;
//! `none` for the strict default), `FORWARD_SECRET` (a default signing secret).

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_webhooks::delivery::{DeliveryEngine, SsrfGuard};
use tower_webhooks::forward::{RunId, WebhookForwardLayer};

/// The SSRF guard from a comma list of CIDRs and host names.
fn guard(allow: &str) -> SsrfGuard {
    let mut guard = SsrfGuard::new();
    for entry in allow
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && *e != "none")
    {
        guard = match guard.clone().allow_cidr(entry) {
            Ok(guard) => guard,
            Err(_) => guard.allow_host(entry),
        };
    }
    guard
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
    let result = json!({"project": project, "app": app, "function": function, "run_id": run_id, "input": input});
    (status, Json(result))
}

/// A receiver to deliver to in the demo: prints what arrives.
async fn receiver(headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    println!(
        "delivery {} ts={} sig={}\n  {body}",
        header("x-request-id"),
        header("x-cerebrium-webhook-timestamp"),
        header("x-cerebrium-webhook-signature"),
    );
    StatusCode::OK
}

async fn conversation(
    State(engine): State<DeliveryEngine>,
    Path(id): Path<String>,
) -> impl IntoResponse {
    match engine.conversation(&id).await {
        Ok(Some(conversation)) => Json(conversation).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,tower_webhooks=debug".into()),
        )
        .init();
    let addr = std::env::var("FORWARD_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let allow = std::env::var("FORWARD_ALLOW").unwrap_or_else(|_| "127.0.0.0/8,localhost".into());

    let engine = DeliveryEngine::builder().guard(guard(&allow)).build();
    let mut layer = WebhookForwardLayer::new(engine.clone());
    if let Ok(secret) = std::env::var("FORWARD_SECRET") {
        layer = layer.default_secret(secret.as_str());
    }

    let forwarded = Router::new()
        .route("/v4/{project}/{app}/{function}", post(function))
        .layer(layer);
    let app = Router::new()
        .route("/receiver", post(receiver))
        .route("/conversations/{id}", get(conversation))
        .with_state(engine.clone())
        .merge(forwarded);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr} (SSRF allow-list: {allow})");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = engine.shutdown(Duration::from_secs(10)).await;
    println!(
        "deliveries drained: {} ({} unfinished)",
        report.drained, report.unfinished
    );
    Ok(())
}
