//! Encryption at rest for the secrets the durable stores keep: signing secrets (a webhook's,
//! a forwarded `X-Webhook-Secret`) and custom header values.
//!
//! Each value is sealed with XChaCha20-Poly1305 under a random 192-bit nonce and stored as
//! `enc1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`; the column it belongs to is bound in
//! as associated data, so a sealed value cannot be moved to another column. The newest key of
//! an [`EncryptionKeys`] ring seals; every key in it opens, which is how keys rotate: put the new
//! key first, keep the old ones until no row uses them. Values written before any key was
//! configured (plain JSON) still read.
//!
//! ```
//! use tower_webhooks::store::{EncryptionKey, EncryptionKeys};
//!
//! // `TOWER_WEBHOOKS_ENCRYPTION_KEYS="k2:<base64 of 32 bytes>,k1:<…>"`, newest first
//! // (for example from `openssl rand -base64 32`).
//! let spec = "k2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,\
//!             k1:ERERERERERERERERERERERERERERERERERERERERERE=";
//! let keys = EncryptionKeys::parse(spec).unwrap();
//! assert_eq!(keys.current_id(), "k2");
//! assert!(!format!("{keys:?}").contains("AAAA"), "Debug shows key ids only");
//! let generated = EncryptionKeys::new(EncryptionKey::generate("k3").unwrap());
//! assert_eq!(generated.current_id(), "k3");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 24;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The environment variable [`EncryptionKeys::from_env`] reads by default.
pub const ENCRYPTION_KEYS_ENV: &str = "TOWER_WEBHOOKS_ENCRYPTION_KEYS";

/// One 256-bit key and the id stored beside every value it seals. `Debug` shows the id only.
#[derive(Clone)]
pub struct EncryptionKey {
    id: Arc<str>,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl EncryptionKey {
    /// A key from its 32 bytes.
    ///
    /// # Errors
    ///
    /// [`EncryptionKeyError::InvalidId`] unless `id` is 1–32 ASCII letters, digits, `-` or `_`.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self, EncryptionKeyError> {
        let valid = (1..=32).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(EncryptionKeyError::InvalidId(id.chars().take(40).collect()));
        }
        Ok(Self {
            id: id.into(),
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// A key from standard or URL-safe base64 of 32 bytes (`openssl rand -base64 32`).
    ///
    /// # Errors
    ///
    /// [`EncryptionKeyError::InvalidKey`] when `text` is not base64 of exactly 32 bytes (the
    /// error never contains `text`), or an invalid id as in [`new`](Self::new).
    pub fn from_base64(id: &str, text: &str) -> Result<Self, EncryptionKeyError> {
        let text = text.trim();
        let bytes = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
        ]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .or_else(|| B64URL.decode(text).ok())
        .ok_or_else(|| EncryptionKeyError::InvalidKey(id.to_owned()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| EncryptionKeyError::InvalidKey(id.to_owned()))?;
        Self::new(id, key)
    }

    /// A fresh random key (the operating system's CSPRNG).
    ///
    /// # Errors
    ///
    /// An invalid id as in [`new`](Self::new).
    pub fn generate(id: &str) -> Result<Self, EncryptionKeyError> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self::new(id, key)
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A key ring: the first (newest) key seals, every key opens. Cheap to clone.
#[derive(Clone)]
pub struct EncryptionKeys {
    keys: Arc<[EncryptionKey]>,
}

impl fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| &key.id))
            .finish()
    }
}

impl EncryptionKeys {
    /// A ring of one key.
    pub fn new(newest: EncryptionKey) -> Self {
        Self {
            keys: Arc::from([newest]),
        }
    }

    /// Adds an older key: it no longer seals, but values it sealed still open.
    #[must_use]
    pub fn with_older(self, older: EncryptionKey) -> Self {
        let mut keys = self.keys.to_vec();
        keys.push(older);
        Self { keys: keys.into() }
    }

