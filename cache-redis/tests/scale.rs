//! Space grows linearly with an object's keys (SPEC 13): objects whose payload lists their
//! keys, 1 to 10 000 keys each, on a real server (`CACHE_TEST_REDIS_URL`), measured as
//! `used_memory` growth.

use cache_core::CacheSettings;
use cache_core::testkit::scale::{KEY_COUNTS, assert_linear, measure};
use cache_core::testkit::{TestCache, TestIndex, unique_purpose};
use cache_redis::{RedisConfig, RedisConnector};

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
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
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
    // worth, at every key count.
    assert_linear("redis", &points, 5.0);
}
