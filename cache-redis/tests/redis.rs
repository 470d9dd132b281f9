//! Redis-specific behaviour on a real server (`CACHE_TEST_REDIS_URL`): TTLs on every key,
//! nothing left after expiry, truncate's reach, NOSCRIPT, and versions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{Cache, CacheSettings};
use cache_redis::{RedisConfig, RedisConnector};
use redis::AsyncCommands;

fn url() -> Option<String> {
    cache_core::testkit::server_url("CACHE_TEST_REDIS_URL")
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&admin())
        .await
        .unwrap()
}

/// Every key of the cache `purpose`.
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, purpose: &str) -> Vec<String> {
    let pattern = format!("oc3{{{purpose}}}:*");
    let mut found = Vec::new();
    let mut iter: redis::AsyncIter<'_, String> = conn.scan_match(pattern).await.unwrap();
    while let Some(key) = iter.next_item().await {
        found.push(key.unwrap());
    }
    found
}

fn entry(id: &str, names: &[&str]) -> Arc<TestEntry> {
    Arc::new(TestEntry::new(id, names))
}

#[tokio::test]
async fn every_key_has_a_ttl_and_nothing_outlives_expiry() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let purpose = unique_purpose("ttl");
    let settings = CacheSettings {
        max_age: Duration::from_millis(400),
        last_usage: Duration::from_millis(300),
        ..CacheSettings::default()
    };
    let cache = connector.cache::<TestIndex, TestEntry>(&purpose, TestIndex::BUILT, &settings);
    for i in 0..20 {
        let id = format!("o{i}");
        cache
            .set(entry(&id, &["a", &format!("n{i}")]))
            .await
            .unwrap();
        cache.get(TestIndex::Name, &format!("n{i}")).await.unwrap();
    }
    let mut conn = raw(&url).await;
    let keys = keys_of(&mut conn, &purpose).await;
    assert!(!keys.is_empty());
    for key in &keys {
        let ttl: i64 = conn.pttl(key).await.unwrap();
        // -2: expired since the scan found it (a slow, loaded server); -1 would be no TTL.
        assert!(
            ttl == -2 || (ttl > 0 && ttl <= 400),
            "{key} has PTTL {ttl}; every key must expire"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        keys_of(&mut conn, &purpose).await,
        Vec::<String>::new(),
        "all keys expired"
    );
}

#[tokio::test]
async fn truncate_leaves_foreign_keys_and_other_purposes() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let settings = CacheSettings::default();
    let mine = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("trunc"),
        TestIndex::BUILT,
        &settings,
    );
    let other = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("trunc"),
        TestIndex::BUILT,
        &settings,
    );
    let mut conn = raw(&url).await;
    let foreign = unique_purpose("other:thing");
    let _: () = conn.set(&foreign, 1).await.unwrap();
    for i in 0..1_200 {
        mine.set(entry(&format!("o{i}"), &[])).await.unwrap();
    }
    other.set(entry("o1", &["x"])).await.unwrap();
    mine.truncate().await.unwrap();
    assert!(mine.get(TestIndex::Id, "o7").await.unwrap().is_none());
    assert!(other.get(TestIndex::Name, "x").await.unwrap().is_some());
    let kept: Option<i64> = conn.get(&foreign).await.unwrap();
    assert_eq!(kept, Some(1), "a key outside the cache survives truncate");
    let _: () = conn.del(&foreign).await.unwrap();
}

#[tokio::test]
async fn script_flush_between_operations_is_not_a_failure() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("noscript"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let mut conn = raw(&url).await;
    for round in 0..3 {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        cache
            .set(entry("a", &["x"]))
            .await
            .expect("set after SCRIPT FLUSH");
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            cache
                .get(TestIndex::Name, "x")
                .await
                .expect("get after SCRIPT FLUSH")
                .is_some(),
            "round {round}"
        );
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        cache
            .invalidate(TestIndex::Id, &["a"])
            .await
            .expect("invalidate after SCRIPT FLUSH");
    }
}

