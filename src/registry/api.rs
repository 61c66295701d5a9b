//! The management API: the request and response bodies, the handlers, the router and the
//! OpenAPI document. See the [registry docs](super#routes) for the route table.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::event::rfc3339;
use super::model::{Owner, RateLimit, SigningScheme, Webhook};
use super::operations::{self, OperationError};
use super::{SubscriptionError, WebhookRegistry};
use crate::delivery::EnqueueError;
use crate::problem::Problem;
use crate::sensitive::{is_sensitive_header, REDACTED};
mod event_types;
mod openapi;
use openapi::MountPoint;

pub use event_types::{EventTypeList, EventTypeView};

use crate::delivery::{Attempt, Conversation, DeliveryState};
use crate::store::StoreError;

/// The path every route lives under.
pub const BASE_PATH: &str = "/v1/webhooks";

const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;
const MAX_OFFSET: usize = 10_000;
const MAX_HEADERS: usize = 20;

// ---------------------------------------------------------------------------------------------
// Bodies.

/// `POST /v1/webhooks`: a new webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// The caller-chosen id, unique per owner: letters, digits, `_` and `-`, 1 to 64.
    #[schema(example = "my-webhook")]
    pub id: String,
    /// The absolute `http`/`https` URL events are POSTed to; internal addresses are refused.
    #[schema(example = "https://example.com/webhookhandler")]
    pub endpoint_url: String,
    /// The declared event types to receive (at least one).
    #[schema(example = json!(["run.status"]))]
    pub event_types: Vec<String>,
    /// A free description (at most 1024 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// The signature format, `nextmv` by default.
    #[serde(default)]
    #[schema(value_type = Option<SigningScheme>)]
    pub scheme: Option<String>,
    /// An optional delivery rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// `PUT /v1/webhooks/{id}`: every field replaced (omitted optional fields take their
/// defaults). Changing between a Standard Webhooks scheme and another generates a new secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// When present, it must equal the id in the path (ids cannot change).
    #[serde(default)]
    pub id: Option<String>,
    /// The endpoint.
    pub endpoint_url: String,
    /// The event types.
    pub event_types: Vec<String>,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// The signature format, `nextmv` by default.
    #[serde(default)]
    #[schema(value_type = Option<SigningScheme>)]
    pub scheme: Option<String>,
    /// The rate limit (none when omitted).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// The id.
    pub id: String,
    /// The endpoint.
    pub endpoint_url: String,
    /// The event types.
    pub event_types: Vec<String>,
    /// The description.
    pub description: String,
    /// The signature format.
    pub scheme: SigningScheme,
    /// Whether events are delivered.
    pub enabled: bool,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// Custom headers: the names, with every value shown as `[redacted]` (values are write-only).
    pub headers: BTreeMap<String, String>,
    /// The rate limit.
    pub rate_limit: Option<RateLimit>,
    /// When the previous secret stops signing, during a rotation (RFC 3339).
    pub rotation_ends_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl WebhookView {
    pub(crate) fn new(webhook: &Webhook, now: SystemTime) -> Self {
        Self {
            id: webhook.id.clone(),
            endpoint_url: webhook.endpoint_url.clone(),
            event_types: webhook.event_types.clone(),
            description: webhook.description.clone(),
            scheme: webhook.scheme,
            enabled: webhook.enabled,
            disabled_reason: webhook.disabled_reason.clone(),
            headers: webhook
                .headers
                .iter()
                .map(|(name, _)| (name.clone(), REDACTED.to_owned()))
                .collect(),
            rate_limit: webhook.rate_limit,
            rotation_ends_at: webhook
                .secrets
                .iter()
                .skip(1)
                .filter(|s| s.is_active(now))
                .filter_map(|s| s.expires_at)
                .max()
                .map(rfc3339::format),
            created_at: rfc3339::format(webhook.created_at),
            updated_at: rfc3339::format(webhook.updated_at),
        }
    }
}

/// A page of webhooks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// The webhooks, ordered by id.
    pub data: Vec<WebhookView>,
    /// An opaque cursor: pass it as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /v1/webhooks/{id}/secret`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    /// The current signing secret: the HMAC key, used as UTF-8 text.
    pub secret: String,
    /// The signature format.
    pub scheme: SigningScheme,
    /// Rotated-out secrets that still sign during their grace period.
    pub previous: Vec<PreviousSecret>,
}

/// A rotated-out secret that still signs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PreviousSecret {
    /// The secret.
    pub secret: String,
    /// When it stops signing (RFC 3339).
    pub expires_at: String,
}

