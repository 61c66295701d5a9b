//! [`WebhookSignature`]: the middleware service.

use std::mem;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as HttpBody;
use tower_service::Service;

use super::body::VerifiedBody;
use super::collect::BoxError;
use super::future::{Pending, ResponseFuture};
use super::key::{SecretLookup, SecretSource};
use super::layer::WebhookSignatureLayer;
use super::rejection::{DefaultRejectionResponse, RejectionResponse};
use super::verifier::{mark_sensitive, WebhookVerifier};
use crate::scheme::Scheme;
use crate::secret::SecretSet;

/// Middleware that verifies webhook signatures before calling the inner service.
///
/// The inner service receives a `Request<`[`VerifiedBody`]`>`: the buffered bytes, not boxed,
/// with the [`Verified`](crate::Verified) metadata in the request extensions. Under an axum
/// `Router` nothing changes for handlers (the router accepts any body).
///
/// Responses come back as an axum [`Body`](axum::body::Body): under a `Router` the inner
/// service's response body already is one and passes through as it is (a router would
/// otherwise box the layer's body a second time); any other body is boxed once, and the
/// layer's own answers (rejections, duplicate acknowledgements) are built as one.
///
/// See the [module docs](super) for an example and the status table.
pub struct WebhookSignature<S, Sc, K = SecretSet, R = DefaultRejectionResponse> {
    inner: S,
    verifier: WebhookVerifier<Sc, K>,
    rejection: R,
}

impl<S: Clone, Sc, K, R: Clone> Clone for WebhookSignature<S, Sc, K, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            verifier: self.verifier.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

impl<S: std::fmt::Debug, Sc: std::fmt::Debug, K, R> std::fmt::Debug
    for WebhookSignature<S, Sc, K, R>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSignature")
            .field("inner", &self.inner)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl<S, Sc: Scheme, K: SecretSource> WebhookSignature<S, Sc, K> {
    /// Wraps `inner` with `verifier` and the default problem+json rejections.
    pub fn new(inner: S, verifier: WebhookVerifier<Sc, K>) -> Self {
        Self::from_parts(inner, verifier, DefaultRejectionResponse)
    }
}

impl<Sc: Scheme> WebhookSignature<(), Sc> {
    /// A [`WebhookSignatureLayer`] for `scheme` and `secrets`.
    ///
    /// ```
    /// use tower_webhooks::inbound::WebhookSignature;
    /// use tower_webhooks::scheme::Cerebrium;
    ///
    /// let layer = WebhookSignature::layer(Cerebrium::new(), "secret");
    /// # let _ = layer;
    /// ```
    pub fn layer(scheme: Sc, secrets: impl Into<SecretSet>) -> WebhookSignatureLayer<Sc> {
        WebhookSignatureLayer::new(scheme, secrets)
    }
}

impl<S, Sc, K, R> WebhookSignature<S, Sc, K, R> {
    pub(crate) fn from_parts(inner: S, verifier: WebhookVerifier<Sc, K>, rejection: R) -> Self {
        Self {
            inner,
            verifier,
            rejection,
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &WebhookVerifier<Sc, K> {
        &self.verifier
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Sc, K, R, B, ResBody> Service<Request<B>> for WebhookSignature<S, Sc, K, R>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>> + Clone,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    Sc: Scheme,
    K: SecretSource,
    R: RejectionResponse,
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, Sc, K, R>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready is the one the future calls.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        let (mut parts, body) = request.into_parts();
        mark_sensitive(&mut parts.headers);
        let verifier = &self.verifier;
        let now = verifier.now();
        let hint = body.size_hint();
        // Replay keys are scoped by the matched secret, found once the body is verified.
        let keep_secrets = verifier.replay.is_some();
        let (started, secrets) = match verifier.shared.secrets.lookup(&parts) {
            SecretLookup::Borrowed(secrets) => (
                verifier.start(&parts, secrets, now, &hint),
                keep_secrets.then(|| secrets.clone()),
            ),
            SecretLookup::Owned(secrets) => (
                verifier.start(&parts, &secrets, now, &hint),
                keep_secrets.then_some(secrets),
            ),
            SecretLookup::NotFound => (Err(verifier.no_secret()), None),
            SecretLookup::Pending(lookup) => {
                return ResponseFuture::lookup(
                    lookup,
                    body,
                    Pending {
                        parts,
                        inner,
                        secrets: None,
                    },
                    verifier.clone(),
                    self.rejection.clone(),
                    now,
                    verifier.shared.label,
                );
            }
        };
        ResponseFuture::collect(
            started,
            body,
            Pending {
                parts,
                inner,
                secrets,
            },
            verifier,
            self.rejection.clone(),
            now,
            verifier.shared.label,
        )
    }
}
