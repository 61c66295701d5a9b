//! Standard Webhooks asymmetric signatures: `v1a,<base64 Ed25519 signature>` over the same
//! `{id}.{timestamp}.{body}` as `v1`. The sender signs with a `whsk_` secret key; receivers
//! verify with its `whpk_` public key, so they cannot forge webhooks themselves.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, StreamVerifier, VerifyingKey};
use zeroize::Zeroizing;

use crate::scheme::{SecretMatch, Verified, VerifyError};
use crate::secret::{Secret, SecretSet};

/// `whsk_` + base64 of the Ed25519 secret key: its 32-byte seed, or the 64 bytes of seed and
/// public key that libsodium and several Standard Webhooks libraries write.
pub(crate) const SECRET_KEY_PREFIX: &str = "whsk_";

/// `whpk_` + base64 of the 32-byte Ed25519 public key.
pub(crate) const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// How many `v1a` entries of one header are tried. Each pairing of an entry with a key hashes
/// the whole body again, so an unbounded list would let a sender multiply the work of every
/// request; a rotation needs two or three.
pub(crate) const MAX_SIGNATURES: usize = 8;

/// Standard base64, padded or not (as `v1` signatures and `whsec_` secrets are read).
fn decode_base64(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()
        .map(Zeroizing::new)
}

/// The signing key of a `whsk_` secret; `None` for any other secret, and for a 64-byte form
/// whose public half does not belong to its seed.
pub(crate) fn signing_key(secret: &Secret) -> Option<SigningKey> {
    let encoded = secret.expose_str()?.strip_prefix(SECRET_KEY_PREFIX)?;
    let bytes = decode_base64(encoded)?;
    match bytes.len() {
        32 => Some(SigningKey::from_bytes(bytes[..].try_into().ok()?)),
        64 => SigningKey::from_keypair_bytes(bytes[..].try_into().ok()?).ok(),
        _ => None,
    }
}

/// The public key a secret verifies with: a `whpk_` key, or the public half of a `whsk_` one.
pub(crate) fn verifying_key(secret: &Secret) -> Option<VerifyingKey> {
    let text = secret.expose_str()?;
    match text.strip_prefix(PUBLIC_KEY_PREFIX) {
        Some(encoded) => {
            VerifyingKey::from_bytes(decode_base64(encoded)?[..].try_into().ok()?).ok()
        }
        None => signing_key(secret).map(|key| key.verifying_key()),
    }
}

/// Decodes one `v1a` entry; `None` when it is not base64 of 64 bytes.
pub(crate) fn decode_signature(text: &str) -> Option<Signature> {
    Signature::from_slice(&decode_base64(text)?).ok()
}

/// Signs `parts` (the signed content, in order) with a `whsk_` secret: the `v1a,<base64>` entry,
/// or `None` when the secret is not a usable `whsk_` key.
pub(crate) fn sign(secret: &Secret, parts: &[&[u8]]) -> Option<String> {
    let key = signing_key(secret)?;
    let signature = key.sign(&parts.concat());
    Some(format!("v1a,{}", STANDARD.encode(signature.to_bytes())))
}

/// A streaming Ed25519 verification: one verifier per pairing of a `v1a` signature with a
/// public key of the set, fed the signed prefix, every body frame, and checked at the end.
pub(crate) struct AsymmetricVerification {
    verifiers: Vec<(SecretMatch, StreamVerifier)>,
    verified: Verified,
}

impl AsymmetricVerification {
    /// Starts the verifiers; `None` when no secret of the set is an Ed25519 key or no
    /// signature is well formed for one.
    pub(crate) fn start(
        verified: Verified,
        secrets: &SecretSet,
        signatures: &[Signature],
        prefix: &[&[u8]],
    ) -> Option<Self> {
        let mut verifiers = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            let Some(key) = verifying_key(secret) else {
                continue;
            };
            for signature in signatures {
                // A signature whose scalar is not canonical cannot verify under any key.
                let Ok(mut verifier) = key.verify_stream(signature) else {
                    continue;
                };
                for part in prefix {
                    verifier.update(part);
                }
                verifiers.push((SecretMatch::new(index, secret), verifier));
            }
        }
        (!verifiers.is_empty()).then_some(Self {
            verifiers,
            verified,
        })
    }

    /// Feeds the next body frame to every verifier.
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        for (_, verifier) in &mut self.verifiers {
            verifier.update(chunk);
        }
    }

    /// The verdict: the first secret whose key verifies one of the signatures.
    pub(crate) fn finish(self) -> Result<Verified, VerifyError> {
        let Self {
            verifiers,
            mut verified,
        } = self;
        let secret = verifiers
            .into_iter()
            .find_map(|(secret, verifier)| verifier.finalize_and_verify().is_ok().then_some(secret))
            .ok_or_else(VerifyError::invalid_signature)?;
        verified.secret = Some(secret);
        verified.replay_from_message_id();
        Ok(verified)
    }
}

impl fmt::Debug for AsymmetricVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsymmetricVerification")
            .field("verifiers", &self.verifiers.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_secret(seed: [u8; 32]) -> Secret {
        Secret::new(format!("{SECRET_KEY_PREFIX}{}", STANDARD.encode(seed)))
    }

    #[test]
    fn both_secret_key_forms_give_the_same_key_and_a_mismatched_pair_none() {
        let seed = [7u8; 32];
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let short = seed_secret(seed);
        let long = Secret::new(format!(
            "{SECRET_KEY_PREFIX}{}",
            STANDARD.encode([seed, public].concat())
        ));
        assert_eq!(
            signing_key(&short).unwrap().to_bytes(),
            signing_key(&long).unwrap().to_bytes()
        );
        let other = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes();
        let mismatched = Secret::new(format!(
            "{SECRET_KEY_PREFIX}{}",
            STANDARD.encode([seed, other].concat())
        ));
        assert!(signing_key(&mismatched).is_none());
        let public = Secret::new(format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(public)));
        assert_eq!(verifying_key(&public), verifying_key(&short));
        // A public key signs nothing; an HMAC secret is neither kind of key.
        assert!(signing_key(&public).is_none());
        let hmac = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(signing_key(&hmac).is_none() && verifying_key(&hmac).is_none());
        for bad in ["whpk_", "whpk_AAAA", "whsk_!!!!", "whsk_AAAA"] {
            let secret = Secret::new(bad);
            assert!(verifying_key(&secret).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_no_key_material() {
        let secret = seed_secret([9u8; 32]);
        let signature = decode_signature(
            sign(&secret, &[b"msg.1.", b"{}"])
                .unwrap()
                .strip_prefix("v1a,")
                .unwrap(),
        )
        .unwrap();
        let verification = AsymmetricVerification::start(
            Verified::new("standard_webhooks"),
            &secret.clone().into(),
            &[signature],
            &[b"msg.1."],
        )
        .unwrap();
        let shown = format!("{verification:?} {secret:?}");
        assert!(!shown.contains(&STANDARD.encode([9u8; 32])), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
