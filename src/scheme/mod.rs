//! Signature schemes: one description that both **signs** and **verifies**.
//!
//! A [`Scheme`] is pure: it reads a request head (method, URI, headers), starts one MAC per
//! candidate secret over the signed prefix it can already see, is fed the body frame by frame,
//! and gives a verdict at the end. It never touches a body type, a client or a store, so every
//! vendor format is testable with plain vectors and shared by the inbound layer
//! ([`WebhookSignatureLayer`](crate::WebhookSignatureLayer)) and the outbound signer.
//!
//! Built in (all byte-exact with the vendors' published examples):
//!
//! | scheme | signature header | signed content | encoding |
//! |---|---|---|---|
//! | [`Cerebrium`] | `X-Cerebrium-Webhook-Signature: v1,<hex>` | `{X-Request-Id}.{ts}.{body}` | hex |
//! | [`Nextmv`] | `Nextmv-Signature: t=..,v1=..` | `{t}.{body}` | hex |
//! | [`Stripe`] | `Stripe-Signature: t=..,v1=..` | `{t}.{body}` | hex |
//! | [`StandardWebhooks`] | `webhook-signature: v1,<b64> v1a,<b64> …` | `{id}.{ts}.{body}` | base64 (HMAC-SHA256 or Ed25519) |
//! | [`GitHub`] | `X-Hub-Signature-256: sha256=<hex>` | `{body}` | hex |
//! | [`Slack`] | `X-Slack-Signature: v0=<hex>` | `v0:{ts}:{body}` | hex |
//! | [`Valohai`] | configurable conditions | configurable basestring | hex |
//!
//! [`BuiltinScheme`] is the runtime-chosen union of all of them (what a TOML file names).

use bytes::Bytes;
use http::HeaderMap;

use crate::secret::SecretSet;

/// Declares a scheme struct that has a replay window (plus optional extra fields), with its
/// `Default`, `new()` and `replay_window()` setter: one definition instead of one per vendor.
macro_rules! windowed_scheme {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// The accepted timestamp window (`false` in configuration disables it).
            #[serde(
                default = "crate::scheme::timestamp::optional_window::default",
                with = "crate::scheme::timestamp::optional_window"
            )]
            pub(crate) replay_window: Option<crate::scheme::ReplayWindow>,
            $( $(#[$field_meta])* #[serde(default)] pub(crate) $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    replay_window: Some(crate::scheme::ReplayWindow::default()),
                    $( $field: $default, )*
                }
            }
        }

        impl $name {
            /// The format with the default window (300 s back, 60 s ahead).
            pub fn new() -> Self {
                Self::default()
            }

            /// Sets (or with `None`, disables) the timestamp window.
            pub fn replay_window(mut self, window: Option<crate::scheme::ReplayWindow>) -> Self {
                self.replay_window = window;
                self
            }
        }
    };
}

mod builtin;
mod cerebrium;
mod error;
mod github;
mod headers;
mod mac;
mod signer;
mod slack;
mod standard;
mod timestamp;
mod timestamped;
pub mod valohai;
mod verified;

pub use builtin::{BuiltinScheme, BuiltinVerification};
pub use cerebrium::Cerebrium;
pub use error::{SignError, VerifyError, VerifyErrorKind};
pub use github::GitHub;
pub(crate) use headers::{
    find_headers, head_of, header_str, header_value, id_header_value, insert_header,
    mac_header_value, required, SIGNATURE_HEADERS,
};
pub use mac::{Algorithm, Encoding, HmacVerification};

pub use signer::{SharedSigner, Signer};
pub use slack::Slack;
pub use standard::{StandardVerification, StandardWebhooks};
pub use timestamp::ReplayWindow;
pub(crate) use timestamp::{parse_unix_timestamp, parse_unix_timestamp_bytes};
pub use timestamped::{Nextmv, Stripe};
pub use valohai::Valohai;
pub use verified::{MessageId, SecretMatch, SuccessResponse, Verified};

/// What a scheme can see of a request before its body: method, URI and headers.
pub type RequestHead = http::request::Parts;

