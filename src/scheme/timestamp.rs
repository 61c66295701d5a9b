//! Timestamps: digits-only parsing that cannot overflow, and the replay window.

use serde::{Deserialize, Serialize};

use super::{VerifyError, VerifyErrorKind};

/// Parses a Unix timestamp: ASCII digits only (no sign, no spaces, no `+`), at most 19 digits,
/// so neither parsing nor the window arithmetic can overflow.
pub(crate) fn parse_unix_timestamp(text: &str) -> Option<i64> {
    parse_unix_timestamp_bytes(text.as_bytes())
}

/// [`parse_unix_timestamp`] on a header's bytes (no UTF-8 check needed: only digits pass).
pub(crate) fn parse_unix_timestamp_bytes(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    // Nineteen digits fit in a `u64`; the conversion refuses what does not fit an `i64`.
    let mut value = 0u64;
    for &byte in text {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    i64::try_from(value).ok()
}

/// How far a signed timestamp may be from now. Checked with saturating arithmetic.
///
/// `ReplayWindow::default()` is 300 s in the past and 60 s in the future, what
/// most schemes use (senders' clocks lag more often than they lead); Standard Webhooks defaults
/// to its specification's ±300 s
/// ([`ReplayWindow::symmetric`]). The README's "Replay windows" table lists every scheme's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayWindow {
    /// Largest accepted age, in seconds.
    #[serde(default = "default_past")]
    pub past_secs: u32,
    /// Largest accepted clock skew into the future, in seconds.
    #[serde(default = "default_future")]
    pub future_secs: u32,
}

fn default_past() -> u32 {
    300
}

fn default_future() -> u32 {
    60
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            past_secs: default_past(),
            future_secs: default_future(),
        }
    }
}

impl ReplayWindow {
    /// A window of `past_secs` back and `future_secs` ahead.
    pub const fn new(past_secs: u32, future_secs: u32) -> Self {
        Self {
            past_secs,
            future_secs,
        }
    }

    /// A symmetric window (`±secs`), as Slack, Standard Webhooks and Valohai's drift use.
    pub const fn symmetric(secs: u32) -> Self {
        Self::new(secs, secs)
    }

    /// Checks `timestamp` (Unix seconds) against `now`.
    ///
    /// # Errors
    ///
    /// `TimestampTooOld` or `TimestampInFuture`.
    pub fn check(&self, timestamp: i64, now: i64) -> Result<(), VerifyError> {
        let age = now.saturating_sub(timestamp);
        if age > i64::from(self.past_secs) {
            return Err(VerifyError::new(
                VerifyErrorKind::TimestampTooOld,
                "timestamp is older than the replay window",
            ));
        }
        if age < -i64::from(self.future_secs) {
            return Err(VerifyError::new(
                VerifyErrorKind::TimestampInFuture,
                "timestamp is too far in the future",
            ));
        }
        Ok(())
    }
}

/// Checks a timestamp against an optional window (`None` = disabled).
pub(crate) fn check_window(
    window: Option<&ReplayWindow>,
    timestamp: i64,
    now: i64,
) -> Result<(), VerifyError> {
    match window {
        Some(window) => window.check(timestamp, now),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only() {
        assert_eq!(parse_unix_timestamp("1731381205"), Some(1_731_381_205));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1e9",
            "0x10",
            "99999999999999999999",
            "١٢",
        ] {
            assert_eq!(parse_unix_timestamp(bad), None, "{bad:?}");
        }
        assert_eq!(parse_unix_timestamp("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_unix_timestamp("9999999999999999999"), None);
    }

    #[test]
    fn window_edges_do_not_overflow() {
        let window = ReplayWindow::default();
        let now = 1_000_000;
        assert!(window.check(now - 300, now).is_ok());
        assert_eq!(
            window.check(now - 301, now).unwrap_err().kind(),
            VerifyErrorKind::TimestampTooOld
        );
        assert!(window.check(now + 60, now).is_ok());
        assert_eq!(
            window.check(now + 61, now).unwrap_err().kind(),
            VerifyErrorKind::TimestampInFuture
        );
        assert!(window.check(i64::MIN, now).is_err());
        assert!(window.check(i64::MAX, now).is_err());
        assert!(window.check(0, i64::MIN).is_err());
    }
}

/// `serde` for an optional window with [`ReplayWindow::default`] as its default: `true` or
/// absent = the default window, `false` = disabled, a table = that window (a field it omits
/// keeps the default's value).
pub(crate) mod optional_window {
    use serde::{Deserializer, Serializer};

    use super::ReplayWindow;

    pub(crate) fn default() -> Option<ReplayWindow> {
        Some(ReplayWindow::default())
    }

    pub(crate) fn serialize<S: Serializer>(
        window: &Option<ReplayWindow>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        super::window_setting::serialize(window, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ReplayWindow>, D::Error> {
        super::window_setting::deserialize(deserializer, ReplayWindow::default())
    }
}

/// The Standard Webhooks tolerance: five minutes either way, as the specification and its reference
/// libraries check it.
pub(crate) const SYMMETRIC_DEFAULT: ReplayWindow = ReplayWindow::symmetric(300);

/// [`optional_window`] with [`SYMMETRIC_DEFAULT`] as the default.
pub(crate) mod optional_symmetric_window {
    use serde::{Deserializer, Serializer};

    use super::{ReplayWindow, SYMMETRIC_DEFAULT};

    pub(crate) fn default() -> Option<ReplayWindow> {
        Some(SYMMETRIC_DEFAULT)
    }

    pub(crate) fn serialize<S: Serializer>(
        window: &Option<ReplayWindow>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        super::window_setting::serialize(window, serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ReplayWindow>, D::Error> {
        super::window_setting::deserialize(deserializer, SYMMETRIC_DEFAULT)
    }
}

/// The configuration grammar both window settings share, with the scheme's default passed in.
mod window_setting {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ReplayWindow;

    pub(super) fn serialize<S: Serializer>(
        window: &Option<ReplayWindow>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match window {
            Some(window) => window.serialize(serializer),
            None => serializer.serialize_bool(false),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
        default: ReplayWindow,
    ) -> Result<Option<ReplayWindow>, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Partial {
            past_secs: Option<u32>,
            future_secs: Option<u32>,
        }

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Setting {
            Enabled(bool),
            Window(Partial),
        }
        Ok(match Setting::deserialize(deserializer)? {
            Setting::Enabled(true) => Some(default),
            Setting::Enabled(false) => None,
            Setting::Window(window) => Some(ReplayWindow::new(
                window.past_secs.unwrap_or(default.past_secs),
                window.future_secs.unwrap_or(default.future_secs),
            )),
        })
    }
}
