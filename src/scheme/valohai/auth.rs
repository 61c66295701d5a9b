//! Web-authentication conditions: static token, HMAC over a basestring, JWT.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize, Serializer};

#[cfg(feature = "jwt")]
use super::jwt::JwtAlgorithm;
use super::lookup::{Lookup, LookupNamespace};
use super::ConfigError;
use crate::scheme::mac::{Algorithm, Encoding};
use crate::secret::{Secret, SecretSet};

/// A Valohai "Web Authentication" condition: where the token is, how it is checked, and
/// against which secret.
///
/// ```
/// use tower_webhooks::scheme::valohai::{Basestring, Lookup, WebAuthentication};
///
/// let hmac = WebAuthentication::hmac(
///     Lookup::header("X-Hmac-Signature").prefix("v0="),
///     "hmac:{header:X-Hmac-Timestamp}:{body}".parse::<Basestring>().unwrap(),
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebAuthentication {
    /// How the token is checked.
    pub auth: AuthType,
    /// Where the token is.
    pub lookup: Lookup,
    /// The condition's own secret(s) (`{env:VAR}` resolved at load); `None` = the
    /// [`SecretSet`] the verifier is given. With several, any one matching passes (rotation).
    pub secret: Option<SecretSet>,
}

/// How a [`WebAuthentication`] condition checks its token (Valohai's "Auth type").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthType {
    /// The token is the secret itself (compared in constant time).
    StaticToken,
    /// The token is an HMAC of the basestring, keyed with the secret's UTF-8 bytes.
    Hmac {
        /// The digest (`sha256` by default).
        algorithm: Algorithm,
        /// The signed content template (`{body}` by default).
        basestring: Basestring,
        /// How the MAC is written (`hex`, what Python's `hexdigest()` makes, by default).
        encoding: Encoding,
    },
    /// The token is a JWT signed with the secret (HS*) or whose PEM public key is the
    /// secret (RS*/ES*).
    #[cfg(feature = "jwt")]
    Jwt {
        /// The only accepted algorithm.
        algorithm: JwtAlgorithm,
        /// Clock slack for `exp`/`nbf`, in seconds.
        leeway: u64,
    },
}

/// The default JWT clock leeway, in seconds.
#[cfg(feature = "jwt")]
const DEFAULT_JWT_LEEWAY: u64 = 5;

impl WebAuthentication {
    /// A condition of `auth` type reading its token from `lookup`, using the verifier's secrets.
    pub fn new(auth: AuthType, lookup: Lookup) -> Self {
        Self {
            auth,
            lookup,
            secret: None,
        }
    }

    /// A static secret token.
    pub fn static_token(lookup: Lookup) -> Self {
        Self::new(AuthType::StaticToken, lookup)
    }

    /// An HMAC-SHA256 in hex over `basestring`.
    pub fn hmac(lookup: Lookup, basestring: Basestring) -> Self {
        Self::new(
            AuthType::Hmac {
                algorithm: Algorithm::Sha256,
                basestring,
                encoding: Encoding::Hex,
            },
            lookup,
        )
    }

    /// A JWT signed with `algorithm`, with the default leeway (5 seconds).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn jwt(lookup: Lookup, algorithm: JwtAlgorithm) -> Self {
        Self::new(
            AuthType::Jwt {
                algorithm,
                leeway: DEFAULT_JWT_LEEWAY,
            },
            lookup,
        )
    }

    /// Uses these secret(s) instead of the verifier's [`SecretSet`].
    pub fn with_secret(mut self, secret: impl Into<SecretSet>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.lookup.validate()?;
        if self.secret.as_ref().is_some_and(SecretSet::is_empty) {
            return Err(ConfigError::new("`secret` is an empty list"));
        }
        #[cfg(feature = "jwt")]
        if let (AuthType::Jwt { algorithm, .. }, Some(secrets)) = (&self.auth, &self.secret) {
            algorithm.validate_secrets(secrets)?;
        }
        Ok(())
    }
}

/// An HMAC basestring template: literal text, `{body}` (at most once) and `{header:Name}`.
///
/// ```
/// use tower_webhooks::scheme::valohai::Basestring;
///
/// let template: Basestring = "prefix.{body}.{header:Request-Timestamp}".parse().unwrap();
/// assert!(template.contains_body());
/// assert!("{body}{body}".parse::<Basestring>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basestring {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Header(HeaderName),
}

