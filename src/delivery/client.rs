//! The HTTP client behind the engine: hyper-util's pooled client (rustls + webpki roots) with
//! the SSRF guard in its connector, reached as a tower `Service` so you can add layers.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::ssrf::{GuardedConnector, GuardedResolver, SsrfGuard};
use super::BoxError;

/// The response body type the engine reads.
pub(crate) type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

type SendFuture = Pin<Box<dyn Future<Output = Result<Response<ClientBody>, BoxError>> + Send>>;

/// The TCP connector with the SSRF guard (resolver and IP-literal check).
type GuardedHttpConnector = GuardedConnector<HttpConnector<GuardedResolver>>;

/// What [`Connector`] wraps: TLS over the guarded TCP connector when `rustls` is compiled in.
#[cfg(feature = "rustls")]
type Transport = hyper_rustls::HttpsConnector<GuardedHttpConnector>;
#[cfg(not(feature = "rustls"))]
type Transport = GuardedHttpConnector;

/// The connector of the default client: hyper-util's TCP connector behind the SSRF guard
/// ([`GuardedResolver`] for host names, [`GuardedConnector`] for IP literals), with TLS for
/// `https://` endpoints when the `rustls` feature is on.
///
/// It is the same type with or without TLS, so code that names it (or [`HyperClient`])
/// compiles under every set of features; `rustls` only adds `https://` support.
#[derive(Clone)]
pub struct Connector {
    transport: Transport,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &cfg!(feature = "rustls"))
            .finish_non_exhaustive()
    }
}

impl Service<Uri> for Connector {
    type Response = Connection;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.transport.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Connecting {
            inner: self.transport.call(uri),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Connector`]: a [`Connection`], or why none was made (an SSRF refusal,
    /// a connect or TLS error).
    pub struct Connecting {
        #[pin]
        inner: <Transport as Service<Uri>>::Future,
    }
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting").finish_non_exhaustive()
    }
}

impl Future for Connecting {
    type Output = Result<Connection, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both transports already fail with a `BoxError` (an SSRF refusal, a connect or TLS
        // error), so only the stream is wrapped.
        self.project()
            .inner
            .poll(cx)
            .map(|connected| connected.map(|stream| Connection { stream }))
    }
}

/// One connection of [`Connector`]: TCP, or TLS over TCP when the `rustls` feature is on.
pub struct Connection {
    stream: <Transport as Service<Uri>>::Response,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl hyper::rt::Read for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
}

impl hyper_util::client::legacy::connect::Connection for Connection {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.stream.connected()
    }
}

/// The default client as a concrete tower `Service<Request<Full<Bytes>>>`: wrap it in your own
/// layers, then hand it to [`DeliveryClient::from_service`].
pub type HyperClient = Client<Connector, Full<Bytes>>;

/// The client the engine sends attempts with: any tower `Service` behind a cheap, cloneable
/// handle.
///
/// ```
/// use tower_webhooks::delivery::{ClientBuilder, DeliveryClient, SsrfGuard};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // The default: pooled hyper-util client, rustls, SSRF guard in the connector.
/// let client = DeliveryClient::new(SsrfGuard::new());
///
/// // Or build the service, wrap it in layers (timeouts, tracing, mTLS…), and hand it over.
/// let service = ClientBuilder::new(SsrfGuard::new()).build_service();
/// let client = DeliveryClient::from_service(service);
/// # let _ = client;
/// # }
/// ```
///
/// A custom service keeps the engine's own checks (scheme, IP literals) but only the default
/// connector checks resolved addresses: build yours on [`ClientBuilder::build_service`] or
/// [`GuardedResolver`] to keep that protection.
#[derive(Clone)]
pub struct DeliveryClient {
    send: Arc<dyn Fn(Request<Full<Bytes>>) -> SendFuture + Send + Sync>,
}

impl fmt::Debug for DeliveryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeliveryClient")
    }
}

impl DeliveryClient {
    /// The default client with `guard` in its connector.
    pub fn new(guard: SsrfGuard) -> Self {
        ClientBuilder::new(guard).build()
    }

    /// Any tower service that sends a request and answers with a response.
    pub fn from_service<S, B>(service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            send: Arc::new(move |request| {
                let mut service = service.clone();
                Box::pin(async move {
                    std::future::poll_fn(|cx| service.poll_ready(cx))
                        .await
                        .map_err(Into::into)?;
                    let response = service.call(request).await.map_err(Into::into)?;
                    Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
                })
            }),
        }
    }

    /// Sends one request.
    pub(crate) fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<ClientBody>, BoxError>> + Send {
        (self.send)(request)
    }
}

/// Configures the default client.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    guard: SsrfGuard,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
}

impl ClientBuilder {
    /// Defaults: 5 s connect timeout, idle connections kept 90 s, 32 per host.
    pub fn new(guard: SsrfGuard) -> Self {
        Self {
            guard,
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
        }
    }

    /// The TCP connect timeout of each attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections are kept per host.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The connector: guarded resolver, guarded IP literals, TLS when compiled in.
    pub fn build_connector(&self) -> Connector {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(self.guard.clone()));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let guarded = GuardedConnector::new(http, self.guard.clone());
        #[cfg(feature = "rustls")]
        let transport = {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .expect("the ring provider supports rustls' default protocol versions")
                .https_or_http()
                .enable_http1();
            #[cfg(feature = "http2")]
            let builder = builder.enable_http2();
            builder.wrap_connector(guarded)
        };
        #[cfg(not(feature = "rustls"))]
        let transport = guarded;
        Connector { transport }
    }

    /// The client as a tower service (pooled; redirects are never followed).
    pub fn build_service(self) -> HyperClient {
        let connector = self.build_connector();
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector)
    }

    /// The client behind a [`DeliveryClient`] handle.
    pub fn build(self) -> DeliveryClient {
        DeliveryClient::from_service(self.build_service())
    }
}