/// A webhook signature format: how to sign a message, and how to verify one.
///
/// Implementations must be cheap to share (`Send + Sync`): the inbound layer keeps one and
/// calls [`Scheme::begin`] per request.
pub trait Scheme: Send + Sync + 'static {
    /// The per-request verification state fed with the body.
    type Verification: Verification;

    /// A short stable name (`"stripe"`, `"cerebrium"`, …) reported in [`Verified::scheme`].
    fn name(&self) -> &str;

    /// Reads the headers, checks the timestamp window at `now` (Unix seconds) and starts one
    /// MAC per secret over the part of the signed content known before the body.
    ///
    /// # Errors
    ///
    /// A missing or malformed header, a timestamp outside the window, or no usable secret.
    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<Self::Verification, VerifyError>;

    /// Signs `message`, adding the scheme's headers (id, timestamp, signature) to `headers`.
    ///
    /// Schemes that carry several signatures in one header (Stripe, Standard Webhooks) sign
    /// with every secret in `secrets` (a rotation); the others use the primary one.
    ///
    /// # Errors
    ///
    /// [`SignError`] when there is no secret, the message lacks something the format needs,
    /// or the format cannot be produced by a sender (a Valohai querystring lookup).
    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError>;

    /// The status every rejection uses instead of the per-reason one (Valohai-compatible mode
    /// answers every failed condition with `400`).
    fn uniform_rejection_status(&self) -> Option<http::StatusCode> {
        None
    }

    /// The response this scheme answers a successful request with, if it defines one (the
    /// Valohai "Web Response" action). `run_id` is [`Verified::run_id`].
    fn success_response(&self, run_id: &str) -> Option<SuccessResponse> {
        let _ = run_id;
        None
    }

    /// Charges an authentic request against the scheme's quotas (Valohai's rate limits).
    ///
    /// The layer calls it once it knows the request is not a duplicate (after the replay
    /// store's [`Fresh`](crate::replay::Reservation::Fresh), or at once without a store),
    /// and only when [`Scheme::has_admission`] says so: a duplicate never uses up a quota.
    /// [`WebhookVerifier::verify`](crate::inbound::WebhookVerifier::verify),
    /// [`Scheme::verify_request`] and the verifier's one-call methods call it after
    /// verifying. Callers of [`Scheme::begin`] and [`Verification::finish`] call it themselves.
    ///
    /// # Errors
    ///
    /// [`VerifyError`] (typically [`VerifyErrorKind::RateLimited`]) when a quota is used up;
    /// nothing is charged then.
    fn admit(&self, verified: &Verified, now: i64) -> Result<(), VerifyError> {
        let _ = (verified, now);
        Ok(())
    }

    /// Whether [`Scheme::admit`] does anything; when `false` (the default) the layer skips
    /// it and keeps no state for it.
    fn has_admission(&self) -> bool {
        false
    }

    /// Verifies a request whose body is already read, in one synchronous call: the headers
    /// and timestamp window at `now` (Unix seconds), the signature over `body`, then the
    /// scheme's quotas ([`Scheme::admit`], charged at once as the layer does without a replay
    /// store).
    ///
    /// The head carries the method and URI too, which a Valohai query-string condition
    /// needs; [`Scheme::verify_headers`] is the same call from headers alone. There is no
    /// de-duplication here (that needs a store):
    /// [`WebhookVerifier::verify_bytes`](crate::inbound::WebhookVerifier::verify_bytes) adds
    /// it, and [`WebhookVerifier::verify_parts`](crate::inbound::WebhookVerifier::verify_parts)
    /// gives the layer's [`Rejection`](crate::inbound::Rejection) instead of a
    /// [`VerifyError`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Request;
    /// use tower_webhooks::scheme::{Message, Scheme, Slack, VerifyErrorKind};
    /// use tower_webhooks::SecretSet;
    ///
    /// let secrets = SecretSet::from("slack-signing-secret");
    /// let body = Bytes::from_static(b"token=x&team_id=T1");
    /// let mut request = Request::post("/slack/events").body(()).unwrap();
    /// Slack::new()
    ///     .sign(&Message::new("unused", 1_700_000_000, &body), &secrets, request.headers_mut())
    ///     .unwrap();
    /// let (head, ()) = request.into_parts();
    ///
    /// let verified = Slack::new().verify_request(&head, &body, &secrets, 1_700_000_010).unwrap();
    /// assert_eq!(verified.timestamp, Some(1_700_000_000));
    ///
    /// let tampered = Bytes::from_static(b"token=x&team_id=T2");
    /// let error = Slack::new().verify_request(&head, &tampered, &secrets, 1_700_000_010).unwrap_err();
    /// assert_eq!(error.kind(), VerifyErrorKind::InvalidSignature);
    /// ```
    ///
    /// # Errors
    ///
    /// The [`VerifyError`] the layer would reject the request with.
    fn verify_request(
        &self,
        head: &RequestHead,
        body: &Bytes,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let mut verification = self.begin(head, secrets, now)?;
        verification.update(body);
        let verified = verification.finish(body)?;
        if self.has_admission() {
            self.admit(&verified, now)?;
        }
        Ok(verified)
    }

    /// [`Scheme::verify_request`] from the headers alone, as svix's `Webhook::verify` takes
    /// them: the head it sees is `POST /` with these headers (copied), so a scheme that reads
    /// the URI (a Valohai query-string condition) finds nothing there and needs
    /// [`Scheme::verify_request`] with the real head.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::HeaderMap;
    /// use tower_webhooks::scheme::{Message, Scheme, StandardWebhooks};
    /// use tower_webhooks::SecretSet;
    ///
    /// let secrets = SecretSet::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    /// let body = Bytes::from_static(br#"{"type":"invoice.paid"}"#);
    /// let mut headers = HeaderMap::new();
    /// StandardWebhooks::new()
    ///     .sign(&Message::new("msg_1", 1_700_000_000, &body), &secrets, &mut headers)
    ///     .unwrap();
    ///
    /// let verified = StandardWebhooks::new()
    ///     .verify_headers(&headers, &body, &secrets, 1_700_000_000)
    ///     .unwrap();
    /// assert_eq!(verified.message_id.as_deref(), Some("msg_1"));
    /// ```
    ///
    /// # Errors
    ///
    /// The [`VerifyError`] the layer would reject the request with.
    fn verify_headers(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<Verified, VerifyError> {
        self.verify_request(&head_of(headers), body, secrets, now)
    }
}

/// The streaming half of a verification.
pub trait Verification: Send + 'static {
    /// Feeds the next body frame into the MACs.
    fn update(&mut self, chunk: &[u8]);

    /// Finishes with the whole body (the same bytes that were fed) and gives the verdict.
    ///
    /// # Errors
    ///
    /// [`VerifyError`] with the reason the request is not authentic.
    fn finish(self, body: &Bytes) -> Result<Verified, VerifyError>;
}

/// What to sign: the body and the metadata a scheme may put into headers.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The message id (`X-Request-Id`, `webhook-id`); a scheme that needs one and finds
    /// `None` fails with [`SignError::MissingId`].
    pub id: Option<&'a str>,
    /// Unix seconds.
    pub timestamp: i64,
    /// The exact body bytes that will be sent.
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    /// A message with an id, a timestamp and a body.
    pub fn new(id: &'a str, timestamp: i64, body: &'a [u8]) -> Self {
        Self {
            id: Some(id),
            timestamp,
            body,
        }
    }
}
