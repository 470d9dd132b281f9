//! Space grows linearly with an object's keys (SPEC 13): objects whose payload lists their
//! keys, 1 to 10 000 keys each, on a real server of the test's own (on the shared test server,
//! other tests' writes would move `used_memory` too), measured as `used_memory` growth.

use cache_core::CacheSettings;
use cache_core::testkit::scale::{KEY_COUNTS, assert_linear, measure};
use cache_core::testkit::{TestCache, TestIndex, unique_purpose};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "common/throwaway.rs"]
mod throwaway;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory names used_memory")
}

#[tokio::test]
async fn space_grows_linearly_with_an_objects_keys() {
    let Some(server) = throwaway::Server::start(None) else {
        assert!(
            std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "redis-server is not installed; `cargo xtask test` installs it"
        );
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
        return;
    };
    let url = server.url();
    let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
    let conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut points = Vec::new();
    for keys in KEY_COUNTS {
        let cache: TestCache = connector.cache(
            &unique_purpose("scale"),
            TestIndex::BUILT,
            &CacheSettings::default(),
        );
        let point = measure(&cache, keys, || {
            let mut conn = conn.clone();
            async move { used_memory(&mut conn).await }
        })
        .await;
        eprintln!("redis: {point:?}, {:.2}x", point.ratio());
        points.push(point);
        cache.truncate().await.unwrap();
    }
    // Redis keeps ~120 bytes of its own per key (its hash-table entry, the TTL's entry, the
    // value's object) besides the key's name: about 4x what an object with short keys is
    // worth, at every key count — up to ~6x for one-key objects on a fresh server, whose
    // main table grows (doubles) while they are stored.
    assert_linear("redis", &points, 6.5);
}
