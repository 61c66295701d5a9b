//! The guard at connect time: a resolver that drops refused addresses and a connector that
//! refuses IP-literal hosts.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

use super::{literal_ip, Refusal, RefusalKind, SsrfGuard};
use crate::delivery::BoxError;

/// A DNS resolver for hyper-util's `HttpConnector` that drops refused addresses.
///
/// A name whose every address is refused fails with a [`Refusal`] in the error chain, so the
/// engine records the attempt as refused (not as a network error to retry).
#[derive(Debug, Clone)]
pub struct GuardedResolver<R = GaiResolver> {
    inner: R,
    guard: SsrfGuard,
}

impl GuardedResolver {
    /// Wraps the system resolver (`getaddrinfo` on a blocking thread).
    pub fn new(guard: SsrfGuard) -> Self {
        Self::with_resolver(GaiResolver::new(), guard)
    }
}

impl<R> GuardedResolver<R> {
    /// Wraps any resolver `Service<Name>`.
    pub fn with_resolver(inner: R, guard: SsrfGuard) -> Self {
        Self { inner, guard }
    }
}

impl<R> Service<Name> for GuardedResolver<R>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard.clone();
        let resolving = self.inner.call(name.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = resolving.await.map_err(Into::into)?.collect();
            let allowed = guard.filter(name.as_str(), addrs).inspect_err(|refusal| {
                tracing::warn!(host = %name, reason = %refusal.detail(), "webhook endpoint refused by the SSRF guard");
            })?;
            Ok(allowed.into_iter())
        })
    }
}

/// A connector wrapper that refuses disallowed schemes and IP-literal hosts before connecting
/// (hyper-util's `HttpConnector` does not resolve IP literals, so the resolver never sees them).
#[derive(Debug, Clone)]
pub struct GuardedConnector<C> {
    inner: C,
    guard: SsrfGuard,
}

impl<C> GuardedConnector<C> {
    /// Wraps a connector `Service<Uri>`.
    pub fn new(inner: C, guard: SsrfGuard) -> Self {
        Self { inner, guard }
    }
}

impl<C> Service<Uri> for GuardedConnector<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = GuardedConnecting<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // Both schemes reach this connector (TLS wraps the connected stream), so only the
        // address is checked here.
        let refused = uri
            .host()
            .and_then(literal_ip)
            .and_then(|ip| self.guard.check_ip(ip).err());
        match refused {
            Some(refusal) => {
                tracing::warn!(reason = %refusal.detail(), "webhook endpoint refused by the SSRF guard");
                GuardedConnecting::refused(refusal)
            }
            None => GuardedConnecting::connecting(self.inner.call(uri)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`GuardedConnector`].
    pub struct GuardedConnecting<F> {
        #[pin]
        inner: Option<F>,
        refusal: Option<Refusal>,
    }
}

impl<F> GuardedConnecting<F> {
    fn connecting(future: F) -> Self {
        Self {
            inner: Some(future),
            refusal: None,
        }
    }

    fn refused(refusal: Refusal) -> Self {
        Self {
            inner: None,
            refusal: Some(refusal),
        }
    }
}

impl<F> fmt::Debug for GuardedConnecting<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedConnecting")
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for GuardedConnecting<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(Box::new(this.refusal.take().unwrap_or_else(|| {
                Refusal::new(RefusalKind::InvalidUrl, "polled after completion")
            })))),
        }
    }
}
