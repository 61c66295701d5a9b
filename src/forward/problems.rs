//! The problems (`application/problem+json`) the forward layer answers with instead of running
//! the inner service: a malformed or refused endpoint, a full engine, an unreadable body.

use http::StatusCode;

use crate::delivery::EnqueueError;
use crate::problem::Problem;

fn problem(
    status: StatusCode,
    slug: &str,
    title: &'static str,
    detail: impl Into<String>,
) -> Problem {
    Problem::new(status, slug, title).with_detail(detail.into())
}

pub(super) fn invalid_endpoint(detail: impl Into<String>) -> Problem {
    problem(
        StatusCode::BAD_REQUEST,
        "webhook-endpoint-invalid",
        "Invalid webhook endpoint",
        detail,
    )
}

pub(super) fn unavailable(err: &EnqueueError) -> Problem {
    Problem::from(err.clone())
}

pub(super) fn refused(detail: &str) -> Problem {
    problem(
        StatusCode::BAD_REQUEST,
        "webhook-endpoint-refused",
        "Webhook endpoint refused",
        format!("{detail}; webhook endpoints must be public http(s) URLs"),
    )
}

/// The legacy body field's search could not read the request body.
pub(super) fn unreadable_body(err: impl std::fmt::Display) -> Problem {
    problem(
        StatusCode::BAD_REQUEST,
        "request-body-unreadable",
        "Request body unreadable",
        format!("the request body could not be read: {err}"),
    )
}
