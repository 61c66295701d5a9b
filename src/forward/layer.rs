//! [`WebhookForwardLayer`]: configuration only, cheap to clone.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{BodyMode, ForwardTo, WebhookForward};
use crate::delivery::DeliveryEngine;
use crate::delivery::SchemeSpec;
use crate::scheme::Cerebrium;
use crate::secret::SecretSet;

/// The default capture limit for a forwarded response body (4 MiB).
const DEFAULT_CAPTURE_LIMIT: usize = 4 * 1024 * 1024;
/// The default limit for buffering a JSON request body to look for `webhook_endpoint` (1 MiB).
const DEFAULT_LEGACY_BODY_LIMIT: usize = 1024 * 1024;
/// The longest endpoint URL accepted.
pub(super) const MAX_ENDPOINT_LEN: usize = 2048;

type EndpointFn = Arc<dyn Fn(&http::request::Parts) -> Option<ForwardTo> + Send + Sync>;

pub(crate) struct Config {
    pub(crate) engine: DeliveryEngine,
    pub(crate) scheme: SchemeSpec,
    pub(crate) default_secret: Option<SecretSet>,
    pub(crate) body_mode: BodyMode,
    pub(crate) capture_limit: usize,
    pub(crate) legacy_body_field: bool,
    pub(crate) legacy_body_limit: usize,
    pub(crate) query_param: String,
    pub(crate) endpoint_fn: Option<EndpointFn>,
    pub(crate) check_on_accept: bool,
    pub(crate) dns_timeout: Duration,
}

impl Clone for Config {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            scheme: self.scheme.clone(),
            default_secret: self.default_secret.clone(),
            body_mode: self.body_mode,
            capture_limit: self.capture_limit,
            legacy_body_field: self.legacy_body_field,
            legacy_body_limit: self.legacy_body_limit,
            query_param: self.query_param.clone(),
            endpoint_fn: self.endpoint_fn.clone(),
            check_on_accept: self.check_on_accept,
            dns_timeout: self.dns_timeout,
        }
    }
}

/// Forwards the results of requests that name a webhook endpoint to that endpoint, signed.
///
/// See the [module docs](crate::forward) for the triggers, the modes and an example.
#[derive(Clone)]
#[must_use]
pub struct WebhookForwardLayer {
    config: Arc<Config>,
}

impl fmt::Debug for WebhookForwardLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        f.debug_struct("WebhookForwardLayer")
            .field("engine", &config.engine)
            .field("signer", &config.scheme.name())
            .field(
                "default_secret",
                &config.default_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("body_mode", &config.body_mode)
            .field("capture_limit", &config.capture_limit)
            .field("legacy_body_field", &config.legacy_body_field)
            .field("legacy_body_limit", &config.legacy_body_limit)
            .field("query_param", &config.query_param)
            .field("endpoint_fn", &config.endpoint_fn.as_ref().map(|_| "<fn>"))
            .field("check_on_accept", &config.check_on_accept)
            .finish()
    }
}

impl WebhookForwardLayer {
    /// Forwards through `engine`, signing with [`Cerebrium`] when a secret is given, envelope
    /// bodies; every trigger on but the legacy body field
    /// ([`legacy_body_field`](Self::legacy_body_field)), so no request body is buffered.
    pub fn new(engine: DeliveryEngine) -> Self {
        Self {
            config: Arc::new(Config {
                engine,
                scheme: SchemeSpec::from(Cerebrium::new()),
                default_secret: None,
                body_mode: BodyMode::Envelope,
                capture_limit: DEFAULT_CAPTURE_LIMIT,
                legacy_body_field: false,
                legacy_body_limit: DEFAULT_LEGACY_BODY_LIMIT,
                query_param: "webhookEndpoint".to_owned(),
                endpoint_fn: None,
                check_on_accept: true,
                dns_timeout: Duration::from_secs(2),
            }),
        }
    }

    fn map(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The engine deliveries go through.
    pub fn engine(&self) -> &DeliveryEngine {
        &self.config.engine
    }

    /// Signs with `scheme` instead of [`Cerebrium`]: any built-in scheme, or your own
    /// signer registered with the engine
    /// ([`EngineBuilder::custom_signer`](crate::delivery::EngineBuilder::custom_signer)) and
    /// named by [`SchemeSpec::custom`].
    pub fn with_signer(self, scheme: impl Into<SchemeSpec>) -> Self {
        let scheme = scheme.into();
        self.map(|c| c.scheme = scheme)
    }

    /// Signs every delivery with `secret` when the request brings no `X-Webhook-Secret`.
    pub fn default_secret(self, secret: impl Into<SecretSet>) -> Self {
        let secret = secret.into();
        self.map(|c| c.default_secret = (!secret.is_empty()).then_some(secret))
    }

    /// The delivered body: [`BodyMode::Envelope`] (default) or [`BodyMode::Raw`].
    pub fn body_mode(self, mode: BodyMode) -> Self {
        self.map(|c| c.body_mode = mode)
    }

    /// Delivers the inner response body unchanged ([`BodyMode::Raw`]).
    pub fn raw_body(self) -> Self {
        self.body_mode(BodyMode::Raw)
    }

    /// The most response-body bytes captured for a delivery; a larger result is delivered
    /// as an envelope with `"result": null` and an `"error"`. Default 4 MiB.
    pub fn capture_limit(self, limit: usize) -> Self {
        self.map(|c| c.capture_limit = limit)
    }

    /// Whether a JSON request body's `webhook_endpoint` field triggers the legacy async mode
    /// (default off). When on, every `POST`/`PUT`/`PATCH` with a JSON body and no other trigger
    /// is buffered (up to [`legacy_body_limit`](Self::legacy_body_limit)) before the inner
    /// service runs, to look for it; when off, such a field is the inner service's own data.
    pub fn legacy_body_field(self, enabled: bool) -> Self {
        self.map(|c| c.legacy_body_field = enabled)
    }

    /// How much of a JSON request body is buffered to look for `webhook_endpoint`; a longer
    /// body is passed on unread beyond that and not searched. Default 1 MiB.
    pub fn legacy_body_limit(self, limit: usize) -> Self {
        self.map(|c| c.legacy_body_limit = limit)
    }

    /// The query parameter naming the endpoint (default `webhookEndpoint`).
    pub fn query_param(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.map(|c| c.query_param = name)
    }

    /// Chooses the endpoint in code for requests that bring none: return `Some` to forward.
    pub fn endpoint_fn<F>(self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<ForwardTo> + Send + Sync + 'static,
    {
        self.map(|c| c.endpoint_fn = Some(Arc::new(f)))
    }

    /// Whether async-mode endpoints are checked against the SSRF guard when accepted
    /// (resolving host names, within `dns_timeout`), so a refused endpoint is a `400` for the
    /// caller rather than a recorded refusal later. Default on, 2 s.
    pub fn check_on_accept(self, enabled: bool, dns_timeout: Duration) -> Self {
        self.map(|c| {
            c.check_on_accept = enabled;
            c.dns_timeout = dns_timeout;
        })
    }
}

impl<S> Layer<S> for WebhookForwardLayer {
    type Service = WebhookForward<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebhookForward::new(inner, self.config.clone())
    }
}
