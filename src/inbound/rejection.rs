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

/// Declares [`RejectionKind`] and everything that depends on the kind alone, from one
/// table: each row is a variant with its default status, problem `type` slug, title, whether
/// it is a verification failure (which a uniform status overrides) and whether it answers
/// with `Retry-After`. The docs tables are tested against this one.
macro_rules! rejection_kinds {
    ($(
        $(#[$doc:meta])*
        $kind:ident {
            status: $status:ident,
            slug: $slug:literal,
            title: $title:literal,
            verification: $verification:literal,
            retry_after: $retry_after:literal $(,)?
        }
    ),* $(,)?) => {
        /// The reason class of a [`Rejection`]. See the [module docs](super) for the status
        /// table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum RejectionKind {
            $( $(#[$doc])* $kind, )*
        }

        impl RejectionKind {
            /// Every kind, in declaration order.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Self] = &[$(Self::$kind),*];

            /// The stable problem `type` slug (`tag:tower-webhooks,2026:<slug>`).
            #[must_use]
            pub fn slug(self) -> &'static str {
                match self { $(Self::$kind => $slug,)* }
            }

            /// The short human title of the problem type.
            #[must_use]
            pub fn title(self) -> &'static str {
                match self { $(Self::$kind => $title,)* }
            }

            /// The status used when the scheme does not impose a uniform one.
            #[must_use]
            pub fn default_status(self) -> StatusCode {
                match self { $(Self::$kind => StatusCode::$status,)* }
            }

            /// Whether this is a verification failure, i.e. one that a scheme's
            /// [`uniform_rejection_status`](crate::Scheme::uniform_rejection_status) overrides.
            #[must_use]
            pub fn is_verification_failure(self) -> bool {
                match self { $(Self::$kind => $verification,)* }
            }

            /// The `Retry-After` seconds the problem carries, if any.
            fn retry_after(self) -> Option<u64> {
                match self { $(Self::$kind => $retry_after.then_some(IN_FLIGHT_RETRY_AFTER),)* }
            }
        }
    };
}

