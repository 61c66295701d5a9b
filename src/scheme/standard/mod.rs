//! Standard Webhooks (and Svix): `webhook-id` / `webhook-timestamp` /
//! `webhook-signature: v1,<base64> [v1a,<base64> …]` over `{id}.{timestamp}.{body}`.
//!
//! `v1` entries are HMAC-SHA256 with a `whsec_` secret; `v1a` entries (with the `ed25519`
//! feature, on by default) are Ed25519 signatures made with a `whsk_` secret key and checked
//! with its `whpk_` public key ([`asymmetric`]).

#[cfg(feature = "ed25519")]
mod asymmetric;

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::mac::{compute, Algorithm, Candidates, Encoding, HmacVerification};
use super::timestamp::{check_window, SYMMETRIC_DEFAULT};
use super::{
    header_str, header_value, id_header_value, insert_header, parse_unix_timestamp, Message,
    MessageId, ReplayWindow, RequestHead, Scheme, SignError, Verification, Verified, VerifyError,
};
use crate::secret::{KeyDerivation, Secret, SecretSet};

/// The Standard Webhooks format, which Svix also speaks with `svix-` header names.
///
/// The signature header is a space-delimited list and one valid entry suffices:
/// - `v1,<base64>`: HMAC-SHA256 keyed with a `whsec_` secret (`whsec_` + base64 of the key
///   bytes; the prefix is optional, unpadded base64 is tolerated);
/// - `v1a,<base64>`: Ed25519 (feature `ed25519`), verified with a `whpk_` public key (or the
///   public half of a `whsk_` secret key) and signed with a `whsk_` secret key.
///
/// A verifier's [`SecretSet`] may mix `whsec_` and `whpk_` entries; a signer's holds `whsec_`
/// or `whsk_` entries and writes one signature per entry, in order (a rotation, or a move from
/// symmetric to asymmetric signatures). Other entries (a future version) are ignored. Unlike
/// the reference libraries, the body does not have to be UTF-8.
///
/// The default window is the Standard Webhooks specification's tolerance, ±300 s.
///
/// ```
/// use tower_webhooks::scheme::{Message, Scheme, StandardWebhooks};
/// use tower_webhooks::SecretSet;
///
/// let signer: SecretSet = vec![
///     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
///     "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
/// ]
/// .into();
/// let mut headers = http::HeaderMap::new();
/// StandardWebhooks::new()
///     .sign(&Message::new("msg_1", 1_700_000_000, b"{}"), &signer, &mut headers)
///     .unwrap();
/// let signature = headers["webhook-signature"].to_str().unwrap();
/// assert!(signature.starts_with("v1,") && signature.contains(" v1a,"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandardWebhooks {
    /// The accepted timestamp window, ±300 s by default (`false` in configuration disables
    /// it; a table field left out keeps its default).
    #[serde(
        default = "crate::scheme::timestamp::optional_symmetric_window::default",
        with = "crate::scheme::timestamp::optional_symmetric_window"
    )]
    pub(crate) replay_window: Option<ReplayWindow>,
    /// Sign with `svix-id` / `svix-timestamp` / `svix-signature` instead of `webhook-*`.
    /// Verification always accepts both.
    #[serde(default)]
    pub(crate) svix_headers: bool,
}

impl Default for StandardWebhooks {
    fn default() -> Self {
        Self {
            replay_window: Some(SYMMETRIC_DEFAULT),
            svix_headers: false,
        }
    }
}

impl StandardWebhooks {
    /// The format with the specification's window (±300 s).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or with `None`, disables) the timestamp window.
    pub fn replay_window(mut self, window: Option<ReplayWindow>) -> Self {
        self.replay_window = window;
        self
    }

