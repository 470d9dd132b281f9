//! [`RedisCache`]: one object cache on a Redis server, every change one atomic Lua script.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheSettings, Entry, Error, Index, Result, async_trait, codec};
use redis::{AsyncCommands, Script};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::CONNECTOR;
use crate::connector::Shared;
use crate::error::redis_error;
use crate::keys;

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, loaded once per connector. `Script` runs EVALSHA and, on `NOSCRIPT` (after a
/// restart or `SCRIPT FLUSH`), loads the script and retries: never a failure.
#[derive(Debug)]
pub(crate) struct Scripts {
    get: Script,
    set: Script,
    invalidate: Script,
    truncate: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            get: with_common(include_str!("lua/get.lua")),
            set: with_common(include_str!("lua/set.lua")),
            invalidate: with_common(include_str!("lua/invalidate.lua")),
            truncate: Script::new(include_str!("lua/truncate.lua")),
        }
    }
}

/// One object cache of the [Redis connector](crate::RedisConnector).
pub struct RedisCache<I: Index, V: Entry<I>> {
    shared: Arc<Shared>,
    purpose: String,
    prefix: String,
    indices: Box<[I]>,
    max_age_ms: u64,
    last_usage_ms: u64,
    values: PhantomData<fn() -> V>,
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for RedisCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("purpose", &self.purpose)
            .field("prefix", &self.prefix)
            .field("indices", &self.indices)
            .finish()
    }
}