impl SecretView {
    pub(crate) fn new(webhook: &Webhook, now: SystemTime) -> Self {
        let text = |s: &crate::Secret| String::from_utf8_lossy(s.expose()).into_owned();
        let mut active = webhook.secrets.iter().filter(|s| s.is_active(now));
        let current = active.next();
        Self {
            secret: current.map(|s| text(&s.secret)).unwrap_or_default(),
            scheme: webhook.scheme,
            previous: active
                .map(|s| PreviousSecret {
                    secret: text(&s.secret),
                    expires_at: s.expires_at.map(rfc3339::format).unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// `POST /v1/webhooks/{id}/secret/rotate` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing, in seconds (the registry's default, 24 h,
    /// when omitted; `0` ends it at once; at most 30 days).
    #[serde(default)]
    pub grace_period_seconds: Option<u64>,
}

/// `PUT /v1/webhooks/{id}/headers`: the whole set of custom headers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetHeaders {
    /// Header name to value (at most 20). Hop-by-hop headers, `Host`, `Content-Length`,
    /// `Content-Type`, `User-Agent`, `X-Request-Id` and signature headers are refused.
    pub headers: BTreeMap<String, String>,
}

/// `POST /v1/webhooks/{id}/trigger` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The event type of the test event (by default the webhook's first one).
    #[serde(default)]
    pub event_type: Option<String>,
}

/// A delivery was queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Queued {
    /// The delivery: see `/conversations/{delivery_id}`.
    pub delivery_id: String,
    /// The event, for a trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When its first attempt is due (RFC 3339), when the webhook's rate limit delayed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

/// `POST /v1/webhooks/{id}/recover`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// Re-send every failed delivery created at or after this time (RFC 3339).
    #[schema(example = "2026-01-02T03:04:05Z")]
    pub since: String,
}

/// What a recovery queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries were queued again (one manual attempt each).
    pub queued: usize,
}

/// One delivery and its attempts: the request sent and the endpoint's answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    /// The delivery id (`X-Request-Id`).
    pub delivery_id: String,
    /// The event type.
    pub event_type: Option<String>,
    /// `pending`, `in_flight`, `delivered`, `failed` or `refused`.
    pub state: String,
    /// The endpoint it was sent to.
    pub endpoint_url: String,
    /// The body sent.
    pub request_body: String,
    /// Why it failed, for a final failure.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// When the next attempt is due, while pending (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first.
    pub number: u32,
    /// RFC 3339.
    pub started_at: String,
    /// Milliseconds until the answer or the failure.
    pub latency_ms: f64,
    /// The request headers (signatures and secrets redacted).
    pub request_headers: Vec<(String, String)>,
    /// The body size in bytes.
    pub body_size: usize,
    /// The lowercase hex SHA-256 of the body.
    pub body_sha256: String,
    /// The answer, when there was one.
    pub response: Option<ResponseView>,
    /// What happened (`HTTP 200`, `timeout`, `connect error: …`).
    pub outcome: String,
    /// Whether a user asked for it (a re-send).
    pub manual: bool,
}

/// The endpoint's answer to an attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseView {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body, truncated.
    pub body: String,
    /// Whether it was truncated.
    pub body_truncated: bool,
}

/// A page of conversations.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationList {
    /// Newest first.
    pub data: Vec<ConversationView>,
    /// An opaque cursor: pass it as `cursor` for the next page (keyset pagination: stable
    /// while new deliveries arrive, no depth limit); `null` on the last one.
    pub next_cursor: Option<String>,
    /// The older offset pagination: pass it as `offset` for the next page; `null` on the last
    /// one, when paging by `cursor`, or beyond the offset limit (10000).
    pub next_offset: Option<usize>,
}

/// An `application/problem+json` error (RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProblemDocument {
    /// A stable URI: `tag:tower-webhooks,2026:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The summary for the type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence.
    pub detail: Option<String>,
}

impl ConversationView {
    pub(crate) fn new(conversation: Conversation) -> Self {
        let Conversation {
            delivery, attempts, ..
        } = conversation;
        Self {
            event_type: match &delivery.source {
                crate::delivery::Source::Event(t) => Some(t.clone()),
                _ => None,
            },
            state: delivery.state.as_str().to_owned(),
            endpoint_url: delivery.endpoint.clone(),
            request_body: String::from_utf8_lossy(&delivery.body).into_owned(),
            last_error: delivery.last_error.clone(),
            created_at: rfc3339::format(delivery.created_at),
            updated_at: rfc3339::format(delivery.updated_at),
            next_attempt_at: (delivery.state == DeliveryState::Pending)
                .then(|| rfc3339::format(delivery.next_attempt_at)),
            attempts: attempts
                .into_iter()
                .map(|attempt| AttemptView::new(attempt, &delivery.headers))
                .collect(),
            delivery_id: delivery.id,
        }
    }
}

