//! [`Rejection`]: why a webhook request was refused, and how it is rendered.

use std::borrow::Cow;
use std::fmt;

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::problem::Problem;
use crate::scheme::{VerifyError, VerifyErrorKind};

/// Seconds a sender is asked to wait (`Retry-After`) before retrying a delivery that is
/// still being processed.
pub(crate) const IN_FLIGHT_RETRY_AFTER: u64 = 5;

/// Why a webhook request was refused by [`WebhookSignatureLayer`](super::WebhookSignatureLayer)
/// or by an extractor.
///
/// Opaque on purpose: match on [`Rejection::kind`], read [`Rejection::status`], render with
/// [`Rejection::problem`] or [`IntoResponse`]. The layer attaches a clone of the rejection to
/// the response extensions, so outer layers can inspect it:
///
/// ```
/// use tower_webhooks::inbound::{Rejection, RejectionKind};
/// # fn inspect(response: &axum::response::Response) {
/// if let Some(rejection) = response.extensions().get::<Rejection>() {
///     if rejection.kind() == RejectionKind::InvalidSignature {
///         // count it, alert, ...
///     }
/// }
/// # }
/// ```
///
/// A rejection never contains a secret or an expected signature: its detail is written by
/// this crate (or is a payload deserialisation message about the sender's own bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    status: StatusCode,
    detail: Cow<'static, str>,
}

/// The reason class of a [`Rejection`]. See the [module docs](super) for the status table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A required signature, id or timestamp header is absent (`400`).
    MissingHeader,
    /// A header is present but not in the scheme's grammar (`400`).
    MalformedHeader,
    /// No signature matched any secret (`401`).
    InvalidSignature,
    /// No secret is configured or found for this request (`401`).
    NoSecret,
    /// The signed timestamp is older than the replay window (`401`).
    TimestampTooOld,
    /// The signed timestamp is too far in the future (`401`).
    TimestampInFuture,
    /// A rate-limit condition refused the request (`429`).
    RateLimited,
    /// A non-signature condition failed (Valohai) (`400`).
    ConditionFailed,
    /// The body is larger than the configured limit (`413`, also in uniform-status mode).
    BodyTooLarge,
    /// The body could not be read (`400`).
    BodyError,
    /// The body was not received within the layer's read deadline (`408`).
    BodyTimeout,
    /// A delivery with the same signed id is being processed right now (`409` with
    /// `Retry-After`).
    InFlight,
    /// The replay store could not be reached (`503` with `Retry-After`).
    ReplayStoreUnavailable,
    /// The body is not syntactically valid JSON (`400`).
    MalformedPayload,
    /// The body does not match the expected payload type (`422`).
    InvalidPayload,
    /// An extractor that needs [`WebhookSignatureLayer`](super::WebhookSignatureLayer) ran
    /// without it and without a verifier in state: a server configuration error (`500`).
    MissingVerifier,
}

