//! Safe, reliable webhooks for [axum](https://docs.rs/axum) and
//! [Tower](https://docs.rs/tower) services, in both directions.
//!
//! # Inbound
//!
//! A [`Scheme`] describes one vendor's signature format and both **signs** and **verifies**
//! with it. The built-in ones live in [`scheme`]: Cerebrium, Nextmv, Valohai (the whole
//! condition model), Standard Webhooks / Svix, Stripe, GitHub and Slack, each byte-exact with
//! the vendor's published examples. [`scheme::BuiltinScheme`] chooses one at run time and
//! deserialises from a TOML or JSON table (`{ type = "stripe" }`).
//!
//! Verification streams: the signed prefix (`{id}.{ts}.`, `{t}.`, `v0:{ts}:`) is known from
//! the headers, so each body frame goes into the MAC and into one buffer in the same pass; the
//! body need not be UTF-8; secrets are compared in constant time and redacted in `Debug`
//! ([`Secret`]); several secrets verify at once during a rotation ([`SecretSet`]).
//!
//! # Signing
//!
//! ```
//! use http::HeaderMap;
//! use tower_webhooks::scheme::{Message, Scheme, Stripe};
//! use tower_webhooks::SecretSet;
//!
//! let mut headers = HeaderMap::new();
//! let body = br#"{"id":"evt_test","object":"event"}"#;
//! Stripe::new()
//!     .sign(&Message::new("evt_test", 1_492_774_577, body), &SecretSet::from("whsec_test_secret"), &mut headers)
//!     .unwrap();
//! assert_eq!(
//!     headers["stripe-signature"],
//!     "t=1492774577,v1=691252e266ce41cb94d709c84e9580d4172b117a510bbc81723f657d2cd5d215"
//! );
//! ```
//!
//! # Errors
//!
//! Every rejection is an `application/problem+json` body ([`Problem`]) with a stable `type`
//! and the right 4xx status; none echoes a secret or an expected signature.
//!
//! # Cargo features
//!
//! The default build is the inbound half only: [`WebhookSignatureLayer`], the extractors, every
//! HMAC scheme and the in-memory replay store. Each feature adds to it, and none changes a type
//! that exists without it.
//!
//! | feature | what it adds |
//! |---|---|
//! | `jwt` | Valohai JWT conditions (HS256/384/512, RS256/384/512, ES256) via `jsonwebtoken` |
//! | `ed25519` | Standard Webhooks asymmetric `v1a` signatures (Ed25519, `whsk_`/`whpk_` keys) via `ed25519-dalek`; without it `v1a` entries are ignored and `whsk_` keys cannot sign |
//! | `forward` | the outbound half: `forward` (`WebhookForwardLayer`), `delivery` (engine, retry policy, SSRF guard, hyper-util client), `store` |
//! | `rustls` | `https://` deliveries (rustls, `ring`, webpki roots) through the same `delivery::Connector`; implies `forward` |
//! | `http2` | HTTP/2 deliveries (ALPN over TLS); implies `forward` |
//! | `sqlite` | `store::SqliteStore`: the embedded durable delivery store (bundled SQLite, `sqlx`); with `registry`, `registry::SqliteSubscriptions`; `replay::SqliteReplayStore` |
//! | `postgres` | `store::PostgresStore`: a durable queue shared by several replicas (`sqlx`); with `registry`, `registry::PostgresSubscriptions` and the transactional outbox (`publish_in_transaction`); `replay::PostgresReplayStore` |
//! | `redis` | `replay::RedisReplayStore`: de-duplication shared by replicas through Redis |
//! | `registry` | `registry`: a webhook subscription API (`axum::Router`), `publish` fan-out, OpenAPI via `utoipa`; implies `forward` |
//! | `portal` | `WebhookRegistry::portal`: server-rendered delivery pages for each owner (login, deliveries, attempts, re-send), HTML through `maud`; implies `registry` |
//! | `cli` | the `tower-webhooks` binary (sign, verify, listen, send, deliveries, serve); implies every feature it uses |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub, clippy::todo, clippy::dbg_macro)]

#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub mod delivery;
mod ext;
#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub mod forward;
pub mod inbound;
mod problem;
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub mod registry;
pub mod replay;
pub mod scheme;
mod secret;
pub mod sensitive;
#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub mod store;
pub mod telemetry;
mod time;

pub use ext::ServiceBuilderExt;
pub use inbound::{Rejection, VerifiedWebhook, WebhookSignature, WebhookSignatureLayer};
pub use problem::Problem;
pub use scheme::{Scheme, Verified};
pub use secret::{Secret, SecretError, SecretSet};

#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub use delivery::DeliveryEngine;
#[cfg(feature = "forward")]
#[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
pub use forward::{ForwardTo, WebhookForward, WebhookForwardLayer};
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub use registry::WebhookRegistry;

/// Private parsers reached by the `fuzz/` crate only: cargo-fuzz builds with `--cfg fuzzing`,
/// and nothing here is part of the public API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod __fuzz {
    /// The registry's opaque page cursors (`v1.` + URL-safe base64).
    #[cfg(feature = "registry")]
    pub mod cursor {
        use std::time::SystemTime;

        use crate::delivery::ConversationPosition;
        use crate::registry::api::cursor;

        /// Whether `text` looks like an opaque cursor rather than a plain webhook id.
        pub fn is_opaque(text: &str) -> bool {
            cursor::is_opaque(text)
        }

        /// The cursor after webhook `id`.
        pub fn webhook(id: &str) -> String {
            cursor::webhook(id)
        }

        /// The webhook id inside a cursor.
        pub fn parse_webhook(text: &str) -> Option<String> {
            cursor::parse_webhook(text)
        }

        /// The cursor after delivery `id`, created at `created_at`.
        pub fn conversation(id: &str, created_at: SystemTime) -> String {
            cursor::conversation(id, created_at)
        }

        /// The conversation position inside a cursor.
        pub fn parse_conversation(text: &str) -> Option<ConversationPosition> {
            cursor::parse_conversation(text)
        }
    }
}