impl AttemptView {
    /// `custom` are the delivery's custom headers: write-only, so redacted here as in `GET`
    /// (attempts recorded before that rule are redacted on the way out too).
    fn new(attempt: Attempt, custom: &HeaderMap) -> Self {
        let redact = |headers: Vec<(String, String)>, write_only: &HeaderMap| {
            headers
                .into_iter()
                .map(|(name, value)| {
                    let secret = is_sensitive_header(&name)
                        || write_only
                            .keys()
                            .any(|c| c.as_str().eq_ignore_ascii_case(&name));
                    (name, if secret { REDACTED.to_owned() } else { value })
                })
                .collect()
        };
        Self {
            number: attempt.number,
            started_at: rfc3339::format(attempt.started_at),
            latency_ms: attempt.latency.as_secs_f64() * 1000.0,
            request_headers: redact(attempt.request_headers, custom),
            body_size: attempt.body_size,
            body_sha256: attempt.body_sha256,
            response: attempt.response.map(|r| ResponseView {
                status: r.status,
                headers: redact(r.headers, &HeaderMap::new()),
                body: String::from_utf8_lossy(&r.body).into_owned(),
                body_truncated: r.body_truncated,
            }),
            outcome: attempt.outcome.to_string(),
            manual: attempt.manual,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A management API error: a [`Problem`] (plus `WWW-Authenticate` on `401`).
#[derive(Debug)]
pub(crate) struct ApiError(Problem);

type ApiResult<T> = Result<T, ApiError>;

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
    fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self(Problem::new(status, slug, title))
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0 = self.0.with_detail(detail.into());
        self
    }

    fn bad_request(slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, title).detail(detail)
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid credentials",
        )
        .detail("send `Authorization: Bearer <API key>`")
    }

    fn webhook_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "webhook-not-found",
            "No such webhook",
        )
        .detail(format!("no webhook `{}`", printable(id)))
    }

    fn delivery_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "delivery-not-found",
            "No such delivery for this webhook",
        )
        .detail(format!("no delivery `{}`", printable(id)))
    }

    fn pagination(detail: impl Into<String>) -> Self {
        Self::bad_request("invalid-pagination", "Invalid pagination", detail)
    }

    fn subscriptions(err: SubscriptionError) -> Self {
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

    fn store(err: StoreError, delivery_id: &str) -> Self {
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

    fn enqueue(err: EnqueueError) -> Self {
        Self(Problem::from(err))
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.0 = self.0.with_retry_after(seconds);
        self
    }
}

/// `text` safe to echo in a detail: at most 64 printable ASCII characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Extractors.

/// The authenticated owner.
struct Authed(Owner);

impl FromRequestParts<WebhookRegistry> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        registry: &WebhookRegistry,
    ) -> Result<Self, Self::Rejection> {
        registry
            .authenticate(parts)
            .await
            .map(Authed)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// Path parameters with a problem+json rejection.
struct ApiPath<T>(T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|err: PathRejection| {
                ApiError::bad_request("invalid-path", "Invalid path parameter", err.body_text())
            })
    }
}

/// A JSON body with problem+json rejections. An empty body reads as `null` (so optional
/// bodies are `Option<T>`).
struct ApiJson<T>(T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            if !is_json(content_type) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Expected a JSON body",
                )
                .detail("send `Content-Type: application/json`"));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|err: BytesRejection| {
                if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload-too-large",
                        "The request body is too large",
                    )
                } else {
                    ApiError::bad_request(
                        "invalid-body",
                        "Unreadable request body",
                        err.body_text(),
                    )
                }
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(Self).map_err(|err| {
            if err.is_syntax() || err.is_eof() {
                ApiError::bad_request("invalid-json", "Malformed JSON", err.to_string())
            } else if text == b"null" {
                ApiError::bad_request(
                    "invalid-request",
                    "Invalid request body",
                    "a JSON body is required",
                )
            } else {
                ApiError::bad_request("invalid-request", "Invalid request body", err.to_string())
            }
        })
    }
}

fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

// ---------------------------------------------------------------------------------------------
// Validation.

fn validate_id(id: &str) -> ApiResult<()> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid-id",
            "Invalid webhook id",
            "an id is 1 to 64 letters, digits, `_` or `-`",
        ))
    }
}

/// The validated fields shared by create and update.
struct Fields {
    endpoint_url: String,
    event_types: Vec<String>,
    description: String,
    scheme: SigningScheme,
    rate_limit: Option<RateLimit>,
}

