//! The management API: the request and response bodies, the handlers, the router and the
//! OpenAPI document. See the [registry docs](super#routes) for the route table.

mod conversations;
pub(crate) mod cursor;
mod dto;
mod error;
mod event_types;
mod extract;
mod openapi;
mod router;
mod secrets;
mod validate;
mod webhooks;

pub use dto::{
    AttemptView, ConversationList, ConversationView, CreateWebhook, OutcomeKind, OutcomeView,
    PreviousSecret, ProblemDocument, Queued, Recover, Recovered, ResponseView, RotateSecret,
    SecretView, SetHeaders, Trigger, UpdateWebhook, WebhookList, WebhookView,
};
pub use event_types::{EventTypeList, EventTypeView};
pub use openapi::openapi;
pub use router::routes;

/// The path every route lives under.
pub const BASE_PATH: &str = "/v1/webhooks";
