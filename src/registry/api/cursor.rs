//! Pagination: the page query (`limit`, `cursor`, `offset`, `state`) and the opaque cursors.
//!
//! Opaque page cursors: `v1.` and the URL-safe base64 of the position, `w<id>` for a
//! webhook (the list is ordered by id) and `c<created_at ms>:<delivery id>` for a
//! conversation. The `.` keeps them apart from webhook ids, which older clients passed as
//! `cursor` and which are still accepted.

use std::fmt;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::error::ApiError;
use crate::delivery::ConversationPosition;
use crate::time::{from_unix_millis, unix_millis};

pub(super) const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;
pub(super) const MAX_OFFSET: usize = 10_000;

#[derive(Deserialize)]
pub(super) struct PageQuery {
    pub(super) limit: Option<String>,
    pub(super) cursor: Option<String>,
    pub(super) offset: Option<String>,
    pub(super) state: Option<String>,
}

pub(super) fn parse_query(raw: Option<String>) -> Result<PageQuery, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|err| ApiError::pagination(format!("unreadable query string: {err}")))
}

pub(super) fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(ApiError::pagination(format!(
                "`limit` is a whole number from 1 to {MAX_PAGE}"
            ))),
        },
    }
}

pub(super) fn bad_cursor() -> ApiError {
    ApiError::pagination("`cursor` is not a `next_cursor` of this list")
}
const PREFIX: &str = "v1.";

fn encode(position: &str) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(position))
}

/// The position inside `cursor`, when it is one of ours.
fn decode(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.strip_prefix(PREFIX)?).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether `cursor` looks like an opaque cursor (rather than a plain webhook id).
pub(crate) fn is_opaque(cursor: &str) -> bool {
    cursor.starts_with(PREFIX)
}

/// The cursor after webhook `id`.
pub(crate) fn webhook(id: &str) -> String {
    encode(&format!("w{id}"))
}

/// The webhook id inside a cursor made by [`webhook`].
pub(crate) fn parse_webhook(cursor: &str) -> Option<String> {
    decode(cursor)?.strip_prefix('w').map(str::to_owned)
}

/// The cursor after delivery `id`, created at `created_at`.
pub(crate) fn conversation(id: &str, created_at: SystemTime) -> String {
    encode(&format!("c{}:{id}", unix_millis(created_at)))
}

/// The position inside a cursor made by [`conversation`].
pub(crate) fn parse_conversation(cursor: &str) -> Option<ConversationPosition> {
    let position = decode(cursor)?;
    let (ms, id) = position.strip_prefix('c')?.split_once(':')?;
    let ms: i64 = ms.parse().ok().filter(|ms| *ms >= 0)?;
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return None;
    }
    Some(ConversationPosition::new(id, from_unix_millis(ms)))
}

/// The opaque cursor of a conversation list: the position of the last conversation of a page,
/// which the next page continues after.
///
/// The management API's `next_cursor` and the command line's `deliveries list --cursor` are
/// this one format (`v1.` and URL-safe base64; the time to the millisecond, what the stores
/// keep), so a cursor from either reads back in the other.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_webhooks::delivery::ConversationPosition;
/// use tower_webhooks::registry::api::ConversationCursor;
///
/// let position = ConversationPosition::new("dlv_1", UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
/// let cursor = ConversationCursor::from(position.clone()).to_string();
/// assert!(cursor.starts_with("v1."));
/// assert_eq!(ConversationCursor::parse(&cursor).unwrap().into_position(), position);
/// assert!(ConversationCursor::parse("dlv_1").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationCursor(ConversationPosition);

impl ConversationCursor {
    /// The position inside `text`, when it is a conversation cursor.
    pub fn parse(text: &str) -> Option<Self> {
        parse_conversation(text).map(Self)
    }

    /// The position the next page continues after.
    pub fn into_position(self) -> ConversationPosition {
        self.0
    }
}

impl From<ConversationPosition> for ConversationCursor {
    fn from(position: ConversationPosition) -> Self {
        Self(position)
    }
}

impl fmt::Display for ConversationCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&conversation(&self.0.id, self.0.created_at))
    }
}