impl WebhookRegistry {
    async fn validate_fields(
        &self,
        endpoint_url: String,
        event_types: Vec<String>,
        description: Option<String>,
        scheme: Option<String>,
        rate_limit: Option<RateLimit>,
    ) -> ApiResult<Fields> {
        let endpoint_url = self.validate_endpoint(endpoint_url).await?;
        if event_types.is_empty() || event_types.len() > 32 {
            return Err(ApiError::bad_request(
                "invalid-event-types",
                "Invalid event types",
                "give 1 to 32 event types",
            ));
        }
        let mut types: Vec<String> = Vec::with_capacity(event_types.len());
        for name in event_types {
            if self.event_type(&name).is_none() {
                let known: Vec<&str> = self.event_types().map(|e| &*e.name).collect();
                return Err(ApiError::bad_request(
                    "unknown-event-type",
                    "Unknown event type",
                    format!(
                        "`{}` is not an event type; known: {}",
                        printable(&name),
                        known.join(", ")
                    ),
                ));
            }
            if !types.contains(&name) {
                types.push(name);
            }
        }
        let description = description.unwrap_or_default();
        if description.chars().count() > 1024 {
            return Err(ApiError::bad_request(
                "invalid-description",
                "Invalid description",
                "at most 1024 characters",
            ));
        }
        let scheme = match scheme {
            None => SigningScheme::default(),
            Some(name) => SigningScheme::from_name(&name).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid-scheme",
                    "Unknown or unsupported signature scheme",
                    format!(
                        "`{}` cannot sign; use one of: {}",
                        printable(&name),
                        SigningScheme::ALL.map(SigningScheme::as_str).join(", ")
                    ),
                )
            })?,
        };
        let rate_limit = match rate_limit {
            Some(limit)
                if limit.per_second == 0 || limit.per_second > 10_000 || limit.burst > 10_000 =>
            {
                return Err(ApiError::bad_request(
                    "invalid-rate-limit",
                    "Invalid rate limit",
                    "`per_second` is 1 to 10000, `burst` at most 10000",
                ))
            }
            other => other.map(RateLimit::normalised),
        };
        Ok(Fields {
            endpoint_url,
            event_types: types,
            description,
            scheme,
            rate_limit,
        })
    }

    /// The URL's syntax and the SSRF guard: the scheme, a literal address, and what the host
    /// name resolves to now (the guard checks again at every delivery).
    async fn validate_endpoint(&self, url: String) -> ApiResult<String> {
        let invalid = |detail: String| {
            ApiError::bad_request("invalid-endpoint-url", "Invalid endpoint URL", detail)
        };
        if url.len() > 2048 {
            return Err(invalid("at most 2048 characters".into()));
        }
        let guard = self.engine().guard();
        let uri = guard.check_url(&url).map_err(|refusal| {
            use crate::delivery::RefusalKind;
            match refusal.kind() {
                RefusalKind::InvalidUrl | RefusalKind::Scheme => {
                    invalid(refusal.detail().to_owned())
                }
                _ => refused(refusal.detail()),
            }
        })?;
        if uri.path_and_query().is_none() || uri.scheme().is_none() {
            return Err(invalid("an absolute URL is required".into()));
        }
        if let Some(host) = uri.host() {
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
            let resolved =
                tokio::time::timeout(Duration::from_secs(3), guard.resolve(host, port)).await;
            if let Ok(Err(err)) = resolved {
                if let Some(refusal) = crate::delivery::Refusal::find(&*err) {
                    return Err(refused(refusal.detail()));
                }
                // A name that does not resolve yet is accepted: the guard checks every delivery.
            }
        }
        Ok(url)
    }
}

fn refused(detail: &str) -> ApiError {
    ApiError::bad_request(
        "endpoint-not-allowed",
        "The endpoint URL points to an address that is not allowed",
        detail.to_owned(),
    )
}

/// Headers the engine sets or that would break the request or forge a signature.
fn refused_header(name: &str) -> bool {
    const REFUSED: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "user-agent",
        "x-request-id",
        "expect",
        // Signature formats' other headers.
        "webhook-id",
        "webhook-timestamp",
        "svix-id",
        "svix-timestamp",
        "x-slack-request-timestamp",
        "x-cerebrium-webhook-id",
    ];
    let name = name.to_ascii_lowercase();
    REFUSED.contains(&name.as_str())
        || crate::scheme::SIGNATURE_HEADERS.contains(&name.as_str())
        || name.ends_with("-signature")
}

