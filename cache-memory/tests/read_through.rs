//! `ObjectCache::get_or_load` over the memory connector: one load per key at a time, a dropped
//! caller, a failing load, stale-if-error while the source is down, and refresh-ahead — on the
//! manual clock wherever time matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ManualClock, ObjectCache};
use cache_memory::{MemoryConfig, MemoryConnector};

use TestIndex::{Id, Name};

fn object_cache(settings: &CacheSettings) -> (Arc<ManualClock>, ObjectCache<TestIndex, TestEntry>) {
    let clock = Arc::new(ManualClock::new());
    let connector = MemoryConnector::with_clock(MemoryConfig::enabled(), clock.clone());
    let cache = connector.cache::<TestIndex, TestEntry>("users", TestIndex::BUILT, settings);
    (
        clock,
        ObjectCache::new("users", cache as Arc<dyn Cache<_, _>>)
            .with_read_through(settings.read_through()),
    )
}

/// One load of the source of truth.
type Load = std::pin::Pin<Box<dyn Future<Output = Result<Option<TestEntry>, String>> + Send>>;

/// A source of truth that counts its loads, can be held, and can be down.
#[derive(Default)]
struct Source {
    loads: AtomicU64,
    revision: AtomicU64,
    down: AtomicBool,
    gate: tokio::sync::Notify,
    held: AtomicBool,
}

