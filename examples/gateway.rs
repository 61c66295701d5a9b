//! The demo gateway: inbound routes (and their schemes) from a TOML file.
//!
//! ```text
//! cargo run --example gateway --features registry,sqlite                      # examples/gateway.toml, 127.0.0.1:3000
//! cargo run --example gateway --features registry,sqlite -- --config my.toml  # another configuration
//! PORT=8080 cargo run --example gateway --features registry,sqlite            # another port
//! ```
//!
//! At start-up it prints one `curl` line per route that sends a correctly signed request
//! (valid for the scheme's replay window: five minutes by default). The configuration format
//! is documented in `examples/gateway.toml`.
//!
//! With a `[registry]` table (and the `registry` feature) it also serves the
//! webhook subscription API at `/v1/webhooks` and `POST /v1/runs`, which starts a demo run
//! that publishes `run.status` (queued, running, then succeeded or failed) to the caller's
//! webhooks, and `/demo/inbox/{id}`, a receiver on the gateway itself that verifies the
//! deliveries of webhook `id` and lists them (`GET`, with the owner's API key), so the
//! README's walkthrough ends in a verified delivery with nothing else running. The registry
//! has its own delivery engine; with a SQLite `[forward]` store its
//! webhooks and deliveries live in a SQLite file beside it (`[registry] store`), so published
//! events survive a restart. With `[registry] store = "postgres://…"` (and a `schema`; feature
//! `postgres`) several gateways on one database are replicas of one registry.
//!
//! Ctrl-C and SIGTERM (what containers are stopped with) both stop it gracefully: it stops
//! accepting, lets in-flight deliveries finish (up to 10 s) and exits 0.
//!
//! With a SQLite or PostgreSQL store, `TOWER_WEBHOOKS_ENCRYPTION_KEYS="k2:<base64 of 32
//! bytes>,k1:<…>"` (newest first; `openssl rand -base64 32`) encrypts the stored signing
//! secrets and custom headers; without it the stores log a warning. The banner never prints
//! an API key, a store password, or a secret that came from `{env:…}`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tower_webhooks::inbound::{sensitive_headers, WebhookSignatureLayer};
use tower_webhooks::replay::{MemoryReplayStore, ReplayStore};
use tower_webhooks::scheme::{BuiltinScheme, Message, Scheme};
use tower_webhooks::{SecretSet, Verified};

const DEFAULT_CONFIG: &str = include_str!("gateway.toml");

/// The whole file: see `examples/gateway.toml` for every key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The values of the `{env:NAME}` references in the file, kept out of the banner.
    #[serde(skip)]
    env_secrets: Vec<(String, String)>,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    registry: Option<registry_demo::RegistryConfig>,
    forward: Option<forward_demo::ForwardConfig>,
    #[serde(default)]
    inbound: InboundConfig,
}

