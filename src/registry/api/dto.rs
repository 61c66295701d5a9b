//! The request and response bodies of the management API (its OpenAPI schemas).

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::delivery::{Attempt, AttemptOutcome, Conversation, DeliveryState, RecordedHeaders};
use crate::registry::event::rfc3339;
use crate::registry::model::{Endpoint, EndpointRateLimit, SigningScheme};
use crate::sensitive::{is_sensitive_header, REDACTED};

/// `POST /v1/webhooks`: a new webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateWebhook {
    /// The caller-chosen id, unique per owner: letters, digits, `_` and `-`, 1 to 64.
    #[schema(example = "my-webhook")]
    pub(super) id: String,
    /// The absolute `http`/`https` URL events are POSTed to; internal addresses are refused.
    #[schema(example = "https://example.com/webhookhandler")]
    pub(super) endpoint_url: String,
    /// The declared event types to receive (at least one).
    #[schema(example = json!(["run.status"]))]
    pub(super) event_types: Vec<String>,
    /// A free description (at most 1024 characters).
    #[serde(default)]
    pub(super) description: Option<String>,
    /// The signature format, `nextmv` by default.
    #[serde(default)]
    #[schema(value_type = Option<SigningScheme>)]
    pub(super) scheme: Option<String>,
    /// An optional delivery rate limit.
    #[serde(default)]
    pub(super) rate_limit: Option<EndpointRateLimit>,
}

/// `PUT /v1/webhooks/{id}`: every field replaced (omitted optional fields take their
/// defaults). Changing between a Standard Webhooks scheme and another generates a new secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateWebhook {
    /// When present, it must equal the id in the path (ids cannot change).
    #[serde(default)]
    pub(super) id: Option<String>,
    /// The endpoint.
    pub(super) endpoint_url: String,
    /// The event types.
    pub(super) event_types: Vec<String>,
    /// The description.
    #[serde(default)]
    pub(super) description: Option<String>,
    /// The signature format, `nextmv` by default.
    #[serde(default)]
    #[schema(value_type = Option<SigningScheme>)]
    pub(super) scheme: Option<String>,
    /// The rate limit (none when omitted).
    #[serde(default)]
    pub(super) rate_limit: Option<EndpointRateLimit>,
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct WebhookView {
    /// The id.
    pub(crate) id: String,
    /// The endpoint.
    pub(crate) endpoint_url: String,
    /// The event types.
    pub(crate) event_types: Vec<String>,
    /// The description.
    pub(crate) description: String,
    /// The signature format.
    pub(crate) scheme: SigningScheme,
    /// Whether events are delivered.
    pub(crate) enabled: bool,
    /// Why it is disabled.
    pub(crate) disabled_reason: Option<String>,
    /// Custom headers: the names, with every value shown as `[redacted]` (values are write-only).
    pub(crate) headers: BTreeMap<String, String>,
    /// The rate limit.
    pub(crate) rate_limit: Option<EndpointRateLimit>,
    /// When the previous secret stops signing, during a rotation (RFC 3339).
    pub(crate) rotation_ends_at: Option<String>,
    /// RFC 3339.
    pub(crate) created_at: String,
    /// RFC 3339.
    pub(crate) updated_at: String,
}

impl WebhookView {
    pub(crate) fn new(webhook: &Endpoint, now: SystemTime) -> Self {
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
pub(super) struct WebhookList {
    /// The webhooks, ordered by id.
    pub(crate) data: Vec<WebhookView>,
    /// An opaque cursor: pass it as `cursor` for the next page; `null` on the last one.
    pub(crate) next_cursor: Option<String>,
}

/// `GET /v1/webhooks/{id}/secret`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct SecretView {
    /// The current signing secret: the HMAC key, used as UTF-8 text.
    pub(crate) secret: String,
    /// The signature format.
    pub(crate) scheme: SigningScheme,
    /// Rotated-out secrets that still sign during their grace period.
    pub(crate) previous: Vec<PreviousSecret>,
}

/// A rotated-out secret that still signs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct PreviousSecret {
    /// The secret.
    pub(crate) secret: String,
    /// When it stops signing (RFC 3339).
    pub(crate) expires_at: String,
}

impl SecretView {
    pub(crate) fn new(webhook: &Endpoint, now: SystemTime) -> Self {
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
pub(super) struct RotateSecret {
    /// How long the previous secret keeps signing, in seconds (the registry's default, 24 h,
    /// when omitted; `0` ends it at once; at most 30 days).
    #[serde(default)]
    pub(super) grace_period_seconds: Option<u64>,
}

/// `PUT /v1/webhooks/{id}/headers`: the whole set of custom headers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetHeaders {
    /// Header name to value (at most 20). Hop-by-hop headers, `Host`, `Content-Length`,
    /// `Content-Type`, `User-Agent`, `X-Request-Id` and signature headers are refused.
    pub(super) headers: BTreeMap<String, String>,
}

/// `POST /v1/webhooks/{id}/trigger` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Trigger {
    /// The event type of the test event (by default the webhook's first one).
    #[serde(default)]
    pub(super) event_type: Option<String>,
}

/// A delivery was queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(super) struct Queued {
    /// The delivery: see `/conversations/{delivery_id}`.
    pub(super) delivery_id: String,
    /// The event, for a trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) event_id: Option<String>,
    /// When its first attempt is due (RFC 3339), when the webhook's rate limit delayed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) not_before: Option<String>,
}

/// `POST /v1/webhooks/{id}/recover`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Recover {
    /// Re-send every failed delivery created at or after this time (RFC 3339).
    #[schema(example = "2026-01-02T03:04:05Z")]
    pub(super) since: String,
}

