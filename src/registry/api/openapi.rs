//! Where the management API is mounted, and the OpenAPI document as the application serves
//! it: its `info`, its declared event types, and every path under the mount point.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, NestedPath, OriginalUri};
use axum::http::request::Parts;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::ApiDoc;
use crate::registry::WebhookRegistry;

/// Where the registry's router is nested (`""` when it is not), so links and documented
/// paths are the ones a client really calls.
pub(super) struct MountPoint {
    /// The prefix as routed, such as `/tenants/{tenant}`: what the document shows.
    pub(super) template: String,
    /// The prefix of this very request, such as `/tenants/acme`: what links start with.
    pub(super) concrete: String,
}

impl<S: Send + Sync> FromRequestParts<S> for MountPoint {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let template = parts
            .extensions
            .get::<NestedPath>()
            .map(|nested| nested.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        // A nested router sees the path without its prefix; the outermost router kept the
        // whole one, so the prefix is the difference (with path parameters filled in).
        let concrete = parts
            .extensions
            .get::<OriginalUri>()
            .and_then(|original| original.path().strip_suffix(parts.uri.path()))
            .map(|prefix| prefix.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| template.clone());
        Ok(Self { template, concrete })
    }
}

/// The document of `registry`'s API mounted at `prefix`, as JSON.
pub(super) fn document(registry: &WebhookRegistry, prefix: &str) -> Value {
    let mut document = registry
        .openapi_cache()
        .get_or_init(|| at_the_root(registry))
        .clone();
    if !prefix.is_empty() {
        if let Some(Value::Object(paths)) = document.get_mut("paths") {
            *paths = std::mem::take(paths)
                .into_iter()
                .map(|(path, item)| (format!("{prefix}{path}"), item))
                .collect();
        }
    }
    document
}

fn at_the_root(registry: &WebhookRegistry) -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    if let Some((title, version)) = registry.api_info() {
        document["info"]["title"] = json!(title);
        document["info"]["version"] = json!(version);
    }
    add_event_types(registry, &mut document);
    document
}

/// The name of the component describing the events of type `name`.
pub(super) fn event_component(name: &str) -> String {
    format!("event.{name}")
}

/// Each declared event type as a component: the envelope every delivery of it has, with
/// its `data` schema when the application gave one (else its example).
fn add_event_types(registry: &WebhookRegistry, document: &mut Value) {
    let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for event in registry.event_types() {
        let data = match &event.schema {
            Some(schema) => schema.clone(),
            None => json!({"type": "object", "example": event.example}),
        };
        let mut properties = Map::new();
        properties.insert("id".into(), json!({"type": "string"}));
        properties.insert(
            "type".into(),
            json!({"type": "string", "enum": [event.name]}),
        );
        properties.insert(
            "created_at".into(),
            json!({"type": "string", "format": "date-time"}),
        );
        properties.insert("data".into(), data);
        schemas.insert(
            event_component(&event.name),
            json!({
                "type": "object",
                "description": event.description,
                "required": ["id", "type", "created_at", "data"],
                "properties": properties,
            }),
        );
    }
}
