//! `/demo/inbox/{id}`: a receiver for the registry's webhooks on the gateway itself, so the
//! README's walkthrough ends in a verified delivery with nothing else running and no DNS.
//! Register `http://127.0.0.1:3000/demo/inbox/<webhook id>` as a webhook's endpoint: `POST`
//! verifies each delivery with that webhook's scheme and current secrets (what its receiver
//! holds after `GET …/secret`) and answers the scheme's rejection when they do not match;
//! `GET`, with the owner's API key, lists what was verified.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use tower_webhooks::inbound::WebhookVerifier;
use tower_webhooks::registry::{Authenticate, BearerTokens, Owner, WebhookKey, WebhookRegistry};
use tower_webhooks::scheme::BuiltinScheme;
use tower_webhooks::Problem;

/// The inbox's routes. `owners` are those of the configured API keys: the webhook id in the
/// path is looked up under each (a real receiver knows its own secret).
pub(crate) fn router(
    owners: Vec<Owner>,
    registry: WebhookRegistry,
    tokens: BearerTokens,
) -> Router {
    let inbox = Inbox {
        owners,
        registry,
        tokens,
        received: Arc::default(),
    };
    Router::new()
        .route("/demo/inbox/{id}", get(inbox_list).post(inbox_receive))
        .with_state(inbox)
}

/// At most this many deliveries are remembered by the demo inbox (oldest dropped).
const INBOX_CAPACITY: usize = 1000;

/// The largest delivery body the demo inbox reads (the verifier's default limit).
const INBOX_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// A receiver for the registry's webhooks on the gateway itself, so the walkthrough
/// ends in a verified delivery without a second program or DNS: register
/// `http://127.0.0.1:3000/demo/inbox/<webhook id>` as the endpoint.
#[derive(Clone)]
struct Inbox {
    /// The owners of the configured API keys: the webhook id in the path is looked up
    /// under each (a real receiver knows its own secret).
    owners: Vec<Owner>,
    registry: WebhookRegistry,
    tokens: BearerTokens,
    received: Arc<Mutex<VecDeque<Received>>>,
}

/// One verified delivery, as `GET /demo/inbox/{id}` shows it.
#[derive(Clone, serde::Serialize)]
struct Received {
    #[serde(skip)]
    owner: Owner,
    webhook_id: String,
    /// `X-Request-Id`: the delivery id, the same on every retry and re-send.
    delivery_id: Option<String>,
    scheme: &'static str,
    verified: bool,
    event: serde_json::Value,
}

/// `POST /demo/inbox/{id}`: verifies the delivery with the webhook's own scheme and
/// current secrets (what its receiver would hold after `GET …/secret`), answers the
/// scheme's rejection when it does not verify, and remembers it when it does.
async fn inbox_receive(
    State(inbox): State<Inbox>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    // Several tenants may name a webhook alike: the delivery is theirs whose secret
    // verifies it, so the body is read once and offered to each in turn.
    let mut candidates = Vec::new();
    for owner in &inbox.owners {
        if let Ok(Some(webhook)) = inbox
            .registry
            .subscriptions()
            .get(WebhookKey::new(owner, &id))
            .await
        {
            candidates.push(webhook);
        }
    }
    if candidates.is_empty() {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "webhook-not-found",
            "No such webhook",
        )
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, INBOX_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "The delivery is larger than the demo inbox accepts",
            )
            .into_response()
        }
        Err(err) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "body-error",
                "The delivery's body could not be read",
            )
            .with_detail(err.to_string())
            .into_response()
        }
    };
    let mut rejection = None;
    let mut accepted = None;
    for webhook in candidates {
        // Every registry signing scheme is a built-in inbound scheme of the same name.
        let Ok(scheme) = serde_json::from_value::<BuiltinScheme>(
            serde_json::json!({"type": webhook.scheme.as_str()}),
        ) else {
            continue;
        };
        let mut request = Request::new(axum::body::Body::from(body.clone()));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.headers_mut() = parts.headers.clone();
        let secrets = webhook.active_secrets(inbox.registry.now());
        match WebhookVerifier::new(scheme, secrets).verify(request).await {
            Ok(verified) => {
                accepted = Some((webhook, verified));
                break;
            }
            Err(err) => rejection = Some(err),
        }
    }
    let Some((webhook, verified)) = accepted else {
        return match rejection {
            Some(rejection) => {
                tracing::warn!(webhook = %id, %rejection, "demo inbox: delivery rejected");
                rejection.into_response()
            }
            None => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported-scheme",
                "The demo inbox cannot verify this webhook's scheme",
            )
            .into_response(),
        };
    };
    let delivery_id = verified
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let event = serde_json::from_slice(verified.body()).unwrap_or(serde_json::Value::Null);
    tracing::info!(webhook = %id, delivery = ?delivery_id, %event, "demo inbox: verified delivery");
    let mut received = inbox.received.lock().unwrap_or_else(|e| e.into_inner());
    if received.len() == INBOX_CAPACITY {
        received.pop_front();
    }
    received.push_back(Received {
        owner: webhook.owner,
        webhook_id: id,
        delivery_id,
        scheme: webhook.scheme.as_str(),
        verified: true,
        event,
    });
    StatusCode::OK.into_response()
}

/// `GET /demo/inbox/{id}` (the owner's API key): what the inbox verified for that
/// webhook, oldest first.
async fn inbox_list(
    State(inbox): State<Inbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(owner) = inbox.tokens.authenticate(&headers).await else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid credentials",
        )
        .into_response();
    };
    let received = inbox.received.lock().unwrap_or_else(|e| e.into_inner());
    let data: Vec<&Received> = received
        .iter()
        .filter(|r| r.owner == owner && r.webhook_id == id)
        .collect();
    Json(serde_json::json!({ "data": data })).into_response()
}
