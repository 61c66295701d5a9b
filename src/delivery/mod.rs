//! The delivery engine: the outbound queue, its workers, retries, the SSRF guard and the
//! conversation log.
//!
//! Every source of webhooks (a [forwarded response](crate::forward), a published event)
//! becomes the same [`Delivery`] record. The engine:
//!
//! 1. accepts it into its [store](crate::store) within a bounded **capacity** (reserve a slot
//!    with [`DeliveryEngine::try_reserve`] before doing the work, so a full engine can answer
//!    `503` instead of dropping results);
//! 2. claims due deliveries in batches (or as it stores one that is due now) and hands each
//!    to a pool of long-lived workers (no task spawned per delivery), at most
//!    [`max_in_flight`](EngineBuilder::max_in_flight) attempts at once and at most
//!    [`max_per_endpoint`](EngineBuilder::max_per_endpoint) per endpoint host, so one slow
//!    endpoint cannot stall the others;
//! 3. sends each attempt through a [`DeliveryClient`] (hyper-util, rustls, pooled, no
//!    redirects; a tower `Service` you can wrap), **signed afresh** with the delivery's
//!    [`SigningSpec`] (so the timestamp is the send time), with
//!    `X-Request-Id` = the delivery id, under a connect and a total timeout, refused by the
//!    [`SsrfGuard`] when the endpoint is internal;
//! 4. classifies the outcome with the [`Policy`] (retry at a time, give up, disable the
//!    endpoint) and records the [`Attempt`] (redacted headers, body
//!    digest, status, truncated response, latency) in the delivery's conversation;
//! 5. drains on [`shutdown`](DeliveryEngine::shutdown) within a deadline.
//!
//! Each delivery runs in a `webhook.delivery` tracing span (id, endpoint without query,
//! attempt) with a `webhook.attempt` span per attempt. Secrets and signatures are never logged.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_webhooks::delivery::{
//!     Delivery, DeliveryClient, DeliveryEngine, DeliveryState, Policy, SigningSpec,
//! };
//! use tower_webhooks::scheme::Cerebrium;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A stand-in for the network: any tower service can be the client.
//! let client = DeliveryClient::from_service(tower::service_fn(|request: http::Request<Full<Bytes>>| async move {
//!     assert!(request.headers().contains_key("x-cerebrium-webhook-signature"));
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
//! }));
//! let engine = DeliveryEngine::builder()
//!     .client(client)
//!     .policy(Policy::cerebrium().with_delays([Duration::from_millis(10); 2]))
//!     .build();
//!
//! let delivery = Delivery::new("run-1", "https://example.com/hook", r#"{"smile":"wave"}"#)
//!     .with_signing(SigningSpec::new(Cerebrium::new(), "my-secret"));
//! engine.submit(delivery).await.unwrap();
//!
//! let report = engine.shutdown(Duration::from_secs(5)).await;
//! assert!(report.drained);
//! let conversation = engine.conversation("run-1").await.unwrap().unwrap();
//! assert_eq!(conversation.delivery.state, DeliveryState::Delivered);
//! assert_eq!(conversation.attempts[0].response.as_ref().unwrap().status, 200);
//! # }
//! ```

mod attempt;
mod builder;
mod client;
mod dispatch;
mod engine;
mod enqueue;
pub(crate) mod model;
mod owners;
mod policy;
mod pool;
mod recorded_headers;
mod signers;
mod slots;
pub(crate) mod ssrf;
#[cfg(test)]
mod tests;
mod worker;

pub(crate) use attempt::{display_endpoint, X_REQUEST_ID};
pub use builder::EngineBuilder;
pub use client::{ClientBuilder, Connector, DeliveryClient, HyperClient};
pub use engine::{CapacitySlot, DeliveryEngine, DeliveryReport, EngineStats, ShutdownReport};
pub use enqueue::EnqueueError;
pub use model::{
    Attempt, AttemptOutcome, AttemptResponse, Claim, Conversation, ConversationPosition,
    ConversationQuery, Decision, Delivery, DeliveryState, Lease, Next, SchemeSpec, SigningSpec,
    Source,
};
pub use owners::delivery_owner;
pub(crate) use owners::endpoint_host;
pub use policy::{Class, Classifier, Policy, Verdict};
pub use recorded_headers::{RecordedHeaders, RecordedHeadersIter};
pub use ssrf::{CidrError, GuardedConnector, GuardedResolver, Refusal, RefusalKind, SsrfGuard};

/// A boxed error, as tower and hyper use.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The hash map of the engine's and the memory store's per-delivery bookkeeping (keyed by
/// delivery id, host or owner, several lookups per delivery): foldhash, randomly seeded per
/// map, in place of SipHash, which was 4 % of a forwarded delivery's instructions.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
