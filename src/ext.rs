//! [`ServiceBuilderExt`]: this crate's layers as `tower::ServiceBuilder` methods, the way
//! `tower_http::ServiceBuilderExt` adds tower-http's.

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::inbound::WebhookSignatureLayer;
use crate::scheme::Scheme;
use crate::secret::SecretSet;

#[cfg(feature = "forward")]
use crate::{delivery::DeliveryEngine, forward::WebhookForwardLayer};

/// Adds this crate's layers to [`tower::ServiceBuilder`] (`tower` is a dependency without
/// default features, as in tower-http; axum already builds it):
///
/// ```
/// use axum::{body::Body, http::{Request, StatusCode}, routing::post, Router};
/// use tower::{ServiceBuilder, ServiceExt as _};
/// use tower_webhooks::scheme::{GitHub, Message, Scheme};
/// use tower_webhooks::ServiceBuilderExt as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app: Router = Router::new()
///     .route("/github", post(|| async { "ok" }))
///     .layer(ServiceBuilder::new().verify_webhooks(GitHub::new(), "gh-secret"));
///
/// let body = br#"{"zen":"Keep it logically awesome."}"#;
/// let mut request = Request::post("/github").body(Body::from(&body[..])).unwrap();
/// GitHub::new()
///     .sign(&Message::new("d-1", 0, body), &"gh-secret".into(), request.headers_mut())
///     .unwrap();
/// assert_eq!(app.clone().oneshot(request).await.unwrap().status(), StatusCode::OK);
///
/// let unsigned = Request::post("/github").body(Body::from(&body[..])).unwrap();
/// assert_eq!(app.oneshot(unsigned).await.unwrap().status(), StatusCode::BAD_REQUEST);
/// # }
/// ```
///
/// Sealed: implemented for `ServiceBuilder<L>` only.
pub trait ServiceBuilderExt<L>: sealed::Sealed<L> + Sized {
    /// Verifies each request with `scheme` and static `secrets` before the inner service:
    /// [`WebhookSignatureLayer::new`]. For the other settings (replay store, limit, secret
    /// lookup), build the layer and pass it to `.layer(...)`.
    fn verify_webhooks<Sc: Scheme>(
        self,
        scheme: Sc,
        secrets: impl Into<SecretSet>,
    ) -> ServiceBuilder<Stack<WebhookSignatureLayer<Sc>, L>>;

    /// Forwards the results of requests that name a webhook endpoint through `engine`:
    /// [`WebhookForwardLayer::new`].
    #[cfg(feature = "forward")]
    #[cfg_attr(docsrs, doc(cfg(feature = "forward")))]
    fn forward_webhooks(
        self,
        engine: DeliveryEngine,
    ) -> ServiceBuilder<Stack<WebhookForwardLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn verify_webhooks<Sc: Scheme>(
        self,
        scheme: Sc,
        secrets: impl Into<SecretSet>,
    ) -> ServiceBuilder<Stack<WebhookSignatureLayer<Sc>, L>> {
        self.layer(WebhookSignatureLayer::new(scheme, secrets))
    }

    #[cfg(feature = "forward")]
    fn forward_webhooks(
        self,
        engine: DeliveryEngine,
    ) -> ServiceBuilder<Stack<WebhookForwardLayer, L>> {
        self.layer(WebhookForwardLayer::new(engine))
    }
}

mod sealed {
    pub trait Sealed<L> {}

    impl<L> Sealed<L> for tower::ServiceBuilder<L> {}
}