/// Runs a script. redis-rs reloads it once on `NOSCRIPT`; a `SCRIPT FLUSH` (or a restart)
/// landing between that load and the call gives `NOSCRIPT` again, so it is retried a few
/// times more: `NOSCRIPT` is never reported as a failure.
async fn invoke<T: redis::FromRedisValue>(
    invocation: &redis::ScriptInvocation<'_>,
    connection: &mut crate::pool::Conn,
) -> redis::RedisResult<T> {
    const ATTEMPTS: usize = 4;
    let mut attempt = 1;
    loop {
        match invocation.invoke_async(connection).await {
            Err(e)
                if attempt < ATTEMPTS
                    && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

impl<I, V> RedisCache<I, V>
where
    I: Index,
    V: Entry<I> + Serialize + DeserializeOwned,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Self {
        let unique = cache_core::unique_indices(indices);
        RedisCache {
            shared,
            purpose: purpose.to_owned(),
            prefix: keys::prefix(purpose),
            indices: unique.into_boxed_slice(),
            max_age_ms: cache_core::whole_millis(settings.max_age),
            last_usage_ms: cache_core::whole_millis(settings.last_usage),
            values: PhantomData,
        }
    }

    fn write_timeout(&self) -> Duration {
        self.shared.config.write_timeout
    }

    fn index_key(&self, index: I, key: &str) -> Result<String> {
        if !self.indices.contains(&index) {
            return Err(Error::unknown_index(&self.purpose, index.name()));
        }
        Ok(keys::index_key(&self.prefix, index.name(), key))
    }

    /// Runs `op` on a pooled connection: the wait for a connection bounded by the pool timeout,
    /// the operation by `limit` (ReadTimeout or WriteTimeout).
    async fn with_connection<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T>
    where
        F: FnOnce(crate::pool::Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let config = &self.shared.config;
        let connection = cache_core::pool::checkout(
            self.shared.pool.get_owned(),
            &self.shared.connect_failures,
            config.pool_wait(),
            "redis",
            "Caches.Connectors.Redis.PoolTimeout",
            redis_error,
        )
        .await?;
        // Share the multiplexed connection and give the slot back at once (see `pool`).
        let redis = connection.redis.clone();
        let broken = Arc::clone(&connection.broken);
        drop(connection);
        tokio::time::timeout(limit, op(redis))
            .await
            .map_err(|_| {
                // A connection that does not answer is not trusted with the next command.
                broken.store(true, std::sync::atomic::Ordering::Relaxed);
                Error::timeout(
                    "redis: no answer within Caches.Connectors.Redis.ReadTimeout/WriteTimeout",
                )
            })?
            .map_err(|e| {
                if crate::pool::is_connection_error(&e) {
                    broken.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                redis_error(e)
            })
    }

    async fn invalidate_keys(&self, index_keys: Vec<String>) -> Result<()> {
        if index_keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.shared.scripts.invalidate.prepare_invoke();
        for key in &index_keys {
            invocation.key(key);
        }
        self.with_connection(self.write_timeout(), |mut c| async move {
            invoke::<i64>(&invocation, &mut c).await.map(drop)
        })
        .await
    }
}

#[async_trait]
impl<I, V> Cache<I, V> for RedisCache<I, V>
where
    I: Index,
    V: Entry<I> + Serialize + DeserializeOwned,
{
    fn connector(&self) -> &'static str {
        CONNECTOR
    }

    fn indices(&self) -> &[I] {
        &self.indices
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        let index_key = self.index_key(index, key)?;
        let mut invocation = self.shared.scripts.get.prepare_invoke();
        invocation
            .key(&index_key)
            .arg(&*self.shared.version)
            .arg(self.max_age_ms)
            .arg(self.last_usage_ms);
        let payload: Option<Vec<u8>> = self
            .with_connection(self.shared.config.read_timeout, |mut c| async move {
                invoke(&invocation, &mut c).await
            })
            .await?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        match codec::decode_hit::<V>(&payload, &self.purpose, CONNECTOR) {
            Some(value) => Ok(Some(value)),
            None => {
                self.invalidate_keys(vec![index_key]).await?;
                Ok(None)
            }
        }
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        let payload = codec::encode(&*value)?;
        let index_keys: Vec<String> = cache_core::entry_keys(&*value, &self.indices)
            .into_iter()
            .map(|(position, key)| {
                keys::index_key(&self.prefix, self.indices[position].name(), &key)
            })
            .collect();
        if index_keys.is_empty() {
            return Ok(());
        }
        let object = keys::new_object_key(&self.prefix);
        let keys_json = serde_json::to_string(&index_keys)
            .map_err(|e| Error::codec("index keys could not be encoded").with_source(e))?;
        let mut invocation = self.shared.scripts.set.prepare_invoke();
        invocation.key(&object);
        for key in &index_keys {
            invocation.key(key);
        }
        invocation
            .arg(payload)
            .arg(&*self.shared.version)
            .arg(self.max_age_ms)
            .arg(self.last_usage_ms)
            .arg(keys_json);
        self.with_connection(self.write_timeout(), |mut c| async move {
            invoke::<i64>(&invocation, &mut c).await.map(drop)
        })
        .await
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        let index_keys = keys
            .iter()
            .map(|k| self.index_key(index, k))
            .collect::<Result<Vec<_>>>()?;
        self.invalidate_keys(index_keys).await
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        let index_keys = keys
            .iter()
            .map(|k| self.index_key(index, k))
            .collect::<Result<Vec<_>>>()?;
        if index_keys.is_empty() {
            return Ok(());
        }
        self.with_connection(self.write_timeout(), |mut c| async move {
            c.del::<_, i64>(index_keys).await.map(drop)
        })
        .await
    }

    /// Removes every key of this object cache (all versions) in batches of `SCAN` + `UNLINK`;
    /// never `FLUSHDB`, never `KEYS`, nothing outside this cache's prefix. Each batch is a
    /// script called with a key of the cache's hash slot, so on a Redis Cluster it runs on
    /// the node that holds all of the cache's keys.
    async fn truncate(&self) -> Result<()> {
        let pattern = keys::scan_pattern(&self.prefix);
        let mut cursor = "0".to_owned();
        loop {
            let mut invocation = self.shared.scripts.truncate.prepare_invoke();
            invocation
                .key(&self.prefix)
                .arg(&cursor)
                .arg(&pattern)
                .arg(500);
            cursor = self
                .with_connection(self.write_timeout(), |mut c| async move {
                    invoke::<String>(&invocation, &mut c).await
                })
                .await?;
            if cursor == "0" {
                break;
            }
        }
        tracing::debug!(purpose = %self.purpose, connector = CONNECTOR, "truncated");
        Ok(())
    }
}
