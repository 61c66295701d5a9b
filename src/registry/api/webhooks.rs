//! The webhook resource: create, list, get, replace, delete, custom headers, enable/disable.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{CACHE_CONTROL, LOCATION};
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use super::cursor::{self, bad_cursor, parse_limit, parse_query};
use super::dto::{
    CreateWebhook, ProblemDocument, SetHeaders, UpdateWebhook, WebhookList, WebhookView,
};
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiPath, Authed, MountPoint};
use super::responses::{Unauthorized, WebhookNotFound};
use super::validate::{validate_headers, validate_id};
use super::BASE_PATH;
use crate::registry::model::{Endpoint, Owner};
use crate::registry::operations;
use crate::registry::{Modification, WebhookKey, WebhookPage, WebhookRegistry};

pub(super) async fn load(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
) -> ApiResult<Endpoint> {
    Ok(operations::load(registry, owner, id).await?)
}

/// Applies `change` to the webhook, or 404.
pub(super) async fn modify<'a>(
    registry: &'a WebhookRegistry,
    owner: &'a Owner,
    id: &'a str,
    change: Modification<'a>,
) -> ApiResult<Endpoint> {
    registry
        .subscriptions()
        .modify(WebhookKey::new(owner, id), change)
        .await
        .map_err(ApiError::subscriptions)?
        .ok_or_else(|| ApiError::webhook_not_found(id))
}

pub(super) fn ok_json<T: Serialize>(value: T) -> Response {
    Json(value).into_response()
}

pub(super) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", operation_id = "create_webhook",
    summary = "Create a webhook.",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created", body = WebhookView),
        (status = 400, description = "Invalid body, id, URL, event type or scheme", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
        (status = 409, description = "The id is taken", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The owner has its maximum number of webhooks", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn create_webhook(
    State(registry): State<WebhookRegistry>,
    mount: MountPoint,
    Authed(owner): Authed,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<Response> {
    validate_id(&body.id)?;
    let fields = registry
        .validate_fields(
            body.endpoint_url,
            body.event_types,
            body.description,
            body.scheme,
            body.rate_limit,
        )
        .await?;
    let max = registry.max_webhooks();
    let first = WebhookPage {
        owner: &owner,
        after: None,
        limit: max,
    };
    let existing = registry
        .subscriptions()
        .list(first)
        .await
        .map_err(ApiError::subscriptions)?;
    if existing.len() >= max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook-limit-reached",
            "Too many webhooks",
        )
        .detail(format!(
            "an owner may have at most {max} webhooks; delete one first"
        )));
    }
    let now = registry.now();
    let mut webhook = Endpoint::new(
        owner,
        body.id,
        fields.endpoint_url,
        fields.event_types,
        fields.scheme,
        now,
    );
    webhook.description = fields.description;
    webhook.rate_limit = fields.rate_limit;
    registry
        .subscriptions()
        .insert(webhook.clone())
        .await
        .map_err(ApiError::subscriptions)?;
    // The id is validated (URL-safe characters only), so the link is always a valid value.
    let location = HeaderValue::from_str(&format!("{}{BASE_PATH}/{}", mount.concrete, webhook.id))
        .unwrap_or_else(|_| HeaderValue::from_static(BASE_PATH));
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(WebhookView::new(&webhook, now)),
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    summary = "Get a list of webhooks.",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (20)"),
        ("cursor" = Option<String>, Query, description = "The opaque `next_cursor` of the previous page (a webhook id is accepted too)"),
    ),
    responses(
        (status = 200, description = "A page of webhooks", body = WebhookList),
        (status = 400, description = "Invalid pagination", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
    )
)]
pub(super) async fn list_webhooks(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = parse_query(query)?;
    let limit = parse_limit(query.limit.as_deref())?;
    if query.offset.is_some() {
        return Err(ApiError::pagination(
            "the webhook list pages by `cursor`, not `offset`",
        ));
    }
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) if cursor::is_opaque(cursor) => {
            let id = cursor::parse_webhook(cursor).ok_or_else(bad_cursor)?;
            validate_id(&id).map_err(|_| bad_cursor())?;
            Some(id)
        }
        // Older clients pass the last webhook id of the previous page.
        Some(id) => {
            validate_id(id).map_err(|_| bad_cursor())?;
            Some(id.to_owned())
        }
    };
    let asked = WebhookPage {
        owner: &owner,
        after: after.as_deref(),
        limit: limit + 1,
    };
    let mut page = registry
        .subscriptions()
        .list(asked)
        .await
        .map_err(ApiError::subscriptions)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let now = registry.now();
    Ok(ok_json(WebhookList {
        next_cursor: more
            .then(|| page.last().map(|w| cursor::webhook(&w.id)))
            .flatten(),
        data: page.iter().map(|w| WebhookView::new(w, now)).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "get_webhook",
    summary = "Get a single webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn get_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    Ok(ok_json(WebhookView::new(&webhook, registry.now())))
}

#[utoipa::path(
    put, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "update_webhook",
    summary = "Update all fields of a webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "Invalid body, URL, event type or scheme", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn update_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Response> {
    if body.id.as_deref().is_some_and(|body_id| body_id != id) {
        return Err(ApiError::bad_request(
            "id-mismatch",
            "The id cannot change",
            "the body's `id` differs from the path's",
        ));
    }
    // 404 before validating the body's contents.
    load(&registry, &owner, &id).await?;
    let fields = registry
        .validate_fields(
            body.endpoint_url,
            body.event_types,
            body.description,
            body.scheme,
            body.rate_limit,
        )
        .await?;
    let now = registry.now();
    let webhook = modify(
        &registry,
        &owner,
        &id,
        Box::new(move |webhook| {
            if !webhook.scheme.secret_compatible(fields.scheme) {
                webhook.scheme = fields.scheme;
                webhook.rotate_secret(now, Duration::ZERO);
            }
            webhook.scheme = fields.scheme;
            webhook.endpoint_url = fields.endpoint_url;
            webhook.event_types = fields.event_types;
            webhook.description = fields.description;
            webhook.rate_limit = fields.rate_limit;
            webhook.updated_at = now;
        }),
    )
    .await?;
    Ok(ok_json(WebhookView::new(&webhook, now)))
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook",
    summary = "Delete a webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 204, description = "Deleted; its queued deliveries are cancelled (final, not sent)"),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn delete_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let deleted = registry
        .delete(&owner, &id)
        .await
        .map_err(ApiError::subscriptions)?;
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::webhook_not_found(&id))
    }
}

