//! The whole conformance suite and the model test against a real PostgreSQL
//! (`CACHE_TEST_POSTGRES_URL`, started by `cargo xtask test`).

use cache_core::testkit::releases::{MakeReleases, Releases};
use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestIndex};
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
cache_core::leases_suite!(fixture);
cache_core::model_test!(fixture);

/// Caches of two releases (version strings) in the same database.
async fn releases() -> Option<impl Releases> {
    let url = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")?;
    let config = PostgresConfig::with_url(url);
    let v1 = PostgresConnector::new(&config, "v1").expect("a valid URL");
    v1.setup().await.expect("the setup step");
    let v2 = PostgresConnector::new(&config, "v2").expect("a valid URL");
    Some(MakeReleases(
        move |version: &str, purpose: &str, settings: &_| {
            let connector = if version == "v1" { &v1 } else { &v2 };
            connector.cache(purpose, TestIndex::BUILT, settings) as TestCache
        },
    ))
}

cache_core::releases_suite!(releases);
