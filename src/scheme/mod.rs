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

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::secret::{Secret, SecretSet};

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
            pub replay_window: Option<crate::scheme::ReplayWindow>,
            $( $(#[$field_meta])* #[serde(default)] pub $field: $ty, )*
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
mod github;
mod mac;
mod signer;
mod slack;
mod standard;
mod timestamp;
mod timestamped;
pub mod valohai;

pub use builtin::{BuiltinScheme, BuiltinVerification};
pub use cerebrium::Cerebrium;
pub use github::GitHub;
pub use mac::{Algorithm, Encoding, HmacVerification};

pub use signer::{SharedSigner, Signer};
pub use slack::Slack;
pub use standard::{StandardVerification, StandardWebhooks};
pub(crate) use timestamp::parse_unix_timestamp_bytes;
pub use timestamp::{parse_unix_timestamp, ReplayWindow};
pub use timestamped::{Nextmv, Stripe};
pub use valohai::Valohai;

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

/// The head `POST /` with `headers`, for verification from headers alone.
pub(crate) fn head_of(headers: &HeaderMap) -> RequestHead {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = http::Method::POST;
    head.headers = headers.clone();
    head
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

/// The verification metadata a handler sees next to the payload.
///
/// Building it costs no allocation on the common path: the message id shares the request
/// header's bytes, the run id is a [`Uuid`](uuid::Uuid), and the de-duplication key is only
/// rendered when a replay store asks for it ([`Verified::replay_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The scheme's [`Scheme::name`].
    pub scheme: Cow<'static, str>,
    /// The signed message id, when the format carries one.
    pub message_id: Option<MessageId>,
    /// The signed timestamp (Unix seconds, normalised from milliseconds where needed).
    pub timestamp: Option<i64>,
    /// Which secret matched (its position in the [`SecretSet`] and its label).
    pub secret: Option<SecretMatch>,
    /// A fresh id for this accepted request (Valohai's `{run_id}`); `Display` writes the
    /// hyphenated lowercase form.
    pub run_id: uuid::Uuid,
    replay: ReplayBasis,
}

/// What the de-duplication key is made of; rendered lazily by [`Verified::replay_key`].
#[derive(Clone, PartialEq, Eq)]
enum ReplayBasis {
    /// Nothing signed identifies the message (a static token): no de-duplication.
    None,
    /// The signed [`Verified::message_id`].
    MessageId,
    /// The matching MAC, for formats without a signed id (GitHub, Slack, Stripe, Nextmv).
    Mac(mac::MacBytes),
    /// A key the scheme computed itself (Valohai's JWT digest).
    Key(String),
}

impl fmt::Debug for ReplayBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::MessageId => "MessageId",
            Self::Mac(_) => "Mac",
            Self::Key(_) => "Key",
        })
    }
}

impl Verified {
    /// Metadata for scheme `scheme` with a fresh run id and nothing else set.
    pub fn new(scheme: impl Into<Cow<'static, str>>) -> Self {
        Self {
            scheme: scheme.into(),
            message_id: None,
            timestamp: None,
            secret: None,
            run_id: fresh_run_id(),
            replay: ReplayBasis::None,
        }
    }

    /// A de-duplication key derived from signed material only: `{scheme}:{message id}`, or
    /// `{scheme}:{hex MAC}` for formats without a signed id; `None` when nothing signed
    /// identifies the message.
    pub fn replay_key(&self) -> Option<String> {
        let key: Cow<'_, str> = match &self.replay {
            ReplayBasis::None => return None,
            ReplayBasis::Key(key) => return Some(key.clone()),
            ReplayBasis::MessageId => Cow::Borrowed(self.message_id.as_deref()?),
            ReplayBasis::Mac(mac) => Cow::Owned(hex::encode(&**mac)),
        };
        let mut out = String::with_capacity(self.scheme.len() + 1 + key.len());
        out.push_str(&self.scheme);
        out.push(':');
        out.push_str(&key);
        Some(out)
    }

    /// Sets the de-duplication key (for custom schemes); it must come from signed material.
    pub fn set_replay_key(&mut self, key: impl Into<String>) {
        self.replay = ReplayBasis::Key(key.into());
    }

    pub(crate) fn replay_from_message_id(&mut self) {
        self.replay = ReplayBasis::MessageId;
    }

    pub(crate) fn replay_from_mac(&mut self, mac: mac::MacBytes) {
        self.replay = ReplayBasis::Mac(mac);
    }

    pub(crate) fn has_replay_basis(&self) -> bool {
        self.replay != ReplayBasis::None
    }
}

