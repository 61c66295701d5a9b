//! Where a condition finds its value: a header, a query parameter, a URL-encoded body field or
//! a top-level key of a JSON body; then the value prefix is cut away.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use http::HeaderName;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::scheme::{RequestHead, VerifyError, VerifyErrorKind};

/// Where to look for a token or a timestamp (Valohai's "Token Lookup Namespace").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupNamespace {
    /// An HTTP header; the name is matched case-insensitively.
    #[default]
    Header,
    /// A query-string parameter (`?token=…`).
    Querystring,
    /// A field of an `application/x-www-form-urlencoded` body.
    UrlencodedBody,
    /// A top-level key of a JSON object body.
    JsonBody,
}

impl LookupNamespace {
    /// Whether the value is known before the body arrives (header or query string).
    pub fn is_in_head(self) -> bool {
        matches!(self, Self::Header | Self::Querystring)
    }
}

/// Where a condition finds its value, and the static prefix to cut from it.
///
/// ```
/// use tower_webhooks::scheme::valohai::Lookup;
///
/// let lookup = Lookup::header("Authorization").prefix("JWT ");
/// assert_eq!(lookup.key, "Authorization");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lookup {
    /// Where to look.
    pub namespace: LookupNamespace,
    /// The header name, query parameter, form field or JSON key.
    pub key: String,
    /// Cut exactly from the start of the found value; a value that does not start with it
    /// fails the condition. Empty = no prefix.
    pub prefix: String,
}

impl Lookup {
    /// A lookup of `key` in `namespace`, without a prefix.
    pub fn new(namespace: LookupNamespace, key: impl Into<String>) -> Self {
        Self {
            namespace,
            key: key.into(),
            prefix: String::new(),
        }
    }

    /// The header `name` (case-insensitive).
    pub fn header(name: impl Into<String>) -> Self {
        Self::new(LookupNamespace::Header, name)
    }

    /// The query parameter `key`.
    pub fn querystring(key: impl Into<String>) -> Self {
        Self::new(LookupNamespace::Querystring, key)
    }

    /// The URL-encoded body field `key`.
    pub fn urlencoded_body(key: impl Into<String>) -> Self {
        Self::new(LookupNamespace::UrlencodedBody, key)
    }

    /// The top-level key `key` of a JSON object body.
    pub fn json_body(key: impl Into<String>) -> Self {
        Self::new(LookupNamespace::JsonBody, key)
    }

