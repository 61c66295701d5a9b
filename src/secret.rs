//! Secrets: redacted in `Debug`, compared in constant time, resolvable from `{env:VAR}`.
//!
//! A [`Secret`] is the raw key material as the vendor writes it (for example a Stripe
//! `whsec_…` string or a Cerebrium caller-chosen token). Each scheme decides how to turn it
//! into MAC key bytes, so the same `Secret` can be handed to any scheme.

use std::fmt;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// A secret value. `Debug` and `Display` never print it; it is shared cheaply (`Arc`).
///
/// It is the raw key material as the vendor writes it (for example a Stripe `whsec_…` string
/// or a Cerebrium caller-chosen token). Each scheme decides how to turn it into MAC key
/// bytes, so the same `Secret` can be handed to any scheme.
#[derive(Clone)]
pub struct Secret {
    inner: Arc<SecretInner>,
    id: Option<Arc<str>>,
}

struct SecretInner {
    value: Box<[u8]>,
    /// HMAC-SHA256 states already keyed with this secret, one per [`KeyDerivation`], made on
    /// first use: cloning a keyed state skips the two key-schedule compressions (about a
    /// tenth of a 1 KiB verification) that keying from scratch costs on every request.
    /// `None` inside when the derivation does not apply to this secret.
    keyed_sha256: [OnceLock<Option<Hmac<Sha256>>>; KeyDerivation::COUNT],
    /// SHA-256 of the value, made on first comparison ([`Secret::ct_eq`]).
    digest: OnceLock<TokenDigest>,
}

/// How a scheme turns a [`Secret`] into HMAC key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyDerivation {
    /// The secret's bytes as they are (Cerebrium, Stripe, GitHub, Slack, Nextmv, Valohai).
    Raw,
    /// Standard Webhooks: base64 after an optional `whsec_` prefix.
    StandardWebhooks,
}

impl KeyDerivation {
    const COUNT: usize = 2;

    /// The key bytes, or `None` when the secret is not in this derivation's format.
    pub(crate) fn derive(self, secret: &Secret) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Self::Raw => Some(secret.expose().into()),
            Self::StandardWebhooks => {
                use base64::Engine as _;
                let text = secret.expose_str()?;
                let encoded = text.strip_prefix("whsec_").unwrap_or(text);
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
                    .ok()
                    .filter(|key| !key.is_empty())
                    .map(Into::into)
            }
        }
    }
}

impl Secret {
    /// Wraps raw secret bytes.
    pub fn new(value: impl AsRef<[u8]>) -> Self {
        Self {
            inner: Arc::new(SecretInner {
                value: value.as_ref().into(),
                keyed_sha256: Default::default(),
                digest: OnceLock::new(),
            }),
            id: None,
        }
    }

    /// HMAC-SHA256 keyed with this secret as `derivation` reads it (cached after the first
    /// call); `None` when the secret is not in that format.
    pub(crate) fn keyed_sha256(&self, derivation: KeyDerivation) -> Option<&Hmac<Sha256>> {
        self.inner.keyed_sha256[derivation as usize]
            .get_or_init(|| {
                let key = derivation.derive(self)?;
                // HMAC takes keys of any length.
                Some(Hmac::new_from_slice(&key).expect("any key length"))
            })
            .as_ref()
    }

    /// Resolves a configuration string: `{env:VAR}` reads the environment variable `VAR`
    /// (the Valohai convention), anything else is taken literally.
    ///
    /// # Errors
    ///
    /// [`SecretError::MissingEnv`] when the named variable is unset, and
    /// [`SecretError::Empty`] when the resolved value is empty.
    pub fn resolve(spec: &str) -> Result<Self, SecretError> {
        let value = match spec
            .strip_prefix("{env:")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            Some(var) => std::env::var(var).map_err(|_| SecretError::MissingEnv(var.to_owned()))?,
            None => spec.to_owned(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self::new(value))
    }

    /// Generates `len` random bytes from the operating system's CSPRNG, rendered as
    /// `prefix` + lowercase hex (for example `whsec_` for Standard Webhooks style secrets,
    /// which the Standard Webhooks scheme base64-decodes; use [`Secret::generate_base64`] there).
    pub fn generate_hex(prefix: &str, len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        rand::rng().fill_bytes(&mut bytes);
        Self::new(format!("{prefix}{}", hex::encode(bytes)))
    }