/// What a recovery queued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(super) struct Recovered {
    /// How many failed deliveries were queued again (one manual attempt each).
    pub(super) queued: usize,
}

/// One delivery and its attempts, the request sent and the endpoint's answers: the one JSON
/// shape of a conversation, whatever queued the delivery. The registry's conversation routes
/// answer with it, and an application showing the conversation of a forwarded delivery
/// ([`DeliveryEngine::conversation`](crate::delivery::DeliveryEngine::conversation)) makes it
/// with `ConversationView::from(conversation)`. Times are RFC 3339 (UTC, milliseconds).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConversationView {
    /// The delivery id (`X-Request-Id`).
    pub(crate) delivery_id: String,
    /// The event type; `null` for a delivery that is not a published event (a forwarded
    /// result).
    pub(crate) event_type: Option<String>,
    /// `pending`, `in_flight`, `delivered`, `failed` or `refused`.
    pub(crate) state: String,
    /// The endpoint it was sent to.
    pub(crate) endpoint_url: String,
    /// The body sent.
    pub(crate) request_body: String,
    /// Why it failed, for a final failure.
    pub(crate) last_error: Option<String>,
    /// RFC 3339.
    pub(crate) created_at: String,
    /// RFC 3339.
    pub(crate) updated_at: String,
    /// When the next attempt is due, while pending (RFC 3339).
    pub(crate) next_attempt_at: Option<String>,
    /// Every attempt, oldest first.
    pub(crate) attempts: Vec<AttemptView>,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct AttemptView {
    /// 1 for the first.
    pub(crate) number: u32,
    /// RFC 3339.
    pub(crate) started_at: String,
    /// Milliseconds until the answer or the failure.
    pub(crate) latency_ms: f64,
    /// The request headers (signatures and secrets redacted).
    pub(crate) request_headers: Vec<(String, String)>,
    /// The body size in bytes.
    pub(crate) body_size: usize,
    /// The lowercase hex SHA-256 of the body.
    pub body_sha256: String,
    /// The answer, when there was one.
    pub(crate) response: Option<ResponseView>,
    /// What happened.
    pub(crate) outcome: OutcomeView,
    /// Whether a user asked for it (a re-send).
    pub(crate) manual: bool,
}

/// What happened on one attempt: `{"kind": "status", "status": 200, "detail": "HTTP 200"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub(crate) struct OutcomeView {
    /// The kind of outcome.
    pub(crate) kind: OutcomeKind,
    /// The HTTP status, when the endpoint answered (`kind` is `status`).
    pub(crate) status: Option<u16>,
    /// A human-readable summary (`HTTP 200`, `timeout`, `connect error: …`).
    pub(crate) detail: String,
}

/// The kind of an attempt's [outcome](OutcomeView).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeKind {
    /// The endpoint answered (any status).
    Status,
    /// No (complete) answer within the attempt's timeout.
    Timeout,
    /// The connection could not be made.
    Connect,
    /// The connection broke after it was made.
    Network,
    /// The SSRF guard refused the endpoint; nothing was sent.
    Refused,
    /// The message could not be signed; nothing was sent.
    SignFailed,
}

impl From<&AttemptOutcome> for OutcomeView {
    fn from(outcome: &AttemptOutcome) -> Self {
        let kind = match outcome {
            AttemptOutcome::Status(_) => OutcomeKind::Status,
            AttemptOutcome::Timeout => OutcomeKind::Timeout,
            AttemptOutcome::Connect(_) => OutcomeKind::Connect,
            AttemptOutcome::Network(_) => OutcomeKind::Network,
            AttemptOutcome::Refused(_) => OutcomeKind::Refused,
            AttemptOutcome::SignFailed(_) => OutcomeKind::SignFailed,
        };
        Self {
            kind,
            status: outcome.status(),
            detail: outcome.to_string(),
        }
    }
}

/// The endpoint's answer to an attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ResponseView {
    /// The status code.
    pub(crate) status: u16,
    /// The headers.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, truncated.
    pub(crate) body: String,
    /// Whether it was truncated.
    pub(crate) body_truncated: bool,
}

/// A page of conversations.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(super) struct ConversationList {
    /// Newest first.
    pub(super) data: Vec<ConversationView>,
    /// An opaque cursor: pass it as `cursor` for the next page (keyset pagination: stable
    /// while new deliveries arrive, no depth limit); `null` on the last one.
    pub(super) next_cursor: Option<String>,
    /// The older offset pagination: pass it as `offset` for the next page; `null` on the last
    /// one, when paging by `cursor`, or beyond the offset limit (10000).
    pub(super) next_offset: Option<usize>,
}

/// An `application/problem+json` error (RFC 9457).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(super) struct ProblemDocument {
    /// A stable URI: `tag:tower-webhooks,2026:<slug>`.
    #[serde(rename = "type")]
    pub(super) type_uri: String,
    /// The summary for the type.
    pub(super) title: String,
    /// The HTTP status.
    pub(super) status: u16,
    /// This occurrence.
    pub(super) detail: Option<String>,
}

impl From<Conversation> for ConversationView {
    fn from(conversation: Conversation) -> Self {
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
    pub(super) fn new(attempt: Attempt, custom: &HeaderMap) -> Self {
        let redact = |headers: RecordedHeaders, write_only: &HeaderMap| {
            headers
                .iter()
                .map(|(name, value)| {
                    let secret = is_sensitive_header(name)
                        || write_only
                            .keys()
                            .any(|c| c.as_str().eq_ignore_ascii_case(name));
                    let value = if secret { REDACTED } else { value };
                    (name.to_owned(), value.to_owned())
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
            outcome: OutcomeView::from(&attempt.outcome),
            manual: attempt.manual,
        }
    }
}