/// Why a basestring could not be built from the headers.
pub(crate) enum Unresolved<'a> {
    /// The named header is absent.
    Missing(&'a HeaderName),
    /// The named header is given more than once.
    Repeated(&'a HeaderName),
}

impl Basestring {
    /// Parses a template.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a second `{body}`, an empty or invalid header name, or any other
    /// `{…}` placeholder.
    pub fn parse(source: &str) -> Result<Self, ConfigError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            rest = &rest[open..];
            let close = rest
                .find('}')
                .ok_or_else(|| ConfigError::new("basestring has a `{` without a closing `}`"))?;
            let placeholder = &rest[1..close];
            let part = if placeholder == "body" {
                if parts.contains(&Part::Body) {
                    return Err(ConfigError::new("basestring uses `{body}` more than once"));
                }
                Part::Body
            } else if let Some(name) = placeholder.strip_prefix("header:") {
                Part::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    ConfigError::new(format!(
                        "basestring placeholder `{{header:{name}}}` is not a valid header name"
                    ))
                })?)
            } else {
                return Err(ConfigError::new(format!(
                    "unknown basestring placeholder `{{{placeholder}}}` (expected `{{body}}` or \
                     `{{header:Name}}`)"
                )));
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &rest[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the body is part of the signed content.
    pub fn contains_body(&self) -> bool {
        self.parts.contains(&Part::Body)
    }

    /// Resolves the template against `headers`: the bytes before `{body}` and the bytes after
    /// it (everything is "before" when there is no `{body}`).
    pub(crate) fn resolve(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Vec<u8>, Vec<u8>), Unresolved<'_>> {
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut out = &mut before;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Body => out = &mut after,
                Part::Header(name) => {
                    let mut values = headers.get_all(name).iter();
                    let value = values.next().ok_or(Unresolved::Missing(name))?;
                    if values.next().is_some() {
                        return Err(Unresolved::Repeated(name));
                    }
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        Ok((before, after))
    }
}

impl Default for Basestring {
    /// `{body}`: the MAC covers the body only.
    fn default() -> Self {
        Self {
            source: "{body}".to_owned(),
            parts: vec![Part::Body],
        }
    }
}

impl FromStr for Basestring {
    type Err = ConfigError;

    fn from_str(source: &str) -> Result<Self, ConfigError> {
        Self::parse(source)
    }
}

impl fmt::Display for Basestring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The configuration form (`auth_type`, `lookup_namespace`, `lookup_key`, …).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebAuthenticationRepr {
    auth_type: AuthKind,
    #[serde(default)]
    lookup_namespace: LookupNamespace,
    lookup_key: String,
    #[serde(default)]
    value_prefix: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted",
        deserialize_with = "resolve_secrets"
    )]
    secret: Option<SecretSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    basestring: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<Encoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    leeway: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AuthKind {
    StaticToken,
    Hmac,
    Jwt,
}

/// Writes every secret as `"[redacted]"`.
fn redacted<S: Serializer>(secrets: &Option<SecretSet>, serializer: S) -> Result<S::Ok, S::Error> {
    match secrets {
        Some(secrets) if secrets.len() == 1 => serializer.serialize_str("[redacted]"),
        Some(secrets) => serializer.collect_seq(secrets.iter()),
        None => serializer.serialize_none(),
    }
}

/// Reads one secret or a list, resolving `{env:VAR}` with a clear error (`SecretSet`'s own
/// untagged deserialisation reports only "did not match any variant").
fn resolve_secrets<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SecretSet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let specs = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(spec) => vec![spec],
        OneOrMany::Many(specs) => specs,
    };
    specs
        .iter()
        .map(|spec| Secret::resolve(spec))
        .collect::<Result<SecretSet, _>>()
        .map(Some)
        .map_err(|err| serde::de::Error::custom(format!("`secret`: {err}")))
}

fn hmac_algorithm(name: &str) -> Result<Algorithm, ConfigError> {
    match name.to_ascii_lowercase().as_str() {
        "sha1" => Ok(Algorithm::Sha1),
        "sha256" => Ok(Algorithm::Sha256),
        "sha512" => Ok(Algorithm::Sha512),
        _ => Err(ConfigError::new(format!(
            "unknown HMAC algorithm {name:?} (expected sha1, sha256 or sha512)"
        ))),
    }
}

fn only_for(field: &str, present: bool, auth: &str) -> Result<(), ConfigError> {
    if present {
        return Err(ConfigError::new(format!(
            "`{field}` does not apply to {auth} conditions"
        )));
    }
    Ok(())
}

impl TryFrom<WebAuthenticationRepr> for WebAuthentication {
    type Error = ConfigError;

