//! JWT web-authentication conditions (through `jsonwebtoken`'s signature primitives).
//!
//! The token is parsed here rather than with `jsonwebtoken::decode`, for three reasons:
//! Valohai's documented PyJWT example puts a **numeric** `exp` into the JOSE header, which
//! `jsonwebtoken::Header` (string-only extra fields) refuses to parse, so `decode` refuses the
//! very tokens Valohai issues (a test below keeps that true); expiry must be checked against
//! the clock the verifier was given (`now`), not the system clock `decode` reads; and no claim
//! is required (the example's claims are only `{"ts": …}`). The signature itself is checked by
//! `jsonwebtoken::crypto::verify` with the configured algorithm only.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::ConfigError;
use crate::scheme::{SecretMatch, SignError, VerifyError, VerifyErrorKind};
use crate::secret::{Secret, SecretSet};

/// The JWT signature algorithms a condition can require. A token signed with any other
/// algorithm (including `none`) is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (Valohai's documented example).
    #[default]
    HS256,
    /// HMAC-SHA384 with a shared secret.
    HS384,
    /// HMAC-SHA512 with a shared secret.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256; the secret is a PEM public key.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384; the secret is a PEM public key.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512; the secret is a PEM public key.
    RS512,
    /// ECDSA P-256 SHA-256; the secret is a PEM public key.
    ES256,
}

impl JwtAlgorithm {
    /// The JOSE name (`"HS256"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
            Self::HS384 => "HS384",
            Self::HS512 => "HS512",
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::ES256 => "ES256",
        }
    }

    /// Whether the secret is a shared (HMAC) key rather than a PEM key.
    pub fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::HS384 => jsonwebtoken::Algorithm::HS384,
            Self::HS512 => jsonwebtoken::Algorithm::HS512,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::RS384 => jsonwebtoken::Algorithm::RS384,
            Self::RS512 => jsonwebtoken::Algorithm::RS512,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    /// The verification key for `secret`: the raw bytes for HS*, a PEM public key otherwise.
    fn decoding_key(self, secret: &Secret) -> Option<DecodingKey> {
        match self {
            Self::HS256 | Self::HS384 | Self::HS512 => {
                Some(DecodingKey::from_secret(secret.expose()))
            }
            Self::RS256 | Self::RS384 | Self::RS512 => {
                DecodingKey::from_rsa_pem(secret.expose()).ok()
            }
            Self::ES256 => DecodingKey::from_ec_pem(secret.expose()).ok(),
        }
    }

    /// The signing key for `secret`: the raw bytes for HS*, a PEM private key otherwise.
    fn encoding_key(self, secret: &Secret) -> Result<EncodingKey, SignError> {
        match self {
            Self::HS256 | Self::HS384 | Self::HS512 => {
                Ok(EncodingKey::from_secret(secret.expose()))
            }
            Self::RS256 | Self::RS384 | Self::RS512 => EncodingKey::from_rsa_pem(secret.expose())
                .map_err(|_| SignError::BadSecret("not a PEM RSA private key")),
            Self::ES256 => EncodingKey::from_ec_pem(secret.expose())
                .map_err(|_| SignError::BadSecret("not a PEM PKCS#8 EC private key")),
        }
    }

    /// Checks that every configured secret is usable as a verification key.
    pub(crate) fn validate_secrets(self, secrets: &SecretSet) -> Result<(), ConfigError> {
        if self.is_symmetric() {
            return Ok(());
        }
        for secret in secrets {
            if self.decoding_key(secret).is_none() {
                return Err(ConfigError::new(format!(
                    "the `secret` of a {} condition must be a PEM public key",
                    self.as_str()
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = ConfigError;

    /// Parses a JOSE name, case-insensitively.
    fn from_str(name: &str) -> Result<Self, ConfigError> {
        [
            Self::HS256,
            Self::HS384,
            Self::HS512,
            Self::RS256,
            Self::RS384,
            Self::RS512,
            Self::ES256,
        ]
        .into_iter()
        .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            ConfigError::new(format!(
                "unknown JWT algorithm {name:?} (expected HS256, HS384, HS512, RS256, RS384, \
                 RS512 or ES256)"
            ))
        })
    }
}

/// What an accepted token yields: which secret matched and a replay key.
pub(crate) struct Accepted {
    pub(crate) secret: SecretMatch,
    pub(crate) replay_key: String,
}

fn malformed(what: &'static str) -> VerifyError {
    VerifyError::new(VerifyErrorKind::MalformedHeader, what)
}

/// Decodes one base64url segment holding a JSON object.
fn json_segment(segment: &str) -> Option<Map<String, Value>> {
    let raw = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&raw).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Reads a NumericDate (seconds; fractions are cut) without overflow.
fn numeric_date(value: &Value) -> Option<i64> {
    if let Some(seconds) = value.as_i64() {
        return Some(seconds);
    }
    if value.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // `as` saturates for out-of-range floats; JSON numbers are never NaN.
    value.as_f64().map(|seconds| seconds.floor() as i64)
}

/// Checks `exp` (expired at `now` beyond `leeway`) and `nbf` (not yet valid) in one JSON object.
fn check_times(
    object: &Map<String, Value>,
    now: i64,
    leeway: u64,
    check_nbf: bool,
) -> Result<(), VerifyError> {
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    if let Some(exp) = object.get("exp") {
        let exp = numeric_date(exp).ok_or_else(|| malformed("JWT `exp` is not a number"))?;
        if now > exp.saturating_add(leeway) {
            return Err(VerifyError::new(
                VerifyErrorKind::TimestampTooOld,
                "JWT has expired",
            ));
        }
    }
    if check_nbf {
        if let Some(nbf) = object.get("nbf") {
            let nbf = numeric_date(nbf).ok_or_else(|| malformed("JWT `nbf` is not a number"))?;
            if now.saturating_add(leeway) < nbf {
                return Err(VerifyError::new(
                    VerifyErrorKind::TimestampInFuture,
                    "JWT is not valid yet",
                ));
            }
        }
    }
    Ok(())
}

/// Verifies a compact JWS `token` signed with `algorithm` by one of `secrets`, then its times:
/// `exp` in the claims and in the JOSE header (PyJWT's `headers={'exp': …}`), `nbf` in the
/// claims, each with `leeway` seconds of slack.
pub(crate) fn verify(
    token: &str,
    algorithm: JwtAlgorithm,
    leeway: u64,
    secrets: &SecretSet,
    now: i64,
) -> Result<Accepted, VerifyError> {
    let mut segments = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(malformed("token is not a JWT"));
    };
    let header_object = json_segment(header).ok_or_else(|| malformed("malformed JWT header"))?;
    // No `alg` confusion: the token must name exactly the configured algorithm (never `none`).
    if header_object.get("alg").and_then(Value::as_str) != Some(algorithm.as_str()) {
        return Err(VerifyError::new(
            VerifyErrorKind::InvalidSignature,
            "JWT is not signed with the configured algorithm",
        ));
    }
    if header_object.contains_key("crit") {
        return Err(malformed("JWT header has critical extensions"));
    }
    if signature.is_empty() || URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(malformed("malformed JWT signature"));
    }
    let signing_input = &token[..header.len() + 1 + claims.len()];

    let mut usable = false;
    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        let Some(key) = algorithm.decoding_key(secret) else {
            continue;
        };
        usable = true;
        let valid = jsonwebtoken::crypto::verify(
            signature,
            signing_input.as_bytes(),
            &key,
            algorithm.to_jsonwebtoken(),
        )
        .unwrap_or(false);
        if valid {
            matched = Some(SecretMatch::new(index, secret));
            break;
        }
    }
    if !usable {
        return Err(VerifyError::no_secret());
    }
    let secret = matched.ok_or_else(VerifyError::invalid_signature)?;

    let claims_object = json_segment(claims).ok_or_else(|| malformed("malformed JWT claims"))?;
    check_times(&claims_object, now, leeway, true)?;
    check_times(&header_object, now, leeway, false)?;
    Ok(Accepted {
        secret,
        replay_key: format!("valohai:{}", hex::encode(Sha256::digest(token.as_bytes()))),
    })
}

