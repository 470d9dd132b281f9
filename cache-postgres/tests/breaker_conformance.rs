//! The whole conformance suite and the model test through a circuit breaker over a real
//! PostgreSQL (`CACHE_TEST_POSTGRES_URL`): hostile keys, stored garbage and data the server
//! refuses must never open the breaker or leave a kept change that blocks the cache.

use std::sync::Arc;

use cache_breaker::{Breaker, BreakerCache};
use cache_core::BreakerSettings;
use cache_core::testkit::{Fixture, RealTimeFixture, TestCache};
use cache_postgres::{PostgresConfig, PostgresConnector};

async fn fixture() -> Option<impl Fixture> {
    let url = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")?;
    let connector =
        PostgresConnector::new(&PostgresConfig::with_url(url), "test-v1").expect("a valid URL");
    connector.setup().await.expect("the setup step");
    let breaker = Arc::new(Breaker::new("postgres", BreakerSettings::default()));
    Some(RealTimeFixture::new(
        true,
        move |purpose, indices, settings| {
            let inner: TestCache = connector.cache(purpose, indices, settings);
            Arc::new(BreakerCache::new(purpose, inner, Arc::clone(&breaker))) as TestCache
        },
    ))
}

cache_core::conformance_suite!(fixture);
cache_core::leases_suite!(fixture);
cache_core::model_test!(fixture);
