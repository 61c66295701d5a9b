//! The `t=<ts>,v1=<hex>[,v1=<hex>…]` grammar shared by Stripe and Nextmv, signing `{t}.{body}`.

use http::HeaderMap;

use super::mac::{compute, Algorithm, Encoding, HmacVerification};
use super::timestamp::check_window;
use super::{
    header_str, header_value, parse_unix_timestamp, Message, ReplayWindow, RequestHead, SignError,
    Verified, VerifyError,
};
use crate::secret::SecretSet;

/// Above this a Nextmv `t` is in milliseconds (decision 1: 10^11 s is the year 5138).
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

pub(super) struct TimestampedHex {
    pub(super) name: &'static str,
    pub(super) header: &'static str,
    pub(super) accept_millis: bool,
}

impl TimestampedHex {
    pub(super) fn begin(
        &self,
        window: Option<&ReplayWindow>,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        let text = header_str(&head.headers, self.header)?;
        let mut timestamp_text = None;
        let mut candidates = Vec::new();
        for item in text.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or_else(|| VerifyError::malformed(self.header))?;
            match key {
                "t" if timestamp_text.is_none() => timestamp_text = Some(value),
                "t" => return Err(VerifyError::malformed(self.header)),
                // Only `v1` counts: ignoring other schemes prevents downgrade attacks.
                "v1" => {
                    if let Some(mac) = Encoding::Hex.decode(value) {
                        candidates.push(mac);
                    }
                }
                _ => {}
            }
        }
        let timestamp_text = timestamp_text.ok_or_else(|| VerifyError::malformed(self.header))?;
        let mut timestamp = parse_unix_timestamp(timestamp_text)
            .ok_or_else(|| VerifyError::malformed(self.header))?;
        if self.accept_millis && timestamp > MILLIS_THRESHOLD {
            timestamp /= 1000;
        }
        if candidates.is_empty() {
            return Err(VerifyError::malformed(self.header));
        }
        check_window(window, timestamp, now)?;
        let mut verified = Verified::new(self.name);
        verified.timestamp = Some(timestamp);
        HmacVerification::start(
            verified,
            Algorithm::Sha256,
            secrets,
            |secret| Some(secret.expose().into()),
            &[timestamp_text.as_bytes(), b"."],
            candidates,
        )
    }

    /// Signs with every secret (one `v1=` entry each, primary first), as during a rotation.
    pub(super) fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        if secrets.is_empty() {
            return Err(SignError::NoSecret);
        }
        let timestamp = message.timestamp.to_string();
        let mut value = format!("t={timestamp}");
        for secret in secrets {
            let mac = compute(
                Algorithm::Sha256,
                secret.expose(),
                &[timestamp.as_bytes(), b".", message.body],
            );
            value.push_str(",v1=");
            value.push_str(&Encoding::Hex.encode(&mac));
        }
        headers.insert(self.header, header_value(&value));
        Ok(())
    }
}