/// `[inbound]`: where the routes remember processed deliveries, and how long a client may
/// take to send a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct InboundConfig {
    /// `memory` | `sqlite:PATH` | `postgres://…` | `redis://…` (`REPLAY_STORE` overrides).
    replay_store: String,
    /// The PostgreSQL schema of the replay table (`REPLAY_SCHEMA` overrides).
    replay_schema: Option<String>,
    /// The layer's body read deadline (answered `408`).
    body_read_deadline_secs: f64,
    /// hyper's deadline for a request's headers (the connection is closed).
    header_read_timeout_secs: f64,
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

    fn seconds(value: f64, key: &str) -> Result<Duration, String> {
        Duration::try_from_secs_f64(value)
            .ok()
            .filter(|duration| !duration.is_zero())
            .ok_or_else(|| format!("[inbound] {key} must be a positive number of seconds"))
    }

    /// The replay store named by `replay_store`, shared by every route (each route's keys
    /// are scoped by its path).
    async fn replay_store(&self) -> Result<Arc<dyn ReplayStore>, String> {
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

fn load_config(args: Vec<String>) -> Result<(Config, String), String> {
    let mut args = args.into_iter();
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
    config.env_secrets = env_references(&text);
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

fn inbound_routes(
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

/// Every `{env:NAME}` in the configuration text with the variable's value (when set).
fn env_references(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{env:") {
        rest = &rest[start + 5..];
        let Some(end) = rest.find('}') else { break };
        let name = &rest[..end];
        if let Ok(value) = std::env::var(name) {
            if !value.is_empty() {
                found.push((name.to_owned(), value));
            }
        }
        rest = &rest[end..];
    }
    // Longest first, so a value that contains another is replaced whole.
    found.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
    found
}

/// `line` with every value that came from `{env:NAME}` replaced by a shell reference to the
/// variable (`'"$NAME"'` closes and reopens the single-quoted argument around it), so the
/// line still works where the variable is set and never shows the secret.
fn hide_env_secrets(line: &str, env_secrets: &[(String, String)]) -> String {
    env_secrets
        .iter()
        .fold(line.to_owned(), |line, (name, value)| {
            line.replace(value.as_str(), &format!("'\"${name}\"'"))
        })
}

/// A store spec for the banner: a URL's password replaced by `***`.
pub(crate) fn without_password(spec: &str) -> String {
    let Some((scheme, rest)) = spec.split_once("://") else {
        return spec.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                spec.to_owned()
            }
        }
        None => spec.to_owned(),
    }
}

/// `TOWER_WEBHOOKS_ENCRYPTION_KEYS` (`id:base64key,…`, newest first): the key ring the
/// SQLite and PostgreSQL stores encrypt their secrets with, `None` when unset.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn encryption_keys() -> Result<Option<tower_webhooks::store::EncryptionKeys>, String> {
    use tower_webhooks::store::{EncryptionKeys, ENCRYPTION_KEYS_ENV};
    EncryptionKeys::from_env(ENCRYPTION_KEYS_ENV).map_err(|e| format!("{ENCRYPTION_KEYS_ENV}: {e}"))
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

// `tower-webhooks serve` includes this file as a module and calls `run` instead.
#[allow(dead_code)]
fn main() -> ExitCode {
    run(std::env::args().skip(1).collect())
}

/// The gateway with the command line `args` (`[--config FILE]`), until Ctrl-C or SIGTERM.
#[tokio::main]
pub(crate) async fn run(args: Vec<String>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info,tower_webhooks=debug".into()),
        )
        .init();
    let (config, source) = match load_config(args) {
        Ok(loaded) => loaded,
        Err(message) => {
            eprintln!("gateway: {message}");
            return ExitCode::from(2);
        }
    };
    let deadlines = InboundConfig::seconds(
        config.inbound.body_read_deadline_secs,
        "body_read_deadline_secs",
    )
    .and_then(|body| {
        InboundConfig::seconds(
            config.inbound.header_read_timeout_secs,
            "header_read_timeout_secs",
        )
        .map(|headers| (body, headers))
    });
    let (body_read_deadline, header_read_timeout) = match deadlines {
        Ok(deadlines) => deadlines,
        Err(message) => {
            eprintln!("gateway: {message}");
            return ExitCode::from(2);
        }
    };
    let replay = match config.inbound.replay_store().await {
        Ok(replay) => replay,
        Err(message) => {
            eprintln!("gateway: [inbound]: {message}");
            return ExitCode::from(2);
        }
    };
    #[allow(unused_mut)]
    let mut app = inbound_routes(&config.routes, &replay, body_read_deadline);
    // Every delivery engine the gateway runs, drained on shutdown.
    let mut engines = Vec::new();
    if let Some(forward) = &config.forward {
        match forward_demo::routes(forward).await {
            Ok((routes, forward_engine)) => {
                app = app.merge(routes);
                engines.push(("forward", forward_engine));
            }
            Err(message) => {
                eprintln!("gateway: [forward]: {message}");
                return ExitCode::from(2);
            }
        }
    }
    #[cfg(feature = "registry")]
    if let Some(registry) = &config.registry {
        // The registry's webhooks and deliveries get their own SQLite file next to the
        // forwarded deliveries' one, when that is a SQLite file (see `[registry] store`).
        let forward_store = config
            .forward
            .as_ref()
            .map(|forward| std::env::var("STORE").unwrap_or_else(|_| forward.store.clone()));
        match registry_demo::routes(registry, forward_store.as_deref()).await {
            Ok((routes, registry_engine)) => {
                app = app.merge(routes);
                engines.push(("registry", registry_engine));
            }
            Err(message) => {
                eprintln!("gateway: [registry]: {message}");
                return ExitCode::from(2);
            }
        }
    }
    let app = app
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
            Some(line) => println!("  {}", hide_env_secrets(&line, &config.env_secrets)),
            None => println!("  (this scheme's senders cannot be simulated with curl)"),
        }
    }
    #[cfg(feature = "registry")]
    if let Some(registry) = &config.registry {
        let forward_store = config
            .forward
            .as_ref()
            .map(|forward| std::env::var("STORE").unwrap_or_else(|_| forward.store.clone()));
        registry_demo::banner(&base, registry, forward_store.as_deref());
    }
    if let Some(forward) = &config.forward {
        forward_demo::banner(&base, forward);
    }
    println!("\n(the signed lines stay valid for the replay window: 5 minutes by default)");
    let shutdown = shutdown_signal();
    if let Err(err) = serve(listener, app, header_read_timeout, shutdown).await {
        eprintln!("gateway: {err}");
        return ExitCode::FAILURE;
    }
    // Both engines drain at once (up to 10 s). Claimed-but-unsent deliveries go back to the
    // store; durable stores resume them at the next start.
    let draining: Vec<_> = engines
        .into_iter()
        .map(|(name, engine)| {
            tokio::spawn(async move {
                (
                    name,
                    engine.shutdown(std::time::Duration::from_secs(10)).await,
                )
            })
        })
        .collect();
    for task in draining {
        let Ok((name, report)) = task.await else {
            continue;
        };
        if report.drained {
            println!("{name} deliveries: every one final");
        } else {
            println!(
                "{name} deliveries: {} not final yet (a durable store resumes them at the next start)",
                report.unfinished
            );
        }
    }
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C, or on SIGTERM (what `docker stop`, Kubernetes and systemd send), so a
/// container drains its deliveries like a terminal does.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the gateway");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down: draining deliveries");
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves `app` until `shutdown`, then waits up to 10 s for open connections.
///
/// `axum::serve` cannot bound the time a client takes to send its headers (a connection
/// that never finishes them would be held forever): hyper's `header_read_timeout` can, with
/// a timer. The body is bounded by the layer's read deadline.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A failed accept (too many open files, a reset) is not fatal.
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

