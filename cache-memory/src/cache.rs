//! [`MemoryCache`]: one object cache in process memory.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use cache_core::{
    Cache, CacheSettings, Entry, Error, Expiry, Hit, Index, Prune, Result, SharedClock, Timestamp,
    async_trait,
};
use quick_cache::sync::Cache as Map;
use quick_cache::{DefaultHashBuilder, OptionsBuilder, UnitWeighter};

use crate::CONNECTOR;
use crate::store::{EvictWhole, SlotKey, SlotRef, Stored};

/// Up to how many keys a set overwrites an older object's keys in place (see `store_at`).
const OVERWRITTEN_IN_PLACE: usize = 16;

type Slots<V> = Map<SlotKey, Arc<Stored<V>>, UnitWeighter, DefaultHashBuilder, EvictWhole>;

/// One object cache of the [memory connector](crate::MemoryConnector): a bounded map from
/// (index, key) to a stored object that all of the object's keys share.
///
/// Reads take no lock of ours (only quick_cache's shard read lock); writes (set, invalidate,
/// delete, truncate) are serialised per object cache, which is what makes "set invalidates
/// every older object sharing a key" hold under concurrency.
pub struct MemoryCache<I: Index, V: Entry<I>> {
    purpose: Arc<str>,
    indices: Box<[I]>,
    expiry: Expiry,
    /// How long objects are kept: `expiry` stretched by MaxStale (for stale-if-error).
    kept: Expiry,
    clock: SharedClock,
    slots: Slots<V>,
    writes: Mutex<()>,
    /// Whether the warning about an object with more keys than the capacity was logged.
    warned_too_many_keys: AtomicBool,
    /// Told of hits that renew LastUsage, at most once per interval per object (see
    /// [`on_renewal_due`](MemoryCache::on_renewal_due)).
    renewals: OnceLock<Renewals<V>>,
}

/// What [`MemoryCache::on_renewal_due`] calls with an object whose LastUsage is due.
type RenewalHook<V> = Box<dyn Fn(&Arc<V>) + Send + Sync>;

/// A renewal hook and how often it is called per object (µs).
struct Renewals<V> {
    every: u64,
    hook: RenewalHook<V>,
}

impl<I: Index, V: Entry<I>> fmt::Debug for MemoryCache<I, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("purpose", &self.purpose)
            .field("indices", &self.indices)
            .field("expiry", &self.expiry)
            .field("keys", &self.slots.len())
            .field("capacity", &self.slots.capacity())
            .finish()
    }
}

impl<I: Index, V: Entry<I>> MemoryCache<I, V> {
    /// A cache for `purpose` holding at most `capacity` keys (at least 1 is used).
    ///
    /// # Panics
    /// With more than 256 indices, which no object type has.
    pub(crate) fn new(
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
        capacity: u64,
        clock: SharedClock,
    ) -> Self {
        let unique = cache_core::unique_indices(indices);
        assert!(
            unique.len() <= usize::from(u8::MAX) + 1,
            "the {purpose:?} cache has {} indices; at most 256 are supported",
            unique.len()
        );
        let capacity = capacity.max(1);
        let options = OptionsBuilder::new()
            .estimated_items_capacity(usize::try_from(capacity).unwrap_or(usize::MAX).min(1 << 20))
            .weight_capacity(capacity)
            .build()
            .expect("estimated items and weight capacity are always set");
        MemoryCache {
            purpose: purpose.into(),
            indices: unique.into_boxed_slice(),
            expiry: settings.expiry(),
            kept: settings.kept(),
            clock,
            slots: Map::with_options(
                options,
                UnitWeighter,
                DefaultHashBuilder::default(),
                EvictWhole,
            ),
            writes: Mutex::new(()),
            warned_too_many_keys: AtomicBool::new(false),
            renewals: OnceLock::new(),
        }
    }

    /// Calls `hook` with an object on a hit that renews its LastUsage, at most once per `every`
    /// per object (the first hit that long after the set or the last call): so a near cache
    /// renews the shared level's LastUsage of the objects it answers from memory, and an
    /// object read often in any process stays cached for every process. The hook must not
    /// block (spawn the work). Set once; later calls are ignored and return `false`.
    pub fn on_renewal_due(
        &self,
        every: Duration,
        hook: impl Fn(&Arc<V>) + Send + Sync + 'static,
    ) -> bool {
        let every = u64::try_from(every.as_micros()).unwrap_or(u64::MAX).max(1);
        self.renewals
            .set(Renewals {
                every,
                hook: Box::new(hook),
            })
            .is_ok()
    }