#[utoipa::path(
    put, path = "/v1/webhooks/{id}/headers", tag = "webhooks", operation_id = "set_webhook_headers",
    summary = "Set the custom headers sent with every delivery.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = SetHeaders,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "A header is refused or invalid", body = ProblemDocument, content_type = "application/problem+json"),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn set_headers(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetHeaders>,
) -> ApiResult<Response> {
    let headers = validate_headers(body.headers)?;
    let now = registry.now();
    let webhook = modify(
        &registry,
        &owner,
        &id,
        Box::new(move |webhook| {
            webhook.headers = headers;
            webhook.updated_at = now;
        }),
    )
    .await?;
    Ok(ok_json(WebhookView::new(&webhook, now)))
}

pub(super) async fn set_enabled(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    enabled: bool,
) -> ApiResult<Response> {
    let webhook =
        operations::set_enabled(registry, owner, id, enabled, "disabled through the API").await?;
    Ok(ok_json(WebhookView::new(&webhook, registry.now())))
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/disable", tag = "webhooks", operation_id = "disable_webhook",
    summary = "Stop delivering events to the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The disabled webhook", body = WebhookView),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn disable_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    set_enabled(&registry, &owner, &id, false).await
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/enable", tag = "webhooks", operation_id = "enable_webhook",
    summary = "Deliver events to the webhook again (also after an automatic disable).",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The enabled webhook", body = WebhookView),
        Unauthorized,
        WebhookNotFound,
    )
)]
pub(super) async fn enable_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    set_enabled(&registry, &owner, &id, true).await
}
