//! [`WebhookVerifier`]: scheme + secrets + limit + clock + replay settings, shared by the
//! layer and the standalone extractor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, StatusCode};
use http_body::{Body, SizeHint};
use tracing::Instrument;

use super::collect::{BoxError, Buffer, CollectError};
use super::key::{SecretLookup, SecretSource};
use super::rejection::Rejection;
use super::telemetry::{SchemeLabel, Telemetry};
use crate::replay::{scoped_key, ReplayStore};
use crate::scheme::{RequestHead, Scheme, Verified, VerifyError};
use crate::secret::SecretSet;
use crate::time::Clock;

/// The default body limit: 2 MiB, as axum's `DefaultBodyLimit`.
pub(crate) const DEFAULT_LIMIT: usize = 2_097_152;

/// The default time a replay key is remembered: the widest default window end to end
/// (Standard Webhooks' 300 s back plus 300 s ahead), since a message sent from ahead stays
/// inside the window that long.
pub(crate) const DEFAULT_REPLAY_TTL: Duration = Duration::from_secs(600);

/// The default deadline for receiving a request's body: 30 s, after which the layer answers
/// `408`.
pub(crate) const DEFAULT_BODY_READ_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Shared<Sc, K> {
    pub(crate) scheme: Sc,
    pub(crate) secrets: K,
    /// The scheme's metrics label, made once here rather than per request.
    pub(crate) label: SchemeLabel,
}

#[derive(Clone)]
pub(crate) struct Replay {
    pub(crate) store: Arc<dyn ReplayStore>,
}

/// Everything needed to verify a webhook request: the [`Scheme`], where the secrets come
/// from ([`SecretSource`]), the body limit, the clock and the de-duplication settings.
///
/// Cheap to clone (shared with `Arc`). [`WebhookSignatureLayer`](super::WebhookSignatureLayer)
/// holds one; put one in the router state to verify without the layer through
/// [`Webhook<T, WebhookVerifier<Sc>>`](super::Webhook); call [`WebhookVerifier::verify`] from
/// other middleware, or verify a body already read in one call outside axum
/// ([`WebhookVerifier::verify_headers`], [`WebhookVerifier::verify_parts`],
/// [`WebhookVerifier::verify_bytes`]).
#[must_use]
pub struct WebhookVerifier<Sc, K = SecretSet> {
    /// Scheme and secret source behind one `Arc`: one reference count per request.
    pub(crate) shared: Arc<Shared<Sc, K>>,
    pub(crate) limit: usize,
    pub(crate) clock: Clock,
    pub(crate) replay: Option<Replay>,
    pub(crate) replay_ttl: Duration,
    /// The route's name in replay keys; the scheme's name when `None`.
    pub(crate) replay_scope: Option<Arc<str>>,
    pub(crate) body_deadline: Option<Duration>,
}

impl<Sc, K> Clone for WebhookVerifier<Sc, K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            limit: self.limit,
            clock: self.clock.clone(),
            replay: self.replay.clone(),
            replay_ttl: self.replay_ttl,
            replay_scope: self.replay_scope.clone(),
            body_deadline: self.body_deadline,
        }
    }
}

impl<Sc: fmt::Debug, K> fmt::Debug for WebhookVerifier<Sc, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("scheme", &self.shared.scheme)
            .field("secrets", &format_args!("[redacted]"))
            .field("limit", &self.limit)
            .field("clock", &self.clock)
            .field("replay_store", &self.replay.is_some())
            .field("replay_ttl", &self.replay_ttl)
            .field("replay_scope", &self.replay_scope)
            .field("body_read_deadline", &self.body_deadline)
            .finish()
    }
}

impl<Sc: Scheme> WebhookVerifier<Sc> {
    /// A verifier for `scheme` with static `secrets` (several during a rotation).
    pub fn new(scheme: Sc, secrets: impl Into<SecretSet>) -> Self {
        Self::with_secret_source(scheme, secrets.into())
    }
}

