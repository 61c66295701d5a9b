//! Inbound webhooks: verify signatures before your handler runs.
//!
//! [`WebhookSignatureLayer`] buffers the body once (within a limit), streams it into the
//! scheme's MACs while buffering, checks the timestamp window and, optionally, de-duplicates
//! deliveries; it then calls the inner service with the **same** `Bytes` as the request body
//! and the [`Verified`](crate::Verified) metadata in the request extensions. A failure is
//! answered with a short `application/problem+json` response and never reaches the inner
//! service. `Service::Error` stays the inner service's error, so the layer drops into
//! `Router::layer` / `route_layer` as is.
//!
//! Handlers take the payload with [`VerifiedWebhook<T>`] (JSON, or form-urlencoded when
//! declared), the bytes and metadata with [`Webhook<T>`], or the metadata alone with
//! [`Verified`](crate::Verified).
//!
//! # Example
//!
//! ```
//! use axum::{body::Body, http::{Request, StatusCode}, routing::post, Router};
//! use serde::Deserialize;
//! use tower::ServiceExt;
//! use tower_webhooks::inbound::{VerifiedWebhook, WebhookSignatureLayer};
//! use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
//! use tower_webhooks::SecretSet;
//!
//! #[derive(Deserialize)]
//! struct Event {
//!     smile: String,
//! }
//!
//! async fn handler(VerifiedWebhook(event): VerifiedWebhook<Event>) -> String {
//!     event.smile
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let secrets = SecretSet::from("my-webhook-secret");
//! let app = Router::new()
//!     .route("/webhook", post(handler))
//!     .layer(WebhookSignatureLayer::new(Cerebrium::new(), secrets.clone()));
//!
//! // What a sender does (the same scheme signs).
//! let body = br#"{"smile": "wave"}"#;
//! let now = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH)
//!     .unwrap()
//!     .as_secs() as i64;
//! let mut request = Request::post("/webhook").body(Body::from(&body[..])).unwrap();
//! Cerebrium::new()
//!     .sign(&Message::new("run-1", now, body), &secrets, request.headers_mut())
//!     .unwrap();
//!
//! let response = app.clone().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! // No signature: 400, and the handler is not called.
//! let unsigned = Request::post("/webhook").body(Body::from(&body[..])).unwrap();
//! let response = app.oneshot(unsigned).await.unwrap();
//! assert_eq!(response.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! # }
//! ```
//!
//! # Without axum
//!
//! A body already read (another server, a serverless handler, a queue) is verified in one
//! call with the same checks and the same [`Rejection`]:
//! [`WebhookVerifier::verify_headers`] (headers and bytes, as svix's `Webhook::verify`),
//! [`WebhookVerifier::verify_parts`] (with the method and URI) and, with de-duplication,
//! [`WebhookVerifier::verify_bytes`]. Their docs show hyper, actix-web and a Lambda-style
//! handler. In a `tower::ServiceBuilder`, [`ServiceBuilderExt`](crate::ServiceBuilderExt)
//! adds `.verify_webhooks(scheme, secrets)`.
//!
//! # Rejections
//!
//! Every rejection is a [`Rejection`] (also inserted into the response extensions, and logged
//! as a `debug` event with target `tower_webhooks::inbound`, never with a secret). The default
//! response is `application/problem+json` whose `type` is `tag:tower-webhooks,2026:<slug>`:
//!
//! | [`RejectionKind`] | status | `type` slug | when |
//! |---|---|---|---|
//! | `MissingHeader` | 400 | `missing-header` | a signature, id or timestamp header is absent |
//! | `MalformedHeader` | 400 | `malformed-header` | a header is not in the scheme's grammar (non-digit timestamp, bad hex, ...) |
//! | `ConditionFailed` | 400 | `condition-failed` | a non-signature condition failed (Valohai) |
//! | `InvalidSignature` | 401 | `invalid-signature` | no signature matched any secret (tampered body, wrong secret) |
//! | `NoSecret` | 401 | `no-secret` | no secret configured or found for this request |
//! | `TimestampTooOld` | 401 | `stale-timestamp` | older than the scheme's window (see [`ReplayWindow`](crate::scheme::ReplayWindow)) |
//! | `TimestampInFuture` | 401 | `future-timestamp` | further ahead than the window (see [`ReplayWindow`](crate::scheme::ReplayWindow)) |
//! | `RateLimited` | 429 | `rate-limited` | a rate-limit condition refused the request |
//! | `BodyTooLarge` | 413 | `body-too-large` | over the limit (2 MiB by default): at once from `Content-Length`, else while reading |
//! | `BodyError` | 400 | `body-error` | the body stream failed |
//! | `BodyTimeout` | 408 | `body-timeout` | the body was not received within the read deadline (30 s by default) |
//! | `InFlight` | 409 + `Retry-After: 5` | `replay-in-flight` | de-dupe: the same delivery is being handled right now |
//! | `ReplayStoreUnavailable` | 503 + `Retry-After: 5` | `replay-store-unavailable` | de-dupe: the store failed (fail closed) |
//! | `MalformedPayload` | 400 | `malformed-payload` | extractors: the body is not valid JSON |
//! | `InvalidPayload` | 422 | `invalid-payload` | extractors: the payload has the wrong shape |
//! | `MissingVerifier` | 500 | `missing-verifier` | extractors: no layer and no verifier in state (a setup error) |
//!
//! When the scheme's [`uniform_rejection_status`](crate::Scheme::uniform_rejection_status)
//! is `Some(status)` (Valohai-compatible mode: `400`), every *verification failure* (the first
//! eight rows) uses that status instead; the other rows keep theirs (a body too large stays
//! `413`).
//!
//! A duplicate of a delivery that was already processed successfully is **not** a
//! rejection: with a [replay store](crate::replay) it is answered `200 OK` with
//! `{"status":"duplicate"}` (or the scheme's own success response), and a [`Duplicate`]
//! marker in the response extensions, without calling the handler again.
//!
//! Custom rendering, for example an empty body with the same status:
//!
//! ```
//! use tower_webhooks::inbound::{Rejection, WebhookSignatureLayer};
//! use tower_webhooks::scheme::Cerebrium;
//!
//! let layer = WebhookSignatureLayer::new(Cerebrium::new(), "secret")
//!     .with_rejection_response(|rejection: &Rejection| rejection.status());
//! # let _ = layer;
//! ```
//!
//! # Several secrets, several tenants
//!
//! A [`SecretSet`](crate::SecretSet) with several secrets verifies against each (rotation);
//! [`Verified::secret`](crate::Verified::secret) says which matched. A closure (or
//! [`secret_source_async`]) looks the secrets up per request:
//!
//! ```
//! use axum::{routing::post, Router};
//! use tower_webhooks::inbound::WebhookSignatureLayer;
//! use tower_webhooks::scheme::{Cerebrium, RequestHead};
//! use tower_webhooks::SecretSet;
//!
//! fn tenant_secrets(tenant: &str) -> Option<SecretSet> {
//!     match tenant {
//!         "acme" => Some(SecretSet::from("acme-secret")),
//!         _ => None, // 401 no-secret
//!     }
//! }
//!
//! let app: Router = Router::new()
//!     .route("/hooks/{tenant}", post(|| async { "ok" }))
//!     .layer(WebhookSignatureLayer::with_secret_source(
//!         Cerebrium::new(),
//!         |head: &RequestHead| tenant_secrets(head.uri.path().trim_start_matches("/hooks/")),
//!     ));
//! ```
//!
//! # Replay protection
//!
//! Each scheme checks its timestamp window. Within the window, turn de-duplication on with
//! [`WebhookSignatureLayer::replay_store`]; see [`crate::replay`] for the semantics and for
//! a store shared by several replicas:
//!
//! ```
//! use tower_webhooks::inbound::WebhookSignatureLayer;
//! use tower_webhooks::replay::MemoryReplayStore;
//! use tower_webhooks::scheme::Cerebrium;
//!
//! let layer = WebhookSignatureLayer::new(Cerebrium::new(), "secret")
//!     .replay_store(MemoryReplayStore::new(10_000));
//! # let _ = layer;
//! ```
//!
//! # Logging and sensitive headers
//!
//! The layer marks the signature headers of every built-in scheme sensitive, so `TraceLayer` and
//! other layers *inside* it redact them. A `TraceLayer` *outside* sees the request first: put
//! `tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer` with
//! [`sensitive_header_names()`](crate::sensitive::sensitive_header_names) before it:
//!
//! ```
//! use axum::{routing::post, Router};
//! use tower::ServiceBuilder;
//! use tower_http::{sensitive_headers::SetSensitiveRequestHeadersLayer, trace::TraceLayer};
//! use tower_webhooks::inbound::WebhookSignatureLayer;
//! use tower_webhooks::scheme::Cerebrium;
//! use tower_webhooks::sensitive::sensitive_header_names;
//!
//! let app: Router = Router::new().route("/hook", post(|| async { "ok" })).layer(
//!     ServiceBuilder::new()
//!         .layer(SetSensitiveRequestHeadersLayer::new(sensitive_header_names()))
//!         .layer(TraceLayer::new_for_http())
//!         .layer(WebhookSignatureLayer::new(Cerebrium::new(), "secret")),
//! );
//! ```
//!
//! # Body limit
//!
//! The default limit is 2 MiB, like axum's `DefaultBodyLimit`; change it with
//! [`WebhookSignatureLayer::limit`]. A declared `Content-Length` over the limit is refused
//! before any byte is read; a chunked body is counted as it arrives, and the rest of an
//! oversized body is drained (up to the limit again) so that the client reads the `413`
//! rather than a reset connection. The body stream is read until it ends (`poll_frame`
//! returning `None`, never trusting `is_end_stream`), and trailers are ignored.
//!
//! # Slow clients
//!
//! A body that is not received within the read deadline (30 s by default; change it with
//! [`WebhookSignatureLayer::body_read_deadline`]) is answered `408`. The timer starts only
//! when the body is not already there (the usual case costs nothing), and it needs tokio's
//! timer (`axum::serve` has it).
//!
//! The layer only sees a request once its headers are in: the server must bound that too.
//! hyper's HTTP/1 `header_read_timeout` (30 s by default once the server has a timer) does;
//! `axum::serve` does not expose it, so serve with `hyper_util`'s builder (features `server`,
//! `server-auto`, `service` and `tokio` of `hyper-util`):
//!
//! ```no_run
//! use std::time::Duration;
//! use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
//! use hyper_util::server::conn::auto::Builder;
//! use hyper_util::service::TowerToHyperService;
//!
//! # async fn serve(app: axum::Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let service = TowerToHyperService::new(app.clone());
//!     tokio::spawn(async move {
//!         let mut builder = Builder::new(TokioExecutor::new());
//!         builder
//!             .http1()
//!             .timer(TokioTimer::new())
//!             .header_read_timeout(Duration::from_secs(30));
//!         let _ = builder
//!             .serve_connection_with_upgrades(TokioIo::new(stream), service)
//!             .await;
//!     });
//! }
//! # }
//! ```

mod body;
mod buffered;
mod collect;
mod extract;
mod future;
mod key;
mod layer;
mod rejection;
mod service;
mod telemetry;
mod verifier;

#[cfg(test)]
mod tests;

pub use body::VerifiedBody;
pub use buffered::{Delivery, FreshDelivery};
pub use extract::{StateVerifier, VerifiedWebhook, Webhook};
pub use future::{Duplicate, ResponseFuture};
pub use key::{secret_source_async, AsyncSecretSource, SecretLookup, SecretSource};
pub use layer::WebhookSignatureLayer;
pub use rejection::{DefaultRejectionResponse, Rejection, RejectionKind, RejectionResponse};
pub use service::WebhookSignature;
pub use verifier::WebhookVerifier;
#[cfg(test)]
pub(crate) use verifier::DEFAULT_REPLAY_TTL;
