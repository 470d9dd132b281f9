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

/// A memory cache that answers `Unavailable` while `down`, counting the calls it received;
/// while `refusing`, it refuses for good (a permanent `Rejected` error) any invalidation or
/// delete naming a key that contains "poison", as a backend refuses data it cannot store.
struct Flaky {
    inner: Arc<dyn Cache<TestIndex, TestEntry>>,
    down: AtomicBool,
    refusing: AtomicBool,
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

    fn check_keys(&self, keys: &[&str]) -> Result<()> {
        self.check()?;
        if self.refusing.load(Ordering::Relaxed) && keys.iter().any(|k| k.contains("poison")) {
            Err(Error::rejected("flaky: this key can never be stored"))
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
        self.check_keys(keys)?;
        self.inner.invalidate(index, keys).await
    }
    async fn delete(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.check_keys(keys)?;
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
    setup_named("flaky", "orgs", limit)
}

/// A setup whose breaker and cache carry these names (in logs and metric labels).
fn setup_named(connector: &'static str, purpose: &str, limit: usize) -> Setup {
    let memory = MemoryConnector::new(MemoryConfig::enabled());
    let flaky = Arc::new(Flaky {
        inner: memory.cache("flaky", TestIndex::BUILT, &CacheSettings::default()),
        down: AtomicBool::new(false),
        refusing: AtomicBool::new(false),
        calls: AtomicU64::new(0),
    });
    let breaker = Arc::new(Breaker::new(
        connector,
        BreakerSettings {
            max_consecutive_failures: 2,
            timeout: Duration::from_secs(5),
            ..BreakerSettings::default()
        },
    ));
    let cache = BreakerCache::with_pending_limit(
        purpose,
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
async fn open_gets_miss_and_writes_are_kept_errors_without_calls() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.trip().await;
    let before = s.flaky.calls.load(Ordering::Relaxed);
    assert!(
        s.cache.get(Id, "1").await.unwrap().is_none(),
        "a miss, not an error"
    );
    let e = s.cache.set(entry("2", &["two"])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BreakerOpen, "a set is not stored: {e}");
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
    // The set's two keys (what they pointed at is outdated), the invalidation, the delete.
    assert_eq!(s.cache.pending_keys(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_set_refused_while_open_still_invalidates_what_it_replaces() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.cache.set(entry("3", &["three"])).await.unwrap();
    s.trip().await;
    // Object 2 takes the name "one" over: object 1 is outdated.
    let refused = s.cache.set(entry("2", &["one"])).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::BreakerOpen, "{refused}");
    s.recover().await;
    assert!(
        s.cache.get(Name, "one").await.unwrap().is_none(),
        "the object the refused set replaced is not served after the outage"
    );
    assert!(
        s.cache.get(Id, "1").await.unwrap().is_none(),
        "not through its other keys either"
    );
    assert!(
        s.cache.get(Id, "3").await.unwrap().is_some(),
        "only what the set replaced is gone, not the whole cache"
    );
    assert!(!s.cache.has_pending());
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
async fn the_decorator_reports_its_backend_s_connector_and_indices() {
    let s = setup(100);
    assert_eq!(s.cache.connector(), "flaky");
    assert_eq!(s.cache.indices(), TestIndex::BUILT);
    assert!(std::ptr::eq(s.cache.breaker().as_ref(), s.breaker.as_ref()));
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
    assert_eq!(
        s.breaker.counts().requests,
        0,
        "refused before it reaches the breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn the_get_that_delivers_the_kept_changes_is_answered_from_the_backend() {
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.cache.set(entry("2", &["two"])).await.unwrap();
    s.trip().await;
    assert!(s.cache.invalidate(Name, &["one"]).await.is_err());
    s.recover().await;
    // The first get after the outage delivers the kept invalidation, then answers.
    assert!(s.cache.get(Id, "2").await.unwrap().is_some());
    assert!(!s.cache.has_pending());
    assert!(s.cache.get(Id, "1").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_budget_holds_exactly_its_number_of_keys_and_says_when_it_overflows() {
    let (guard, logs) = cache_core::testkit::logs::capture();
    let s = setup(3);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.trip().await;
    assert!(s.cache.invalidate(Id, &["a", "b", "c"]).await.is_err());
    assert_eq!(s.cache.pending_keys(), 3, "3 keys fit a budget of 3");
    assert!(logs.lines_with(&["too many undelivered"]).is_empty());
    assert!(s.cache.invalidate(Id, &["d"]).await.is_err());
    assert_eq!(
        s.cache.pending_keys(),
        0,
        "the 4th turned them into a truncate"
    );
    drop(guard);
    assert_eq!(logs.lines_with(&["WARN", "too many undelivered"]).len(), 1);
    let shown = format!("{:?}", s.cache);
    assert!(
        shown.contains("orgs") && shown.contains("flaky") && shown.contains("Open"),
        "{shown}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_kept_invalidation_the_backend_refuses_for_good_becomes_a_truncate() {
    let (logs_guard, logs) = cache_core::testkit::logs::capture();
    let s = setup(100);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.cache.set(entry("2", &["two"])).await.unwrap();
    s.flaky.down.store(true, Ordering::Relaxed);
    assert!(s.cache.invalidate(Name, &["poison", "one"]).await.is_err());
    assert!(s.cache.has_pending());
    let failures = s.breaker.counts().failures;
    // Back, but refusing that key for good: the replay can never succeed.
    s.flaky.down.store(false, Ordering::Relaxed);
    s.flaky.refusing.store(true, Ordering::Relaxed);
    assert!(
        s.cache.get(Id, "1").await.unwrap().is_none(),
        "object 1 was invalidated: never served"
    );
    assert!(!s.cache.has_pending(), "the poison is not kept");
    assert_eq!(s.cache.pending_keys(), 0);
    assert!(
        s.cache.get(Id, "2").await.unwrap().is_none(),
        "the refused invalidation was replaced by a truncate"
    );
    // The cache works again: nothing is left to block it.
    s.cache.set(entry("3", &["three"])).await.unwrap();
    let mut hits = 0;
    for _ in 0..20 {
        hits += usize::from(s.cache.get(Id, "3").await.unwrap().is_some());
    }
    assert_eq!(hits, 20, "every get after the poison was dropped hits");
    assert_eq!(s.breaker.state(), BreakerState::Closed);
    assert_eq!(
        s.breaker.counts().failures,
        failures,
        "a refusal is not a failure"
    );
    drop(logs_guard);
    assert_eq!(
        logs.lines_with(&["ERROR", "refused", "truncated instead", "orgs"])
            .len(),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test(start_paused = true)]
async fn kept_invalidations_are_delivered_in_the_background_without_a_get() {
    let s = setup(100);
    let backend = Arc::clone(&s.flaky.inner);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.trip().await;
    assert!(s.cache.invalidate(Name, &["one"]).await.is_err());
    s.recover().await;
    // No call on the cache from here on: only the delivery task may act. It probes with
    // backoff, so within RETRY_MAX (plus the breaker's Timeout, already passed) it delivers.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !s.cache.has_pending() {
            break;
        }
    }
    assert!(!s.cache.has_pending(), "delivered without any get");
    assert_eq!(s.cache.pending_keys(), 0);
    assert!(
        backend.get(Id, "1").await.unwrap().is_none(),
        "the backend itself no longer holds the invalidated object"
    );
    assert_eq!(s.breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_delivery_task_keeps_probing_while_the_backend_stays_down() {
    let s = setup(100);
    let backend = Arc::clone(&s.flaky.inner);
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.flaky.down.store(true, Ordering::Relaxed);
    assert!(s.cache.invalidate(Id, &["1"]).await.is_err());
    let calls = s.flaky.calls.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let probes = s.flaky.calls.load(Ordering::Relaxed) - calls;
    // Backoff from RETRY_FIRST doubling to RETRY_MAX, one probe at a time, also while the
    // breaker is open: at most one per RETRY_MAX (a dozen a second), not a busy loop.
    let most = 30_000 / u64::try_from(cache_breaker::RETRY_MAX.as_millis()).unwrap() + 10;
    assert!((1..=most).contains(&probes), "{probes} probes in 30 s");
    assert!(s.cache.has_pending());
    s.flaky.down.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!s.cache.has_pending(), "delivered once the backend answers");
    assert!(backend.get(Name, "one").await.unwrap().is_none());
}

/// Metric handles are made with the breaker: the recorder goes first. The breaker's names are
/// this test's own, as the recorder is shared by the tests of a process.
#[tokio::test(start_paused = true)]
async fn the_breaker_reports_its_state_rejections_and_kept_changes() {
    use cache_core::observe::{
        BREAKER_DELIVERED_CHANGES, BREAKER_KEPT_CHANGES, BREAKER_KEPT_KEYS, BREAKER_REJECTED,
        BREAKER_STATE, BREAKER_TRANSITIONS,
    };
    use cache_core::testkit::metrics::{counter, gauge, install};
    install();
    let s = setup_named("metered", "metered-orgs", 100);
    let connector = [("connector", "metered")];
    // Per object cache, labelled with the connector storing it (the breaker's: per connector).
    let kept = [("connector", "flaky"), ("purpose", "metered-orgs")];
    assert_eq!(gauge(BREAKER_STATE, &connector), Some(0.0), "closed");
    s.cache.set(entry("1", &["one"])).await.unwrap();
    s.trip().await;
    assert_eq!(gauge(BREAKER_STATE, &connector), Some(2.0), "open");
    assert_eq!(
        counter(
            BREAKER_TRANSITIONS,
            &[("connector", "metered"), ("to", "open")]
        ),
        1
    );
    assert!(s.cache.get(Id, "1").await.unwrap().is_none());
    assert!(s.cache.invalidate(Name, &["one", "uno"]).await.is_err());
    assert_eq!(counter(BREAKER_REJECTED, &connector), 2);
    assert_eq!(counter(BREAKER_KEPT_CHANGES, &kept), 1);
    assert_eq!(gauge(BREAKER_KEPT_KEYS, &kept), Some(2.0));
    s.recover().await;
    assert!(s.cache.get(Id, "1").await.unwrap().is_none());
    assert_eq!(counter(BREAKER_DELIVERED_CHANGES, &kept), 1);
    assert_eq!(gauge(BREAKER_KEPT_KEYS, &kept), Some(0.0));
    assert_eq!(gauge(BREAKER_STATE, &connector), Some(0.0), "closed again");
    assert_eq!(
        counter(
            BREAKER_TRANSITIONS,
            &[("connector", "metered"), ("to", "half-open")]
        ),
        1
    );
    assert_eq!(
        counter(
            BREAKER_TRANSITIONS,
            &[("connector", "metered"), ("to", "closed")]
        ),
        1
    );
}
