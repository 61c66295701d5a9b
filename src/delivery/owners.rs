//! Per-owner shares of the engine: who a delivery is for, how many of an owner's deliveries
//! the engine holds, and how many of its attempts run at once.
//!
//! Fairness works in two places. When a delivery is accepted, its owner may hold at most
//! [`max_queued_per_owner`](super::EngineBuilder::max_queued_per_owner) unfinished deliveries in
//! this engine, so one tenant cannot fill the engine's capacity. When a claimed delivery is
//! sent, it first takes one of its owner's
//! [`max_in_flight_per_owner`](super::EngineBuilder::max_in_flight_per_owner) permits, then its
//! endpoint host's permit, and only then a global slot: an owner whose endpoints hang holds at
//! most its own share of the global slots, and every other owner's attempt finds a free one.
//!
//! The global slots go round-robin over the owners whose attempts wait for one (see
//! `slots.rs`). While fewer than `max_in_flight / max_in_flight_per_owner` owners (4 by
//! default) saturate their shares, a slot is always free for the others; beyond that, a
//! newcomer's attempt gets one of the next slots to free (each attempt is bounded by the
//! attempt timeout), before the saturating owners' further attempts.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Semaphore;

use super::model::Delivery;
use super::FastMap;

/// The owner a delivery's attempts are accounted to.
///
/// A delivery created by the [registry](crate::registry) carries the registry's key
/// `{owner}/{webhook id}` as its [`endpoint_id`](Delivery::endpoint_id): its owner is the part
/// before the last `/`. Any other delivery (a forwarded one, or one without a registered
/// endpoint) is accounted to its endpoint's host and port, so one slow receiving service costs
/// only the deliveries bound for it.
pub fn delivery_owner(delivery: &Delivery) -> String {
    registered_owner(delivery).map_or_else(
        || endpoint_host(&delivery.endpoint).into_owned(),
        str::to_owned,
    )
}

/// The owner of a delivery to a registered endpoint (see [`delivery_owner`]); `None` for any
/// other delivery, whose owner is its endpoint's host.
pub(crate) fn registered_owner(delivery: &Delivery) -> Option<&str> {
    delivery
        .endpoint_id
        .as_deref()
        .and_then(|id| id.rsplit_once('/'))
        .map(|(owner, _)| owner)
}

/// The authority (host and port) of an endpoint URL, lowercased; empty when it has none.
///
/// Read off the text rather than parsed as a `Uri`: a delivery looks its host up at acceptance
/// and at every attempt, and a parse allocates. Every endpoint was parsed when it was accepted
/// (the trigger, the registry and the engine's URL check refuse one that does not parse), so
/// the text is a valid URL here; a malformed one only changes which share its single, refused
/// attempt is counted in.
pub(crate) fn endpoint_host(endpoint: &str) -> Cow<'_, str> {
    // Byte scans, not `split_once("://")`: a substring search sets up a searcher per call,
    // which cost more than the rest of this function.
    let bytes = endpoint.as_bytes();
    let Some(colon) = bytes.iter().position(|&b| b == b':') else {
        return Cow::Borrowed("");
    };
    let (scheme, rest) = (&bytes[..colon], &bytes[colon + 1..]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let Some(rest) = rest.strip_prefix(b"//") else {
        return Cow::Borrowed("");
    };
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if !scheme_ok || authority.iter().any(|&b| b <= b' ' || b >= 0x7f) {
        return Cow::Borrowed("");
    }
    // Only ASCII bytes remain, so the slice is on character boundaries.
    let start = colon + 3;
    let authority = &endpoint[start..start + end];
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(authority.to_ascii_lowercase())
    } else {
        Cow::Borrowed(authority)
    }
}

#[derive(Debug)]
struct Share {
    /// Unfinished deliveries of the owner accepted (or reserved) by this engine.
    queued: usize,
    /// Attempts of the owner allowed to run at once.
    in_flight: Arc<Semaphore>,
}

/// Every owner's share; owners with nothing queued and nothing running are forgotten.
#[derive(Debug)]
pub(crate) struct Owners {
    max_queued: usize,
    max_in_flight: usize,
    shares: Mutex<FastMap<String, Share>>,
}

