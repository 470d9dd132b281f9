//! [`Counter`]: a count that many threads add to without sharing a cache line.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many stripes a counter has: a power of two, enough for the cores of a service.
const STRIPES: usize = 16;

#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A monotonic count, striped: each thread adds to its own stripe (so hits answered on
/// several cores at once never contend on one cache line), [`get`](Self::get) sums them.
/// One made [`exported`](Self::exported) also adds to a counter of the `metrics` facade.
#[derive(Default)]
pub struct Counter {
    stripes: [Stripe; STRIPES],
    /// `None` (the default): counted here only, without a call into the facade.
    exported: Option<metrics::Counter>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl Counter {
    /// A counter that also counts in `exported` (see [`observe`](crate::observe)).
    pub fn exported(exported: metrics::Counter) -> Self {
        Counter {
            stripes: Default::default(),
            exported: Some(exported),
        }
    }

    /// Adds one.
    #[inline]
    pub fn increment(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        thread_local! {
            static STRIPE: usize = {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % STRIPES
            };
        }
        self.stripes[STRIPE.with(|s| *s)]
            .0
            .fetch_add(n, Ordering::Relaxed);
        if let Some(exported) = &self.exported {
            exported.increment(n);
        }
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counter = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        counter.increment();
                    }
                });
            }
        });
        counter.add(5);
        assert_eq!(counter.get(), 8_005);
    }
}