    /// The expiry rules of this cache.
    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// The purpose this cache was built for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// How many keys the cache holds right now, including keys of objects that are invalid or
    /// expired but not yet pruned.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the cache holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The most keys this cache holds before it evicts.
    pub fn capacity(&self) -> u64 {
        self.slots.capacity()
    }

    /// [`Cache::set`] without a future: stores `value` under all its keys at once.
    pub fn set_now(&self, value: Arc<V>) {
        self.store(value);
    }

    /// The object reachable through `key` under `index`, as a get would find it — without
    /// counting as a use (LastUsage is not renewed).
    pub fn peek(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        let slot = SlotRef {
            index: self.position(index)?,
            key,
        };
        let now = self.clock.now();
        Ok(self
            .slots
            .get(&slot)
            .filter(|stored| stored.is_live(&self.expiry, now))
            .map(|stored| Arc::clone(&stored.value)))
    }

    /// [`Cache::invalidate`] without a future.
    pub fn invalidate_now(&self, index: I, keys: &[&str]) -> Result<()> {
        let index = self.position(index)?;
        let _writes = self.lock();
        for key in keys {
            if let Some(stored) = self.slots.peek(&SlotRef { index, key }) {
                self.remove_object(&stored);
            }
        }
        Ok(())
    }

    /// [`Cache::delete`] without a future.
    pub fn delete_now(&self, index: I, keys: &[&str]) -> Result<()> {
        let index = self.position(index)?;
        let _writes = self.lock();
        for key in keys {
            self.slots.remove(&SlotRef { index, key });
        }
        Ok(())
    }

    /// [`Cache::truncate`] without a future: drops every object.
    pub fn clear(&self) {
        let _writes = self.lock();
        self.slots.clear();
    }

    fn position(&self, index: I) -> Result<u8> {
        self.indices
            .iter()
            .position(|built| *built == index)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or_else(|| Error::unknown_index(&self.purpose, index.name()))
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn lookup(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        Ok(self
            .lookup_stored(index, key)?
            .map(|(stored, _)| Arc::clone(&stored.value)))
    }

    /// The live object behind the key and the time of the hit (renewing its LastUsage).
    #[inline]
    fn lookup_stored(&self, index: I, key: &str) -> Result<Option<(Arc<Stored<V>>, Timestamp)>> {
        let slot = SlotRef {
            index: self.position(index)?,
            key,
        };
        let Some(stored) = self.slots.get(&slot) else {
            return Ok(None);
        };
        let now = self.clock.now();
        if stored.is_live(&self.expiry, now) {
            stored.touch(now);
            if let Some(renewals) = self.renewals.get()
                && stored.pass_on(now, renewals.every)
            {
                (renewals.hook)(&stored.value);
            }
            return Ok(Some((stored, now)));
        }
        // Dead: drop this mapping now rather than wait for the pruner — unless stale-if-error
        // may still want it — but only if it still points at the object we looked at (a set
        // may have replaced it meanwhile).
        if !stored.is_live(&self.kept, now) {
            self.slots
                .remove_if(&slot, |current| Arc::ptr_eq(current, &stored));
        }
        Ok(None)
    }

    /// Stores `value` as set `age` ago (so it expires by MaxAge when the object it copies
    /// does): what a near cache fills its memory level with after a shared read.
    pub fn set_now_aged(&self, value: Arc<V>, age: std::time::Duration) {
        self.store_at(value, self.clock.now().saturating_sub(age));
    }

    fn store(&self, value: Arc<V>) {
        self.store_at(value, self.clock.now());
    }

    fn store_at(&self, value: Arc<V>, created: Timestamp) {
        let keys: Vec<SlotKey> = cache_core::entry_keys(&*value, &self.indices)
            .into_iter()
            .map(|(position, key)| {
                let position =
                    u8::try_from(position).expect("at most 256 indices (checked in new)");
                SlotKey::new(position, key)
            })
            .collect();
        let stored = Arc::new(Stored::new(
            value,
            keys.into_boxed_slice(),
            created,
            self.clock.now(),
        ));
        let writes = self.lock();
        let fits = stored.keys.len() as u64 <= self.slots.capacity();
        // The keys the new object takes are overwritten below rather than unlinked first —
        // for objects with a few keys (a longer list would cost more to search than it saves).
        let overwritten =
            (fits && stored.keys.len() <= OVERWRITTEN_IN_PLACE).then_some(&stored.keys[..]);
        for slot in stored.keys.iter() {
            if let Some(older) = self.slots.peek(&slot.as_ref()) {
                // An older object under several of these keys is found once per key: it goes
                // the first time.
                if !older.is_invalid() {
                    self.remove_object_except(&older, overwritten);
                }
            }
        }
        if !fits {
            // It would evict its own keys (and so itself): not cached, but the older objects
            // it replaces are gone all the same.
            drop(writes);
            self.warn_too_many_keys(stored.keys.len());
            return;
        }
        let mut evicted = Vec::new();
        for slot in stored.keys.iter() {
            self.slots
                .insert_with_lifecycle(slot.clone(), Arc::clone(&stored), &mut evicted);
        }
        // Evicting one key invalidated its whole object: unlink the object's other keys now
        // so they do not hold capacity until the next prune.
        for dead in &evicted {
            self.remove_object(dead);
        }
        drop(writes);
        // The evicted objects are freed here, outside the lock.
        drop(evicted);
    }

    fn warn_too_many_keys(&self, keys: usize) {
        if !self.warned_too_many_keys.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                purpose = %self.purpose,
                connector = CONNECTOR,
                keys,
                capacity = self.slots.capacity(),
                "an object has more keys than the cache holds, so it is not cached (logged \
                 once per cache); raise Caches.Connectors.Memory.Capacity"
            );
        }
    }

    /// Invalidates `stored` and unlinks every key that still points at it. Keys that now
    /// point at another object are left alone. Call with the write lock held.
    fn remove_object(&self, stored: &Arc<Stored<V>>) {
        self.remove_object_except(stored, None);
    }

    /// [`remove_object`](Self::remove_object), leaving linked the keys in `overwritten` (the
    /// caller stores another object under them next, under the same lock; until then they
    /// reach an invalid object: a miss, as an unlinked key would be).
    fn remove_object_except(&self, stored: &Arc<Stored<V>>, overwritten: Option<&[SlotKey]>) {
        stored.invalidate();
        for slot in stored.keys.iter() {
            if overwritten.is_some_and(|keys| keys.contains(slot)) {
                continue;
            }
            self.slots
                .remove_if(&slot.as_ref(), |current| Arc::ptr_eq(current, stored));
        }
    }

    fn remove_dead(&self) {
        let now = self.clock.now();
        self.slots
            .retain(|_, stored| stored.is_live(&self.kept, now));
    }
}

