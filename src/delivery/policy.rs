//! Retry policies: how an attempt's outcome is classified, and when the next attempt is due.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::model::AttemptOutcome;

/// How one outcome is classified, before the schedule is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// A success.
    Delivered,
    /// A transient failure: try again if attempts remain.
    Retry,
    /// A permanent failure: stop.
    GiveUp,
    /// A permanent failure that also asks for the endpoint to be disabled (`410 Gone`).
    DisableEndpoint,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Delivered; done.
    Delivered,
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: permanent failure or attempts exhausted.
    GiveUp,
    /// Stop and disable the endpoint.
    DisableEndpoint,
}

/// Which outcomes are retried.
#[derive(Clone)]
#[non_exhaustive]
pub enum Classifier {
    /// The Cerebrium table: retry network errors, timeouts, `404` and non-2xx outside 4xx/5xx;
    /// give up on other 4xx and every 5xx.
    Cerebrium,
    /// The Standard Webhooks practice: retry every failure except `410 Gone`, which disables
    /// the endpoint.
    Standard,
    /// Your own function.
    Custom(Arc<dyn Fn(&AttemptOutcome) -> Class + Send + Sync>),
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cerebrium => f.write_str("Cerebrium"),
            Self::Standard => f.write_str("Standard"),
            Self::Custom(_) => f.write_str("Custom(<fn>)"),
        }
    }
}

impl Classifier {
    /// Classifies `outcome`.
    pub fn classify(&self, outcome: &AttemptOutcome) -> Class {
        match outcome {
            AttemptOutcome::Refused(_) | AttemptOutcome::SignFailed(_) => return Class::GiveUp,
            _ => {}
        }
        match self {
            Self::Cerebrium => match outcome {
                AttemptOutcome::Status(status) => match status {
                    200..=299 => Class::Delivered,
                    404 => Class::Retry,
                    400..=599 => Class::GiveUp,
                    _ => Class::Retry,
                },
                _ => Class::Retry,
            },
            Self::Standard => match outcome {
                AttemptOutcome::Status(status) => match status {
                    200..=299 => Class::Delivered,
                    410 => Class::DisableEndpoint,
                    _ => Class::Retry,
                },
                _ => Class::Retry,
            },
            Self::Custom(classify) => classify(outcome),
        }
    }
}

/// A retry policy: a classifier, a schedule of delays, jitter and `Retry-After` handling.
///
/// The number of attempts is one more than the number of delays.
///
/// | preset | attempts | delays | retried | not retried |
/// |---|---|---|---|---|
/// | [`Policy::cerebrium`] (default) | 3 | 2 s, 4 s (≤ 5 s apart) | network errors, timeouts, `404`, 1xx/3xx | other 4xx, all 5xx |
/// | [`Policy::standard`] | 8 | 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, ±20 % | every non-2xx but `410` | `410 Gone` (disables the endpoint) |
/// | [`Policy::exponential`] | chosen | doubling from a base, capped, ±20 % | as `standard` | as `standard` |
///
/// `standard` and `exponential` honour `Retry-After` on `429`/`503` within a clamp.
///
/// ```
/// use std::time::Duration;
/// use tower_webhooks::delivery::{Class, Policy, Verdict};
/// use tower_webhooks::delivery::AttemptOutcome;
///
/// let policy = Policy::cerebrium();
/// assert_eq!(policy.max_attempts(), 3);
/// assert_eq!(policy.classify(&AttemptOutcome::Status(404)), Class::Retry);
/// assert_eq!(policy.classify(&AttemptOutcome::Status(503)), Class::GiveUp);
/// assert!(matches!(policy.decide(1, &AttemptOutcome::Timeout, None), Verdict::Retry(_)));
/// assert_eq!(policy.decide(3, &AttemptOutcome::Timeout, None), Verdict::GiveUp);
///
/// // Tests use the same classification with a fast schedule:
/// let fast = Policy::cerebrium().with_delays([Duration::from_millis(10); 2]);
/// assert_eq!(fast.decide(1, &AttemptOutcome::Status(302), None), Verdict::Retry(Duration::from_millis(10)));
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    classifier: Classifier,
    delays: Arc<[Duration]>,
    jitter: f64,
    retry_after: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::cerebrium()
    }
}

