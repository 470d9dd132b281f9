//! [`RedisConnector`]: one pool, shared by every object cache on this server.

use std::sync::Arc;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use cache_core::{CacheSettings, Entry, Error, Index, Result};
use redis::RedisError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::RedisCache;
use crate::channel::RedisChannel;
use crate::config::RedisConfig;
use crate::scripts::Scripts;

use crate::error::redis_error;
use crate::pool::{Conn, Health, Manager, Pool, is_connection_error};

/// A configuration the client library refused, as a cache error naming the key.
fn config_error(e: RedisError) -> Error {
    match e.detail() {
        Some(detail) => Error::config(format!("Caches.Connectors.Redis.{detail}")),
        None => Error::config(format!("Caches.Connectors.Redis: {e}")),
    }
}

/// How one attempt on a connection ended.
enum Attempt<T> {
    Done(T),
    Failed(RedisError),
    TimedOut,
}

/// The Redis connector: makes object caches that share one connection pool.
#[derive(Clone, Debug)]
pub struct RedisConnector {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) version: Arc<str>,
    /// The origin the scripts stamp on the announcements of this connector's changes.
    pub(crate) origin: u64,
    /// The pub/sub channel those announcements go to (see [`RedisChannel`]).
    pub(crate) channel: String,
    pub(crate) pool: Pool,
    pub(crate) scripts: Scripts,
    /// Connect errors of the pool, so a checkout does not wait on a refusing server.
    pub(crate) connect_failures: cache_core::pool::ConnectFailures,
    /// The multiplexed connections operations use ([`lanes`] of them), each taken from the
    /// pool once and kept until it fails (or reaches `ConnMaxLifetime`): an operation picks
    /// the next lane instead of checking a connection out (no pool lock, no wait timer).
    lanes: Box<[ArcSwapOption<Lane>]>,
    next_lane: AtomicUsize,
}

/// How many lanes operations spread over: one multiplexed connection per CPU core (each
/// pipelines all the commands in flight on it, which is what makes many concurrent gets
/// cheap; more connections pipeline less and cost the server and client more syscalls), at
/// most `PoolSize`.
fn lanes(config: &RedisConfig) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    config
        .max_connections()
        .clamp(1, u32::try_from(cores).unwrap_or(u32::MAX).max(1))
}

/// A connection in a lane.
struct Lane {
    redis: Conn,
    health: Arc<Health>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("health", &self.health)
            .finish()
    }
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
        Ok(RedisConnector {
            shared: Arc::new(Shared {
                lanes: (0..lanes(&config))
                    .map(|_| ArcSwapOption::empty())
                    .collect(),
                next_lane: AtomicUsize::new(0),
                origin: (rand::random::<u64>() >> 1) | 1,
                channel: crate::channel::channel_name(&config),
                config,
                version: version.into(),
                pool,
                scripts: Scripts::new(),
                connect_failures,
            }),
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

impl Shared {
    /// Runs `op` on a pooled connection: the wait for a connection bounded by the pool
    /// timeout, the operation by `limit` (ReadTimeout or WriteTimeout). A pooled connection
    /// made before this call that fails at the connection level was lost while it sat in the
    /// pool (a restart, `CLIENT KILL`, a failover, an idle timeout): the operation runs once
    /// more on a new connection before it fails.
    pub(crate) async fn with_connection<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let shared = self;
        let config = &shared.config;
        let started = Instant::now();
        let (redis, health) = self.lane().await?;
        match attempt(limit, &op, redis, &health).await {
            Attempt::Done(value) => Ok(value),
            Attempt::Failed(e) if is_connection_error(&e) && health.connected_before(started) => {
                let fresh = tokio::time::timeout(
                    config.pool_wait(),
                    shared.pool.dedicated_connection(),
                )
                .await
                .map_err(|_| {
                    Error::timeout(
                        "redis: no new connection within Caches.Connectors.Redis.PoolTimeout",
                    )
                })?
                .map_err(redis_error)?;
                let outcome = attempt(limit, &op, fresh.redis.clone(), &fresh.health).await;
                // Give it to the pool (it may be full meanwhile: then it goes).
                let _ = shared.pool.add(fresh);
                finish(outcome)
            }
            outcome => finish(outcome),
        }
    }
}

impl Shared {
    /// The connection of the next lane, taken from the pool when the lane is empty or its
    /// connection failed or is too old.
    async fn lane(&self) -> Result<(Conn, Arc<Health>)> {
        let slot = &self.lanes[self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len()];
        let lifetime = self.config.conn_max_lifetime;
        if let Some(lane) = &*slot.load()
            && lane.health.usable(lifetime)
        {
            return Ok((lane.redis.clone(), Arc::clone(&lane.health)));
        }
        let connection = cache_core::pool::checkout(
            self.pool.get_owned(),
            &self.connect_failures,
            self.config.pool_wait(),
            "redis",
            "Caches.Connectors.Redis.PoolTimeout",
            redis_error,
        )
        .await?;
        // Share the multiplexed connection and give the slot back at once (see `pool`).
        let lane = Lane {
            redis: connection.redis.clone(),
            health: Arc::clone(&connection.health),
        };
        drop(connection);
        let picked = (lane.redis.clone(), Arc::clone(&lane.health));
        slot.store(Some(Arc::new(lane)));
        Ok(picked)
    }
}

/// One run of `op` on `connection`, bounded by `limit`; records the connection's health.
async fn attempt<T, F, Fut>(
    limit: Duration,
    op: &F,
    connection: Conn,
    health: &Health,
) -> Attempt<T>
where
    F: Fn(Conn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match tokio::time::timeout(limit, op(connection)).await {
        Ok(Ok(value)) => Attempt::Done(value),
        Ok(Err(e)) => {
            if is_connection_error(&e) {
                health.broken();
            }
            Attempt::Failed(e)
        }
        Err(_) => {
            // A connection that does not answer is not trusted with the next command.
            health.broken();
            Attempt::TimedOut
        }
    }
}

fn finish<T>(outcome: Attempt<T>) -> Result<T> {
    match outcome {
        Attempt::Done(value) => Ok(value),
        Attempt::Failed(e) => Err(redis_error(e)),
        Attempt::TimedOut => Err(Error::timeout(
            "redis: no answer within Caches.Connectors.Redis.ReadTimeout/WriteTimeout",
        )),
    }
}
