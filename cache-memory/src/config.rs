//! `Caches.Connectors.Memory`: the memory connector's configuration.

use std::time::Duration;

use cache_core::AutoPrune;
use serde::{Deserialize, Serialize};

/// The default [`MemoryConfig::capacity`]: keys held per object cache.
pub const DEFAULT_CAPACITY: u64 = 10_000;

/// The memory connector's settings. Field names are the lower-cased configuration keys
/// (`Enabled`, `AutoPrune`, `Capacity`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Whether object caches may name this connector. Default `false` (as in the reference);
    /// [`MemoryConnector::new`](crate::MemoryConnector::new) does not look at it.
    #[serde(rename = "enabled")]
    pub enabled: bool,
    /// How often expired and invalidated objects are removed. Default: every minute, each run
    /// bounded by 5 seconds.
    #[serde(rename = "autoprune")]
    pub auto_prune: AutoPrune,
    /// The most keys one object cache holds; an object counts once per key (an instance with
    /// three domains and an id counts 4). Past it, the least useful keys are evicted (S3-FIFO),
    /// and evicting any key of an object drops the whole object. Default
    /// [`DEFAULT_CAPACITY`]; must be at least 1.
    #[serde(rename = "capacity")]
    pub capacity: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: false,
            auto_prune: AutoPrune::new(Duration::from_secs(60), Duration::from_secs(5)),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl MemoryConfig {
    /// An enabled configuration with the defaults otherwise.
    pub fn enabled() -> Self {
        MemoryConfig {
            enabled: true,
            ..MemoryConfig::default()
        }
    }

    /// The same configuration holding at most `capacity` keys per object cache.
    pub fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Checks the values serde cannot: on error, the offending key (as written in the
    /// configuration, below `Caches.Connectors.Memory`) and what to write instead.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.capacity == 0 {
            return Err((
                "Capacity",
                "0 would cache nothing; write the most keys one object cache may hold \
                 (default 10000), or set the object caches' Connector to \"\" to disable caching"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = MemoryConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.capacity, DEFAULT_CAPACITY);
        assert_eq!(c.auto_prune.interval, Duration::from_secs(60));
        assert_eq!(c.auto_prune.timeout, Duration::from_secs(5));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_capacity_is_rejected_with_the_key() {
        let err = MemoryConfig::enabled()
            .with_capacity(0)
            .validate()
            .unwrap_err();
        assert_eq!(err.0, "Capacity");
        assert!(
            err.1.contains("at least") || err.1.contains("cache nothing"),
            "{}",
            err.1
        );
    }

    #[test]
    fn deserializes_lower_cased_keys_and_rejects_unknown_ones() {
        let c: MemoryConfig = serde_json::from_str(
            r#"{"enabled": true, "capacity": 5, "autoprune": {"interval": "30s", "timeout": "1s"}}"#,
        )
        .unwrap();
        assert_eq!(c.capacity, 5);
        assert_eq!(c.auto_prune.interval, Duration::from_secs(30));
        let err = serde_json::from_str::<MemoryConfig>(r#"{"capacty": 5}"#).unwrap_err();
        assert!(err.to_string().contains("capacty"), "{err}");
    }
}
