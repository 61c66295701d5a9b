//! The "Web Timestamp" condition: a recent Unix timestamp in a header, the query or the body.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Lookup, LookupNamespace};
use crate::scheme::timestamp::ReplayWindow;
#[cfg(doc)]
use crate::scheme::Verified;
use crate::scheme::{parse_unix_timestamp, VerifyError};

/// A Valohai "Web Timestamp" condition: a Unix-seconds timestamp (ASCII digits only, or a
/// JSON integer) at most `tolerance` seconds away from now, in either direction. The first one
/// is reported in [`Verified::timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WebTimestampRepr", into = "WebTimestampRepr")]
#[non_exhaustive]
pub struct WebTimestamp {
    /// Where the timestamp is.
    pub lookup: Lookup,
    /// The drift tolerance, in seconds.
    pub tolerance: u32,
}

impl WebTimestamp {
    /// A timestamp found by `lookup`, accepted within `±tolerance` seconds.
    pub fn new(lookup: Lookup, tolerance: u32) -> Self {
        Self { lookup, tolerance }
    }

    pub(super) fn check(&self, text: &str, now: i64) -> Result<i64, VerifyError> {
        let timestamp = parse_unix_timestamp(text).ok_or_else(|| self.lookup.malformed())?;
        ReplayWindow::symmetric(self.tolerance).check(timestamp, now)?;
        Ok(timestamp)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebTimestampRepr {
    #[serde(default)]
    lookup_namespace: LookupNamespace,
    lookup_key: String,
    #[serde(default)]
    value_prefix: String,
    tolerance: u32,
}

impl TryFrom<WebTimestampRepr> for WebTimestamp {
    type Error = ConfigError;

    fn try_from(repr: WebTimestampRepr) -> Result<Self, ConfigError> {
        let lookup = Lookup::new(repr.lookup_namespace, repr.lookup_key).prefix(repr.value_prefix);
        lookup.validate()?;
        Ok(Self::new(lookup, repr.tolerance))
    }
}

impl From<WebTimestamp> for WebTimestampRepr {
    fn from(condition: WebTimestamp) -> Self {
        Self {
            lookup_namespace: condition.lookup.namespace,
            lookup_key: condition.lookup.key,
            value_prefix: condition.lookup.prefix,
            tolerance: condition.tolerance,
        }
    }
}
