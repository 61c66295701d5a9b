//! The streaming HMAC engine every built-in HMAC scheme shares.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

use super::{SecretMatch, Verification, Verified, VerifyError};
use crate::secret::{ct_eq, Secret, SecretSet};

/// The HMAC digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA1 (legacy senders, GitHub's `X-Hub-Signature`).
    Sha1,
    /// HMAC-SHA256, what every modern format uses.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How a MAC is written in a header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase hex (`hexdigest()`); uppercase is accepted when verifying.
    #[default]
    Hex,
    /// Standard base64 with padding; unpadded input is accepted when verifying.
    Base64,
}

impl Encoding {
    /// Encodes a MAC.
    pub fn encode(self, mac: &[u8]) -> String {
        match self {
            Self::Hex => hex::encode(mac),
            Self::Base64 => base64::engine::general_purpose::STANDARD.encode(mac),
        }
    }

    /// Decodes a written MAC; `None` when it is not in this encoding.
    pub fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex::decode(text).ok(),
            Self::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .ok(),
        }
    }
}

/// One keyed MAC in progress.
#[derive(Clone)]
pub(crate) enum MacState {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl MacState {
    pub(crate) fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        match algorithm {
            Algorithm::Sha1 => Self::Sha1(Hmac::new_from_slice(key).expect("any key length")),
            Algorithm::Sha256 => Self::Sha256(Hmac::new_from_slice(key).expect("any key length")),
            Algorithm::Sha512 => Self::Sha512(Hmac::new_from_slice(key).expect("any key length")),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(mac) => mac.update(data),
            Self::Sha256(mac) => mac.update(data),
            Self::Sha512(mac) => mac.update(data),
        }
    }

    pub(crate) fn finalize(self) -> Vec<u8> {
        match self {
            Self::Sha1(mac) => mac.finalize().into_bytes().to_vec(),
            Self::Sha256(mac) => mac.finalize().into_bytes().to_vec(),
            Self::Sha512(mac) => mac.finalize().into_bytes().to_vec(),
        }
    }
}

/// Computes a whole MAC in one go (signing side).
pub(crate) fn compute(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = MacState::new(algorithm, key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
}

/// A streaming HMAC verification: one MAC per candidate secret, fed the signed prefix at
/// [`begin`](super::Scheme::begin), every body frame, then an optional suffix; at the end each
/// MAC is compared in constant time against every candidate signature from the header.
pub struct HmacVerification {
    macs: Vec<(SecretMatch, MacState)>,
    candidates: Vec<Vec<u8>>,
    suffix: Option<Bytes>,
    verified: Verified,
    replay_from_mac: bool,
}

impl std::fmt::Debug for HmacVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerification")
            .field("scheme", &self.verified.scheme)
            .field("secrets", &self.macs.len())
            .field("candidates", &self.candidates.len())
            .finish_non_exhaustive()
    }
}

impl HmacVerification {
    /// Starts one MAC per secret (`key` derives the MAC key from a secret) and feeds each the
    /// `prefix` parts. `candidates` are the decoded signatures from the request.
    ///
    /// # Errors
    ///
    /// [`VerifyErrorKind::NoSecret`](super::VerifyErrorKind::NoSecret) when no secret yields a
    /// key, and `InvalidSignature` when there is no candidate to compare against.
    pub fn start<'k>(
        mut verified: Verified,
        algorithm: Algorithm,
        secrets: &'k SecretSet,
        key: impl Fn(&'k Secret) -> Option<Cow<'k, [u8]>>,
        prefix: &[&[u8]],
        candidates: Vec<Vec<u8>>,
    ) -> Result<Self, VerifyError> {
        if candidates.is_empty() {
            return Err(VerifyError::invalid_signature());
        }
        let mut macs = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            let Some(key) = key(secret) else { continue };
            let mut mac = MacState::new(algorithm, &key);
            for part in prefix {
                mac.update(part);
            }
            macs.push((SecretMatch::new(index, secret), mac));
        }
        if macs.is_empty() {
            return Err(VerifyError::no_secret());
        }
        // A signed message id is the natural de-duplication key; without one, the MAC is.
        let replay_from_mac = verified.message_id.is_none();
        if let Some(id) = &verified.message_id {
            verified.replay_key = Some(format!("{}:{id}", verified.scheme));
        }
        Ok(Self {
            macs,
            candidates,
            suffix: None,
            verified,
            replay_from_mac,
        })
    }

    /// Signed content that follows the body (a Valohai basestring like `{body}.{header:Ts}`).
    pub fn with_suffix(mut self, suffix: Bytes) -> Self {
        if !suffix.is_empty() {
            self.suffix = Some(suffix);
        }
        self
    }
}

impl Verification for HmacVerification {
    #[inline]
    fn update(&mut self, chunk: &[u8]) {
        for (_, mac) in &mut self.macs {
            mac.update(chunk);
        }
    }

    fn finish(self, _body: &Bytes) -> Result<Verified, VerifyError> {
        let Self {
            macs,
            candidates,
            suffix,
            mut verified,
            replay_from_mac,
        } = self;
        for (secret, mut mac) in macs {
            if let Some(suffix) = &suffix {
                mac.update(suffix);
            }
            let computed = mac.finalize();
            // Compare against every candidate without an early exit on the first mismatch.
            let matched = candidates.iter().fold(false, |found, candidate| {
                found | ct_eq(&computed, candidate)
            });
            if matched {
                if replay_from_mac {
                    verified.replay_key =
                        Some(format!("{}:{}", verified.scheme, hex::encode(&computed)));
                }
                verified.secret = Some(secret);
                return Ok(verified);
            }
        }
        Err(VerifyError::invalid_signature())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        let mac = compute(Algorithm::Sha256, b"key", &[b"a", b"b"]);
        assert_eq!(mac, compute(Algorithm::Sha256, b"key", &[b"ab"]));
        for encoding in [Encoding::Hex, Encoding::Base64] {
            assert_eq!(encoding.decode(&encoding.encode(&mac)).unwrap(), mac);
        }
        assert!(Encoding::Hex.decode("zz").is_none());
        assert_eq!(compute(Algorithm::Sha1, b"k", &[b"x"]).len(), 20);
        assert_eq!(compute(Algorithm::Sha512, b"k", &[b"x"]).len(), 64);
    }
}
