//! What an object cache reports to the `metrics` facade, read through a recording recorder
//! (its spans: `spans.rs`).

use std::sync::Arc;

use TestIndex::{Id as ById, Name, Unused};
use cache_core::observe::{
    ERRORS, GETS, INVALIDATIONS, LOAD_DURATION, LOADS, OPERATION_DURATION, SETS, STALE_ANSWERS,
};
use cache_core::testkit::metrics::{counter, histogram, install};
use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{Cache, CacheSettings, ObjectCache};
use cache_memory::{MemoryConfig, MemoryConnector};

fn object_cache(purpose: &str) -> ObjectCache<TestIndex, TestEntry> {
    let connector = MemoryConnector::new(MemoryConfig::enabled());
    let cache = connector.cache::<TestIndex, TestEntry>(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    ObjectCache::new(purpose, cache as Arc<dyn Cache<_, _>>)
}

#[tokio::test]
async fn an_object_cache_counts_what_it_answered_and_times_what_was_not_answered_at_once() {
    install();
    let purpose = unique_purpose("metrics");
    let p = purpose.as_str();
    let cache = object_cache(p);
    let labels = [("purpose", p), ("connector", "memory")];
    let with = |name: &'static str, value: &'static str| {
        let mut l = labels.to_vec();
        l.push((name, value));
        l
    };

    cache.set(TestEntry::new("1", &["one"])).await;
    assert!(cache.get(ById, "1").await.is_some());
    assert!(cache.get(Name, "one").await.is_some());
    assert!(cache.get(ById, "2").await.is_none());
    assert!(cache.get(Unused, "1").await.is_none(), "an error is a miss");
    cache.invalidate(ById, &["1"]).await.unwrap();
    cache.delete(Name, &["one"]).await.unwrap();
    cache.truncate().await.unwrap();

    assert_eq!(counter(GETS, &with("outcome", "hit")), 2);
    assert_eq!(counter(GETS, &with("outcome", "miss")), 1);
    assert_eq!(counter(GETS, &with("outcome", "error")), 1);
    assert_eq!(counter(SETS, &labels), 1);
    assert_eq!(counter(INVALIDATIONS, &with("operation", "invalidate")), 1);
    assert_eq!(counter(INVALIDATIONS, &with("operation", "delete")), 1);
    assert_eq!(counter(INVALIDATIONS, &with("operation", "truncate")), 1);
    let mut error = with("operation", "get");
    error.push(("kind", "unknown_index"));
    assert_eq!(counter(ERRORS, &error), 1);
    assert_eq!(counter(ERRORS, &labels), 1, "no other error");

    // Memory answers gets at once: they are counted, never timed (a clock read would cost
    // as much as the hit). Writes go through the async path and are timed.
    assert!(histogram(OPERATION_DURATION, &with("operation", "get")).is_empty());
    for op in ["set", "invalidate", "delete", "truncate"] {
        let took = histogram(OPERATION_DURATION, &with("operation", op));
        assert_eq!(took.len(), 1, "{op}");
        assert!(took[0] >= 0.0 && took[0] < 5.0, "{op} took {}s", took[0]);
    }
    assert_eq!(cache.stats().hits, 2, "the cache's own counts agree");
}

#[tokio::test]
async fn loads_are_counted_by_outcome_and_timed() {
    install();
    let purpose = unique_purpose("metrics-loads");
    let p = purpose.as_str();
    let cache = object_cache(p);
    let with =
        |value: &'static str| vec![("purpose", p), ("connector", "memory"), ("outcome", value)];

    let found = cache
        .get_or_load(ById, "1", || async {
            Ok::<_, String>(Some(TestEntry::new("1", &[])))
        })
        .await
        .unwrap();
    assert!(found.is_some());
    let absent = cache
        .get_or_load(ById, "2", || async { Ok::<_, String>(None) })
        .await
        .unwrap();
    assert!(absent.is_none());
    let failed = cache
        .get_or_load(ById, "3", || async {
            Err::<Option<TestEntry>, _>("down".to_owned())
        })
        .await;
    assert!(failed.is_err());

    assert_eq!(counter(LOADS, &with("loaded")), 1);
    assert_eq!(counter(LOADS, &with("absent")), 1);
    assert_eq!(counter(LOADS, &with("failed")), 1);
    assert_eq!(counter(STALE_ANSWERS, &[("purpose", p)]), 0);
    assert_eq!(
        histogram(LOAD_DURATION, &[("purpose", p), ("connector", "memory")]).len(),
        3
    );
}
