//! [`NearCache`]: a memory level in front of a shared level (or alone), kept consistent with
//! the other processes through a [`Hub`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use cache_core::{
    Cache, Change, ChangeListener, Counter, Entry, Error, Filled, Hit, Index, Lease, LeaseToken,
    Prune, Result, async_trait,
};
use cache_memory::MemoryCache;

use cache_core::announcement::{Announcement as Message, Kind};

use crate::fence::{Fence, key_hash};
use crate::hub::{ChannelState, Hub, Receiver};

/// One object cache with a memory level in this process, kept consistent with every other
/// process sharing it (see the crate docs for the contract).
///
/// - **get**: while the hub is healthy, a hit in memory is answered at memory speed; a miss
///   reads the shared level and fills memory (unless a change overtook the read). While the
///   hub is not healthy, every get reads the shared level and nothing is filled.
/// - **set / invalidate / delete / truncate**: the shared level first, then memory. When the
///   shared level's server announces the changes made through it (as part of each change:
///   Redis, PostgreSQL), that is all — one round trip. Otherwise (a shared level on another
///   channel, or none), an announcement to the other processes follows (awaited, at most
///   [`ANNOUNCE_LIMIT`](crate::ANNOUNCE_LIMIT); a failed announcement is logged and sent
///   again, never an error of the call).
///
/// Without a shared level (the memory connector with a channel), a miss is a miss and an
/// unhealthy hub turns every get into a miss until it is back.
pub struct NearCache<I: Index, V: Entry<I>> {
    level: Arc<Level<I, V>>,
    memory_hits: Counter,
    shared_hits: Counter,
    misses: Counter,
}

/// How long this process remembers its own sets, to take one back when another process's
/// invalidation of one of its keys arrives only after it (twice the longest a healthy
/// channel lets a message lag).
pub const RETRACT_WINDOW: Duration = Duration::from_secs(2);

/// The memory level and its fence: what the hub reaches to apply other processes' changes.
struct Level<I: Index, V: Entry<I>> {
    purpose: String,
    memory: Arc<MemoryCache<I, V>>,
    fence: Fence,
    received: Counter,
    sent: Counter,
    /// The shared level and the hub, to take a set back.
    shared: Option<Arc<dyn Cache<I, V>>>,
    hub: Hub,
    /// Whether the shared level's server announces every change made through it on the hub's
    /// channel (then this cache announces nothing itself).
    server_announces: bool,
    /// The key hashes of this process's sets within [`RETRACT_WINDOW`].
    recent_sets: Mutex<RecentSets>,
}

/// What a near cache has done and where its channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NearStats {
    /// Gets answered from memory.
    pub memory_hits: u64,
    /// Gets answered by the shared level (and filled into memory when healthy).
    pub shared_hits: u64,
    /// Gets answered with nothing.
    pub misses: u64,
    /// Messages this object cache announced.
    pub sent: u64,
    /// Messages from other processes applied to its memory level.
    pub received: u64,
    /// The channel's state now.
    pub channel: ChannelState,
}

/// Drops the sets older than [`RETRACT_WINDOW`].
/// The keys (hashed) this process set within [`RETRACT_WINDOW`], each with its latest set: a
/// received invalidation looks each of its keys up once, whatever the rate of sets.
#[derive(Default)]
struct RecentSets {
    latest: HashMap<u64, Instant>,
    /// Every set key in the order set, to forget them once out of the window.
    order: VecDeque<(Instant, u64)>,
}

impl RecentSets {
    fn note(&mut self, hashes: &[u64]) {
        self.forget_old();
        let now = Instant::now();
        for &hash in hashes {
            self.latest.insert(hash, now);
            self.order.push_back((now, hash));
        }
    }

    /// Whether `hash` was set within the window; it is forgotten, so a set is taken back once.
    fn take(&mut self, hash: u64) -> bool {
        self.forget_old();
        self.latest.remove(&hash).is_some()
    }

    fn forget_old(&mut self) {
        while let Some(&(at, hash)) = self.order.front() {
            if at.elapsed() <= RETRACT_WINDOW {
                break;
            }
            self.order.pop_front();
            // Only if no later set of the key renewed it.
            if self.latest.get(&hash) == Some(&at) {
                self.latest.remove(&hash);
            }
        }
    }
}

