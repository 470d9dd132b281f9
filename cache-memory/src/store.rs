//! What the memory connector keeps: one [`Stored`] object per set, reachable through one
//! [`SlotKey`] per (index, key) pair in a bounded quick_cache map.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cache_core::{Expiry, Timestamp};
use quick_cache::{Equivalent, Lifecycle};

/// The position of an index in the cache's index list, and one key under it.
///
/// Keys of different indices never collide, whatever characters they contain: the index is a
/// separate field, not a prefix of the string. The string is shared between the map and the
/// stored object's key list, so a clone is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct SlotKey {
    index: u8,
    key: Arc<str>,
}

impl SlotKey {
    pub(crate) fn new(index: u8, key: String) -> Self {
        SlotKey {
            index,
            key: key.into(),
        }
    }

    pub(crate) fn as_ref(&self) -> SlotRef<'_> {
        SlotRef {
            index: self.index,
            key: &self.key,
        }
    }
}

impl Hash for SlotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

/// A borrowed [`SlotKey`], so a get looks up without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SlotRef<'a> {
    pub(crate) index: u8,
    pub(crate) key: &'a str,
}

impl Hash for SlotRef<'_> {
    /// The key alone: the same string under two indices lands in one bucket and is told apart
    /// by [`Equivalent`], which is cheaper than hashing the index into every lookup.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl Equivalent<SlotKey> for SlotRef<'_> {
    fn equivalent(&self, key: &SlotKey) -> bool {
        self.index == key.index && self.key == &*key.key
    }
}

/// One object as set, shared by every key that reaches it.
#[derive(Debug)]
pub(crate) struct Stored<V> {
    /// The value handed out on a hit (a reference-count increment, never a copy).
    pub(crate) value: Arc<V>,
    /// Every key this object was stored under, to unlink them all when it goes.
    pub(crate) keys: Box<[SlotKey]>,
    created: Timestamp,
    /// Microseconds since the epoch of the last hit (or the set).
    last_used: AtomicU64,
    /// Microseconds since the epoch of the last hit passed on to a renewal hook (or the set):
    /// see `MemoryCache::on_renewal_due`.
    passed_on: AtomicU64,
    /// Set once the object is invalidated, replaced or partly evicted; never cleared.
    invalid: AtomicBool,
}

impl<V> Stored<V> {
    /// An object set at `created`, last used `now`.
    pub(crate) fn new(
        value: Arc<V>,
        keys: Box<[SlotKey]>,
        created: Timestamp,
        now: Timestamp,
    ) -> Self {
        Stored {
            value,
            keys,
            created,
            last_used: AtomicU64::new(now.as_micros()),
            passed_on: AtomicU64::new(now.as_micros()),
            invalid: AtomicBool::new(false),
        }
    }

    /// When it was set.
    pub(crate) fn created(&self) -> Timestamp {
        self.created
    }

    /// Whether a get at `now` may return this object. Does not renew LastUsage.
    pub(crate) fn is_live(&self, expiry: &Expiry, now: Timestamp) -> bool {
        !self.invalid.load(Ordering::Acquire)
            && !expiry.is_expired(
                self.created,
                Timestamp::from_micros(self.last_used.load(Ordering::Relaxed)),
                now,
            )
    }

    /// Records a hit at `now` (LastUsage renewal). Skips the write when the time has not
    /// moved, so hot objects read by many threads in the same microsecond share a cache line
    /// without contention.
    pub(crate) fn touch(&self, now: Timestamp) {
        let now = now.as_micros();
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// Whether a hit at `now` is the first `every` after the last one passed on (and is passed
    /// on: exactly one caller wins).
    pub(crate) fn pass_on(&self, now: Timestamp, every: u64) -> bool {
        let now = now.as_micros();
        let last = self.passed_on.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && self
                .passed_on
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether the object was invalidated, replaced or partly evicted.
    pub(crate) fn is_invalid(&self) -> bool {
        self.invalid.load(Ordering::Acquire)
    }

    /// Marks the object gone for every key that still reaches it.
    pub(crate) fn invalidate(&self) {
        self.invalid.store(true, Ordering::Release);
    }
}

/// The quick_cache lifecycle: evicting any one key of an object invalidates the whole object,
/// so a later set can never leave an older version reachable through its remaining keys
/// (the "ghost" defect). Evicted objects are dropped after the shard lock is released.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EvictWhole;

impl<V> Lifecycle<SlotKey, Arc<Stored<V>>> for EvictWhole {
    type RequestState = Vec<Arc<Stored<V>>>;

    fn on_evict(&self, evicted: &mut Self::RequestState, _key: SlotKey, stored: Arc<Stored<V>>) {
        stored.invalidate();
        evicted.push(stored);
    }
}
