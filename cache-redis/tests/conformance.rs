//! The whole conformance suite and the model test against a real `redis-server`
//! (`CACHE_TEST_REDIS_URL`, started by `cargo xtask test`).

use std::time::Duration;

use cache_core::testkit::{Fixture, TestCache, TestIndex};
use cache_core::{CacheSettings, async_trait};
use cache_redis::{RedisConfig, RedisConnector};

struct RedisFixture {
    connector: RedisConnector,
}

#[async_trait]
impl Fixture for RedisFixture {
    async fn cache(
        &self,
        purpose: &str,
        indices: &[TestIndex],
        settings: &CacheSettings,
    ) -> TestCache {
        self.connector.cache(purpose, indices, settings)
    }

    async fn advance(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn prunable(&self) -> bool {
        false
    }

    fn exact_time(&self) -> bool {
        false
    }
}

/// The server from `CACHE_TEST_REDIS_URL`; without it the tests are skipped with a printed
/// reason, unless `CACHE_TEST_REQUIRE_SERVERS=1` (as `cargo xtask test` sets) makes that fatal.
async fn fixture() -> Option<RedisFixture> {
    let url = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL")?;
    let connector =
        RedisConnector::new(RedisConfig::with_url(url), "test-v1").expect("a valid URL");
    Some(RedisFixture { connector })
}

cache_core::conformance_suite!(fixture);
cache_core::model_test!(fixture);
