//! Valohai webhook triggers: a list of conditions that must all pass, and a success response.
//!
//! Implemented from Valohai's webhook-trigger reference. A trigger is described by
//! **conditions**:
//!
//! - [`WebAuthentication`]: a token found by a [`Lookup`] (HTTP header, query parameter,
//!   URL-encoded body field or top-level JSON body key, with a value prefix cut away) and
//!   checked as a static token, an HMAC over a [`Basestring`] (`{body}`, `{header:Name}` and
//!   literal text), or a JWT ([`JwtAlgorithm`], behind the default `jwt` feature);
//! - [`WebTimestamp`]: a Unix-seconds timestamp within `tolerance` seconds of now, both ways;
//! - [`RateLimit`]: at most `quota` launches per `period` seconds (several limits at once).
//!
//! and by a [`ResponseAction`] (`ok` as `text/plain` by default, or configured text/JSON with
//! `{run_id}` replaced by [`Verified::run_id`](crate::Verified::run_id)).
//!
//! In Valohai-compatible mode (the default) every failed condition answers `400 Bad Request`
//! ([`Scheme::uniform_rejection_status`]); otherwise each failure keeps its own status
//! (`401` for a bad token, `429` for a rate limit, …). Error details never contain a secret,
//! a token or an expected MAC.
//!
//! # Configuration
//!
//! ```
//! use tower_webhooks::scheme::Valohai;
//!
//! # std::env::set_var("WEBHOOK_TOKEN", "s3cr3t");
//! let scheme: Valohai = toml::from_str(r#"
//!     compatible = true
//!
//!     [[conditions]]
//!     type = "web_authentication"
//!     auth_type = "hmac"
//!     lookup_namespace = "header"
//!     lookup_key = "Authorization"
//!     secret = "{env:WEBHOOK_TOKEN}"
//!     basestring = "prefix.{body}.{header:Request-Timestamp}"
//!     algorithm = "sha256"
//!
//!     [[conditions]]
//!     type = "web_timestamp"
//!     lookup_namespace = "header"
//!     lookup_key = "Request-Timestamp"
//!     tolerance = 60
//!
//!     [[conditions]]
//!     type = "rate_limit"
//!     period = 3600
//!     quota = 10
//!
//!     [response]
//!     json = { status = "success", run_id = "{run_id}" }
//! "#).unwrap();
//! assert_eq!(scheme.conditions().len(), 3);
//! ```
//!
//! Keys of a `web_authentication` condition: `auth_type` (`static_token` | `hmac` | `jwt`),
//! `lookup_namespace` (`header` (default) | `querystring` | `urlencoded_body` | `json_body`),
//! `lookup_key`, `value_prefix` (default empty), `secret` (one string or a list for rotation;
//! default: the secrets the verifier is given), `basestring` (HMAC, default `{body}`),
//! `algorithm` (HMAC: `sha1` | `sha256` (default) | `sha512`; JWT: `HS256` (default) | `HS384` |
//! `HS512` | `RS256` | `RS384` | `RS512` | `ES256`), `encoding` (HMAC: `hex` (default) |
//! `base64`), `leeway` (JWT, seconds, default 5). A `web_timestamp` condition has
//! `lookup_namespace`, `lookup_key`, `value_prefix` and `tolerance` (seconds); a `rate_limit`
//! condition has `period` (seconds) and `quota`. `response` is one `{ text = "…" }` or
//! `{ json = … }` table, or a list of them (only the first counts).
//!
//! # Security notes
//!
//! - A trigger without a `web_authentication` condition accepts every request, as on Valohai.
//! - A static token travels with every request and a JWT does not cover the body; HMAC with a
//!   `web_timestamp` condition whose header is in the basestring is the strongest setup.
//! - Rate-limit state is per process (shared by clones of the scheme).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::mac::compute;
use super::{Message, RequestHead, Scheme, SignError, SuccessResponse, Verified, VerifyError};
use crate::secret::SecretSet;

mod auth;
#[cfg(feature = "jwt")]
mod jwt;
mod lookup;
mod rate_limit;
mod response;
#[cfg(test)]
mod tests;
mod timestamp;
mod verification;

