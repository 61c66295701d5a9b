//! Safe, reliable webhooks for axum and Tower services.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub, clippy::todo, clippy::dbg_macro)]

pub mod inbound;
pub mod problem;
pub mod replay;
pub mod scheme;
pub mod secret;

pub use inbound::{Rejection, VerifiedWebhook, WebhookSignature, WebhookSignatureLayer};
pub use problem::Problem;
pub use scheme::{Scheme, Verified};
pub use secret::{Secret, SecretSet};
