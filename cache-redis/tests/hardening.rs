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

/// The key of `key` under `index` in the cache `purpose`, release `version` (the layout of
/// `keys.md`).
fn index_key(purpose: &str, version: &str, index: &str, key: &str) -> String {
    format!(
        "oc3{{{purpose}}}:{}:{}:{index}:{key}",
        version_tag(version),
        index.len()
    )
}

/// A release's tag in key names: 12 hex digits of the SHA-256 of its version.
fn version_tag(version: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(version.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn garbage_anywhere_in_a_stored_object_is_a_miss_and_is_removed() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let purpose = cache_core::testkit::unique_purpose("garbage");
    let cache: Arc<dyn Cache<TestIndex, TestEntry>> =
        connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
    let raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let exists = |key: String| {
        let mut raw = raw.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut raw)
                .await
                .unwrap()
        }
    };
    let id = |key: &str| index_key(&purpose, "v1", "id", key);
    // Removed: gone, or a tombstone (a change noted for the leases' sake).
    let no_garbage = |key: String| {
        let mut raw = raw.clone();
        async move {
            let value: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut raw)
                .await
                .unwrap_or(Some("another type".to_owned()));
            value.is_none_or(|v| v.starts_with("OC3|T|"))
        }
    };
    let run = |cmd: &mut redis::Cmd| {
        let cmd = cmd.clone();
        let mut raw = raw.clone();
        async move { cmd.query_async::<()>(&mut raw).await.unwrap() }
    };
    const ID: &str = "0123456789abcdef";
    const DIGEST: &str = "fedcba9876543210";
    let forged = |created: &str, list: &str, payload: &str| {
        format!("OC3|I|{ID}|{created}|1764460800000|{DIGEST}|{list}{payload}")
    };

    // Keys holding garbage of every shape: a miss, never an error, and removed.
    let garbage: Vec<(&str, redis::Cmd)> = vec![
        (
            "plain",
            redis::cmd("SET").arg(id("plain")).arg("garbage").clone(),
        ),
        (
            "hash",
            redis::cmd("HSET").arg(id("hash")).arg("f").arg("v").clone(),
        ),
        ("list", redis::cmd("RPUSH").arg(id("list")).arg("x").clone()),
        (
            "old-layout",
            redis::cmd("SET")
                .arg(id("old-layout"))
                .arg("OC2|0123456789abcdef0123456789abcdef|1764460800000|")
                .clone(),
        ),
        (
            "bad-time",
            redis::cmd("SET")
                .arg(id("bad-time"))
                .arg(forged("17644608000x0", "0|", "{}"))
                .clone(),
        ),
        (
            "bad-list",
            redis::cmd("SET")
                .arg(id("bad-list"))
                .arg(forged("1764460800000", "3|2:ab", "{}"))
                .clone(),
        ),
        (
            "bad-payload",
            redis::cmd("SET")
                .arg(id("bad-payload"))
                .arg(forged("1764460800000", "0|", "{not json"))
                .clone(),
        ),
        (
            "short",
            redis::cmd("SET")
                .arg(id("short"))
                .arg(&forged("1764460800000", "0|", "")[..40])
                .clone(),
        ),
        (
            "bad-pointer",
            redis::cmd("SET")
                .arg(id("bad-pointer"))
                .arg("OC3|P|not-hex")
                .clone(),
        ),
    ];
    for (key, mut cmd) in garbage {
        run(&mut cmd).await;
        let found = cache
            .get(Id, key)
            .await
            .unwrap_or_else(|e| panic!("get of garbage {key:?} is an error: {e}"));
        assert!(found.is_none(), "{key}");
        assert!(no_garbage(id(key)).await, "garbage {key:?} was not removed");
    }

    // A pointer to a body that is not there: a miss, never an error.
    run(redis::cmd("SET")
        .arg(id("dangling"))
        .arg(format!("OC3|P|{ID}")))
    .await;
    assert!(cache.get(Id, "dangling").await.unwrap().is_none());

    // Another release's object is under another key: never read, and a miss here.
    let other = RedisConnector::new(RedisConfig::with_url(&url), "v2")
        .unwrap()
        .cache::<TestIndex, TestEntry>(&purpose, TestIndex::BUILT, &CacheSettings::default());
    other.set(entry("other-release", &[])).await.unwrap();
    assert!(cache.get(Id, "other-release").await.unwrap().is_none());
    assert_eq!(
        exists(index_key(&purpose, "v2", "id", "other-release")).await,
        1
    );

    // An object whose copy was garbled behind the cache's back: invalidate and a set of a
    // new version through its other keys still work, and every key then holds the new one.
    let v1 = entry("r", &["r1", "r2"]);
    cache.set(Arc::clone(&v1)).await.unwrap();
    run(redis::cmd("SET")
        .arg(index_key(&purpose, "v1", "name", "r1"))
        .arg("not an object"))
    .await;
    let v2 = Arc::new(TestEntry::new("r", &["r1", "r2"]).revision(2));
    cache
        .set(Arc::clone(&v2))
        .await
        .expect("a set over a garbled copy");
    for (index, key) in [(Id, "r"), (Name, "r1"), (Name, "r2")] {
        assert_eq!(cache.get(index, key).await.unwrap(), Some(Arc::clone(&v2)));
    }
    // A copy listing keys of other objects (forged): only this object's copies go.
    let other = entry("o", &["o1"]);
    cache.set(Arc::clone(&other)).await.unwrap();
    run(redis::cmd("SET").arg(id("forged")).arg(forged(
        "1764460800000",
        &format!("1|{}:{}", "4:name:o1".len(), "4:name:o1"),
        "{}",
    )))
    .await;
    cache
        .invalidate(Id, &["forged"])
        .await
        .expect("invalidate a forged copy");
    assert_eq!(
        cache.get(Name, "o1").await.unwrap(),
        Some(other),
        "another object named in a forged list is left alone"
    );
    cache.invalidate(Name, &["r2"]).await.expect("invalidate");
    for (index, key) in [(Id, "r"), (Name, "r1"), (Name, "r2")] {
        assert!(cache.get(index, key).await.unwrap().is_none(), "{key}");
    }
    // Invalidating keys that hold garbage works too, and removes them.
    run(redis::cmd("HSET").arg(id("h2")).arg("f").arg("v")).await;
    cache
        .invalidate(Id, &["h2", "r", "unknown"])
        .await
        .expect("invalidate garbage");
    assert!(no_garbage(id("h2")).await);
}
