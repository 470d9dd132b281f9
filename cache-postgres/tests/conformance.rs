//! The whole conformance suite and the model test against a real PostgreSQL
//! (`CACHE_TEST_POSTGRES_URL`, started by `cargo xtask test`).

use cache_core::testkit::{Fixture, RealTimeFixture, TestCache};
use cache_postgres::{PostgresConfig, PostgresConnector};

/// The database from `CACHE_TEST_POSTGRES_URL`, set up; without it the tests are skipped with
/// a printed reason, unless `CACHE_TEST_REQUIRE_SERVERS=1` (as `cargo xtask test` sets) makes
/// that fatal.
async fn fixture() -> Option<impl Fixture> {
    let url = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")?;
    let connector =
        PostgresConnector::new(&PostgresConfig::with_url(url), "test-v1").expect("a valid URL");
    connector.setup().await.expect("the setup step");
    Some(RealTimeFixture::new(
        true,
        move |purpose, indices, settings| connector.cache(purpose, indices, settings) as TestCache,
    ))
}

cache_core::conformance_suite!(fixture);
cache_core::model_test!(fixture);