/// Issues a token like Valohai's documented PyJWT example: claims `{"ts": now, "exp": now + 60}` and
/// `exp` also in the JOSE header.
pub(crate) fn sign(
    algorithm: JwtAlgorithm,
    secret: &Secret,
    now: i64,
) -> Result<String, SignError> {
    let key = algorithm.encoding_key(secret)?;
    let exp = now.saturating_add(60);
    let header = serde_json::json!({ "alg": algorithm.as_str(), "typ": "JWT", "exp": exp });
    let claims = serde_json::json!({ "ts": now, "exp": exp });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature =
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, algorithm.to_jsonwebtoken())
            .map_err(|_| SignError::BadSecret("the key cannot sign with this algorithm"))?;
    Ok(format!("{signing_input}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why the token is parsed here: `jsonwebtoken::decode` refuses the token Valohai's
    /// example issues (a numeric `exp` in the JOSE header), which [`verify`] accepts.
    #[test]
    fn jsonwebtoken_decode_refuses_a_numeric_header_exp_that_verify_accepts() {
        let secret = Secret::from("jwt-secret");
        let now = 1_731_381_205;
        let token = sign(JwtAlgorithm::HS256, &secret, now).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<Map<String, Value>>(
            &token,
            &DecodingKey::from_secret(secret.expose()),
            &validation,
        );
        assert!(decoded.is_err(), "{decoded:?}");
        let accepted = verify(
            &token,
            JwtAlgorithm::HS256,
            0,
            &SecretSet::from(secret),
            now,
        );
        assert!(accepted.is_ok());
    }
}
