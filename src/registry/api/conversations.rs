//! A webhook's deliveries: list and read conversations, send a test event, re-send, recover.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use super::cursor::{self, bad_cursor, parse_limit, parse_query, MAX_OFFSET};
use super::dto::{
    ConversationList, ConversationView, ProblemDocument, Queued, Recover, Recovered, Trigger,
};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Authed};
use super::responses::{DeliveryNotFound, QueueFull, Unauthorized, WebhookNotFound};
use super::webhooks::{load, ok_json};
use crate::registry::event::rfc3339;
use crate::registry::operations;
use crate::registry::WebhookRegistry;

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/conversations", tag = "conversations", operation_id = "list_webhook_conversations",
    summary = "Get a list of all webhook conversations (each delivery's request and the endpoint's responses).",
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (20)"),
        ("cursor" = Option<String>, Query, description = "The opaque `next_cursor` of the previous page (keyset pagination; not with `offset`)"),
        ("offset" = Option<usize>, Query, maximum = 10000, description = "The `next_offset` of the previous page (at most 10000; prefer `cursor`)"),
        ("state" = Option<String>, Query, description = "Only `pending`, `in_flight`, `delivered`, `failed` or `refused` deliveries"),
    ),
    responses(
        (status = 200, description = "A page of conversations, newest first", body = ConversationList),
        (status = 400, description = "Invalid pagination (a bad `cursor`, `offset` or `state`, or both `cursor` and `offset`)", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn list_conversations(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = parse_query(query)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let offset = match query.offset.as_deref() {
        None => 0,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n <= MAX_OFFSET => n,
            _ => {
                return Err(ApiError::pagination(format!(
                    "`offset` is a whole number from 0 to {MAX_OFFSET}"
                )))
            }
        },
    };
    let after = match query.cursor.as_deref() {
        None => None,
        Some(_) if query.offset.is_some() => {
            return Err(ApiError::pagination(
                "pass either `cursor` or `offset`, not both",
            ))
        }
        Some(cursor) => Some(cursor::parse_conversation(cursor).ok_or_else(bad_cursor)?),
    };
    let state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(operations::parse_state(text).ok_or_else(|| {
            ApiError::pagination("`state` is one of pending, in_flight, delivered, failed, refused")
        })?),
    };
    let webhook = load(&registry, &owner, &id).await?;
    let keyset = after.is_some();
    let mut page =
        operations::conversation_page(&registry, &webhook, state, after, offset, limit + 1)
            .await
            .map_err(|err| ApiError::store(err, ""))?;
    let more = page.len() > limit;
    page.truncate(limit);
    Ok(ok_json(ConversationList {
        next_cursor: more
            .then(|| {
                page.last()
                    .map(|c| cursor::conversation(&c.delivery.id, c.delivery.created_at))
            })
            .flatten(),
        next_offset: (more && !keyset && offset + limit <= MAX_OFFSET).then_some(offset + limit),
        data: page.into_iter().map(ConversationView::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/conversations/{delivery_id}", tag = "conversations", operation_id = "get_webhook_conversation",
    summary = "Get a single conversation.",
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("delivery_id" = String, Path, description = "The delivery id"),
    ),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        Unauthorized,
        DeliveryNotFound,
    )
)]
pub(super) async fn get_conversation(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    let conversation = operations::load_conversation(&registry, &webhook, &delivery_id).await?;
    Ok(ok_json(ConversationView::from(conversation)))
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/trigger", tag = "conversations", operation_id = "trigger_webhook",
    summary = "Send a test event to the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body(content = Option<Trigger>, description = "Optional"),
    responses(
        (status = 202, description = "The test delivery was queued", body = Queued),
        (status = 400, description = "Unknown event type or invalid body", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
        WebhookNotFound,
        (status = 429, description = "The owner's deliveries fill its share of the queue", body = ProblemDocument, content_type = "application/problem+json"),
        QueueFull,
    )
)]
pub(super) async fn trigger(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<Trigger>>,
) -> ApiResult<Response> {
    let event_type = body.and_then(|t| t.event_type);
    let (event_id, queued) = operations::trigger(&registry, &owner, &id, event_type).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            delivery_id: queued.delivery_id,
            event_id: Some(event_id),
            not_before: queued.not_before.map(rfc3339::format),
        }),
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/conversations/{delivery_id}/resend", tag = "conversations", operation_id = "resend_webhook_delivery",
    summary = "Re-send one delivery: one manual attempt, same delivery id, signed with the current secret.",
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("delivery_id" = String, Path, description = "The delivery id"),
    ),
    responses(
        (status = 202, description = "Queued", body = Queued),
        Unauthorized,
        DeliveryNotFound,
        (status = 409, description = "The delivery is still pending", body = ProblemDocument, content_type = "application/problem+json"),
        QueueFull,
    )
)]
pub(super) async fn resend(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    operations::resend(&registry, &owner, &id, &delivery_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            delivery_id,
            event_id: None,
            not_before: None,
        }),
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/recover", tag = "conversations", operation_id = "recover_webhook",
    summary = "Re-send every failed delivery since a time.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = Recover,
    responses(
        (status = 202, description = "Queued", body = Recovered),
        (status = 400, description = "Invalid body or time", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
        WebhookNotFound,
        QueueFull,
    )
)]
pub(super) async fn recover(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Recover>,
) -> ApiResult<Response> {
    let queued = operations::recover(&registry, &owner, &id, &body.since).await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { queued })).into_response())
}
