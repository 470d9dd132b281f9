//! Behaviour specific to the memory connector; the shared rules are in `conformance.rs`.

use std::sync::Arc;
use std::time::Duration;

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ManualClock, Prune};
use cache_memory::{MemoryCache, MemoryConfig, MemoryConnector};

fn cache(
    capacity: u64,
    settings: &CacheSettings,
) -> (Arc<ManualClock>, Arc<MemoryCache<TestIndex, TestEntry>>) {
    let clock = Arc::new(ManualClock::new());
    let connector = MemoryConnector::with_clock(
        MemoryConfig::enabled().with_capacity(capacity),
        clock.clone(),
    );
    (
        clock,
        connector.cache("memory-test", TestIndex::BUILT, settings),
    )
}

fn entry(i: usize) -> Arc<TestEntry> {
    Arc::new(TestEntry::new(&format!("id-{i}"), &[&format!("name-{i}")]))
}

#[tokio::test]
async fn holds_at_most_capacity_keys() {
    let (_, cache) = cache(100, &CacheSettings::default());
    for i in 0..1_000 {
        cache.set(entry(i)).await.unwrap();
    }
    assert!(
        cache.len() <= 100,
        "holds {} keys with capacity 100",
        cache.len()
    );
    let mut hits = 0;
    for i in 0..1_000 {
        if cache
            .get(TestIndex::Id, &format!("id-{i}"))
            .await
            .unwrap()
            .is_some()
        {
            hits += 1;
        }
    }
    assert!(hits > 0, "a bounded cache still keeps recent objects");
    assert!(hits <= 100, "{hits} objects reachable with capacity 100");
}

#[tokio::test]
async fn evicting_one_key_drops_the_whole_object() {
    let (_, cache) = cache(50, &CacheSettings::default());
    for i in 0..500 {
        cache.set(entry(i)).await.unwrap();
        // Every object is reachable through both keys or through none: eviction of one key
        // must never leave the object reachable through the other.
        for j in 0..=i {
            let by_id = cache.get(TestIndex::Id, &format!("id-{j}")).await.unwrap();
            let by_name = cache
                .get(TestIndex::Name, &format!("name-{j}"))
                .await
                .unwrap();
            if by_id.is_some() != by_name.is_some() {
                // The missing key may have been evicted with the object invalidated; then the
                // other key must miss too. A hit through one key only is the defect.
                panic!("object {j} reachable through one key only after set {i}");
            }
        }
    }
}

#[tokio::test]
async fn a_hit_hands_out_the_stored_value_without_copying() {
    let (_, cache) = cache(100, &CacheSettings::default());
    let value = entry(1);
    cache.set(Arc::clone(&value)).await.unwrap();
    let by_id = cache.get(TestIndex::Id, "id-1").await.unwrap().unwrap();
    let by_name = cache.get(TestIndex::Name, "name-1").await.unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&value, &by_id),
        "a hit must return the Arc that was set"
    );
    assert!(
        Arc::ptr_eq(&by_id, &by_name),
        "all keys share one stored object"
    );
}