pub use auth::{AuthType, Basestring, WebAuthentication};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::JwtAlgorithm;
pub use lookup::{Lookup, LookupNamespace};
pub use rate_limit::RateLimit;
pub use response::ResponseAction;
pub use timestamp::WebTimestamp;
pub use verification::ValohaiVerification;

const NAME: &str = "valohai";

/// A Valohai webhook trigger: conditions that must all pass, and the success response.
///
/// Cheap to clone; clones share the rate-limit state. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ValohaiRepr", into = "ValohaiRepr")]
pub struct Valohai {
    compatible: bool,
    conditions: Arc<Vec<Condition>>,
    response: Option<ResponseAction>,
}

/// One trigger condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Condition {
    /// A token check (static token, HMAC or JWT).
    WebAuthentication(WebAuthentication),
    /// A recent Unix timestamp.
    WebTimestamp(WebTimestamp),
    /// At most `quota` launches per `period` seconds.
    RateLimit(RateLimit),
}

impl From<WebAuthentication> for Condition {
    fn from(condition: WebAuthentication) -> Self {
        Self::WebAuthentication(condition)
    }
}

impl From<WebTimestamp> for Condition {
    fn from(condition: WebTimestamp) -> Self {
        Self::WebTimestamp(condition)
    }
}

impl From<RateLimit> for Condition {
    fn from(condition: RateLimit) -> Self {
        Self::RateLimit(condition)
    }
}

/// Why a Valohai trigger description is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: Cow<'static, str>,
}

