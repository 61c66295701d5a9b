//! Standard Webhooks (and Svix): `webhook-id` / `webhook-timestamp` /
//! `webhook-signature: v1,<base64> [v1,<base64> …]` over `{id}.{timestamp}.{body}`.

use super::mac::Candidates;
use super::MessageId;
use crate::secret::KeyDerivation;
use http::HeaderMap;

use super::mac::{compute, Algorithm, Encoding, HmacVerification};
use super::timestamp::check_window;
use super::{
    header_str, header_value, id_header_value, insert_header, parse_unix_timestamp, Message,
    RequestHead, Scheme, SignError, Verified, VerifyError,
};
use crate::secret::SecretSet;

windowed_scheme! {
    /// The Standard Webhooks format, which Svix also speaks with `svix-` header names.
    ///
    /// The secret is `whsec_` + base64 of the key bytes (the prefix is optional, unpadded base64 is
    /// tolerated); the MAC is HMAC-SHA256 in standard base64. The signature header is a
    /// space-delimited list: non-`v1` entries (such as asymmetric `v1a`) are ignored and one match
    /// suffices. Unlike the reference libraries, the body does not have to be UTF-8.
    pub struct StandardWebhooks {
        /// Sign with `svix-id` / `svix-timestamp` / `svix-signature` instead of `webhook-*`.
        /// Verification always accepts both.
        pub svix_headers: bool = false,
    }
}

impl StandardWebhooks {
    /// Signs with `svix-*` header names.
    pub fn svix_headers(mut self, svix: bool) -> Self {
        self.svix_headers = svix;
        self
    }

    fn names(svix: bool) -> [&'static str; 3] {
        if svix {
            ["svix-id", "svix-timestamp", "svix-signature"]
        } else {
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        }
    }
}

impl Scheme for StandardWebhooks {
    type Verification = HmacVerification;

    fn name(&self) -> &str {
        "standard_webhooks"
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        let headers = &head.headers;
        let svix = !headers.contains_key("webhook-id") && headers.contains_key("svix-id");
        let [id_name, timestamp_name, signature_name] = Self::names(svix);
        let id = headers
            .get(id_name)
            .ok_or_else(|| VerifyError::missing(id_name))?;
        let id = MessageId::from_header(id).ok_or_else(|| VerifyError::malformed(id_name))?;
        let timestamp_text = header_str(headers, timestamp_name)?;
        let timestamp = parse_unix_timestamp(timestamp_text)
            .ok_or_else(|| VerifyError::malformed(timestamp_name))?;
        let mut candidates = Candidates::default();
        for encoded in header_str(headers, signature_name)?
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
        {
            // Entries that are not base64 are skipped, as the reference libraries do.
            candidates.push(Encoding::Base64, encoded);
        }
        if candidates.is_empty() {
            return Err(VerifyError::malformed(signature_name));
        }
        check_window(self.replay_window.as_ref(), timestamp, now)?;

        let mut verified = Verified::new("standard_webhooks");
        verified.message_id = Some(id.clone());
        verified.timestamp = Some(timestamp);
        HmacVerification::start_sha256(
            verified,
            KeyDerivation::StandardWebhooks,
            secrets,
            &[id.as_bytes(), b".", timestamp_text.as_bytes(), b"."],
            candidates,
        )
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        if secrets.is_empty() {
            return Err(SignError::NoSecret);
        }
        let id = message.id.ok_or(SignError::MissingId)?;
        let id_value = id_header_value(id)?;
        let timestamp = message.timestamp.to_string();
        let mut signatures = Vec::with_capacity(secrets.len());
        for secret in secrets {
            let key = KeyDerivation::StandardWebhooks
                .derive(secret)
                .ok_or(SignError::BadSecret("not whsec_<base64>"))?;
            let mac = compute(
                Algorithm::Sha256,
                &key,
                &[
                    id.as_bytes(),
                    b".",
                    timestamp.as_bytes(),
                    b".",
                    message.body,
                ],
            );
            signatures.push(format!("v1,{}", Encoding::Base64.encode(&mac)));
        }
        let [id_name, timestamp_name, signature_name] = Self::names(self.svix_headers);
        headers.insert(id_name, id_value);
        insert_header(headers, timestamp_name, &timestamp);
        headers.insert(signature_name, header_value(&signatures.join(" ")));
        Ok(())
    }
}
