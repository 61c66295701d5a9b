//! GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body.

use super::mac::Candidates;
use crate::secret::KeyDerivation;
use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

use super::mac::{compute, Algorithm, Encoding, HmacVerification};
use super::{
    header_str, id_header_value, mac_header_value, Message, RequestHead, Scheme, SignError,
    Verified, VerifyError,
};
use crate::secret::SecretSet;

const SIGNATURE_256: &str = "x-hub-signature-256";
const SIGNATURE_SHA1: &str = "x-hub-signature";

/// The GitHub format. The key is the raw UTF-8 secret.
///
/// GitHub signs no timestamp and no id (`X-GitHub-Delivery` is unsigned), so there is no
/// replay window; the de-duplication key is derived from the MAC, which is signed material.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHub {
    /// Also accept the legacy `X-Hub-Signature: sha1=<hex>` when the SHA-256 header is absent.
    #[serde(default)]
    pub(crate) accept_sha1: bool,
}

impl GitHub {
    /// The format (SHA-256 only).
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accept the legacy `X-Hub-Signature: sha1=<hex>` when the SHA-256 header is
    /// absent.
    pub fn accept_sha1(mut self, accept: bool) -> Self {
        self.accept_sha1 = accept;
        self
    }
}

impl Scheme for GitHub {
    type Verification = HmacVerification;

    fn name(&self) -> &str {
        "github"
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        _now: i64,
    ) -> Result<HmacVerification, VerifyError> {
        let headers = &head.headers;
        let (name, prefix, algorithm) = if self.accept_sha1 && !headers.contains_key(SIGNATURE_256)
        {
            (SIGNATURE_SHA1, "sha1=", Algorithm::Sha1)
        } else {
            (SIGNATURE_256, "sha256=", Algorithm::Sha256)
        };
        let candidate = header_str(headers, name)?
            .strip_prefix(prefix)
            .and_then(|encoded| Candidates::decode(Encoding::Hex, encoded))
            .ok_or_else(|| VerifyError::malformed(name))?;
        let verified = Verified::new("github");
        match algorithm {
            Algorithm::Sha256 => HmacVerification::start_sha256(
                verified,
                KeyDerivation::Raw,
                secrets,
                &[],
                candidate,
            ),
            _ => HmacVerification::start_with(
                verified,
                algorithm,
                secrets,
                |secret| Some(secret.expose().into()),
                &[],
                candidate,
            ),
        }
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        let secret = secrets.primary().ok_or(SignError::NoSecret)?;
        let id = message.id.map(id_header_value).transpose()?;
        let mac = compute(Algorithm::Sha256, secret.expose(), &[message.body]);
        headers.insert(
            HeaderName::from_static(SIGNATURE_256),
            mac_header_value("sha256=", &mac, Encoding::Hex),
        );
        if let Some(id) = id {
            headers.insert(HeaderName::from_static("x-github-delivery"), id);
        }
        Ok(())
    }
}