/// Header names whose values are shown redacted.
fn validate_headers(headers: BTreeMap<String, String>) -> ApiResult<Vec<(String, String)>> {
    let invalid =
        |detail: String| ApiError::bad_request("invalid-header", "Header refused", detail);
    if headers.len() > MAX_HEADERS {
        return Err(invalid(format!("at most {MAX_HEADERS} headers")));
    }
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{}` is not a valid header name", printable(&name))))?;
        if refused_header(parsed.as_str()) {
            return Err(invalid(format!(
                "`{}` is set by the delivery itself (hop-by-hop, framing, or signature)",
                parsed.as_str()
            )));
        }
        if value.len() > 1024 || HeaderValue::from_str(&value).is_err() {
            return Err(invalid(format!(
                "the value of `{}` is not a valid header value (visible ASCII, at most 1024 bytes)",
                parsed.as_str()
            )));
        }
        out.push((parsed.as_str().to_owned(), value));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
    offset: Option<String>,
    state: Option<String>,
}

fn parse_query(raw: Option<String>) -> ApiResult<PageQuery> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|err| ApiError::pagination(format!("unreadable query string: {err}")))
}

fn parse_limit(limit: Option<&str>) -> ApiResult<usize> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::pagination(format!(
                "`limit` is a whole number from 1 to {MAX_PAGE}"
            ))),
        },
    }
}

/// Opaque page cursors: `v1.` and the URL-safe base64 of the position, `w<id>` for a
/// webhook (the list is ordered by id) and `c<created_at ms>:<delivery id>` for a
/// conversation. The `.` keeps them apart from webhook ids, which older clients passed as
/// `cursor` and which are still accepted.
pub(crate) mod cursor {
    use std::time::SystemTime;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use crate::delivery::ConversationPosition;
    use crate::time::{from_unix_millis, unix_millis};

    const PREFIX: &str = "v1.";

    fn encode(position: &str) -> String {
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(position))
    }

    /// The position inside `cursor`, when it is one of ours.
    fn decode(cursor: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor.strip_prefix(PREFIX)?).ok()?;
        String::from_utf8(bytes).ok()
    }

    /// Whether `cursor` looks like an opaque cursor (rather than a plain webhook id).
    pub(crate) fn is_opaque(cursor: &str) -> bool {
        cursor.starts_with(PREFIX)
    }

    /// The cursor after webhook `id`.
    pub(crate) fn webhook(id: &str) -> String {
        encode(&format!("w{id}"))
    }

    /// The webhook id inside a cursor made by [`webhook`].
    pub(crate) fn parse_webhook(cursor: &str) -> Option<String> {
        decode(cursor)?.strip_prefix('w').map(str::to_owned)
    }

    /// The cursor after delivery `id`, created at `created_at`.
    pub(crate) fn conversation(id: &str, created_at: SystemTime) -> String {
        encode(&format!("c{}:{id}", unix_millis(created_at)))
    }

    /// The position inside a cursor made by [`conversation`].
    pub(crate) fn parse_conversation(cursor: &str) -> Option<ConversationPosition> {
        let position = decode(cursor)?;
        let (ms, id) = position.strip_prefix('c')?.split_once(':')?;
        let ms: i64 = ms.parse().ok().filter(|ms| *ms >= 0)?;
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return None;
        }
        Some(ConversationPosition::new(id, from_unix_millis(ms)))
    }
}

fn bad_cursor() -> ApiError {
    ApiError::pagination("`cursor` is not a `next_cursor` of this list")
}

// ---------------------------------------------------------------------------------------------
// Handlers.

async fn load(registry: &WebhookRegistry, owner: &Owner, id: &str) -> ApiResult<Webhook> {
    Ok(operations::load(registry, owner, id).await?)
}

/// Applies `change` to the webhook, or 404.
async fn modify<'a>(
    registry: &'a WebhookRegistry,
    owner: &'a Owner,
    id: &'a str,
    change: super::Modification<'a>,
) -> ApiResult<Webhook> {
    registry
        .subscriptions()
        .modify(owner, id, change)
        .await
        .map_err(ApiError::subscriptions)?
        .ok_or_else(|| ApiError::webhook_not_found(id))
}

fn ok_json<T: Serialize>(value: T) -> Response {
    Json(value).into_response()
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks", operation_id = "create_webhook",
    summary = "Create a webhook.",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created", body = WebhookView),
        (status = 400, description = "Invalid body, id, URL, event type or scheme", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "The owner has its maximum number of webhooks", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn create_webhook(
    State(registry): State<WebhookRegistry>,
    mount: MountPoint,
    Authed(owner): Authed,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<Response> {
    validate_id(&body.id)?;
    let fields = registry
        .validate_fields(
            body.endpoint_url,
            body.event_types,
            body.description,
            body.scheme,
            body.rate_limit,
        )
        .await?;
    let max = registry.max_webhooks();
    let existing = registry
        .subscriptions()
        .list(&owner, None, max)
        .await
        .map_err(ApiError::subscriptions)?;
    if existing.len() >= max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook-limit-reached",
            "Too many webhooks",
        )
        .detail(format!(
            "an owner may have at most {max} webhooks; delete one first"
        )));
    }
    let now = registry.now();
    let mut webhook = Webhook::new(
        owner,
        body.id,
        fields.endpoint_url,
        fields.event_types,
        fields.scheme,
        now,
    );
    webhook.description = fields.description;
    webhook.rate_limit = fields.rate_limit;
    registry
        .subscriptions()
        .insert(webhook.clone())
        .await
        .map_err(ApiError::subscriptions)?;
    // The id is validated (URL-safe characters only), so the link is always a valid value.
    let location = HeaderValue::from_str(&format!("{}{BASE_PATH}/{}", mount.concrete, webhook.id))
        .unwrap_or_else(|_| HeaderValue::from_static(BASE_PATH));
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(WebhookView::new(&webhook, now)),
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    summary = "Get a list of webhooks.",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (20)"),
        ("cursor" = Option<String>, Query, description = "The opaque `next_cursor` of the previous page (a webhook id is accepted too)"),
    ),
    responses(
        (status = 200, description = "A page of webhooks", body = WebhookList),
        (status = 400, description = "Invalid pagination", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn list_webhooks(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = parse_query(query)?;
    let limit = parse_limit(query.limit.as_deref())?;
    if query.offset.is_some() {
        return Err(ApiError::pagination(
            "the webhook list pages by `cursor`, not `offset`",
        ));
    }
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) if cursor::is_opaque(cursor) => {
            let id = cursor::parse_webhook(cursor).ok_or_else(bad_cursor)?;
            validate_id(&id).map_err(|_| bad_cursor())?;
            Some(id)
        }
        // Older clients pass the last webhook id of the previous page.
        Some(id) => {
            validate_id(id).map_err(|_| bad_cursor())?;
            Some(id.to_owned())
        }
    };
    let mut page = registry
        .subscriptions()
        .list(&owner, after.as_deref(), limit + 1)
        .await
        .map_err(ApiError::subscriptions)?;
    let more = page.len() > limit;
    page.truncate(limit);
    let now = registry.now();
    Ok(ok_json(WebhookList {
        next_cursor: more
            .then(|| page.last().map(|w| cursor::webhook(&w.id)))
            .flatten(),
        data: page.iter().map(|w| WebhookView::new(w, now)).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "get_webhook",
    summary = "Get a single webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn get_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    Ok(ok_json(WebhookView::new(&webhook, registry.now())))
}

#[utoipa::path(
    put, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "update_webhook",
    summary = "Update all fields of a webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "Invalid body, URL, event type or scheme", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn update_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Response> {
    if body.id.as_deref().is_some_and(|body_id| body_id != id) {
        return Err(ApiError::bad_request(
            "id-mismatch",
            "The id cannot change",
            "the body's `id` differs from the path's",
        ));
    }
    // 404 before validating the body's contents.
    load(&registry, &owner, &id).await?;
    let fields = registry
        .validate_fields(
            body.endpoint_url,
            body.event_types,
            body.description,
            body.scheme,
            body.rate_limit,
        )
        .await?;
    let now = registry.now();
    let webhook = modify(
        &registry,
        &owner,
        &id,
        Box::new(move |webhook| {
            if !webhook.scheme.secret_compatible(fields.scheme) {
                webhook.scheme = fields.scheme;
                webhook.rotate_secret(now, Duration::ZERO);
            }
            webhook.scheme = fields.scheme;
            webhook.endpoint_url = fields.endpoint_url;
            webhook.event_types = fields.event_types;
            webhook.description = fields.description;
            webhook.rate_limit = fields.rate_limit;
            webhook.updated_at = now;
        }),
    )
    .await?;
    Ok(ok_json(WebhookView::new(&webhook, now)))
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "delete_webhook",
    summary = "Delete a webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 204, description = "Deleted; its queued deliveries are cancelled (final, not sent)"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn delete_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let deleted = registry
        .delete(&owner, &id)
        .await
        .map_err(ApiError::subscriptions)?;
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::webhook_not_found(&id))
    }
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/secret", tag = "secrets", operation_id = "get_webhook_secret",
    summary = "Get the signing secret of the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The secret (and the previous ones during a rotation)", body = SecretView),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn get_secret(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    Ok(no_store(ok_json(SecretView::new(&webhook, registry.now()))))
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/secret/rotate", tag = "secrets", operation_id = "rotate_webhook_secret",
    summary = "Rotate the signing secret; the previous one keeps signing for a grace period.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body(content = Option<RotateSecret>, description = "Optional"),
    responses(
        (status = 200, description = "The new secret", body = SecretView),
        (status = 400, description = "Invalid body", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn rotate_secret(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<RotateSecret>>,
) -> ApiResult<Response> {
    let grace = body.and_then(|b| b.grace_period_seconds);
    let webhook = operations::rotate_secret(&registry, &owner, &id, grace).await?;
    Ok(no_store(ok_json(SecretView::new(&webhook, registry.now()))))
}

#[utoipa::path(
    put, path = "/v1/webhooks/{id}/headers", tag = "webhooks", operation_id = "set_webhook_headers",
    summary = "Set the custom headers sent with every delivery.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = SetHeaders,
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "A header is refused or invalid", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn set_headers(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SetHeaders>,
) -> ApiResult<Response> {
    let headers = validate_headers(body.headers)?;
    let now = registry.now();
    let webhook = modify(
        &registry,
        &owner,
        &id,
        Box::new(move |webhook| {
            webhook.headers = headers;
            webhook.updated_at = now;
        }),
    )
    .await?;
    Ok(ok_json(WebhookView::new(&webhook, now)))
}

async fn set_enabled(
    registry: &WebhookRegistry,
    owner: &Owner,
    id: &str,
    enabled: bool,
) -> ApiResult<Response> {
    let webhook =
        operations::set_enabled(registry, owner, id, enabled, "disabled through the API").await?;
    Ok(ok_json(WebhookView::new(&webhook, registry.now())))
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/disable", tag = "webhooks", operation_id = "disable_webhook",
    summary = "Stop delivering events to the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The disabled webhook", body = WebhookView),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn disable_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    set_enabled(&registry, &owner, &id, false).await
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/enable", tag = "webhooks", operation_id = "enable_webhook",
    summary = "Deliver events to the webhook again (also after an automatic disable).",
    params(("id" = String, Path, description = "The webhook id")),
    responses(
        (status = 200, description = "The enabled webhook", body = WebhookView),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn enable_webhook(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    set_enabled(&registry, &owner, &id, true).await
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/conversations", tag = "conversations", operation_id = "list_webhook_conversations",
    summary = "Get a list of all webhook conversations (each delivery's request and the endpoint's responses).",
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 1 to 100 (20)"),
        ("cursor" = Option<String>, Query, description = "The opaque `next_cursor` of the previous page (keyset pagination; not with `offset`)"),
        ("offset" = Option<usize>, Query, maximum = 10000, description = "The `next_offset` of the previous page (at most 10000; prefer `cursor`)"),
        ("state" = Option<String>, Query, description = "Only `pending`, `in_flight`, `delivered`, `failed` or `refused` deliveries"),
    ),
    responses(
        (status = 200, description = "A page of conversations, newest first", body = ConversationList),
        (status = 400, description = "Invalid pagination (a bad `cursor`, `offset` or `state`, or both `cursor` and `offset`)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn list_conversations(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = parse_query(query)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let offset = match query.offset.as_deref() {
        None => 0,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n <= MAX_OFFSET => n,
            _ => {
                return Err(ApiError::pagination(format!(
                    "`offset` is a whole number from 0 to {MAX_OFFSET}"
                )))
            }
        },
    };
    let after = match query.cursor.as_deref() {
        None => None,
        Some(_) if query.offset.is_some() => {
            return Err(ApiError::pagination(
                "pass either `cursor` or `offset`, not both",
            ))
        }
        Some(cursor) => Some(cursor::parse_conversation(cursor).ok_or_else(bad_cursor)?),
    };
    let state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(operations::parse_state(text).ok_or_else(|| {
            ApiError::pagination("`state` is one of pending, in_flight, delivered, failed, refused")
        })?),
    };
    let webhook = load(&registry, &owner, &id).await?;
    let keyset = after.is_some();
    let mut page =
        operations::conversation_page(&registry, &webhook, state, after, offset, limit + 1)
            .await
            .map_err(|err| ApiError::store(err, ""))?;
    let more = page.len() > limit;
    page.truncate(limit);
    Ok(ok_json(ConversationList {
        next_cursor: more
            .then(|| {
                page.last()
                    .map(|c| cursor::conversation(&c.delivery.id, c.delivery.created_at))
            })
            .flatten(),
        next_offset: (more && !keyset && offset + limit <= MAX_OFFSET).then_some(offset + limit),
        data: page.into_iter().map(ConversationView::new).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/conversations/{delivery_id}", tag = "conversations", operation_id = "get_webhook_conversation",
    summary = "Get a single conversation.",
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("delivery_id" = String, Path, description = "The delivery id"),
    ),
    responses(
        (status = 200, description = "The conversation", body = ConversationView),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook or delivery", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn get_conversation(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let webhook = load(&registry, &owner, &id).await?;
    let conversation = operations::load_conversation(&registry, &webhook, &delivery_id).await?;
    Ok(ok_json(ConversationView::new(conversation)))
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/trigger", tag = "conversations", operation_id = "trigger_webhook",
    summary = "Send a test event to the webhook.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body(content = Option<Trigger>, description = "Optional"),
    responses(
        (status = 202, description = "The test delivery was queued", body = Queued),
        (status = 400, description = "Unknown event type or invalid body", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "The owner's deliveries fill its share of the queue", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The delivery queue is full", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn trigger(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Option<Trigger>>,
) -> ApiResult<Response> {
    let event_type = body.and_then(|t| t.event_type);
    let (event_id, queued) = operations::trigger(&registry, &owner, &id, event_type).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            delivery_id: queued.delivery_id,
            event_id: Some(event_id),
            not_before: queued.not_before.map(rfc3339::format),
        }),
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/conversations/{delivery_id}/resend", tag = "conversations", operation_id = "resend_webhook_delivery",
    summary = "Re-send one delivery: one manual attempt, same delivery id, signed with the current secret.",
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("delivery_id" = String, Path, description = "The delivery id"),
    ),
    responses(
        (status = 202, description = "Queued", body = Queued),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook or delivery", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is still pending", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The delivery queue is full", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn resend(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    operations::resend(&registry, &owner, &id, &delivery_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            delivery_id,
            event_id: None,
            not_before: None,
        }),
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/v1/webhooks/{id}/recover", tag = "conversations", operation_id = "recover_webhook",
    summary = "Re-send every failed delivery since a time.",
    params(("id" = String, Path, description = "The webhook id")),
    request_body = Recover,
    responses(
        (status = 202, description = "Queued", body = Recovered),
        (status = 400, description = "Invalid body or time", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such webhook", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The delivery queue is full", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn recover(
    State(registry): State<WebhookRegistry>,
    Authed(owner): Authed,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Recover>,
) -> ApiResult<Response> {
    let queued = operations::recover(&registry, &owner, &id, &body.since).await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { queued })).into_response())
}

#[utoipa::path(
    get, path = "/v1/webhooks/openapi.json", tag = "webhooks", operation_id = "webhooks_openapi",
    summary = "This document.",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")),
)]
async fn openapi_json(State(registry): State<WebhookRegistry>, mount: MountPoint) -> Response {
    let body = serde_json::to_vec_pretty(&openapi::document(&registry, &mount.template))
        .unwrap_or_else(|_| b"{}".to_vec());
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Router and document.

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
        create_webhook, list_webhooks, get_webhook, update_webhook, delete_webhook,
        get_secret, rotate_secret, set_headers, disable_webhook, enable_webhook,
        list_conversations, get_conversation, trigger, resend, recover, openapi_json,
        event_types::list_event_types,
    ),
    components(schemas(
        CreateWebhook, UpdateWebhook, WebhookView, WebhookList, SecretView, PreviousSecret,
        RotateSecret, SetHeaders, Trigger, Queued, Recover, Recovered, ConversationView,
        AttemptView, ResponseView, ConversationList, ProblemDocument, SigningScheme, RateLimit,
        super::RunStatus, super::RunState, EventTypeView, EventTypeList,
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
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

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

    /// The OpenAPI document of this registry's management API as served at the root: the
    /// generic [`openapi`] with the application's [`info`](super::RegistryBuilder::api_info)
    /// and each declared event type as a component named `event.<type>`. The served
    /// `openapi.json` also puts every path under the router's mount point.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        serde_json::from_value(openapi::document(self, "")).unwrap_or_else(|_| openapi())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        for name in [
            "Connection",
            "host",
            "Content-Length",
            "Nextmv-Signature",
            "webhook-id",
            "Authorization",
            "X-Foo-Signature",
        ] {
            assert!(refused_header(name), "{name}");
        }
        for name in ["x-tenant", "x-api-key"] {
            assert!(!refused_header(name), "{name}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("my-webhook_1").is_ok());
        for id in ["", "a b", "a/b", "a.b", &"x".repeat(65)] {
            assert!(validate_id(id).is_err(), "{id}");
        }
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)));
        }
        assert!(!is_json(&HeaderValue::from_static(
            "application/x-www-form-urlencoded"
        )));
    }
}
