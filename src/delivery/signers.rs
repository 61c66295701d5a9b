//! Turns a delivery's [`SigningSpec`] into signature headers: a built-in scheme signs from its
//! stored configuration, a signer of the application's own is found by name among those
//! registered with the engine ([`EngineBuilder::custom_signer`](super::EngineBuilder::custom_signer)).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use super::model::{SchemeSpec, SigningSpec};
use crate::scheme::{Message, Scheme, SharedSigner, SignError};

/// The engine's custom signers, by [name](crate::scheme::Signer::name).
#[derive(Clone, Default)]
pub(crate) struct CustomSigners(Arc<HashMap<String, SharedSigner>>);

impl CustomSigners {
    /// Registers `signer` under its name (replacing one of the same name).
    pub(crate) fn add(&mut self, signer: SharedSigner) {
        Arc::make_mut(&mut self.0).insert(signer.name().to_owned(), signer);
    }

    /// Signs `message` as `spec` says, adding the format's headers to `headers`.
    ///
    /// A custom signer this engine does not know fails the attempt (it becomes a dead letter
    /// with that reason) rather than sending it unsigned.
    pub(crate) fn sign(
        &self,
        spec: &SigningSpec,
        message: &Message<'_>,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        match spec.scheme() {
            SchemeSpec::Builtin(scheme) => scheme.sign(message, spec.secrets(), headers),
            SchemeSpec::Custom(name) => match self.0.get(name) {
                Some(signer) => signer.sign(message, spec.secrets(), headers),
                None => Err(SignError::Unsupported(
                    "the delivery's signer is not registered with the engine (custom_signer)",
                )),
            },
        }
    }
}

impl fmt::Debug for CustomSigners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{Cerebrium, Signer};
    use crate::secret::SecretSet;

    struct Custom;

    impl Signer for Custom {
        fn name(&self) -> &str {
            "custom-hmac"
        }

        fn sign(
            &self,
            _: &Message<'_>,
            _: &SecretSet,
            headers: &mut HeaderMap,
        ) -> Result<(), SignError> {
            headers.insert(
                "x-custom-signature",
                http::HeaderValue::from_static("signed"),
            );
            Ok(())
        }
    }

    #[test]
    fn builtin_schemes_sign_from_their_spec_and_custom_ones_by_name() {
        let message = Message::new("run-1", 1_731_381_205, b"{}");
        let signers = CustomSigners::default();
        let mut headers = HeaderMap::new();
        signers
            .sign(
                &SigningSpec::new(Cerebrium::new(), "s3cret"),
                &message,
                &mut headers,
            )
            .unwrap();
        assert!(headers.contains_key("x-cerebrium-webhook-signature"));

        let custom = SigningSpec::new(SchemeSpec::custom("custom-hmac"), "s3cret");
        let mut headers = HeaderMap::new();
        assert!(
            signers.sign(&custom, &message, &mut headers).is_err(),
            "an unknown signer must not send unsigned"
        );
        assert!(headers.is_empty());

        let mut registered = CustomSigners::default();
        registered.add(Arc::new(Custom));
        registered.sign(&custom, &message, &mut headers).unwrap();
        assert_eq!(headers["x-custom-signature"], "signed");
        assert_eq!(format!("{registered:?}"), r#"["custom-hmac"]"#);
    }
}
