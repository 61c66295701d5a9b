//! Stripe: `Stripe-Signature: t=<s>,v1=<hex>[,v1=…][,v0=…]` over `{t}.{body}`.

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::mac::HmacVerification;
use super::timestamp::optional_window;
use super::timestamped::TimestampedHex;
use super::{Message, ReplayWindow, RequestHead, Scheme, SignError, VerifyError};
use crate::secret::SecretSet;

const FORMAT: TimestampedHex = TimestampedHex {
    name: "stripe",
    header: "stripe-signature",
    accept_millis: false,
};

/// The Stripe format. The key is the whole `whsec_…` string as raw UTF-8 (no base64 decode);
/// only `v1` entries count, and several `v1` entries (a secret roll) are each tried.
///
/// Stripe's own library only rejects old timestamps; this crate also rejects timestamps too far
/// in the future (decision 2), which `replay_window` can widen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stripe {
    /// The accepted timestamp window (`false` in configuration disables it).
    #[serde(default = "optional_window::default", with = "optional_window")]
    pub replay_window: Option<ReplayWindow>,
}

impl Default for Stripe {
    fn default() -> Self {
        Self {
            replay_window: Some(ReplayWindow::default()),
        }
    }
}

impl Stripe {
    /// The format with the default window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or with `None`, disables) the timestamp window.
    pub fn replay_window(mut self, window: Option<ReplayWindow>) -> Self {
        self.replay_window = window;
        self
    }
}

impl Scheme for Stripe {
    type Verification = HmacVerification;

    fn name(&self) -> &str {
        FORMAT.name
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        FORMAT.begin(self.replay_window.as_ref(), head, secrets, now)
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        FORMAT.sign(message, secrets, headers)
    }
}
