//! `[registry]`: the subscription API and demo runs that publish `run.status`.

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
        if is_postgres(&spec) && forward_store == Some(spec.as_str()) && config.schema.is_none() {
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
                    tower_webhooks::registry::SqliteSubscriptions::connect_encrypted(path, keys)
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
        println!(
            "\n  webhook registry at {base}/v1/webhooks (OpenAPI: {base}/v1/webhooks/openapi.json)"
        );
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
