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
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use serde::Deserialize;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tower_webhooks::scheme::Scheme as _;
use tower_webhooks::sensitive::sensitive_header_names;

mod forward;
mod inbound;
#[cfg(feature = "registry")]
pub(crate) mod inbox;
mod registry;
#[cfg(feature = "registry")]
pub(crate) mod run_status;

use inbound::{InboundConfig, RouteConfig};

const DEFAULT_CONFIG: &str = include_str!("../gateway.toml");

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
    registry: Option<registry::RegistryConfig>,
    forward: Option<forward::ForwardConfig>,
    #[serde(default)]
    inbound: InboundConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3000))
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
    let deadlines = config.inbound.deadlines();
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
    let mut app = inbound::routes(&config.routes, &replay, body_read_deadline);
    // Every delivery engine the gateway runs, drained on shutdown.
    let mut engines = Vec::new();
    if let Some(forward) = &config.forward {
        match forward::routes(forward).await {
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
        match registry::routes(registry, forward_store.as_deref()).await {
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
        .layer(SetSensitiveRequestHeadersLayer::new(
            sensitive_header_names(),
        ));

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
        match inbound::curl_line(&base, route) {
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
        registry::banner(&base, registry, forward_store.as_deref());
    }
    if let Some(forward) = &config.forward {
        forward::banner(&base, forward);
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