    /// Sets the value prefix (for example `"JWT "`, `"v0="`, `"secret="`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks the key (a header lookup needs a valid header name).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.key.is_empty() {
            return Err(ConfigError::new("`lookup_key` is empty"));
        }
        if self.namespace == LookupNamespace::Header {
            self.header_name()?;
        }
        Ok(())
    }

    /// The header name of a header lookup.
    pub(crate) fn header_name(&self) -> Result<HeaderName, ConfigError> {
        HeaderName::from_bytes(self.key.as_bytes()).map_err(|_| {
            ConfigError::new(format!(
                "`lookup_key` {:?} is not a valid header name",
                self.key
            ))
        })
    }

    /// Finds the value in the request head (header and query-string lookups) and cuts the
    /// prefix.
    pub(crate) fn find_in_head<'a>(
        &self,
        head: &'a RequestHead,
    ) -> Result<Cow<'a, str>, VerifyError> {
        let found = match self.namespace {
            LookupNamespace::Header => {
                let mut values = head.headers.get_all(self.key.as_str()).iter();
                let value = values.next().ok_or_else(|| self.missing())?;
                if values.next().is_some() {
                    return Err(self.ambiguous());
                }
                Cow::Borrowed(value.to_str().map_err(|_| self.malformed())?)
            }
            LookupNamespace::Querystring => {
                let query = head.uri.query().ok_or_else(|| self.missing())?;
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_str(query).map_err(|_| self.malformed())?;
                Cow::Owned(self.pick(pairs)?)
            }
            LookupNamespace::UrlencodedBody | LookupNamespace::JsonBody => {
                unreachable!("body lookups are resolved at `finish`")
            }
        };
        self.strip(found)
    }

    /// Finds the value in the whole body (URL-encoded and JSON lookups) and cuts the prefix.
    pub(crate) fn find_in_body<'a>(&self, body: &'a [u8]) -> Result<Cow<'a, str>, VerifyError> {
        let found = match self.namespace {
            LookupNamespace::UrlencodedBody => {
                let pairs: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(body).map_err(|_| self.malformed())?;
                self.pick(pairs)?
            }
            LookupNamespace::JsonBody => {
                let mut deserializer = serde_json::Deserializer::from_slice(body);
                let duplicate = Cell::new(false);
                let found = PickKey {
                    key: &self.key,
                    duplicate: &duplicate,
                }
                .deserialize(&mut deserializer)
                .and_then(|found| deserializer.end().map(|()| found))
                .map_err(|_| {
                    if duplicate.get() {
                        self.ambiguous()
                    } else {
                        VerifyError::new(
                            VerifyErrorKind::MalformedHeader,
                            "body is not a JSON object",
                        )
                    }
                })?;
                match found.ok_or_else(|| self.missing())? {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Number(number) => number.to_string(),
                    _ => return Err(self.malformed()),
                }
            }
            LookupNamespace::Header | LookupNamespace::Querystring => {
                unreachable!("head lookups are resolved at `begin`")
            }
        };
        self.strip(Cow::Owned(found))
    }

    /// The single value of the key among `pairs`; a repeated key is ambiguous and fails.
    fn pick(&self, pairs: Vec<(String, String)>) -> Result<String, VerifyError> {
        let mut found = None;
        for (key, value) in pairs {
            if key == self.key {
                if found.is_some() {
                    return Err(self.ambiguous());
                }
                found = Some(value);
            }
        }
        found.ok_or_else(|| self.missing())
    }

    fn strip<'a>(&self, value: Cow<'a, str>) -> Result<Cow<'a, str>, VerifyError> {
        if self.prefix.is_empty() {
            return Ok(value);
        }
        let stripped = match value {
            Cow::Borrowed(text) => text.strip_prefix(self.prefix.as_str()).map(Cow::Borrowed),
            Cow::Owned(text) => text
                .strip_prefix(self.prefix.as_str())
                .map(|rest| Cow::Owned(rest.to_owned())),
        };
        stripped.ok_or_else(|| {
            VerifyError::new(
                VerifyErrorKind::MalformedHeader,
                format!("{} does not start with the configured prefix", self.place()),
            )
        })
    }

    /// Names the place looked at, for error details (never the value).
    pub(crate) fn place(&self) -> Place<'_> {
        Place(self)
    }

    pub(crate) fn missing(&self) -> VerifyError {
        VerifyError::new(
            VerifyErrorKind::MissingHeader,
            format!("missing {}", self.place()),
        )
    }

    pub(crate) fn malformed(&self) -> VerifyError {
        VerifyError::new(
            VerifyErrorKind::MalformedHeader,
            format!("malformed {}", self.place()),
        )
    }

    fn ambiguous(&self) -> VerifyError {
        VerifyError::new(
            VerifyErrorKind::MalformedHeader,
            format!("{} is given more than once", self.place()),
        )
    }
}

/// Displays where a lookup looks (`` `authorization` header ``, `` query parameter `token` ``).
pub(crate) struct Place<'a>(&'a Lookup);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.0.key;
        match self.0.namespace {
            LookupNamespace::Header => write!(f, "`{}` header", key.to_ascii_lowercase()),
            LookupNamespace::Querystring => write!(f, "query parameter `{key}`"),
            LookupNamespace::UrlencodedBody => write!(f, "form field `{key}`"),
            LookupNamespace::JsonBody => write!(f, "JSON body key `{key}`"),
        }
    }
}