impl<Sc: Scheme, K: SecretSource> WebhookVerifier<Sc, K> {
    /// A verifier for `scheme` whose secrets are looked up per request (multi-tenant
    /// receivers); see [`SecretSource`].
    pub fn with_secret_source(scheme: Sc, secrets: K) -> Self {
        // The help texts reach a recorder installed before the application is built.
        crate::telemetry::describe_metrics();
        let label = SchemeLabel::new(scheme.name());
        Self {
            shared: Arc::new(Shared {
                scheme,
                secrets,
                label,
            }),
            limit: DEFAULT_LIMIT,
            clock: Clock::default(),
            replay: None,
            replay_ttl: DEFAULT_REPLAY_TTL,
            replay_scope: None,
            body_deadline: Some(DEFAULT_BODY_READ_DEADLINE),
        }
    }
}

impl<Sc, K> WebhookVerifier<Sc, K> {
    /// The largest accepted body in bytes (default 2 MiB); larger ones are answered `413`.
    ///
    /// Standalone extraction also honours axum's `DefaultBodyLimit` (2 MiB unless changed).
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }

    /// Replaces the clock (Unix seconds) used for the timestamp window and the replay store;
    /// the default reads the system time. For tests.
    pub fn clock(mut self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Clock::from_unix_seconds(now);
        self
    }

    /// Turns de-duplication on with `store`, for the layer and
    /// [`WebhookVerifier::verify_bytes`] (see [`crate::replay`]).
    pub fn replay_store(mut self, store: impl ReplayStore) -> Self {
        self.replay = Some(Replay {
            store: Arc::new(store),
        });
        self
    }

    /// How long a processed replay key is remembered (default 600 s). Keep it at least as
    /// long as the scheme's replay window.
    pub fn replay_ttl(mut self, ttl: Duration) -> Self {
        self.replay_ttl = ttl;
        self
    }

    /// Names this route in replay keys (by default the scheme's name). Give each route that
    /// shares a replay store a name of its own, the same in every replica; see
    /// [the replay docs](crate::replay#keys-are-scoped-by-route-and-tenant).
    pub fn replay_scope(mut self, name: impl Into<Arc<str>>) -> Self {
        self.replay_scope = Some(name.into());
        self
    }

    /// How long the body may take to arrive, from the first time it is not there yet
    /// (default 30 s); later it is answered `408`. `None` waits forever (leave the bound to
    /// an outer layer then).
    pub fn body_read_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.body_deadline = deadline;
        self
    }

    /// The scheme.
    pub fn scheme(&self) -> &Sc {
        &self.shared.scheme
    }

    /// The body limit in bytes.
    #[must_use]
    pub fn body_limit(&self) -> usize {
        self.limit
    }

    /// How long a body may take to arrive ([`body_read_deadline`](Self::body_read_deadline));
    /// `None` when it may take any time.
    #[must_use]
    pub fn body_deadline(&self) -> Option<Duration> {
        self.body_deadline
    }

    /// The current time of this verifier's clock, in Unix seconds.
    #[must_use]
    pub fn now(&self) -> i64 {
        self.clock.unix_seconds()
    }
}