fn hashes<I: Index>(index: I, keys: &[&str]) -> Vec<u64> {
    keys.iter().map(|key| key_hash(index.name(), key)).collect()
}

impl<I: Index, V: Entry<I>> Level<I, V> {
    fn index(&self, name: &str) -> Option<I> {
        self.memory
            .indices()
            .iter()
            .copied()
            .find(|i| i.name() == name)
    }

    /// The hashes of every key of `value`.
    fn value_hashes(&self, value: &V) -> Vec<u64> {
        cache_core::entry_keys(value, self.memory.indices())
            .iter()
            .map(|(position, key)| key_hash(self.memory.indices()[*position].name(), key))
            .collect()
    }

    fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.fence.change(hashes(index, keys), || {
            self.memory.invalidate_now(index, keys)
        })
    }

    fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.fence
            .change(hashes(index, keys), || self.memory.delete_now(index, keys))
    }

    fn clear(&self) {
        self.fence.change_all(|| self.memory.clear());
    }

    /// Remembers a set of this process (the hashes of its keys) for [`RETRACT_WINDOW`].
    fn note_set(&self, hashes: &[u64]) {
        if self.shared.is_none() {
            return; // nothing shared to take back
        }
        self.recent_sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(hashes);
    }

    /// Another process invalidated `keys`: a set of this process within [`RETRACT_WINDOW`]
    /// that holds one of them may have landed in the shared level after that invalidation
    /// (whose announcement only arrives now) — with what the invalidation made outdated, as
    /// a read-through load that began before it would. Invalidates those keys in the shared
    /// level again, in the background, and announces it. Each set is taken back once; a set
    /// that was in fact newer only costs a miss.
    fn retract_overtaken(&self, index: I, keys: &[&str]) {
        let Some(shared) = &self.shared else { return };
        let overtaken: Vec<String> = {
            let mut recent = self
                .recent_sets
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            keys.iter()
                .filter(|key| recent.take(key_hash(index.name(), key)))
                .map(|key| (*key).to_owned())
                .collect()
        };
        if overtaken.is_empty() {
            return;
        }
        let (shared, hub, purpose) = (Arc::clone(shared), self.hub.clone(), self.purpose.clone());
        let server_announces = self.server_announces;
        tokio::spawn(async move {
            let keys: Vec<&str> = overtaken.iter().map(String::as_str).collect();
            match shared.invalidate(index, &keys).await {
                Ok(()) => {
                    tracing::debug!(
                        purpose,
                        connector = shared.connector(),
                        keys = keys.len(),
                        "took back a set that another process's invalidation overtook"
                    );
                    if !server_announces {
                        hub.announce(&purpose, (Kind::Invalidate, false), index.name(), &keys)
                            .await;
                    }
                }
                Err(error) => tracing::warn!(
                    purpose,
                    connector = shared.connector(),
                    %error,
                    "could not take back a set that another process's invalidation overtook"
                ),
            }
        });
    }

    /// The server saw `keys` change behind the library's back (deleted or overwritten by
    /// another client, evicted, expired, rows changed by hand): the objects this memory level
    /// reaches through them are removed from the shared level through all their keys, in the
    /// background — so an object that lost one of its keys there (an eviction) is not left
    /// reachable through the others, where a later invalidation through the lost key could no
    /// longer find it. (Every process holding such an object does this; the removals are
    /// idempotent and announced.)
    fn heal(&self, index: I, keys: &[&str]) {
        let Some(shared) = &self.shared else { return };
        let found: Vec<Arc<V>> = keys
            .iter()
            .filter_map(|key| self.memory.peek(index, key).ok().flatten())
            .collect();
        if found.is_empty() {
            return;
        }
        let (shared, purpose) = (Arc::clone(shared), self.purpose.clone());
        let indices: Vec<I> = self.memory.indices().to_vec();
        tokio::spawn(async move {
            for value in found {
                for &index in &indices {
                    let keys = value.keys(index);
                    if keys.is_empty() {
                        continue;
                    }
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    if let Err(error) = shared.invalidate(index, &keys).await {
                        tracing::warn!(
                            purpose,
                            connector = shared.connector(),
                            %error,
                            "could not remove an object a change behind the cache's back left                              partly reachable"
                        );
                    }
                }
            }
        });
    }

    /// Applies a change made here (now, or delivered later by a decorator below).
    fn apply_change(&self, change: &Change<I>) {
        let _ = match change {
            Change::Invalidate(index, keys) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.invalidate(*index, &keys)
            }
            Change::Delete(index, keys) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.delete(*index, &keys)
            }
            Change::Truncate => {
                self.clear();
                Ok(())
            }
        };
    }
}

