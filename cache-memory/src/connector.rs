//! [`MemoryConnector`]: makes memory object caches from one configuration.

use std::sync::Arc;

use cache_core::{CacheSettings, CoarseClock, Entry, Index, SharedClock};

use crate::cache::MemoryCache;
use crate::config::MemoryConfig;

/// The memory connector: every object cache it makes lives in this process only.
///
/// Cheap to clone; all clones share the configuration and the clock.
#[derive(Clone, Debug)]
pub struct MemoryConnector {
    config: MemoryConfig,
    clock: SharedClock,
}

impl MemoryConnector {
    /// A connector on the [coarse wall clock](CoarseClock): MaxAge and LastUsage are precise
    /// to about a millisecond, and a hit reads the time from an atomic.
    pub fn new(config: MemoryConfig) -> Self {
        Self::with_clock(config, CoarseClock::shared())
    }

    /// A connector on `clock`, e.g. a [`ManualClock`](cache_core::ManualClock) in tests.
    pub fn with_clock(config: MemoryConfig, clock: SharedClock) -> Self {
        MemoryConnector { config, clock }
    }

    /// The configuration this connector was made with.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// A new, empty object cache for `purpose`, reachable through `indices`, expiring by
    /// `settings` (its `Connector` field is not looked at). It holds at most
    /// [`MemoryConfig::capacity`] keys.
    ///
    /// The cache is its own pruner: pass `cache.clone().into_prune()` to
    /// `cache_pruner::Pruner::start` with [`MemoryConfig::auto_prune`].
    pub fn cache<I: Index, V: Entry<I>>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Arc<MemoryCache<I, V>> {
        Arc::new(MemoryCache::new(
            purpose,
            indices,
            settings,
            self.config.capacity,
            Arc::clone(&self.clock),
        ))
    }
}