    fn try_from(repr: WebAuthenticationRepr) -> Result<Self, ConfigError> {
        let auth = match repr.auth_type {
            AuthKind::StaticToken => {
                only_for("algorithm", repr.algorithm.is_some(), "static_token")?;
                only_for("basestring", repr.basestring.is_some(), "static_token")?;
                only_for("encoding", repr.encoding.is_some(), "static_token")?;
                only_for("leeway", repr.leeway.is_some(), "static_token")?;
                AuthType::StaticToken
            }
            AuthKind::Hmac => {
                only_for("leeway", repr.leeway.is_some(), "hmac")?;
                AuthType::Hmac {
                    algorithm: repr
                        .algorithm
                        .as_deref()
                        .map_or(Ok(Algorithm::Sha256), hmac_algorithm)?,
                    basestring: repr
                        .basestring
                        .as_deref()
                        .map_or_else(|| Ok(Basestring::default()), Basestring::parse)?,
                    encoding: repr.encoding.unwrap_or_default(),
                }
            }
            #[cfg(feature = "jwt")]
            AuthKind::Jwt => {
                only_for("basestring", repr.basestring.is_some(), "jwt")?;
                only_for("encoding", repr.encoding.is_some(), "jwt")?;
                AuthType::Jwt {
                    algorithm: repr
                        .algorithm
                        .as_deref()
                        .map_or(Ok(JwtAlgorithm::HS256), str::parse)?,
                    leeway: repr.leeway.unwrap_or(DEFAULT_JWT_LEEWAY),
                }
            }
            #[cfg(not(feature = "jwt"))]
            AuthKind::Jwt => {
                return Err(ConfigError::new(
                    "`auth_type = \"jwt\"` needs the `jwt` feature of tower-webhooks",
                ))
            }
        };
        let condition = Self {
            auth,
            lookup: Lookup::new(repr.lookup_namespace, repr.lookup_key).prefix(repr.value_prefix),
            secret: repr.secret,
        };
        condition.validate()?;
        Ok(condition)
    }
}

impl From<WebAuthentication> for WebAuthenticationRepr {
    fn from(condition: WebAuthentication) -> Self {
        let mut repr = Self {
            auth_type: AuthKind::StaticToken,
            lookup_namespace: condition.lookup.namespace,
            lookup_key: condition.lookup.key,
            value_prefix: condition.lookup.prefix,
            secret: condition.secret,
            basestring: None,
            algorithm: None,
            encoding: None,
            leeway: None,
        };
        match condition.auth {
            AuthType::StaticToken => {}
            AuthType::Hmac {
                algorithm,
                basestring,
                encoding,
            } => {
                repr.auth_type = AuthKind::Hmac;
                repr.algorithm = Some(
                    match algorithm {
                        Algorithm::Sha1 => "sha1",
                        Algorithm::Sha256 => "sha256",
                        Algorithm::Sha512 => "sha512",
                    }
                    .to_owned(),
                );
                repr.basestring = Some(basestring.source);
                repr.encoding = Some(encoding);
            }
            #[cfg(feature = "jwt")]
            AuthType::Jwt { algorithm, leeway } => {
                repr.auth_type = AuthKind::Jwt;
                repr.algorithm = Some(algorithm.as_str().to_owned());
                repr.leeway = Some(leeway);
            }
        }
        repr
    }
}

impl Serialize for WebAuthentication {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WebAuthenticationRepr::from(self.clone()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for WebAuthentication {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::try_from(WebAuthenticationRepr::deserialize(deserializer)?)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn basestring_splits_around_the_body() {
        let template =
            Basestring::parse("hmac:{header:X-Hmac-Timestamp}:{body}!{header:x-b}").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-hmac-timestamp", HeaderValue::from_static("17"));
        assert!(matches!(
            template.resolve(&headers),
            Err(Unresolved::Missing(name)) if name == "x-b"
        ));
        headers.insert("x-b", HeaderValue::from_static("B"));
        let (before, after) = template.resolve(&headers).ok().unwrap();
        assert_eq!((&before[..], &after[..]), (&b"hmac:17:"[..], &b"!B"[..]));
        headers.append("x-b", HeaderValue::from_static("C"));
        assert!(matches!(
            template.resolve(&headers),
            Err(Unresolved::Repeated(_))
        ));

        let no_body = Basestring::parse("static-{header:x-b}").unwrap();
        assert!(!no_body.contains_body());
        assert_eq!(Basestring::default().as_str(), "{body}");
        assert!(Basestring::default().contains_body());
    }

    #[test]
    fn basestring_rejects_bad_templates() {
        for bad in [
            "{body}{body}",
            "{bod}",
            "{header:}",
            "{header:a b}",
            "x{",
            "{env:X}",
        ] {
            assert!(Basestring::parse(bad).is_err(), "{bad}");
        }
        let literal = Basestring::parse("a}b").unwrap();
        let (before, after) = literal.resolve(&HeaderMap::new()).ok().unwrap();
        assert_eq!((&before[..], after.is_empty()), (&b"a}b"[..], true));
    }
}
