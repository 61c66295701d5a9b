//! [`Signer`]: the object-safe signing half of a [`Scheme`], for choosing a format at run time.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use super::{Message, Scheme, SignError};
use crate::secret::SecretSet;

/// The signing half of a [`Scheme`], object safe so that a format of the application's own can
/// be handed over as `Arc<dyn Signer>` ([`SharedSigner`]) and chosen by name at run time.
///
/// Every [`Scheme`] is a `Signer` through a blanket implementation, so
/// [`Cerebrium`](super::Cerebrium) and every built-in scheme drop in unchanged:
///
/// ```
/// use std::sync::Arc;
/// use tower_webhooks::scheme::{Cerebrium, Message, SharedSigner, Signer};
///
/// let signer: SharedSigner = Arc::new(Cerebrium::new());
/// let mut headers = http::HeaderMap::new();
/// signer
///     .sign(&Message::new("run-1", 1_731_381_205, b"{}"), &"secret".into(), &mut headers)
///     .unwrap();
/// assert_eq!(signer.name(), "cerebrium");
/// assert!(headers.contains_key("x-cerebrium-webhook-signature"));
/// ```
pub trait Signer: Send + Sync + 'static {
    /// The scheme's stable name ([`Scheme::name`]); a delivery signed by a custom signer
    /// names it, and the engine finds the signer by it.
    fn name(&self) -> &str;

    /// Signs `message`, adding the format's headers to `headers` ([`Scheme::sign`]).
    ///
    /// # Errors
    ///
    /// [`SignError`] when the message cannot be signed with `secrets`.
    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError>;
}

impl<S: Scheme> Signer for S {
    fn name(&self) -> &str {
        Scheme::name(self)
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        Scheme::sign(self, message, secrets, headers)
    }
}

/// A shared, dynamically chosen signer.
pub type SharedSigner = Arc<dyn Signer>;

impl fmt::Debug for dyn Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signer").field(&self.name()).finish()
    }
}
