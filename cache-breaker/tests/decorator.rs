//! The decorator around a backend that fails on command (paused time): what the caller sees
//! while the breaker is open, and that invalidations made meanwhile are delivered — or the
//! cache truncated — before anything is served again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_breaker::{Breaker, BreakerCache, BreakerState};
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{BreakerSettings, Cache, CacheSettings, Error, ErrorKind, Result, async_trait};
use cache_memory::{MemoryConfig, MemoryConnector};

use TestIndex::{Id, Name};

/// A memory cache that answers `Unavailable` while `down`, counting the calls it received.
struct Flaky {
    inner: Arc<dyn Cache<TestIndex, TestEntry>>,
    down: AtomicBool,
    calls: AtomicU64,
}

impl Flaky {
    fn check(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.down.load(Ordering::Relaxed) {
            Err(Error::unavailable("flaky: down"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Cache<TestIndex, TestEntry> for Flaky {
    fn connector(&self) -> &'static str {
        "flaky"
    }
    fn indices(&self) -> &[TestIndex] {
        self.inner.indices()
    }
    async fn get(&self, index: TestIndex, key: &str) -> Result<Option<Arc<TestEntry>>> {
        self.check()?;
        self.inner.get(index, key).await
    }
    async fn set(&self, value: Arc<TestEntry>) -> Result<()> {
        self.check()?;
        self.inner.set(value).await
    }
    async fn invalidate(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.check()?;
        self.inner.invalidate(index, keys).await
    }
    async fn delete(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.check()?;
        self.inner.delete(index, keys).await
    }
    async fn truncate(&self) -> Result<()> {
        self.check()?;
        self.inner.truncate().await
    }
}

struct Setup {
    flaky: Arc<Flaky>,
    cache: BreakerCache<TestIndex, TestEntry>,
    breaker: Arc<Breaker>,
}

fn setup(limit: usize) -> Setup {
    let memory = MemoryConnector::new(MemoryConfig::enabled());
    let flaky = Arc::new(Flaky {
        inner: memory.cache("flaky", TestIndex::BUILT, &CacheSettings::default()),
        down: AtomicBool::new(false),
        calls: AtomicU64::new(0),
    });
    let breaker = Arc::new(Breaker::new(
        "flaky",
        BreakerSettings {
            max_consecutive_failures: 2,
            timeout: Duration::from_secs(5),
            ..BreakerSettings::default()
        },
    ));
    let cache = BreakerCache::with_pending_limit(
        "orgs",
        flaky.clone() as Arc<dyn Cache<_, _>>,
        Arc::clone(&breaker),
        limit,
    );
    Setup {
        flaky,
        cache,
        breaker,
    }
}

fn entry(id: &str, names: &[&str]) -> Arc<TestEntry> {
    Arc::new(TestEntry::new(id, names))
}

impl Setup {
    async fn trip(&self) {
        self.flaky.down.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            assert!(
                self.cache.get(Id, "x").await.is_err(),
                "closed: errors pass"
            );
        }
        assert_eq!(self.breaker.state(), BreakerState::Open);
    }

    async fn recover(&self) {
        self.flaky.down.store(false, Ordering::Relaxed);
        tokio::time::advance(self.breaker.settings().timeout).await;
    }
}

#[tokio::test(start_paused = true)]
async fn open_gets_miss_sets_skip_and_changes_are_errors_without_calls() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.trip().await;
    let before = s.flaky.calls.load(Ordering::Relaxed);
    assert!(
        s.cache.get(Id, "1").await.unwrap().is_none(),
        "a miss, not an error"
    );
    s.cache.set(entry("2", &["two"])).await.unwrap();
    let e = s.cache.invalidate(Id, &["1"]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BreakerOpen);
    assert!(e.to_string().contains("circuit breaker is open"), "{e}");
    assert_eq!(
        s.cache.delete(Name, &["one"]).await.unwrap_err().kind(),
        ErrorKind::BreakerOpen
    );
    assert_eq!(
        s.flaky.calls.load(Ordering::Relaxed),
        before,
        "the backend was not called while open"
    );
    assert_eq!(s.cache.pending_keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidations_made_while_open_are_delivered_before_the_next_hit() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.cache.set(entry("2", &["two"])).await.unwrap();
    s.trip().await;
    assert!(s.cache.invalidate(Name, &["one"]).await.is_err());
    s.recover().await;
    assert!(
        s.cache.get(Id, "1").await.unwrap().is_none(),
        "object 1 was invalidated during the outage: not served stale"
    );
    assert!(!s.cache.has_pending());
    assert!(s.cache.get(Id, "2").await.unwrap().is_some(), "others stay");
    assert_eq!(s.breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_invalidation_while_closed_is_kept_too() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.flaky.down.store(true, Ordering::Relaxed);
    let e = s.cache.invalidate(Id, &["1"]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(s.breaker.state(), BreakerState::Closed, "one failure");
    s.flaky.down.store(false, Ordering::Relaxed);
    assert!(
        s.cache.get(Name, "one").await.unwrap().is_none(),
        "delivered first"
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_budget_the_cache_is_truncated_on_recovery() {
    let s = setup(3);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.cache.set(entry("2", &["two"])).await.unwrap();
    s.trip().await;
    for k in ["a", "b", "c", "d"] {
        assert!(s.cache.invalidate(Id, &[k]).await.is_err());
    }
    assert_eq!(s.cache.pending_keys(), 0, "replaced by one truncate");
    s.recover().await;
    assert!(s.cache.get(Id, "2").await.unwrap().is_none(), "truncated");
    assert!(s.cache.get(Id, "1").await.unwrap().is_none());
    assert!(!s.cache.has_pending());
}

#[tokio::test(start_paused = true)]
async fn while_the_backend_stays_down_nothing_is_served_and_nothing_is_lost() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.trip().await;
    assert!(s.cache.invalidate(Id, &["1"]).await.is_err());
    // Timeout passes but the backend is still down: the trial (the delivery) fails.
    tokio::time::advance(s.breaker.settings().timeout).await;
    assert!(s.cache.get(Id, "1").await.unwrap().is_none());
    assert_eq!(s.breaker.state(), BreakerState::Open);
    assert!(s.cache.has_pending(), "kept for the next attempt");
    s.recover().await;
    assert!(s.cache.get(Id, "1").await.unwrap().is_none());
    assert!(!s.cache.has_pending());
}

#[tokio::test(start_paused = true)]
async fn unknown_indices_are_errors_that_are_not_kept() {
    let s = setup(100);
    let e = s
        .cache
        .invalidate(TestIndex::Unused, &["1"])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownIndex);
    assert!(!s.cache.has_pending());
    assert_eq!(s.breaker.counts().failures, 0);
}
