//! Where the secrets for a request come from: a static [`SecretSet`] or a per-request lookup.

use std::fmt;
use std::future::{Future, Ready};

use crate::scheme::RequestHead;
use crate::secret::SecretSet;

/// Finds the secrets a request may be signed with.
///
/// Implemented for:
///
/// - [`SecretSet`]: the same secrets for every request (no allocation, no future);
/// - closures `Fn(&RequestHead) -> Option<SecretSet>`: a synchronous per-request lookup, for
///   example by tenant in the path or a header (annotate the argument: `|head: &RequestHead|`);
/// - [`AsyncSecretSource`] (built with [`secret_source_async`]): a lookup that awaits, for
///   example a database.
///
/// `None` (no secret for this request) is answered `401` with
/// [`RejectionKind::NoSecret`](super::RejectionKind::NoSecret).
pub trait SecretSource: Send + Sync + 'static {
    /// The future of an asynchronous lookup ([`SecretLookup::Pending`]).
    type Future: Future<Output = Option<SecretSet>> + Send + 'static;

    /// Looks the secrets for `head` up.
    fn lookup<'a>(&'a self, head: &RequestHead) -> SecretLookup<'a, Self::Future>;
}

/// The answer of a [`SecretSource`].
#[derive(Debug)]
pub enum SecretLookup<'a, F> {
    /// Secrets owned by the source (the static case: nothing is cloned).
    Borrowed(&'a SecretSet),
    /// Secrets found for this request.
    Owned(SecretSet),
    /// No secret for this request.
    NotFound,
    /// The lookup continues asynchronously.
    Pending(F),
}

impl SecretSource for SecretSet {
    type Future = Ready<Option<SecretSet>>;

    #[inline]
    fn lookup<'a>(&'a self, _head: &RequestHead) -> SecretLookup<'a, Self::Future> {
        SecretLookup::Borrowed(self)
    }
}

impl<F> SecretSource for F
where
    F: Fn(&RequestHead) -> Option<SecretSet> + Send + Sync + 'static,
{
    type Future = Ready<Option<SecretSet>>;

    fn lookup<'a>(&'a self, head: &RequestHead) -> SecretLookup<'a, Self::Future> {
        match self(head) {
            Some(secrets) => SecretLookup::Owned(secrets),
            None => SecretLookup::NotFound,
        }
    }
}

/// An asynchronous [`SecretSource`] built from a closure returning a future; see
/// [`secret_source_async`].
#[derive(Clone, Copy)]
pub struct AsyncSecretSource<F> {
    lookup: F,
}

impl<F> fmt::Debug for AsyncSecretSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSecretSource")
            .field("lookup", &format_args!("<fn>"))
            .finish()
    }
}

/// An asynchronous per-request secret lookup. The closure reads what it needs from the head
/// (a path segment, a header) and returns a `'static` future:
///
/// ```
/// use tower_webhooks::inbound::{secret_source_async, WebhookSignatureLayer};
/// use tower_webhooks::scheme::{Cerebrium, RequestHead};
/// use tower_webhooks::SecretSet;
///
/// let layer = WebhookSignatureLayer::with_secret_source(
///     Cerebrium::new(),
///     secret_source_async(|head: &RequestHead| {
///         let tenant = head.uri.path().trim_start_matches("/hooks/").to_owned();
///         async move {
///             // e.g. `SELECT secret FROM tenants WHERE name = $1`
///             (tenant == "acme").then(|| SecretSet::from("acme-secret"))
///         }
///     }),
/// );
/// # let _ = layer;
/// ```
pub fn secret_source_async<F, Fut>(lookup: F) -> AsyncSecretSource<F>
where
    F: Fn(&RequestHead) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<SecretSet>> + Send + 'static,
{
    AsyncSecretSource { lookup }
}

impl<F, Fut> SecretSource for AsyncSecretSource<F>
where
    F: Fn(&RequestHead) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<SecretSet>> + Send + 'static,
{
    type Future = Fut;

    fn lookup<'a>(&'a self, head: &RequestHead) -> SecretLookup<'a, Fut> {
        SecretLookup::Pending((self.lookup)(head))
    }
}
