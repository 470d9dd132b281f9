//! The decorator changes nothing while its breaker is closed: the whole conformance suite and
//! the model test through a `BreakerCache` over the memory connector (manual clock).

use std::sync::Arc;
use std::time::Duration;

use cache_breaker::{Breaker, BreakerCache};
use cache_core::testkit::{Fixture, TestCache, TestIndex};
use cache_core::{BreakerSettings, CacheSettings, ManualClock, async_trait};
use cache_memory::{MemoryConfig, MemoryConnector};

struct BreakerFixture {
    connector: MemoryConnector,
    clock: Arc<ManualClock>,
    breaker: Arc<Breaker>,
}

#[async_trait]
impl Fixture for BreakerFixture {
    async fn cache(
        &self,
        purpose: &str,
        indices: &[TestIndex],
        settings: &CacheSettings,
    ) -> TestCache {
        let inner: TestCache = self.connector.cache(purpose, indices, settings);
        Arc::new(BreakerCache::new(purpose, inner, Arc::clone(&self.breaker)))
    }

    async fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }

    fn prunable(&self) -> bool {
        true
    }

    fn exact_time(&self) -> bool {
        true
    }
}

async fn fixture() -> Option<BreakerFixture> {
    let clock = Arc::new(ManualClock::new());
    let connector = MemoryConnector::with_clock(MemoryConfig::enabled(), clock.clone());
    let breaker = Arc::new(Breaker::new("memory", BreakerSettings::default()));
    Some(BreakerFixture {
        connector,
        clock,
        breaker,
    })
}

cache_core::conformance_suite!(fixture);
cache_core::model_test!(fixture);