    /// Signs with `svix-id` / `svix-timestamp` / `svix-signature` instead of `webhook-*`.
    /// Verification always accepts both.
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

/// The decoded entries of a signature header, by kind.
#[derive(Default)]
struct Signatures {
    symmetric: Candidates,
    #[cfg(feature = "ed25519")]
    asymmetric: Vec<ed25519_dalek::Signature>,
}

impl Signatures {
    /// Entries that are not in their encoding are skipped, as the reference libraries do.
    fn parse(header: &str) -> Self {
        let mut signatures = Self::default();
        for entry in header.split(' ') {
            if let Some(encoded) = entry.strip_prefix("v1,") {
                signatures.symmetric.push(Encoding::Base64, encoded);
            }
            #[cfg(feature = "ed25519")]
            if let Some(encoded) = entry.strip_prefix("v1a,") {
                if signatures.asymmetric.len() < asymmetric::MAX_SIGNATURES {
                    signatures
                        .asymmetric
                        .extend(asymmetric::decode_signature(encoded));
                }
            }
        }
        signatures
    }

    fn is_empty(&self) -> bool {
        #[cfg(feature = "ed25519")]
        if !self.asymmetric.is_empty() {
            return false;
        }
        self.symmetric.is_empty()
    }
}

/// Whether `secret` is a key this scheme can verify with (HMAC or, with `ed25519`, public).
fn is_usable(secret: &Secret) -> bool {
    #[cfg(feature = "ed25519")]
    if asymmetric::verifying_key(secret).is_some() {
        return true;
    }
    secret
        .keyed_sha256(KeyDerivation::StandardWebhooks)
        .is_some()
}

/// A Standard Webhooks verification in progress: the `v1` MACs and the `v1a` verifiers the
/// header and the secrets call for, fed the same bytes; either one matching accepts.
#[derive(Debug)]
pub struct StandardVerification {
    symmetric: Option<HmacVerification>,
    #[cfg(feature = "ed25519")]
    asymmetric: Option<Box<asymmetric::AsymmetricVerification>>,
}

impl Verification for StandardVerification {
    #[inline]
    fn update(&mut self, chunk: &[u8]) {
        if let Some(symmetric) = &mut self.symmetric {
            symmetric.update(chunk);
        }
        #[cfg(feature = "ed25519")]
        if let Some(asymmetric) = &mut self.asymmetric {
            asymmetric.update(chunk);
        }
    }

    fn finish(self, body: &Bytes) -> Result<Verified, VerifyError> {
        let symmetric = match self.symmetric {
            Some(symmetric) => symmetric.finish(body),
            None => Err(VerifyError::invalid_signature()),
        };
        #[cfg(feature = "ed25519")]
        if let (Err(_), Some(asymmetric)) = (&symmetric, self.asymmetric) {
            return asymmetric.finish();
        }
        symmetric
    }
}

impl Scheme for StandardWebhooks {
    type Verification = StandardVerification;