impl Policy {
    /// Cerebrium's documented retry rules: 3 attempts at most, at most 5 s apart (2 s, then
    /// 4 s); network errors, timeouts, `404` and 1xx/3xx are retried; other 4xx and all 5xx
    /// are not.
    pub fn cerebrium() -> Self {
        Self {
            classifier: Classifier::Cerebrium,
            delays: Arc::from([Duration::from_secs(2), Duration::from_secs(4)]),
            jitter: 0.0,
            retry_after: None,
        }
    }

    /// The Standard Webhooks schedule: attempts after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
    /// 10 h, each ±20 %; every failure but `410 Gone` is retried; `Retry-After` on `429`/`503`
    /// is honoured up to 24 h.
    pub fn standard() -> Self {
        let h = |hours: u64| Duration::from_secs(hours * 3600);
        Self {
            classifier: Classifier::Standard,
            delays: Arc::from([
                Duration::from_secs(5),
                Duration::from_secs(300),
                Duration::from_secs(1800),
                h(2),
                h(5),
                h(10),
                h(10),
            ]),
            jitter: 0.2,
            retry_after: Some(h(24)),
        }
    }

    /// Exponential backoff: `attempts` attempts, the first retry after `base`, doubling up to
    /// `max`, ±20 % jitter, `Retry-After` honoured up to `max`; classified like
    /// [`standard`](Self::standard).
    pub fn exponential(base: Duration, max: Duration, attempts: u32) -> Self {
        let delays: Vec<Duration> = (0..attempts.saturating_sub(1))
            .map(|i| {
                base.saturating_mul(1u32.checked_shl(i).unwrap_or(u32::MAX))
                    .min(max)
            })
            .collect();
        Self {
            classifier: Classifier::Standard,
            delays: delays.into(),
            jitter: 0.2,
            retry_after: Some(max),
        }
    }

    /// A fixed list of delays (attempts = delays + 1), classified like
    /// [`standard`](Self::standard), no jitter.
    pub fn custom(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self {
            classifier: Classifier::Standard,
            delays: delays.into_iter().collect(),
            jitter: 0.0,
            retry_after: None,
        }
    }

    /// Replaces the schedule, keeping the classification (attempts = delays + 1).
    pub fn with_delays(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.delays = delays.into_iter().collect();
        self
    }

    /// Sets the jitter as a fraction (`0.2` = ±20 %), clamped to `0.0..=1.0`.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Honours `Retry-After` on retried `429`/`503` answers up to `clamp` (`None`: ignore it).
    pub fn with_retry_after(mut self, clamp: Option<Duration>) -> Self {
        self.retry_after = clamp;
        self
    }

    /// Replaces the classifier.
    pub fn with_classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Classifies with your own function.
    pub fn classify_fn<F>(self, classify: F) -> Self
    where
        F: Fn(&AttemptOutcome) -> Class + Send + Sync + 'static,
    {
        self.with_classifier(Classifier::Custom(Arc::new(classify)))
    }

    /// The most attempts a delivery gets.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// The scheduled delays.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Classifies an outcome.
    pub fn classify(&self, outcome: &AttemptOutcome) -> Class {
        self.classifier.classify(outcome)
    }