    /// Generates `len` random bytes rendered as `prefix` + standard base64, the Standard
    /// Webhooks `whsec_<base64>` shape.
    pub fn generate_base64(prefix: &str, len: usize) -> Self {
        use base64::Engine as _;
        let mut bytes = vec![0u8; len];
        rand::rng().fill_bytes(&mut bytes);
        Self::new(format!(
            "{prefix}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// Attaches a label reported in verification metadata (which secret matched), for
    /// example `"2026-11"` during a rotation. The label is not secret.
    pub fn with_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The label set with [`Secret::with_id`].
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub(crate) fn label(&self) -> Option<&Arc<str>> {
        self.id.as_ref()
    }

    /// The raw secret bytes. Callers must not log them.
    pub fn expose(&self) -> &[u8] {
        &self.inner.value
    }

    /// The secret as UTF-8 text, when it is text.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.inner.value).ok()
    }

    /// Whether `candidate` is the secret, in a time that depends on neither's content nor
    /// length: both sides are hashed and the fixed-size digests compared in constant time.
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        self.inner
            .digest
            .get_or_init(|| TokenDigest::of(self.expose()))
            .matches(candidate)
    }
}

/// The SHA-256 of a secret or token, for comparisons that must not leak the length: comparing
/// two digests takes the same time whatever the lengths and contents of what was hashed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(crate) fn of(value: &[u8]) -> Self {
        use sha2::Digest;
        Self(Sha256::digest(value).into())
    }

    /// The digest's bytes (to derive keyed values from it).
    #[cfg(feature = "portal")]
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `candidate` hashes to this digest (constant time over the fixed-size digests).
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        self.ct_eq(&Self::of(candidate))
    }

    /// Constant-time equality of two digests.
    pub(crate) fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

/// Constant-time equality of two byte strings whose length is not secret (MACs of a known
/// size); secrets and tokens go through [`TokenDigest`] instead.
///
/// The OR of the XORs of every byte, eight at a time, each step passed through an
/// optimisation barrier so that the fold cannot become an early exit; only the final
/// zero test goes through `subtle`, whose slice comparison passes every byte through its
/// barrier and costs ten times as much on a 32-byte MAC (docs/primitives.md).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut tail = 0u64;
    for (x, y) in a_words.remainder().iter().zip(b_words.remainder()) {
        tail |= u64::from(x ^ y);
    }
    let diff = a_words.zip(b_words).fold(tail, |diff, (x, y)| {
        let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("chunks of 8"));
        std::hint::black_box(diff | (word(x) ^ word(y)))
    });
    bool::from(diff.ct_eq(&0))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other.expose()) && self.id == other.id
    }
}

impl Eq for Secret {}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// Deserialises from a string, resolving `{env:VAR}` at load time.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(deserializer)?;
        Self::resolve(&spec).map_err(serde::de::Error::custom)
    }
}

/// Serialises as `"[redacted]"`: configuration dumps never carry secrets.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// The secrets a request may be signed with: several during a rotation, tried in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretSet {
    secrets: Vec<Secret>,
}

impl SecretSet {
    /// An empty set (every verification fails with `NoSecret`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret; the first one added is the primary (used for signing).
    pub fn add_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Adds a secret in place.
    pub fn push(&mut self, secret: impl Into<Secret>) {
        self.secrets.push(secret.into());
    }

    /// The secrets, primary first.
    pub fn iter(&self) -> std::slice::Iter<'_, Secret> {
        self.secrets.iter()
    }

    /// The primary secret (used for signing), if any.
    pub fn primary(&self) -> Option<&Secret> {
        self.secrets.first()
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

impl From<Secret> for SecretSet {
    fn from(secret: Secret) -> Self {
        Self {
            secrets: vec![secret],
        }
    }
}

impl From<&str> for SecretSet {
    fn from(secret: &str) -> Self {
        Secret::from(secret).into()
    }
}

impl From<Vec<Secret>> for SecretSet {
    fn from(secrets: Vec<Secret>) -> Self {
        Self { secrets }
    }
}

impl FromIterator<Secret> for SecretSet {
    fn from_iter<I: IntoIterator<Item = Secret>>(iter: I) -> Self {
        Self {
            secrets: iter.into_iter().collect(),
        }
    }
}

impl<'a> IntoIterator for &'a SecretSet {
    type Item = &'a Secret;
    type IntoIter = std::slice::Iter<'a, Secret>;
    fn into_iter(self) -> Self::IntoIter {
        self.secrets.iter()
    }
}

/// Accepts one string or a list of strings (`secret = "…"` or `secrets = ["new", "old"]`),
/// reporting which `{env:VAR}` is missing rather than a generic shape error.
impl<'de> Deserialize<'de> for SecretSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;

        impl<'de> serde::de::Visitor<'de> for OneOrMany {
            type Value = SecretSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret string or a list of secret strings")
            }

            fn visit_str<E: serde::de::Error>(self, spec: &str) -> Result<SecretSet, E> {
                Secret::resolve(spec)
                    .map(SecretSet::from)
                    .map_err(E::custom)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SecretSet, A::Error> {
                let mut secrets = Vec::new();
                while let Some(secret) = seq.next_element::<Secret>()? {
                    secrets.push(secret);
                }
                Ok(secrets.into())
            }
        }

        deserializer.deserialize_any(OneOrMany)
    }
}