impl Source {
    fn loader(self: &Arc<Self>, id: &str) -> impl FnOnce() -> Load + Send + 'static {
        let (source, id) = (Arc::clone(self), id.to_owned());
        move || {
            Box::pin(async move {
                source.loads.fetch_add(1, Ordering::SeqCst);
                if source.held.load(Ordering::SeqCst) {
                    source.gate.notified().await;
                }
                if source.down.load(Ordering::SeqCst) {
                    return Err("the database is down".to_owned());
                }
                let revision = source.revision.load(Ordering::SeqCst);
                let name = format!("name-{id}");
                Ok(Some(TestEntry::new(&id, &[&name]).revision(revision)))
            })
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_of_one_key_run_one_load() {
    let (_, users) = object_cache(&CacheSettings::default());
    let source = Arc::new(Source::default());
    source.held.store(true, Ordering::SeqCst);
    let callers: Vec<_> = (0..1_000)
        .map(|_| {
            let (users, load) = (users.clone(), source.loader("7"));
            tokio::spawn(async move { users.get_or_load(Id, "7", load).await })
        })
        .collect();
    // Let every caller reach the flight, then let the one load finish.
    while users.stats().misses < 1_000 {
        tokio::task::yield_now().await;
    }
    source.held.store(false, Ordering::SeqCst);
    source.gate.notify_waiters();
    for caller in callers {
        let found = caller.await.unwrap().unwrap();
        assert_eq!(found.map(|u| u.id.clone()).as_deref(), Some("7"));
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 1, "exactly one load");
    assert_eq!(users.stats().loads, 1);
    assert!(
        users.get(Name, "name-7").await.is_some(),
        "and it was cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_dropped_mid_load_neither_stops_it_nor_strands_the_others() {
    let (_, users) = object_cache(&CacheSettings::default());
    let source = Arc::new(Source::default());
    source.held.store(true, Ordering::SeqCst);
    let first = {
        let (users, load) = (users.clone(), source.loader("7"));
        tokio::spawn(async move { users.get_or_load(Id, "7", load).await })
    };
    while source.loads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let second = {
        let (users, load) = (users.clone(), source.loader("7"));
        tokio::spawn(async move { users.get_or_load(Id, "7", load).await })
    };
    while users.stats().misses < 2 {
        tokio::task::yield_now().await;
    }
    // The caller whose miss started the load gives up.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    source.held.store(false, Ordering::SeqCst);
    source.gate.notify_waiters();
    let found = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the other caller is not left waiting")
        .unwrap()
        .unwrap();
    assert!(found.is_some());
    assert_eq!(
        source.loads.load(Ordering::SeqCst),
        1,
        "the load ran once, to its end"
    );
    assert!(
        users.get(Id, "7").await.is_some(),
        "and its result was cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_reaches_its_waiters_and_is_not_cached() {
    let (_, users) = object_cache(&CacheSettings::default());
    let source = Arc::new(Source::default());
    source.down.store(true, Ordering::SeqCst);
    source.held.store(true, Ordering::SeqCst);
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (users, load) = (users.clone(), source.loader("7"));
            tokio::spawn(async move { users.get_or_load(Id, "7", load).await })
        })
        .collect();
    while users.stats().misses < 50 {
        tokio::task::yield_now().await;
    }
    source.held.store(false, Ordering::SeqCst);
    source.gate.notify_waiters();
    for caller in callers {
        let error = caller.await.unwrap().unwrap_err();
        assert_eq!(*error, "the database is down");
    }
    assert_eq!(source.loads.load(Ordering::SeqCst), 1);
    source.down.store(false, Ordering::SeqCst);
    let found = users
        .get_or_load(Id, "7", source.loader("7"))
        .await
        .unwrap();
    assert!(
        found.is_some(),
        "the error was not cached: the next call loads again"
    );
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn while_the_source_is_down_an_expired_copy_answers_but_never_a_plain_get() {
    let settings = CacheSettings {
        max_age: Duration::from_secs(10),
        last_usage: Duration::ZERO,
        max_stale: Duration::from_secs(60),
        ..CacheSettings::default()
    };
    let (clock, users) = object_cache(&settings);
    let source = Arc::new(Source::default());
    let (logs_guard, logs) = cache_core::testkit::logs::capture();
    assert!(
        users
            .get_or_load(Id, "7", source.loader("7"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        users
            .get_or_load(Id, "8", source.loader("8"))
            .await
            .unwrap()
            .is_some()
    );
    // The object expires; then the source goes down for a while.
    clock.advance(Duration::from_secs(15));
    source.down.store(true, Ordering::SeqCst);
    assert!(
        users.get(Id, "7").await.is_none(),
        "a plain get never returns it"
    );
    for _ in 0..3 {
        let answered = users
            .get_or_load(Id, "7", source.loader("7"))
            .await
            .expect("answered from the expired copy");
        assert_eq!(answered.map(|u| u.id.clone()).as_deref(), Some("7"));
    }
    assert_eq!(users.stats().stale_answers, 3);
    // An invalidated object is never served stale.
    users.invalidate(Id, &["8"]).await.unwrap();
    let error = users
        .get_or_load(Id, "8", source.loader("8"))
        .await
        .unwrap_err();
    assert_eq!(*error, "the database is down");
    // Past MaxAge + MaxStale there is nothing left to fall back on.
    clock.advance(Duration::from_secs(60));
    assert!(
        users
            .get_or_load(Id, "7", source.loader("7"))
            .await
            .is_err()
    );
    // The source is back: a fresh load.
    source.down.store(false, Ordering::SeqCst);
    assert!(
        users
            .get_or_load(Id, "7", source.loader("7"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(users.get(Id, "7").await.is_some());
    drop(logs_guard);
    assert_eq!(
        logs.lines_with(&["WARN", "stale-if-error", "users", "the database is down"])
            .len(),
        3,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_hot_object_is_reloaded_ahead_of_max_age_and_never_misses() {
    let settings = CacheSettings {
        max_age: Duration::from_secs(10),
        last_usage: Duration::ZERO,
        refresh_ahead: 0.8,
        ..CacheSettings::default()
    };
    let (clock, users) = object_cache(&settings);
    let source = Arc::new(Source::default());
    users
        .get_or_load(Id, "7", source.loader("7"))
        .await
        .unwrap();
    source.revision.store(1, Ordering::SeqCst);
    clock.advance(Duration::from_secs(7));
    let early = users
        .get_or_load(Id, "7", source.loader("7"))
        .await
        .unwrap();
    assert_eq!(early.unwrap().revision, 0, "7 s: a plain hit");
    assert_eq!(users.stats().refreshes, 0);
    clock.advance(Duration::from_secs(1));
    let late = users
        .get_or_load(Id, "7", source.loader("7"))
        .await
        .unwrap();
    assert_eq!(late.unwrap().revision, 0, "8 s: the cached object, at once");
    assert_eq!(users.stats().refreshes, 1, "and a reload in the background");
    for _ in 0..100 {
        if users.get(Id, "7").await.is_some_and(|u| u.revision == 1) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(users.get(Id, "7").await.unwrap().revision, 1, "refreshed");
    // 12 s after the first load (MaxAge 10 s), the refreshed object is 4 s old: a hit.
    clock.advance(Duration::from_secs(4));
    let misses = users.stats().misses;
    assert!(
        users
            .get_or_load(Id, "7", source.loader("7"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(users.stats().misses, misses, "a hot object never missed");
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
}

/// An object loaded 9 s ago (MaxAge 10 s, RefreshAhead 0.8) whose refresh-ahead, started by a
/// hit, is held mid-load by its source.
async fn a_refresh_held_mid_load() -> (ObjectCache<TestIndex, TestEntry>, Arc<Source>) {
    let settings = CacheSettings {
        max_age: Duration::from_secs(10),
        last_usage: Duration::ZERO,
        refresh_ahead: 0.8,
        ..CacheSettings::default()
    };
    let (clock, users) = object_cache(&settings);
    let source = Arc::new(Source::default());
    users
        .get_or_load(Id, "7", source.loader("7"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9));
    source.held.store(true, Ordering::SeqCst);
    users
        .get_or_load(Id, "7", source.loader("7"))
        .await
        .unwrap();
    while source.loads.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    (users, source)
}

#[tokio::test]
async fn a_hot_object_is_refreshed_once_at_a_time_whatever_changes_meanwhile() {
    // A refresh that takes a while: the hit that started it, then a change of another key
    // (a new generation for later misses), then more hits of the object still due.
    let (users, source) = a_refresh_held_mid_load().await;
    users.invalidate(Id, &["8"]).await.unwrap();
    for _ in 0..3 {
        let hit = users
            .get_or_load(Id, "7", source.loader("7"))
            .await
            .unwrap();
        assert_eq!(hit.unwrap().revision, 0, "the cached object, at once");
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        (users.stats().refreshes, source.loads.load(Ordering::SeqCst)),
        (1, 2),
        "one refresh runs at a time"
    );
    source.held.store(false, Ordering::SeqCst);
    source.gate.notify_waiters();
}

#[tokio::test]
async fn a_refresh_that_races_with_an_invalidation_does_not_resurrect_the_object() {
    // The refresh's load reads revision 0, and the object changes and is invalidated before
    // the refresh lands.
    let (users, source) = a_refresh_held_mid_load().await;
    users.invalidate(Id, &["7"]).await.unwrap();
    source.held.store(false, Ordering::SeqCst);
    source.gate.notify_waiters();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        users.get(Id, "7").await.is_none(),
        "the refresh that raced with the invalidation was not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_through_begun_after_an_invalidation_returned_never_gets_the_older_object() {
    let (_, users) = object_cache(&CacheSettings::default());
    let revision = Arc::new(AtomicU64::new(1));
    let (started, gate) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    // A load that reads the source, then is slow to hand over what it read.
    let slow = {
        let (revision, started, gate) = (revision.clone(), started.clone(), gate.clone());
        move || async move {
            let read = revision.load(Ordering::SeqCst);
            started.notify_one();
            gate.notified().await;
            Ok::<_, String>(Some(TestEntry::new("7", &[]).revision(read)))
        }
    };
    let first = {
        let users = users.clone();
        tokio::spawn(async move { users.get_or_load(Id, "7", slow).await })
    };
    started.notified().await;
    revision.store(2, Ordering::SeqCst);
    users.invalidate(Id, &["7"]).await.unwrap();
    // Begun after the invalidation returned: it must not join the load begun before it.
    let fresh = {
        let revision = revision.clone();
        move || async move {
            Ok::<_, String>(Some(
                TestEntry::new("7", &[]).revision(revision.load(Ordering::SeqCst)),
            ))
        }
    };
    let second = {
        let users = users.clone();
        tokio::spawn(async move { users.get_or_load(Id, "7", fresh).await })
    };
    let got = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("it does not wait for the load begun before the invalidation")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.revision, 2);
    gate.notify_one();
    let older = first.await.unwrap().unwrap().unwrap();
    assert_eq!(
        older.revision, 1,
        "begun before the invalidation: it may see it"
    );
    assert_eq!(
        users.get(Id, "7").await.map(|u| u.revision),
        Some(2),
        "the older load was not cached over the newer one"
    );
}

/// The memory connector behind a remote-like face whose next set can be held at the backend,
/// logging when sets land.
struct HeldSet {
    inner: Arc<dyn Cache<TestIndex, TestEntry>>,
    hold: AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
    log: std::sync::Mutex<Vec<&'static str>>,
}

#[cache_core::async_trait]
impl Cache<TestIndex, TestEntry> for HeldSet {
    fn connector(&self) -> &'static str {
        "held"
    }
    fn indices(&self) -> &[TestIndex] {
        self.inner.indices()
    }
    async fn get(&self, index: TestIndex, key: &str) -> cache_core::Result<Option<Arc<TestEntry>>> {
        self.inner.get(index, key).await
    }
    async fn set(&self, value: Arc<TestEntry>) -> cache_core::Result<()> {
        if self.hold.swap(false, Ordering::SeqCst) {
            let released = self.release.notified();
            self.entered.notify_one();
            released.await;
        }
        self.inner.set(value).await?;
        self.log.lock().unwrap().push("set landed");
        Ok(())
    }
    async fn invalidate(&self, index: TestIndex, keys: &[&str]) -> cache_core::Result<()> {
        self.inner.invalidate(index, keys).await
    }
    async fn delete(&self, index: TestIndex, keys: &[&str]) -> cache_core::Result<()> {
        self.inner.delete(index, keys).await
    }
    async fn truncate(&self) -> cache_core::Result<()> {
        self.inner.truncate().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_object_never_lands_after_an_invalidation_that_returned() {
    let memory = MemoryConnector::new(MemoryConfig::enabled()).cache::<TestIndex, TestEntry>(
        "users",
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let held = Arc::new(HeldSet {
        inner: memory,
        hold: AtomicBool::new(true),
        entered: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
        log: std::sync::Mutex::new(Vec::new()),
    });
    let users = ObjectCache::new("users", held.clone() as Arc<dyn Cache<_, _>>);
    let load = {
        let users = users.clone();
        tokio::spawn(async move {
            users
                .get_or_load(Id, "7", || async {
                    Ok::<_, String>(Some(TestEntry::new("7", &["seven"])))
                })
                .await
        })
    };
    // The load passed its checks and its set is on the way to the backend when the object is
    // invalidated.
    held.entered.notified().await;
    let invalidation = {
        let (users, held) = (users.clone(), held.clone());
        tokio::spawn(async move {
            users.invalidate(Name, &["seven"]).await.unwrap();
            held.log.lock().unwrap().push("invalidate returned");
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.release.notify_one();
    invalidation.await.unwrap();
    load.await.unwrap().unwrap();
    assert_eq!(
        *held.log.lock().unwrap(),
        ["set landed", "invalidate returned"],
        "the invalidation waited for the set on its way, so it removed what the set wrote"
    );
    assert!(users.get(Id, "7").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_panics_reaches_its_caller_and_never_poisons_the_key() {
    let (_, cache) = object_cache(&CacheSettings::default());
    let source = Arc::new(Source::default());
    // The first caller's load panics once released; a second caller joins its flight before.
    let release = Arc::new(tokio::sync::Notify::new());
    let first = {
        let (cache, release) = (cache.clone(), Arc::clone(&release));
        tokio::spawn(async move {
            cache
                .get_or_load(Id, "1", || async move {
                    release.notified().await;
                    if true {
                        panic!("the loader failed in a way nobody expected");
                    }
                    Ok::<Option<TestEntry>, String>(None)
                })
                .await
        })
    };
    // Each caller has missed (and so reached its flight) before the next step.
    let missed = |n| {
        let cache = cache.clone();
        async move {
            while cache.stats().misses < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    missed(1).await;
    let second = {
        let (cache, load) = (cache.clone(), source.loader("1"));
        tokio::spawn(async move { cache.get_or_load(Id, "1", load).await })
    };
    missed(2).await;
    assert_eq!(
        source.loads.load(Ordering::SeqCst),
        0,
        "the second caller joined the first's flight instead of loading"
    );
    release.notify_one();
    let panicked = first
        .await
        .expect_err("the panic reaches the caller whose load it was");
    assert!(panicked.is_panic());
    let joined = second.await.unwrap().unwrap();
    assert_eq!(
        joined.map(|e| e.id.clone()).as_deref(),
        Some("1"),
        "a caller that joined the panicked flight runs its own load"
    );
    assert_eq!(source.loads.load(Ordering::SeqCst), 1);
    // The key is not poisoned: the next miss loads (here: a hit of what the second set).
    cache.invalidate(Id, &["1"]).await.unwrap();
    let again = cache
        .get_or_load(Id, "1", source.loader("1"))
        .await
        .unwrap();
    assert!(
        again.is_some(),
        "loaded again after the panic, not answered absent"
    );
    assert_eq!(source.loads.load(Ordering::SeqCst), 2);
}