impl<I: Index, V: Entry<I>> Receiver for Level<I, V> {
    fn apply(&self, message: &Message) {
        self.received.increment();
        let keys: Vec<&str> = message.keys.iter().map(String::as_str).collect();
        let index = self.index(&message.index);
        match (message.kind, index) {
            (Kind::Invalidate, Some(index)) => {
                if message.origin == 0 {
                    self.heal(index, &keys);
                }
                let _ = self.invalidate(index, &keys);
                // Only another process's invalidation (a change the server saw made by
                // someone else takes back nothing: no process of ours raced with it).
                if !message.replaced && message.origin != 0 {
                    self.retract_overtaken(index, &keys);
                }
            }
            (Kind::Delete, Some(index)) => {
                let _ = self.delete(index, &keys);
            }
            (Kind::Truncate | Kind::Flush, _) => self.clear(),
            // An index this release does not know (another release's cache): emptying the
            // memory level is always correct.
            (Kind::Invalidate | Kind::Delete, None) => self.clear(),
            (Kind::Heartbeat | Kind::Touched, _) => {}
        }
    }

    fn reset(&self) {
        self.clear();
    }
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for NearCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("purpose", &self.level.purpose)
            .field("shared", &self.level.shared.as_ref().map(|s| s.connector()))
            .field("hub", &self.level.hub)
            .finish()
    }
}