impl ConfigError {
    pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValohaiRepr {
    #[serde(default = "yes")]
    compatible: bool,
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<Responses>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Responses {
    One(ResponseAction),
    Many(Vec<ResponseAction>),
}

impl From<ValohaiRepr> for Valohai {
    fn from(repr: ValohaiRepr) -> Self {
        Self {
            compatible: repr.compatible,
            conditions: Arc::new(repr.conditions),
            response: match repr.response {
                Some(Responses::One(action)) => Some(action),
                Some(Responses::Many(actions)) => actions.into_iter().next(),
                None => None,
            },
        }
    }
}

impl From<Valohai> for ValohaiRepr {
    fn from(scheme: Valohai) -> Self {
        Self {
            compatible: scheme.compatible,
            conditions: Arc::unwrap_or_clone(scheme.conditions),
            response: scheme.response.map(Responses::One),
        }
    }
}

impl Default for Valohai {
    fn default() -> Self {
        Self {
            compatible: true,
            conditions: Arc::default(),
            response: None,
        }
    }
}

impl Valohai {
    /// A trigger in Valohai-compatible mode, with no condition yet and the default `ok`
    /// response.
    pub fn new() -> Self {
        Self::default()
    }

    /// Valohai-compatible mode (the default): every rejection answers `400`. With `false`,
    /// each failure keeps its own status.
    pub fn compatible(mut self, compatible: bool) -> Self {
        self.compatible = compatible;
        self
    }

    /// Adds a condition (all must pass; they are checked in order, rate limits last).
    pub fn condition(mut self, condition: impl Into<Condition>) -> Self {
        Arc::make_mut(&mut self.conditions).push(condition.into());
        self
    }

    /// Sets the success response (replacing any earlier one).
    pub fn response(mut self, response: ResponseAction) -> Self {
        self.response = Some(response);
        self
    }

    /// Whether Valohai-compatible mode is on.
    pub fn is_compatible(&self) -> bool {
        self.compatible
    }

    /// The conditions, in order.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// The configured success response, if any (`None` = `ok` as `text/plain`).
    pub fn response_action(&self) -> Option<&ResponseAction> {
        self.response.as_ref()
    }
}

impl Scheme for Valohai {
    type Verification = ValohaiVerification;

    fn name(&self) -> &str {
        NAME
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<ValohaiVerification, VerifyError> {
        ValohaiVerification::begin(&self.conditions, head, secrets, now)
    }

    /// Adds the headers the conditions read: each header-namespace `web_timestamp` condition's
    /// header (`message.timestamp`, set first so a basestring can refer to it), then each
    /// `web_authentication` condition's header (value prefix + token, MAC or JWT).
    ///
    /// A condition's own `secret` is used when it has one, else the primary of `secrets`;
    /// an RS*/ES* JWT condition always signs with the primary of `secrets`, which must be the
    /// PEM private key (its own `secret` is the public key). Query-string and body lookups
    /// cannot be produced by a signer ([`SignError::Unsupported`]).
    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        for condition in self.conditions.iter() {
            if let Condition::WebTimestamp(condition) = condition {
                let name = signed_header_name(&condition.lookup)?;
                let text = format!("{}{}", condition.lookup.prefix, message.timestamp);
                headers.insert(name, signed_header_value(&text, BAD_PREFIX)?);
            }
        }
        for condition in self.conditions.iter() {
            let Condition::WebAuthentication(condition) = condition else {
                continue;
            };
            let name = signed_header_name(&condition.lookup)?;
            let own = condition.secret.as_ref().and_then(SecretSet::primary);
            let (token, invalid) = match &condition.auth {
                AuthType::StaticToken => {
                    let secret = own.or(secrets.primary()).ok_or(SignError::NoSecret)?;
                    let token = secret
                        .expose_str()
                        .ok_or(SignError::BadSecret("a static token must be text"))?;
                    (
                        token.to_owned(),
                        SignError::BadSecret("a static token must be a valid header value"),
                    )
                }
                AuthType::Hmac {
                    algorithm,
                    basestring,
                    encoding,
                } => {
                    let secret = own.or(secrets.primary()).ok_or(SignError::NoSecret)?;
                    let (before, after) = basestring.resolve(headers).map_err(|err| match err {
                        auth::Unresolved::Missing(name) => {
                            SignError::MissingHeader(name.as_str().to_owned())
                        }
                        auth::Unresolved::Repeated(_) => {
                            SignError::Unsupported("a basestring header is given more than once")
                        }
                    })?;
                    let body: &[u8] = if basestring.contains_body() {
                        message.body
                    } else {
                        b""
                    };
                    let mac = compute(*algorithm, secret.expose(), &[&before, body, &after]);
                    (encoding.encode(&mac), BAD_PREFIX)
                }
                #[cfg(feature = "jwt")]
                AuthType::Jwt { algorithm, .. } => {
                    let secret = if algorithm.is_symmetric() {
                        own.or(secrets.primary())
                    } else {
                        secrets.primary()
                    }
                    .ok_or(SignError::NoSecret)?;
                    (
                        jwt::sign(*algorithm, secret, message.timestamp)?,
                        BAD_PREFIX,
                    )
                }
            };
            let text = format!("{}{token}", condition.lookup.prefix);
            headers.insert(name, signed_header_value(&text, invalid)?);
        }
        Ok(())
    }

    fn uniform_rejection_status(&self) -> Option<StatusCode> {
        self.compatible.then_some(StatusCode::BAD_REQUEST)
    }

    fn admit(&self, _verified: &Verified, now: i64) -> Result<(), VerifyError> {
        let limits: Vec<&RateLimit> = self
            .conditions
            .iter()
            .filter_map(|condition| match condition {
                Condition::RateLimit(limit) => Some(limit),
                _ => None,
            })
            .collect();
        if limits.is_empty() {
            return Ok(());
        }
        rate_limit::acquire_all(&limits, now)
    }

    fn has_admission(&self) -> bool {
        self.conditions
            .iter()
            .any(|condition| matches!(condition, Condition::RateLimit(_)))
    }

    fn success_response(&self, run_id: &str) -> Option<SuccessResponse> {
        Some(match &self.response {
            Some(action) => action.render(run_id),
            None => SuccessResponse {
                content_type: "text/plain",
                body: "ok".to_owned(),
            },
        })
    }
}

const BAD_PREFIX: SignError =
    SignError::Unsupported("the value prefix is not a valid header value");

fn signed_header_name(lookup: &Lookup) -> Result<HeaderName, SignError> {
    if lookup.namespace != LookupNamespace::Header {
        return Err(SignError::Unsupported(
            "only header lookups can be signed (not querystring or body lookups)",
        ));
    }
    lookup
        .header_name()
        .map_err(|_| SignError::Unsupported("the lookup key is not a valid header name"))
}

fn signed_header_value(text: &str, invalid: SignError) -> Result<HeaderValue, SignError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| invalid)?;
    value.set_sensitive(true);
    Ok(value)
}
