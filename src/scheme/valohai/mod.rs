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

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::mac::{compute, MacState};
use super::timestamp::ReplayWindow;
use super::{
    parse_unix_timestamp, Message, RequestHead, Scheme, SecretMatch, SignError, SuccessResponse,
    Verification, Verified, VerifyError, VerifyErrorKind,
};
use crate::secret::{ct_eq, SecretSet};

mod auth;
#[cfg(feature = "jwt")]
mod jwt;
mod lookup;
mod rate_limit;
#[cfg(test)]
mod tests;

pub use auth::{AuthType, Basestring, WebAuthentication, DEFAULT_JWT_LEEWAY};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::JwtAlgorithm;
pub use lookup::{Lookup, LookupNamespace};
pub use rate_limit::RateLimit;

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

/// A Valohai "Web Timestamp" condition: a Unix-seconds timestamp (ASCII digits only, or a
/// JSON integer) at most `tolerance` seconds away from now, in either direction. The first one
/// is reported in [`Verified::timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WebTimestampRepr", into = "WebTimestampRepr")]
#[non_exhaustive]
pub struct WebTimestamp {
    /// Where the timestamp is.
    pub lookup: Lookup,
    /// The drift tolerance, in seconds.
    pub tolerance: u32,
}

impl WebTimestamp {
    /// A timestamp found by `lookup`, accepted within `±tolerance` seconds.
    pub fn new(lookup: Lookup, tolerance: u32) -> Self {
        Self { lookup, tolerance }
    }

    fn check(&self, text: &str, now: i64) -> Result<i64, VerifyError> {
        let timestamp = parse_unix_timestamp(text).ok_or_else(|| self.lookup.malformed())?;
        ReplayWindow::symmetric(self.tolerance).check(timestamp, now)?;
        Ok(timestamp)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebTimestampRepr {
    #[serde(default)]
    lookup_namespace: LookupNamespace,
    lookup_key: String,
    #[serde(default)]
    value_prefix: String,
    tolerance: u32,
}

impl TryFrom<WebTimestampRepr> for WebTimestamp {
    type Error = ConfigError;

    fn try_from(repr: WebTimestampRepr) -> Result<Self, ConfigError> {
        let lookup = Lookup::new(repr.lookup_namespace, repr.lookup_key).prefix(repr.value_prefix);
        lookup.validate()?;
        Ok(Self::new(lookup, repr.tolerance))
    }
}

impl From<WebTimestamp> for WebTimestampRepr {
    fn from(condition: WebTimestamp) -> Self {
        Self {
            lookup_namespace: condition.lookup.namespace,
            lookup_key: condition.lookup.key,
            value_prefix: condition.lookup.prefix,
            tolerance: condition.tolerance,
        }
    }
}

/// The answer to an accepted request (Valohai's "Web Response Text/JSON" actions).
/// `{run_id}` is replaced by [`Verified::run_id`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseAction {
    /// `text/plain`; `{run_id}` is replaced anywhere.
    Text(String),
    /// `application/json`; `{run_id}` is replaced inside JSON strings only (nested included).
    Json(serde_json::Value),
}

// `serde_json::Value` cannot hold a NaN, so its equality is total.
impl Eq for ResponseAction {}

impl ResponseAction {
    /// Renders the response for `run_id`.
    pub fn render(&self, run_id: &str) -> SuccessResponse {
        match self {
            Self::Text(text) => SuccessResponse {
                content_type: "text/plain",
                body: text.replace("{run_id}", run_id),
            },
            Self::Json(value) => {
                let mut value = value.clone();
                replace_in_strings(&mut value, run_id);
                SuccessResponse {
                    content_type: "application/json",
                    body: value.to_string(),
                }
            }
        }
    }
}

fn replace_in_strings(value: &mut serde_json::Value, run_id: &str) {
    match value {
        serde_json::Value::String(text) if text.contains("{run_id}") => {
            *text = text.replace("{run_id}", run_id);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                replace_in_strings(item, run_id);
            }
        }
        serde_json::Value::Object(fields) => {
            for item in fields.values_mut() {
                replace_in_strings(item, run_id);
            }
        }
        _ => {}
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

/// Which secret(s) a condition checks against.
fn condition_secrets<'a>(
    condition: &'a WebAuthentication,
    secrets: &'a SecretSet,
) -> Result<&'a SecretSet, VerifyError> {
    let secrets = condition.secret.as_ref().unwrap_or(secrets);
    if secrets.is_empty() {
        return Err(VerifyError::no_secret());
    }
    Ok(secrets)
}