/// A random (v4) UUID from the thread-local CSPRNG: `Uuid::new_v4` makes a `getrandom`
/// system call per request, a measurable share of a 1 KiB verification. The generator's
/// output is fetched sixteen ids at a time, which halves the cost again.
fn fresh_run_id() -> uuid::Uuid {
    use rand::RngCore as _;
    use std::cell::RefCell;

    const IDS: usize = 16;
    thread_local! {
        static RANDOM: RefCell<([u8; 16 * IDS], usize)> = const { RefCell::new(([0; 16 * IDS], IDS)) };
    }
    let bytes = RANDOM.with_borrow_mut(|(random, used)| {
        if *used == IDS {
            rand::rng().fill_bytes(random);
            *used = 0;
        }
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&random[16 * *used..16 * (*used + 1)]);
        *used += 1;
        bytes
    });
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A signed message id as the sender wrote it (visible ASCII). Cloning shares the header's
/// bytes instead of copying them; it reads as a `&str`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageId(HeaderValue);

impl MessageId {
    /// The id of a header value, or `None` when it is empty or not visible ASCII (a control
    /// character such as TAB included): an empty id would make every such message a
    /// duplicate of the first.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        (!bytes.is_empty() && is_visible_ascii(bytes)).then(|| Self(value.clone()))
    }

    /// An id from text, or `None` when it is empty or not visible ASCII.
    pub fn new(id: &str) -> Option<Self> {
        Self::from_header(&HeaderValue::from_str(id).ok()?)
    }

    /// The id's bytes (no UTF-8 check: the id is ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only visible-ASCII values are admitted (`from_header`, `new`), so this is valid
        // UTF-8; `from_utf8` checks ASCII a word at a time.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or_default()
    }
}

impl std::ops::Deref for MessageId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Which secret of a [`SecretSet`] verified the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMatch {
    /// Position in the set (0 = primary).
    pub index: usize,
    /// The secret's label, if it has one ([`Secret::with_id`]).
    pub id: Option<std::sync::Arc<str>>,
}

impl SecretMatch {
    pub(crate) fn new(index: usize, secret: &Secret) -> Self {
        Self {
            index,
            id: secret.label().cloned(),
        }
    }
}

/// A scheme-defined success answer (content type and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessResponse {
    /// `text/plain` or `application/json`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Why a request failed verification. Never carries a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    kind: VerifyErrorKind,
    detail: Cow<'static, str>,
}

/// The reason class of a [`VerifyError`]; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// A required header (or token) is absent: `400`.
    MissingHeader,
    /// A header is present but not in the scheme's grammar: `400`.
    MalformedHeader,
    /// No signature matched any secret: `401`.
    InvalidSignature,
    /// No secret is configured or found for this request: `401`.
    NoSecret,
    /// The timestamp is older than the window allows: `401`.
    TimestampTooOld,
    /// The timestamp is further in the future than the window allows: `401`.
    TimestampInFuture,
    /// A rate-limit condition refused the request: `429`.
    RateLimited,
    /// A non-signature condition failed (Valohai): `400`.
    ConditionFailed,
}