impl RejectionKind {
    /// The stable problem `type` slug (`tag:tower-webhooks,2026:<slug>`).
    #[must_use]
    pub fn slug(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing-header",
            Self::MalformedHeader => "malformed-header",
            Self::InvalidSignature => "invalid-signature",
            Self::NoSecret => "no-secret",
            Self::TimestampTooOld => "stale-timestamp",
            Self::TimestampInFuture => "future-timestamp",
            Self::RateLimited => "rate-limited",
            Self::ConditionFailed => "condition-failed",
            Self::BodyTooLarge => "body-too-large",
            Self::BodyError => "body-error",
            Self::BodyTimeout => "body-timeout",
            Self::InFlight => "replay-in-flight",
            Self::ReplayStoreUnavailable => "replay-store-unavailable",
            Self::MalformedPayload => "malformed-payload",
            Self::InvalidPayload => "invalid-payload",
            Self::MissingVerifier => "missing-verifier",
        }
    }

    /// The short human title of the problem type.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::MissingHeader => "Missing webhook header",
            Self::MalformedHeader => "Malformed webhook header",
            Self::InvalidSignature => "Invalid webhook signature",
            Self::NoSecret => "No webhook secret for this request",
            Self::TimestampTooOld => "Webhook timestamp is too old",
            Self::TimestampInFuture => "Webhook timestamp is in the future",
            Self::RateLimited => "Rate limited",
            Self::ConditionFailed => "Webhook condition failed",
            Self::BodyTooLarge => "Payload too large",
            Self::BodyError => "Failed to read the request body",
            Self::BodyTimeout => "Request body not received in time",
            Self::InFlight => "Webhook delivery is already being processed",
            Self::ReplayStoreUnavailable => "Replay protection is unavailable",
            Self::MalformedPayload => "Malformed webhook payload",
            Self::InvalidPayload => "Invalid webhook payload",
            Self::MissingVerifier => "Webhook verification is not configured",
        }
    }

    /// The status used when the scheme does not impose a uniform one.
    #[must_use]
    pub fn default_status(self) -> StatusCode {
        match self {
            Self::MissingHeader
            | Self::MalformedHeader
            | Self::ConditionFailed
            | Self::BodyError
            | Self::MalformedPayload => StatusCode::BAD_REQUEST,
            Self::InvalidSignature
            | Self::NoSecret
            | Self::TimestampTooOld
            | Self::TimestampInFuture => StatusCode::UNAUTHORIZED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::InFlight => StatusCode::CONFLICT,
            Self::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidPayload => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MissingVerifier => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether this is a verification failure, i.e. one that a scheme's
    /// [`uniform_rejection_status`](crate::Scheme::uniform_rejection_status) overrides.
    #[must_use]
    pub fn is_verification_failure(self) -> bool {
        matches!(
            self,
            Self::MissingHeader
                | Self::MalformedHeader
                | Self::InvalidSignature
                | Self::NoSecret
                | Self::TimestampTooOld
                | Self::TimestampInFuture
                | Self::RateLimited
                | Self::ConditionFailed
        )
    }

    fn retry_after(self) -> Option<u64> {
        match self {
            Self::InFlight | Self::ReplayStoreUnavailable => Some(IN_FLIGHT_RETRY_AFTER),
            _ => None,
        }
    }
}

impl From<VerifyErrorKind> for RejectionKind {
    fn from(kind: VerifyErrorKind) -> Self {
        match kind {
            VerifyErrorKind::MissingHeader => Self::MissingHeader,
            VerifyErrorKind::MalformedHeader => Self::MalformedHeader,
            VerifyErrorKind::InvalidSignature => Self::InvalidSignature,
            VerifyErrorKind::NoSecret => Self::NoSecret,
            VerifyErrorKind::TimestampTooOld => Self::TimestampTooOld,
            VerifyErrorKind::TimestampInFuture => Self::TimestampInFuture,
            VerifyErrorKind::RateLimited => Self::RateLimited,
            VerifyErrorKind::ConditionFailed => Self::ConditionFailed,
        }
    }
}

impl Rejection {
    /// A rejection of `kind` with its default status and a short public detail.
    ///
    /// The detail must not contain a secret or an expected signature.
    pub fn new(kind: RejectionKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            status: kind.default_status(),
            detail: detail.into(),
        }
    }

    /// Maps a scheme's verification error, applying the scheme's uniform status if any.
    pub(crate) fn from_verify(error: VerifyError, uniform: Option<StatusCode>) -> Self {
        let kind = RejectionKind::from(error.kind());
        let detail = match error.detail() {
            "" => Cow::Borrowed(kind.title()),
            detail => Cow::Owned(detail.to_owned()),
        };
        Self::new(kind, detail).with_uniform_status(uniform)
    }

    /// Replaces the status of a verification failure by `uniform` (Valohai-compatible mode).
    /// Other kinds (body too large, in flight, ...) keep theirs.
    pub(crate) fn with_uniform_status(mut self, uniform: Option<StatusCode>) -> Self {
        if let Some(status) = uniform {
            if self.kind.is_verification_failure() {
                self.status = status;
            }
        }
        self
    }

    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            RejectionKind::BodyTooLarge,
            format!("the request body is larger than the {limit} byte limit"),
        )
    }

    pub(crate) fn body_error() -> Self {
        Self::new(
            RejectionKind::BodyError,
            "the request body could not be read",
        )
    }

    pub(crate) fn body_timeout(deadline: std::time::Duration) -> Self {
        Self::new(
            RejectionKind::BodyTimeout,
            format!(
                "the request body was not received within {} ms",
                deadline.as_millis()
            ),
        )
    }

    pub(crate) fn in_flight() -> Self {
        Self::new(
            RejectionKind::InFlight,
            "a delivery with this id is being processed; retry later",
        )
    }

    pub(crate) fn replay_store_unavailable() -> Self {
        Self::new(
            RejectionKind::ReplayStoreUnavailable,
            "the replay store did not answer; retry later",
        )
    }

    pub(crate) fn missing_verifier() -> Self {
        Self::new(
            RejectionKind::MissingVerifier,
            "no verification result: is `WebhookSignatureLayer` enabled, or a \
             `WebhookVerifier` in the router state?",
        )
    }

    /// The reason class.
    #[must_use]
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status of the default response.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The short public detail for this occurrence.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The `application/problem+json` document of the default response.
    pub fn problem(&self) -> Problem {
        let problem = Problem::new(self.status, self.kind.slug(), self.kind.title())
            .with_detail(self.detail.clone());
        match self.kind.retry_after() {
            Some(seconds) => problem.with_retry_after(seconds),
            None => problem,
        }
    }

    /// Emits the `debug` event every rejection produces (target `tower_webhooks::inbound`).
    pub(crate) fn trace(&self) {
        tracing::debug!(
            target: "tower_webhooks::inbound",
            kind = ?self.kind,
            status = self.status.as_u16(),
            detail = %self.detail,
            "webhook rejected"
        );
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

impl std::error::Error for Rejection {}

/// The default rendering: `application/problem+json` with the rejection in the response
/// extensions.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.trace();
        let mut response = self.problem().into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Renders a [`Rejection`] as a response: what
/// [`WebhookSignatureLayer::with_rejection_response`](super::WebhookSignatureLayer::with_rejection_response)
/// takes.
///
/// Implemented for [`DefaultRejectionResponse`] and for closures
/// `Fn(&Rejection) -> impl IntoResponse` (annotate the argument type: `|rejection: &Rejection|`).
/// Whatever the rendering, the layer inserts a clone of the [`Rejection`] into the response
/// extensions and emits a `debug` event.
pub trait RejectionResponse: Clone + Send + Sync + 'static {
    /// The response for `rejection`.
    fn response(&self, rejection: &Rejection) -> Response;
}

