//! Stripe and Nextmv: the `t=<ts>,v1=<hex>[,v1=<hex>…]` grammar over `{t}.{body}`.

use super::mac::Candidates;
use crate::secret::KeyDerivation;
use http::HeaderMap;

use super::mac::{compute, Algorithm, Encoding, HmacVerification};
use super::timestamp::check_window;
use super::{
    header_str, header_value, parse_unix_timestamp, Message, ReplayWindow, RequestHead, Scheme,
    SignError, Verified, VerifyError,
};
use crate::secret::SecretSet;

/// Above this a Nextmv `t` is in milliseconds (10^11 s is the year 5138).
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

struct TimestampedHex {
    name: &'static str,
    header: &'static str,
    accept_millis: bool,
}

impl TimestampedHex {
    fn begin(
        &self,
        window: Option<&ReplayWindow>,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        let text = header_str(&head.headers, self.header)?;
        let mut timestamp_text = None;
        let mut candidates = Candidates::default();
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
                    // Entries that are not hex are skipped, as the vendors' libraries do.
                    candidates.push(Encoding::Hex, value);
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
        HmacVerification::start_sha256(
            verified,
            KeyDerivation::Raw,
            secrets,
            &[timestamp_text.as_bytes(), b"."],
            candidates,
        )
    }

    /// Signs with every secret (one `v1=` entry each, primary first), as during a rotation.
    fn sign(
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

/// Implements [`Scheme`] for a `t=,v1=` format by delegating to its [`TimestampedHex`].
macro_rules! timestamped_scheme {
    ($name:ident, $format:expr) => {
        impl Scheme for $name {
            type Verification = HmacVerification;

            fn name(&self) -> &str {
                $format.name
            }

            fn begin(
                &self,
                head: &RequestHead,
                secrets: &SecretSet,
                now: i64,
            ) -> Result<HmacVerification, VerifyError> {
                $format.begin(self.replay_window.as_ref(), head, secrets, now)
            }

            fn sign(
                &self,
                message: &Message<'_>,
                secrets: &SecretSet,
                headers: &mut HeaderMap,
            ) -> Result<(), SignError> {
                $format.sign(message, secrets, headers)
            }
        }
    };
}

windowed_scheme! {
    /// The Stripe format: `Stripe-Signature: t=<s>,v1=<hex>[,v1=…][,v0=…]` over `{t}.{body}`.
    /// The key is the whole `whsec_…` string as raw UTF-8 (no base64 decode); only `v1`
    /// entries count, and several `v1` entries (a secret roll) are each tried.
    ///
    /// Stripe's own library only rejects old timestamps; this crate also rejects timestamps too
    /// far in the future (a sender's clock rarely leads by more than a minute), which
    /// `replay_window` can widen.
    pub struct Stripe {}
}

windowed_scheme! {
    /// The Nextmv format: `Nextmv-Signature: t=<s or ms>,v1=<hex>` over `{t}.{body}`,
    /// byte-compatible with Nextmv's official handler. The key is the raw UTF-8 secret from
    /// `GET /v1/webhooks/{id}/secret`.
    ///
    /// The documented header says `t` is in milliseconds while the official example compares it
    /// to seconds, so verification accepts both (a value above 10^11 is milliseconds) and always
    /// MACs the `t` text verbatim; signing writes seconds, like every other format. Several `v1` entries (a
    /// rotation) are each tried.
    pub struct Nextmv {}
}

const STRIPE: TimestampedHex = TimestampedHex {
    name: "stripe",
    header: "stripe-signature",
    accept_millis: false,
};

const NEXTMV: TimestampedHex = TimestampedHex {
    name: "nextmv",
    header: "nextmv-signature",
    accept_millis: true,
};

timestamped_scheme!(Stripe, STRIPE);
timestamped_scheme!(Nextmv, NEXTMV);