/// `[forward]`: Cerebrium-style forwarding — `POST /v4/{project}/{app}/{function}` runs a demo
/// function and delivers its result, signed, to `?webhookEndpoint=` (or the legacy
/// `webhook_endpoint` body field), with `?async=true`; a durable store keeps accepted
/// deliveries across restarts; `/metrics` serves every metric of the process (inbound
/// verifications, both engines) through `metrics-exporter-prometheus`.
mod forward_demo {
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
            crate::without_password(
                &std::env::var("STORE").unwrap_or_else(|_| config.store.clone())
            ),
            config.allow
        );
        println!("  sync run:   curl -sS -i -X POST '{base}/v4/p-demo/app/run?webhookEndpoint={endpoint}' -H 'Content-Type: application/json' -H 'X-Webhook-Secret: my-secret' --data '{{\"param\": \"hello world\"}}'");
        println!("  async run:  curl -sS -i -X POST '{base}/v4/p-demo/app/run?async=true&webhookEndpoint={endpoint}' -H 'Content-Type: application/json' --data '{{\"sleep_ms\": 2000}}'");
        println!("  queue:      curl -sS {base}/metrics   |   curl -sS {base}/v4/runs/<run_id>/conversation");
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
            Ok(None) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "No such run").into_response()
            }
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
}

#[cfg(feature = "registry")]
#[path = "gateway/inbox.rs"]
pub(crate) mod inbox;
#[cfg(feature = "registry")]
#[path = "gateway/run_status.rs"]
pub(crate) mod run_status;

/// `[registry]`: the subscription API and demo runs that publish `run.status`.
mod registry_demo {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    /// The `[registry]` table.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[cfg_attr(not(feature = "registry"), allow(dead_code))]
    pub(crate) struct RegistryConfig {
        /// API key (`Authorization: Bearer <key>`) to owner (tenant).
        #[serde(default)]
        pub(crate) api_keys: BTreeMap<String, String>,
        /// Lets webhooks point at loopback addresses (development only).
        #[serde(default)]
        pub(crate) allow_loopback: bool,
        /// Seconds a demo run stays queued, then running.
        #[serde(default = "default_step")]
        pub(crate) run_step_secs: f64,
        /// Where the registry keeps its webhooks **and its delivery queue** (conversations):
        /// `memory`, `sqlite:PATH` (never the `[forward]` store's file) or `postgres://…`
        /// (feature `postgres`: gateways on one database and schema are replicas of one
        /// registry). By default `sqlite:<forward file>-registry.db` when the `[forward]`
        /// store is a SQLite file, memory otherwise.
        #[serde(default)]
        pub(crate) store: Option<String>,
        /// The PostgreSQL schema of a `postgres://…` store (created if missing; the
        /// connection's default schema otherwise).
        #[serde(default)]
        pub(crate) schema: Option<String>,
    }

