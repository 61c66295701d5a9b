//! Rate-limit conditions: at most `quota` launches per `period` seconds.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::scheme::{VerifyError, VerifyErrorKind};

/// "At most `quota` launches per `period` seconds" (a sliding window).
///
/// The launch log lives in the condition and is **shared by clones**, so every clone of a
/// [`Valohai`](super::Valohai) scheme (one per worker, per service clone) counts against the
/// same quota. It keeps at most `quota` timestamps. A launch is counted only when every other
/// condition passed, so rejected requests do not use up the quota.
///
/// The log is per process: several replicas each enforce their own quota.
///
/// A log rather than the registry's GCRA: "at most `quota` in any `period`" is a sliding
/// window, and a GCRA with a burst of `quota` would admit up to `2 × quota − 1` launches
/// within one period (docs/primitives.md).
#[derive(Clone)]
pub struct RateLimit {
    period: u64,
    quota: u32,
    launches: Arc<Mutex<VecDeque<i64>>>,
}

impl RateLimit {
    /// At most `quota` launches in any `period_secs` seconds.
    pub fn new(period_secs: u64, quota: u32) -> Self {
        Self {
            period: period_secs,
            quota,
            launches: Arc::default(),
        }
    }

    /// The period, in seconds.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The number of launches allowed per period.
    pub fn quota(&self) -> u32 {
        self.quota
    }

    /// How many launches are still allowed at `now` (Unix seconds).
    pub fn remaining(&self, now: i64) -> u32 {
        let mut launches = self.lock();
        self.expire(&mut launches, now);
        self.quota
            .saturating_sub(u32::try_from(launches.len()).unwrap_or(u32::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<i64>> {
        // The log is a plain list of timestamps; a panic elsewhere cannot leave it inconsistent.
        self.launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets launches that left the window `(now - period, now]`.
    fn expire(&self, launches: &mut VecDeque<i64>, now: i64) {
        let period = i64::try_from(self.period).unwrap_or(i64::MAX);
        let horizon = now.saturating_sub(period);
        while launches.front().is_some_and(|&at| at <= horizon) {
            launches.pop_front();
        }
    }

    fn is_full(&self, launches: &VecDeque<i64>) -> bool {
        launches.len() >= usize::try_from(self.quota).unwrap_or(usize::MAX)
    }

    fn record(launches: &mut VecDeque<i64>, now: i64) {
        // Keep the log sorted even if the clock steps back, so expiry stays a front pop.
        let at = launches.partition_point(|&at| at <= now);
        launches.insert(at, now);
    }
}

/// Checks every limit and, only when all have room, records one launch in each (atomically:
/// all the logs are locked together, always in configuration order).
pub(crate) fn acquire_all(limits: &[&RateLimit], now: i64) -> Result<(), VerifyError> {
    let mut guards: Vec<_> = limits.iter().map(|limit| limit.lock()).collect();
    for (limit, launches) in limits.iter().zip(guards.iter_mut()) {
        limit.expire(launches, now);
        if limit.is_full(launches) {
            return Err(VerifyError::new(
                VerifyErrorKind::RateLimited,
                format!(
                    "rate limit of {} launches per {} s reached",
                    limit.quota, limit.period
                ),
            ));
        }
    }
    for launches in &mut guards {
        RateLimit::record(launches, now);
    }
    Ok(())
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("period", &self.period)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

/// Compares the configuration only (not the launch log).
impl PartialEq for RateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.period == other.period && self.quota == other.quota
    }
}

impl Eq for RateLimit {}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitRepr {
    period: u64,
    quota: u32,
}

impl TryFrom<RateLimitRepr> for RateLimit {
    type Error = ConfigError;

    fn try_from(repr: RateLimitRepr) -> Result<Self, ConfigError> {
        if repr.period == 0 {
            return Err(ConfigError::new(
                "rate limit `period` must be at least 1 second",
            ));
        }
        Ok(Self::new(repr.period, repr.quota))
    }
}

impl From<RateLimit> for RateLimitRepr {
    fn from(limit: RateLimit) -> Self {
        Self {
            period: limit.period,
            quota: limit.quota,
        }
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RateLimitRepr::from(self.clone()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::try_from(RateLimitRepr::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_and_bounded_log() {
        let limit = RateLimit::new(60, 2);
        let shared = limit.clone();
        assert!(acquire_all(&[&limit], 1000).is_ok());
        assert!(acquire_all(&[&shared], 1030).is_ok());
        let err = acquire_all(&[&limit], 1059).unwrap_err();
        assert_eq!(err.kind(), VerifyErrorKind::RateLimited);
        assert_eq!(limit.remaining(1059), 0);
        // 1000 leaves the window at 1060.
        assert!(acquire_all(&[&limit], 1060).is_ok());
        assert_eq!(limit.lock().len(), 2);
        assert_eq!(limit.remaining(2000), 2);
    }

    #[test]
    fn a_refusal_by_one_limit_counts_in_none() {
        let short = RateLimit::new(60, 5);
        let long = RateLimit::new(3600, 1);
        assert!(acquire_all(&[&short, &long], 0).is_ok());
        assert!(acquire_all(&[&short, &long], 1).is_err());
        assert_eq!(short.remaining(1), 4);
    }

    #[test]
    fn zero_quota_refuses_and_extreme_clocks_do_not_overflow() {
        assert!(acquire_all(&[&RateLimit::new(1, 0)], 0).is_err());
        assert!(acquire_all(&[&RateLimit::new(u64::MAX, 1)], i64::MIN).is_ok());
        let limit = RateLimit::new(u64::MAX, 1);
        assert!(acquire_all(&[&limit], 1).is_ok());
        assert!(acquire_all(&[&limit], i64::MAX).is_err());
        let limit = RateLimit::new(10, 3);
        for now in [100, 50, 75] {
            acquire_all(&[&limit], now).unwrap();
        }
        // 50 expired when 75 arrived; the log stays sorted although the clock stepped back.
        assert_eq!(*limit.lock(), [75, 100]);
        assert_eq!(limit.remaining(86), 2);
    }
}
