//! [`BuiltinScheme`]: every built-in format behind one enum, chosen at run time (from TOML).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::mac::HmacVerification;
use super::standard::StandardVerification;
use super::valohai::{Valohai, ValohaiVerification};
use super::{
    Cerebrium, GitHub, Message, Nextmv, RequestHead, Scheme, SignError, Slack, StandardWebhooks,
    Stripe, SuccessResponse, Verification, Verified, VerifyError,
};
use crate::secret::SecretSet;

/// Any built-in scheme, chosen at run time. Deserialises from a table tagged by `type`:
///
/// ```
/// use tower_webhooks::scheme::BuiltinScheme;
///
/// let scheme: BuiltinScheme = serde_json::from_str(r#"{"type": "stripe"}"#).unwrap();
/// assert!(matches!(scheme, BuiltinScheme::Stripe(_)));
/// let scheme: BuiltinScheme =
///     serde_json::from_str(r#"{"type": "nextmv", "replay_window": false}"#).unwrap();
/// assert_eq!(tower_webhooks::Scheme::name(&scheme), "nextmv");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BuiltinScheme {
    /// [`Cerebrium`].
    Cerebrium(Cerebrium),
    /// [`Nextmv`].
    Nextmv(Nextmv),
    /// [`Stripe`].
    Stripe(Stripe),
    /// [`StandardWebhooks`] (also accepts `type = "svix"`).
    #[serde(alias = "svix")]
    StandardWebhooks(StandardWebhooks),
    /// [`GitHub`].
    #[serde(rename = "github")]
    GitHub(GitHub),
    /// [`Slack`].
    Slack(Slack),
    /// [`Valohai`] webhook-trigger conditions.
    Valohai(Valohai),
}

/// The verification state of a [`BuiltinScheme`].
#[derive(Debug)]
pub struct BuiltinVerification(BuiltinState);

/// The state of the chosen scheme's own verification.
#[derive(Debug)]
// The large variant is the common one (every HMAC scheme): boxing it would allocate on every
// verified request, which the inline state exists to avoid.
#[allow(clippy::large_enum_variant)]
enum BuiltinState {
    /// Every HMAC-header format but Standard Webhooks.
    Hmac(HmacVerification),
    /// Standard Webhooks (`v1` HMAC and `v1a` Ed25519).
    StandardWebhooks(StandardVerification),
    /// Valohai conditions.
    Valohai(ValohaiVerification),
}

macro_rules! each_scheme {
    ($value:expr, $scheme:ident => $body:expr) => {
        match $value {
            BuiltinScheme::Cerebrium($scheme) => $body,
            BuiltinScheme::Nextmv($scheme) => $body,
            BuiltinScheme::Stripe($scheme) => $body,
            BuiltinScheme::StandardWebhooks($scheme) => $body,
            BuiltinScheme::GitHub($scheme) => $body,
            BuiltinScheme::Slack($scheme) => $body,
            BuiltinScheme::Valohai($scheme) => $body,
        }
    };
}

impl Scheme for BuiltinScheme {
    type Verification = BuiltinVerification;

    fn name(&self) -> &str {
        each_scheme!(self, scheme => scheme.name())
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<BuiltinVerification, VerifyError> {
        match self {
            Self::Valohai(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::Valohai(state))),
            Self::Cerebrium(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::Hmac(state))),
            Self::Nextmv(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::Hmac(state))),
            Self::Stripe(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::Hmac(state))),
            Self::StandardWebhooks(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::StandardWebhooks(state))),
            Self::GitHub(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::Hmac(state))),
            Self::Slack(scheme) => scheme
                .begin(head, secrets, now)
                .map(|state| BuiltinVerification(BuiltinState::Hmac(state))),
        }
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        each_scheme!(self, scheme => scheme.sign(message, secrets, headers))
    }

    fn uniform_rejection_status(&self) -> Option<StatusCode> {
        each_scheme!(self, scheme => scheme.uniform_rejection_status())
    }

    fn success_response(&self, run_id: &str) -> Option<SuccessResponse> {
        each_scheme!(self, scheme => scheme.success_response(run_id))
    }

    fn admit(&self, verified: &Verified, now: i64) -> Result<(), VerifyError> {
        each_scheme!(self, scheme => scheme.admit(verified, now))
    }

    fn has_admission(&self) -> bool {
        each_scheme!(self, scheme => scheme.has_admission())
    }
}

impl Verification for BuiltinVerification {
    #[inline]
    fn update(&mut self, chunk: &[u8]) {
        match &mut self.0 {
            BuiltinState::Hmac(verification) => verification.update(chunk),
            BuiltinState::StandardWebhooks(verification) => verification.update(chunk),
            BuiltinState::Valohai(verification) => verification.update(chunk),
        }
    }

    fn finish(self, body: &Bytes) -> Result<Verified, VerifyError> {
        match self.0 {
            BuiltinState::Hmac(verification) => verification.finish(body),
            BuiltinState::StandardWebhooks(verification) => verification.finish(body),
            BuiltinState::Valohai(verification) => verification.finish(body),
        }
    }
}

macro_rules! from_scheme {
    ($($variant:ident),*) => {$(
        impl From<$variant> for BuiltinScheme {
            fn from(scheme: $variant) -> Self {
                Self::$variant(scheme)
            }
        }
    )*};
}

from_scheme!(
    Cerebrium,
    Nextmv,
    Stripe,
    StandardWebhooks,
    GitHub,
    Slack,
    Valohai
);
