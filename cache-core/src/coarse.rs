//! [`CoarseClock`]: the wall clock read from an atomic that a background thread advances, so a
//! cache hit pays an atomic load instead of a `clock_gettime` (~25 ns here, a third of a
//! memory hit).
//!
//! The thread ("object-cache-clock") starts with the first read, writes the time every
//! [`RESOLUTION`], and parks after a second without readers; the read that finds it parked
//! takes the exact time and wakes it. So an idle process pays nothing, a busy one a wake-up per
//! millisecond. Readers touch shared state at most once per tick: each tick clears a "read"
//! flag that the first reader after it sets.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::{Clock, SharedClock, Timestamp};

/// How often the coarse time advances; a read is at most this much behind the wall clock
/// (more when the machine is so loaded that the thread is not scheduled for longer).
pub const RESOLUTION: Duration = Duration::from_millis(1);

/// After this long without a read, the thread parks.
const IDLE_AFTER: u32 = 1_000;

const STOPPED: u8 = 0;
const RUNNING: u8 = 1;
const PARKED: u8 = 2;

static NOW_MICROS: AtomicU64 = AtomicU64::new(0);
static STATE: AtomicU8 = AtomicU8::new(STOPPED);
static READ: AtomicBool = AtomicBool::new(false);
static TICKER: OnceLock<Thread> = OnceLock::new();

/// The wall clock at [`RESOLUTION`]: what the memory connector runs on by default. MaxAge and
/// LastUsage are then precise to about a millisecond; tests that need exact times use a
/// [`ManualClock`](crate::ManualClock).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock;

impl CoarseClock {
    /// The coarse clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        std::sync::Arc::new(CoarseClock)
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> Timestamp {
        if STATE.load(Ordering::Acquire) == RUNNING {
            if !READ.load(Ordering::Relaxed) {
                READ.store(true, Ordering::Relaxed);
            }
            return Timestamp::from_micros(NOW_MICROS.load(Ordering::Acquire));
        }
        wake()
    }
}

fn exact_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The exact time, after making sure the thread runs (starting or unparking it).
#[cold]
fn wake() -> Timestamp {
    let now = exact_micros();
    NOW_MICROS.fetch_max(now, Ordering::AcqRel);
    READ.store(true, Ordering::Relaxed);
    match STATE.compare_exchange(STOPPED, RUNNING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => start(),
        Err(PARKED) => {
            if STATE
                .compare_exchange(PARKED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                && let Some(thread) = TICKER.get()
            {
                thread.unpark();
            }
        }
        Err(_) => {}
    }
    Timestamp::from_micros(now)
}

fn start() {
    let spawned = std::thread::Builder::new()
        .name("object-cache-clock".to_owned())
        .spawn(tick);
    if spawned.is_err() {
        // No thread: every read stays exact (and slower), never wrong.
        STATE.store(STOPPED, Ordering::Release);
    }
}

fn tick() {
    let _ = TICKER.set(std::thread::current());
    let mut idle = 0u32;
    loop {
        NOW_MICROS.fetch_max(exact_micros(), Ordering::AcqRel);
        if READ.swap(false, Ordering::Relaxed) {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle >= IDLE_AFTER {
            STATE.store(PARKED, Ordering::Release);
            // A reader that saw RUNNING just before the store reads a time at most one
            // resolution old; the next one finds PARKED and wakes the thread.
            while STATE.load(Ordering::Acquire) == PARKED {
                std::thread::park();
            }
            idle = 0;
            continue;
        }
        std::thread::sleep(RESOLUTION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_time_stays_within_a_few_resolutions_of_the_wall_clock() {
        // Behind by the resolution plus the scheduling delay of the ticker thread, which a
        // loaded machine makes as long as it likes: the bound is generous (5x the resolution,
        // and at least 2 s beyond it). What is checked is that coarse time is never ahead of
        // the wall clock and keeps following it; the worst lag seen is printed.
        let bound = (RESOLUTION * 5).max(RESOLUTION + Duration::from_secs(2));
        let clock = CoarseClock;
        let mut worst = 0;
        for _ in 0..200 {
            let before = exact_micros();
            let coarse = clock.now().as_micros();
            let after = exact_micros();
            assert!(coarse <= after, "coarse {coarse} ahead of {after}");
            let behind = before.saturating_sub(coarse);
            worst = worst.max(behind);
            assert!(
                u128::from(behind) < bound.as_micros(),
                "coarse time {behind} µs behind"
            );
            std::thread::sleep(Duration::from_micros(300));
        }
        eprintln!("coarse time at most {worst} µs behind the wall clock");
        // The ticker moves it on: it passes a moment of the wall clock taken now (a running
        // ticker that stopped writing would leave it there for good).
        let mark = exact_micros();
        let started = std::time::Instant::now();
        while clock.now().as_micros() < mark {
            assert!(started.elapsed() < bound, "coarse time stopped advancing");
            std::thread::sleep(Duration::from_micros(300));
        }
        assert_ne!(STATE.load(Ordering::Acquire), STOPPED, "the ticker runs");
    }
}
