//! The ways to reach a server besides a TCP URL, on the real server of `cargo xtask test`:
//! `Network: unix` with the socket path in `Addr` (`CACHE_TEST_REDIS_SOCKET`), and `DB` — a
//! cache in database 3 stores, finds and truncates its keys there and nowhere else.

use std::sync::Arc;

use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{Cache, CacheSettings};
use cache_redis::{RedisConfig, RedisConnector};

/// Sets, reads and invalidates one object of `purpose` through a connector on `config`.
async fn round_trip(config: RedisConfig, purpose: &str) {
    let connector = RedisConnector::new(config, "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache_core::testkit::round_trip(&*cache).await;
    // Leave an object behind, to find it in the database.
    cache
        .set(Arc::new(TestEntry::new("1", &["one"])))
        .await
        .unwrap();
}

/// How many keys of `purpose` database `db` of the server at `url` holds.
async fn keys_in(url: &str, db: i64, purpose: &str) -> usize {
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SELECT")
        .arg(db)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("oc3{{{purpose}}}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn a_unix_socket_works() {
    let (Some(socket), Some(url)) = (
        cache_core::testkit::server_url("CACHE_TEST_REDIS_SOCKET"),
        cache_core::testkit::server_url("CACHE_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let purpose = unique_purpose("unix");
    let config = RedisConfig {
        network: "unix".into(),
        addr: socket,
        ..RedisConfig::default()
    };
    round_trip(config, &purpose).await;
    // The same server: what went through the socket is there over TCP.
    assert!(keys_in(&url, 0, &purpose).await > 0);
}

#[tokio::test]
async fn a_cache_in_another_database_keeps_to_it() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
    let purpose = unique_purpose("db");
    let config = RedisConfig {
        db: 3,
        ..RedisConfig::with_url(&url)
    };
    round_trip(config.clone(), &purpose).await;
    assert!(keys_in(&url, 3, &purpose).await > 0, "stored in database 3");
    assert_eq!(keys_in(&url, 0, &purpose).await, 0, "nothing in database 0");

    let connector = RedisConnector::new(config, "v1").unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache.truncate().await.unwrap();
    assert_eq!(
        keys_in(&url, 3, &purpose).await,
        0,
        "truncated in database 3"
    );
}
