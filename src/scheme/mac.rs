//! The streaming HMAC engine every built-in HMAC scheme shares.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};

use super::{SecretMatch, Verification, Verified, VerifyError};
use crate::secret::{ct_eq, KeyDerivation, Secret, SecretSet};

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

/// One keyed MAC in progress. SHA-512's state is boxed so that the common SHA-256 state
/// stays half the size.
#[derive(Clone)]
pub(crate) enum MacState {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Box<Hmac<sha2::Sha512>>),
}

impl MacState {
    pub(crate) fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC takes keys of any length.
        const ANY_KEY: &str = "HMAC accepts keys of any length";
        match algorithm {
            Algorithm::Sha1 => Self::Sha1(Hmac::new_from_slice(key).expect(ANY_KEY)),
            Algorithm::Sha256 => Self::Sha256(Hmac::new_from_slice(key).expect(ANY_KEY)),
            Algorithm::Sha512 => Self::Sha512(Box::new(Hmac::new_from_slice(key).expect(ANY_KEY))),
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
#[derive(Clone, Copy, PartialEq, Eq)]
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
    fn from_hex(text: &[u8]) -> Option<Self> {
        let len = text.len() / 2;
        if !text.len().is_multiple_of(2) || len > MAX_MAC {
            return None;
        }
        let mut out = Self {
            bytes: [0; MAX_MAC],
            len: len as u8,
        };
        // Eight digits per step as one word (a SHA-256 MAC is eight steps), the odd rest
        // through the tables; validity is checked once at the end. `hex::decode_to_slice`
        // decodes a digit pair at a time with a check per byte, which costs ten times as much
        // on a request's MAC (docs/primitives.md).
        let words = text.chunks_exact(8);
        let rest = words.remainder();
        let mut invalid = 0u64;
        for (word, bytes) in words.zip(out.bytes.chunks_exact_mut(4)) {
            let (decoded, bad) = decode_hex_word(u64::from_le_bytes(
                word.try_into().expect("chunks of eight"),
            ));
            invalid |= bad;
            bytes.copy_from_slice(&decoded.to_le_bytes());
        }
        let done = text.len() / 8 * 4;
        for (byte, pair) in out.bytes[done..len].iter_mut().zip(rest.chunks_exact(2)) {
            let value = HEX_HIGH[usize::from(pair[0])] | HEX_LOW[usize::from(pair[1])];
            invalid |= u64::from(value & INVALID_DIGIT);
            *byte = value as u8;
        }
        (invalid == 0).then_some(out)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Decodes eight hex digits (either case) held little-endian in `word` into four bytes, with
/// a non-zero flag when any of them is not a hex digit. Range checks run on 7-bit bytes so
/// that no carry crosses from one byte into the next.
#[inline]
fn decode_hex_word(word: u64) -> (u32, u64) {
    // High bit of each byte set where that byte is at least `low`.
    let at_least = |bytes: u64, low: u8| (bytes + ONES * u64::from(0x80 - low)) & HIGH_BITS;
    let ascii = word & !HIGH_BITS;
    let digit = at_least(ascii, b'0') & !at_least(ascii, b'9' + 1);
    let folded = ascii | (ONES * 0x20);
    let letter = at_least(folded, b'a') & !at_least(folded, b'f' + 1);
    let invalid = ((digit | letter) ^ HIGH_BITS) | (word & HIGH_BITS);
    // '0'..'9' are 0x3_, 'a'..'f' and 'A'..'F' are 0x_1..0x_6 with bit 6 set (worth 9 more).
    let value = (word & (ONES * 0x0f)) + ((word >> 6) & ONES) * 9;
    let pairs = ((value << 4) | (value >> 8)) & 0x00ff_00ff_00ff_00ff;
    let packed = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    ((packed | (packed >> 16)) as u32, invalid)
}

/// Set in [`HEX_HIGH`] and [`HEX_LOW`] for a byte that is not a hex digit.
const INVALID_DIGIT: u16 = 0x100;

/// The value of each ASCII hex digit (either case) shifted into the high nibble.
static HEX_HIGH: [u16; 256] = hex_table(4);
/// The value of each ASCII hex digit (either case).
static HEX_LOW: [u16; 256] = hex_table(0);

const fn hex_table(shift: u32) -> [u16; 256] {
    let mut table = [INVALID_DIGIT; 256];
    let mut i = 0;
    while i < 16 {
        let value = (i as u16) << shift;
        if i < 10 {
            table[b'0' as usize + i] = value;
        } else {
            table[b'a' as usize + i - 10] = value;
            table[b'A' as usize + i - 10] = value;
        }
        i += 1;
    }
    table
}

impl MacBytes {
    /// Decodes standard base64 (padded or not) into the inline buffer; `None` when it is
    /// not base64 or decodes to more than 64 bytes.
    fn from_base64(text: &str) -> Option<Self> {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        let mut out = Self {
            bytes: [0; MAX_MAC],
            len: 0,
        };
        let len = STANDARD
            .decode_slice(text, &mut out.bytes)
            .or_else(|_| STANDARD_NO_PAD.decode_slice(text, &mut out.bytes))
            .ok()?;
        out.len = len as u8;
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

/// The candidate signatures of a request, decoded inline: no allocation unless a header
/// carries more than one.
#[derive(Default)]
pub(crate) struct Candidates {
    first: Option<MacBytes>,
    rest: Vec<MacBytes>,
    /// A well-encoded signature longer than any MAC: it counts (the header is not malformed)
    /// but can match nothing.
    overlong: bool,
}

impl Candidates {
    /// One signature in `encoding`; `None` when `text` is not in that encoding.
    pub(crate) fn decode(encoding: Encoding, text: &str) -> Option<Self> {
        let mut candidates = Self::default();
        candidates.push(encoding, text).then_some(candidates)
    }

    /// One hex signature from a header's bytes; `None` when it is not hex.
    pub(crate) fn decode_hex(text: &[u8]) -> Option<Self> {
        let mut candidates = Self::default();
        candidates.push_hex(text).then_some(candidates)
    }

    /// Adds one signature in `encoding`; `false` when `text` is not in that encoding.
    pub(crate) fn push(&mut self, encoding: Encoding, text: &str) -> bool {
        let inline = match encoding {
            Encoding::Hex => return self.push_hex(text.as_bytes()),
            Encoding::Base64 => MacBytes::from_base64(text),
        };
        // The allocating decoder only for what the inline decoder's length estimate refused.
        let decoded = match inline {
            Some(mac) => Some(Some(mac)),
            None => encoding
                .decode(text)
                .map(|mac| (mac.len() <= MAX_MAC).then(|| MacBytes::from_slice(&mac))),
        };
        match decoded {
            Some(Some(mac)) => self.push_mac(mac),
            Some(None) => self.overlong = true,
            None => return false,
        }
        true
    }

    /// Adds one hex signature (either case); `false` when `text` is not hex.
    fn push_hex(&mut self, text: &[u8]) -> bool {
        if text.len() <= 2 * MAX_MAC {
            return self.push_inline(MacBytes::from_hex(text));
        }
        // Longer than any MAC: well-formed hex still counts, but can match nothing.
        let hex = text.len().is_multiple_of(2) && text.iter().all(u8::is_ascii_hexdigit);
        self.overlong |= hex;
        hex
    }

    fn push_inline(&mut self, mac: Option<MacBytes>) -> bool {
        mac.map(|mac| self.push_mac(mac)).is_some()
    }

    fn push_mac(&mut self, mac: MacBytes) {
        if self.first.is_none() {
            self.first = Some(mac);
        } else {
            self.rest.push(mac);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none() && !self.overlong
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len() + usize::from(self.overlong)
    }

    /// Whether `computed` equals any candidate, comparing against every one in constant time
    /// (no early exit on the first mismatch).
    fn matches(&self, computed: &[u8]) -> bool {
        self.first
            .iter()
            .chain(&self.rest)
            .fold(false, |found, candidate| found | ct_eq(computed, candidate))
    }
}

impl From<Vec<Vec<u8>>> for Candidates {
    fn from(macs: Vec<Vec<u8>>) -> Self {
        let mut candidates = Self::default();
        for mac in macs {
            if mac.len() <= MAX_MAC {
                candidates.push_mac(MacBytes::from_slice(&mac));
            } else {
                candidates.overlong = true;
            }
        }
        candidates
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
pub struct HmacVerification(Box<HmacState>);

/// [`HmacVerification`]'s state, boxed: it is moved several times between `begin` and
/// `finish`, and a box moves as one pointer.
struct HmacState {
    macs: Macs,
    candidates: Candidates,
    suffix: Option<Bytes>,
    verified: Verified,
}

/// The MACs in progress: one inline (a single secret, the common case), or a list during a
/// rotation.
enum Macs {
    One((SecretMatch, MacState)),
    Many(Vec<(SecretMatch, MacState)>),
}

impl Macs {
    /// Collects `macs`, allocating only for a second one; `None` when there is none.
    #[inline]
    fn collect(mut macs: impl Iterator<Item = (SecretMatch, MacState)>) -> Option<Self> {
        let first = macs.next()?;
        let Some(second) = macs.next() else {
            return Some(Self::One(first));
        };
        let mut all = vec![first, second];
        all.extend(macs);
        Some(Self::Many(all))
    }

    fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Many(macs) => macs.len(),
        }
    }

    fn states_mut(&mut self) -> &mut [(SecretMatch, MacState)] {
        match self {
            Self::One(pair) => std::slice::from_mut(pair),
            Self::Many(macs) => macs,
        }
    }
}

impl std::fmt::Debug for HmacVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacVerification")
            .field("scheme", &self.0.verified.scheme)
            .field("secrets", &self.0.macs.len())
            .field("candidates", &self.0.candidates.len())
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
        Self::start_with(verified, algorithm, secrets, key, prefix, candidates.into())
    }

    /// [`start`](Self::start) with candidates decoded inline.
    pub(crate) fn start_with<'k>(
        verified: Verified,
        algorithm: Algorithm,
        secrets: &'k SecretSet,
        key: impl Fn(&'k Secret) -> Option<Cow<'k, [u8]>>,
        prefix: &[&[u8]],
        candidates: Candidates,
    ) -> Result<Self, VerifyError> {
        let macs = secrets.iter().enumerate().filter_map(|(index, secret)| {
            let mac = MacState::new(algorithm, &key(secret)?);
            Some((SecretMatch::new(index, secret), mac))
        });
        Self::from_macs(verified, macs, prefix, candidates)
    }

    /// HMAC-SHA256 with each secret read as `derivation` says, starting from the secret's
    /// cached keyed state.
    ///
    /// Written so that the single-secret state is cloned straight into the result: the
    /// state is most of this value's size, and every move of it is a copy.
    #[inline]
    pub(crate) fn start_sha256(
        verified: Verified,
        derivation: KeyDerivation,
        secrets: &SecretSet,
        prefix: &[&[u8]],
        candidates: Candidates,
    ) -> Result<Self, VerifyError> {
        if candidates.is_empty() {
            return Err(VerifyError::invalid_signature());
        }
        let mut keyed = secrets
            .iter()
            .enumerate()
            .filter_map(|(index, secret)| Some((index, secret, secret.keyed_sha256(derivation)?)));
        let first = keyed.next().ok_or_else(VerifyError::no_secret)?;
        let start = |(index, secret, keyed): (usize, &Secret, &Hmac<sha2::Sha256>)| {
            (
                SecretMatch::new(index, secret),
                MacState::Sha256(keyed.clone()),
            )
        };
        let mut this = Self(Box::new(HmacState {
            macs: Macs::One(start(first)),
            candidates,
            suffix: None,
            verified,
        }));
        if let Some(second) = keyed.next() {
            // A rotation: one MAC per secret.
            let mut all = vec![start(first), start(second)];
            all.extend(keyed.map(start));
            this.0.macs = Macs::Many(all);
        }
        this.feed_prefix(prefix);
        Ok(this)
    }

    /// Feeds every MAC the signed prefix and sets the de-duplication basis a signed message
    /// id gives.
    #[inline]
    fn feed_prefix(&mut self, prefix: &[&[u8]]) {
        let state = &mut *self.0;
        // A short prefix (an id, a timestamp, separators) is joined first: an update of the
        // MAC costs more than copying a few bytes.
        let mut joined = [0u8; 128];
        let len: usize = prefix.iter().map(|part| part.len()).sum();
        let parts: &[&[u8]] = match joined.get_mut(..len) {
            Some(buffer) => {
                let mut rest = &mut buffer[..];
                for part in prefix {
                    let (head, tail) = rest.split_at_mut(part.len());
                    head.copy_from_slice(part);
                    rest = tail;
                }
                &[&joined[..len]]
            }
            None => prefix,
        };
        for (_, mac) in state.macs.states_mut() {
            for part in parts {
                mac.update(part);
            }
        }
        // A signed message id is the natural de-duplication key; without one, the MAC is
        // (set in `finish`).
        if state.verified.message_id.is_some() && !state.verified.has_replay_basis() {
            state.verified.replay_from_message_id();
        }
    }

    #[inline]
    fn from_macs(
        verified: Verified,
        macs: impl Iterator<Item = (SecretMatch, MacState)>,
        prefix: &[&[u8]],
        candidates: Candidates,
    ) -> Result<Self, VerifyError> {
        if candidates.is_empty() {
            return Err(VerifyError::invalid_signature());
        }
        let macs = Macs::collect(macs).ok_or_else(VerifyError::no_secret)?;
        let mut this = Self(Box::new(HmacState {
            macs,
            candidates,
            suffix: None,
            verified,
        }));
        this.feed_prefix(prefix);
        Ok(this)
    }

    /// Signed content that follows the body (a Valohai basestring like `{body}.{header:Ts}`).
    pub fn with_suffix(mut self, suffix: Bytes) -> Self {
        if !suffix.is_empty() {
            self.0.suffix = Some(suffix);
        }
        self
    }
}

impl Verification for HmacVerification {
    #[inline]
    fn update(&mut self, chunk: &[u8]) {
        match &mut self.0.macs {
            Macs::One((_, mac)) => mac.update(chunk),
            Macs::Many(macs) => {
                for (_, mac) in macs {
                    mac.update(chunk);
                }
            }
        }
    }

    fn finish(self, _body: &Bytes) -> Result<Verified, VerifyError> {
        // Worked on in its box, out of which only the MACs and the verdict move: the state
        // is large, and every move of all of it is a copy.
        let mut state = self.0;
        let suffix = state.suffix.take();
        let candidates = &state.candidates;
        let check = |mut mac: MacState| {
            if let Some(suffix) = &suffix {
                mac.update(suffix);
            }
            let computed = mac.finalize();
            candidates.matches(&computed).then_some(computed)
        };
        let matched = match std::mem::replace(&mut state.macs, Macs::Many(Vec::new())) {
            Macs::One((secret, mac)) => check(mac).map(|computed| (secret, computed)),
            Macs::Many(macs) => macs
                .into_iter()
                .find_map(|(secret, mac)| Some((secret, check(mac)?))),
        };
        let (secret, computed) = matched.ok_or_else(VerifyError::invalid_signature)?;
        if !state.verified.has_replay_basis() {
            state.verified.replay_from_mac(computed);
        }
        state.verified.secret = Some(secret);
        Ok(state.verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_decode_inline_and_keep_overlong_ones_unmatchable() {
        let mac = compute(Algorithm::Sha512, b"k", &[b"x"]);
        for encoding in [Encoding::Hex, Encoding::Base64] {
            let candidates = Candidates::decode(encoding, &encoding.encode(&mac)).unwrap();
            assert!(candidates.matches(&mac), "{encoding:?}");
            let long = encoding.encode(&[mac.as_slice(), b"extra"].concat());
            let overlong = Candidates::decode(encoding, &long).unwrap();
            assert!(
                !overlong.is_empty() && !overlong.matches(&mac),
                "{encoding:?}"
            );
        }
        assert!(Candidates::decode(Encoding::Hex, "0g").is_none());
        assert!(Candidates::decode(Encoding::Hex, "abc").is_none());
        assert!(Candidates::decode(Encoding::Base64, "***").is_none());
        let upper = Candidates::decode(Encoding::Hex, &hex::encode_upper(&mac)).unwrap();
        assert!(upper.matches(&mac));
    }

    #[test]
    fn hex_words_decode_like_the_hex_crate_for_every_byte_in_every_position() {
        let digits = b"0123456789abcdefABCDEF";
        for position in 0..20 {
            for byte in 0..=255u8 {
                let mut text = b"0123456789abcdefABCDEF01".to_vec()[..20].to_vec();
                text[position] = byte;
                let inline = MacBytes::from_hex(&text).map(|mac| mac.to_vec());
                assert_eq!(inline, hex::decode(&text).ok(), "{byte:#x} at {position}");
                assert_eq!(inline.is_some(), digits.contains(&byte));
            }
        }
        for len in (0..=130).step_by(2) {
            let text: Vec<u8> = (0..len).map(|i| b"f0A9"[i % 4]).collect();
            let inline = MacBytes::from_hex(&text).map(|mac| mac.to_vec());
            let expected = hex::decode(&text).ok().filter(|mac| mac.len() <= MAX_MAC);
            assert_eq!(inline, expected, "{len}");
        }
    }

    #[test]
    fn macs_match_the_hmac_crate_whatever_the_chunking() {
        use hmac::{Hmac, Mac as _};
        let message: Vec<u8> = (0..300u16).map(|i| (i * 7 % 251) as u8).collect();
        for key in [&b""[..], b"k", &[0x5a; 64], &[0xa5; 200]] {
            let expected = [
                <Hmac<sha1::Sha1> as hmac::Mac>::new_from_slice(key)
                    .unwrap()
                    .chain_update(&message)
                    .finalize()
                    .into_bytes()
                    .to_vec(),
                <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
                    .unwrap()
                    .chain_update(&message)
                    .finalize()
                    .into_bytes()
                    .to_vec(),
                <Hmac<sha2::Sha512> as hmac::Mac>::new_from_slice(key)
                    .unwrap()
                    .chain_update(&message)
                    .finalize()
                    .into_bytes()
                    .to_vec(),
            ];
            for (algorithm, expected) in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512]
                .into_iter()
                .zip(expected)
            {
                for chunk in [1, 13, 64, 65, 128, 300] {
                    let mut mac = MacState::new(algorithm, key);
                    for part in message.chunks(chunk) {
                        mac.update(part);
                    }
                    assert_eq!(
                        &*mac.finalize(),
                        expected.as_slice(),
                        "{algorithm:?} {chunk}"
                    );
                }
            }
        }
    }

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
