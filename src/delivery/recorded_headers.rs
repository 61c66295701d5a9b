//! [`RecordedHeaders`]: the headers of an attempt's request or response as its conversation
//! keeps them, secrets redacted.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::sensitive::{is_redacted, REDACTED};

/// The headers of an attempt's request or response as recorded: signatures, secrets,
/// credentials, cookies and the delivery's write-only headers read `[redacted]`; every value
/// is text (bytes that are not UTF-8 are replaced).
///
/// The values share the sent headers' buffers, so recording an attempt's headers costs the
/// map, not a string per name and value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RecordedHeaders(HeaderMap);

impl RecordedHeaders {
    /// A request's `headers` as recorded: redacted where [sensitive](crate::sensitive) or
    /// named in `write_only` (a delivery's [`headers`](super::Delivery::headers)). The values
    /// are shared with the request (the engine made them, or they are the delivery's own).
    pub fn redacted(headers: &HeaderMap, write_only: &HeaderMap) -> Self {
        Self::record(headers, write_only, |value| value.clone())
    }

    /// A response's `headers` as recorded, redacted where sensitive. Each value is copied:
    /// the client's values are slices of the connection's read buffer, which a shared value
    /// would keep alive as long as the conversation.
    pub fn redacted_copies(headers: &HeaderMap) -> Self {
        Self::record(headers, &HeaderMap::new(), |value| {
            HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
        })
    }

    fn record(
        headers: &HeaderMap,
        write_only: &HeaderMap,
        keep: impl Fn(&HeaderValue) -> HeaderValue,
    ) -> Self {
        let mut recorded = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let value = if is_redacted(name, write_only) {
                HeaderValue::from_static(REDACTED)
            } else if std::str::from_utf8(value.as_bytes()).is_ok() {
                keep(value)
            } else {
                lossy_value(value)
            };
            recorded.append(name.clone(), value);
        }
        Self(recorded)
    }

    /// The name-value pairs, in the order they were sent (a repeated name once per value).
    pub fn iter(&self) -> RecordedHeadersIter<'_> {
        RecordedHeadersIter(self.0.iter())
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(value_text)
    }

    /// How many values are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// About the bytes the record holds, for a store's memory budget (the raw lengths: no
    /// value is read as text to count it).
    pub(crate) fn approx_size(&self) -> usize {
        self.0
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 48)
            .sum()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A value whose bytes are not UTF-8, made so (the replacement character for each invalid
/// sequence), so that [`value_text`] always has text to give.
fn lossy_value(value: &HeaderValue) -> HeaderValue {
    let text = String::from_utf8_lossy(value.as_bytes());
    // Replacement characters are bytes above ASCII, which header values allow; a value holds
    // no control byte, so the lossy text is a valid value too.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn value_text(value: &HeaderValue) -> &str {
    std::str::from_utf8(value.as_bytes()).unwrap_or_default()
}

/// Pairs read back from a store. A pair whose name is not a valid header name is dropped, and
/// a value that is not a valid header value reads `[unreadable]` (only a hand-edited row has
/// either): a record is read, not sent.
impl<'a> FromIterator<(&'a str, &'a str)> for RecordedHeaders {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut recorded = HeaderMap::new();
        for (name, value) in pairs {
            append_read_back(&mut recorded, name, value);
        }
        Self(recorded)
    }
}

/// As the `&str` pairs.
impl FromIterator<(String, String)> for RecordedHeaders {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut recorded = HeaderMap::new();
        for (name, value) in pairs {
            append_read_back(&mut recorded, &name, &value);
        }
        Self(recorded)
    }
}

fn append_read_back(recorded: &mut HeaderMap, name: &str, value: &str) {
    let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
        return;
    };
    let value =
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("[unreadable]"));
    recorded.append(name, value);
}

/// The pairs of [`RecordedHeaders`], from [`RecordedHeaders::iter`].
#[derive(Debug)]
pub struct RecordedHeadersIter<'a>(http::header::Iter<'a, HeaderValue>);

impl<'a> Iterator for RecordedHeadersIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next()
            .map(|(name, value)| (name.as_str(), value_text(value)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<'a> IntoIterator for &'a RecordedHeaders {
    type Item = (&'a str, &'a str);
    type IntoIter = RecordedHeadersIter<'a>;

    fn into_iter(self) -> RecordedHeadersIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for RecordedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A list of `[name, value]` pairs, the shape of a conversation's JSON.
impl Serialize for RecordedHeaders {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_write_only_names_are_redacted_and_the_rest_kept_in_order() {
        let mut sent = HeaderMap::new();
        sent.insert("content-type", HeaderValue::from_static("application/json"));
        sent.insert(
            "x-cerebrium-webhook-signature",
            HeaderValue::from_static("v1,ab"),
        );
        sent.insert("x-tenant", HeaderValue::from_static("acme"));
        sent.append("x-tenant", HeaderValue::from_static("second"));
        sent.insert("x-custom-token-free", HeaderValue::from_static("plain"));
        let mut write_only = HeaderMap::new();
        write_only.insert("x-custom-token-free", HeaderValue::from_static("plain"));
        let recorded = RecordedHeaders::redacted(&sent, &write_only);
        let pairs: Vec<_> = recorded.iter().collect();
        assert_eq!(
            pairs,
            [
                ("content-type", "application/json"),
                ("x-cerebrium-webhook-signature", REDACTED),
                ("x-tenant", "acme"),
                ("x-tenant", "second"),
                ("x-custom-token-free", REDACTED),
            ]
        );
        assert_eq!(recorded.get("X-Tenant"), Some("acme"));
        assert_eq!(
            serde_json::to_string(&recorded).unwrap(),
            r#"[["content-type","application/json"],["x-cerebrium-webhook-signature","[redacted]"],["x-tenant","acme"],["x-tenant","second"],["x-custom-token-free","[redacted]"]]"#
        );
    }

    #[test]
    fn values_that_are_not_utf8_are_recorded_as_text() {
        let mut sent = HeaderMap::new();
        sent.insert("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let recorded = RecordedHeaders::redacted(&sent, &HeaderMap::new());
        assert_eq!(recorded.get("x-raw"), Some("caf\u{fffd}"));
        let copied = RecordedHeaders::redacted_copies(&sent);
        assert_eq!(copied, recorded);
    }

    #[test]
    fn pairs_read_back_skip_invalid_names() {
        let recorded: RecordedHeaders = [
            ("x-ok".to_owned(), "1".to_owned()),
            ("bad name".to_owned(), "2".to_owned()),
            ("x-control".to_owned(), "a\u{7}b".to_owned()),
        ]
        .into_iter()
        .collect();
        let pairs: Vec<_> = recorded.iter().collect();
        assert_eq!(pairs, [("x-ok", "1"), ("x-control", "[unreadable]")]);
    }
}
