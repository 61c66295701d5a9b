//! A webhook's signing secret: read it, rotate it.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;

use super::dto::{ProblemDocument, RotateSecret, SecretView};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Authed};
use super::webhooks::{load, modify, no_store, ok_json};
use crate::registry::WebhookRegistry;

const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/secret", tag = "secrets", operation_id = "get_webhook_secret",
    summary = "Get the signing secret of the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The secret (and the previous ones during a rotation)", body = SecretView),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_secret(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    Ok(no_store(ok_json(SecretView::new(&webhook, registry.now()))))
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/secret/rotate", tag = "secrets", operation_id = "rotate_webhook_secret",
    summary = "Rotate the signing secret; the previous one keeps signing for a grace period.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body(content = Option<RotateSecret>, description = "Optional"),
    responses(
        (status = 200, description = "The new secret", body = SecretView),
        (status = 400, description = "Invalid body", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn rotate_secret(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<RotateSecret>>,
) -> ApiResult<Response> {
    let grace = match body.and_then(|b| b.grace_period_seconds) {
        None => registry.rotation_grace(),
        Some(seconds) if Duration::from_secs(seconds) <= MAX_GRACE => Duration::from_secs(seconds),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid-grace-period",
                "Invalid grace period",
                "`grace_period_seconds` is at most 30 days",
            ))
        }
    };
    let now = registry.now();
    let webhook = modify(
        &registry,
        &owner,
        &id,
        Box::new(move |webhook| webhook.rotate_secret(now, grace)),
    )
    .await?;
    Ok(no_store(ok_json(SecretView::new(&webhook, now))))
}