impl<Sc: Scheme, K: SecretSource> WebhookVerifier<Sc, K> {
    /// Verifies a whole request: looks the secrets up, checks the headers and timestamp,
    /// buffers the body (within the limit) while streaming it into the MACs, and returns the
    /// request with its body as one `Bytes` and the [`Verified`](crate::Verified) metadata in
    /// its extensions.
    ///
    /// This does not consult the replay store: de-duplication needs to know whether the
    /// handler succeeded, which only [`WebhookSignatureLayer`](super::WebhookSignatureLayer)
    /// sees.
    ///
    /// # Errors
    ///
    /// The [`Rejection`] to answer with.
    pub async fn verify<B>(&self, request: Request<B>) -> Result<Request<Bytes>, Rejection>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let telemetry = Telemetry::start(self.shared.label);
        let result = self
            .verify_request(request)
            .instrument(telemetry.span())
            .await;
        match &result {
            Ok(request) => telemetry.accepted(|| request.extensions().get::<Verified>()),
            Err(rejection) => telemetry.rejected(rejection),
        }
        result
    }

    /// [`WebhookVerifier::verify`] without its span and counters.
    async fn verify_request<B>(&self, request: Request<B>) -> Result<Request<Bytes>, Rejection>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        mark_sensitive(&mut parts.headers);
        let now = self.now();
        let hint = body.size_hint();
        let started = match self.shared.secrets.lookup(&parts) {
            SecretLookup::Borrowed(secrets) => self.start(&parts, secrets, now, &hint),
            SecretLookup::Owned(secrets) => self.start(&parts, &secrets, now, &hint),
            SecretLookup::NotFound => Err(self.no_secret()),
            SecretLookup::Pending(lookup) => match lookup.await {
                Some(secrets) => self.start(&parts, &secrets, now, &hint),
                None => Err(self.no_secret()),
            },
        }?;
        let (verification, mut buffer) = started;
        let mut verification = Some(verification);
        let mut body = std::pin::pin!(body);
        let collect = std::future::poll_fn(|cx| {
            buffer.poll_collect(body.as_mut(), &mut verification, &mut parts.extensions, cx)
        });
        let collected = match self.body_deadline {
            Some(deadline) => tokio::time::timeout(deadline, collect)
                .await
                .map_err(|_| Rejection::body_timeout(deadline))?,
            None => collect.await,
        };
        let bytes = collected.map_err(|error| self.collect_rejection(error))?;
        if self.shared.scheme.has_admission() {
            if let Some(verified) = parts.extensions.get::<Verified>() {
                self.shared
                    .scheme
                    .admit(verified, now)
                    .map_err(|error| self.collect_rejection(CollectError::Verify(error)))?;
            }
        }
        Ok(Request::from_parts(parts, bytes))
    }

    /// Begins the verification and checks the declared length (`hint` is the body's size
    /// hint), before any body byte is read.
    #[inline]
    pub(crate) fn start(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
        hint: &SizeHint,
    ) -> Result<(Sc::Verification, Buffer), Rejection> {
        let verification = self
            .shared
            .scheme
            .begin(head, secrets, now)
            .map_err(|error| {
                Rejection::from_verify(error, self.shared.scheme.uniform_rejection_status())
            })?;
        let limit = u64::try_from(self.limit).unwrap_or(u64::MAX);
        // hyper derives an exact hint from `Content-Length`; the header is read only for
        // bodies that do not.
        let declared = hint.exact().or_else(|| content_length(&head.headers));
        if declared.is_some_and(|length| length > limit) || hint.lower() > limit {
            return Err(Rejection::body_too_large(self.limit));
        }
        let capacity = declared.map_or(0, |length| usize::try_from(length).unwrap_or(usize::MAX));
        Ok((verification, Buffer::new(self.limit, capacity)))
    }

    /// The store and the scoped key `verified` is de-duplicated under: `None` without a
    /// store or without a replay key. Keys are scoped by the route and by the matched secret
    /// of `secrets` (the tenant).
    pub(crate) fn replay_target(
        &self,
        verified: &Verified,
        secrets: Option<&SecretSet>,
    ) -> Option<(Arc<dyn ReplayStore>, String)> {
        let replay = self.replay.as_ref()?;
        let key = verified.replay_key()?;
        let secret = verified
            .secret
            .as_ref()
            .and_then(|matched| secrets?.iter().nth(matched.index));
        let scope = self
            .replay_scope
            .as_deref()
            .unwrap_or_else(|| self.shared.scheme.name());
        Some((replay.store.clone(), scoped_key(scope, secret, &key)))
    }

    pub(crate) fn no_secret(&self) -> Rejection {
        self.rejections().no_secret()
    }

    pub(crate) fn collect_rejection(&self, error: CollectError) -> Rejection {
        self.rejections().collect(error)
    }

    /// What a rejection found while collecting needs of this verifier, as a copy.
    pub(crate) fn rejections(&self) -> Rejections {
        Rejections {
            limit: self.limit,
            uniform_status: self.shared.scheme.uniform_rejection_status(),
            deadline: self.body_deadline,
        }
    }
}

