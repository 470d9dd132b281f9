//! [`Shared`]: what every object cache and channel of one connector uses — the configuration,
//! the pool and its lanes — and [`Shared::with_connection`], the one way a command reaches the
//! server: bounded in time, retried once on a new connection when the one it ran on was lost.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use cache_core::{Error, Losses, Result};
use redis::RedisError;

use crate::config::RedisConfig;
use crate::error::redis_error;
use crate::pool::{Conn, Health, Pool, is_connection_error};
use crate::scripts::Scripts;

/// One connector's configuration, pool and lanes, shared by its object caches and channels.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) version: Arc<str>,
    /// The origin the scripts stamp on the announcements of this connector's changes.
    pub(crate) origin: u64,
    /// The pub/sub channel those announcements go to (see [`crate::RedisChannel`]).
    pub(crate) channel: String,
    pub(crate) pool: Pool,
    pub(crate) scripts: Scripts,
    /// Connect errors of the pool, so a checkout does not wait on a refusing server.
    pub(crate) connect_failures: cache_core::pool::ConnectFailures,
    /// The multiplexed connections operations use ([`lanes`] of them), each taken from the
    /// pool once and kept until it fails (or reaches `ConnMaxLifetime`): an operation picks
    /// the next lane instead of checking a connection out (no pool lock, no wait timer).
    lanes: Box<[Slot]>,
    next_lane: AtomicUsize,
    /// The failure events of lost connections.
    losses: Losses,
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

/// One lane: its connection, and the turn of replacing it after it was lost.
#[derive(Debug, Default)]
struct Slot {
    current: ArcSwapOption<Lane>,
    /// Held while a lost connection is replaced, so the calls that lost it together wait for
    /// one new connection instead of making one each.
    replacing: tokio::sync::Mutex<()>,
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

/// How one attempt on a connection ended.
enum Attempt<T> {
    Done(T),
    Failed(RedisError),
    TimedOut,
}

impl Shared {
    /// What a connector for `config` shares, scoping objects by the application's `version`
    /// and announcing changes on `channel`.
    pub(crate) fn new(
        config: RedisConfig,
        version: &str,
        channel: String,
        pool: Pool,
        connect_failures: cache_core::pool::ConnectFailures,
    ) -> Self {
        Shared {
            lanes: (0..lanes(&config)).map(|_| Slot::default()).collect(),
            next_lane: AtomicUsize::new(0),
            losses: Losses::new(),
            origin: (rand::random::<u64>() >> 1) | 1,
            channel,
            config,
            version: version.into(),
            pool,
            scripts: Scripts::new(),
            connect_failures,
        }
    }

    /// Runs `op` on a lane's connection, the whole call bounded by `PoolTimeout` + `limit`
    /// (ReadTimeout or WriteTimeout): the wait for a connection by the pool timeout, the
    /// operation by `limit`.
    ///
    /// A connection that fails at the connection level under the call was lost (a restart,
    /// `CLIENT KILL`, a failover, a proxy's idle timeout): every command in flight on it fails
    /// at once. Each runs once more on a new connection — one for all the calls that lost the
    /// same one — within what is left of the call's bound, and an error that says a
    /// connection was lost carries the [`cache_core::FailureEvent`] of the loss (see
    /// [`Losses`]), so the breaker counts it once.
    pub(crate) async fn with_connection<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let bound = self.config.pool_wait() + limit;
        let (slot, redis, health) = self.lane().await?;
        let left = bound.saturating_sub(started.elapsed()).min(limit);
        match attempt(left, &op, redis, &health).await {
            Attempt::Failed(e) if is_connection_error(&e) => {
                let left = bound.saturating_sub(started.elapsed());
                let replaced = tokio::time::timeout(left, self.replace(slot, &health))
                    .await
                    .unwrap_or_else(|_| Err(no_new_connection()));
                let (redis, fresh) = match replaced {
                    Ok(lane) => lane,
                    Err(_) => return Err(redis_error(e).with_event(self.losses.event())),
                };
                let left = bound.saturating_sub(started.elapsed()).min(limit);
                self.finish(attempt(left, &op, redis, &fresh).await)
            }
            outcome => self.finish(outcome),
        }
    }

    /// The connection of the next lane (and which lane), taken from the pool when the lane is
    /// empty or its connection failed or is too old.
    async fn lane(&self) -> Result<(usize, Conn, Arc<Health>)> {
        let index = self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let slot = &self.lanes[index];
        let lifetime = self.config.conn_max_lifetime;
        if let Some(lane) = &*slot.current.load()
            && lane.health.usable(lifetime)
        {
            return Ok((index, lane.redis.clone(), Arc::clone(&lane.health)));
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
        let picked = (index, lane.redis.clone(), Arc::clone(&lane.health));
        slot.current.store(Some(Arc::new(lane)));
        Ok(picked)
    }

    /// A connection made after `lost` was lost, for lane `index`: the lane's when another call
    /// replaced it already, else a new one (not one of the pool's idle connections, which may
    /// have been lost with it), which becomes the lane's and joins the pool.
    async fn replace(&self, index: usize, lost: &Arc<Health>) -> Result<(Conn, Arc<Health>)> {
        let slot = &self.lanes[index];
        let _turn = slot.replacing.lock().await;
        if let Some(lane) = &*slot.current.load()
            && lane.health.usable(self.config.conn_max_lifetime)
            && lane.health.connected_after_loss_of(lost)
        {
            return Ok((lane.redis.clone(), Arc::clone(&lane.health)));
        }
        let fresh = self
            .pool
            .dedicated_connection()
            .await
            .map_err(redis_error)?;
        let lane = Lane {
            redis: fresh.redis.clone(),
            health: Arc::clone(&fresh.health),
        };
        let picked = (lane.redis.clone(), Arc::clone(&lane.health));
        slot.current.store(Some(Arc::new(lane)));
        // Give it to the pool too (it may be full: then only the lane keeps it).
        let _ = self.pool.add(fresh);
        Ok(picked)
    }
}

fn no_new_connection() -> Error {
    Error::timeout(
        "redis: the connection was lost and no new one was made within \
         Caches.Connectors.Redis.PoolTimeout + ReadTimeout/WriteTimeout",
    )
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

impl Shared {
    /// The call's result; an error that says the connection was lost carries the event of
    /// the loss.
    fn finish<T>(&self, outcome: Attempt<T>) -> Result<T> {
        match outcome {
            Attempt::Done(value) => Ok(value),
            Attempt::Failed(e) if is_connection_error(&e) => {
                Err(redis_error(e).with_event(self.losses.event()))
            }
            Attempt::Failed(e) => Err(redis_error(e)),
            Attempt::TimedOut => Err(Error::timeout(
                "redis: no answer within Caches.Connectors.Redis.ReadTimeout/WriteTimeout",
            )),
        }
    }
}
