//! The whole conformance suite and the model-based test against the memory connector, on a
//! manual clock (exact expiry).

use std::sync::Arc;
use std::time::Duration;

use cache_core::testkit::{Fixture, TestCache, TestIndex};
use cache_core::{CacheSettings, ManualClock, async_trait};
use cache_memory::{MemoryConfig, MemoryConnector};

struct MemoryFixture {
    connector: MemoryConnector,
    clock: Arc<ManualClock>,
}

#[async_trait]
impl Fixture for MemoryFixture {
    async fn cache(
        &self,
        purpose: &str,
        indices: &[TestIndex],
        settings: &CacheSettings,
    ) -> TestCache {
        self.connector.cache(purpose, indices, settings)
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

async fn fixture() -> Option<MemoryFixture> {
    let clock = Arc::new(ManualClock::new());
    let connector = MemoryConnector::with_clock(MemoryConfig::enabled(), clock.clone());
    Some(MemoryFixture { connector, clock })
}

cache_core::conformance_suite!(fixture);
cache_core::model_test!(fixture);