    /// Parses `id:base64key` entries, newest first, separated by commas or whitespace
    /// (`"k2:…,k1:…"`), as configuration files and environment variables carry them.
    ///
    /// # Errors
    ///
    /// [`EncryptionKeyError`] for an empty spec, an entry without `:`, an invalid id or key,
    /// or an id given twice. Errors name the key id, never the key.
    pub fn parse(spec: &str) -> Result<Self, EncryptionKeyError> {
        let mut keys: Vec<EncryptionKey> = Vec::new();
        for entry in spec
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
        {
            let (id, key) = entry.split_once(':').ok_or(EncryptionKeyError::Malformed)?;
            let key = EncryptionKey::from_base64(id, key)?;
            if keys.iter().any(|known| known.id == key.id) {
                return Err(EncryptionKeyError::DuplicateId(id.to_owned()));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(EncryptionKeyError::Empty);
        }
        Ok(Self { keys: keys.into() })
    }

    /// The ring in the environment variable `var` (see [`parse`](Self::parse); the usual name
    /// is [`ENCRYPTION_KEYS_ENV`]), or `None` when it is unset or empty.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse).
    pub fn from_env(var: &str) -> Result<Option<Self>, EncryptionKeyError> {
        match std::env::var(var) {
            Ok(spec) if !spec.trim().is_empty() => Self::parse(&spec).map(Some),
            _ => Ok(None),
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `plaintext` for `column` with the newest key.
    pub(crate) fn seal(&self, column: &str, plaintext: &[u8]) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: column.as_bytes(),
                },
            )
            // Only a message beyond 256 GiB makes XChaCha20-Poly1305 fail.
            .expect("a column value is far below the AEAD's length limit");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", key.id, B64URL.encode(bytes))
    }

    /// Opens a value [`seal`](Self::seal)ed for `column`.
    fn open(&self, column: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let (id, data) = sealed.split_once(':').ok_or(OpenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|key| &*key.id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.chars().take(32).collect()))?;
        let bytes = B64URL.decode(data).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        key.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: column.as_bytes(),
                },
            )
            .map_err(|_| OpenError::Rejected(key.id.to_string()))
    }
}

/// Seals a column's text when a ring is configured; stores it as it is otherwise.
pub(crate) fn seal_column(keys: Option<&EncryptionKeys>, column: &str, text: String) -> String {
    match keys {
        Some(keys) => keys.seal(column, text.as_bytes()),
        None => text,
    }
}

/// A column's text: opened when it was sealed, as it is when it was stored before encryption
/// was configured.
pub(crate) fn open_column<'a>(
    keys: Option<&EncryptionKeys>,
    column: &str,
    text: &'a str,
) -> Result<Cow<'a, str>, OpenError> {
    let Some(sealed) = text.strip_prefix(PREFIX) else {
        return Ok(Cow::Borrowed(text));
    };
    let keys = keys.ok_or(OpenError::NoKey)?;
    let bytes = keys.open(column, sealed)?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| OpenError::Malformed)
}

/// Warns once per store that secrets are stored in clear (no key, no secret in the message).
pub(crate) fn warn_unencrypted(store: &str) {
    tracing::warn!(
        store,
        env = ENCRYPTION_KEYS_ENV,
        "secrets are stored unencrypted: configure encryption keys to encrypt them at rest"
    );
}

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Sealed, but no key ring is configured.
    NoKey,
    /// Sealed with a key id that is not in the ring.
    UnknownKey(String),
    /// The key with this id does not open it (another key under the same id, or altered data).
    Rejected(String),
    /// Not a sealed value.
    Malformed,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKey => f.write_str(
                "a stored secret is encrypted but no encryption key is configured",
            ),
            Self::UnknownKey(id) => write!(
                f,
                "a stored secret is encrypted with key `{id}`, which is not in the configured key ring"
            ),
            Self::Rejected(id) => write!(
                f,
                "a stored secret cannot be decrypted with key `{id}` (a different key under that id, or altered data)"
            ),
            Self::Malformed => f.write_str("a stored encrypted secret is malformed"),
        }
    }
}

/// An encryption key or key ring that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncryptionKeyError {
    /// No key in the spec.
    Empty,
    /// An entry is not `id:base64key`.
    Malformed,
    /// The key id is not 1–32 ASCII letters, digits, `-` or `_`.
    InvalidId(String),
    /// The key with this id is not base64 of 32 bytes.
    InvalidKey(String),
    /// Two keys share this id.
    DuplicateId(String),
}

