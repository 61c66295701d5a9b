//! Why a request failed verification ([`VerifyError`]) or a message could not be signed
//! ([`SignError`]).

use std::borrow::Cow;
use std::fmt;

/// Why a request failed verification. Never carries a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    kind: VerifyErrorKind,
    detail: Cow<'static, str>,
}

/// The reason class of a [`VerifyError`]; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// A required header (or token) is absent: `400`.
    MissingHeader,
    /// A header is present but not in the scheme's grammar: `400`.
    MalformedHeader,
    /// No signature matched any secret: `401`.
    InvalidSignature,
    /// No secret is configured or found for this request: `401`.
    NoSecret,
    /// The timestamp is older than the window allows: `401`.
    TimestampTooOld,
    /// The timestamp is further in the future than the window allows: `401`.
    TimestampInFuture,
    /// A rate-limit condition refused the request: `429`.
    RateLimited,
    /// A non-signature condition failed (Valohai): `400`.
    ConditionFailed,
}

impl VerifyError {
    /// A new error of `kind` with a short public detail (no secrets, no expected values).
    pub fn new(kind: VerifyErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn missing(header: &str) -> Self {
        Self::new(
            VerifyErrorKind::MissingHeader,
            format!("missing `{header}` header"),
        )
    }

    pub(crate) fn malformed(header: &str) -> Self {
        Self::new(
            VerifyErrorKind::MalformedHeader,
            format!("malformed `{header}` header"),
        )
    }

    pub(crate) fn invalid_signature() -> Self {
        Self::new(
            VerifyErrorKind::InvalidSignature,
            "no signature matched any configured secret",
        )
    }

    pub(crate) fn no_secret() -> Self {
        Self::new(
            VerifyErrorKind::NoSecret,
            "no secret is configured for this endpoint",
        )
    }

    /// The reason class.
    pub fn kind(&self) -> VerifyErrorKind {
        self.kind
    }

    /// The short public detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for VerifyError {}

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// The secret set is empty.
    NoSecret,
    /// The format carries a message id and none was given.
    MissingId,
    /// The message id cannot be written into a header (it is not visible ASCII).
    InvalidId,
    /// The secret is unusable for this format (for example not base64 for Standard Webhooks).
    BadSecret(&'static str),
    /// A header the signed content refers to is missing from the outgoing headers.
    MissingHeader(String),
    /// The format cannot be produced by a sender as configured.
    Unsupported(&'static str),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSecret => f.write_str("no secret to sign with"),
            Self::MissingId => f.write_str("the scheme needs a message id"),
            Self::InvalidId => f.write_str("the message id is not visible ASCII"),
            Self::BadSecret(why) => write!(f, "unusable secret: {why}"),
            Self::MissingHeader(name) => {
                write!(f, "signed content refers to missing header `{name}`")
            }
            Self::Unsupported(why) => write!(f, "cannot sign: {why}"),
        }
    }
}

impl std::error::Error for SignError {}
