//! The whole conformance suite and the model test against a real PostgreSQL
//! (`CACHE_TEST_POSTGRES_URL`, started by `cargo xtask test`).

use std::time::Duration;

use cache_core::testkit::{Fixture, TestCache, TestIndex};
use cache_core::{CacheSettings, async_trait};
use cache_postgres::{PostgresConfig, PostgresConnector};

struct PostgresFixture {
    connector: PostgresConnector,
}

#[async_trait]
impl Fixture for PostgresFixture {
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
        true
    }

    fn exact_time(&self) -> bool {
        false
    }
}

/// The database from `CACHE_TEST_POSTGRES_URL`, set up; without it the tests are skipped with
/// a printed reason, unless `CACHE_TEST_REQUIRE_SERVERS=1` (as `cargo xtask test` sets) makes
/// that fatal.
async fn fixture() -> Option<PostgresFixture> {
    let url = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")?;
    let connector =
        PostgresConnector::new(&PostgresConfig::with_url(url), "test-v1").expect("a valid URL");
    connector.setup().await.expect("the setup step");
    Some(PostgresFixture { connector })
}

cache_core::conformance_suite!(fixture);
cache_core::model_test!(fixture);
