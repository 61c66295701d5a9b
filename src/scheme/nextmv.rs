//! Nextmv: `Nextmv-Signature: t=<s or ms>,v1=<hex>` over `{t}.{body}`.

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::mac::HmacVerification;
use super::timestamp::optional_window;
use super::timestamped::TimestampedHex;
use super::{Message, ReplayWindow, RequestHead, Scheme, SignError, VerifyError};
use crate::secret::SecretSet;

const FORMAT: TimestampedHex = TimestampedHex {
    name: "nextmv",
    header: "nextmv-signature",
    accept_millis: true,
};

/// The Nextmv format (`Nextmv-Signature`), byte-compatible with Nextmv's official handler.
/// The key is the raw UTF-8 secret from `GET /v1/webhooks/{id}/secret`.
///
/// The documented header says `t` is in milliseconds while the official example compares it to
/// seconds, so verification accepts both (a value above 10^11 is milliseconds) and always MACs
/// the `t` text verbatim; signing writes seconds (decision 1). Several `v1` entries (a rotation)
/// are each tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nextmv {
    /// The accepted timestamp window (`false` in configuration disables it).
    #[serde(default = "optional_window::default", with = "optional_window")]
    pub replay_window: Option<ReplayWindow>,
}

impl Default for Nextmv {
    fn default() -> Self {
        Self {
            replay_window: Some(ReplayWindow::default()),
        }
    }
}

impl Nextmv {
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

impl Scheme for Nextmv {
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
