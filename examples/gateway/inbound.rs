//! `[inbound]` and `[[routes]]`: the verified routes, their shared replay store, and the
//! signed `curl` line the banner prints for each.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tower_webhooks::inbound::WebhookSignatureLayer;
use tower_webhooks::replay::{MemoryReplayStore, ReplayStore};
use tower_webhooks::scheme::{BuiltinScheme, Message, Scheme};
use tower_webhooks::{SecretSet, Verified};

/// `[inbound]`: where the routes remember processed deliveries, and how long a client may
/// take to send a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct InboundConfig {
    /// `memory` | `sqlite:PATH` | `postgres://…` | `redis://…` (`REPLAY_STORE` overrides).
    replay_store: String,
    /// The PostgreSQL schema of the replay table (`REPLAY_SCHEMA` overrides).
    replay_schema: Option<String>,
    /// The layer's body read deadline (answered `408`).
    pub(crate) body_read_deadline_secs: f64,
    /// hyper's deadline for a request's headers (the connection is closed).
    pub(crate) header_read_timeout_secs: f64,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            replay_store: "memory".to_owned(),
            replay_schema: None,
            body_read_deadline_secs: 30.0,
            header_read_timeout_secs: 30.0,
        }
    }
}

impl InboundConfig {
    fn replay_spec(&self) -> String {
        std::env::var("REPLAY_STORE").unwrap_or_else(|_| self.replay_store.clone())
    }

    /// The body read deadline and the header read timeout.
    pub(crate) fn deadlines(&self) -> Result<(Duration, Duration), String> {
        let body = Self::seconds(self.body_read_deadline_secs, "body_read_deadline_secs")?;
        let headers = Self::seconds(self.header_read_timeout_secs, "header_read_timeout_secs")?;
        Ok((body, headers))
    }

    fn seconds(value: f64, key: &str) -> Result<Duration, String> {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|duration| !duration.is_zero())
            .ok_or_else(|| format!("[inbound] {key} must be a positive number of seconds"))
    }

    /// The replay store named by `replay_store`, shared by every route (each route's keys
    /// are scoped by its path).
    pub(crate) async fn replay_store(&self) -> Result<Arc<dyn ReplayStore>, String> {
        let spec = self.replay_spec();
        let schema = std::env::var("REPLAY_SCHEMA")
            .ok()
            .or_else(|| self.replay_schema.clone());
        if spec == "memory" {
            return Ok(Arc::new(MemoryReplayStore::new(100_000)));
        }
        if let Some(path) = spec.strip_prefix("sqlite:") {
            #[cfg(feature = "sqlite")]
            return tower_webhooks::replay::SqliteReplayStore::connect(path)
                .await
                .map(|store| Arc::new(store) as Arc<dyn ReplayStore>)
                .map_err(|err| format!("replay store `sqlite:{path}`: {err}"));
            #[cfg(not(feature = "sqlite"))]
            return Err(format!(
                "replay store `sqlite:{path}` needs `--features sqlite`"
            ));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            return tower_webhooks::replay::PostgresReplayStore::connect(&spec, schema.as_deref())
                .await
                .map(|store| Arc::new(store) as Arc<dyn ReplayStore>)
                .map_err(|err| format!("replay store: {err}"));
            #[cfg(not(feature = "postgres"))]
            return Err("a postgres replay store needs `--features postgres`".into());
        }
        if spec.starts_with("redis://") {
            #[cfg(feature = "redis")]
            return tower_webhooks::replay::RedisReplayStore::connect(&spec)
                .await
                .map(|store| Arc::new(store) as Arc<dyn ReplayStore>)
                .map_err(|err| format!("replay store: {err}"));
            #[cfg(not(feature = "redis"))]
            return Err("a redis replay store needs `--features redis`".into());
        }
        let _ = schema;
        Err(format!(
            "unknown replay store `{spec}` (memory | sqlite:PATH | postgres://… | redis://…)"
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    pub(crate) path: String,
    pub(crate) scheme: BuiltinScheme,
    #[serde(default)]
    secrets: SecretSet,
    limit: Option<usize>,
    #[serde(default = "yes")]
    dedupe: bool,
}

fn yes() -> bool {
    true
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Answers a verified webhook: the scheme's own success response where it defines one
/// (Valohai), else a JSON summary of what was verified.
async fn accept(scheme: BuiltinScheme, verified: Verified, body: Bytes) -> Response {
    tracing::info!(scheme = %verified.scheme, message_id = ?verified.message_id, bytes = body.len(), "webhook accepted");
    if let Some(success) = scheme.success_response(&verified.run_id.to_string()) {
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

/// One `POST` route per `[[routes]]` entry, each behind its own signature layer.
pub(crate) fn routes(
    routes: &[RouteConfig],
    replay: &Arc<dyn ReplayStore>,
    body_read_deadline: Duration,
) -> Router {
    let mut router = Router::new();
    for route in routes {
        let mut layer = WebhookSignatureLayer::new(route.scheme.clone(), route.secrets.clone())
            .body_read_deadline(Some(body_read_deadline));
        if let Some(limit) = route.limit {
            layer = layer.limit(limit);
        }
        if route.dedupe {
            // Routes share the store; the path keeps their keys apart.
            layer = layer
                .replay_store(Arc::clone(replay))
                .replay_scope(route.path.as_str());
        }
        let scheme = route.scheme.clone();
        let handler = move |verified: Verified, body: Bytes| accept(scheme, verified, body);
        router = router.route(&route.path, post(handler).layer(layer));
    }
    router
}

/// A curl line that sends a correctly signed demo request to `route`.
pub(crate) fn curl_line(base: &str, route: &RouteConfig) -> Option<String> {
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
