//! A webhook's deliveries: list and read conversations, send a test event, re-send, recover.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use super::cursor::{self, bad_cursor, parse_limit, parse_query, MAX_OFFSET};
use super::dto::{
    ConversationList, ConversationView, ProblemDocument, Queued, Recover, Recovered, Trigger,
};
use super::error::{printable, ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Authed};
use super::webhooks::{load, ok_json};
use crate::delivery::{Conversation, ConversationPosition, ConversationQuery, DeliveryState};
use crate::registry::event::rfc3339;
use crate::registry::model::Endpoint;
use crate::registry::WebhookRegistry;
use crate::store::StoreError;

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
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
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
        Some(text) => Some(parse_state(text).ok_or_else(|| {
            ApiError::pagination("`state` is one of pending, in_flight, delivered, failed, refused")
        })?),
    };
    let webhook = load(&registry, &owner, &id).await?;
    let keyset = after.is_some();
    let mut page = conversation_page(&registry, &webhook, state, after, offset, limit + 1)
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

/// One page of a webhook's conversations, newest first: after a cursor's position (keyset),
/// or skipping `offset` (the store has no offset, so this asks for `offset + limit` and
/// skips: fine for the first pages the API allows, offset ≤ 10 000).
pub(super) async fn conversation_page(
    registry: &WebhookRegistry,
    webhook: &Endpoint,
    state: Option<DeliveryState>,
    after: Option<ConversationPosition>,
    offset: usize,
    limit: usize,
) -> Result<Vec<Conversation>, StoreError> {
    let mut query = ConversationQuery::new()
        .endpoint_id(webhook.key())
        .limit(offset + limit);
    if let Some(state) = state {
        query = query.state(state);
    }
    if let Some(after) = after {
        query = query.after(after);
    }
    let all = registry.engine().conversations(&query).await?;
    Ok(all.into_iter().skip(offset).take(limit).collect())
}

pub(super) fn parse_state(text: &str) -> Option<DeliveryState> {
    Some(match text {
        "pending" => DeliveryState::Pending,
        "in_flight" => DeliveryState::InFlight,
        "delivered" => DeliveryState::Delivered,
        "failed" => DeliveryState::Failed,
        "refused" => DeliveryState::Refused,
        _ => return None,
    })
}

/// The webhook's conversation `delivery_id`, or 404 (also when it belongs to another webhook).
pub(super) async fn load_conversation(
    registry: &WebhookRegistry,
    webhook: &Endpoint,
    delivery_id: &str,
) -> ApiResult<Conversation> {
    let conversation = registry
        .engine()
        .conversation(delivery_id)
        .await
        .map_err(|err| ApiError::store(err, delivery_id))?
        .ok_or_else(|| ApiError::delivery_not_found(delivery_id))?;
    if conversation.delivery.endpoint_id.as_deref() != Some(webhook.key().as_str()) {
        return Err(ApiError::delivery_not_found(delivery_id));
    }
    Ok(conversation)
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
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook or delivery", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_conversation(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    let conversation = load_conversation(&registry, &webhook, &delivery_id).await?;
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
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "The owner's deliveries fill its share of the queue", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The delivery queue is full", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn trigger(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<Trigger>>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    let name = body
        .and_then(|t| t.event_type)
        .or_else(|| webhook.event_types.first().cloned())
        .unwrap_or_default();
    let event_type = registry.event_type(&name).ok_or_else(|| {
        ApiError::bad_request(
            "unknown-event-type",
            "Unknown event type",
            format!("`{}` is not an event type", printable(&name)),
        )
    })?;
    let now = registry.now();
    let (event_id, body) = registry.body(&name, &event_type.example, now);
    let queued = registry
        .deliver(&webhook, &name, body, now)
        .await
        .map_err(ApiError::enqueue)?;
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
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook or delivery", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is still pending", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The delivery queue is full", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn resend(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    load_conversation(&registry, &webhook, &delivery_id).await?;
    registry
        .resend(&webhook, &delivery_id)
        .await
        .map_err(|err| ApiError::store(err, &delivery_id))?;
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
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The delivery queue is full", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn recover(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Recover>,
) -> ApiResult<Response> {
    let since = rfc3339::parse(&body.since).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-time",
            "Invalid time",
            "`since` is an RFC 3339 date-time such as 2026-01-02T03:04:05Z",
        )
    })?;
    let webhook = load(&registry, &owner, &id).await?;
    let queued = registry
        .recover(&webhook, since)
        .await
        .map_err(|err| ApiError::store(err, ""))?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { queued })).into_response())
}