    fn name(&self) -> &str {
        "standard_webhooks"
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<StandardVerification, VerifyError> {
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
        let signatures = Signatures::parse(header_str(headers, signature_name)?);
        if signatures.is_empty() {
            return Err(VerifyError::malformed(signature_name));
        }
        check_window(self.replay_window.as_ref(), timestamp, now)?;

        let mut verified = Verified::new("standard_webhooks");
        verified.message_id = Some(id.clone());
        verified.timestamp = Some(timestamp);
        let prefix: [&[u8]; 4] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b"."];
        #[cfg(feature = "ed25519")]
        let asymmetric = if signatures.asymmetric.is_empty() {
            None
        } else {
            asymmetric::AsymmetricVerification::start(
                verified.clone(),
                secrets,
                &signatures.asymmetric,
                &prefix,
            )
            .map(Box::new)
        };
        // `start_sha256` fails when there is no `v1` entry or no `whsec_` secret: the `v1a`
        // half may still verify.
        let symmetric = HmacVerification::start_sha256(
            verified,
            KeyDerivation::StandardWebhooks,
            secrets,
            &prefix,
            signatures.symmetric,
        )
        .ok();
        let verification = StandardVerification {
            symmetric,
            #[cfg(feature = "ed25519")]
            asymmetric,
        };
        #[cfg(feature = "ed25519")]
        let started = verification.symmetric.is_some() || verification.asymmetric.is_some();
        #[cfg(not(feature = "ed25519"))]
        let started = verification.symmetric.is_some();
        if started {
            Ok(verification)
        } else if secrets.iter().any(is_usable) {
            // A key of the other kind than every signature: nothing can match.
            Err(VerifyError::invalid_signature())
        } else {
            Err(VerifyError::no_secret())
        }
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
        let signed: [&[u8]; 5] = [
            id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            message.body,
        ];
        let mut signatures = Vec::with_capacity(secrets.len());
        for secret in secrets {
            signatures.push(sign_one(secret, &signed)?);
        }
        let [id_name, timestamp_name, signature_name] = Self::names(self.svix_headers);
        headers.insert(id_name, id_value);
        insert_header(headers, timestamp_name, &timestamp);
        headers.insert(signature_name, header_value(&signatures.join(" ")));
        Ok(())
    }
}

/// One signature entry: `v1a` for a `whsk_` secret key, `v1` for a `whsec_` secret.
fn sign_one(secret: &Secret, signed: &[&[u8]]) -> Result<String, SignError> {
    let text = secret.expose_str().unwrap_or_default();
    #[cfg(feature = "ed25519")]
    if text.starts_with(asymmetric::SECRET_KEY_PREFIX) {
        return asymmetric::sign(secret, signed).ok_or(SignError::BadSecret(
            "not whsk_<base64 of a 32-byte seed or a 64-byte key pair>",
        ));
    }
    #[cfg(not(feature = "ed25519"))]
    if text.starts_with("whsk_") {
        return Err(SignError::BadSecret(
            "whsk_ keys need the `ed25519` feature",
        ));
    }
    if text.starts_with("whpk_") {
        return Err(SignError::BadSecret(
            "a whpk_ public key verifies but cannot sign",
        ));
    }
    let key = KeyDerivation::StandardWebhooks
        .derive(secret)
        .ok_or(SignError::BadSecret("not whsec_<base64>"))?;
    let mac = compute(Algorithm::Sha256, &key, signed);
    Ok(format!("v1,{}", Encoding::Base64.encode(&mac)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::VerifyErrorKind;

    #[test]
    #[cfg(feature = "ed25519")]
    fn at_most_eight_v1a_entries_are_tried() {
        let entry = format!("v1a,{}", Encoding::Base64.encode(&[0u8; 64]));
        let header = vec![entry; 20].join(" ");
        let signatures = Signatures::parse(&header);
        assert_eq!(signatures.asymmetric.len(), asymmetric::MAX_SIGNATURES);
        assert!(signatures.symmetric.is_empty());
    }

    #[test]
    fn a_key_of_the_other_kind_is_an_invalid_signature_and_no_key_is_no_secret() {
        let mut request = http::Request::post("/hook").body(()).unwrap();
        let headers = request.headers_mut();
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        headers.insert("webhook-timestamp", "1700000000".parse().unwrap());
        headers.insert(
            "webhook-signature",
            format!("v1,{}", Encoding::Base64.encode(&[1u8; 32]))
                .parse()
                .unwrap(),
        );
        let head = request.into_parts().0;
        let scheme = StandardWebhooks::new();
        let kind = |secrets: &SecretSet| {
            scheme
                .begin(&head, secrets, 1_700_000_000)
                .unwrap_err()
                .kind()
        };
        assert_eq!(kind(&SecretSet::new()), VerifyErrorKind::NoSecret);
        assert_eq!(kind(&"not base64!".into()), VerifyErrorKind::NoSecret);
        #[cfg(feature = "ed25519")]
        assert_eq!(
            kind(&"whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=".into()),
            VerifyErrorKind::InvalidSignature
        );
    }
}