impl VerifyError {
    /// A new error of `kind` with a short public detail (no secrets, no expected values).
    pub fn new(kind: VerifyErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn missing(header: &str) -> Self {
        Self::new(
            VerifyErrorKind::MissingHeader,
            format!("missing `{header}` header"),
        )
    }

    pub(crate) fn malformed(header: &str) -> Self {
        Self::new(
            VerifyErrorKind::MalformedHeader,
            format!("malformed `{header}` header"),
        )
    }

    pub(crate) fn invalid_signature() -> Self {
        Self::new(
            VerifyErrorKind::InvalidSignature,
            "no signature matched any configured secret",
        )
    }

    pub(crate) fn no_secret() -> Self {
        Self::new(
            VerifyErrorKind::NoSecret,
            "no secret is configured for this endpoint",
        )
    }

    /// The reason class.
    pub fn kind(&self) -> VerifyErrorKind {
        self.kind
    }

    /// The short public detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for VerifyError {}

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// The secret set is empty.
    NoSecret,
    /// The format carries a message id and none was given.
    MissingId,
    /// The message id cannot be written into a header (it is not visible ASCII).
    InvalidId,
    /// The secret is unusable for this format (for example not base64 for Standard Webhooks).
    BadSecret(&'static str),
    /// A header the signed content refers to is missing from the outgoing headers.
    MissingHeader(String),
    /// The format cannot be produced by a sender as configured.
    Unsupported(&'static str),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSecret => f.write_str("no secret to sign with"),
            Self::MissingId => f.write_str("the scheme needs a message id"),
            Self::InvalidId => f.write_str("the message id is not visible ASCII"),
            Self::BadSecret(why) => write!(f, "unusable secret: {why}"),
            Self::MissingHeader(name) => {
                write!(f, "signed content refers to missing header `{name}`")
            }
            Self::Unsupported(why) => write!(f, "cannot sign: {why}"),
        }
    }
}

impl std::error::Error for SignError {}

/// Reads a header as visible ASCII text.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or_else(|| VerifyError::missing(name))?;
    value.to_str().map_err(|_| VerifyError::malformed(name))
}

/// The first value of each of `names`, found in one pass over the headers. A webhook carries a
/// handful of headers, so comparing names (most differ in kind or length) is a third of the
/// cost of one hashed lookup per name.
pub(crate) fn find_headers<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&HeaderName; N],
) -> [Option<&'h HeaderValue>; N] {
    let mut found = [None; N];
    let mut missing = N;
    for (name, value) in headers {
        let name = name.as_str();
        for (slot, wanted) in found.iter_mut().zip(names) {
            // Lengths first: most names differ there.
            if slot.is_none() && name.len() == wanted.as_str().len() && name == wanted.as_str() {
                *slot = Some(value);
                missing -= 1;
                // The names are distinct: no other slot can take this header.
                break;
            }
        }
        if missing == 0 {
            break;
        }
    }
    found
}

/// A found header's bytes, or `MissingHeader`. Callers parse them with a strict decoder
/// (digits, hex), which rejects what is not visible ASCII on its own.
pub(crate) fn required<'h>(
    value: Option<&'h HeaderValue>,
    name: &HeaderName,
) -> Result<&'h [u8], VerifyError> {
    value
        .map(HeaderValue::as_bytes)
        .ok_or_else(|| VerifyError::missing(name.as_str()))
}

/// Whether every byte is visible ASCII or a tab, as `HeaderValue::to_str` requires, without
/// an early exit so that the loop vectorises.
pub(crate) fn is_visible_ascii(bytes: &[u8]) -> bool {
    // Space to `~`; no control character (TAB included, which header values allow).
    bytes
        .iter()
        .fold(true, |ok, &byte| ok & (byte.wrapping_sub(0x20) < 0x5f))
}

/// Builds a header value from text produced by a signer (always visible ASCII).
pub(crate) fn header_value(text: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(text).expect("signers only produce visible ASCII");
    value.set_sensitive(true);
    value
}

/// The message id as a header value. The id is the caller's text, not the signer's, so it is
/// checked here (before any header is written) instead of trusted like `header_value`'s input,
/// by the rule the verifier reads it with ([`MessageId`]): `http` alone would also let bytes
/// above ASCII through, and a receiver could then not verify the message.
pub(crate) fn id_header_value(id: &str) -> Result<HeaderValue, SignError> {
    if !is_visible_ascii(id.as_bytes()) {
        return Err(SignError::InvalidId);
    }
    let mut value = HeaderValue::from_str(id).map_err(|_| SignError::InvalidId)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Inserts a signer-produced header.
pub(crate) fn insert_header(headers: &mut HeaderMap, name: &'static str, text: &str) {
    headers.insert(HeaderName::from_static(name), header_value(text));
}

/// The signature header names of every built-in scheme, for `SetSensitiveRequestHeaders`
/// and for redaction in logs.
pub const SIGNATURE_HEADERS: &[&str] = &[
    "x-cerebrium-webhook-signature",
    "nextmv-signature",
    "stripe-signature",
    "webhook-signature",
    "svix-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-slack-signature",
    "x-webhook-secret",
    "authorization",
];
