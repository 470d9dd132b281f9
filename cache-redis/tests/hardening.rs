//! What an adversarial user or operator does to a Redis cache, on throwaway `redis-server`s of
//! the tests' own: connections killed under the pool, an evicting memory policy, and garbage
//! written behind the cache's back. None of it may fail a caller or leave a stale object.

use std::sync::Arc;
use std::time::Duration;

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "common/throwaway.rs"]
mod throwaway;

use TestIndex::{Id, Name};
use throwaway::Server;

fn server(extra: &[&str]) -> Option<Server> {
    let server = Server::start_with(None, None, extra);
    if server.is_none() {
        if std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() == Ok("1") {
            panic!("redis-server is not installed; `cargo xtask test` installs it");
        }
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
    }
    server
}

async fn admin(server: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap()
}

fn entry(id: &str, names: &[&str]) -> Arc<TestEntry> {
    Arc::new(TestEntry::new(id, names))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pool_connections_are_retried_on_a_fresh_one_and_never_fail_a_call() {
    let Some(server) = server(&[]) else { return };
    let config = RedisConfig {
        pool_size: 4,
        ..RedisConfig::with_url(server.url())
    };
    let connector = RedisConnector::new(config, "v1").unwrap();
    let cache: Arc<dyn Cache<TestIndex, TestEntry>> =
        connector.cache("killed", TestIndex::BUILT, &CacheSettings::default());
    cache.set(entry("1", &["one"])).await.unwrap();
    // Open the pool's connections.
    let gets: Vec<_> = (0..64)
        .map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get(Id, "1").await.unwrap() })
        })
        .collect();
    for get in gets {
        assert!(get.await.unwrap().is_some());
    }
    // What a restart, a failover or a proxy's idle timeout does to the pool.
    let mut admin = admin(&server).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "{killed} connections killed");
    for round in 0..8 {
        cache
            .invalidate(Name, &["nothing"])
            .await
            .unwrap_or_else(|e| panic!("invalidate {round} after CLIENT KILL: {e}"));
        let found = cache
            .get(Id, "1")
            .await
            .unwrap_or_else(|e| panic!("get {round} after CLIENT KILL: {e}"));
        assert!(found.is_some(), "get {round}");
        cache
            .set(entry(&format!("r{round}"), &[]))
            .await
            .unwrap_or_else(|e| panic!("set {round} after CLIENT KILL: {e}"));
    }
}

#[tokio::test]
async fn an_evicting_memory_policy_is_warned_about_once() {
    for (policy, warned) in [
        ("allkeys-lru", true),
        ("volatile-ttl", true),
        ("noeviction", false),
    ] {
        let Some(server) = server(&["--maxmemory", "64mb", "--maxmemory-policy", policy]) else {
            return;
        };
        let (guard, logs) = cache_core::testkit::logs::capture();
        let connector = RedisConnector::new(RedisConfig::with_url(server.url()), "v1").unwrap();
        let cache = connector.cache::<TestIndex, TestEntry>(
            "evicting",
            TestIndex::BUILT,
            &CacheSettings::default(),
        );
        for i in 0..5 {
            cache.set(entry(&i.to_string(), &[])).await.unwrap();
        }
        drop(guard);
        let warnings = logs.lines_with(&["WARN", "maxmemory-policy", policy]);
        assert_eq!(
            warnings.len(),
            usize::from(warned),
            "{policy}: {}",
            logs.text()
        );
    }
    // CONFIG refused (as managed services do): quiet, and the cache works.
    let Some(server) = server(&[
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
        "--rename-command",
        "CONFIG",
        "",
    ]) else {
        return;
    };
    let (guard, logs) = cache_core::testkit::logs::capture();
    let connector = RedisConnector::new(RedisConfig::with_url(server.url()), "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        "quiet",
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache.set(entry("1", &[])).await.unwrap();
    assert!(cache.get(Id, "1").await.unwrap().is_some());
    drop(guard);
    assert!(
        logs.lines_with(&["WARN", "maxmemory"]).is_empty(),
        "{}",
        logs.text()
    );
}
