//! [`WebhookSignatureLayer`]: configuration of the middleware.

use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use super::key::SecretSource;
use super::rejection::{DefaultRejectionResponse, RejectionResponse};
use super::service::WebhookSignature;
use super::verifier::WebhookVerifier;
use crate::replay::ReplayStore;
use crate::scheme::Scheme;
use crate::secret::SecretSet;

/// Layer that applies [`WebhookSignature`]: verifies each request's signature (and replay
/// window) before the inner service sees it.
///
/// See the [module docs](super) for examples and the status table.
#[must_use]
pub struct WebhookSignatureLayer<Sc, K = SecretSet, R = DefaultRejectionResponse> {
    verifier: WebhookVerifier<Sc, K>,
    rejection: R,
}

impl<Sc, K, R: Clone> Clone for WebhookSignatureLayer<Sc, K, R> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

impl<Sc: fmt::Debug, K, R> fmt::Debug for WebhookSignatureLayer<Sc, K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSignatureLayer")
            .field("verifier", &self.verifier)
            .field("rejection", &std::any::type_name::<R>())
            .finish()
    }
}

impl<Sc: Scheme> WebhookSignatureLayer<Sc> {
    /// Verifies `scheme` with static `secrets` (one, or several during a rotation).
    pub fn new(scheme: Sc, secrets: impl Into<SecretSet>) -> Self {
        Self::from_verifier(WebhookVerifier::new(scheme, secrets))
    }
}

impl<Sc: Scheme, K: SecretSource> WebhookSignatureLayer<Sc, K> {
    /// Verifies `scheme` with secrets looked up per request (multi-tenant receivers): a
    /// closure `|head: &RequestHead| -> Option<SecretSet>` or an asynchronous
    /// [`secret_source_async`](super::secret_source_async).
    pub fn with_secret_source(scheme: Sc, secrets: K) -> Self {
        Self::from_verifier(WebhookVerifier::with_secret_source(scheme, secrets))
    }

    /// Uses a prepared [`WebhookVerifier`] (the same one can sit in the router state for
    /// standalone extraction).
    pub fn from_verifier(verifier: WebhookVerifier<Sc, K>) -> Self {
        Self {
            verifier,
            rejection: DefaultRejectionResponse,
        }
    }
}

impl<Sc, K, R> WebhookSignatureLayer<Sc, K, R> {
    fn map(mut self, f: impl FnOnce(WebhookVerifier<Sc, K>) -> WebhookVerifier<Sc, K>) -> Self {
        self.verifier = f(self.verifier);
        self
    }

    /// The largest accepted body in bytes (default 2 MiB = 2 097 152); larger bodies are
    /// answered `413`, at once when `Content-Length` says so.
    pub fn limit(self, bytes: usize) -> Self {
        self.map(|verifier| verifier.limit(bytes))
    }

    /// Replaces the clock (Unix seconds) used for the timestamp window and replay records;
    /// the default reads the system time.
    pub fn clock(self, now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.map(|verifier| verifier.clock(now))
    }

    /// Turns de-duplication on with `store`; see [`crate::replay`].
    pub fn replay_store(self, store: impl ReplayStore) -> Self {
        self.map(|verifier| verifier.replay_store(store))
    }

    /// How long a processed replay key is remembered (default 600 s).
    pub fn replay_ttl(self, ttl: Duration) -> Self {
        self.map(|verifier| verifier.replay_ttl(ttl))
    }

    /// Names this route in replay keys (by default the scheme's name): each route sharing a
    /// replay store needs its own name, the same in every replica. Keys are also scoped by
    /// the matched secret (the tenant); see
    /// [the replay docs](crate::replay#keys-are-scoped-by-route-and-tenant).
    pub fn replay_scope(self, name: impl Into<std::sync::Arc<str>>) -> Self {
        self.map(|verifier| verifier.replay_scope(name))
    }

    /// How long the body may take to arrive (default 30 s); a slower one is
    /// answered `408`. The timer runs only while the body is awaited. `None` turns it off.
    pub fn body_read_deadline(self, deadline: Option<Duration>) -> Self {
        self.map(|verifier| verifier.body_read_deadline(deadline))
    }

    /// Renders rejections with `rejection` instead of problem+json, for example
    /// `|rejection: &Rejection| rejection.status()` for an empty body.
    pub fn with_rejection_response<R2: RejectionResponse>(
        self,
        rejection: R2,
    ) -> WebhookSignatureLayer<Sc, K, R2> {
        WebhookSignatureLayer {
            verifier: self.verifier,
            rejection,
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &WebhookVerifier<Sc, K> {
        &self.verifier
    }
}

impl<S, Sc, K, R: Clone> Layer<S> for WebhookSignatureLayer<Sc, K, R> {
    type Service = WebhookSignature<S, Sc, K, R>;

    fn layer(&self, inner: S) -> Self::Service {
        WebhookSignature::from_parts(inner, self.verifier.clone(), self.rejection.clone())
    }
}