/// Why a secret could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// `{env:VAR}` named a variable that is not set.
    MissingEnv(String),
    /// The secret is empty.
    Empty,
    /// The secret is not in the encoding the scheme needs (for example Standard Webhooks base64).
    BadEncoding(&'static str),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingEnv(var) => write!(f, "environment variable `{var}` is not set"),
            Self::Empty => f.write_str("secret is empty"),
            Self::BadEncoding(what) => write!(f, "secret is not valid {what}"),
        }
    }
}

impl std::error::Error for SecretError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_every_byte() {
        for len in [0, 1, 7, 8, 9, 20, 32, 33, 64] {
            let a: Vec<u8> = (0..len as u8).collect();
            assert!(ct_eq(&a, &a.clone()), "{len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!ct_eq(&a, &b), "{len} differs at {at}");
            }
            assert!(!ct_eq(&a, &[a.as_slice(), b"x"].concat()));
        }
    }

    #[test]
    fn secret_comparisons_go_through_fixed_size_digests() {
        // Whatever the lengths, the constant-time step compares two 32-byte digests, so the
        // time it takes cannot reveal how long the secret is.
        assert_eq!(std::mem::size_of::<TokenDigest>(), 32);
        let secret = Secret::new("a-static-token");
        assert!(secret.ct_eq(b"a-static-token"));
        for candidate in [
            &b""[..],
            b"a",
            b"a-static-toke",
            b"a-static-tokenx",
            b"A-static-token",
        ] {
            assert!(!secret.ct_eq(candidate), "{candidate:?}");
        }
        let digest = TokenDigest::of(b"key-acme");
        assert!(digest.matches(b"key-acme"));
        assert!(!digest.matches(b"key-acm"));
        assert!(!format!("{digest:?}").contains("key-acme"));
        assert_eq!(Secret::new("x"), Secret::new("x"));
        assert_ne!(Secret::new("x"), Secret::new("xx"));
    }

    #[test]
    fn keyed_state_matches_a_fresh_key() {
        let secret = Secret::new("my-webhook-secret");
        let mut cached = secret.keyed_sha256(KeyDerivation::Raw).unwrap().clone();
        let mut fresh = Hmac::<Sha256>::new_from_slice(b"my-webhook-secret").unwrap();
        cached.update(b"body");
        fresh.update(b"body");
        assert_eq!(
            cached.finalize().into_bytes(),
            fresh.finalize().into_bytes()
        );
        assert!(Secret::new("not base64!")
            .keyed_sha256(KeyDerivation::StandardWebhooks)
            .is_none());
    }

    #[test]
    fn debug_is_redacted() {
        let secret = Secret::new("super-secret-value").with_id("k1");
        let shown = format!("{secret:?} {:?}", SecretSet::from(secret.clone()));
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"[redacted]\"");
    }

    #[test]
    fn env_resolution() {
        std::env::set_var("TW_SECRET_TEST_VAR", "from-env");
        assert_eq!(
            Secret::resolve("{env:TW_SECRET_TEST_VAR}")
                .unwrap()
                .expose(),
            b"from-env"
        );
        assert_eq!(
            Secret::resolve("{env:TW_SECRET_TEST_UNSET}").unwrap_err(),
            SecretError::MissingEnv("TW_SECRET_TEST_UNSET".into())
        );
        assert_eq!(Secret::resolve("literal").unwrap().expose(), b"literal");
        assert_eq!(Secret::resolve("").unwrap_err(), SecretError::Empty);
    }

    #[test]
    fn set_reports_the_missing_variable() {
        let err =
            serde_json::from_str::<SecretSet>(r#"["{env:TW_SECRET_TEST_ABSENT}"]"#).unwrap_err();
        assert!(err.to_string().contains("TW_SECRET_TEST_ABSENT"), "{err}");
        let err =
            serde_json::from_str::<SecretSet>(r#""{env:TW_SECRET_TEST_ABSENT}""#).unwrap_err();
        assert!(err.to_string().contains("TW_SECRET_TEST_ABSENT"), "{err}");
        let set: SecretSet = serde_json::from_str(r#"["a", "b"]"#).unwrap();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn generated_secrets_differ() {
        let a = Secret::generate_hex("whsec_", 32);
        let b = Secret::generate_hex("whsec_", 32);
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 6 + 64);
    }
}
