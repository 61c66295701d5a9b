//! The crate's one source of "now" ([`Clock`]) and its one conversion between [`SystemTime`]
//! and the integers the stores keep, the schemes sign and the conversations show (Unix
//! seconds, milliseconds, or microseconds where milliseconds are too coarse).
//!
//! Both directions saturate instead of panicking: a time before 1970 is a negative count, and
//! a count no `SystemTime` can hold becomes the nearest end of what this function accepts (the
//! epoch for an unrepresentable stored value, which a corrupt row must not turn into a panic).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a component reads the time: the system clock, or a function put in its place (tests
/// freeze or move it; the inbound verifier and the registry let applications set it).
///
/// Cheap to clone; the system clock costs no indirect call.
#[derive(Clone, Default)]
pub(crate) struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    /// The registry's and the engine tests' form.
    #[cfg(any(feature = "registry", test))]
    Time(Arc<dyn Fn() -> SystemTime + Send + Sync>),
    /// Kept in seconds: the inbound verifier reads it on every request, in seconds.
    UnixSeconds(Arc<dyn Fn() -> i64 + Send + Sync>),
}

impl Clock {
    /// A clock that reads `now`.
    #[cfg(any(feature = "registry", test))]
    pub(crate) fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self(Source::Time(Arc::new(now)))
    }

    /// A clock that reads `now` in Unix seconds (the inbound verifier's public form).
    pub(crate) fn from_unix_seconds(now: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Source::UnixSeconds(Arc::new(now)))
    }

    /// The current time.
    pub(crate) fn now(&self) -> SystemTime {
        match &self.0 {
            Source::System => SystemTime::now(),
            #[cfg(any(feature = "registry", test))]
            Source::Time(now) => now(),
            Source::UnixSeconds(now) => unsigned(now(), Duration::from_secs),
        }
    }

    /// The current time in Unix seconds, as signatures carry it.
    pub(crate) fn unix_seconds(&self) -> i64 {
        match &self.0 {
            // Any platform's `SystemTime` holds these (1970 to 2286) exactly, so the answer is
            // the one a round trip through it gives; other counts take that round trip, which
            // saturates where the platform's `SystemTime` ends.
            Source::UnixSeconds(now) => match now() {
                seconds @ 0..=10_000_000_000 => seconds,
                seconds => unix_seconds(unsigned(seconds, Duration::from_secs)),
            },
            _ => unix_seconds(self.now()),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Source::System => "system",
            _ => "<fn>",
        })
    }
}

/// Unix seconds of `time` (negative before 1970, saturating at `i64`'s ends).
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    signed(time, |d| u128::from(d.as_secs()))
}

/// Unix milliseconds of `time` (negative before 1970, saturating at `i64`'s ends).
#[cfg(feature = "forward")]
pub(crate) fn unix_millis(time: SystemTime) -> i64 {
    signed(time, |d| d.as_millis())
}

/// The time `ms` Unix milliseconds denote (the epoch when no `SystemTime` can hold it).
#[cfg(any(feature = "registry", feature = "sqlite", feature = "postgres"))]
pub(crate) fn from_unix_millis(ms: i64) -> SystemTime {
    unsigned(ms, Duration::from_millis)
}

/// Unix microseconds of `time` (negative before 1970, saturating at `i64`'s ends).
#[cfg(all(feature = "registry", any(feature = "sqlite", feature = "postgres")))]
pub(crate) fn unix_micros(time: SystemTime) -> i64 {
    signed(time, |d| d.as_micros())
}

/// The time `us` Unix microseconds denote (the epoch when no `SystemTime` can hold it).
#[cfg(all(feature = "registry", any(feature = "sqlite", feature = "postgres")))]
pub(crate) fn from_unix_micros(us: i64) -> SystemTime {
    unsigned(us, Duration::from_micros)
}

fn signed(time: SystemTime, count: fn(Duration) -> u128) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(count(after)).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(count(before.duration()))
            .map(i64::wrapping_neg)
            .unwrap_or(i64::MIN),
    }
}

fn unsigned(count: i64, unit: fn(u64) -> Duration) -> SystemTime {
    let span = unit(count.unsigned_abs());
    let time = if count >= 0 {
        UNIX_EPOCH.checked_add(span)
    } else {
        UNIX_EPOCH.checked_sub(span)
    };
    time.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_clock_reads_the_system_time() {
        let before = SystemTime::now();
        let now = Clock::default().now();
        assert!(before <= now && now <= SystemTime::now());
        assert_eq!(format!("{:?}", Clock::default()), "system");
    }

    #[test]
    fn a_clock_in_unix_seconds_round_trips_on_both_sides_of_the_epoch() {
        for seconds in [0, 1, 1_700_000_000, -1, -86_400] {
            let clock = Clock::from_unix_seconds(move || seconds);
            assert_eq!(clock.unix_seconds(), seconds);
            assert_eq!(format!("{clock:?}"), "<fn>");
        }
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(Clock::new(move || at).unix_seconds(), 1_700_000_000);
    }

    #[test]
    fn a_clock_in_unix_seconds_reads_as_the_round_trip_through_system_time_does() {
        for seconds in [
            0,
            10_000_000_000,
            10_000_000_001,
            -10_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let round_trip = unix_seconds(unsigned(seconds, Duration::from_secs));
            assert_eq!(
                Clock::from_unix_seconds(move || seconds).unix_seconds(),
                round_trip,
                "{seconds}"
            );
        }
    }

    #[cfg(any(feature = "registry", feature = "sqlite", feature = "postgres"))]
    #[test]
    fn milliseconds_round_trip_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 1_731_381_205_123, -1, -86_400_000] {
            assert_eq!(unix_millis(from_unix_millis(ms)), ms);
        }
        assert_eq!(
            from_unix_millis(1_500),
            UNIX_EPOCH + Duration::from_millis(1_500)
        );
    }

    #[cfg(any(feature = "registry", feature = "sqlite", feature = "postgres"))]
    #[test]
    fn extremes_saturate_instead_of_panicking() {
        // Whatever the platform's range, neither direction panics.
        let far = from_unix_millis(i64::MAX);
        let _ = unix_millis(far);
        let _ = from_unix_millis(i64::MIN);
        let _ = unix_millis(UNIX_EPOCH - Duration::from_secs(1 << 40));
    }

    #[cfg(all(feature = "registry", any(feature = "sqlite", feature = "postgres")))]
    #[test]
    fn microseconds_keep_sub_millisecond_precision() {
        let at = UNIX_EPOCH + Duration::from_micros(1_731_381_205_123_456);
        assert_eq!(unix_micros(at), 1_731_381_205_123_456);
        assert_eq!(from_unix_micros(unix_micros(at)), at);
    }
}
