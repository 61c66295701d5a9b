//! Outbound webhooks: [`WebhookForwardLayer`] delivers the result of any request that names an
//! endpoint to that endpoint, signed, with retries — Cerebrium's `webhookEndpoint` feature as
//! a Tower layer.
//!
//! # Triggers
//!
//! | trigger | mode | the caller gets |
//! |---|---|---|
//! | `?webhookEndpoint=<url-encoded URL>` on any route | sync | the inner response unchanged, plus `X-Request-Id: <run id>` |
//! | `?async=true&webhookEndpoint=…` | async | `202 {"run_id": …}` at once |
//! | `{"webhook_endpoint": "<url>", …}` in a JSON body (legacy, opt-in: [`legacy_body_field`](WebhookForwardLayer::legacy_body_field)) | async | `200 {"run_id", "webhook_endpoint", "message"}` at once |
//! | a [`ForwardTo`] request extension (set by an outer layer) or [`endpoint_fn`](WebhookForwardLayer::endpoint_fn) | sync, or async if asked | as above |
//! | a [`ForwardTo`] **response** extension (set by the handler) | sync | the inner response |
//!
//! The `X-Webhook-Secret` request header turns on signing with that secret (Cerebrium's
//! `X-Cerebrium-Webhook-Signature: v1,<hex>` over `{X-Request-Id}.{timestamp}.{body}` by
//! default, [any scheme](WebhookForwardLayer::with_signer) on request); the header is removed
//! before the inner service sees the request. A [default secret](WebhookForwardLayer::default_secret)
//! signs requests that bring none. The inner service finds the run id in the [`RunId`]
//! request extension.
//!
//! **Sync mode** never delays the caller: the response body streams to the caller while a copy
//! (up to the [capture limit](WebhookForwardLayer::capture_limit)) is kept, and the delivery is
//! queued when the body ends; only the body's last frame waits for the store's answer, so with a
//! durable store ([`SqliteStore`](crate::store)/`PostgresStore`) a complete answer means the
//! delivery is on disk. **Async mode** answers at once, runs the inner service in a
//! background task and delivers its result — also when it fails or panics (the delivery then
//! carries status 500 and an `"error"`). Before the `202`, a placeholder delivery is stored
//! ([`DeliveryEngine::hold`](crate::delivery::DeliveryEngine::hold)), kept back while the run
//! goes on and completed with its result: if the process dies mid-run, the accepted run is
//! still delivered, as status 500 with an `"error"` saying it was interrupted.
//!
//! # The delivered body
//!
//! By default an envelope, where `result` is the inner JSON response, or a string when it is
//! not JSON:
//!
//! ```json
//! {"run_id":"5f0c…","run_time_ms":12.5,"status_code":200,"timestamp":1731381205,"result":{"smile":"wave"}}
//! ```
//!
//! [`raw_body`](WebhookForwardLayer::raw_body) forwards the inner body unchanged instead. The
//! delivery is a `POST` with `Content-Type: application/json` and `X-Request-Id` = run id; the
//! signature covers the exact bytes sent.
//!
//! # Errors and backpressure
//!
//! A malformed endpoint (or one longer than 2048 characters) is a `400` problem (`application/problem+json`) before the inner
//! service runs. An endpoint refused by the [SSRF guard](crate::delivery::SsrfGuard) is a `400`
//! in async mode (IP literals, and host names resolved when the request is accepted) and a
//! recorded [`Refused`](crate::delivery::DeliveryState::Refused) delivery in sync mode. When the
//! engine (with a memory store) holds its capacity of unfinished deliveries, forwarding requests
//! get `503` with `Retry-After`, before the inner service runs; a durable store takes every
//! delivery. A handler's [`ForwardTo`] that the engine cannot take turns its response into that
//! problem, so no accepted delivery is dropped silently.
//!
//! # Owner
//!
//! The engine shares its queue and its attempts fairly between owners
//! ([`delivery_owner`](crate::delivery::delivery_owner)). A forwarded delivery's owner is its
//! endpoint's host and port: the tenants of a gateway usually differ by the receiving service,
//! and a hanging receiver then spends only its own share
//! ([`max_in_flight_per_owner`](crate::delivery::EngineBuilder::max_in_flight_per_owner),
//! never less than the per-endpoint cap). When that host holds its
//! [share of queued deliveries](crate::delivery::EngineBuilder::max_queued_per_owner), its
//! forwarding requests get `429` with `Retry-After`, and other hosts are still accepted.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::post, Json, Router};
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::ServiceExt;
//! use tower_webhooks::delivery::{DeliveryClient, DeliveryEngine};
//! use tower_webhooks::forward::WebhookForwardLayer;
//! use tower_webhooks::delivery::DeliveryState;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In production the default client (hyper-util + rustls) is used; a stand-in here.
//! let client = DeliveryClient::from_service(tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
//! }));
//! let engine = DeliveryEngine::builder().client(client).build();
//!
//! let app = Router::new()
//!     .route("/v4/{project}/{app}/{function}", post(|| async { Json(serde_json::json!({"smile": "wave"})) }))
//!     .layer(WebhookForwardLayer::new(engine.clone()));
//!
//! let request = http::Request::post("/v4/p-1/demo/run?webhookEndpoint=https%3A%2F%2Fexample.com%2Fhook")
//!     .header("x-webhook-secret", "my-secret")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let run_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
//! let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
//! assert_eq!(&body[..], br#"{"smile":"wave"}"#);
//!
//! assert!(engine.shutdown(Duration::from_secs(5)).await.drained);
//! let conversation = engine.conversation(&run_id).await.unwrap().unwrap();
//! assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
//! let sent = &conversation.attempts[0].request_headers;
//! assert_eq!(sent.get("x-cerebrium-webhook-signature"), Some("[redacted]"));
//! # }
//! ```

mod async_run;
mod body;
mod future;
mod job;
mod layer;
mod legacy;
mod problems;
mod service;
mod trigger;

use crate::secret::Secret;

pub use future::ResponseFuture;
pub use layer::WebhookForwardLayer;
pub use service::WebhookForward;

/// What the delivered body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BodyMode {
    /// `{"run_id","run_time_ms","status_code","timestamp","result"}` (the default).
    #[default]
    Envelope,
    /// The inner response body, unchanged (errors are still delivered as an envelope).
    Raw,
}

/// A programmatic trigger: put it in the request extensions (from an outer layer), return it
/// from [`endpoint_fn`](WebhookForwardLayer::endpoint_fn), or put it in the response
/// extensions from a handler (sync mode only).
///
/// ```
/// use tower_webhooks::forward::ForwardTo;
///
/// let to = ForwardTo::new("https://example.com/hook").with_secret("s3cret").asynchronous(true);
/// assert_eq!(to.endpoint(), "https://example.com/hook");
/// assert!(!format!("{to:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug)]
pub struct ForwardTo {
    pub(crate) endpoint: String,
    pub(crate) secret: Option<Secret>,
    pub(crate) asynchronous: bool,
}

impl ForwardTo {
    /// Forwards to `endpoint` (an absolute `http`/`https` URL).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            secret: None,
            asynchronous: false,
        }
    }

    /// Signs with this secret (over `X-Webhook-Secret` and the default secret).
    pub fn with_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Async mode: answer `202 {"run_id"}` at once and deliver the result later (ignored in a
    /// response extension).
    pub fn asynchronous(mut self, asynchronous: bool) -> Self {
        self.asynchronous = asynchronous;
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// The run id of a forwarded request (also the delivery id and its `X-Request-Id`), inserted
/// into the request extensions for the inner service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunId(pub String);

impl RunId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
