//! Extractors: [`VerifiedWebhook<T>`], [`Webhook<T, V>`] and [`Verified`].

use std::future::Future;
use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::RequestExt as _;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap};
use serde::de::DeserializeOwned;

use super::key::SecretSource;
use super::rejection::{Rejection, RejectionKind};
use super::verifier::WebhookVerifier;
use crate::scheme::{Scheme, Verified};

/// The typed payload of a webhook verified by
/// [`WebhookSignatureLayer`](super::WebhookSignatureLayer).
///
/// Deserialised from the verified body bytes: `application/x-www-form-urlencoded` when that
/// is the content type (Slack, Valohai form senders), JSON otherwise. Rejections (problem+json):
/// JSON syntax error `400`, payload of the wrong shape `422`, and `500` when the layer did not
/// run (to verify without the layer, use [`Webhook<T, WebhookVerifier<Sc>>`](Webhook)).
///
/// For the raw bytes and the verification metadata next to the payload, use [`Webhook<T>`],
/// or add [`Verified`] as a second extractor.
///
/// ```
/// use axum::{routing::post, Router};
/// use serde::Deserialize;
/// use tower_webhooks::inbound::{VerifiedWebhook, WebhookSignatureLayer};
/// use tower_webhooks::scheme::Cerebrium;
/// use tower_webhooks::Verified;
///
/// #[derive(Deserialize)]
/// struct RunFinished {
///     run_id: String,
/// }
///
/// async fn handler(meta: Verified, VerifiedWebhook(event): VerifiedWebhook<RunFinished>) -> String {
///     format!("{} via secret #{}", event.run_id, meta.secret.map_or(0, |s| s.index))
/// }
///
/// let app: Router = Router::new()
///     .route("/hooks/cerebrium", post(handler))
///     .layer(WebhookSignatureLayer::new(Cerebrium::new(), "my-webhook-secret"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct VerifiedWebhook<T>(pub T);

impl<T> std::ops::Deref for VerifiedWebhook<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for VerifiedWebhook<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T, S> FromRequest<S> for VerifiedWebhook<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Rejection> {
        let webhook = Webhook::<T>::from_request(request, state).await?;
        Ok(Self(webhook.payload))
    }
}

/// A verified webhook: the typed payload, the exact body bytes that were verified, and the
/// verification metadata.
///
/// `V` says where verification comes from when
/// [`WebhookSignatureLayer`](super::WebhookSignatureLayer) did not run:
///
/// - `()` (the default): nowhere; the layer is required (`500` otherwise).
/// - [`WebhookVerifier<Sc, K>`]: taken from the router state through [`FromRef`]; the
///   extractor then verifies by itself (signature, timestamp window, body limit). Behind the
///   layer it reuses the layer's result instead of verifying twice. De-duplication
///   ([`crate::replay`]) needs the layer.
///
/// Payload parsing is as for [`VerifiedWebhook`].
///
/// ```
/// use axum::{routing::post, Router};
/// use tower_webhooks::inbound::{Webhook, WebhookVerifier};
/// use tower_webhooks::scheme::Cerebrium;
///
/// type CerebriumVerifier = WebhookVerifier<Cerebrium>;
///
/// async fn handler(webhook: Webhook<serde_json::Value, CerebriumVerifier>) -> String {
///     format!(
///         "{} bytes, id {:?}",
///         webhook.body.len(),
///         webhook.verified.message_id
///     )
/// }
///
/// let app: Router = Router::new()
///     .route("/hooks/cerebrium", post(handler))
///     .with_state(WebhookVerifier::new(Cerebrium::new(), "my-webhook-secret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Webhook<T, V = ()> {
    /// The deserialised payload.
    pub payload: T,
    /// The body bytes exactly as verified (the same `Bytes` the layer buffered).
    pub body: Bytes,
    /// Scheme, message id, timestamp, matched secret, replay key and run id.
    pub verified: Verified,
    _verifier: PhantomData<fn() -> V>,
}

/// Where [`Webhook<T, V>`] gets a verifier when no layer ran. Implemented for `()` (none)
/// and for [`WebhookVerifier<Sc, K>`] taken from the state `S` via [`FromRef`].
pub trait StateVerifier<S>: Sized {
    /// Verifies `request` with the verifier found in `state`, returning the body bytes and
    /// the metadata in the request extensions.
    fn verify_request(
        request: Request,
        state: &S,
    ) -> impl Future<Output = Result<http::Request<Bytes>, Rejection>> + Send;
}

impl<S: Send + Sync> StateVerifier<S> for () {
    async fn verify_request(
        _request: Request,
        _state: &S,
    ) -> Result<http::Request<Bytes>, Rejection> {
        Err(Rejection::missing_verifier())
    }
}

impl<S, Sc, K> StateVerifier<S> for WebhookVerifier<Sc, K>
where
    S: Send + Sync,
    Sc: Scheme,
    K: SecretSource,
    Self: FromRef<S>,
{
    fn verify_request(
        request: Request,
        state: &S,
    ) -> impl Future<Output = Result<http::Request<Bytes>, Rejection>> + Send {
        let verifier = Self::from_ref(state);
        // Also honour the user's `DefaultBodyLimit` (2 MiB unless changed).
        let request = request.with_limited_body();
        async move { verifier.verify(request).await }
    }
}

impl<T, S, V> FromRequest<S> for Webhook<T, V>
where
    T: DeserializeOwned,
    S: Send + Sync,
    V: StateVerifier<S>,
{
    type Rejection = Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Rejection> {
        let (parts, body, verified) = match request.extensions().get::<Verified>().cloned() {
            Some(verified) => {
                // Behind the layer the body is the verified `Bytes` in one frame.
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .map_err(|_| Rejection::body_error())?;
                (parts, body, verified)
            }
            None => {
                let (mut parts, body) = V::verify_request(request, state).await?.into_parts();
                let verified = parts
                    .extensions
                    .remove::<Verified>()
                    .ok_or_else(Rejection::missing_verifier)?;
                (parts, body, verified)
            }
        };
        let payload = deserialize(&parts.headers, &body)?;
        Ok(Self {
            payload,
            body,
            verified,
            _verifier: PhantomData,
        })
    }
}

impl<T, V> Webhook<T, V> {
    /// Changes the payload, keeping the body and metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Webhook<U, V> {
        Webhook {
            payload: f(self.payload),
            body: self.body,
            verified: self.verified,
            _verifier: PhantomData,
        }
    }
}

/// The [`Verified`] metadata inserted by [`WebhookSignatureLayer`](super::WebhookSignatureLayer)
/// (`500` without the layer; use `Option<Verified>` to make it optional).
impl<S: Send + Sync> FromRequestParts<S> for Verified {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(Rejection::missing_verifier)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Verified {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

/// Parses a verified body: form-urlencoded when declared so, JSON otherwise.
pub(crate) fn deserialize<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Rejection> {
    if is_form(headers) {
        serde_urlencoded::from_bytes(body).map_err(|error| form_rejection(&error))
    } else {
        serde_json::from_slice(body).map_err(|error| json_rejection(&error))
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn json_rejection(error: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Data => RejectionKind::InvalidPayload,
        Category::Syntax | Category::Eof | Category::Io => RejectionKind::MalformedPayload,
    };
    Rejection::new(kind, format!("failed to parse the JSON payload: {error}"))
}

fn form_rejection(error: &serde_urlencoded::de::Error) -> Rejection {
    Rejection::new(
        RejectionKind::InvalidPayload,
        format!("failed to parse the form payload: {error}"),
    )
}
