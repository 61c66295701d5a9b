//! The subscription record ([`Endpoint`]) and the values it is made of.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::delivery::{SchemeSpec, SigningSpec};
use crate::scheme::{Cerebrium, GitHub, Nextmv, Slack, StandardWebhooks, Stripe};
use crate::secret::{Secret, SecretSet};

/// The tenant a webhook belongs to, as returned by the application's
/// [`Authenticate`](super::Authenticate) check. Every query of the management API is scoped by
/// it: a tenant never sees (nor learns the existence of) another tenant's webhooks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Arc<str>);

impl Owner {
    /// An owner named `name` (an account id, an API key's tenant, …).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Owner").field(&&*self.0).finish()
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Owner {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for Owner {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// The signature format of a webhook's deliveries: every built-in scheme that a sender can
/// produce ([`Valohai`](crate::scheme::Valohai) conditions are inbound only).
///
/// In JSON it is the scheme's name: `"nextmv"` (the default), `"stripe"`,
/// `"standard_webhooks"` (or `"svix"`), `"cerebrium"`, `"github"`, `"slack"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SigningScheme {
    /// `Nextmv-Signature: t=<s>,v1=<hex>[,v1=<hex>]` over `{t}.{body}`, one `v1` per secret.
    #[default]
    Nextmv,
    /// `Stripe-Signature: t=<s>,v1=<hex>[,v1=<hex>]` over `{t}.{body}`, one `v1` per secret.
    Stripe,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> …`),
    /// one `v1,` entry per secret; the secret is `whsec_<base64>`.
    #[serde(alias = "svix")]
    StandardWebhooks,
    /// `X-Cerebrium-Webhook-Signature` (the primary secret only).
    Cerebrium,
    /// `X-Hub-Signature-256` (the primary secret only).
    #[serde(rename = "github")]
    GitHub,
    /// `X-Slack-Signature` (the primary secret only).
    Slack,
}

impl SigningScheme {
    /// Every signing scheme.
    pub const ALL: [Self; 6] = [
        Self::Nextmv,
        Self::Stripe,
        Self::StandardWebhooks,
        Self::Cerebrium,
        Self::GitHub,
        Self::Slack,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nextmv => "nextmv",
            Self::Stripe => "stripe",
            Self::StandardWebhooks => "standard_webhooks",
            Self::Cerebrium => "cerebrium",
            Self::GitHub => "github",
            Self::Slack => "slack",
        }
    }

    /// Parses a JSON name (`"svix"` is accepted for Standard Webhooks, case-insensitively).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        if name == "svix" {
            return Some(Self::StandardWebhooks);
        }
        Self::ALL.into_iter().find(|scheme| scheme.as_str() == name)
    }

    /// The built-in scheme that writes this format, as a delivery carries it.
    pub(crate) fn spec(self) -> SchemeSpec {
        match self {
            Self::Nextmv => Nextmv::new().into(),
            Self::Stripe => Stripe::new().into(),
            Self::StandardWebhooks => StandardWebhooks::new().into(),
            Self::Cerebrium => Cerebrium::new().into(),
            Self::GitHub => GitHub::new().into(),
            Self::Slack => Slack::new().into(),
        }
    }

    /// Whether the format carries one signature per secret, so that the previous secret keeps
    /// verifying during a rotation's grace period. The others sign with the newest secret only.
    pub(crate) fn signs_with_every_secret(self) -> bool {
        matches!(self, Self::Nextmv | Self::Stripe | Self::StandardWebhooks)
    }

    /// A fresh secret from the operating system's CSPRNG (32 bytes) in the shape the format
    /// expects: `whsec_<base64>` for Standard Webhooks and Stripe-style `whsec_<hex>` for
    /// Stripe, lowercase hex for the others.
    pub(crate) fn generate_secret(self) -> Secret {
        match self {
            Self::StandardWebhooks => Secret::generate_base64("whsec_", 32),
            Self::Stripe => Secret::generate_hex("whsec_", 32),
            _ => Secret::generate_hex("", 32),
        }
    }

    /// Whether secrets of `self` can be used by `other` unchanged (both take the secret text
    /// as the raw key, or both are Standard Webhooks).
    pub(crate) fn secret_compatible(self, other: Self) -> bool {
        (self == Self::StandardWebhooks) == (other == Self::StandardWebhooks)
    }
}

impl fmt::Display for SigningScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signing secret of a webhook, with its life span.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebhookSecret {
    /// The secret (redacted in `Debug`).
    pub secret: Secret,
    /// When it was generated.
    pub created_at: SystemTime,
    /// When it stops signing: `None` for the current secret, the end of the grace period for
    /// a rotated-out one.
    pub expires_at: Option<SystemTime>,
}

impl WebhookSecret {
    /// A current secret created at `created_at`.
    pub fn new(secret: Secret, created_at: SystemTime) -> Self {
        Self {
            secret,
            created_at,
            expires_at: None,
        }
    }

    /// Whether it still signs at `now`.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// A per-webhook delivery rate: at most `per_second` first attempts a second, with bursts of
/// up to `burst`. Deliveries beyond it are **delayed** (their first attempt is scheduled
/// later), never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointRateLimit {
    /// Deliveries per second (at least 1).
    pub per_second: u32,
    /// How many may go at once after a quiet period (at least 1; by default `per_second`).
    #[serde(default)]
    pub burst: u32,
}

impl EndpointRateLimit {
    /// `per_second` deliveries a second with a burst of the same size.
    pub fn per_second(per_second: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            burst: per_second.max(1),
        }
    }

    /// Sets the burst.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// The spacing between two deliveries at the sustained rate.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_second.max(1)
    }

    pub(crate) fn normalised(mut self) -> Self {
        if self.burst == 0 {
            self.burst = self.per_second;
        }
        self
    }
}

/// A registered webhook: where to deliver which events, signed how. The record a
/// [`SubscriptionStore`](super::SubscriptionStore) keeps.
///
/// `Debug` never prints the secrets nor the custom header values.
#[derive(Clone)]
#[non_exhaustive]
pub struct Endpoint {
    /// The tenant.
    pub owner: Owner,
    /// The caller-chosen id, unique per owner (`[A-Za-z0-9_-]`, 1 to 64 characters).
    pub id: String,
    /// The absolute `http`/`https` URL deliveries are POSTed to.
    pub endpoint_url: String,
    /// The event types it subscribes to.
    pub event_types: Vec<String>,
    /// A free description.
    pub description: String,
    /// The signature format.
    pub scheme: SigningScheme,
    /// The signing secrets, newest (the current one) first.
    pub secrets: Vec<WebhookSecret>,
    /// Extra request headers sent with every delivery.
    pub headers: Vec<(String, String)>,
    /// Whether events are delivered to it.
    pub enabled: bool,
    /// Why it was disabled (by a user, or automatically by the health rule).
    pub disabled_reason: Option<String>,
    /// The optional delivery rate limit.
    pub rate_limit: Option<EndpointRateLimit>,
    /// When it was registered.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("owner", &self.owner)
            .field("id", &self.id)
            .field(
                "endpoint_url",
                &crate::delivery::display_endpoint(&self.endpoint_url),
            )
            .field("event_types", &self.event_types)
            .field("scheme", &self.scheme)
            .field("secrets", &self.secrets.len())
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new enabled webhook with one fresh secret for `scheme`.
    pub fn new(
        owner: Owner,
        id: impl Into<String>,
        endpoint_url: impl Into<String>,
        event_types: Vec<String>,
        scheme: SigningScheme,
        now: SystemTime,
    ) -> Self {
        Self {
            owner,
            id: id.into(),
            endpoint_url: endpoint_url.into(),
            event_types,
            description: String::new(),
            scheme,
            secrets: vec![WebhookSecret::new(scheme.generate_secret(), now)],
            headers: Vec::new(),
            enabled: true,
            disabled_reason: None,
            rate_limit: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The key deliveries are recorded under ([`Delivery::endpoint_id`](crate::delivery::Delivery::endpoint_id)):
    /// `{owner}/{id}`, so that two tenants using the same id never share conversations.
    pub(crate) fn key(&self) -> String {
        endpoint_key(&self.owner, &self.id)
    }

    /// Whether it subscribes to `event_type`.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == event_type)
    }

    /// The secrets that sign at `now`, current first.
    pub fn active_secrets(&self, now: SystemTime) -> SecretSet {
        let mut active = self.secrets.iter().filter(|s| s.is_active(now));
        if self.scheme.signs_with_every_secret() {
            active.map(|s| s.secret.clone()).collect()
        } else {
            active
                .next()
                .map(|s| s.secret.clone())
                .into_iter()
                .collect()
        }
    }

    /// How deliveries are signed at `now`.
    pub(crate) fn signing(&self, now: SystemTime) -> SigningSpec {
        SigningSpec::new(self.scheme.spec(), self.active_secrets(now))
    }

    /// The custom headers as a map (entries that are not valid headers are skipped; the API
    /// validates them when they are set).
    pub(crate) fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                // Custom header values are write-only: kept out of `Debug` and logs.
                let mut value = value;
                value.set_sensitive(true);
                map.append(name, value);
            }
        }
        map
    }

    /// Replaces the current secret with a fresh one; the previous current secret keeps
    /// signing until `now + grace` (at once when `grace` is zero). At most three secrets
    /// are kept; expired ones are dropped.
    pub fn rotate_secret(&mut self, now: SystemTime, grace: Duration) {
        self.secrets.retain(|s| s.is_active(now));
        for secret in &mut self.secrets {
            let until = now + grace;
            secret.expires_at = Some(secret.expires_at.map_or(until, |at| at.min(until)));
        }
        if grace.is_zero() {
            self.secrets.clear();
        }
        self.secrets
            .insert(0, WebhookSecret::new(self.scheme.generate_secret(), now));
        self.secrets.truncate(3);
        self.updated_at = now;
    }
}

/// `{owner}/{id}`: ids never contain `/`, so the last `/` separates them.
pub(crate) fn endpoint_key(owner: &Owner, id: &str) -> String {
    format!("{}/{id}", owner.as_str())
}

/// The inverse of [`endpoint_key`].
pub(crate) fn split_endpoint_key(key: &str) -> Option<(Owner, &str)> {
    key.rsplit_once('/')
        .map(|(owner, id)| (Owner::new(owner), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_previous_secret_for_the_grace_period() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut hook = Endpoint::new(
            Owner::new("acme"),
            "hook",
            "https://example.com",
            vec!["run.status".into()],
            SigningScheme::Nextmv,
            t0,
        );
        let first = hook.secrets[0].secret.clone();
        hook.rotate_secret(t0, Duration::from_secs(60));
        assert_eq!(hook.secrets.len(), 2);
        let during = hook.active_secrets(t0 + Duration::from_secs(59));
        assert_eq!(during.len(), 2);
        assert_eq!(during.iter().nth(1), Some(&first));
        let after = hook.active_secrets(t0 + Duration::from_secs(60));
        assert_eq!(after.len(), 1);
        assert_ne!(after.primary(), Some(&first));
        assert!(!format!("{hook:?}").contains(first.expose_str().unwrap()));
    }

    #[test]
    fn primary_only_schemes_sign_with_the_newest_secret() {
        let t0 = SystemTime::now();
        let mut hook = Endpoint::new(
            Owner::new("acme"),
            "hook",
            "https://example.com",
            vec![],
            SigningScheme::GitHub,
            t0,
        );
        hook.rotate_secret(t0, Duration::from_secs(60));
        assert_eq!(hook.active_secrets(t0).len(), 1);
        assert_eq!(
            hook.active_secrets(t0).primary(),
            Some(&hook.secrets[0].secret)
        );
    }

    #[test]
    fn keys_split_at_the_last_slash() {
        let key = endpoint_key(&Owner::new("org/team"), "hook-1");
        let (owner, id) = split_endpoint_key(&key).unwrap();
        assert_eq!((owner.as_str(), id), ("org/team", "hook-1"));
    }

    #[test]
    fn scheme_names() {
        for scheme in SigningScheme::ALL {
            assert_eq!(SigningScheme::from_name(scheme.as_str()), Some(scheme));
            assert_eq!(scheme.spec().name(), scheme.as_str());
        }
        assert_eq!(
            SigningScheme::from_name("svix"),
            Some(SigningScheme::StandardWebhooks)
        );
        assert_eq!(SigningScheme::from_name("valohai"), None);
    }
}