/// The default [`RejectionResponse`]: the `application/problem+json` document of
/// [`Rejection::problem`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRejectionResponse;

impl RejectionResponse for DefaultRejectionResponse {
    fn response(&self, rejection: &Rejection) -> Response {
        rejection.problem().into_response()
    }
}

impl<F, R> RejectionResponse for F
where
    F: Fn(&Rejection) -> R + Clone + Send + Sync + 'static,
    R: IntoResponse,
{
    fn response(&self, rejection: &Rejection) -> Response {
        self(rejection).into_response()
    }
}

/// Renders `rejection` with `renderer`, attaches it to the extensions and traces it.
pub(crate) fn render<R: RejectionResponse>(renderer: &R, rejection: Rejection) -> Response {
    rejection.trace();
    let mut response = renderer.response(&rejection);
    response.extensions_mut().insert(rejection);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_status_only_for_verification_failures() {
        let uniform = Some(StatusCode::BAD_REQUEST);
        let bad =
            Rejection::from_verify(VerifyError::new(VerifyErrorKind::RateLimited, "x"), uniform);
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(bad.kind(), RejectionKind::RateLimited);
        let big = Rejection::body_too_large(10).with_uniform_status(uniform);
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let plain =
            Rejection::from_verify(VerifyError::new(VerifyErrorKind::RateLimited, "x"), None);
        assert_eq!(plain.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn slugs_are_distinct() {
        let kinds = [
            RejectionKind::MissingHeader,
            RejectionKind::MalformedHeader,
            RejectionKind::InvalidSignature,
            RejectionKind::NoSecret,
            RejectionKind::TimestampTooOld,
            RejectionKind::TimestampInFuture,
            RejectionKind::RateLimited,
            RejectionKind::ConditionFailed,
            RejectionKind::BodyTooLarge,
            RejectionKind::BodyError,
            RejectionKind::BodyTimeout,
            RejectionKind::InFlight,
            RejectionKind::ReplayStoreUnavailable,
            RejectionKind::MalformedPayload,
            RejectionKind::InvalidPayload,
            RejectionKind::MissingVerifier,
        ];
        let slugs: std::collections::HashSet<_> = kinds.iter().map(|k| k.slug()).collect();
        assert_eq!(slugs.len(), kinds.len());
    }
}