/// Compares a static token with every secret in constant time.
fn check_static_token(token: &str, secrets: &SecretSet) -> Result<SecretMatch, VerifyError> {
    let mut matched = None;
    for (index, secret) in secrets.iter().enumerate() {
        // Hashed on both sides, so the time does not reveal the secret's length.
        if secret.ct_eq(token.as_bytes()) && matched.is_none() {
            matched = Some(SecretMatch::new(index, secret));
        }
    }
    matched.ok_or_else(|| {
        VerifyError::new(
            VerifyErrorKind::InvalidSignature,
            "token does not match any configured secret",
        )
    })
}

/// A checked token: which secret matched, and a replay key when the token signs something.
struct Accepted {
    secret: SecretMatch,
    replay_key: Option<String>,
}

/// Checks a static token or a JWT (HMAC conditions are streamed instead).
fn check_token(
    condition: &WebAuthentication,
    token: &str,
    secrets: &SecretSet,
    now: i64,
) -> Result<Accepted, VerifyError> {
    #[cfg(not(feature = "jwt"))]
    let _ = now;
    match &condition.auth {
        AuthType::StaticToken => Ok(Accepted {
            secret: check_static_token(token, secrets)?,
            // A static token signs nothing: there is no key to de-duplicate on.
            replay_key: None,
        }),
        #[cfg(feature = "jwt")]
        AuthType::Jwt { algorithm, leeway } => {
            let accepted = jwt::verify(token, *algorithm, *leeway, secrets, now)?;
            Ok(Accepted {
                secret: accepted.secret,
                replay_key: Some(accepted.replay_key),
            })
        }
        AuthType::Hmac { .. } => unreachable!("HMAC conditions are streamed"),
    }
}

/// An HMAC condition in progress: one MAC per candidate secret.
struct HmacCheck {
    index: usize,
    macs: Vec<(SecretMatch, MacState)>,
    feeds_body: bool,
    suffix: Vec<u8>,
    /// The decoded MAC from the request; `None` until a body lookup finds it at `finish`.
    candidate: Option<Vec<u8>>,
}

enum Pending {
    Hmac(HmacCheck),
    /// A static token or JWT in the body.
    Token {
        index: usize,
        secrets: SecretSet,
    },
    /// A timestamp in the body.
    Timestamp {
        index: usize,
    },
}

/// The per-request state of a [`Valohai`] verification: the conditions that need the body,
/// one streaming MAC per HMAC condition and secret, and the clock the request arrived at.
pub struct ValohaiVerification {
    conditions: Arc<Vec<Condition>>,
    pending: Vec<Pending>,
    now: i64,
    verified: Verified,
    /// The index of the authentication condition that set `verified.secret`.
    secret_from: Option<usize>,
    /// The index of the condition that set `verified.replay_key`, and whether it was an HMAC.
    replay_from: Option<(bool, usize)>,
}

