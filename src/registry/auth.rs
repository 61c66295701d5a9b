//! [`Authenticate`]: the application's check that turns a request (its headers, or what an
//! outer layer of the application put in its extensions) into an [`Owner`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::request::Parts;
use http::HeaderMap;

use super::model::Owner;
use crate::secret::TokenDigest;

/// The future [`Authenticate::authenticate`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Option<Owner>> + Send + 'a>>;

/// The application's authentication of management requests: the headers in, the tenant out
/// (`None` answers `401`). It plugs the registry into the application's own API keys.
///
/// Any `Fn(&HeaderMap) -> Option<Owner>` is one; implement the trait for an asynchronous
/// check (a database lookup). [`bearer_token`] extracts the `Authorization: Bearer` token,
/// and [`BearerTokens`] is a ready-made static table.
///
/// ```
/// use tower_webhooks::registry::{bearer_token, Authenticate, Owner};
///
/// let auth = |headers: &http::HeaderMap| {
///     (bearer_token(headers)? == "key-acme").then(|| Owner::new("acme"))
/// };
/// let mut headers = http::HeaderMap::new();
/// headers.insert("authorization", "Bearer key-acme".parse().unwrap());
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(auth.authenticate(&headers).await, Some(Owner::new("acme")));
/// # });
/// ```
///
/// When the application already authenticates in an outer layer, reuse its result: the
/// registry calls [`authenticate_parts`](Self::authenticate_parts) with the whole request
/// head, extensions included, and [`PartsAuth`] turns a closure over it into a check.
pub trait Authenticate: Send + Sync + 'static {
    /// The owner the request acts for, or `None` when it is not authenticated.
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a>;

    /// The owner a request acts for, from its head: what the registry calls. By default
    /// [`authenticate`](Self::authenticate) with the headers; override it to read the
    /// request's extensions (an identity an outer authentication layer inserted).
    fn authenticate_parts<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        self.authenticate(&parts.headers)
    }
}

/// An [`Authenticate`] from a closure over the request head, so an identity the application's
/// own authentication layer put in the request's extensions is reused.
///
/// ```
/// use tower_webhooks::registry::{Authenticate, Owner, PartsAuth};
///
/// /// What the application's authentication middleware inserts.
/// #[derive(Clone)]
/// struct Tenant(String);
///
/// let auth = PartsAuth::new(|parts: &http::request::Parts| {
///     parts.extensions.get::<Tenant>().map(|tenant| Owner::new(tenant.0.clone()))
/// });
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Tenant("acme".into()));
/// let (parts, ()) = request.into_parts();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(auth.authenticate_parts(&parts).await, Some(Owner::new("acme")));
/// # });
/// ```
#[derive(Clone)]
pub struct PartsAuth<F>(F);

impl<F> PartsAuth<F>
where
    F: Fn(&Parts) -> Option<Owner> + Send + Sync + 'static,
{
    /// The check `check`.
    pub fn new(check: F) -> Self {
        Self(check)
    }
}

impl<F> fmt::Debug for PartsAuth<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartsAuth").finish_non_exhaustive()
    }
}

impl<F> Authenticate for PartsAuth<F>
where
    F: Fn(&Parts) -> Option<Owner> + Send + Sync + 'static,
{
    /// Headers alone: a request head with those headers and no extensions.
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.headers = headers.clone();
        Box::pin(std::future::ready((self.0)(&parts)))
    }

    fn authenticate_parts<'a>(&'a self, parts: &'a Parts) -> AuthFuture<'a> {
        Box::pin(std::future::ready((self.0)(parts)))
    }
}

impl<F> Authenticate for F
where
    F: Fn(&HeaderMap) -> Option<Owner> + Send + Sync + 'static,
{
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self(headers)))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme name is
/// case-insensitive), if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A static table of bearer tokens and the owner each one acts for, compared in constant
/// time. `Debug` never prints the tokens.
#[derive(Clone, Default)]
pub struct BearerTokens {
    /// Only the tokens' digests are kept: compared in constant time and fixed size, so
    /// neither a token's content nor its length shows in the time a check takes.
    tokens: Arc<HashMap<TokenDigest, Owner>>,
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokens")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl BearerTokens {
    /// An empty table (every request is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `token`, acting for `owner`.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>, owner: impl Into<Owner>) -> Self {
        let token: String = token.into();
        Arc::make_mut(&mut self.tokens).insert(TokenDigest::of(token.as_bytes()), owner.into());
        self
    }
}

impl Authenticate for BearerTokens {
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a> {
        let owner = bearer_token(headers).and_then(|presented| {
            // Every entry is compared, so the time does not depend on which one matches.
            let presented = TokenDigest::of(presented.as_bytes());
            let mut found = None;
            for (token, owner) in self.tokens.iter() {
                if token.ct_eq(&presented) {
                    found = Some(owner.clone());
                }
            }
            found
        });
        Box::pin(std::future::ready(owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn static_tokens() {
        let auth = BearerTokens::new()
            .token("k1", "acme")
            .token("k2", "globex");
        assert_eq!(
            auth.authenticate(&headers("Bearer k2")).await,
            Some(Owner::new("globex"))
        );
        assert_eq!(auth.authenticate(&headers("Bearer k3")).await, None);
        assert_eq!(auth.authenticate(&headers("Bearer k")).await, None);
        assert_eq!(auth.authenticate(&headers("Bearer k22")).await, None);
        // Only fixed-size digests are kept and compared, so neither a token's content nor
        // its length shows in the time a check takes.
        assert!(auth
            .tokens
            .keys()
            .all(|digest| *digest == TokenDigest::of(b"k1") || *digest == TokenDigest::of(b"k2")));
        assert!(!format!("{auth:?}").contains("k1"));
    }
}
