//! Which header values are secret: the one rule behind every view, record, log and `Debug`
//! output of this crate (registry custom headers, recorded attempts, conversations).
//!
//! A header is sensitive when its name is one of a few credential headers (`Cookie`,
//! `Proxy-Authorization`…) or contains a word that marks a credential (`token`, `secret`,
//! `key`, `auth`, `password`, `credential`, `signature`, `session`…), case-insensitively. The
//! signature headers of every built-in scheme match, and so do application headers such as
//! `X-Auth-Token` or `X-Tenant-Credential`. Erring towards redaction is deliberate: a redacted
//! harmless value costs a reader little, a shown credential cannot be taken back.
//!
//! ```
//! use tower_webhooks::sensitive::{is_sensitive_header, redacted_headers, REDACTED};
//!
//! assert!(is_sensitive_header("X-Tenant-Credential"));
//! assert!(is_sensitive_header("stripe-signature"));
//! assert!(!is_sensitive_header("content-type"));
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-auth-token", "t0p".parse().unwrap());
//! headers.insert("accept", "*/*".parse().unwrap());
//! assert_eq!(
//!     redacted_headers(&headers),
//!     [("x-auth-token".to_owned(), REDACTED.to_owned()), ("accept".to_owned(), "*/*".to_owned())]
//! );
//! ```

use http::{HeaderMap, HeaderName};

/// What a sensitive value is shown as.
pub const REDACTED: &str = "[redacted]";

/// Credential headers whose names carry none of the [`SECRET_WORDS`].
const SECRET_NAMES: &[&str] = &["cookie", "set-cookie", "www-authenticate"];

/// Words that mark a header name as carrying a credential.
const SECRET_WORDS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "key",
    "password",
    "passwd",
    "credential",
    "signature",
    "session",
    "jwt",
    "private",
];

/// Whether the value of the header `name` is secret: never shown, logged or recorded in clear.
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.as_bytes();
    SECRET_NAMES
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret.as_bytes()))
        || (0..name.len()).any(|start| {
            let rest = &name[start..];
            let mut words = WORDS_BY_FIRST_BYTE[usize::from(rest[0])];
            while words != 0 {
                let word = SECRET_WORDS[words.trailing_zeros() as usize].as_bytes();
                if rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word) {
                    return true;
                }
                words &= words - 1;
            }
            false
        })
}

/// For each byte, the [`SECRET_WORDS`] that start with it (in either case), one bit per word:
/// most positions of a name start no word and cost one lookup. Comparing a window for every
/// word at every position was about a fifth of an outbound attempt's own instructions.
const WORDS_BY_FIRST_BYTE: [u16; 256] = {
    assert!(SECRET_WORDS.len() <= 16, "one bit per word in a u16");
    let mut table = [0u16; 256];
    let mut index = 0;
    while index < SECRET_WORDS.len() {
        let first = SECRET_WORDS[index].as_bytes()[0];
        table[first.to_ascii_lowercase() as usize] |= 1 << index;
        table[first.to_ascii_uppercase() as usize] |= 1 << index;
        index += 1;
    }
    table
};

/// `value`, or [`REDACTED`] when the header `name` is sensitive.
pub fn redact<'a>(name: &str, value: &'a str) -> &'a str {
    if is_sensitive_header(name) {
        REDACTED
    } else {
        value
    }
}

/// Whether a header's value is shown as [`REDACTED`] wherever headers are recorded or
/// displayed: a [sensitive](is_sensitive_header) name, or one named in `write_only` (a
/// webhook's custom headers, whose values are never shown).
#[cfg_attr(not(feature = "forward"), allow(dead_code))]
pub(crate) fn is_redacted(name: &HeaderName, write_only: &HeaderMap) -> bool {
    write_only.contains_key(name) || is_sensitive_header(name.as_str())
}

/// The headers as `(name, value)` text pairs with sensitive values replaced by [`REDACTED`].
pub fn redacted_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    redacted_headers_with(headers, &HeaderMap::new())
}

/// As [`redacted_headers`], also redacting every header named in `write_only` (for example a
/// webhook's custom headers, whose values are never shown whatever their names).
// The delivery engine records attempts with it; without `forward` nothing does.
#[cfg_attr(not(feature = "forward"), allow(dead_code))]
pub(crate) fn redacted_headers_with(
    headers: &HeaderMap,
    write_only: &HeaderMap,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if is_redacted(name, write_only) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// Marks every sensitive value in `headers` (see [`http::HeaderValue::set_sensitive`]), so
/// `Debug`, logging layers and HTTP/2 header compression treat it as secret.
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if is_sensitive_header(name.as_str()) {
            value.set_sensitive(true);
        }
    }
}

/// The fixed header names the rule covers that a request commonly carries (every built-in
/// scheme's signature header, `Authorization`, `Cookie`, `X-Api-Key`…), for layers that take a
/// list, such as `tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new`. Use
/// [`mark_sensitive`] to cover any name.
pub fn sensitive_header_names() -> impl Iterator<Item = HeaderName> + Clone {
    const COMMON: &[&str] = &[
        "cookie",
        "set-cookie",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "webhook-id-secret",
    ];
    crate::scheme::SIGNATURE_HEADERS
        .iter()
        .chain(COMMON)
        .map(|name| HeaderName::from_static(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_of_any_spelling_are_sensitive() {
        for name in [
            "X-Auth-Token",
            "X-Tenant-Credential",
            "x-api-key",
            "Api-Key",
            "Authorization",
            "Proxy-Authorization",
            "Cookie",
            "Set-Cookie",
            "X-Webhook-Secret",
            "X-Session-Id",
            "X-Client-Password",
            "webhook-id-secret",
        ] {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in [
            "content-type",
            "accept",
            "x-request-id",
            "user-agent",
            "x-tenant",
        ] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }

    #[test]
    fn every_signature_header_and_listed_name_is_covered_by_the_rule() {
        for name in sensitive_header_names() {
            assert!(is_sensitive_header(name.as_str()), "{name}");
        }
    }

    #[test]
    fn write_only_names_and_marked_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        headers.insert("x-tenant-credential", "c".parse().unwrap());
        headers.insert("accept", "*/*".parse().unwrap());
        let mut custom = HeaderMap::new();
        custom.insert("x-tenant", "acme".parse().unwrap());
        assert_eq!(
            redacted_headers_with(&headers, &custom),
            [
                ("x-tenant".to_owned(), REDACTED.to_owned()),
                ("x-tenant-credential".to_owned(), REDACTED.to_owned()),
                ("accept".to_owned(), "*/*".to_owned()),
            ]
        );
        mark_sensitive(&mut headers);
        assert!(headers["x-tenant-credential"].is_sensitive());
        assert!(!headers["accept"].is_sensitive());
        assert!(!format!("{headers:?}").contains("\"c\""));
    }
}