/// The verifier's settings that word a rejection: kept by the layer's future instead of a
/// clone of the whole verifier, which costs reference-count updates on every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rejections {
    limit: usize,
    uniform_status: Option<StatusCode>,
    /// The body read deadline.
    pub(crate) deadline: Option<Duration>,
}

impl Rejections {
    pub(crate) fn no_secret(self) -> Rejection {
        Rejection::from_verify(VerifyError::no_secret(), self.uniform_status)
    }

    pub(crate) fn collect(self, error: CollectError) -> Rejection {
        match error {
            CollectError::Verify(error) => Rejection::from_verify(error, self.uniform_status),
            CollectError::TooLarge => Rejection::body_too_large(self.limit),
            CollectError::Body => Rejection::body_error(),
        }
    }
}

/// A well-formed `Content-Length`, if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Marks every signature header of the built-in schemes sensitive, so `TraceLayer` and
/// other logging layers inside this one redact them.
///
/// One pass over the request's headers (no hashing and parsing of the ten names).
pub(crate) fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if is_signature_header(name.as_str()) {
            value.set_sensitive(true);
        }
    }
}

fn is_signature_header(name: &str) -> bool {
    // Header names are lowercase; the length picks the one or three names to compare with,
    // each a constant-length comparison. `every_signature_header_is_marked` keeps this in
    // step with `SIGNATURE_HEADERS`.
    match name.len() {
        13 => name == "authorization",
        14 => name == "svix-signature",
        15 => name == "x-hub-signature",
        16 => matches!(
            name,
            "nextmv-signature" | "stripe-signature" | "x-webhook-secret"
        ),
        17 => matches!(name, "webhook-signature" | "x-slack-signature"),
        19 => name == "x-hub-signature-256",
        29 => name == "x-cerebrium-webhook-signature",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::SIGNATURE_HEADERS;

    #[test]
    fn every_signature_header_is_marked() {
        let mut headers = HeaderMap::new();
        for name in SIGNATURE_HEADERS {
            headers.append(*name, http::HeaderValue::from_static("a"));
            headers.append(*name, http::HeaderValue::from_static("b"));
        }
        headers.insert("x-request-id", http::HeaderValue::from_static("id"));
        mark_sensitive(&mut headers);
        for name in SIGNATURE_HEADERS {
            assert!(
                headers.get_all(*name).iter().all(|v| v.is_sensitive()),
                "{name}"
            );
        }
        assert!(!headers["x-request-id"].is_sensitive());
        for other in [
            "x-cerebrium-webhook-timestamp",
            "content-type",
            "x-hub-signature-25",
        ] {
            assert!(!is_signature_header(other), "{other}");
        }
    }

    /// A duplicate must be remembered for as long as its timestamp stays inside the window,
    /// which for a message sent from ahead is the whole window, past and future.
    #[test]
    fn default_replay_ttl_covers_every_default_window() {
        use crate::scheme::{Cerebrium, Nextmv, Slack, StandardWebhooks, Stripe};

        let windows = [
            ("cerebrium", Cerebrium::new().replay_window),
            ("nextmv", Nextmv::new().replay_window),
            ("stripe", Stripe::new().replay_window),
            ("standard_webhooks", StandardWebhooks::new().replay_window),
            ("slack", Slack::new().replay_window),
        ];
        for (name, window) in windows {
            let window = window.unwrap_or_else(|| panic!("{name} has a default window"));
            let span = u64::from(window.past_secs) + u64::from(window.future_secs);
            assert!(DEFAULT_REPLAY_TTL.as_secs() >= span, "{name}: {span} s");
        }
    }
}
