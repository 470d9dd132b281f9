//! The near cache over an in-process channel (`LocalChannel`) and memory levels: the whole
//! conformance suite and the model test, then the consistency contract between "processes"
//! (hubs with memory levels of their own over one shared level), each channel state injected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_core::testkit::{Fixture, LocalChannel, TestCache, TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ManualClock, Result, async_trait};
use cache_memory::{MemoryCache, MemoryConfig, MemoryConnector};
use cache_near::{
    ANNOUNCE_LIMIT, ChannelState, HEARTBEAT, Hub, NearCache, RESUBSCRIBE_AFTER, RETRACT_WINDOW,
    SILENCE,
};

use TestIndex::{Id, Name};

/// Caches on one shared memory level and one channel, each with a memory level of its own.
struct NearFixture {
    connector: MemoryConnector,
    clock: Arc<ManualClock>,
    hub: Hub,
}

#[async_trait]
impl Fixture for NearFixture {
    async fn cache(
        &self,
        purpose: &str,
        indices: &[TestIndex],
        settings: &CacheSettings,
    ) -> TestCache {
        let shared: TestCache = self.connector.cache(purpose, indices, settings);
        let memory = self.connector.cache(purpose, indices, settings);
        wait_healthy(&self.hub).await;
        Arc::new(NearCache::new(
            purpose,
            memory,
            Some(shared),
            self.hub.clone(),
        ))
    }

    async fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    fn prunable(&self) -> bool {
        true
    }

    fn exact_time(&self) -> bool {
        true
    }
}

async fn fixture() -> Option<NearFixture> {
    let clock = Arc::new(ManualClock::new());
    let connector = MemoryConnector::with_clock(MemoryConfig::enabled(), clock.clone());
    Some(NearFixture {
        connector,
        clock,
        hub: Hub::new(Arc::new(LocalChannel::new())),
    })
}

cache_core::conformance_suite!(fixture);
cache_core::model_test!(fixture);

async fn wait_healthy(hub: &Hub) {
    // At least 5 s: a deadline against a hang, not a time bound.
    for _ in 0..2_500 {
        if hub.is_healthy() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the hub did not become healthy");
}

fn entry(id: &str, names: &[&str], revision: u64) -> Arc<TestEntry> {
    Arc::new(TestEntry::new(id, names).revision(revision))
}

fn memory(purpose: &str) -> Arc<MemoryCache<TestIndex, TestEntry>> {
    MemoryConnector::new(MemoryConfig::enabled()).cache(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    )
}

/// A shared level that counts its gets and can hold a get until released.
struct Shared {
    inner: Arc<MemoryCache<TestIndex, TestEntry>>,
    gets: AtomicU64,
    hold: AtomicBool,
    held: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            inner: memory("shared"),
            gets: AtomicU64::new(0),
            hold: AtomicBool::new(false),
            held: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        })
    }
}

#[async_trait]
impl Cache<TestIndex, TestEntry> for Shared {
    fn connector(&self) -> &'static str {
        "shared"
    }
    fn indices(&self) -> &[TestIndex] {
        self.inner.indices()
    }
    async fn get(&self, index: TestIndex, key: &str) -> Result<Option<Arc<TestEntry>>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.get(index, key).await;
        if self.hold.swap(false, Ordering::SeqCst) {
            let released = self.release.notified();
            self.held.notify_one();
            released.await;
        }
        found
    }
    async fn set(&self, value: Arc<TestEntry>) -> Result<()> {
        self.inner.set(value).await
    }
    async fn invalidate(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.inner.invalidate(index, keys).await
    }
    async fn delete(&self, index: TestIndex, keys: &[&str]) -> Result<()> {
        self.inner.delete(index, keys).await
    }
    async fn truncate(&self) -> Result<()> {
        self.inner.truncate().await
    }
}

/// Two processes' near caches of one object cache over one shared level and one channel.
struct Pair {
    channel: LocalChannel,
    shared: Arc<Shared>,
    a: Arc<NearCache<TestIndex, TestEntry>>,
    b: Arc<NearCache<TestIndex, TestEntry>>,
}

async fn pair() -> Pair {
    let channel = LocalChannel::new();
    let shared = Shared::new();
    let near = |hub: Hub| {
        Arc::new(NearCache::new(
            "orgs",
            memory("orgs"),
            Some(Arc::clone(&shared) as Arc<dyn Cache<_, _>>),
            hub,
        ))
    };
    let (hub_a, hub_b) = (
        Hub::new(Arc::new(channel.clone())),
        Hub::new(Arc::new(channel.clone())),
    );
    wait_healthy(&hub_a).await;
    wait_healthy(&hub_b).await;
    Pair {
        channel,
        a: near(hub_a),
        b: near(hub_b),
        shared,
    }
}