impl Owners {
    pub(crate) fn new(max_queued: usize, max_in_flight: usize) -> Self {
        Self {
            max_queued,
            max_in_flight,
            shares: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FastMap<String, Share>> {
        self.shares
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn share<'a>(&self, shares: &'a mut FastMap<String, Share>, owner: &str) -> &'a mut Share {
        // Looked up by `&str` first: the owner's key is allocated only for a new share.
        if !shares.contains_key(owner) {
            shares.insert(
                owner.to_owned(),
                Share {
                    queued: 0,
                    in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
                },
            );
        }
        shares.get_mut(owner).expect("inserted above")
    }

    /// Counts one more queued delivery of `owner`; `false` when it holds its cap already.
    pub(crate) fn try_admit(&self, owner: &str) -> bool {
        let mut shares = self.lock();
        let share = self.share(&mut shares, owner);
        if share.queued >= self.max_queued {
            return false;
        }
        share.queued += 1;
        true
    }

    /// Counts one more queued delivery of `owner` whatever its cap (a delivery already
    /// accepted without one, e.g. through an owner-less reservation).
    pub(crate) fn admit(&self, owner: &str) {
        let mut shares = self.lock();
        self.share(&mut shares, owner).queued += 1;
    }

    /// One queued delivery of `owner` is final (or its reservation unused).
    pub(crate) fn release(&self, owner: &str) {
        let mut shares = self.lock();
        if let Some(share) = shares.get_mut(owner) {
            share.queued = share.queued.saturating_sub(1);
            if share.queued == 0 && Arc::strong_count(&share.in_flight) == 1 {
                shares.remove(owner);
            }
        }
    }

    /// The semaphore of `owner`'s attempts; give it back with [`forget`](Self::forget).
    pub(crate) fn in_flight(&self, owner: &str) -> Arc<Semaphore> {
        let mut shares = self.lock();
        self.share(&mut shares, owner).in_flight.clone()
    }

    /// Drops the share of an owner that has nothing queued and no attempt left.
    pub(crate) fn forget(&self, owner: &str, semaphore: Arc<Semaphore>) {
        let mut shares = self.lock();
        drop(semaphore);
        if let Some(share) = shares.get(owner) {
            if share.queued == 0 && Arc::strong_count(&share.in_flight) == 1 {
                shares.remove(owner);
            }
        }
    }

    /// How many deliveries of `owner` are counted now.
    #[cfg(test)]
    pub(crate) fn queued(&self, owner: &str) -> usize {
        self.lock().get(owner).map_or(0, |share| share.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_deliveries_belong_to_their_owner_and_others_to_their_host() {
        let registered = Delivery::new("d1", "https://hooks.example.com:8443/a", "{}")
            .with_endpoint_id("org/team/hook-1");
        assert_eq!(delivery_owner(&registered), "org/team");
        let forwarded = Delivery::new("d2", "https://Hooks.Example.com:8443/a?token=x", "{}");
        assert_eq!(delivery_owner(&forwarded), "hooks.example.com:8443");
        let unkeyed = Delivery::new("d3", "http://10.0.0.1/", "{}").with_endpoint_id("plain");
        assert_eq!(delivery_owner(&unkeyed), "10.0.0.1");
    }

    #[test]
    fn the_host_is_the_parsed_authority_lowercased() {
        for endpoint in [
            "https://hooks.example.com/a/b?x=1#f",
            "http://Hooks.Example.COM:8080",
            "https://user:pass@example.com:8443/path",
            "http://[::1]:9000/hook",
            "https://example.com?query=only",
            "http://127.0.0.1#frag",
        ] {
            let parsed: http::Uri = endpoint.parse().unwrap();
            let expected = parsed.authority().unwrap().as_str().to_ascii_lowercase();
            assert_eq!(endpoint_host(endpoint), expected, "{endpoint}");
        }
        for malformed in ["", "no-scheme", "/relative/path", "http://bad host/"] {
            assert_eq!(endpoint_host(malformed), "", "{malformed}");
        }
        assert!(matches!(
            endpoint_host("https://lower.example/x"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn an_owner_at_its_cap_is_refused_and_others_are_not() {
        let owners = Owners::new(2, 4);
        assert!(owners.try_admit("a"));
        assert!(owners.try_admit("a"));
        assert!(!owners.try_admit("a"));
        assert!(owners.try_admit("b"));
        owners.release("a");
        assert!(owners.try_admit("a"));
        owners.release("a");
        owners.release("a");
        owners.release("b");
        assert_eq!(owners.queued("a"), 0);
        assert!(owners.lock().is_empty(), "idle owners are forgotten");
    }

    #[test]
    fn a_share_in_use_is_kept_until_forgotten() {
        let owners = Owners::new(2, 4);
        let semaphore = owners.in_flight("a");
        assert!(owners.try_admit("a"));
        owners.release("a");
        assert!(
            !owners.lock().is_empty(),
            "an attempt still holds the share"
        );
        owners.forget("a", semaphore);
        assert!(owners.lock().is_empty());
    }
}
