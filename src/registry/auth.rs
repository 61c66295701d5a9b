//! [`Authenticate`]: the application's check that turns a request's headers into an
//! [`Owner`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
pub trait Authenticate: Send + Sync + 'static {
    /// The owner the request acts for, or `None` when it is not authenticated.
    fn authenticate<'a>(&'a self, headers: &'a HeaderMap) -> AuthFuture<'a>;
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
