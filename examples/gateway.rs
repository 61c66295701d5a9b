//! The demo gateway: inbound routes (and their schemes) from a TOML file.
//!
//! ```text
//! cargo run --example gateway                              # examples/gateway.toml, 127.0.0.1:3000
//! cargo run --example gateway -- --config my.toml          # another configuration
//! PORT=8080 cargo run --example gateway                    # another port
//! ```
//!
//! At start-up it prints one `curl` line per route that sends a correctly signed request
//! (valid for the scheme's replay window: five minutes by default). The configuration format
//! is documented in `examples/gateway.toml`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tower_webhooks::inbound::{sensitive_headers, WebhookSignatureLayer};
use tower_webhooks::replay::MemoryReplayStore;
use tower_webhooks::scheme::{BuiltinScheme, Message, Scheme};
use tower_webhooks::{SecretSet, Verified};

const DEFAULT_CONFIG: &str = include_str!("gateway.toml");

/// The whole file: see `examples/gateway.toml` for every key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default)]
    routes: Vec<RouteConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    path: String,
    scheme: BuiltinScheme,
    #[serde(default)]
    secrets: SecretSet,
    limit: Option<usize>,
    #[serde(default = "yes")]
    dedupe: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000))
}

fn yes() -> bool {
    true
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn load_config() -> Result<(Config, String), String> {
    let mut args = std::env::args().skip(1);
    let (text, source) = match (args.next().as_deref(), args.next()) {
        (None, _) => (
            DEFAULT_CONFIG.to_owned(),
            "examples/gateway.toml (built in)".to_owned(),
        ),
        (Some("--config"), Some(path)) => (
            std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?,
            path,
        ),
        _ => return Err("usage: gateway [--config FILE]".into()),
    };
    let mut config: Config = toml::from_str(&text).map_err(|e| format!("{source}: {e}"))?;
    if let Ok(port) = std::env::var("PORT") {
        config.listen.set_port(
            port.parse()
                .map_err(|_| format!("PORT={port} is not a port"))?,
        );
    }
    Ok((config, source))
}

/// Answers a verified webhook: the scheme's own success response where it defines one
/// (Valohai), else a JSON summary of what was verified.
async fn accept(scheme: BuiltinScheme, verified: Verified, body: Bytes) -> Response {
    tracing::info!(scheme = %verified.scheme, message_id = ?verified.message_id, bytes = body.len(), "webhook accepted");
    if let Some(success) = scheme.success_response(&verified.run_id) {
        return ([(header::CONTENT_TYPE, success.content_type)], success.body).into_response();
    }
    let payload = serde_json::from_slice::<serde_json::Value>(&body).ok();
    Json(serde_json::json!({
        "accepted": true,
        "scheme": verified.scheme,
        "message_id": verified.message_id,
        "timestamp": verified.timestamp,
        "secret_index": verified.secret.map(|s| s.index),
        "run_id": verified.run_id,
        "bytes": body.len(),
        "payload": payload,
    }))
    .into_response()
}

fn inbound_routes(routes: &[RouteConfig]) -> Router {
    let mut router = Router::new();
    for route in routes {
        let mut layer = WebhookSignatureLayer::new(route.scheme.clone(), route.secrets.clone());
        if let Some(limit) = route.limit {
            layer = layer.limit(limit);
        }
        if route.dedupe {
            layer = layer.replay_store(MemoryReplayStore::new(100_000));
        }
        let scheme = route.scheme.clone();
        let handler = move |verified: Verified, body: Bytes| accept(scheme, verified, body);
        router = router.route(&route.path, post(handler).layer(layer));
    }
    router
}

/// A curl line that sends a correctly signed demo request to `route`.
fn curl_line(base: &str, route: &RouteConfig) -> Option<String> {
    let body = format!(r#"{{"event":"demo","scheme":"{}"}}"#, route.scheme.name());
    let mut headers = HeaderMap::new();
    let id = uuid::Uuid::new_v4().to_string();
    route
        .scheme
        .sign(
            &Message::new(&id, now(), body.as_bytes()),
            &route.secrets,
            &mut headers,
        )
        .ok()?;
    let mut line = format!(
        "curl -sS -i -X POST '{base}{}' -H 'Content-Type: application/json'",
        route.path
    );
    for (name, value) in &headers {
        line.push_str(&format!(" -H '{name}: {}'", value.to_str().ok()?));
    }
    line.push_str(&format!(" --data-binary '{body}'"));
    Some(line)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info,tower_webhooks=debug".into()),
        )
        .init();
    let (config, source) = match load_config() {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("gateway: {message}");
            return ExitCode::from(2);
        }
    };
    let app = inbound_routes(&config.routes)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                tower_webhooks::Problem::new(StatusCode::NOT_FOUND, "not-found", "No such route"),
            )
        })
        .layer(TraceLayer::new_for_http())
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive_headers()));

    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("gateway: cannot listen on {}: {err}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let base = format!(
        "http://{}",
        listener.local_addr().map_or(config.listen, |a| a)
    );
    println!("tower-webhooks gateway on {base} (config: {source})");
    for route in &config.routes {
        println!("\n  POST {}  [{}]", route.path, route.scheme.name());
        match curl_line(&base, route) {
            Some(line) => println!("  {line}"),
            None => println!("  (this scheme's senders cannot be simulated with curl)"),
        }
    }
    println!("\n(the signed lines stay valid for the replay window: 5 minutes by default)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        eprintln!("gateway: {err}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
