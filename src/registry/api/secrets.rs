//! A webhook's signing secret: read it, rotate it.

use axum::extract::State;
use axum::response::Response;

use super::dto::{ProblemDocument, RotateSecret, SecretView};
use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, Authed};
use super::responses::{Unauthorized, WebhookNotFound};
use super::webhooks::{load, no_store, ok_json};
use crate::registry::operations;
use crate::registry::WebhookRegistry;

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/secret", tag = "secrets", operation_id = "get_webhook_secret",
    summary = "Get the signing secret of the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The secret (and the previous ones during a rotation)", body = SecretView),
        Unauthorized,
        WebhookNotFound,
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
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn rotate_secret(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<RotateSecret>>,
) -> ApiResult<Response> {
    let grace = body.and_then(|b| b.grace_period_seconds);
    let webhook = operations::rotate_secret(&registry, &owner, &id, grace).await?;
    Ok(no_store(ok_json(SecretView::new(&webhook, registry.now()))))
}