impl<I: Index, V: Entry<I>> NearCache<I, V> {
    /// The object cache `purpose` with `memory` as its memory level in front of `shared`
    /// (`None`: the memory level alone), announcing its changes on `hub` and applying those
    /// the other processes announce there.
    pub fn new(
        purpose: &str,
        memory: Arc<MemoryCache<I, V>>,
        shared: Option<Arc<dyn Cache<I, V>>>,
        hub: Hub,
    ) -> Self {
        use cache_core::observe::{self, NEAR_GETS, NEAR_RECEIVED, NEAR_SENT};
        let connector = match &shared {
            Some(shared) => shared.connector(),
            None => cache_memory::CONNECTOR,
        };
        let exported = |name| Counter::exported(observe::counter(name, purpose, connector));
        let level_counter = |level| {
            Counter::exported(observe::counter_with(
                NEAR_GETS, purpose, connector, "level", level,
            ))
        };
        let server_announces = shared
            .as_ref()
            .and_then(|shared| shared.announced_on())
            .is_some_and(|origin| origin == hub.origin());
        let level = Arc::new(Level {
            purpose: purpose.to_owned(),
            memory,
            fence: Fence::default(),
            received: exported(NEAR_RECEIVED),
            sent: exported(NEAR_SENT),
            shared,
            hub: hub.clone(),
            server_announces,
            recent_sets: Mutex::new(RecentSets::default()),
        });
        // Objects answered from memory are used: their LastUsage in the shared level is
        // renewed as a shared hit would (at most a tenth of LastUsage apart), so the shared
        // level keeps them — for every process — and does not expire them under this one.
        let last_usage = level.memory.expiry().last_usage;
        if let Some(shared) = &level.shared
            && !last_usage.is_zero()
        {
            let shared = Arc::clone(shared);
            level
                .memory
                .on_renewal_due(last_usage / 10, move |value: &Arc<V>| {
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        return;
                    };
                    let (shared, value) = (Arc::clone(&shared), Arc::clone(value));
                    runtime.spawn(async move {
                        if let Err(error) = shared.touch(&value).await {
                            tracing::debug!(
                                connector = shared.connector(),
                                %error,
                                "renewing LastUsage in the shared level failed"
                            );
                        }
                    });
                });
        }
        let receiver: Weak<dyn Receiver> = Arc::downgrade(&level) as Weak<dyn Receiver>;
        hub.register(purpose, receiver);
        if !hub.is_healthy() {
            level.clear();
        }
        NearCache {
            level,
            memory_hits: level_counter("memory"),
            shared_hits: level_counter("shared"),
            misses: level_counter("miss"),
        }
    }

    /// The hub this cache announces on.
    pub fn hub(&self) -> &Hub {
        &self.level.hub
    }

    /// The memory level.
    pub fn memory(&self) -> &Arc<MemoryCache<I, V>> {
        &self.level.memory
    }

    /// What this cache has done, and where its channel is.
    pub fn stats(&self) -> NearStats {
        NearStats {
            memory_hits: self.memory_hits.get(),
            shared_hits: self.shared_hits.get(),
            misses: self.misses.get(),
            sent: self.level.sent.get(),
            received: self.level.received.get(),
            channel: self.level.hub.state(),
        }
    }

    /// A listener for changes a decorator of the shared level delivers later (a circuit
    /// breaker's kept invalidations): applies them to memory and announces them, so the
    /// other processes hear of them once they are in effect. See
    /// `cache_breaker::BreakerCache::on_delivered`.
    pub fn delivered_listener(&self) -> ChangeListener<I> {
        let level = Arc::downgrade(&self.level);
        let hub = self.level.hub.clone();
        Arc::new(move |change: &Change<I>| {
            let Some(level) = level.upgrade() else {
                return;
            };
            level.apply_change(change);
            if level.server_announces {
                return; // the server announced it as it delivered it
            }
            let (hub, change, level) = (hub.clone(), change.clone(), Arc::clone(&level));
            tokio::spawn(async move {
                announce(&hub, &level, &change).await;
            });
        })
    }

    /// A miss in memory (or an unhealthy hub): the shared level's answer, filled into memory
    /// with its age when the hub was healthy all along and no change overtook the read.
    async fn read_through(&self, index: I, key: &str, healthy: bool) -> Result<Option<Hit<V>>> {
        self.check(index)?;
        let Some(shared) = &self.level.shared else {
            self.misses.increment();
            return Ok(None);
        };
        let since = self.level.fence.start();
        let Some(hit) = shared.get_entry(index, key).await? else {
            self.misses.increment();
            return Ok(None);
        };
        self.shared_hits.increment();
        if healthy && self.level.hub.is_healthy() {
            self.fill_memory(since, &hit);
        }
        Ok(Some(hit))
    }

    /// What follows a set or fill of the shared level: a stored object goes to memory (and is
    /// announced, unless the server did); a failed one leaves none of its keys in memory (the
    /// shared level may still hold what it replaces); a refused fill changes nothing.
    async fn after_store(&self, value: Arc<V>, stored: Result<Filled>) -> Result<Filled> {
        let level = &self.level;
        let keys = cache_core::entry_keys(&*value, level.memory.indices());
        match stored {
            Ok(Filled::Stored) => {}
            Ok(Filled::Refused) => return Ok(Filled::Refused),
            Err(error) => {
                for (position, key) in &keys {
                    let index = level.memory.indices()[*position];
                    let _ = level.invalidate(index, &[key.as_str()]);
                }
                return Err(error);
            }
        }
        let hashes: Vec<u64> = keys
            .iter()
            .map(|(position, key)| key_hash(level.memory.indices()[*position].name(), key))
            .collect();
        let address = Arc::as_ptr(&value) as usize;
        level.note_set(&hashes);
        level
            .fence
            .set(hashes, address, || level.memory.set_now(value));
        level.sent.increment();
        if level.server_announces {
            return Ok(Filled::Stored); // the set script / function announced the keys it took
        }
        // Every older object holding one of these keys is gone: the others drop theirs.
        for (position, index) in level.memory.indices().iter().enumerate() {
            let keys: Vec<&str> = keys
                .iter()
                .filter(|(p, _)| *p == position)
                .map(|(_, key)| key.as_str())
                .collect();
            if !keys.is_empty() {
                level
                    .hub
                    .announce(
                        &level.purpose,
                        (Kind::Invalidate, true),
                        index.name(),
                        &keys,
                    )
                    .await;
            }
        }
        Ok(Filled::Stored)
    }

    /// Installs a shared hit in memory with its age, unless a change overtook the read that
    /// began at `since`.
    fn fill_memory(&self, since: u64, hit: &Hit<V>) {
        let keys = self.level.value_hashes(&hit.value);
        let memory = &self.level.memory;
        let age = hit.age.unwrap_or_default();
        self.level.fence.fill(since, &keys, || {
            memory.set_now_aged(Arc::clone(&hit.value), age)
        });
    }

    /// Announces `change` — unless the shared level's server announced it already, as part
    /// of the change that succeeded. A change that failed is announced by this process all
    /// the same (it may have taken effect — a timeout after the server applied it — and
    /// dropping memory copies is always safe).
    async fn announce_unless_done(&self, outcome: &Result<()>, change: &Change<I>) {
        let level = &self.level;
        if level.server_announces && outcome.is_ok() {
            level.sent.increment();
            return;
        }
        announce(&level.hub, level, change).await;
    }

    fn check(&self, index: I) -> Result<()> {
        if self.level.memory.indices().contains(&index) {
            Ok(())
        } else {
            Err(Error::unknown_index(&self.level.purpose, index.name()))
        }
    }
}

