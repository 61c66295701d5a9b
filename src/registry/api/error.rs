//! The management API's errors: every one an `application/problem+json` [`Problem`].

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderValue, StatusCode};

use crate::delivery::EnqueueError;
use crate::problem::Problem;
use crate::registry::operations::OperationError;
use crate::registry::SubscriptionError;
use crate::store::StoreError;

/// A management API error: a [`Problem`] (plus `WWW-Authenticate` on `401`).
#[derive(Debug)]
pub(crate) struct ApiError(Problem);

pub(super) type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.0.status() == StatusCode::UNAUTHORIZED;
        let mut response = self.0.into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<OperationError> for ApiError {
    fn from(err: OperationError) -> Self {
        match err {
            OperationError::WebhookNotFound(id) => Self::webhook_not_found(&id),
            OperationError::DeliveryNotFound(id) => Self::delivery_not_found(&id),
            OperationError::UnknownEventType(name) => Self::bad_request(
                "unknown-event-type",
                "Unknown event type",
                format!("`{}` is not an event type", printable(&name)),
            ),
            OperationError::Subscriptions(err) => Self::subscriptions(err),
            OperationError::Store { error, delivery_id } => Self::store(error, &delivery_id),
            OperationError::Enqueue(err) => Self::enqueue(err),
            OperationError::InvalidTime(name) => Self::bad_request(
                "invalid-time",
                "Invalid time",
                format!("`{name}` is an RFC 3339 date-time such as 2026-01-02T03:04:05Z"),
            ),
            OperationError::InvalidGracePeriod => Self::bad_request(
                "invalid-grace-period",
                "Invalid grace period",
                "`grace_period_seconds` is at most 30 days",
            ),
        }
    }
}

impl ApiError {
    pub(super) fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self(Problem::new(status, slug, title))
    }

    pub(super) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0 = self.0.with_detail(detail.into());
        self
    }

    pub(super) fn bad_request(
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, title).detail(detail)
    }

    pub(super) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid credentials",
        )
        .detail("send `Authorization: Bearer <API key>`")
    }

    pub(super) fn webhook_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "webhook-not-found",
            "No such webhook",
        )
        .detail(format!("no webhook `{}`", printable(id)))
    }

    pub(super) fn delivery_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "delivery-not-found",
            "No such delivery for this webhook",
        )
        .detail(format!("no delivery `{}`", printable(id)))
    }

    pub(super) fn pagination(detail: impl Into<String>) -> Self {
        Self::bad_request("invalid-pagination", "Invalid pagination", detail)
    }

    pub(super) fn subscriptions(err: SubscriptionError) -> Self {
        match err {
            SubscriptionError::Duplicate(id) => Self::new(
                StatusCode::CONFLICT,
                "webhook-exists",
                "A webhook with this id already exists",
            )
            .detail(format!("`{id}` is taken")),
            SubscriptionError::Backend(why) => {
                tracing::error!(error = %why, "webhook registry: subscription store failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "The webhook store is unavailable",
                )
                .retry_after(5)
            }
        }
    }

    pub(super) fn store(err: StoreError, delivery_id: &str) -> Self {
        match err {
            StoreError::NotFound(_) => Self::delivery_not_found(delivery_id),
            StoreError::NotFinal(_) => Self::new(
                StatusCode::CONFLICT,
                "delivery-not-final",
                "The delivery is still pending",
            )
            .detail("only delivered, failed or refused deliveries can be re-sent"),
            // A memory store's engine at its capacity refuses re-sends as it refuses new
            // deliveries: the same answer.
            StoreError::Full => Self::enqueue(EnqueueError::Full {
                retry_after: Duration::from_secs(1),
            }),
            StoreError::Unsupported(what) => Self::new(
                StatusCode::NOT_IMPLEMENTED,
                "not-supported",
                "The delivery store does not support this",
            )
            .detail(what),
            err => {
                tracing::error!(error = %err, "webhook registry: delivery store failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "The delivery store is unavailable",
                )
                .retry_after(5)
            }
        }
    }

    pub(super) fn enqueue(err: EnqueueError) -> Self {
        Self(Problem::from(err))
    }

    pub(super) fn retry_after(mut self, seconds: u64) -> Self {
        self.0 = self.0.with_retry_after(seconds);
        self
    }
}

/// `text` safe to echo in a detail: at most 64 printable ASCII characters.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}