    fn default_step() -> f64 {
        1.0
    }

    #[cfg(feature = "registry")]
    pub(crate) use enabled::{banner, routes};

    #[cfg(feature = "registry")]
    mod enabled {
        use std::sync::Arc;
        use std::time::Duration;

        use super::*;
        use crate::run_status::{RunState, RunStatus};
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};
        use axum::routing::post;
        use axum::{Json, Router};
        use tower_webhooks::delivery::{DeliveryEngine, EngineBuilder, Policy, SsrfGuard};
        use tower_webhooks::registry::{
            Authenticate, BearerTokens, EventType, MemorySubscriptions, Owner, PublishError,
            SubscriptionStore, WebhookRegistry,
        };
        use tower_webhooks::{Problem, Secret};

        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RunRequest {
            #[serde(default)]
            application_id: Option<String>,
            /// End the run as `failed`.
            #[serde(default)]
            fail: bool,
        }

        /// The registry's file next to the `[forward]` SQLite file `path`:
        /// `gateway-deliveries.db` → `gateway-deliveries-registry.db`.
        pub(crate) fn beside(path: &str) -> String {
            let file = std::path::Path::new(path);
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("gateway");
            let name = match file.extension().and_then(|e| e.to_str()) {
                Some(ext) => format!("{stem}-registry.{ext}"),
                None => format!("{stem}-registry"),
            };
            file.with_file_name(name).to_string_lossy().into_owned()
        }

        /// Where the registry keeps its webhooks and deliveries: `[registry] store`, else
        /// beside the `[forward]` SQLite file, else memory.
        pub(crate) fn store_spec(
            config: &RegistryConfig,
            forward_store: Option<&str>,
        ) -> Result<String, String> {
            let forward_file = forward_store.and_then(|spec| spec.strip_prefix("sqlite:"));
            let spec = match (&config.store, forward_file) {
                (Some(spec), _) => spec.clone(),
                // Without the `sqlite` feature the forward store falls back to memory: so
                // does the registry.
                (None, Some(path)) if cfg!(feature = "sqlite") => {
                    format!("sqlite:{}", beside(path))
                }
                _ => "memory".to_owned(),
            };
            if is_postgres(&spec) && forward_store == Some(spec.as_str()) && config.schema.is_none()
            {
                return Err(format!(
                    "store `{spec}` is the [forward] store's database and schema: the registry's \
                     delivery engine and the forward one would claim each other's deliveries; \
                     give the registry its own `schema`"
                ));
            }
            if let (Some(path), Some(forward)) = (spec.strip_prefix("sqlite:"), forward_file) {
                let same = path == forward
                    || std::fs::canonicalize(path)
                        .ok()
                        .is_some_and(|p| std::fs::canonicalize(forward).ok() == Some(p));
                if same {
                    return Err(format!(
                        "store `{spec}` is the [forward] store's file: the registry's delivery \
                         engine and the forward one would claim each other's deliveries; \
                         choose another file (or leave `store` out: `sqlite:{}`)",
                        beside(forward)
                    ));
                }
            }
            Ok(spec)
        }

        fn is_postgres(spec: &str) -> bool {
            spec.starts_with("postgres://") || spec.starts_with("postgresql://")
        }

