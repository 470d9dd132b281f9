//! Time as the caches see it, injectable so expiry logic is testable without sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in wall-clock time: microseconds since the UNIX epoch.
///
/// Wall-clock (not monotonic) so that shared backends can compare timestamps written by
/// different processes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `micros` microseconds after the UNIX epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the UNIX epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the UNIX epoch, rounded down.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// This timestamp moved `d` back, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_micros(d)))
    }

    /// This timestamp moved `d` forward, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_micros(d)))
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A source of the current time.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A clock shared by the caches of a connector.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(duration_micros(since_epoch))
    }
}

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// A clock that only moves when told to: for tests of expiry, pruning and breakers.
///
/// ```
/// use std::time::Duration;
/// use cache_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now().saturating_since(t0), Duration::from_millis(1500));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A manual clock standing at the current wall-clock time.
    pub fn new() -> Self {
        ManualClock {
            now: AtomicU64::new(SystemClock.now().as_micros()),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(duration_micros(d), Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
}

/// `d` in whole milliseconds, for backends that keep time themselves (Redis TTLs, SQL
/// intervals): a non-zero duration below a millisecond rounds up to 1 ms, so it never turns
/// into 0, which means "no limit".
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(cache_core::whole_millis(Duration::from_micros(10)), 1);
/// assert_eq!(cache_core::whole_millis(Duration::from_millis(1500)), 1500);
/// assert_eq!(cache_core::whole_millis(Duration::ZERO), 0);
/// ```
pub fn whole_millis(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 && !d.is_zero() { 1 } else { ms }
}

/// The two expiry rules of an object cache: **MaxAge** (since the object was set) and
/// **LastUsage** (since it was last read). A zero duration disables its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Expiry {
    /// Objects older than this (since set) are gone. Zero: no limit.
    pub max_age: Duration,
    /// Objects not read for this long are gone; a hit renews it. Zero: no limit.
    pub last_usage: Duration,
}

impl Expiry {
    /// Whether an object set at `created` and last read at `last_used` has expired at `now`.
    /// An object expires the moment its age reaches the limit (as a Redis TTL does).
    pub fn is_expired(&self, created: Timestamp, last_used: Timestamp, now: Timestamp) -> bool {
        let too_old = !self.max_age.is_zero() && now.saturating_since(created) >= self.max_age;
        let idle = !self.last_usage.is_zero() && now.saturating_since(last_used) >= self.last_usage;
        too_old || idle
    }

    /// How long an object that was set at `created` and last read at `last_used` stays
    /// reachable after `now`, or `None` when neither rule applies (it lives until removed).
    pub fn remaining(
        &self,
        created: Timestamp,
        last_used: Timestamp,
        now: Timestamp,
    ) -> Option<Duration> {
        let by_age = (!self.max_age.is_zero())
            .then(|| created.saturating_add(self.max_age).saturating_since(now));
        let by_use = (!self.last_usage.is_zero()).then(|| {
            last_used
                .saturating_add(self.last_usage)
                .saturating_since(now)
        });
        match (by_age, by_use) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn max_age_expires_when_reached_and_zero_disables() {
        let t0 = Timestamp::from_micros(1_000_000_000);
        let e = Expiry {
            max_age: 10 * S,
            last_usage: Duration::ZERO,
        };
        assert!(!e.is_expired(t0, t0, t0.saturating_add(9 * S)));
        assert!(e.is_expired(t0, t0, t0.saturating_add(10 * S)));
        let off = Expiry::default();
        assert!(!off.is_expired(t0, t0, t0.saturating_add(1_000_000 * S)));
    }

    #[test]
    fn last_usage_counts_from_last_read() {
        let t0 = Timestamp::from_micros(1_000_000_000);
        let e = Expiry {
            max_age: Duration::ZERO,
            last_usage: 5 * S,
        };
        let read = t0.saturating_add(4 * S);
        assert!(!e.is_expired(t0, read, t0.saturating_add(8 * S)));
        assert!(e.is_expired(t0, read, t0.saturating_add(9 * S)));
    }

    #[test]
    fn remaining_is_the_nearer_limit() {
        let t0 = Timestamp::from_micros(1_000_000_000);
        let e = Expiry {
            max_age: 10 * S,
            last_usage: 3 * S,
        };
        assert_eq!(e.remaining(t0, t0, t0.saturating_add(S)), Some(2 * S));
        assert_eq!(Expiry::default().remaining(t0, t0, t0), None);
        let age_only = Expiry {
            max_age: 10 * S,
            last_usage: Duration::ZERO,
        };
        assert_eq!(
            age_only.remaining(t0, t0, t0.saturating_add(4 * S)),
            Some(6 * S)
        );
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let a = c.now();
        assert_eq!(c.now(), a);
        c.advance(Duration::from_micros(7));
        assert_eq!(c.now().as_micros(), a.as_micros() + 7);
    }
}
