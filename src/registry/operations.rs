//! What an owner can do to its webhooks and their deliveries, written once for every front
//! end: the JSON API's handlers and the portal's forms call these functions, so a re-send, a
//! rotation or a test event means the same in both. Each one scopes by owner (another tenant's
//! webhook or delivery is "not found") and reports what went wrong as an [`OperationError`],
//! which each front end turns into its answer.

use std::time::Duration;

use super::event::rfc3339;
use super::model::{Endpoint, Owner};
use super::{PublishedDelivery, SubscriptionError, WebhookKey, WebhookRegistry};
use crate::delivery::EnqueueError;
use crate::delivery::{Conversation, ConversationPosition, ConversationQuery, DeliveryState};
use crate::store::StoreError;

/// Why an operation did nothing.
#[derive(Debug)]
pub(crate) enum OperationError {
    /// The owner has no webhook with this id.
    WebhookNotFound(String),
    /// The webhook has no delivery with this id.
    DeliveryNotFound(String),
    /// The event type is not declared.
    UnknownEventType(String),
    /// The subscription store failed (or refused a duplicate).
    Subscriptions(SubscriptionError),
    /// The delivery store failed or refused, about `delivery_id` (empty for a whole webhook).
    Store {
        /// What it said.
        error: StoreError,
        /// The delivery concerned.
        delivery_id: String,
    },
    /// The engine did not queue the delivery.
    Enqueue(EnqueueError),
    /// A rotation's grace period is longer than [`MAX_GRACE`].
    InvalidGracePeriod,
    /// A time that is not RFC 3339.
    InvalidTime(&'static str),
}

/// The longest grace period a rotation may give the previous secret.
pub(crate) const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

impl OperationError {
    fn store(error: StoreError, delivery_id: &str) -> Self {
        Self::Store {
            error,
            delivery_id: delivery_id.to_owned(),
        }
    }
}

/// The owner's webhook `id`.
pub(crate) async fn load(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
) -> Result<Endpoint, OperationError> {
    registry
        .subscriptions()
        .get(WebhookKey::new(owner, id))
        .await
        .map_err(OperationError::Subscriptions)?
        .ok_or_else(|| OperationError::WebhookNotFound(id.to_owned()))
}

/// The webhook's conversation `delivery_id` (not found also when it belongs to another
/// webhook, which may be another tenant's).
pub(crate) async fn load_conversation(
    registry: &WebhookRegistry,
    webhook: &Endpoint,
    delivery_id: &str,
) -> Result<Conversation, OperationError> {
    let conversation = registry
        .engine()
        .conversation(delivery_id)
        .await
        .map_err(|err| OperationError::store(err, delivery_id))?
        .ok_or_else(|| OperationError::DeliveryNotFound(delivery_id.to_owned()))?;
    if conversation.delivery.endpoint_id.as_deref() != Some(webhook.key().as_str()) {
        return Err(OperationError::DeliveryNotFound(delivery_id.to_owned()));
    }
    Ok(conversation)
}

/// One page of a webhook's conversations, newest first: after a cursor's position (keyset),
/// or skipping `offset` (the store has no offset, so this asks for `offset + limit` and
/// skips: fine for the first pages the API allows, offset ≤ 10 000).
pub(crate) async fn conversation_page(
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

/// A delivery state by its API name.
pub(crate) fn parse_state(text: &str) -> Option<DeliveryState> {
    Some(match text {
        "pending" => DeliveryState::Pending,
        "in_flight" => DeliveryState::InFlight,
        "delivered" => DeliveryState::Delivered,
        "failed" => DeliveryState::Failed,
        "refused" => DeliveryState::Refused,
        _ => return None,
    })
}

/// Rotates the webhook's secret; the previous one keeps signing for `grace_seconds` (the
/// registry's default when `None`, at most [`MAX_GRACE`]).
pub(crate) async fn rotate_secret(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    grace_seconds: Option<u64>,
) -> Result<Endpoint, OperationError> {
    let grace = match grace_seconds.map(Duration::from_secs) {
        None => registry.rotation_grace(),
        Some(grace) if grace <= MAX_GRACE => grace,
        Some(_) => return Err(OperationError::InvalidGracePeriod),
    };
    let now = registry.now();
    registry
        .subscriptions()
        .modify(
            WebhookKey::new(owner, id),
            Box::new(move |webhook| webhook.rotate_secret(now, grace)),
        )
        .await
        .map_err(OperationError::Subscriptions)?
        .ok_or_else(|| OperationError::WebhookNotFound(id.to_owned()))
}

/// Enables or disables the webhook (`reason` is kept for a disable).
pub(crate) async fn set_enabled(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    enabled: bool,
    reason: &str,
) -> Result<Endpoint, OperationError> {
    let reason = (!enabled).then(|| reason.to_owned());
    registry
        .set_enabled(owner, id, enabled, reason)
        .await
        .map_err(OperationError::Subscriptions)?
        .map(|(webhook, _)| webhook)
        .ok_or_else(|| OperationError::WebhookNotFound(id.to_owned()))
}

/// A test event: the event type's example payload (by default the webhook's first type),
/// signed and queued like any other, also for a disabled webhook. The event id and the
/// delivery.
pub(crate) async fn trigger(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    event_type: Option<String>,
) -> Result<(String, PublishedDelivery), OperationError> {
    let webhook = load(registry, owner, id).await?;
    let name = event_type
        .or_else(|| webhook.event_types.first().cloned())
        .unwrap_or_default();
    let event_type = registry
        .event_type(&name)
        .ok_or_else(|| OperationError::UnknownEventType(name.clone()))?;
    let now = registry.now();
    let (event_id, body) = registry.body(&name, &event_type.example, now);
    let queued = registry
        .deliver(&webhook, &name, body, now)
        .await
        .map_err(OperationError::Enqueue)?;
    Ok((event_id, queued))
}

/// Re-sends one final delivery of the webhook: one manual attempt, same delivery id, signed
/// with the current secrets.
pub(crate) async fn resend(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    delivery_id: &str,
) -> Result<(), OperationError> {
    let webhook = load(registry, owner, id).await?;
    load_conversation(registry, &webhook, delivery_id).await?;
    registry
        .resend(&webhook, delivery_id)
        .await
        .map_err(|err| OperationError::store(err, delivery_id))
}

/// Re-sends every failed delivery of the webhook created at or after `since` (RFC 3339);
/// how many.
pub(crate) async fn recover(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    since: &str,
) -> Result<usize, OperationError> {
    let since = rfc3339::parse(since).ok_or(OperationError::InvalidTime("since"))?;
    let webhook = load(registry, owner, id).await?;
    registry
        .recover(&webhook, since)
        .await
        .map_err(|err| OperationError::store(err, ""))
}
