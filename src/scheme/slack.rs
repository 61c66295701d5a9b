//! Slack: `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.

use super::mac::Candidates;
use crate::secret::KeyDerivation;
use http::{HeaderMap, HeaderName};

use super::mac::{compute, Algorithm, Encoding, HmacVerification};
use super::timestamp::check_window;
use super::{
    header_str, insert_header, mac_header_value, parse_unix_timestamp, Message, RequestHead,
    Scheme, SignError, Verified, VerifyError,
};
use crate::secret::SecretSet;

const TIMESTAMP: &str = "x-slack-request-timestamp";
const SIGNATURE: &str = "x-slack-signature";

windowed_scheme! {
    /// The Slack request-signing format. The key is the app's signing secret as raw UTF-8.
    pub struct Slack {}
}

impl Scheme for Slack {
    type Verification = HmacVerification;

    fn name(&self) -> &str {
        "slack"
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        let headers = &head.headers;
        let timestamp_text = header_str(headers, TIMESTAMP)?;
        let timestamp = parse_unix_timestamp(timestamp_text)
            .ok_or_else(|| VerifyError::malformed(TIMESTAMP))?;
        let candidate = header_str(headers, SIGNATURE)?
            .strip_prefix("v0=")
            .and_then(|encoded| Candidates::decode(Encoding::Hex, encoded))
            .ok_or_else(|| VerifyError::malformed(SIGNATURE))?;
        check_window(self.replay_window.as_ref(), timestamp, now)?;
        let mut verified = Verified::new("slack");
        verified.timestamp = Some(timestamp);
        HmacVerification::start_sha256(
            verified,
            KeyDerivation::Raw,
            secrets,
            &[b"v0:", timestamp_text.as_bytes(), b":"],
            candidate,
        )
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        let secret = secrets.primary().ok_or(SignError::NoSecret)?;
        let timestamp = message.timestamp.to_string();
        let mac = compute(
            Algorithm::Sha256,
            secret.expose(),
            &[b"v0:", timestamp.as_bytes(), b":", message.body],
        );
        insert_header(headers, TIMESTAMP, &timestamp);
        headers.insert(
            HeaderName::from_static(SIGNATURE),
            mac_header_value("v0=", &mac, Encoding::Hex),
        );
        Ok(())
    }
}
