//! Who is looking at the portal: the login sessions, their cookies and the CSRF tokens of
//! the forms.
//!
//! Logging in exchanges an API token for a session: the browser keeps a random session id in
//! an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over https) and the portal keeps only the
//! SHA-256 of that id with the owner, never the API token. Every form carries a CSRF token,
//! an HMAC of the session under a key made for this portal, checked in constant time on every
//! `POST`; `SameSite=Strict` already keeps the cookie off cross-site requests, the token is
//! the second, independent fence.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use hmac::{Hmac, Mac};
use http::header::{COOKIE, SET_COOKIE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::Sha256;

use crate::registry::Owner;
use crate::secret::TokenDigest;

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "tower_webhooks_portal";
/// The cookie that binds the login form's CSRF token to the browser that asked for the form.
pub(super) const LOGIN_COOKIE: &str = "tower_webhooks_portal_login";
/// How long a session lasts from its login.
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a login form stays usable.
const LOGIN_LIFETIME: Duration = Duration::from_secs(3600);
/// At most this many live sessions: a flood of logins evicts the oldest rather than growing
/// the map without bound.
const MAX_SESSIONS: usize = 10_000;

/// The live sessions of one portal, and the key of its CSRF tokens.
pub(super) struct Sessions {
    csrf_key: [u8; 32],
    live: Mutex<HashMap<TokenDigest, Session>>,
}

struct Session {
    owner: Owner,
    expires: Instant,
}

/// How a request was authenticated.
#[derive(Clone)]
pub(super) enum Identity {
    /// A portal session: the digest of its id.
    Session(TokenDigest),
    /// The application's own authentication of the request (`Authenticate::authenticate_parts`
    /// said who it is, e.g. from an identity an outer layer inserted).
    Request,
}

impl Sessions {
    pub(super) fn new() -> Self {
        Self {
            csrf_key: random(),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Session>> {
        // A panic elsewhere cannot leave the map half-changed: every change is one call.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session for `owner`: the id that goes into the cookie.
    pub(super) fn start(&self, owner: Owner) -> String {
        let id = URL_SAFE_NO_PAD.encode(random());
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, session| session.expires > now);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(digest, _)| *digest)
            {
                live.remove(&oldest);
            }
        }
        live.insert(
            TokenDigest::of(id.as_bytes()),
            Session {
                owner,
                expires: now + SESSION_LIFETIME,
            },
        );
        id
    }

    /// The owner of the request's live session, if it has one.
    pub(super) fn find(&self, headers: &HeaderMap) -> Option<(Owner, TokenDigest)> {
        let id = cookie_value(headers, SESSION_COOKIE)?;
        let digest = TokenDigest::of(id.as_bytes());
        let mut live = self.lock();
        let session = live.get(&digest)?;
        if session.expires <= Instant::now() {
            live.remove(&digest);
            return None;
        }
        Some((session.owner.clone(), digest))
    }

    /// Ends a session (logout).
    pub(super) fn end(&self, identity: &Identity) {
        if let Identity::Session(digest) = identity {
            self.lock().remove(digest);
        }
    }

    /// The CSRF token of the forms shown to `identity` acting for `owner`.
    pub(super) fn csrf_token(&self, identity: &Identity, owner: &Owner) -> String {
        match identity {
            Identity::Session(digest) => self.mac(&[b"session\0", digest.as_bytes()]),
            Identity::Request => self.mac(&[b"owner\0", owner.as_str().as_bytes()]),
        }
    }

    /// The CSRF token of the login form shown with the login cookie `nonce`.
    pub(super) fn login_token(&self, nonce: &str) -> String {
        self.mac(&[b"login\0", nonce.as_bytes()])
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        // HMAC takes a key of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.csrf_key).expect("any key length");
        for part in parts {
            mac.update(part);
        }
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// Whether the token a form sent is the expected one, in constant time.
pub(super) fn token_matches(expected: &str, sent: Option<&str>) -> bool {
    sent.is_some_and(|sent| TokenDigest::of(expected.as_bytes()).matches(sent.as_bytes()))
}

/// A fresh random login nonce.
pub(super) fn login_nonce() -> String {
    URL_SAFE_NO_PAD.encode(random())
}

fn random() -> [u8; 32] {
    let mut bytes = [0; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// The value of the request's cookie `name`.
pub(super) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// Where the cookies apply and whether they need https.
pub(super) struct CookieScope {
    /// The portal's mount path (`/` at the root).
    pub(super) path: String,
    /// Whether the request came over https (directly or, by its proxy's word, to the proxy).
    pub(super) secure: bool,
}

impl CookieScope {
    pub(super) fn of(parts: &Parts, base: &str) -> Self {
        let forwarded_https = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
            || parts
                .headers
                .get("forwarded")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
        Self {
            path: if base.is_empty() {
                "/".to_owned()
            } else {
                base.to_owned()
            },
            // Only ever adds `Secure`: a forged header can make the cookie stricter, not laxer.
            secure: parts.uri.scheme_str() == Some("https") || forwarded_https,
        }
    }

    /// A `Set-Cookie` header: `value` for `lifetime`, or the cookie removed (`None`).
    pub(super) fn set(
        &self,
        headers: &mut HeaderMap,
        name: &'static str,
        value: Option<(&str, Duration)>,
    ) {
        let (value, lifetime) = value.unwrap_or(("", Duration::ZERO));
        let cookie = Cookie::build((name, value))
            .path(self.path.clone())
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
            ))
            .build();
        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
            headers.append(SET_COOKIE, value);
        }
    }

    pub(super) fn set_session(&self, headers: &mut HeaderMap, id: Option<&str>) {
        self.set(headers, SESSION_COOKIE, id.map(|id| (id, SESSION_LIFETIME)));
    }

    pub(super) fn set_login(&self, headers: &mut HeaderMap, nonce: Option<&str>) {
        self.set(headers, LOGIN_COOKIE, nonce.map(|n| (n, LOGIN_LIFETIME)));
    }
}
