//! `GET /v1/event-types`: the catalog of the event types the application declared, so users
//! can see what they may subscribe to and what each event carries.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiResult;
use super::extract::Authed;
use super::responses::Unauthorized;
use crate::registry::{EventType, WebhookRegistry};

/// One declared event type.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(super) struct EventTypeView {
    /// The name webhooks subscribe to, such as `run.status`.
    pub(super) name: String,
    /// What it means.
    pub(super) description: String,
    /// The JSON Schema of the events' `data`, when the application declared one.
    #[schema(value_type = Option<Object>)]
    pub(super) schema: Option<serde_json::Value>,
    /// The `data` of a test event (the trigger route sends it).
    #[schema(value_type = Object)]
    pub(super) example: serde_json::Value,
}

impl EventTypeView {
    fn new(event: &EventType) -> Self {
        Self {
            name: event.name.to_string(),
            description: event.description.to_string(),
            schema: event.schema.clone(),
            example: event.example.clone(),
        }
    }
}

/// `GET /v1/event-types`: every declared event type, ordered by name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(super) struct EventTypeList {
    /// The event types.
    pub(super) data: Vec<EventTypeView>,
}

#[utoipa::path(
    get, path = "/v1/event-types", tag = "event-types", operation_id = "list_event_types",
    summary = "List the event types webhooks can subscribe to.",
    responses(
        (status = 200, description = "Every declared event type", body = EventTypeList),
        Unauthorized,
    )
)]
pub(super) async fn list_event_types(
    State(registry): State<WebhookRegistry>,
    // Only to refuse anonymous callers: the catalog is the same for every owner.
    Authed(_): Authed,
) -> ApiResult<Json<EventTypeList>> {
    Ok(Json(EventTypeList {
        data: registry.event_types().map(EventTypeView::new).collect(),
    }))
}