rejection_kinds! {
    /// A required signature, id or timestamp header is absent (`400`).
    MissingHeader {
        status: BAD_REQUEST, slug: "missing-header", title: "Missing webhook header",
        verification: true, retry_after: false,
    },
    /// A header is present but not in the scheme's grammar (`400`).
    MalformedHeader {
        status: BAD_REQUEST, slug: "malformed-header", title: "Malformed webhook header",
        verification: true, retry_after: false,
    },
    /// No signature matched any secret (`401`).
    InvalidSignature {
        status: UNAUTHORIZED, slug: "invalid-signature", title: "Invalid webhook signature",
        verification: true, retry_after: false,
    },
    /// No secret is configured or found for this request (`401`).
    NoSecret {
        status: UNAUTHORIZED, slug: "no-secret", title: "No webhook secret for this request",
        verification: true, retry_after: false,
    },
    /// The signed timestamp is older than the replay window (`401`).
    TimestampTooOld {
        status: UNAUTHORIZED, slug: "stale-timestamp", title: "Webhook timestamp is too old",
        verification: true, retry_after: false,
    },
    /// The signed timestamp is too far in the future (`401`).
    TimestampInFuture {
        status: UNAUTHORIZED, slug: "future-timestamp",
        title: "Webhook timestamp is in the future",
        verification: true, retry_after: false,
    },
    /// A rate-limit condition refused the request (`429`).
    RateLimited {
        status: TOO_MANY_REQUESTS, slug: "rate-limited", title: "Rate limited",
        verification: true, retry_after: false,
    },
    /// A non-signature condition failed (Valohai) (`400`).
    ConditionFailed {
        status: BAD_REQUEST, slug: "condition-failed", title: "Webhook condition failed",
        verification: true, retry_after: false,
    },
    /// The body is larger than the configured limit (`413`, also in uniform-status mode).
    BodyTooLarge {
        status: PAYLOAD_TOO_LARGE, slug: "body-too-large", title: "Payload too large",
        verification: false, retry_after: false,
    },
    /// The body could not be read (`400`).
    BodyError {
        status: BAD_REQUEST, slug: "body-error", title: "Failed to read the request body",
        verification: false, retry_after: false,
    },
    /// The body was not received within the layer's read deadline (`408`).
    BodyTimeout {
        status: REQUEST_TIMEOUT, slug: "body-timeout", title: "Request body not received in time",
        verification: false, retry_after: false,
    },
    /// A delivery with the same signed id is being processed right now (`409` with
    /// `Retry-After`).
    InFlight {
        status: CONFLICT, slug: "replay-in-flight",
        title: "Webhook delivery is already being processed",
        verification: false, retry_after: true,
    },
    /// The replay store could not be reached (`503` with `Retry-After`).
    ReplayStoreUnavailable {
        status: SERVICE_UNAVAILABLE, slug: "replay-store-unavailable",
        title: "Replay protection is unavailable",
        verification: false, retry_after: true,
    },
    /// The body is not syntactically valid JSON (`400`).
    MalformedPayload {
        status: BAD_REQUEST, slug: "malformed-payload", title: "Malformed webhook payload",
        verification: false, retry_after: false,
    },
    /// The body does not match the expected payload type (`422`).
    InvalidPayload {
        status: UNPROCESSABLE_ENTITY, slug: "invalid-payload", title: "Invalid webhook payload",
        verification: false, retry_after: false,
    },
    /// An extractor that needs [`WebhookSignatureLayer`](super::WebhookSignatureLayer) ran
    /// without it and without a verifier in state: a server configuration error (`500`).
    MissingVerifier {
        status: INTERNAL_SERVER_ERROR, slug: "missing-verifier",
        title: "Webhook verification is not configured",
        verification: false, retry_after: false,
    },
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
        let slugs: std::collections::HashSet<_> =
            RejectionKind::ALL.iter().map(|k| k.slug()).collect();
        assert_eq!(slugs.len(), RejectionKind::ALL.len());
    }

    /// The cells of the rows of the first Markdown table after the line `heading`, each line
    /// read after `prefix` (`//!` for module docs).
    fn table_after(text: &str, prefix: &str, heading: &str) -> Vec<Vec<String>> {
        text.lines()
            .map(|line| line.strip_prefix(prefix).unwrap_or(line).trim())
            .skip_while(|line| *line != heading)
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2)
            .map(|line| {
                line.trim_matches('|')
                    .split('|')
                    .map(|cell| cell.trim().to_owned())
                    .collect()
            })
            .collect()
    }

    /// `(status, whether it has Retry-After)` of a status cell such as
    /// ``409 + `Retry-After: 5` ``.
    fn status_cell(cell: &str) -> (u16, bool) {
        let (status, extra) = cell.split_once(" + ").unwrap_or((cell, ""));
        (
            status.trim().parse().unwrap(),
            extra.contains("Retry-After"),
        )
    }

    fn row_of(kind: RejectionKind) -> (u16, bool) {
        (kind.default_status().as_u16(), kind.retry_after().is_some())
    }

    #[test]
    fn the_module_docs_table_lists_every_kind_as_declared() {
        let rows = table_after(include_str!("mod.rs"), "//!", "# Rejections");
        assert_eq!(rows.len(), RejectionKind::ALL.len(), "{rows:?}");
        for &kind in RejectionKind::ALL {
            let name = format!("`{kind:?}`");
            let row = rows.iter().find(|row| row[0] == name).expect(&name);
            assert_eq!(status_cell(&row[1]), row_of(kind), "{name}");
            assert_eq!(row[2], format!("`{}`", kind.slug()), "{name}");
        }
    }

    #[test]
    fn the_readme_errors_table_lists_every_kind_as_declared() {
        let rows = table_after(include_str!("../../README.md"), "", "## Errors");
        // A row may group kinds: `400 / 422` with `` `a` / `b` ``.
        let mut listed = Vec::new();
        for row in &rows {
            let statuses: Vec<_> = row[0].split(" / ").map(status_cell).collect();
            let slugs: Vec<_> = row[1].split(" / ").map(|s| s.trim_matches('`')).collect();
            assert_eq!(statuses.len(), slugs.len(), "{row:?}");
            listed.extend(slugs.into_iter().zip(statuses));
        }
        assert_eq!(listed.len(), RejectionKind::ALL.len(), "{listed:?}");
        for &kind in RejectionKind::ALL {
            let (_, status) = listed
                .iter()
                .find(|(slug, _)| *slug == kind.slug())
                .unwrap_or_else(|| panic!("{kind:?} is not in the README"));
            assert_eq!(*status, row_of(kind), "{kind:?}");
        }
    }
}
