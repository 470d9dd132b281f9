//! The face applications use: one object cache, with the failure policy applied.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::cache::Cache;
use crate::error::Result;
use crate::index::{Entry, Index};
use crate::noop::NoopCache;

/// The `tracing` target of every event an object cache logs. Each event carries the fields
/// `purpose` and `connector`, so a subscriber can route or filter each cache's events.
pub const LOG_TARGET: &str = "object_cache";

/// One object cache of a service, e.g. the instance cache, as the application uses it.
///
/// It applies the failure policy: [`get`](Self::get) and [`set`](Self::set) never return an
/// error (a backend failure is logged through `tracing` with the cache's purpose and connector,
/// counted in [`stats`](Self::stats), and answered as a miss);
/// [`invalidate`](Self::invalidate), [`delete`](Self::delete) and [`truncate`](Self::truncate)
/// return the error, because the caller may need to know that stale objects can remain.
///
/// Cloning is cheap and every clone is the same cache. The backend can be replaced at runtime
/// ([`replace`](Self::replace)) without blocking readers; operations in flight finish on the
/// backend they started on.
pub struct ObjectCache<I: Index, V: Entry<I>> {
    inner: Arc<Inner<I, V>>,
}

struct Inner<I: Index, V: Entry<I>> {
    purpose: Arc<str>,
    backend: ArcSwap<Backend<I, V>>,
    stats: Counters,
}

struct Backend<I: Index, V: Entry<I>> {
    cache: Arc<dyn Cache<I, V>>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
}

/// Counts of what an [`ObjectCache`] has answered since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Gets answered with an object.
    pub hits: u64,
    /// Gets answered with nothing (including those a backend error turned into a miss).
    pub misses: u64,
    /// Operations of any kind that failed in the backend.
    pub errors: u64,
}

impl CacheStats {
    /// Hits per get, 0 when there were no gets.
    pub fn hit_ratio(&self) -> f64 {
        let gets = self.hits + self.misses;
        if gets == 0 {
            0.0
        } else {
            self.hits as f64 / gets as f64
        }
    }
}

impl<I: Index, V: Entry<I>> Clone for ObjectCache<I, V> {
    fn clone(&self) -> Self {
        ObjectCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<I: Index, V: Entry<I>> fmt::Debug for ObjectCache<I, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("purpose", &self.purpose())
            .field("connector", &self.connector())
            .finish()
    }
}

impl<I: Index, V: Entry<I>> ObjectCache<I, V> {
    /// The object cache `purpose`, stored by `cache`.
    pub fn new(purpose: impl Into<Arc<str>>, cache: Arc<dyn Cache<I, V>>) -> Self {
        ObjectCache {
            inner: Arc::new(Inner {
                purpose: purpose.into(),
                backend: ArcSwap::from_pointee(Backend { cache }),
                stats: Counters::default(),
            }),
        }
    }

    /// The object cache `purpose` with no caching: every get misses.
    pub fn noop(purpose: impl Into<Arc<str>>) -> Self {
        Self::new(purpose, Arc::new(NoopCache))
    }

    /// The name of this object cache (`instance`, `organization`, ...).
    pub fn purpose(&self) -> &str {
        &self.inner.purpose
    }

    /// The name of the connector currently storing this cache.
    pub fn connector(&self) -> &'static str {
        self.inner.backend.load().cache.connector()
    }

    /// The cache currently behind this object cache.
    pub fn backend(&self) -> Arc<dyn Cache<I, V>> {
        Arc::clone(&self.inner.backend.load().cache)
    }

    /// Switches this object cache to another backend and returns the previous one. Readers
    /// are never blocked; operations already running finish on the previous backend.
    pub fn replace(&self, cache: Arc<dyn Cache<I, V>>) -> Arc<dyn Cache<I, V>> {
        let old = self.inner.backend.swap(Arc::new(Backend { cache }));
        tracing::info!(
            target: LOG_TARGET,
            purpose = %self.inner.purpose,
            from = old.cache.connector(),
            to = self.connector(),
            "object cache switched connector"
        );
        Arc::clone(&old.cache)
    }

    /// What this cache has answered so far.
    pub fn stats(&self) -> CacheStats {
        let s = &self.inner.stats;
        CacheStats {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
        }
    }

    /// The object reachable through `key` under `index`, or `None`. Never fails: a backend
    /// error is logged and counted and answered as a miss.
    pub async fn get(&self, index: I, key: &str) -> Option<Arc<V>> {
        let outcome = {
            let backend = self.inner.backend.load();
            match backend.cache.get_ready(index, key) {
                Some(outcome) => outcome,
                None => {
                    let backend = Guard::into_inner(backend);
                    backend.cache.get(index, key).await
                }
            }
        };
        let stats = &self.inner.stats;
        match outcome {
            Ok(Some(value)) => {
                stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            Ok(None) => {
                stats.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(error) => {
                stats.misses.fetch_add(1, Ordering::Relaxed);
                self.failed("get", index.name(), &error);
                None
            }
        }
    }

    /// Stores `value` under all its keys, invalidating older objects that shared one. Never
    /// fails: a backend error is logged and counted.
    pub async fn set(&self, value: impl Into<Arc<V>>) {
        let backend = self.inner.backend.load_full();
        if let Err(error) = backend.cache.set(value.into()).await {
            self.failed("set", "", &error);
        }
    }

    /// Makes the objects reachable through `keys` under `index` unreachable through every
    /// index. Fails only if the backend could not be told.
    pub async fn invalidate<K: AsRef<str> + Sync>(&self, index: I, keys: &[K]) -> Result<()> {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let backend = self.inner.backend.load_full();
        let outcome = backend.cache.invalidate(index, &keys).await;
        self.count("invalidate", index.name(), outcome)
    }

    /// Removes only these key mappings under `index`; the objects stay reachable through
    /// their other keys.
    pub async fn delete<K: AsRef<str> + Sync>(&self, index: I, keys: &[K]) -> Result<()> {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let backend = self.inner.backend.load_full();
        let outcome = backend.cache.delete(index, &keys).await;
        self.count("delete", index.name(), outcome)
    }

    /// Empties this object cache (and nothing else).
    pub async fn truncate(&self) -> Result<()> {
        let backend = self.inner.backend.load_full();
        let outcome = backend.cache.truncate().await;
        self.count("truncate", "", outcome)
    }

    fn count(&self, operation: &'static str, index: &str, outcome: Result<()>) -> Result<()> {
        if let Err(error) = &outcome {
            self.failed(operation, index, error);
        }
        outcome
    }

    fn failed(&self, operation: &'static str, index: &str, error: &crate::Error) {
        self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            target: LOG_TARGET,
            purpose = %self.inner.purpose,
            connector = self.connector(),
            operation,
            index,
            error = %error,
            temporary = error.is_temporary(),
            "cache operation failed"
        );
    }
}
