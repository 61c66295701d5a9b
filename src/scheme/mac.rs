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

    /// The MAC, inline (no allocation).
    pub(crate) fn finalize(self) -> MacBytes {
        match self {
            Self::Sha1(mac) => MacBytes::from_slice(&mac.finalize().into_bytes()),
            Self::Sha256(mac) => MacBytes::from_slice(&mac.finalize().into_bytes()),
            Self::Sha512(mac) => MacBytes::from_slice(&mac.finalize().into_bytes()),
        }
    }
}

/// The longest MAC (HMAC-SHA512) in bytes.
const MAX_MAC: usize = 64;

/// A MAC (or a decoded candidate signature) of at most 64 bytes, stored inline.
#[derive(Clone, Copy)]
pub(crate) struct MacBytes {
    bytes: [u8; MAX_MAC],
    len: u8,
}

impl MacBytes {
    /// Copies `bytes`; callers guarantee `bytes.len() <= 64`.
    fn from_slice(bytes: &[u8]) -> Self {
        let mut out = Self {
            bytes: [0; MAX_MAC],
            len: bytes.len() as u8,
        };
        out.bytes[..bytes.len()].copy_from_slice(bytes);
        out
    }

    /// Decodes hex of at most 128 characters inline; `None` when it is not hex or longer.
    fn from_hex(text: &str) -> Option<Self> {
        let len = text.len() / 2;
        if !text.len().is_multiple_of(2) || len > MAX_MAC {
            return None;
        }
        let mut out = Self {
            bytes: [0; MAX_MAC],
            len: len as u8,
        };
        hex::decode_to_slice(text, &mut out.bytes[..len]).ok()?;
        Some(out)
    }
}

impl std::ops::Deref for MacBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for MacBytes {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The candidate signatures of a request: one decoded inline (the common case), or a list.
pub(crate) enum Candidates {
    One(MacBytes),
    Many(Vec<Vec<u8>>),
}

impl Candidates {
    /// One signature in `encoding`; `None` when `text` is not in that encoding. Hex MACs of
    /// up to 64 bytes decode without allocating.
    pub(crate) fn decode(encoding: Encoding, text: &str) -> Option<Self> {
        if encoding == Encoding::Hex && text.len() <= 2 * MAX_MAC {
            return MacBytes::from_hex(text).map(Self::One);
        }
        encoding
            .decode(text)
            .map(|candidate| Self::Many(vec![candidate]))
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::One(_) => false,
            Self::Many(candidates) => candidates.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(candidates) => candidates.len(),
        }
    }

    /// Whether `computed` equals any candidate, comparing against every one in constant time
    /// (no early exit on the first mismatch).
    fn matches(&self, computed: &[u8]) -> bool {
        match self {
            Self::One(candidate) => ct_eq(computed, candidate),
            Self::Many(candidates) => candidates
                .iter()
                .fold(false, |found, candidate| found | ct_eq(computed, candidate)),
        }
    }
}

/// Computes a whole MAC in one go (signing side).
pub(crate) fn compute(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = MacState::new(algorithm, key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().to_vec()
}

/// A streaming HMAC verification: one MAC per candidate secret, fed the signed prefix at
/// [`begin`](super::Scheme::begin), every body frame, then an optional suffix; at the end each
/// MAC is compared in constant time against every candidate signature from the header.
pub struct HmacVerification {
    macs: Vec<(SecretMatch, MacState)>,
    candidates: Candidates,
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
        verified: Verified,
        algorithm: Algorithm,
        secrets: &'k SecretSet,
        key: impl Fn(&'k Secret) -> Option<Cow<'k, [u8]>>,
        prefix: &[&[u8]],
        candidates: Vec<Vec<u8>>,
    ) -> Result<Self, VerifyError> {
        Self::start_with(
            verified,
            algorithm,
            secrets,
            key,
            prefix,
            Candidates::Many(candidates),
        )
    }

    /// [`start`](Self::start) with candidates that may be stored inline.
    pub(crate) fn start_with<'k>(
        mut verified: Verified,
        algorithm: Algorithm,
        secrets: &'k SecretSet,
        key: impl Fn(&'k Secret) -> Option<Cow<'k, [u8]>>,
        prefix: &[&[u8]],
        candidates: Candidates,
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
            verified.replay_key = Some(replay_key(&verified.scheme, id));
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
            if candidates.matches(&computed) {
                if replay_from_mac {
                    let mut hex = [0u8; 2 * MAX_MAC];
                    let hex = &mut hex[..2 * computed.len()];
                    hex::encode_to_slice(&*computed, hex).expect("twice the MAC length");
                    let hex = std::str::from_utf8(hex).expect("hex is ASCII");
                    verified.replay_key = Some(replay_key(&verified.scheme, hex));
                }
                verified.secret = Some(secret);
                return Ok(verified);
            }
        }
        Err(VerifyError::invalid_signature())
    }
}

/// `{scheme}:{key}` in one exactly sized allocation.
fn replay_key(scheme: &str, key: &str) -> String {
    let mut out = String::with_capacity(scheme.len() + 1 + key.len());
    out.push_str(scheme);
    out.push(':');
    out.push_str(key);
    out
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