#[async_trait]
impl<I: Index, V: Entry<I>> Cache<I, V> for MemoryCache<I, V> {
    fn connector(&self) -> &'static str {
        CONNECTOR
    }

    fn indices(&self) -> &[I] {
        &self.indices
    }

    fn get_ready(&self, index: I, key: &str) -> Option<Result<Option<Arc<V>>>> {
        Some(self.lookup(index, key))
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        self.lookup(index, key)
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        let slot = SlotRef {
            index: self.position(index)?,
            key,
        };
        let now = self.clock.now();
        Ok(self
            .slots
            .get(&slot)
            .filter(|stored| stored.is_live(&self.kept, now))
            .map(|stored| Hit {
                value: Arc::clone(&stored.value),
                age: Some(now.saturating_since(stored.created())),
            }))
    }

    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        Ok(self.lookup_stored(index, key)?.map(|(stored, now)| Hit {
            value: Arc::clone(&stored.value),
            age: Some(now.saturating_since(stored.created())),
        }))
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        self.set_now(value);
        Ok(())
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.invalidate_now(index, keys)
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.delete_now(index, keys)
    }

    async fn truncate(&self) -> Result<()> {
        self.clear();
        tracing::debug!(purpose = %self.purpose, connector = CONNECTOR, "truncated");
        Ok(())
    }

    fn into_prune(self: Arc<Self>) -> Option<Arc<dyn Prune>> {
        Some(self)
    }
}

#[async_trait]
impl<I: Index, V: Entry<I>> Prune for MemoryCache<I, V> {
    /// Removes the keys of invalidated and expired objects. Reads no object as a use, so it
    /// never renews LastUsage.
    async fn prune(&self) -> Result<u64> {
        let before = self.slots.len();
        self.remove_dead();
        let removed = before.saturating_sub(self.slots.len()) as u64;
        tracing::debug!(
            purpose = %self.purpose,
            connector = CONNECTOR,
            removed,
            "pruned"
        );
        Ok(removed)
    }
}