#[tokio::test]
async fn versions_never_read_each_other_but_invalidation_reaches_both() {
    let Some(url) = url() else { return };
    let purpose = unique_purpose("versions");
    let settings = CacheSettings::default();
    let old = RedisConnector::new(RedisConfig::with_url(&url), "v1")
        .unwrap()
        .cache::<TestIndex, TestEntry>(&purpose, TestIndex::BUILT, &settings);
    let new = RedisConnector::new(RedisConfig::with_url(&url), "v2")
        .unwrap()
        .cache::<TestIndex, TestEntry>(&purpose, TestIndex::BUILT, &settings);
    old.set(entry("a", &["x"])).await.unwrap();
    assert!(
        new.get(TestIndex::Id, "a").await.unwrap().is_none(),
        "v2 never decodes v1's object"
    );
    assert!(old.get(TestIndex::Id, "a").await.unwrap().is_some());
    new.invalidate(TestIndex::Name, &["x"]).await.unwrap();
    assert!(
        old.get(TestIndex::Id, "a").await.unwrap().is_none(),
        "v2's invalidation reaches v1's object"
    );
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_and_does_not_fail_startup() {
    let config = RedisConfig {
        dial_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        ..RedisConfig::with_url("redis://127.0.0.1:1/")
    };
    // The longest a get may wait for a connection (PoolTimeout, here ReadTimeout + 1 s): the
    // bound is generous for a loaded machine (5x, and at least 2 s beyond). What is checked is
    // that the get gives up instead of hanging; no benchmark times a call to an unreachable
    // server (the figure is printed).
    let configured = config.pool_wait();
    let bound = (configured * 5).max(configured + Duration::from_secs(2));
    let connector = RedisConnector::new(config, "v1").expect("startup does not connect");
    let cache = connector.cache::<TestIndex, TestEntry>(
        "down",
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let started = std::time::Instant::now();
    let err = cache.get(TestIndex::Id, "a").await.unwrap_err();
    let took = started.elapsed();
    eprintln!("a get of an unreachable server failed after {took:?}: {err}");
    assert!(err.is_temporary(), "{err}");
    assert!(
        took < bound,
        "took {took:?} (configured at most {configured:?})"
    );
    assert!(cache.set(entry("a", &[])).await.is_err());
}

/// Other processes flushing scripts *while* operations run (a flush landing between the reload
/// and the call) is not a failure either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flushes_during_operations_are_not_failures() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &unique_purpose("noscript-race"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let (stop, url) = (Arc::clone(&stop), url.clone());
        tokio::spawn(async move {
            let mut conn = raw(&url).await;
            let mut flushes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _: () = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                flushes += 1;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            flushes
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                for n in 0..150 {
                    let id = format!("{t}-{}", n % 10);
                    cache.set(entry(&id, &["x"])).await.expect("set");
                    cache.get(TestIndex::Id, &id).await.expect("get");
                    cache
                        .invalidate(TestIndex::Id, &[&id])
                        .await
                        .expect("invalidate");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("no operation failed");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flushes = flusher.await.unwrap();
    assert!(
        flushes > 10,
        "only {flushes} flushes ran during the operations"
    );
}

/// Test-side admin connections wait 10 s for an answer (redis-rs' default 500 ms is too short
/// for SAVE or SENTINEL commands on a loaded CI machine).
fn admin() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
}

#[tokio::test]
async fn a_failed_set_leaves_no_older_object() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let purpose = unique_purpose("failed_set");
    let cache = connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
    assert_eq!(cache.connector(), "redis");
    assert_eq!(cache_redis::CONNECTOR, "redis");
    cache_core::testkit::cases::failed_set_leaves_no_older_object(cache_core::ObjectCache::new(
        purpose, cache,
    ))
    .await;
}

/// Every key of `purpose` holding a copy of an object one of whose other keys no longer holds
/// it: a ghost (part of an object outliving the rest of it).
async fn ghosts(conn: &mut redis::aio::MultiplexedConnection, purpose: &str) -> Vec<String> {
    let prefix = format!("oc3{{{purpose}}}:");
    let mut found = Vec::new();
    for key in keys_of(conn, purpose).await {
        // (The registry is a hash: not a copy.)
        let Ok(Some(value)) = conn.get::<_, Option<Vec<u8>>>(&key).await else {
            continue;
        };
        if !value.starts_with(b"OC3|I|") {
            continue;
        }
        let copy = [b"OC3|I|", &value[6..22]].concat();
        let release = &key[..prefix.len() + 13];
        for suffix in key_list(&value) {
            let sibling: Option<Vec<u8>> = conn.get(format!("{release}{suffix}")).await.unwrap();
            if !sibling.is_some_and(|s| s.starts_with(&copy)) {
                found.push(key.clone());
            }
        }
    }
    found
}

/// The key suffixes a copy lists (`value.rs`).
fn key_list(value: &[u8]) -> Vec<String> {
    let rest = String::from_utf8_lossy(&value[68..]).into_owned();
    let (n, mut rest) = rest.split_once('|').unwrap();
    let mut out = Vec::new();
    for _ in 0..n.parse::<usize>().unwrap() {
        let (len, tail) = rest.split_once(':').unwrap();
        let len: usize = len.parse().unwrap();
        out.push(tail[..len].to_owned());
        rest = &tail[len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_racing_with_sets_leaves_no_ghost() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let purpose = unique_purpose("truncate_race");
    let cache = connector.cache::<TestIndex, TestEntry>(
        &purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let mut conn = raw(&url).await;
    let stored = Arc::new(AtomicUsize::new(0));
    let mut stored_during_truncates = 0;
    for round in 0..3 {
        // Enough keys that a truncate takes many SCAN batches.
        for i in 0..3_000 {
            cache
                .set(entry(&format!("o{i}"), &[&format!("n{i}")]))
                .await
                .unwrap();
        }
        let writer = {
            let (cache, stored) = (Arc::clone(&cache), Arc::clone(&stored));
            tokio::spawn(async move {
                for i in 0..2_000 {
                    let n = (i * 7) % 3_000;
                    cache
                        .set(entry(
                            &format!("o{n}"),
                            &[&format!("n{n}"), &format!("r{round}-{i}")],
                        ))
                        .await
                        .expect("a set racing with a truncate still succeeds");
                    stored.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let before = stored.load(Ordering::SeqCst);
        cache.truncate().await.unwrap();
        stored_during_truncates += stored.load(Ordering::SeqCst) - before;
        writer.await.unwrap();
        let ghosts = ghosts(&mut conn, &purpose).await;
        assert!(
            ghosts.is_empty(),
            "round {round}: {} index keys outlived their object's record, e.g. {:?}",
            ghosts.len(),
            ghosts.first()
        );
        cache.truncate().await.unwrap();
    }
    assert!(
        stored_during_truncates > 0,
        "no set landed while a truncate ran: the race was not run"
    );
}

/// An object stored as copies, then grown into a body with pointers, then overtaken by
/// another object through one of its pointers: the body goes, so the grown object answers
/// nothing through its id or the names the new object does not take.
#[tokio::test]
async fn an_object_grown_into_a_body_and_overtaken_is_gone_through_every_key() {
    let Some(url) = url() else { return };
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let purpose = unique_purpose("grown");
    let cache = connector.cache::<TestIndex, TestEntry>(
        &purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache.set(entry("y", &["a"])).await.unwrap();
    let names: Vec<String> = (0..300).map(|i| format!("grown-name-{i:04}")).collect();
    let grown: Vec<&str> = names.iter().map(String::as_str).collect();
    cache.set(entry("y", &grown)).await.unwrap();
    let mut conn = raw(&url).await;
    let body = keys_of(&mut conn, &purpose)
        .await
        .into_iter()
        .find(|k| k.contains(":o:"))
        .expect("the grown object is stored as a body with pointers");
    cache.set(entry("z", &[grown[0], "a"])).await.unwrap();
    let found = |o: Option<Arc<TestEntry>>| o.map(|o| o.id.clone());
    for name in ["a", grown[0]] {
        let got = cache.get(TestIndex::Name, name).await.unwrap();
        assert_eq!(
            found(got),
            Some("z".into()),
            "{name} reaches the new object"
        );
    }
    let got = cache.get(TestIndex::Id, "y").await.unwrap();
    assert_eq!(found(got), None, "y through its id");
    let got = cache.get(TestIndex::Name, grown[1]).await.unwrap();
    assert_eq!(found(got), None, "y through a name z does not take");
    assert!(
        !conn.exists::<_, bool>(&body).await.unwrap(),
        "y's body is gone"
    );
}
