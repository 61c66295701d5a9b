//! [`Verified`]: what a successful verification tells the handler (scheme, signed id and
//! timestamp, matched secret, run id), and the de-duplication key it yields.

use std::borrow::Cow;
use std::fmt;

use http::HeaderValue;

use super::headers::is_visible_ascii;
use super::mac;
#[cfg(doc)]
use super::Scheme;
use crate::secret::Secret;
#[cfg(doc)]
use crate::secret::SecretSet;

/// The verification metadata a handler sees next to the payload.
///
/// Building it costs no allocation on the common path: the message id shares the request
/// header's bytes, the run id is a [`Uuid`](uuid::Uuid), and the de-duplication key is only
/// rendered when a replay store asks for it ([`Verified::replay_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The scheme's [`Scheme::name`].
    pub scheme: Cow<'static, str>,
    /// The signed message id, when the format carries one.
    pub message_id: Option<MessageId>,
    /// The signed timestamp (Unix seconds, normalised from milliseconds where needed).
    pub timestamp: Option<i64>,
    /// Which secret matched (its position in the [`SecretSet`] and its label).
    pub secret: Option<SecretMatch>,
    /// A fresh random (v4) id for this accepted request (Valohai's `{run_id}`); `Display`
    /// writes the hyphenated lowercase form.
    pub run_id: uuid::Uuid,
    replay: ReplayBasis,
}

/// What the de-duplication key is made of; rendered lazily by [`Verified::replay_key`].
#[derive(Clone, PartialEq, Eq)]
enum ReplayBasis {
    /// Nothing signed identifies the message (a static token): no de-duplication.
    None,
    /// The signed [`Verified::message_id`].
    MessageId,
    /// The matching MAC, for formats without a signed id (GitHub, Slack, Stripe, Nextmv).
    Mac(mac::MacBytes),
    /// A key the scheme computed itself (Valohai's JWT digest).
    Key(String),
}

impl fmt::Debug for ReplayBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::MessageId => "MessageId",
            Self::Mac(_) => "Mac",
            Self::Key(_) => "Key",
        })
    }
}

impl Verified {
    /// Metadata for scheme `scheme` with a fresh run id and nothing else set.
    pub fn new(scheme: impl Into<Cow<'static, str>>) -> Self {
        Self {
            scheme: scheme.into(),
            message_id: None,
            timestamp: None,
            secret: None,
            // `fast-rng`: the random bits come from a user-space CSPRNG, not a system call per id
            // (a time-ordered v7 id costs six times as much; see docs/primitives.md).
            run_id: uuid::Uuid::new_v4(),
            replay: ReplayBasis::None,
        }
    }

    /// A de-duplication key derived from signed material only: `{scheme}:{message id}`, or
    /// `{scheme}:{hex MAC}` for formats without a signed id; `None` when nothing signed
    /// identifies the message.
    pub fn replay_key(&self) -> Option<String> {
        let key: Cow<'_, str> = match &self.replay {
            ReplayBasis::None => return None,
            ReplayBasis::Key(key) => return Some(key.clone()),
            ReplayBasis::MessageId => Cow::Borrowed(self.message_id.as_deref()?),
            ReplayBasis::Mac(mac) => Cow::Owned(hex::encode(&**mac)),
        };
        let mut out = String::with_capacity(self.scheme.len() + 1 + key.len());
        out.push_str(&self.scheme);
        out.push(':');
        out.push_str(&key);
        Some(out)
    }

    /// Sets the de-duplication key (for custom schemes); it must come from signed material.
    pub fn set_replay_key(&mut self, key: impl Into<String>) {
        self.replay = ReplayBasis::Key(key.into());
    }

    pub(crate) fn replay_from_message_id(&mut self) {
        self.replay = ReplayBasis::MessageId;
    }

    pub(crate) fn replay_from_mac(&mut self, mac: mac::MacBytes) {
        self.replay = ReplayBasis::Mac(mac);
    }

    pub(crate) fn has_replay_basis(&self) -> bool {
        self.replay != ReplayBasis::None
    }
}

/// A signed message id as the sender wrote it (visible ASCII); it reads as a `&str`.
///
/// A short id (a UUID, a `msg_…` id) is copied into the value; a longer one shares the
/// request header's bytes. Sharing costs two atomic reference-count updates per request (the
/// clone and its drop), more than copying a few dozen bytes.
#[derive(Clone)]
pub struct MessageId(IdBytes);

/// The longest id kept inline: a hyphenated UUID (36) and Standard Webhooks' `msg_` ids fit.
const INLINE_ID: usize = 46;

#[derive(Clone)]
enum IdBytes {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Shared(HeaderValue),
}

impl MessageId {
    /// The id of a header value, or `None` when it is empty or not visible ASCII (a control
    /// character such as TAB included): an empty id would make every such message a
    /// duplicate of the first.
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let id = value.as_bytes();
        if id.is_empty() || !is_visible_ascii(id) {
            return None;
        }
        let Some(len) = u8::try_from(id.len())
            .ok()
            .filter(|&len| usize::from(len) <= INLINE_ID)
        else {
            return Some(Self(IdBytes::Shared(value.clone())));
        };
        let mut bytes = [0; INLINE_ID];
        bytes[..id.len()].copy_from_slice(id);
        Some(Self(IdBytes::Inline { len, bytes }))
    }

    /// An id from text, or `None` when it is empty or not visible ASCII.
    pub fn new(id: &str) -> Option<Self> {
        Self::from_header(&HeaderValue::from_str(id).ok()?)
    }

    /// The id's bytes (no UTF-8 check: the id is ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            IdBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IdBytes::Shared(value) => value.as_bytes(),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only visible-ASCII values are admitted (`from_header`, `new`), so this is valid
        // UTF-8; `from_utf8` checks ASCII a word at a time.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

impl PartialEq for MessageId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for MessageId {}

impl std::hash::Hash for MessageId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::ops::Deref for MessageId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Which secret of a [`SecretSet`] verified the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMatch {
    /// Position in the set (0 = primary).
    pub index: usize,
    /// The secret's label, if it has one ([`Secret::with_id`]).
    pub id: Option<std::sync::Arc<str>>,
}

impl SecretMatch {
    pub(crate) fn new(index: usize, secret: &Secret) -> Self {
        Self {
            index,
            id: secret.label().cloned(),
        }
    }
}

/// A scheme-defined success answer (content type and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessResponse {
    /// `text/plain` or `application/json`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    /// Short ids are copied and long ones share the header's bytes; neither shows.
    #[test]
    fn short_and_long_message_ids_read_compare_and_hash_alike() {
        let hasher = std::collections::hash_map::RandomState::new();
        for len in [1, INLINE_ID - 1, INLINE_ID, INLINE_ID + 1, 200] {
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let id = MessageId::new(&text).unwrap();
            let header = MessageId::from_header(&HeaderValue::from_str(&text).unwrap()).unwrap();
            assert_eq!(id.as_str(), text);
            assert_eq!(id.as_bytes(), text.as_bytes());
            assert_eq!(id, header);
            assert_eq!(id.clone(), text.as_str());
            assert_eq!(hasher.hash_one(&id), hasher.hash_one(text.as_bytes()));
            assert_eq!(format!("{id} {id:?}"), format!("{text} {text:?}"));
        }
        assert_ne!(MessageId::new("a").unwrap(), MessageId::new("b").unwrap());
        assert!(MessageId::new("").is_none());
        assert!(MessageId::from_header(&HeaderValue::from_bytes(b"id\xff").unwrap()).is_none());
    }
}
