//! Reading and writing the headers schemes sign and verify: strict reads, one-pass lookup,
//! and the signature header names every built-in scheme uses.

use http::{HeaderMap, HeaderName, HeaderValue};

use base64::Engine as _;

use super::mac::Encoding;
use super::{RequestHead, SignError, VerifyError};

/// The head `POST /` with `headers`, for verification from headers alone.
pub(crate) fn head_of(headers: &HeaderMap) -> RequestHead {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = http::Method::POST;
    head.headers = headers.clone();
    head
}

/// Reads a header as visible ASCII text.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    let value = headers
        .get(name)
        .ok_or_else(|| VerifyError::missing(name))?;
    value.to_str().map_err(|_| VerifyError::malformed(name))
}

/// The first value of each of `names`, found in one pass over the headers. A webhook carries a
/// handful of headers, so comparing names (most differ in kind or length) is a third of the
/// cost of one hashed lookup per name.
pub(crate) fn find_headers<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [&HeaderName; N],
) -> [Option<&'h HeaderValue>; N] {
    let mut found = [None; N];
    let mut missing = N;
    for (name, value) in headers {
        let name = name.as_str();
        for (slot, wanted) in found.iter_mut().zip(names) {
            // Lengths first: most names differ there.
            if slot.is_none() && name.len() == wanted.as_str().len() && name == wanted.as_str() {
                *slot = Some(value);
                missing -= 1;
                // The names are distinct: no other slot can take this header.
                break;
            }
        }
        if missing == 0 {
            break;
        }
    }
    found
}

/// A found header's bytes, or `MissingHeader`. Callers parse them with a strict decoder
/// (digits, hex), which rejects what is not visible ASCII on its own.
pub(crate) fn required<'h>(
    value: Option<&'h HeaderValue>,
    name: &HeaderName,
) -> Result<&'h [u8], VerifyError> {
    value
        .map(HeaderValue::as_bytes)
        .ok_or_else(|| VerifyError::missing(name.as_str()))
}

/// Whether every byte is visible ASCII or a tab, as `HeaderValue::to_str` requires, without
/// an early exit so that the loop vectorises.
pub(crate) fn is_visible_ascii(bytes: &[u8]) -> bool {
    // Space to `~`; no control character (TAB included, which header values allow).
    bytes
        .iter()
        .fold(true, |ok, &byte| ok & (byte.wrapping_sub(0x20) < 0x5f))
}

/// Builds a header value from text produced by a signer (always visible ASCII).
pub(crate) fn header_value(text: &str) -> HeaderValue {
    let mut value = HeaderValue::from_str(text).expect("signers only produce visible ASCII");
    value.set_sensitive(true);
    value
}

/// A signature header's value: `prefix` then `mac` in `encoding` (`v1,<hex>`,
/// `sha256=<hex>`, …), written on the stack: every attempt signs, and the string `format!`
/// and [`Encoding::encode`] build would be two allocations more.
pub(crate) fn mac_header_value(prefix: &str, mac: &[u8], encoding: Encoding) -> HeaderValue {
    // A 16-byte prefix and an HMAC-SHA512 in hex (128 digits) fit; base64 is shorter.
    let mut buf = [0u8; 16 + 128];
    let start = prefix.len();
    let encoded = match encoding {
        Encoding::Hex => 2 * mac.len(),
        Encoding::Base64 => mac.len().div_ceil(3) * 4,
    };
    let Some(written) = buf.get_mut(..start + encoded) else {
        return header_value(&format!("{prefix}{}", encoding.encode(mac)));
    };
    written[..start].copy_from_slice(prefix.as_bytes());
    let ok = match encoding {
        Encoding::Hex => hex::encode_to_slice(mac, &mut written[start..]).is_ok(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .encode_slice(mac, &mut written[start..])
            .is_ok_and(|n| n == encoded),
    };
    if !ok {
        return header_value(&format!("{prefix}{}", encoding.encode(mac)));
    }
    let mut value = HeaderValue::from_bytes(written).expect("signers only produce visible ASCII");
    value.set_sensitive(true);
    value
}

/// The message id as a header value. The id is the caller's text, not the signer's, so it is
/// checked here (before any header is written) instead of trusted like `header_value`'s input,
/// by the rule the verifier reads it with ([`MessageId`](super::MessageId)): `http` alone
/// would also let bytes above ASCII through, and a receiver could then not verify the message.
pub(crate) fn id_header_value(id: &str) -> Result<HeaderValue, SignError> {
    if !is_visible_ascii(id.as_bytes()) {
        return Err(SignError::InvalidId);
    }
    let mut value = HeaderValue::from_str(id).map_err(|_| SignError::InvalidId)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Inserts a signer-produced header.
pub(crate) fn insert_header(headers: &mut HeaderMap, name: &'static str, text: &str) {
    headers.insert(HeaderName::from_static(name), header_value(text));
}

/// The signature header names of every built-in scheme, for `SetSensitiveRequestHeaders`
/// and for redaction in logs.
pub(crate) const SIGNATURE_HEADERS: &[&str] = &[
    "x-cerebrium-webhook-signature",
    "nextmv-signature",
    "stripe-signature",
    "webhook-signature",
    "svix-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-slack-signature",
    "x-webhook-secret",
    "authorization",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_header_value_is_the_prefix_and_the_encoded_mac() {
        let long_prefix = "a-prefix-longer-than-sixteen-bytes=";
        for mac in [&[0xab_u8; 20][..], &[7; 32], &[0xff; 64], &[]] {
            for encoding in [Encoding::Hex, Encoding::Base64] {
                for prefix in ["v1,", "sha256=", "", long_prefix] {
                    let value = mac_header_value(prefix, mac, encoding);
                    assert_eq!(
                        value.to_str().unwrap(),
                        format!("{prefix}{}", encoding.encode(mac))
                    );
                    assert!(value.is_sensitive());
                }
            }
        }
    }
}
