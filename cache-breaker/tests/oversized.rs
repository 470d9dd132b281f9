//! Objects past a connector's `MaxObjectSize` are the request's own fault: their sets fail as
//! `Rejected` before anything reaches the server, never count toward the circuit breaker
//! however many there are, and the cache goes on serving every other object (real servers:
//! `CACHE_TEST_REDIS_URL`, `CACHE_TEST_POSTGRES_URL`).

use std::sync::Arc;

use cache_breaker::{Breaker, BreakerCache, BreakerState};
use cache_core::testkit::{TestCache, TestEntry, TestIndex, unique_purpose};
use cache_core::{BreakerSettings, Cache, CacheSettings, ErrorKind};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};

use TestIndex::{Id, Name};

/// 4 KiB: the limit both tests configure.
const LIMIT: u64 = 4 << 10;

async fn check(cache: TestCache, connector: &'static str) {
    let breaker = Arc::new(Breaker::new(
        connector,
        BreakerSettings {
            max_consecutive_failures: 1,
            min_requests: 1,
            ..BreakerSettings::default()
        },
    ));
    let cache = BreakerCache::new("orgs", cache, Arc::clone(&breaker));
    let small = Arc::new(TestEntry::new("small", &["s"]));
    cache.set(Arc::clone(&small)).await.unwrap();
    // An object with many keys, each short, stays within the limit: stored.
    let names: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    cache
        .set(Arc::new(TestEntry::new("many", &names)))
        .await
        .expect("an object within the limit is stored");
    let huge = "x".repeat(LIMIT as usize);
    for i in 0..20 {
        let error = cache
            .set(Arc::new(TestEntry::new(
                &format!("big{i}"),
                &[huge.as_str()],
            )))
            .await
            .expect_err("an object past MaxObjectSize is refused");
        assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
        assert!(!error.is_temporary(), "{error}");
        assert!(error.to_string().contains("MaxObjectSize"), "{error}");
    }
    assert_eq!(breaker.state(), BreakerState::Closed, "{connector}");
    assert_eq!(breaker.counts().failures, 0, "{:?}", breaker.counts());
    assert_eq!(cache.get(Name, "s").await.unwrap(), Some(small));
    assert!(cache.get(Id, "many").await.unwrap().is_some());
    assert!(cache.get(Id, "big0").await.unwrap().is_none());
}

#[tokio::test]
async fn oversized_objects_on_redis_are_rejected_and_never_open_the_breaker() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
    let config = RedisConfig {
        max_object_size: LIMIT,
        ..RedisConfig::with_url(url)
    };
    let connector = RedisConnector::new(config, "v1").unwrap();
    let cache = connector.cache(
        &unique_purpose("oversized"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    check(cache, "redis").await;
}

#[tokio::test]
async fn oversized_objects_on_postgres_are_rejected_and_never_open_the_breaker() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL") else {
        return;
    };
    let config = PostgresConfig {
        max_object_size: LIMIT,
        ..PostgresConfig::with_url(url)
    };
    let connector = PostgresConnector::new(&config, "v1").unwrap();
    connector.setup().await.unwrap();
    let cache = connector.cache(
        &unique_purpose("oversized"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    check(cache, "postgres").await;
}