    /// Decides what follows attempt `number` (1-based) with `outcome`; `retry_after` is the
    /// answer's parsed `Retry-After`, if any.
    pub fn decide(
        &self,
        number: u32,
        outcome: &AttemptOutcome,
        retry_after: Option<Duration>,
    ) -> Verdict {
        match self.classify(outcome) {
            Class::Delivered => Verdict::Delivered,
            Class::GiveUp => Verdict::GiveUp,
            Class::DisableEndpoint => Verdict::DisableEndpoint,
            Class::Retry => {
                let index = usize::try_from(number.max(1) - 1).unwrap_or(usize::MAX);
                let Some(&scheduled) = self.delays.get(index) else {
                    return Verdict::GiveUp;
                };
                let mut delay = self.jittered(scheduled);
                if let (Some(clamp), Some(asked), Some(429 | 503)) =
                    (self.retry_after, retry_after, outcome.status())
                {
                    delay = delay.max(asked.min(clamp));
                }
                Verdict::Retry(delay)
            }
        }
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.jitter <= 0.0 || delay.is_zero() {
            return delay;
        }
        let factor = rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter);
        delay.mul_f64(factor)
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date taken relative to `now` (the
/// engine's clock).
pub(crate) fn retry_after_at(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cerebrium_table() {
        let policy = Policy::cerebrium();
        let retried = [404, 100, 102, 300, 301, 302, 304, 307, 308];
        let permanent = [400, 401, 403, 405, 409, 410, 422, 429, 500, 502, 503, 504];
        for status in retried {
            assert_eq!(
                policy.classify(&AttemptOutcome::Status(status)),
                Class::Retry,
                "{status}"
            );
        }
        for status in permanent {
            assert_eq!(
                policy.classify(&AttemptOutcome::Status(status)),
                Class::GiveUp,
                "{status}"
            );
        }
        for status in [200, 201, 202, 204] {
            assert_eq!(
                policy.classify(&AttemptOutcome::Status(status)),
                Class::Delivered
            );
        }
        assert_eq!(policy.classify(&AttemptOutcome::Timeout), Class::Retry);
        assert_eq!(
            policy.classify(&AttemptOutcome::Connect("refused".into())),
            Class::Retry
        );
        assert_eq!(
            policy.classify(&AttemptOutcome::Refused("loopback".into())),
            Class::GiveUp
        );
        assert!(policy.delays().iter().all(|d| *d <= Duration::from_secs(5)));
        assert_eq!(
            policy.decide(2, &AttemptOutcome::Timeout, None),
            Verdict::Retry(Duration::from_secs(4))
        );
        assert_eq!(
            policy.decide(3, &AttemptOutcome::Timeout, None),
            Verdict::GiveUp
        );
        // Cerebrium ignores Retry-After.
        assert_eq!(
            policy.decide(
                1,
                &AttemptOutcome::Status(404),
                Some(Duration::from_secs(60))
            ),
            Verdict::Retry(Duration::from_secs(2))
        );
    }

    #[test]
    fn standard_schedule() {
        let policy = Policy::standard();
        assert_eq!(policy.max_attempts(), 8);
        assert_eq!(
            policy.decide(1, &AttemptOutcome::Status(410), None),
            Verdict::DisableEndpoint
        );
        for _ in 0..50 {
            let Verdict::Retry(delay) = policy.decide(2, &AttemptOutcome::Status(500), None) else {
                panic!("500 is retried")
            };
            assert!(
                delay >= Duration::from_secs(240) && delay <= Duration::from_secs(360),
                "{delay:?}"
            );
        }
        let Verdict::Retry(delay) = policy.decide(
            1,
            &AttemptOutcome::Status(429),
            Some(Duration::from_secs(120)),
        ) else {
            panic!("429 is retried")
        };
        assert_eq!(delay, Duration::from_secs(120));
        let Verdict::Retry(delay) = policy.decide(
            1,
            &AttemptOutcome::Status(503),
            Some(Duration::from_secs(10 * 86_400)),
        ) else {
            panic!("503 is retried")
        };
        assert_eq!(delay, Duration::from_secs(86_400));
        assert_eq!(
            policy.decide(8, &AttemptOutcome::Status(500), None),
            Verdict::GiveUp
        );
    }

    #[test]
    fn exponential_and_custom() {
        let policy = Policy::exponential(Duration::from_secs(1), Duration::from_secs(10), 6)
            .with_jitter(0.0);
        assert_eq!(
            policy.delays(),
            [1, 2, 4, 8, 10].map(Duration::from_secs).as_slice()
        );
        let custom = Policy::cerebrium().classify_fn(|outcome| match outcome.status() {
            Some(500) => Class::Retry,
            _ => Class::GiveUp,
        });
        assert_eq!(custom.classify(&AttemptOutcome::Status(500)), Class::Retry);
        let now = std::time::SystemTime::now();
        assert_eq!(retry_after_at(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after_at("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_at("soon", now), None);
    }
}
