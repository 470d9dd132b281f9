//! The whole conformance suite and the model test against a real `redis-server`
//! (`CACHE_TEST_REDIS_URL`, started by `cargo xtask test`).

use cache_core::testkit::releases::{MakeReleases, Releases};
use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestIndex};
use cache_redis::{RedisConfig, RedisConnector};

/// The server from `CACHE_TEST_REDIS_URL`; without it the tests are skipped with a printed
/// reason, unless `CACHE_TEST_REQUIRE_SERVERS=1` (as `cargo xtask test` sets) makes that fatal.
async fn fixture() -> Option<impl Fixture> {
    let url = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL")?;
    let connector =
        RedisConnector::new(RedisConfig::with_url(url), "test-v1").expect("a valid URL");
    Some(RealTimeFixture::new(
        false,
        move |purpose, indices, settings| connector.cache(purpose, indices, settings) as TestCache,
    ))
}

cache_core::conformance_suite!(fixture);
cache_core::leases_suite!(fixture);
cache_core::model_test!(fixture);

/// Caches of two releases (version strings) on the same server.
async fn releases() -> Option<impl Releases> {
    let url = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL")?;
    Some(MakeReleases(
        move |version: &str, purpose: &str, settings: &_| {
            RedisConnector::new(RedisConfig::with_url(&url), version)
                .expect("a valid URL")
                .cache(purpose, TestIndex::BUILT, settings) as TestCache
        },
    ))
}

cache_core::releases_suite!(releases);
