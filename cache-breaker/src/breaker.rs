//! [`Breaker`]: the state machine of one connector's circuit breaker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cache_core::{BreakerSettings, FailureEvent};
use tokio::time::Instant;

/// Where a breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass and their outcomes are counted.
    Closed,
    /// Calls fail fast without reaching the backend, until `Timeout` has passed.
    Open,
    /// Up to `MaxRetryRequests` trial calls pass; that many consecutive successes close the
    /// breaker, any failure opens it again.
    HalfOpen,
}

impl BreakerState {
    fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    /// `cache_breaker_state`: 0 closed, 1 half-open, 2 open (worse is higher).
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// The outcomes counted since the current state began (or, while closed, since the last
/// `Interval` reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls let through.
    pub requests: u32,
    /// Calls that succeeded.
    pub successes: u32,
    /// Calls that failed.
    pub failures: u32,
    /// Successes since the last failure.
    pub consecutive_successes: u32,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

impl Counts {
    fn success(&mut self) {
        self.successes = self.successes.saturating_add(1);
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        self.consecutive_failures = 0;
    }

    fn failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_successes = 0;
    }
}

/// The circuit breaker of one connector, shared by every object cache on it.
///
/// Time is Tokio's ([`tokio::time::Instant`]), so tests can pause and advance it.
#[derive(Debug)]
pub struct Breaker {
    connector: &'static str,
    settings: BreakerSettings,
    /// The zero of `open_until`.
    base: Instant,
    /// [`BreakerState::code`] and the end of the open period (ns after `base`), for the
    /// lock-free reject while open.
    fast_state: AtomicU8,
    open_until: AtomicU64,
    inner: Mutex<Inner>,
    /// `cache_breaker_state` and `cache_breaker_rejected_total`.
    state_gauge: metrics::Gauge,
    rejected: metrics::Counter,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Bumped on every state change and interval reset: outcomes of calls let through
    /// under an older generation are not counted.
    generation: u64,
    counts: Counts,
    /// While closed with `Interval` > 0: when the counts are reset next.
    interval_ends: Option<Instant>,
    /// While open: when trial calls are let through.
    open_until: Instant,
    /// The failure events counted lately, oldest first (at most [`COUNTED_EVENTS`]).
    events: VecDeque<FailureEvent>,
}

/// How many counted failure events a breaker remembers: more than the connections of a pool
/// that can fail at once.
const COUNTED_EVENTS: usize = 256;

/// Leave to make one call, given by [`Breaker::permit`]. Report the outcome with
/// [`success`](Permit::success) or [`failure`](Permit::failure); a permit dropped without
/// either (the call was cancelled) counts as a success, so a cancelled trial call never
/// leaves a half-open breaker waiting.
#[derive(Debug)]
#[must_use = "report the call's outcome on the permit"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    reported: bool,
}

