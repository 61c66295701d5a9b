//! The router: one table of `(method, path, handler)` from which the routes and the documented
//! paths are both made, and `405` answers as problem+json.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use http::{HeaderValue, Method, StatusCode};

use super::conversations::{get_conversation, list_conversations, recover, resend, trigger};
use super::error::ApiError;
use super::event_types;
use super::openapi::openapi_json;
use super::secrets::{get_secret, rotate_secret};
use super::webhooks::{
    create_webhook, delete_webhook, disable_webhook, enable_webhook, get_webhook, list_webhooks,
    set_headers, update_webhook,
};
use crate::registry::WebhookRegistry;

type Handler = MethodRouter<WebhookRegistry>;

/// Every route: `(method, path, handler)`. The router and [`routes`] are both built from it.
fn table() -> Vec<(Method, &'static str, Handler)> {
    let r = |method: Method, path: &'static str, handler: Handler| (method, path, handler);
    vec![
        r(
            Method::POST,
            "/v1/webhooks",
            on(MethodFilter::POST, create_webhook),
        ),
        r(
            Method::GET,
            "/v1/webhooks",
            on(MethodFilter::GET, list_webhooks),
        ),
        r(
            Method::GET,
            "/v1/webhooks/openapi.json",
            on(MethodFilter::GET, openapi_json),
        ),
        r(
            Method::GET,
            "/v1/event-types",
            on(MethodFilter::GET, event_types::list_event_types),
        ),
        r(
            Method::GET,
            "/v1/webhooks/{id}",
            on(MethodFilter::GET, get_webhook),
        ),
        r(
            Method::PUT,
            "/v1/webhooks/{id}",
            on(MethodFilter::PUT, update_webhook),
        ),
        r(
            Method::DELETE,
            "/v1/webhooks/{id}",
            on(MethodFilter::DELETE, delete_webhook),
        ),
        r(
            Method::GET,
            "/v1/webhooks/{id}/secret",
            on(MethodFilter::GET, get_secret),
        ),
        r(
            Method::POST,
            "/v1/webhooks/{id}/secret/rotate",
            on(MethodFilter::POST, rotate_secret),
        ),
        r(
            Method::PUT,
            "/v1/webhooks/{id}/headers",
            on(MethodFilter::PUT, set_headers),
        ),
        r(
            Method::POST,
            "/v1/webhooks/{id}/disable",
            on(MethodFilter::POST, disable_webhook),
        ),
        r(
            Method::POST,
            "/v1/webhooks/{id}/enable",
            on(MethodFilter::POST, enable_webhook),
        ),
        r(
            Method::GET,
            "/v1/webhooks/{id}/conversations",
            on(MethodFilter::GET, list_conversations),
        ),
        r(
            Method::GET,
            "/v1/webhooks/{id}/conversations/{delivery_id}",
            on(MethodFilter::GET, get_conversation),
        ),
        r(
            Method::POST,
            "/v1/webhooks/{id}/trigger",
            on(MethodFilter::POST, trigger),
        ),
        r(
            Method::POST,
            "/v1/webhooks/{id}/conversations/{delivery_id}/resend",
            on(MethodFilter::POST, resend),
        ),
        r(
            Method::POST,
            "/v1/webhooks/{id}/recover",
            on(MethodFilter::POST, recover),
        ),
    ]
}

/// Every `(method, path)` the [router](WebhookRegistry::router) serves, paths in OpenAPI
/// template form (`/v1/webhooks/{id}`).
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

impl WebhookRegistry {
    /// The management API as an [`axum::Router`] with every route under `/v1/webhooks` and
    /// `/v1/event-types` ([module docs](super#routes)); merge it into the application's
    /// router or nest it under a prefix (links and the served document follow). A path that
    /// exists with another method answers `405` as `application/problem+json`.
    pub fn router(&self) -> Router {
        let mut by_path: BTreeMap<&'static str, (Handler, Vec<Method>)> = BTreeMap::new();
        for (method, path, handler) in table() {
            match by_path.remove(path) {
                Some((existing, mut methods)) => {
                    methods.push(method);
                    by_path.insert(path, (existing.merge(handler), methods));
                }
                None => {
                    by_path.insert(path, (handler, vec![method]));
                }
            }
        }
        let mut router = Router::new();
        for (path, (handler, methods)) in by_path {
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            router = router.route(
                path,
                handler.fallback(move || {
                    let allow = allow.clone();
                    async move { method_not_allowed(&allow) }
                }),
            );
        }
        router.with_state(self.clone())
    }
}

fn method_not_allowed(allow: &str) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
    )
    .detail(format!("allowed: {allow}"))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(http::header::ALLOW, value);
    }
    response
}
