//! A cache that counts the calls reaching the one it wraps: on Redis and PostgreSQL every
//! call is one round trip to the server (one command, script or statement), so the count is
//! the round trips an operation made.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_core::{Cache, Entry, Filled, Hit, Index, Lease, LeaseToken, Result, async_trait};

/// Forwards every call to `inner` and counts those that reach it.
pub(crate) struct Counted<I, V> {
    inner: Arc<dyn Cache<I, V>>,
    calls: Arc<AtomicU64>,
}

impl<I: Index, V: Entry<I>> Counted<I, V> {
    /// `inner`, its calls counted in `calls`.
    pub(crate) fn new(inner: Arc<dyn Cache<I, V>>, calls: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Counted { inner, calls })
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl<I: Index, V: Entry<I>> Cache<I, V> for Counted<I, V> {
    fn connector(&self) -> &'static str {
        self.inner.connector()
    }

    fn indices(&self) -> &[I] {
        self.inner.indices()
    }

    fn get_ready(&self, index: I, key: &str) -> Option<Result<Option<Arc<V>>>> {
        let ready = self.inner.get_ready(index, key);
        if ready.is_some() {
            self.count();
        }
        ready
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        self.count();
        self.inner.get(index, key).await
    }

    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.count();
        self.inner.get_entry(index, key).await
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.count();
        self.inner.get_stale(index, key).await
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        self.count();
        self.inner.set(value).await
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.count();
        self.inner.invalidate(index, keys).await
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.count();
        self.inner.delete(index, keys).await
    }

    async fn truncate(&self) -> Result<()> {
        self.count();
        self.inner.truncate().await
    }

    async fn lease(&self, index: I, key: &str) -> Result<Lease<V>> {
        let lease = self.inner.lease(index, key).await;
        // `Lease::None`: the cache keeps no leases (turned off), and answers without a call.
        if !matches!(lease, Ok(Lease::None)) {
            self.count();
        }
        lease
    }

    async fn fill(&self, value: Arc<V>, lease: &LeaseToken) -> Result<Filled> {
        self.count();
        self.inner.fill(value, lease).await
    }

    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        self.count();
        self.inner.release(lease).await
    }

    async fn touch(&self, value: &V) -> Result<()> {
        self.count();
        self.inner.touch(value).await
    }

    fn change_token(&self) -> u64 {
        self.inner.change_token()
    }

    fn changed_since(&self, token: u64, value: &V) -> bool {
        self.inner.changed_since(token, value)
    }

    fn announced_on(&self) -> Option<u64> {
        self.inner.announced_on()
    }
}