/// Tells the other processes about `change`.
async fn announce<I: Index, V: Entry<I>>(hub: &Hub, level: &Level<I, V>, change: &Change<I>) {
    let (kind, index, keys) = match change {
        Change::Invalidate(index, keys) => (Kind::Invalidate, index.name(), keys.as_slice()),
        Change::Delete(index, keys) => (Kind::Delete, index.name(), keys.as_slice()),
        Change::Truncate => (Kind::Truncate, "", &[][..]),
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    level.sent.increment();
    hub.announce(&level.purpose, (kind, false), index, &keys)
        .await;
}

#[async_trait]
impl<I: Index, V: Entry<I>> Cache<I, V> for NearCache<I, V> {
    fn connector(&self) -> &'static str {
        match &self.level.shared {
            Some(shared) => shared.connector(),
            None => cache_memory::CONNECTOR,
        }
    }

    fn indices(&self) -> &[I] {
        self.level.memory.indices()
    }

    #[inline]
    fn get_ready(&self, index: I, key: &str) -> Option<Result<Option<Arc<V>>>> {
        if !self.level.hub.is_healthy() {
            return None;
        }
        match self.level.memory.get_ready(index, key) {
            Some(Ok(Some(value))) => {
                self.memory_hits.increment();
                Some(Ok(Some(value)))
            }
            Some(Err(error)) => Some(Err(error)),
            // Without a shared level a memory miss is the answer: no read-through to await.
            Some(Ok(None)) if self.level.shared.is_none() => {
                self.misses.increment();
                Some(Ok(None))
            }
            _ => None,
        }
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        let healthy = self.level.hub.is_healthy();
        if healthy && let Some(found) = self.get_ready(index, key) {
            return found;
        }
        Ok(self
            .read_through(index, key, healthy)
            .await?
            .map(|hit| hit.value))
    }

    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        let healthy = self.level.hub.is_healthy();
        if healthy && let Some(hit) = self.level.memory.get_entry(index, key).await? {
            self.memory_hits.increment();
            return Ok(Some(hit));
        }
        self.read_through(index, key, healthy).await
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.check(index)?;
        if self.level.hub.is_healthy()
            && let Some(hit) = self.level.memory.get_stale(index, key).await?
        {
            return Ok(Some(hit));
        }
        match &self.level.shared {
            Some(shared) => shared.get_stale(index, key).await,
            None => Ok(None),
        }
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        let stored = match &self.level.shared {
            Some(shared) => shared
                .set(Arc::clone(&value))
                .await
                .map(|()| Filled::Stored),
            None => Ok(Filled::Stored),
        };
        self.after_store(value, stored).await.map(drop)
    }

    /// A lease of the shared level (see `Cache::lease`); an object filled meanwhile goes to
    /// memory as a shared hit does.
    async fn lease(&self, index: I, key: &str) -> Result<Lease<V>> {
        self.check(index)?;
        let Some(shared) = &self.level.shared else {
            return Ok(Lease::None);
        };
        let healthy = self.level.hub.is_healthy();
        let since = self.level.fence.start();
        let lease = shared.lease(index, key).await?;
        if let Lease::Hit(hit) = &lease
            && healthy
            && self.level.hub.is_healthy()
        {
            self.fill_memory(since, hit);
        }
        Ok(lease)
    }

    /// The shared level's fill; stored there, the object goes to memory as a set's does.
    async fn fill(&self, value: Arc<V>, lease: &LeaseToken) -> Result<Filled> {
        let filled = match &self.level.shared {
            Some(shared) => shared.fill(Arc::clone(&value), lease).await,
            None => Ok(Filled::Stored),
        };
        self.after_store(value, filled).await
    }

    /// The shared level's release (the memory level keeps no leases).
    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        match &self.level.shared {
            Some(shared) => shared.release(lease).await,
            None => Ok(()),
        }
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let outcome = match &self.level.shared {
            Some(shared) => shared.invalidate(index, keys).await,
            None => Ok(()),
        };
        // Memory drops them whatever the shared level said, and so do the others: a failed
        // change may have taken effect all the same (a timeout after the server applied it),
        // and dropping memory copies is always safe. A breaker below that kept it announces
        // it again once delivered (`delivered_listener`).
        self.level.invalidate(index, keys)?;
        let owned = keys.iter().map(|k| (*k).to_owned()).collect();
        self.announce_unless_done(&outcome, &Change::Invalidate(index, owned))
            .await;
        outcome
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let outcome = match &self.level.shared {
            Some(shared) => shared.delete(index, keys).await,
            None => Ok(()),
        };
        self.level.delete(index, keys)?;
        // Announced whatever the shared level said (see `invalidate`).
        let owned = keys.iter().map(|k| (*k).to_owned()).collect();
        self.announce_unless_done(&outcome, &Change::Delete(index, owned))
            .await;
        outcome
    }

    async fn truncate(&self) -> Result<()> {
        let outcome = match &self.level.shared {
            Some(shared) => shared.truncate().await,
            None => Ok(()),
        };
        self.level.clear();
        // Announced whatever the shared level said (see `invalidate`).
        self.announce_unless_done(&outcome, &Change::Truncate).await;
        outcome
    }

    fn change_token(&self) -> u64 {
        self.level.fence.start()
    }

    fn changed_since(&self, token: u64, value: &V) -> bool {
        let address = std::ptr::from_ref(value) as usize;
        self.level
            .fence
            .changed_since(token, &self.level.value_hashes(value), address)
    }

    fn into_prune(self: Arc<Self>) -> Option<Arc<dyn Prune>> {
        Some(self)
    }
}