impl fmt::Debug for ValohaiVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValohaiVerification")
            .field("conditions", &self.conditions.len())
            .field("pending", &self.pending.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl ValohaiVerification {
    fn accept(&mut self, index: usize, accepted: Accepted, is_hmac: bool) {
        if self.secret_from.is_none_or(|from| index < from) {
            self.secret_from = Some(index);
            self.verified.secret = Some(accepted.secret);
        }
        if let Some(key) = accepted.replay_key {
            // A MAC covers the body, so it is the better key; otherwise the first one wins.
            let rank = (!is_hmac, index);
            if self
                .replay_from
                .is_none_or(|(was_hmac, from)| rank < (!was_hmac, from))
            {
                self.replay_from = Some((is_hmac, index));
                self.verified.set_replay_key(key);
            }
        }
    }

    fn set_timestamp(&mut self, index: usize, timestamp: i64) {
        let first = self.conditions[..index]
            .iter()
            .all(|condition| !matches!(condition, Condition::WebTimestamp(_)));
        if first {
            self.verified.timestamp = Some(timestamp);
        }
    }

    fn finish_hmac(&mut self, check: HmacCheck, body: &[u8]) -> Result<(), VerifyError> {
        let Condition::WebAuthentication(condition) = &self.conditions[check.index] else {
            unreachable!("HMAC checks come from authentication conditions");
        };
        let AuthType::Hmac { encoding, .. } = &condition.auth else {
            unreachable!("HMAC checks come from HMAC conditions");
        };
        let candidate = match check.candidate {
            Some(candidate) => candidate,
            None => {
                let text = condition.lookup.find_in_body(body)?;
                encoding
                    .decode(&text)
                    .ok_or_else(|| condition.lookup.malformed())?
            }
        };
        let mut matched = None;
        for (secret, mut mac) in check.macs {
            mac.update(&check.suffix);
            let computed = mac.finalize();
            if ct_eq(&computed, &candidate) && matched.is_none() {
                matched = Some((secret, computed));
            }
        }
        let (secret, computed) = matched.ok_or_else(VerifyError::invalid_signature)?;
        let replay_key = Some(format!("{NAME}:{}", hex::encode(computed)));
        self.accept(check.index, Accepted { secret, replay_key }, true);
        Ok(())
    }
}

impl Verification for ValohaiVerification {
    #[inline]
    fn update(&mut self, chunk: &[u8]) {
        for pending in &mut self.pending {
            if let Pending::Hmac(check) = pending {
                if check.feeds_body {
                    for (_, mac) in &mut check.macs {
                        mac.update(chunk);
                    }
                }
            }
        }
    }

    fn finish(mut self, body: &Bytes) -> Result<Verified, VerifyError> {
        for pending in std::mem::take(&mut self.pending) {
            match pending {
                Pending::Hmac(check) => self.finish_hmac(check, body)?,
                Pending::Token { index, secrets } => {
                    let conditions = Arc::clone(&self.conditions);
                    let Condition::WebAuthentication(condition) = &conditions[index] else {
                        unreachable!("token checks come from authentication conditions");
                    };
                    let token = condition.lookup.find_in_body(body)?;
                    let accepted = check_token(condition, &token, &secrets, self.now)?;
                    self.accept(index, accepted, false);
                }
                Pending::Timestamp { index } => {
                    let conditions = Arc::clone(&self.conditions);
                    let Condition::WebTimestamp(condition) = &conditions[index] else {
                        unreachable!("timestamp checks come from timestamp conditions");
                    };
                    let text = condition.lookup.find_in_body(body)?;
                    let timestamp = condition.check(&text, self.now)?;
                    self.set_timestamp(index, timestamp);
                }
            }
        }
        // The rate limits are charged by `Scheme::admit`, once the layer knows this is not a
        // duplicate, so that neither a refused request nor a replay uses up the quota.
        Ok(self.verified)
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
        let mut verification = ValohaiVerification {
            conditions: Arc::clone(&self.conditions),
            pending: Vec::new(),
            now,
            verified: Verified::new(NAME),
            secret_from: None,
            replay_from: None,
        };
        for (index, condition) in self.conditions.iter().enumerate() {
            match condition {
                Condition::WebAuthentication(condition) => {
                    let secrets = condition_secrets(condition, secrets)?;
                    let in_head = condition.lookup.namespace.is_in_head();
                    match &condition.auth {
                        AuthType::Hmac {
                            algorithm,
                            basestring,
                            encoding,
                        } => {
                            let candidate = if in_head {
                                let text = condition.lookup.find_in_head(head)?;
                                Some(
                                    encoding
                                        .decode(&text)
                                        .ok_or_else(|| condition.lookup.malformed())?,
                                )
                            } else {
                                None
                            };
                            let (before, suffix) =
                                basestring.resolve(&head.headers).map_err(|err| match err {
                                    auth::Unresolved::Missing(name) => {
                                        VerifyError::missing(name.as_str())
                                    }
                                    auth::Unresolved::Repeated(name) => VerifyError::new(
                                        VerifyErrorKind::MalformedHeader,
                                        format!("`{name}` header is given more than once"),
                                    ),
                                })?;
                            let macs = secrets
                                .iter()
                                .enumerate()
                                .map(|(index, secret)| {
                                    let mut mac = MacState::new(*algorithm, secret.expose());
                                    mac.update(&before);
                                    (SecretMatch::new(index, secret), mac)
                                })
                                .collect();
                            verification.pending.push(Pending::Hmac(HmacCheck {
                                index,
                                macs,
                                feeds_body: basestring.contains_body(),
                                suffix,
                                candidate,
                            }));
                        }
                        _ if in_head => {
                            let token = condition.lookup.find_in_head(head)?;
                            let accepted = check_token(condition, &token, secrets, now)?;
                            verification.accept(index, accepted, false);
                        }
                        _ => verification.pending.push(Pending::Token {
                            index,
                            secrets: secrets.clone(),
                        }),
                    }
                }
                Condition::WebTimestamp(condition) => {
                    if condition.lookup.namespace.is_in_head() {
                        let text = condition.lookup.find_in_head(head)?;
                        let timestamp = condition.check(&text, now)?;
                        verification.set_timestamp(index, timestamp);
                    } else {
                        verification.pending.push(Pending::Timestamp { index });
                    }
                }
                Condition::RateLimit(_) => {}
            }
        }
        Ok(verification)
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