impl fmt::Display for EncryptionKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no encryption key given"),
            Self::Malformed => f.write_str("an encryption key entry is not `id:base64key`"),
            Self::InvalidId(id) => write!(
                f,
                "encryption key id `{id}` is not 1-32 letters, digits, `-` or `_`"
            ),
            Self::InvalidKey(id) => {
                write!(f, "encryption key `{id}` is not base64 of 32 bytes")
            }
            Self::DuplicateId(id) => write!(f, "encryption key id `{id}` is given twice"),
        }
    }
}

impl std::error::Error for EncryptionKeyError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey::new(id, [byte; 32]).unwrap()
    }

    #[test]
    fn sealed_values_open_with_any_key_of_the_ring_and_only_in_their_column() {
        let one = EncryptionKeys::new(key("k1", 1));
        let sealed = seal_column(Some(&one), "secrets", "whsec_plain".to_owned());
        assert!(sealed.starts_with("enc1:k1:"));
        assert!(!sealed.contains("whsec_plain"));
        assert_ne!(
            sealed,
            seal_column(Some(&one), "secrets", "whsec_plain".to_owned()),
            "a fresh nonce per value"
        );
        let rotated = EncryptionKeys::new(key("k2", 2)).with_older(key("k1", 1));
        assert_eq!(
            open_column(Some(&rotated), "secrets", &sealed).unwrap(),
            "whsec_plain"
        );
        assert!(rotated.seal("secrets", b"x").starts_with("enc1:k2:"));
        assert_eq!(
            open_column(Some(&rotated), "headers", &sealed).unwrap_err(),
            OpenError::Rejected("k1".into())
        );
        // Values stored before a key was configured read as they are.
        assert_eq!(open_column(Some(&rotated), "secrets", "[]").unwrap(), "[]");
    }

    #[test]
    fn a_wrong_or_missing_key_is_a_clear_error() {
        let sealed = EncryptionKeys::new(key("k1", 1)).seal("secrets", b"s3cret");
        let wrong = EncryptionKeys::new(key("k1", 9));
        let err = open_column(Some(&wrong), "secrets", &sealed).unwrap_err();
        assert_eq!(err, OpenError::Rejected("k1".into()));
        assert!(err.to_string().contains("k1"));
        let other = EncryptionKeys::new(key("k2", 1));
        assert_eq!(
            open_column(Some(&other), "secrets", &sealed).unwrap_err(),
            OpenError::UnknownKey("k1".into())
        );
        assert_eq!(
            open_column(None, "secrets", &sealed).unwrap_err(),
            OpenError::NoKey
        );
        for garbage in ["enc1:", "enc1:k1", "enc1:k1:!!", "enc1:k1:AAAA"] {
            assert!(
                open_column(Some(&wrong), "secrets", garbage).is_err(),
                "{garbage}"
            );
        }
    }

    #[test]
    fn key_specs_parse_and_errors_never_show_a_key() {
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let keys = EncryptionKeys::parse(&format!("new:{k}, old:{k}")).unwrap();
        assert_eq!(keys.current_id(), "new");
        assert!(!format!("{keys:?}").contains(&k));
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = EncryptionKeys::parse(&format!("k:{short}")).unwrap_err();
        assert_eq!(err, EncryptionKeyError::InvalidKey("k".into()));
        assert!(!err.to_string().contains(&short));
        assert_eq!(
            EncryptionKeys::parse(" ").unwrap_err(),
            EncryptionKeyError::Empty
        );
        assert_eq!(
            EncryptionKeys::parse(&k).unwrap_err(),
            EncryptionKeyError::Malformed
        );
        assert!(matches!(
            EncryptionKeys::parse(&format!("a:{k},a:{k}")),
            Err(EncryptionKeyError::DuplicateId(_))
        ));
        assert!(matches!(
            EncryptionKey::new("bad id", [0; 32]),
            Err(EncryptionKeyError::InvalidId(_))
        ));
    }
}