/// Streams over a JSON object, keeping only the value of one top-level key (the others are
/// skipped without being built). A repeated key is an error: parsers disagree on which wins.
struct PickKey<'k> {
    key: &'k str,
    duplicate: &'k Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for PickKey<'_> {
    type Value = Option<serde_json::Value>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PickKey<'_> {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_key) = map.next_key_seed(KeyIs(self.key))? {
            if is_key {
                if found.is_some() {
                    self.duplicate.set(true);
                    return Err(de::Error::custom("duplicate key"));
                }
                found = Some(map.next_value::<serde_json::Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares an object key with the wanted one without allocating.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn head(uri: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut request = Request::post(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_strips_the_prefix_exactly() {
        let head = head("/", &[("authorization", "JWT abc")]);
        let lookup = Lookup::header("Authorization").prefix("JWT ");
        assert_eq!(lookup.find_in_head(&head).unwrap(), "abc");
        let err = Lookup::header("Authorization")
            .prefix("jwt ")
            .find_in_head(&head)
            .unwrap_err();
        assert_eq!(err.kind(), VerifyErrorKind::MalformedHeader);
        assert!(!err.detail().contains("abc"), "{err}");
        let err = Lookup::header("X-Other").find_in_head(&head).unwrap_err();
        assert_eq!(err.kind(), VerifyErrorKind::MissingHeader);
        assert_eq!(err.detail(), "missing `x-other` header");
        // A name that cannot be a header (only buildable in code) is simply never found.
        let err = Lookup::header("bad name").find_in_head(&head).unwrap_err();
        assert_eq!(err.kind(), VerifyErrorKind::MissingHeader);
        assert!(Lookup::header("bad name").validate().is_err());
    }

    #[test]
    fn repeated_values_are_ambiguous() {
        let head = head("/?t=1&t=2", &[("x-t", "1"), ("x-t", "2")]);
        for lookup in [Lookup::header("X-T"), Lookup::querystring("t")] {
            let err = lookup.find_in_head(&head).unwrap_err();
            assert_eq!(err.kind(), VerifyErrorKind::MalformedHeader, "{lookup:?}");
        }
        let err = Lookup::json_body("t")
            .find_in_body(br#"{"t": "1", "u": 0, "t": "2"}"#)
            .unwrap_err();
        assert!(err.detail().contains("more than once"), "{err}");
    }

    #[test]
    fn querystring_and_form_values_are_decoded() {
        let head = head("/launch/?search=sharks&token=a%2Bb+c&size=3", &[]);
        assert_eq!(
            Lookup::querystring("token").find_in_head(&head).unwrap(),
            "a+b c"
        );
        let no_query = self::head("/launch/", &[]);
        assert_eq!(
            Lookup::querystring("token")
                .find_in_head(&no_query)
                .unwrap_err()
                .kind(),
            VerifyErrorKind::MissingHeader
        );
        let form = Lookup::urlencoded_body("token").prefix("pat_");
        assert_eq!(form.find_in_body(b"a=1&token=pat_x%3Dy").unwrap(), "x=y");
        assert_eq!(
            form.find_in_body(b"a=1").unwrap_err().kind(),
            VerifyErrorKind::MissingHeader
        );
    }

    #[test]
    fn json_lookup_reads_top_level_keys_only() {
        let lookup = Lookup::json_body("token");
        let body = br#"{"data": {"token": "nested"}, "token": "top", "n": [1, {"token": 2}]}"#;
        assert_eq!(lookup.find_in_body(body).unwrap(), "top");
        assert_eq!(
            lookup
                .find_in_body(br#"{"data": {"token": "nested"}}"#)
                .unwrap_err()
                .kind(),
            VerifyErrorKind::MissingHeader
        );
        assert_eq!(
            Lookup::json_body("ts")
                .find_in_body(br#"{"ts": 17}"#)
                .unwrap(),
            "17"
        );
        for bad in [
            &b"[1]"[..],
            b"token=x",
            br#"{"token": "x"} trailing"#,
            b"\xff",
        ] {
            assert_eq!(
                lookup.find_in_body(bad).unwrap_err().kind(),
                VerifyErrorKind::MalformedHeader,
                "{bad:?}"
            );
        }
        assert_eq!(
            lookup
                .find_in_body(br#"{"token": {"a": 1}}"#)
                .unwrap_err()
                .kind(),
            VerifyErrorKind::MalformedHeader
        );
    }
}
