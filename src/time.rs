//! The crate's one conversion between [`SystemTime`] and the integers the stores keep and the
//! conversations show (Unix milliseconds, or microseconds where milliseconds are too coarse).
//!
//! Both directions saturate instead of panicking: a time before 1970 is a negative count, and
//! a count no `SystemTime` can hold becomes the nearest end of what this function accepts (the
//! epoch for an unrepresentable stored value, which a corrupt row must not turn into a panic).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds of `time` (negative before 1970, saturating at `i64`'s ends).
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

#[cfg(any(feature = "registry", feature = "sqlite", feature = "postgres"))]
fn unsigned(count: i64, unit: fn(u64) -> Duration) -> SystemTime {
    let span = unit(count.unsigned_abs());
    let time = if count >= 0 {
        UNIX_EPOCH.checked_add(span)
    } else {
        UNIX_EPOCH.checked_sub(span)
    };
    time.unwrap_or(UNIX_EPOCH)
}

#[cfg(all(
    test,
    any(feature = "registry", feature = "sqlite", feature = "postgres")
))]
mod tests {
    use super::*;

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