#[async_trait]
impl<I: Index, V: Entry<I>> Prune for NearCache<I, V> {
    /// Prunes the memory level, then the shared level when it needs pruning.
    async fn prune(&self) -> Result<u64> {
        let memory: Arc<dyn Prune> = Arc::clone(&self.level.memory) as Arc<dyn Prune>;
        let mut removed = memory.prune().await?;
        if let Some(shared) = self.level.shared.clone()
            && let Some(prune) = shared.into_prune()
        {
            removed += prune.prune().await?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_recent_set_is_taken_back_once_and_forgotten_after_the_window() {
        let step = Duration::from_millis(1);
        let mut recent = RecentSets::default();
        recent.note(&[1, 2]);
        tokio::time::advance(RETRACT_WINDOW / 2).await;
        recent.note(&[2]); // set again: remembered for a window from now
        assert!(recent.take(1));
        assert!(!recent.take(1), "taken back once");
        tokio::time::advance(RETRACT_WINDOW / 2 + step).await;
        assert!(recent.take(2), "its later set is still within the window");
        recent.note(&[3]);
        tokio::time::advance(RETRACT_WINDOW + step).await;
        assert!(!recent.take(3), "out of the window");
        assert!(recent.order.is_empty() && recent.latest.is_empty());
    }
}
