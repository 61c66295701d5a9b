//! [`ValohaiVerification`]: one request checked against every condition, the head's at
//! `begin`, the body's (and each HMAC over the streamed body) at `finish`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::auth::{self, AuthType, WebAuthentication};
#[cfg(feature = "jwt")]
use super::jwt;
use super::{Condition, NAME};
use crate::scheme::mac::MacState;
use crate::scheme::{
    RequestHead, SecretMatch, Verification, Verified, VerifyError, VerifyErrorKind,
};
use crate::secret::{ct_eq, SecretSet};

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

/// The per-request state of a [`Valohai`](super::Valohai) verification: the conditions that need the body,
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
    /// Reads what the conditions find in the head (checking each one that is there) and starts
    /// one MAC per HMAC condition and secret; what is in the body waits for [`finish`].
    ///
    /// [`finish`]: Verification::finish
    pub(super) fn begin(
        conditions: &Arc<Vec<Condition>>,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<Self, VerifyError> {
        let mut verification = ValohaiVerification {
            conditions: Arc::clone(conditions),
            pending: Vec::new(),
            now,
            verified: Verified::new(NAME),
            secret_from: None,
            replay_from: None,
        };
        for (index, condition) in conditions.iter().enumerate() {
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
