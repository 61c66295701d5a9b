//! Safe, reliable webhooks for axum and Tower services.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unsafe_code)]
#![warn(rust_2018_idioms, unreachable_pub, clippy::todo, clippy::dbg_macro)]

#[cfg(feature = "forward")]
pub mod delivery;
#[cfg(feature = "forward")]
pub mod forward;
pub mod problem;
pub mod scheme;
pub mod secret;
#[cfg(feature = "forward")]
pub mod store;

pub use problem::Problem;
pub use scheme::{Scheme, Verified};
pub use secret::{Secret, SecretSet};

#[cfg(feature = "forward")]
pub use delivery::DeliveryEngine;
#[cfg(feature = "forward")]
pub use forward::{ForwardTo, WebhookForward, WebhookForwardLayer};
