//! [`RedisConnector`]: one pool, shared by every object cache on this server.

use std::sync::Arc;

use cache_core::{CacheSettings, Entry, Error, Index, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{RedisCache, Scripts};
use crate::config::RedisConfig;

use crate::pool::{Manager, Pool};

/// The Redis connector: makes object caches that share one connection pool.
#[derive(Clone, Debug)]
pub struct RedisConnector {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) version: Arc<str>,
    pub(crate) pool: Pool,
    pub(crate) scripts: Scripts,
    /// Connect errors of the pool, so a checkout does not wait on a refusing server.
    pub(crate) connect_failures: cache_core::pool::ConnectFailures,
}

impl RedisConnector {
    /// A connector for `config`, scoping objects by the application's `version`.
    ///
    /// Does not connect: a server that is down at startup makes the caches miss until it is
    /// reachable. Fails only on a malformed URL. Call it inside a Tokio runtime (the pool
    /// runs a background task).
    pub fn new(config: RedisConfig, version: &str) -> Result<Self> {
        let topology = config.topology().map_err(|(key, message)| {
            Error::config(format!("Caches.Connectors.Redis.{key}: {message}"))
        })?;
        let described = topology.describe();
        let manager = Manager::new(topology, config.dial_timeout, config.read_timeout)
            .map_err(|e| Error::config(format!("Caches.Connectors.Redis: {}", e.category())))?;
        tracing::info!(connector = crate::CONNECTOR, redis = %described, "redis connector ready");
        let ignored = config.ignored_keys();
        if !ignored.is_empty() {
            tracing::warn!(
                connector = crate::CONNECTOR,
                keys = ?ignored,
                "these Caches.Connectors.Redis keys are accepted for compatibility but have no effect"
            );
        }
        let mut pool = bb8::Pool::builder()
            .max_size(config.max_connections().max(1))
            .min_idle(Some(config.min_idle_conns).filter(|n| *n > 0))
            .connection_timeout(config.pool_wait())
            .idle_timeout(Some(config.conn_max_idle_time).filter(|d| !d.is_zero()))
            .max_lifetime(Some(config.conn_max_lifetime).filter(|d| !d.is_zero()));
        // A checkout must not cost a PING round trip: a broken connection fails its command,
        // which is reported (a miss) and the connection is replaced on the next checkout.
        pool = pool.retry_connection(false).test_on_check_out(false);
        let connect_failures = cache_core::pool::ConnectFailures::new();
        let pool = pool
            .error_sink(Box::new(connect_failures.clone()))
            .build_unchecked(manager);
        Ok(RedisConnector {
            shared: Arc::new(Shared {
                config,
                version: version.into(),
                pool,
                scripts: Scripts::new(),
                connect_failures,
            }),
        })
    }

    /// The configuration this connector was made with.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }

    /// A new object cache for `purpose` on this server, reachable through `indices`.
    pub fn cache<I, V>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Arc<RedisCache<I, V>>
    where
        I: Index,
        V: Entry<I> + Serialize + DeserializeOwned,
    {
        Arc::new(RedisCache::new(
            Arc::clone(&self.shared),
            purpose,
            indices,
            settings,
        ))
    }
}
