//! [`Fence`]: keeps a memory fill from installing a value that a change overtook.
//!
//! A miss reads the shared level and then fills the memory level. If a change of one of the
//! value's keys (made here, or announced by another process) is applied to the memory level
//! between the start of that read and the fill, the value read may be the old one: it must
//! not be installed. Every change is recorded here with the hashes of its keys, under the
//! same lock as its memory operation; a fill checks the changes recorded since its read began
//! and installs under that lock only if none touched its keys. The log keeps the last
//! [`LOG`] changes; a fill older than that is not installed (never wrong, just a miss more).

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Changes remembered for fills in flight.
const LOG: usize = 512;

/// A change as the fence remembers it.
#[derive(Debug)]
enum Touched {
    /// These key hashes; by a set of the value at this address, when it was one.
    Keys(Vec<u64>, Option<usize>),
    /// Everything (a truncate, or the channel lost).
    All,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct Fence {
    /// The number of the last change recorded.
    seq: AtomicU64,
    log: Mutex<VecDeque<(u64, Touched)>>,
}

/// The hash of one key of one index, as the fence compares them.
pub(crate) fn key_hash(index: &str, key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (index, key).hash(&mut hasher);
    hasher.finish()
}

impl Fence {
    /// Where the log stands: pass it to [`fill`](Self::fill) after the read.
    pub(crate) fn start(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Records a change of `keys` (hashes) and applies it with `apply`, atomically with
    /// respect to fills.
    pub(crate) fn change<T>(&self, keys: Vec<u64>, apply: impl FnOnce() -> T) -> T {
        self.record(Touched::Keys(keys, None), apply)
    }

    /// Records the set of the value at `value` (its address) under `keys`: a change for fills,
    /// but not for [`changed_since`](Self::changed_since) asked about that same value.
    pub(crate) fn set<T>(&self, keys: Vec<u64>, value: usize, apply: impl FnOnce() -> T) -> T {
        self.record(Touched::Keys(keys, Some(value)), apply)
    }

    /// Records a change of everything and applies it with `apply`.
    pub(crate) fn change_all<T>(&self, apply: impl FnOnce() -> T) -> T {
        self.record(Touched::All, apply)
    }

    fn record<T>(&self, touched: Touched, apply: impl FnOnce() -> T) -> T {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        log.push_back((seq, touched));
        if log.len() > LOG {
            log.pop_front();
        }
        self.seq.store(seq, Ordering::Release);
        apply()
    }

    /// Runs `install` unless a change recorded after `since` touched one of `keys` (hashes);
    /// returns whether it ran.
    pub(crate) fn fill(&self, since: u64, keys: &[u64], install: impl FnOnce()) -> bool {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if self.touched(&log, since, keys, None) {
            return false;
        }
        install();
        true
    }

    /// Whether a change recorded after `since` touched one of `keys` (or the log no longer
    /// reaches back that far) — not counting a set of the value at `value` itself.
    pub(crate) fn changed_since(&self, since: u64, keys: &[u64], value: usize) -> bool {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        self.touched(&log, since, keys, Some(value))
    }

    fn touched(
        &self,
        log: &VecDeque<(u64, Touched)>,
        since: u64,
        keys: &[u64],
        except: Option<usize>,
    ) -> bool {
        if self.seq.load(Ordering::Relaxed) == since {
            return false;
        }
        let forgotten = log.front().is_none_or(|(first, _)| *first > since + 1);
        forgotten
            || log
                .iter()
                .filter(|(seq, _)| *seq > since)
                .any(|(_, touched)| match touched {
                    Touched::All => true,
                    Touched::Keys(_, Some(set)) if Some(*set) == except => false,
                    Touched::Keys(changed, _) => changed.iter().any(|k| keys.contains(k)),
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_is_installed_unless_a_change_of_its_keys_came_in_between() {
        let fence = Fence::default();
        let (a, b, c) = (
            key_hash("id", "a"),
            key_hash("id", "b"),
            key_hash("name", "a"),
        );
        assert_ne!(a, c, "the same key under another index is another key");
        let since = fence.start();
        assert!(fence.fill(since, &[a], || {}), "nothing changed");
        let since = fence.start();
        fence.change(vec![b], || {});
        assert!(fence.fill(since, &[a, c], || {}), "another key changed");
        assert!(!fence.fill(since, &[b], || {}), "its key changed");
        let since = fence.start();
        fence.change_all(|| {});
        assert!(!fence.fill(since, &[a], || {}), "everything changed");
    }

    #[test]
    fn a_change_before_the_read_began_is_no_change_for_it() {
        let fence = Fence::default();
        let (a, b) = (key_hash("id", "a"), key_hash("id", "b"));
        fence.change(vec![a], || {});
        let since = fence.start();
        fence.change(vec![b], || {});
        assert!(
            fence.fill(since, &[a], || {}),
            "a's change came before the read began"
        );
        assert!(fence.changed_since(since, &[b], 0), "b's came after");
    }

    #[test]
    fn another_values_set_is_a_change_and_the_values_own_set_is_not() {
        let fence = Fence::default();
        let a = key_hash("id", "a");
        let since = fence.start();
        fence.set(vec![a], 1, || {});
        assert!(
            !fence.changed_since(since, &[a], 1),
            "the value's own set is no change for it"
        );
        assert!(
            fence.changed_since(since, &[a], 2),
            "another value's set of its key is a change"
        );
        assert!(
            !fence.fill(since, &[a], || {}),
            "a fill after a set of its key"
        );
    }

    #[test]
    fn a_fill_older_than_the_log_is_never_installed() {
        let fence = Fence::default();
        let since = fence.start();
        for i in 0..=LOG {
            fence.change(vec![i as u64], || {});
        }
        let mut installed = false;
        assert!(!fence.fill(since, &[u64::MAX], || installed = true));
        assert!(!installed);
    }

    #[test]
    fn a_fill_as_old_as_the_whole_log_is_still_judged_by_it() {
        let fence = Fence::default();
        let since = fence.start();
        for i in 0..LOG {
            fence.change(vec![i as u64], || {});
        }
        assert!(
            fence.fill(since, &[u64::MAX], || {}),
            "the log keeps all {LOG} changes since the read: none of them of its key"
        );
        assert!(!fence.fill(since, &[3], || {}), "one of them of its key");
    }
}
