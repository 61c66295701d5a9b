//! Where the management API is mounted, and the OpenAPI document as the application serves
//! it: its `info`, its declared event types, and every path under the mount point.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::HeaderValue;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::dto::{
    AttemptView, ConversationList, ConversationView, CreateWebhook, OutcomeKind, OutcomeView,
    PreviousSecret, ProblemDocument, Queued, Recover, Recovered, ResponseView, RotateSecret,
    SecretView, SetHeaders, Trigger, UpdateWebhook, WebhookList, WebhookView,
};
use super::event_types::{EventTypeList, EventTypeView};
use super::extract::MountPoint;
use super::{conversations, event_types, secrets, webhooks};
use crate::registry::model::{EndpointRateLimit, SigningScheme};
use crate::registry::WebhookRegistry;

/// The document of `registry`'s API mounted at `prefix`, as JSON.
fn document(registry: &WebhookRegistry, prefix: &str) -> Value {
    let mut document = registry
        .openapi_cache()
        .get_or_init(|| at_the_root(registry))
        .clone();
    if !prefix.is_empty() {
        let parameters = prefix_parameters(prefix);
        if let Some(Value::Object(paths)) = document.get_mut("paths") {
            *paths = std::mem::take(paths)
                .into_iter()
                .map(|(path, mut item)| {
                    add_path_parameters(&mut item, &parameters);
                    (format!("{prefix}{path}"), item)
                })
                .collect();
        }
    }
    document
}

/// The path parameters of a mount prefix such as `/tenants/{tenant}` (axum's `{*rest}`
/// wildcard included), in order.
fn prefix_parameters(prefix: &str) -> Vec<String> {
    prefix
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_start_matches('*').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Declares each of the prefix's `parameters` on every operation of a path item: OpenAPI
/// requires every `{name}` of a path to be a declared parameter, and clients generated from
/// the document need it to build the URL.
fn add_path_parameters(item: &mut Value, parameters: &[String]) {
    let Some(operations) = item.as_object_mut() else {
        return;
    };
    for (method, operation) in operations.iter_mut() {
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        if !METHODS.contains(&method.as_str()) {
            continue;
        }
        let Some(operation) = operation.as_object_mut() else {
            continue;
        };
        let list = operation
            .entry("parameters")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Some(list) = list.as_array_mut() else {
            continue;
        };
        // The prefix's parameters come first, in the order of the URL.
        let declared: Vec<Value> = parameters
            .iter()
            .filter(|name| {
                !list
                    .iter()
                    .any(|p| p["in"] == "path" && p["name"] == json!(name))
            })
            .map(|name| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "description": "A path parameter of the mount point",
                    "schema": {"type": "string"},
                })
            })
            .collect();
        list.splice(0..0, declared);
    }
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

#[utoipa::path(
    get, path = "/v1/webhooks/openapi.json", tag = "webhooks", operation_id = "webhooks_openapi",
    summary = "This document.",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")),
)]
pub(super) async fn openapi_json(
    State(registry): State<WebhookRegistry>,
    mount: MountPoint,
) -> Response {
    let body = serde_json::to_vec_pretty(&document(&registry, &mount.template))
        .unwrap_or_else(|_| b"{}".to_vec());
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The application's API key"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Webhooks",
        description = "Register endpoints for events, manage their signing secrets, and inspect every delivery (conversations). Errors are `application/problem+json`.",
    ),
    paths(
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook,
        webhooks::update_webhook, webhooks::delete_webhook, secrets::get_secret,
        secrets::rotate_secret, webhooks::set_headers, webhooks::disable_webhook,
        webhooks::enable_webhook, conversations::list_conversations,
        conversations::get_conversation, conversations::trigger, conversations::resend,
        conversations::recover, openapi_json, event_types::list_event_types,
    ),
    components(schemas(
        CreateWebhook, UpdateWebhook, WebhookView, WebhookList, SecretView, PreviousSecret,
        RotateSecret, SetHeaders, Trigger, Queued, Recover, Recovered, ConversationView,
        AttemptView, OutcomeView, OutcomeKind, ResponseView, ConversationList, ProblemDocument, SigningScheme, EndpointRateLimit,
        EventTypeView, EventTypeList,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "webhooks", description = "Register and manage webhooks"),
        (name = "secrets", description = "Signing secrets"),
        (name = "conversations", description = "Deliveries: every request and response, test events, re-sends"),
        (name = "event-types", description = "The event types webhooks can subscribe to"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of the management API, generated from the handlers.
fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

impl WebhookRegistry {
    /// The OpenAPI document of this registry's management API as served at the root: the
    /// generic document generated from the handlers, with the application's [`info`](crate::registry::RegistryBuilder::api_info)
    /// and each declared event type as a component named `event.<type>`. The served
    /// `openapi.json` also puts every path under the router's mount point.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        serde_json::from_value(document(self, "")).unwrap_or_else(|_| openapi())
    }
}
