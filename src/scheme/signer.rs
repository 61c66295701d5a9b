//! [`Signer`]: the object-safe signing half of a [`Scheme`], for choosing a format at run time.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use super::{
    BuiltinScheme, Cerebrium, GitHub, Message, Nextmv, Scheme, SignError, Slack, StandardWebhooks,
    Stripe, Valohai,
};
use crate::secret::SecretSet;

/// The signing half of a [`Scheme`], object safe so that a delivery can carry any format as
/// `Arc<dyn Signer>` ([`SharedSigner`]).
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
    /// The scheme's stable name ([`Scheme::name`]); a durable store persists it to find the
    /// signer again after a restart.
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

    /// The serialisable description of this signer when it is a built-in scheme (or a
    /// [`BuiltinScheme`]), so that a durable store can persist a delivery's format and sign
    /// it again after a restart. `None` for other signers (the default).
    fn describe(&self) -> Option<BuiltinScheme> {
        None
    }
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

    fn describe(&self) -> Option<BuiltinScheme> {
        describe_any(self)
    }
}

/// The [`BuiltinScheme`] a value is, found by its type.
fn describe_any(scheme: &dyn Any) -> Option<BuiltinScheme> {
    if let Some(builtin) = scheme.downcast_ref::<BuiltinScheme>() {
        return Some(builtin.clone());
    }
    macro_rules! builtin {
        ($($ty:ident),*) => {$(
            if let Some(scheme) = scheme.downcast_ref::<$ty>() {
                return Some(BuiltinScheme::from(scheme.clone()));
            }
        )*};
    }
    builtin!(
        Cerebrium,
        Nextmv,
        Stripe,
        StandardWebhooks,
        GitHub,
        Slack,
        Valohai
    );
    None
}

/// A shared, dynamically chosen signer.
pub type SharedSigner = Arc<dyn Signer>;

impl fmt::Debug for dyn Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signer").field(&self.name()).finish()
    }
}