/// Whether `cache` holds a live object under id `id` (read without going through a near
/// cache, so nothing is filled on the way).
fn holds(cache: &MemoryCache<TestIndex, TestEntry>, id: &str) -> bool {
    cache
        .get_ready(Id, id)
        .expect("memory answers at once")
        .expect("memory never fails")
        .is_some()
}

impl Pair {
    /// A sets object 1; B reads it, so B's memory level holds it.
    async fn b_has_read_object_1(&self) {
        self.a.set(entry("1", &["one"], 1)).await.unwrap();
        assert!(self.b.get(Id, "1").await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_change_in_one_process_reaches_the_memory_level_of_the_others() {
    let p = pair().await;
    p.a.set(entry("1", &["one", "uno"], 1)).await.unwrap();
    // B reads it once from the shared level, then from memory.
    assert_eq!(p.b.get(Name, "uno").await.unwrap().unwrap().revision, 1);
    let shared_gets = p.shared.gets.load(Ordering::SeqCst);
    assert!(p.b.get(Id, "1").await.unwrap().is_some());
    assert_eq!(
        p.shared.gets.load(Ordering::SeqCst),
        shared_gets,
        "a memory hit"
    );
    assert_eq!(p.b.stats().memory_hits, 1);
    // A invalidates through another index: B's memory drops the object through every key.
    p.a.invalidate(Name, &["one"]).await.unwrap();
    assert!(!holds(p.b.memory(), "1"));
    assert!(p.b.get(Name, "uno").await.unwrap().is_none());
    // A set that replaces an object (sharing one key) drops the old one everywhere.
    p.a.set(entry("2", &["two", "dos"], 1)).await.unwrap();
    assert!(p.b.get(Name, "dos").await.unwrap().is_some());
    p.a.set(entry("3", &["dos"], 2)).await.unwrap();
    assert!(
        p.b.get(Id, "2").await.unwrap().is_none(),
        "the object the set replaced is gone from B's memory through its other keys"
    );
    assert_eq!(p.b.get(Name, "dos").await.unwrap().unwrap().id, "3");
    // Delete and truncate travel too.
    p.a.delete(Name, &["dos"]).await.unwrap();
    assert!(p.b.get(Name, "dos").await.unwrap().is_none());
    assert!(p.b.get(Id, "3").await.unwrap().is_some());
    p.a.truncate().await.unwrap();
    assert!(p.b.memory().is_empty());
    let (a, b) = (p.a.stats(), p.b.stats());
    assert!(a.sent >= 5 && b.received >= 5, "{a:?} {b:?}");
    assert_eq!(b.channel, ChannelState::Healthy);
}

#[tokio::test]
async fn a_fill_never_installs_a_value_an_invalidation_overtook() {
    let p = pair().await;
    p.a.set(entry("1", &["one"], 1)).await.unwrap();
    // B's read of the shared level returns revision 1 and is held before B fills memory...
    p.shared.hold.store(true, Ordering::SeqCst);
    let b = Arc::clone(&p.b);
    let read = tokio::spawn(async move { b.get(Id, "1").await });
    p.shared.held.notified().await;
    // ...while A invalidates it and B hears of it.
    p.a.invalidate(Id, &["1"]).await.unwrap();
    p.shared.release.notify_one();
    let returned = read.await.unwrap().unwrap();
    assert_eq!(
        returned.map(|e| e.revision),
        Some(1),
        "the read itself returns what it read"
    );
    assert!(
        p.b.memory()
            .get_ready(Name, "one")
            .unwrap()
            .unwrap()
            .is_none(),
        "but the overtaken value was not installed"
    );
    assert!(p.b.get(Name, "one").await.unwrap().is_none());
}

#[tokio::test]
async fn a_lost_subscription_clears_memory_and_reads_through_until_healthy_again() {
    let p = pair().await;
    p.b_has_read_object_1().await;
    let (logs_guard, logs) = cache_core::testkit::logs::capture();
    p.channel.lose_all();
    assert_eq!(p.b.hub().state(), ChannelState::Unhealthy);
    assert!(
        p.b.memory().is_empty(),
        "memory cleared when the channel went"
    );
    let gets = p.shared.gets.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert!(p.b.get(Id, "1").await.unwrap().is_some());
    }
    assert_eq!(
        p.shared.gets.load(Ordering::SeqCst),
        gets + 3,
        "every get read through"
    );
    assert!(p.b.memory().is_empty(), "and nothing was filled");
    // While B is deaf, A's invalidation cannot reach it: B must not serve from memory anyway.
    p.a.invalidate(Id, &["1"]).await.unwrap();
    assert!(p.b.get(Id, "1").await.unwrap().is_none());
    p.channel.reconnect_all();
    wait_healthy(p.b.hub()).await;
    p.a.set(entry("1", &["one"], 2)).await.unwrap();
    assert_eq!(p.b.get(Id, "1").await.unwrap().unwrap().revision, 2);
    assert!(holds(p.b.memory(), "1"), "filled again");
    drop(logs_guard);
    assert!(
        !logs
            .lines_with(&["WARN", "unhealthy", "dropped the subscription"])
            .is_empty(),
        "{}",
        logs.text()
    );
    assert!(!logs.lines_with(&["WARN", "channel healthy"]).is_empty());
    assert!(p.b.hub().stats().outages >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_subscription_turns_unhealthy_after_the_silence_bound() {
    let p = pair().await;
    p.b_has_read_object_1().await;
    p.channel.set_deaf(true);
    tokio::time::sleep(SILENCE + 2 * HEARTBEAT).await;
    assert_eq!(p.b.hub().state(), ChannelState::Unhealthy);
    assert!(p.b.memory().is_empty());
    p.channel.set_deaf(false);
    tokio::time::sleep(2 * HEARTBEAT).await;
    assert_eq!(
        p.b.hub().state(),
        ChannelState::Healthy,
        "healthy again once its heartbeat comes back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_subscription_that_lags_behind_is_unhealthy() {
    let p = pair().await;
    p.b_has_read_object_1().await;
    // Every message, heartbeats included, now arrives 3 s after it was sent.
    p.channel.set_lag(3 * SILENCE);
    tokio::time::sleep(6 * SILENCE).await;
    assert_eq!(
        p.b.hub().state(),
        ChannelState::Unhealthy,
        "heartbeats still come back, but 3 s late: invalidations would be as late"
    );
    assert_eq!(
        p.b.hub().stats().outages,
        1,
        "unhealthy throughout: a late heartbeat never counts as a sign of health"
    );
    assert!(p.b.memory().is_empty());
    p.channel.set_lag(Duration::ZERO);
    tokio::time::sleep(SILENCE).await;
    assert_eq!(p.b.hub().state(), ChannelState::Healthy, "caught up");
}

#[tokio::test(start_paused = true)]
async fn a_subscription_that_died_without_a_word_is_replaced() {
    let p = pair().await;
    // The subscriptions hear nothing more, and no event says so (a half-open connection).
    p.channel.set_deaf(true);
    tokio::time::sleep(RESUBSCRIBE_AFTER + SILENCE).await;
    assert_eq!(
        p.b.hub().state(),
        ChannelState::Healthy,
        "subscribed again on a new connection"
    );
    assert!(p.b.hub().stats().outages >= 1, "unhealthy in between");
    p.b_has_read_object_1().await;
    p.a.invalidate(Id, &["1"]).await.unwrap();
    assert!(!holds(p.b.memory(), "1"), "the new subscription delivers");
}

#[tokio::test(start_paused = true)]
async fn a_publish_that_hangs_does_not_delay_the_silence_check() {
    let p = pair().await;
    p.b_has_read_object_1().await;
    // Heartbeats no longer go out: each publish hangs, as on a dead connection.
    p.channel.set_stuck(true);
    tokio::time::sleep(SILENCE + 2 * HEARTBEAT).await;
    assert_eq!(p.b.hub().state(), ChannelState::Unhealthy);
    assert!(p.b.memory().is_empty());
    p.channel.set_stuck(false);
    tokio::time::sleep(RESUBSCRIBE_AFTER + SILENCE).await;
    assert_eq!(
        p.b.hub().state(),
        ChannelState::Healthy,
        "back once publishing works"
    );
}

#[tokio::test(start_paused = true)]
async fn a_set_that_lands_after_an_invalidation_it_has_not_heard_of_is_taken_back() {
    let p = pair().await;
    p.a.set(entry("1", &["one"], 1)).await.unwrap();
    // Messages now take 300 ms (still a healthy channel).
    p.channel.set_lag(Duration::from_millis(300));
    p.a.invalidate(Id, &["1"]).await.unwrap();
    // Revision 1 is outdated now; b, which has not heard of it yet, sets it again (as a load
    // that read the source before the change would).
    p.b.set(entry("1", &["one"], 1)).await.unwrap();
    assert!(holds(&p.shared.inner, "1"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !holds(&p.shared.inner, "1"),
        "b took its set back once a's invalidation arrived"
    );
    assert!(p.a.get(Name, "one").await.unwrap().is_none());
    assert!(p.b.get(Id, "1").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn sets_in_two_processes_do_not_take_each_other_back() {
    let p = pair().await;
    p.a.set(entry("1", &["one"], 1)).await.unwrap();
    p.b.set(entry("1", &["one"], 2)).await.unwrap();
    tokio::time::sleep(RETRACT_WINDOW).await;
    let kept = p.shared.inner.get_ready(Id, "1").unwrap().unwrap();
    assert_eq!(
        kept.map(|e| e.revision),
        Some(2),
        "a set's announcement is not an invalidation to take a set back for"
    );
}

#[tokio::test(start_paused = true)]
async fn an_announcement_that_hangs_holds_the_caller_at_most_the_limit() {
    let p = pair().await;
    p.b_has_read_object_1().await;
    let heard = p.b.hub().stats().received;
    p.channel.set_stuck(true);
    let started = tokio::time::Instant::now();
    p.a.invalidate(Id, &["1"]).await.unwrap();
    assert!(
        started.elapsed() <= ANNOUNCE_LIMIT + HEARTBEAT,
        "the call waited {:?} for a publish that hangs",
        started.elapsed()
    );
    p.channel.set_stuck(false);
    tokio::time::sleep(RESUBSCRIBE_AFTER + SILENCE).await;
    assert!(
        p.b.hub().stats().received > heard,
        "the invalidation was sent again once publishing works (b also dropped its memory \
         while the channel was stuck, so the memory alone proves nothing)"
    );
    assert!(!holds(p.b.memory(), "1"));
}

#[tokio::test(start_paused = true)]
async fn an_announcement_that_fails_is_sent_again_and_never_fails_the_call() {
    let p = pair().await;
    p.b_has_read_object_1().await;
    p.channel.set_down(true);
    p.a.invalidate(Id, &["1"])
        .await
        .expect("the shared change worked: the call succeeds");
    assert!(p.a.hub().stats().send_failures >= 1);
    p.channel.set_down(false);
    tokio::time::sleep(2 * HEARTBEAT).await;
    assert!(
        !holds(p.b.memory(), "1"),
        "delivered with a later heartbeat"
    );
}

#[tokio::test]
async fn the_memory_connector_alone_stays_consistent_over_a_channel() {
    let channel = LocalChannel::new();
    let (hub_a, hub_b) = (
        Hub::new(Arc::new(channel.clone())),
        Hub::new(Arc::new(channel.clone())),
    );
    wait_healthy(&hub_a).await;
    wait_healthy(&hub_b).await;
    let a = NearCache::new("instance", memory("instance"), None, hub_a);
    let b = NearCache::new("instance", memory("instance"), None, hub_b);
    assert_eq!(a.connector(), "memory");
    // Each process loads the instance itself (no shared level)...
    a.set(entry("1", &["acme.example"], 1)).await.unwrap();
    b.set(entry("1", &["acme.example"], 1)).await.unwrap();
    assert!(b.get(Name, "acme.example").await.unwrap().is_some());
    // ...and an invalidation in one reaches the other at once, not after MaxAge.
    a.invalidate(Id, &["1"]).await.unwrap();
    assert!(b.get(Name, "acme.example").await.unwrap().is_none());
    assert!(a.get(Id, "1").await.unwrap().is_none());
    // Unhealthy, a memory-only cache has nothing to read through to: every get misses.
    b.set(entry("2", &["x"], 1)).await.unwrap();
    channel.lose_all();
    assert!(b.get(Id, "2").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_change_a_breaker_delivers_later_is_announced_then() {
    use cache_breaker::{Breaker, BreakerCache};
    let channel = LocalChannel::new();
    let backend = Arc::new(Flaky::new());
    let breaker = Arc::new(Breaker::new(
        "flaky",
        cache_core::BreakerSettings::default(),
    ));
    let guarded = Arc::new(BreakerCache::new(
        "orgs",
        Arc::clone(&backend) as Arc<dyn Cache<_, _>>,
        breaker,
    ));
    let (hub_a, hub_b) = (
        Hub::new(Arc::new(channel.clone())),
        Hub::new(Arc::new(channel.clone())),
    );
    wait_healthy(&hub_a).await;
    wait_healthy(&hub_b).await;
    let a = NearCache::new(
        "orgs",
        memory("orgs"),
        Some(Arc::clone(&guarded) as Arc<dyn Cache<_, _>>),
        hub_a,
    );
    assert!(guarded.on_delivered(a.delivered_listener()));
    let b = NearCache::new(
        "orgs",
        memory("orgs"),
        Some(Arc::clone(&backend) as Arc<dyn Cache<_, _>>),
        hub_b,
    );
    a.set(entry("1", &["one"], 1)).await.unwrap();
    assert!(b.get(Id, "1").await.unwrap().is_some());
    backend.down.store(true, Ordering::SeqCst);
    assert!(
        a.invalidate(Id, &["1"]).await.is_err(),
        "kept by the breaker"
    );
    assert!(
        !holds(b.memory(), "1"),
        "announced at once all the same: it may have taken effect, and dropping is safe"
    );
    backend.down.store(false, Ordering::SeqCst);
    // Before the breaker delivers, b reads the object again (the backend still has it).
    assert!(b.get(Id, "1").await.unwrap().is_some());
    assert!(holds(b.memory(), "1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!guarded.has_pending(), "delivered");
    assert!(!holds(b.memory(), "1"), "announced once delivered");
    assert!(b.get(Name, "one").await.unwrap().is_none());
}

/// A memory cache that answers `Unavailable` while `down`.
struct Flaky {
    inner: Arc<MemoryCache<TestIndex, TestEntry>>,
    down: AtomicBool,
}

impl Flaky {
    fn new() -> Self {
        Flaky {
            inner: memory("flaky"),
            down: AtomicBool::new(false),
        }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(cache_core::Error::unavailable("flaky: down"))
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

#[tokio::test]
async fn a_filled_object_expires_by_max_age_counted_from_its_set_not_from_the_fill() {
    let clock = Arc::new(ManualClock::new());
    let settings = CacheSettings {
        max_age: Duration::from_secs(10),
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    };
    let connector = MemoryConnector::with_clock(MemoryConfig::enabled(), clock.clone());
    let shared: TestCache = connector.cache("orgs", TestIndex::BUILT, &settings);
    let hub = Hub::new(Arc::new(LocalChannel::new()));
    wait_healthy(&hub).await;
    let near = NearCache::new(
        "orgs",
        connector.cache("orgs", TestIndex::BUILT, &settings),
        Some(Arc::clone(&shared)),
        hub,
    );
    shared.set(entry("1", &["one"], 1)).await.unwrap();
    clock.advance(Duration::from_secs(6));
    let hit = near
        .get_entry(Id, "1")
        .await
        .unwrap()
        .expect("read through");
    assert_eq!(hit.age, Some(Duration::from_secs(6)));
    assert!(holds(near.memory(), "1"), "filled");
    clock.advance(Duration::from_secs(3));
    assert!(near.get(Name, "one").await.unwrap().is_some(), "9 s old");
    assert_eq!(near.stats().memory_hits, 1);
    clock.advance(Duration::from_secs(1));
    assert!(
        !holds(near.memory(), "1"),
        "10 s after its set, though filled 4 s ago"
    );
    assert!(near.get(Id, "1").await.unwrap().is_none());
}

#[tokio::test]
async fn a_load_that_another_process_s_change_overtook_is_not_cached() {
    let channel = LocalChannel::new();
    let (hub_a, hub_b) = (
        Hub::new(Arc::new(channel.clone())),
        Hub::new(Arc::new(channel.clone())),
    );
    wait_healthy(&hub_a).await;
    wait_healthy(&hub_b).await;
    // The memory connector alone with a channel: every process loads into its own memory.
    let a = cache_core::ObjectCache::new(
        "instance",
        Arc::new(NearCache::new("instance", memory("instance"), None, hub_a)),
    );
    let b = cache_core::ObjectCache::new(
        "instance",
        Arc::new(NearCache::new("instance", memory("instance"), None, hub_b)),
    );
    // B loads revision 1 from the source of truth; meanwhile A changes it there and
    // invalidates, and B hears of it before its load is cached.
    let other = a.clone();
    let loaded = b
        .get_or_load(Name, "acme.example", move || async move {
            other.invalidate(Id, &["1"]).await.unwrap();
            Ok::<_, cache_core::Error>(Some(TestEntry::new("1", &["acme.example"]).revision(1)))
        })
        .await
        .unwrap();
    assert_eq!(
        loaded.map(|e| e.revision),
        Some(1),
        "the caller gets its load"
    );
    assert!(
        b.get(Id, "1").await.is_none(),
        "but a load another process's change overtook is not cached"
    );
    // A load no change overtook is cached as usual.
    b.get_or_load(Id, "2", || async {
        Ok::<_, cache_core::Error>(Some(TestEntry::new("2", &["other.example"])))
    })
    .await
    .unwrap();
    assert!(b.get(Name, "other.example").await.is_some());
}
