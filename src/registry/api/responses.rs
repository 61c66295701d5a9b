//! The problem responses most routes share, declared once for the OpenAPI document: a route
//! lists `Unauthorized` rather than repeating the same status, description and schema.

use std::collections::BTreeMap;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

/// An `application/problem+json` response described as `description`.
fn problem(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ProblemDocument")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content)
        .build();
    BTreeMap::from([(status.to_string(), RefOr::T(response))])
}

/// `401`: every route needs the owner's credentials.
pub(super) struct Unauthorized;

impl IntoResponses for Unauthorized {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problem(401, "Missing or invalid credentials")
    }
}

/// `404`: the path names a webhook the owner does not have.
pub(super) struct WebhookNotFound;

impl IntoResponses for WebhookNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problem(404, "No such webhook")
    }
}

/// `404`: the path names a webhook or a delivery of it that does not exist.
pub(super) struct DeliveryNotFound;

impl IntoResponses for DeliveryNotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problem(404, "No such webhook or delivery")
    }
}

/// `503`: the delivery queue refused the delivery.
pub(super) struct QueueFull;

impl IntoResponses for QueueFull {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problem(503, "The delivery queue is full")
    }
}