impl Permit<'_> {
    /// The call succeeded (or failed for a reason that does not say the backend is unhealthy).
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.after(self.generation, true);
    }

    /// The call failed because the backend is unhealthy: timeout, connection, server error.
    pub fn failure(self) {
        self.failure_of(None);
    }

    /// The call failed as part of `event` (see [`FailureEvent`]): the failures of one event
    /// count once — the first one reported — however many calls it failed.
    pub fn failure_of(mut self, event: Option<FailureEvent>) {
        self.reported = true;
        if let Some(event) = event
            && !self.breaker.first_of(event)
        {
            // Counted already: neither a failure again nor a success.
            return;
        }
        self.breaker.after(self.generation, false);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.after(self.generation, true);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Breaker {
    /// A closed breaker for `connector` (a name for logs, e.g. `redis`) with `settings`.
    pub fn new(connector: &'static str, settings: BreakerSettings) -> Self {
        use cache_core::observe::{self, BREAKER_REJECTED, BREAKER_STATE};
        observe::describe();
        let now = Instant::now();
        let state_gauge = metrics::gauge!(BREAKER_STATE, "connector" => connector);
        state_gauge.set(BreakerState::Closed.gauge());
        Breaker {
            state_gauge,
            rejected: metrics::counter!(BREAKER_REJECTED, "connector" => connector),
            connector,
            settings,
            base: now,
            fast_state: AtomicU8::new(BreakerState::Closed.code()),
            open_until: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                counts: Counts::default(),
                interval_ends: interval_end(&settings, now),
                open_until: now,
                events: VecDeque::new(),
            }),
        }
    }

    /// The connector this breaker protects.
    pub fn connector(&self) -> &'static str {
        self.connector
    }

    /// The settings it runs on.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The current state (an open breaker whose `Timeout` has passed reads as half-open).
    pub fn state(&self) -> BreakerState {
        self.lock().current(self, Instant::now()).0
    }

    /// The counts of the current state.
    pub fn counts(&self) -> Counts {
        let mut inner = self.lock();
        inner.current(self, Instant::now());
        inner.counts
    }

    /// Whether the breaker is open and its `Timeout` has not passed: a lock-free check, the
    /// whole cost of a call while open.
    pub fn is_rejecting(&self) -> bool {
        self.fast_state.load(Ordering::Acquire) == BreakerState::Open.code()
            && nanos(Instant::now().saturating_duration_since(self.base))
                < self.open_until.load(Ordering::Acquire)
    }

    /// Whether a call made now is refused by an open breaker, counted as a rejection
    /// (`cache_breaker_rejected_total`) when it is: the lock-free check of a call that would
    /// otherwise ask for a [`permit`](Self::permit).
    pub fn refuses_call(&self) -> bool {
        let refused = self.is_rejecting();
        if refused {
            self.rejected.increment(1);
        }
        refused
    }

    /// Leave to make one call, or `None` when the breaker is open, or half-open with its
    /// trial calls all handed out.
    pub fn permit(&self) -> Option<Permit<'_>> {
        if self.is_rejecting() {
            self.rejected.increment(1);
            return None;
        }
        let mut inner = self.lock();
        let (state, generation) = inner.current(self, Instant::now());
        match state {
            BreakerState::Open => {
                self.rejected.increment(1);
                return None;
            }
            BreakerState::HalfOpen if inner.counts.requests >= self.settings.max_retry_requests => {
                self.rejected.increment(1);
                return None;
            }
            _ => {}
        }
        inner.counts.requests = inner.counts.requests.saturating_add(1);
        Some(Permit {
            breaker: self,
            generation,
            reported: false,
        })
    }

    /// Whether `event` was not counted yet (and remember it as counted).
    fn first_of(&self, event: FailureEvent) -> bool {
        let mut inner = self.lock();
        if inner.events.contains(&event) {
            return false;
        }
        if inner.events.len() == COUNTED_EVENTS {
            inner.events.pop_front();
        }
        inner.events.push_back(event);
        true
    }

    fn after(&self, generation: u64, success: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        let (state, current) = inner.current(self, now);
        if current != generation {
            return;
        }
        if success {
            inner.counts.success();
            if state == BreakerState::HalfOpen
                && inner.counts.consecutive_successes >= self.settings.max_retry_requests
            {
                inner.set(self, BreakerState::Closed, now);
            }
        } else {
            inner.counts.failure();
            match state {
                BreakerState::Closed if self.ready_to_trip(&inner.counts) => {
                    inner.set(self, BreakerState::Open, now);
                }
                BreakerState::HalfOpen => inner.set(self, BreakerState::Open, now),
                _ => {}
            }
        }
    }

    /// The trip rules: consecutive failures **exceed** `MaxConsecutiveFailures`, or — once
    /// `MinRequests` calls were counted — failures per request **exceed** `MaxFailureRatio`.
    /// A rule set to 0 is off.
    fn ready_to_trip(&self, counts: &Counts) -> bool {
        let s = &self.settings;
        let consecutive = s.max_consecutive_failures > 0
            && counts.consecutive_failures > s.max_consecutive_failures;
        let ratio = s.max_failure_ratio > 0.0
            && counts.requests > 0
            && counts.requests >= s.min_requests
            && f64::from(counts.failures) / f64::from(counts.requests) > s.max_failure_ratio;
        consecutive || ratio
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn interval_end(settings: &BreakerSettings, now: Instant) -> Option<Instant> {
    (!settings.interval.is_zero()).then(|| now + settings.interval)
}

impl Inner {
    /// The state and generation at `now`: an interval that ended resets the counts, an open
    /// period that ended turns half-open.
    fn current(&mut self, breaker: &Breaker, now: Instant) -> (BreakerState, u64) {
        match self.state {
            BreakerState::Closed => {
                if let Some(end) = self.interval_ends
                    && end <= now
                {
                    self.generation += 1;
                    self.counts = Counts::default();
                    self.interval_ends = interval_end(&breaker.settings, now);
                }
            }
            BreakerState::Open if self.open_until <= now => {
                self.set(breaker, BreakerState::HalfOpen, now);
            }
            _ => {}
        }
        (self.state, self.generation)
    }

    fn set(&mut self, breaker: &Breaker, to: BreakerState, now: Instant) {
        let from = self.state;
        let counts = self.counts;
        tracing::warn!(
            connector = breaker.connector,
            from = from.name(),
            to = to.name(),
            requests = counts.requests,
            failures = counts.failures,
            consecutive_failures = counts.consecutive_failures,
            consecutive_successes = counts.consecutive_successes,
            "cache circuit breaker changed state"
        );
        self.state = to;
        self.generation += 1;
        self.counts = Counts::default();
        self.interval_ends = match to {
            BreakerState::Closed => interval_end(&breaker.settings, now),
            _ => None,
        };
        if to == BreakerState::Open {
            self.open_until = now + breaker.settings.timeout;
            breaker.open_until.store(
                nanos(self.open_until.saturating_duration_since(breaker.base)),
                Ordering::Release,
            );
        }
        breaker.fast_state.store(to.code(), Ordering::Release);
        breaker.state_gauge.set(to.gauge());
        metrics::counter!(
            cache_core::observe::BREAKER_TRANSITIONS,
            "connector" => breaker.connector,
            "to" => to.name()
        )
        .increment(1);
    }
}
