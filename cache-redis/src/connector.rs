//! [`RedisConnector`]: one pool, shared by every object cache on this server.

use std::sync::Arc;

use cache_core::{CacheSettings, Entry, Error, Index, Result};
use redis::RedisError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::RedisCache;
use crate::channel::RedisChannel;
use crate::config::RedisConfig;
use crate::pool::Manager;
use crate::shared::Shared;

/// A configuration the client library refused, as a cache error naming the key.
fn config_error(e: RedisError) -> Error {
    match e.detail() {
        Some(detail) => Error::config(format!("Caches.Connectors.Redis.{detail}")),
        None => Error::config(format!("Caches.Connectors.Redis: {e}")),
    }
}

/// The Redis connector: makes object caches that share one connection pool.
#[derive(Clone, Debug)]
pub struct RedisConnector {
    pub(crate) shared: Arc<Shared>,
}

impl RedisConnector {
    /// A connector for `config`, scoping objects by the application's `version`.
    ///
    /// Does not connect: a server that is down at startup makes the caches miss until it is
    /// reachable. Fails only on a malformed URL. Call it inside a Tokio runtime (the pool
    /// runs a background task).
    pub fn new(config: RedisConfig, version: &str) -> Result<Self> {
        let config = config.with_default_timeouts();
        let topology = config.topology().map_err(|(key, message)| {
            Error::config(format!("Caches.Connectors.Redis.{key}: {message}"))
        })?;
        let described = topology.describe();
        let manager = Manager::new(&config).map_err(config_error)?;
        #[cfg(feature = "tls")]
        if config.uses_tls(&config.connection_info().map_err(|(key, message)| {
            Error::config(format!("Caches.Connectors.Redis.{key}: {message}"))
        })?) {
            // redis-rs builds its TLS settings on the process's default crypto provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            config.tls.warn_if_insecure(crate::CONNECTOR, "Redis");
        }
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
        let channel = crate::channel::channel_name(&config);
        Ok(RedisConnector {
            shared: Arc::new(Shared::new(
                config,
                version,
                channel,
                pool,
                connect_failures,
            )),
        })
    }

    /// The pub/sub channel on this server (or cluster, or Sentinel-managed set) that near
    /// caches announce their changes on. Connects only when listened to or published on.
    pub fn channel(&self) -> Result<RedisChannel> {
        let subscriber = Manager::new(&self.shared.config).map_err(config_error)?;
        Ok(RedisChannel::new(Arc::clone(&self.shared), subscriber))
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