#[tokio::test]
async fn prune_unlinks_dead_keys_and_keeps_live_ones() {
    let settings = CacheSettings {
        max_age: Duration::from_secs(10),
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    };
    let (clock, cache) = cache(100, &settings);
    cache.set(entry(1)).await.unwrap();
    cache.set(entry(2)).await.unwrap();
    cache.invalidate(TestIndex::Id, &["id-1"]).await.unwrap();
    clock.advance(Duration::from_secs(5));
    cache.set(entry(3)).await.unwrap();
    assert_eq!(cache.len(), 4, "entries 2 and 3, two keys each");
    clock.advance(Duration::from_secs(5));
    cache.prune().await.unwrap();
    assert_eq!(cache.len(), 2, "entry 2 expired: only entry 3's keys stay");
    assert!(
        cache
            .get(TestIndex::Name, "name-3")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_dead_key_is_unlinked_by_the_get_that_finds_it() {
    let settings = CacheSettings {
        max_age: Duration::from_secs(1),
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    };
    let (clock, cache) = cache(100, &settings);
    cache.set(entry(1)).await.unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(cache.get(TestIndex::Id, "id-1").await.unwrap().is_none());
    assert_eq!(
        cache.len(),
        1,
        "the expired id key is gone, the name key waits for prune"
    );
}

#[tokio::test]
async fn the_pruner_runs_the_memory_prune() {
    let settings = CacheSettings {
        max_age: Duration::from_millis(1),
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    };
    let (clock, cache) = cache(100, &settings);
    cache.set(entry(1)).await.unwrap();
    assert_eq!(cache.len(), 2, "an id and a name key");
    assert!(!cache.is_empty());
    clock.advance(Duration::from_millis(1));
    let prune = Arc::clone(&cache)
        .into_prune()
        .expect("memory caches prune");
    let pruner = cache_pruner::Pruner::start(
        "memory-test",
        "memory",
        prune,
        cache_core::AutoPrune::new(Duration::from_millis(20), Duration::from_secs(1)),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // `len`, not `is_empty`: this test is also what checks `is_empty` (asserted below).
    #[allow(clippy::len_zero)]
    while cache.len() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pruner.shutdown().await;
    assert_eq!(
        cache.len(),
        0,
        "the pruner removed the expired object's keys"
    );
    assert!(cache.is_empty());
}

#[tokio::test]
async fn eviction_frees_the_other_keys_of_the_evicted_object_at_once() {
    let (_, cache) = cache(50, &CacheSettings::default());
    for i in 0..500 {
        cache.set(entry(i)).await.unwrap();
        // Reading through the name makes name keys hotter than id keys, so eviction takes
        // an object's id key and leaves its name key behind unless the connector unlinks it.
        cache
            .get(TestIndex::Name, &format!("name-{i}"))
            .await
            .unwrap();
    }
    // Every key held belongs to a live object: dead keys of evicted objects are not kept.
    let held = cache.len();
    let mut live_keys = 0;
    for i in 0..500 {
        if cache
            .get(TestIndex::Id, &format!("id-{i}"))
            .await
            .unwrap()
            .is_some()
        {
            live_keys += 2;
        }
    }
    assert_eq!(
        held, live_keys,
        "the cache holds only keys of reachable objects"
    );
}

#[tokio::test]
async fn an_object_with_more_keys_than_capacity_is_not_cached_and_warned_once() {
    let (logs_guard, logs) = cache_core::testkit::logs::capture();
    let (_, cache) = cache(4, &CacheSettings::default());
    let small = Arc::new(TestEntry::new("a", &["x"]));
    cache.set(Arc::clone(&small)).await.unwrap();
    // Five keys with capacity 4; it shares "x" with the small object, which must go.
    let big = Arc::new(TestEntry::new("b", &["x", "y", "z", "w"]));
    for _ in 0..3 {
        cache.set(Arc::clone(&big)).await.unwrap();
    }
    assert!(cache.get(TestIndex::Id, "b").await.unwrap().is_none());
    assert!(
        cache.get(TestIndex::Id, "a").await.unwrap().is_none(),
        "the object the too-big one replaced is gone"
    );
    drop(logs_guard);
    let warnings = logs.lines_with(&["WARN", "more keys than the cache holds", "memory-test"]);
    assert_eq!(warnings.len(), 1, "one warning per cache: {}", logs.text());
    assert!(warnings[0].contains("keys=5") && warnings[0].contains("capacity=4"));
}

#[tokio::test]
async fn the_connector_is_named_memory_and_reports_its_capacity() {
    let (_, cache) = cache(7, &CacheSettings::default());
    assert_eq!(cache.connector(), "memory");
    assert_eq!(cache_memory::CONNECTOR, "memory");
    assert_eq!(cache.capacity(), 7);
    assert_eq!(cache.purpose(), "memory-test");
    assert_eq!(cache.indices(), TestIndex::BUILT);
}

#[tokio::test]
async fn an_object_with_exactly_capacity_keys_is_cached() {
    let (_, cache) = cache(4, &CacheSettings::default());
    let four = Arc::new(TestEntry::new("a", &["x", "y", "z"]));
    cache.set(Arc::clone(&four)).await.unwrap();
    assert_eq!(cache.get(TestIndex::Name, "z").await.unwrap(), Some(four));
    assert_eq!(cache.len(), 4);
}

#[tokio::test]
async fn hits_are_answered_without_awaiting_and_through_the_object_cache() {
    let (_, cache) = cache(10, &CacheSettings::default());
    let a = Arc::new(TestEntry::new("a", &["x"]));
    cache.set(Arc::clone(&a)).await.unwrap();
    assert_eq!(
        cache
            .get_ready(TestIndex::Name, "x")
            .expect("ready")
            .unwrap(),
        Some(Arc::clone(&a))
    );
    assert_eq!(
        cache.get_ready(TestIndex::Id, "b").expect("ready").unwrap(),
        None
    );
    let objects =
        cache_core::ObjectCache::new("memory-test", Arc::clone(&cache) as Arc<dyn Cache<_, _>>);
    assert_eq!(objects.get(TestIndex::Id, "a").await, Some(a));
    let shown = format!("{cache:?}");
    assert!(
        shown.contains("memory-test")
            && shown.contains("capacity: 10")
            && shown.contains("keys: 2"),
        "{shown}"
    );
}