        /// The subscription store and the delivery engine's builder named by `spec`
        /// (`memory`, `sqlite:PATH` or `postgres://…`: one database holds both the webhooks and
        /// the registry's delivery queue and conversations, so gateways sharing a PostgreSQL
        /// database and `schema` share webhooks, queue, health counts and rate limits).
        async fn stores(
            spec: &str,
            schema: Option<&str>,
        ) -> Result<(Arc<dyn SubscriptionStore>, EngineBuilder), String> {
            if spec == "memory" {
                return Ok((Arc::new(MemorySubscriptions::new()), EngineBuilder::new()));
            }
            if let Some(path) = spec.strip_prefix("sqlite:") {
                #[cfg(feature = "sqlite")]
                {
                    let keys = crate::encryption_keys()?;
                    let mut options = tower_webhooks::store::SqliteStore::builder(path);
                    if let Some(keys) = keys.clone() {
                        options = options.encryption_keys(keys);
                    }
                    let deliveries = options
                        .connect()
                        .await
                        .map_err(|e| format!("sqlite:{path}: {e}"))?;
                    let subscriptions =
                        tower_webhooks::registry::SqliteSubscriptions::connect_encrypted(
                            path, keys,
                        )
                        .await
                        .map_err(|e| format!("sqlite:{path}: {e}"))?;
                    return Ok((
                        Arc::new(subscriptions),
                        EngineBuilder::new().store(deliveries),
                    ));
                }
                #[cfg(not(feature = "sqlite"))]
                return Err(format!("store `sqlite:{path}` needs `--features sqlite`"));
            }
            if is_postgres(spec) {
                #[cfg(feature = "postgres")]
                {
                    let mut builder = tower_webhooks::store::PostgresStore::builder(spec);
                    if let Some(schema) = schema {
                        builder = builder.schema(schema);
                    }
                    // The URL may hold a password: only the error is printed.
                    let deliveries = builder
                        .connect()
                        .await
                        .map_err(|e| format!("postgres: {e}"))?;
                    let subscriptions =
                        tower_webhooks::registry::PostgresSubscriptions::new(&deliveries);
                    return Ok((
                        Arc::new(subscriptions),
                        EngineBuilder::new().store(deliveries),
                    ));
                }
                #[cfg(not(feature = "postgres"))]
                {
                    let _ = schema;
                    return Err("a postgres registry store needs `--features postgres`".into());
                }
            }
            Err(format!(
                "unknown registry store `{spec}` (memory | sqlite:PATH | postgres://…)"
            ))
        }

        /// The registry router plus `POST /v1/runs`, and the registry's delivery engine (to
        /// drain on shutdown). `forward_store` is the `[forward]` delivery store's spec.
        pub(crate) async fn routes(
            config: &RegistryConfig,
            forward_store: Option<&str>,
        ) -> Result<(Router, DeliveryEngine), String> {
            let spec = store_spec(config, forward_store)?;
            tracing::info!(store = %crate::without_password(&spec), "webhook registry: webhooks and deliveries");
            let (subscriptions, engine) = stores(&spec, config.schema.as_deref()).await?;
            let mut guard = SsrfGuard::new();
            if config.allow_loopback {
                guard = guard.allow_loopback();
            }
            let mut tokens = BearerTokens::new();
            for (key, owner) in &config.api_keys {
                // `{env:VAR}` keys read the environment, like the routes' secrets.
                let Ok(key) = Secret::resolve(key) else {
                    eprintln!("gateway: registry api key `{key}` cannot be resolved; skipped");
                    continue;
                };
                let key = String::from_utf8_lossy(key.expose()).into_owned();
                tokens = tokens.token(key, owner.as_str());
            }
            let registry = WebhookRegistry::builder()
                .shared_subscriptions(subscriptions)
                // Its own engine (not the `[forward]` one): the registry installs its
                // `on_finished` hook for the health rule, and its deliveries keep the
                // registry's SSRF guard and retry policy.
                .engine(engine.name("registry").guard(guard).policy(Policy::standard()))
                .event_type(crate::run_status::event_type())
                .event_type(EventType::endpoint_disabled())
                .auth(tokens.clone())
                .on_disabled(|notice| {
                    tracing::warn!(owner = %notice.owner, webhook = %notice.webhook_id, reason = %notice.reason, "webhook disabled");
                })
                .build();
            let step = Duration::from_secs_f64(config.run_step_secs.clamp(0.0, 60.0));
            let runs = Router::new().route(
                "/v1/runs",
                post({
                    let registry = registry.clone();
                    let tokens = tokens.clone();
                    move |headers: HeaderMap, body: Bytes| {
                        start_run(registry.clone(), tokens.clone(), step, headers, body)
                    }
                }),
            );
            let owners = config
                .api_keys
                .values()
                .map(|owner| Owner::from(owner.as_str()));
            let inbox = crate::inbox::router(owners.collect(), registry.clone(), tokens.clone());
            let engine = registry.engine().clone();
            let router = registry.router().merge(runs).merge(inbox);
            // The delivery portal: the same owners, logged in with their API keys.
            #[cfg(feature = "portal")]
            let router = router.nest("/portal", registry.portal());
            Ok((router, engine))
        }

