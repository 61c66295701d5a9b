//! Cerebrium: `X-Request-Id` / `X-Cerebrium-Webhook-Timestamp` /
//! `X-Cerebrium-Webhook-Signature: v1,<hex>` over `{id}.{timestamp}.{body}`.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::mac::{Algorithm, Candidates, Encoding, HmacVerification, MacState};
use super::timestamp::check_window;
use super::{
    find_headers, id_header_value, mac_header_value, parse_unix_timestamp_bytes, required, Message,
    MessageId, RequestHead, Scheme, SignError, Verified, VerifyError,
};
use crate::secret::KeyDerivation;
use crate::secret::SecretSet;

const ID: &str = "x-request-id";
const LEGACY_ID: &str = "x-cerebrium-webhook-id";
const TIMESTAMP: &str = "x-cerebrium-webhook-timestamp";
const SIGNATURE: &str = "x-cerebrium-webhook-signature";

/// The same names, parsed once.
const ID_NAME: HeaderName = HeaderName::from_static(ID);
const LEGACY_ID_NAME: HeaderName = HeaderName::from_static(LEGACY_ID);
const TIMESTAMP_NAME: HeaderName = HeaderName::from_static(TIMESTAMP);
const SIGNATURE_NAME: HeaderName = HeaderName::from_static(SIGNATURE);

windowed_scheme! {
    /// The Cerebrium webhook format. The key is the raw UTF-8 secret the caller chose
    /// (`X-Webhook-Secret`); the MAC is HMAC-SHA256 in lowercase hex, prefixed `v1,`.
    ///
    /// Verification also accepts the historical `X-Cerebrium-Webhook-Id` header when
    /// `X-Request-Id` is absent, and a bare hex signature (as Cerebrium's own Python verifier
    /// does): older senders still use them.
    pub struct Cerebrium {}
}

impl Scheme for Cerebrium {
    type Verification = HmacVerification;

    fn name(&self) -> &str {
        "cerebrium"
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        let [id, legacy_id, timestamp_text, signature] = find_headers(
            &head.headers,
            [&ID_NAME, &LEGACY_ID_NAME, &TIMESTAMP_NAME, &SIGNATURE_NAME],
        );
        let id_value = id.or(legacy_id).ok_or_else(|| VerifyError::missing(ID))?;
        let id = MessageId::from_header(id_value).ok_or_else(|| match id {
            Some(_) => VerifyError::malformed(ID),
            None => VerifyError::missing(ID),
        })?;
        let timestamp_text = required(timestamp_text, &TIMESTAMP_NAME)?;
        let timestamp = parse_unix_timestamp_bytes(timestamp_text)
            .ok_or_else(|| VerifyError::malformed(TIMESTAMP))?;
        let signature = required(signature, &SIGNATURE_NAME)?;
        let encoded = signature.strip_prefix(b"v1,").unwrap_or(signature);
        let candidate =
            Candidates::decode_hex(encoded).ok_or_else(|| VerifyError::malformed(SIGNATURE))?;
        check_window(self.replay_window.as_ref(), timestamp, now)?;

        let mut verified = Verified::new("cerebrium");
        verified.message_id = Some(id);
        verified.timestamp = Some(timestamp);
        HmacVerification::start_sha256(
            verified,
            KeyDerivation::Raw,
            secrets,
            &[id_value.as_bytes(), b".", timestamp_text, b"."],
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
        let id = message.id.ok_or(SignError::MissingId)?;
        let id_value = id_header_value(id)?;
        // The timestamp's header value is also the MAC's input: every attempt signs, and its
        // string would be an allocation more.
        let mut timestamp = HeaderValue::from(message.timestamp);
        timestamp.set_sensitive(true);
        let mut mac = MacState::new(Algorithm::Sha256, secret.expose());
        for part in [
            id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            message.body,
        ] {
            mac.update(part);
        }
        let mac = mac.finalize();
        headers.insert(HeaderName::from_static(ID), id_value);
        headers.insert(HeaderName::from_static(TIMESTAMP), timestamp);
        headers.insert(
            HeaderName::from_static(SIGNATURE),
            mac_header_value("v1,", &mac, Encoding::Hex),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::Request;

    use super::*;
    use crate::scheme::{Verification, VerifyErrorKind};

    const VECTOR_SIG: &str = "v1,80646d4da4b9c8eaeb8693681a22a6fa7fd55bd82cec37196c10c9d1da6bad08";

    fn head(signature: &str, id_header: &str) -> RequestHead {
        Request::post("/")
            .header(id_header, "21eb3b98-4b10-9ad6-8681-a47172828024")
            .header(TIMESTAMP, "1731381205")
            .header(SIGNATURE, signature)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn verify(
        head: &RequestHead,
        secret: &str,
        body: &'static [u8],
    ) -> Result<Verified, VerifyError> {
        let mut verification = Cerebrium::new().begin(head, &secret.into(), 1_731_381_205)?;
        verification.update(body);
        verification.finish(&Bytes::from_static(body))
    }

    #[test]
    fn vector_and_tampering() {
        let body = br#"{"smile": "wave"}"#;
        let ok = verify(&head(VECTOR_SIG, ID), "my-webhook-secret", body).unwrap();
        assert_eq!(
            ok.message_id.as_deref(),
            Some("21eb3b98-4b10-9ad6-8681-a47172828024")
        );
        assert_eq!(ok.secret.unwrap().index, 0);
        verify(&head(VECTOR_SIG, LEGACY_ID), "my-webhook-secret", body).unwrap();
        verify(&head(&VECTOR_SIG[3..], ID), "my-webhook-secret", body).unwrap();
        let err = verify(
            &head(VECTOR_SIG, ID),
            "my-webhook-secret",
            br#"{"smile": "wavE"}"#,
        );
        assert_eq!(err.unwrap_err().kind(), VerifyErrorKind::InvalidSignature);
        let err = verify(&head(VECTOR_SIG, ID), "other", body);
        assert_eq!(err.unwrap_err().kind(), VerifyErrorKind::InvalidSignature);
        let err = verify(
            &head(&VECTOR_SIG.replace("v1,", "v2,"), ID),
            "my-webhook-secret",
            body,
        );
        assert_eq!(err.unwrap_err().kind(), VerifyErrorKind::MalformedHeader);
    }

    #[test]
    fn message_id_must_be_visible_ascii() {
        let mut head = head(VECTOR_SIG, ID);
        head.headers.insert(
            ID,
            http::HeaderValue::from_bytes(b"id-\xff").expect("obs-text is a header value"),
        );
        let err = verify(&head, "my-webhook-secret", br#"{"smile": "wave"}"#).unwrap_err();
        assert_eq!(err.kind(), VerifyErrorKind::MalformedHeader);
        assert!(MessageId::new("id\n").is_none());
        let id = MessageId::new("msg_1").unwrap();
        assert_eq!(id, "msg_1");
        assert_eq!(id.as_bytes(), b"msg_1");
        assert_eq!(format!("{id} {id:?}"), "msg_1 \"msg_1\"");
    }

    #[test]
    fn sign_reproduces_vector() {
        let mut headers = HeaderMap::new();
        let message = Message::new(
            "21eb3b98-4b10-9ad6-8681-a47172828024",
            1_731_381_205,
            br#"{"smile": "wave"}"#,
        );
        Cerebrium::new()
            .sign(&message, &"my-webhook-secret".into(), &mut headers)
            .unwrap();
        assert_eq!(headers[SIGNATURE], VECTOR_SIG);
        assert_eq!(headers[TIMESTAMP], "1731381205");
    }
}
