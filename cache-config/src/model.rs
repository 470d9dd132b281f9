//! The checked configuration: what [`Loader::load`](crate::Loader::load) returns.

use std::collections::BTreeMap;

use cache_core::CacheSettings;

/// The object caches every service has (SPEC section 9).
pub(crate) const BUILT_IN: &[&str] = &["instance", "milestones", "organization"];

/// The whole `Caches` tree, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct CachesConfig {
    /// `Caches.Connectors`: each connector's own settings.
    pub connectors: ConnectorsConfig,
    /// `Caches.Instance`.
    pub instance: CacheSettings,
    /// `Caches.Milestones`.
    pub milestones: CacheSettings,
    /// `Caches.Organization`.
    pub organization: CacheSettings,
    /// The application's own object caches declared with
    /// [`Loader::purpose`](crate::Loader::purpose), by lower-cased purpose.
    pub purposes: BTreeMap<String, CacheSettings>,
}

impl CachesConfig {
    /// The settings of the object cache `purpose` (case-insensitive), built-in or declared.
    pub fn settings(&self, purpose: &str) -> Option<&CacheSettings> {
        match purpose.to_ascii_lowercase().as_str() {
            "instance" => Some(&self.instance),
            "milestones" => Some(&self.milestones),
            "organization" => Some(&self.organization),
            other => self.purposes.get(other),
        }
    }

    /// Every object cache by purpose: the three built-in ones, then the declared ones.
    pub fn object_caches(&self) -> impl Iterator<Item = (&str, &CacheSettings)> {
        [
            ("instance", &self.instance),
            ("milestones", &self.milestones),
            ("organization", &self.organization),
        ]
        .into_iter()
        .chain(self.purposes.iter().map(|(p, s)| (p.as_str(), s)))
    }
}

/// `Caches.Connectors`: the settings of each connector compiled in.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub struct ConnectorsConfig {
    /// `Caches.Connectors.Memory` (Cargo feature `memory`).
    #[cfg(feature = "memory")]
    pub memory: cache_memory::MemoryConfig,
    /// `Caches.Connectors.Postgres` (Cargo feature `postgres`).
    #[cfg(feature = "postgres")]
    pub postgres: cache_postgres::PostgresConfig,
    /// `Caches.Connectors.Redis` (Cargo feature `redis`).
    #[cfg(feature = "redis")]
    pub redis: cache_redis::RedisConfig,
}

impl ConnectorsConfig {
    /// Whether object caches may name the Redis connector.
    pub fn redis_enabled(&self) -> bool {
        #[cfg(feature = "redis")]
        {
            self.redis.enabled
        }
        #[cfg(not(feature = "redis"))]
        {
            false
        }
    }

    /// Whether object caches may name the PostgreSQL connector.
    pub fn postgres_enabled(&self) -> bool {
        #[cfg(feature = "postgres")]
        {
            self.postgres.enabled
        }
        #[cfg(not(feature = "postgres"))]
        {
            false
        }
    }

    /// Whether object caches may name the memory connector.
    pub fn memory_enabled(&self) -> bool {
        #[cfg(feature = "memory")]
        {
            self.memory.enabled
        }
        #[cfg(not(feature = "memory"))]
        {
            false
        }
    }
}
