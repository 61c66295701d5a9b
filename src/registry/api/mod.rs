//! The management API: the request and response bodies, the handlers, the router and the
//! OpenAPI document. See the [registry docs](super#routes) for the route table.
//!
//! Public here: the [conversation view](ConversationView) (the one JSON shape of a delivery
//! and its attempts, for an application that shows conversations of its own), its page
//! cursor and the route table; the OpenAPI document is
//! [`WebhookRegistry::openapi`](super::WebhookRegistry::openapi). The request and response bodies, this view's
//! fields included, are described by the OpenAPI document.

mod conversations;
pub(crate) mod cursor;
mod dto;
mod error;
mod event_types;
mod extract;
mod openapi;
mod responses;
mod router;
mod secrets;
mod validate;
mod webhooks;

pub use cursor::ConversationCursor;
#[cfg(feature = "portal")]
pub(crate) use dto::AttemptView;
pub use dto::ConversationView;
pub use router::routes;

// The portal renders the same views and answers with the same problems as the JSON API.
#[cfg(feature = "portal")]
pub(crate) use dto::{SecretView, WebhookView};
#[cfg(feature = "portal")]
pub(crate) use error::ApiError;

/// The path every route lives under.
const BASE_PATH: &str = "/v1/webhooks";