        /// `POST /v1/runs`: a demo run of the caller's, publishing `run.status` to the
        /// caller's webhooks as it goes queued → running → succeeded (or failed).
        async fn start_run(
            registry: WebhookRegistry,
            tokens: BearerTokens,
            step: Duration,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            // The same constant-time check as the registry's routes.
            let Some(owner) = tokens.authenticate(&headers).await else {
                return Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Missing or invalid credentials",
                )
                .into_response();
            };
            let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
                RunRequest::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(request) => request,
                    Err(err) => {
                        return Problem::new(
                            StatusCode::BAD_REQUEST,
                            "invalid-json",
                            "Invalid run request",
                        )
                        .with_detail(err.to_string())
                        .into_response()
                    }
                }
            };
            let run_id = format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let application_id = request
                .application_id
                .unwrap_or_else(|| "demo-app".to_owned());
            let created = std::time::SystemTime::now();
            let states = [
                RunState::Queued,
                RunState::Running,
                if request.fail {
                    RunState::Failed
                } else {
                    RunState::Succeeded
                },
            ];
            // The first status is published before the answer: a caller whose event cannot
            // be queued (a full memory queue, its share of the engine taken) gets the problem
            // with `Retry-After` instead of a run whose webhooks never hear of it.
            let queued = RunStatus::new(&run_id, &application_id, states[0], created);
            if let Err(err) = registry.publish(&owner, RunStatus::TYPE, &queued).await {
                tracing::warn!(run = %run_id, error = %err, "run refused: run.status not queued");
                return publish_problem(err).into_response();
            }
            tokio::spawn({
                let run_id = run_id.clone();
                async move {
                    for state in states.into_iter().skip(1) {
                        tokio::time::sleep(step).await;
                        let status = RunStatus::new(&run_id, &application_id, state, created)
                            .updated_at(std::time::SystemTime::now());
                        match registry.publish(&owner, RunStatus::TYPE, &status).await {
                            Ok(report) => {
                                tracing::info!(run = %run_id, status = state.as_str(), deliveries = report.deliveries.len(), "run.status published")
                            }
                            Err(err) => {
                                tracing::warn!(run = %run_id, error = %err, "run.status not published")
                            }
                        }
                    }
                }
            });
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({"run_id": run_id})),
            )
                .into_response()
        }

        /// The answer to a publish that did not reach every webhook.
        fn publish_problem(err: PublishError) -> Problem {
            match err {
                PublishError::NotQueued(report) => match report.rejected.into_iter().next() {
                    Some(rejected) => Problem::from(rejected.error),
                    None => Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "webhook-unavailable",
                        "Webhook delivery unavailable",
                    ),
                },
                err => Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "webhook-unavailable",
                    "Webhook delivery unavailable",
                )
                .with_detail(err.to_string())
                .with_retry_after(5),
            }
        }

        /// The registry's lines of the start-up banner. API keys are never printed: the
        /// lines name the `[registry.api_keys]` table instead.
        pub(crate) fn banner(base: &str, config: &RegistryConfig, forward_store: Option<&str>) {
            let key = "<an API key from [registry.api_keys]>";
            let mut store =
                crate::without_password(&store_spec(config, forward_store).unwrap_or_default());
            if let (Some(schema), true) = (&config.schema, is_postgres(&store)) {
                store = format!("{store} (schema {schema})");
            }
            println!("\n  webhook registry at {base}/v1/webhooks (OpenAPI: {base}/v1/webhooks/openapi.json)");
            println!("  webhooks and their deliveries: {store}");
            println!(
                "  register:   curl -sS -X POST '{base}/v1/webhooks' -H 'Authorization: Bearer {key}' \
                 -H 'Content-Type: application/json' -d '{{\"id\":\"my-webhook\",\
                 \"endpoint_url\":\"{base}/demo/inbox/my-webhook\",\"event_types\":[\"run.status\"]}}'"
            );
            println!("  its secret: curl -sS '{base}/v1/webhooks/my-webhook/secret' -H 'Authorization: Bearer {key}'");
            println!("  a demo run: curl -sS -X POST '{base}/v1/runs' -H 'Authorization: Bearer {key}'   (queued, running, succeeded)");
            println!("  received:   curl -sS '{base}/demo/inbox/my-webhook' -H 'Authorization: Bearer {key}'   (what the gateway's own receiver verified)");
            #[cfg(feature = "portal")]
            println!("  portal:     {base}/portal   (log in with an API key: webhooks, deliveries, attempts, re-send)");
        }
    }
}
