//! [`RedisCache`]: one object cache on a Redis server. A hit is one plain `GET`; every change
//! is one atomic Lua script.

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::{
    Cache, CacheSettings, Entry, Error, ErrorKind, Hit, Index, Result, async_trait, codec,
};
use redis::{AsyncCommands, Script};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::CONNECTOR;
use crate::connector::Shared;
use crate::pool::Conn;
use crate::{keys, value};

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, loaded once per connector. `Script` runs EVALSHA and, on `NOSCRIPT` (after a
/// restart or `SCRIPT FLUSH`), loads the script and retries: never a failure.
#[derive(Debug)]
pub(crate) struct Scripts {
    set: Script,
    invalidate: Script,
    renew: Script,
    truncate: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            set: with_common(include_str!("lua/set.lua")),
            invalidate: with_common(include_str!("lua/invalidate.lua")),
            renew: with_common(include_str!("lua/renew.lua")),
            truncate: with_common(include_str!("lua/truncate.lua")),
        }
    }
}

/// One object cache of the [Redis connector](crate::RedisConnector).
pub struct RedisCache<I: Index, V: Entry<I>> {
    ops: Arc<Ops>,
    indices: Box<[I]>,
    values: PhantomData<fn() -> V>,
}

/// What every operation of one object cache needs, shared with its background renewals.
struct Ops {
    shared: Arc<Shared>,
    purpose: String,
    prefix: String,
    /// `<n>:<version>|`, the version part of every stored header.
    version_part: String,
    max_age_ms: u64,
    last_usage_ms: u64,
    /// MaxAge and LastUsage stretched by MaxStale: the keys' TTLs, so stale-if-error finds
    /// expired objects for that long.
    kept_max_age_ms: u64,
    kept_last_usage_ms: u64,
    /// LastUsage is renewed once a hit finds it older than this: a tenth of LastUsage, so
    /// hot objects cost no write per hit and an idle object expires at most 10 % early.
    renew_after_ms: u64,
    /// Objects whose renewal is under way, so that a hot object is renewed once, not once
    /// per concurrent hit.
    renewing: Mutex<HashSet<String>>,
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for RedisCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("purpose", &self.ops.purpose)
            .field("prefix", &self.ops.prefix)
            .field("indices", &self.indices)
            .finish()
    }
}

/// Runs a script. redis-rs reloads it once on `NOSCRIPT`; a `SCRIPT FLUSH` (or a restart)
/// landing between that load and the call gives `NOSCRIPT` again, so it is retried a few
/// times more: `NOSCRIPT` is never reported as a failure.
async fn invoke<T: redis::FromRedisValue>(
    invocation: &redis::ScriptInvocation<'_>,
    connection: &mut Conn,
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Ops {
    /// Runs `op` on a pooled connection (see [`Shared::with_connection`]).
    async fn with_connection<T, F, Fut>(&self, limit: Duration, op: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.shared.with_connection(limit, op).await
    }

    async fn invalidate_keys(&self, index_keys: Vec<String>) -> Result<()> {
        if index_keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.shared.scripts.invalidate.prepare_invoke();
        for key in &index_keys {
            invocation.key(key);
        }
        invocation.arg(&self.prefix);
        let invocation = &invocation;
        self.with_connection(self.shared.config.write_timeout, |mut c| async move {
            invoke::<i64>(invocation, &mut c).await.map(drop)
        })
        .await
    }

    /// A stored value that is not one of ours (or no longer decodes): a miss, and removed.
    async fn discard(&self, index_key: String) -> Result<Option<()>> {
        self.invalidate_keys(vec![index_key]).await.map(|()| None)
    }

    /// Whether `stored` has expired although its keys live on (they are kept for MaxStale
    /// past expiry): by this machine's clock against the server's set and renewal times.
    fn expired(&self, stored: &value::Stored<'_>, now: u64) -> bool {
        if self.kept_max_age_ms == self.max_age_ms && self.kept_last_usage_ms == self.last_usage_ms
        {
            return false; // no MaxStale: the TTLs are the expiry
        }
        (self.max_age_ms > 0 && now.saturating_sub(stored.created_ms) >= self.max_age_ms)
            || (self.last_usage_ms > 0
                && now.saturating_sub(stored.renewed_ms) >= self.last_usage_ms)
    }

    /// Renews the object's LastUsage in the background when a hit (whose `GET` was sent at
    /// `asked`) finds it due at `now` (milliseconds since the epoch).
    fn renew_if_due(self: &Arc<Self>, stored: &value::Stored<'_>, asked: Instant, now: u64) {
        if self.last_usage_ms == 0 || now.saturating_sub(stored.renewed_ms) < self.renew_after_ms {
            return;
        }
        let id = stored.id.to_owned();
        {
            let mut renewing = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
            if !renewing.insert(id.clone()) {
                return;
            }
        }
        let ops = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = ops.renew(&id, asked).await {
                tracing::debug!(
                    purpose = %ops.purpose,
                    connector = CONNECTOR,
                    %error,
                    "renewing LastUsage failed; the next hit tries again"
                );
            }
            ops.renewing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }

    /// Renews LastUsage as of `asked` (when the hit's `GET` was sent, so the object never
    /// lives longer than LastUsage after the hit, however long the renewal took to start).
    async fn renew(&self, id: &str, asked: Instant) -> Result<()> {
        let since_hit = u64::try_from(asked.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let mut invocation = self.shared.scripts.renew.prepare_invoke();
        invocation
            .key(keys::record_key(&self.prefix, id))
            .arg(id)
            .arg(self.kept_max_age_ms)
            .arg(self.kept_last_usage_ms)
            .arg(self.renew_after_ms)
            .arg(since_hit);
        let invocation = &invocation;
        self.with_connection(self.shared.config.write_timeout, |mut c| async move {
            invoke::<i64>(invocation, &mut c).await.map(drop)
        })
        .await
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
        let last_usage_ms = cache_core::whole_millis(settings.last_usage);
        let version_part = value::version_part(&shared.version);
        RedisCache {
            ops: Arc::new(Ops {
                shared,
                purpose: purpose.to_owned(),
                prefix: keys::prefix(purpose),
                version_part,
                max_age_ms: cache_core::whole_millis(settings.max_age),
                last_usage_ms,
                kept_max_age_ms: cache_core::whole_millis(settings.kept().max_age),
                kept_last_usage_ms: cache_core::whole_millis(settings.kept().last_usage),
                renew_after_ms: (last_usage_ms / 10).max(1),
                renewing: Mutex::new(HashSet::new()),
            }),
            indices: cache_core::unique_indices(indices).into_boxed_slice(),
            values: PhantomData,
        }
    }

    fn index_key(&self, index: I, key: &str) -> Result<String> {
        if !self.indices.contains(&index) {
            return Err(Error::unknown_index(&self.ops.purpose, index.name()));
        }
        Ok(keys::index_key(&self.ops.prefix, index.name(), key))
    }

    /// The object behind `key`: one plain `GET`; expired objects kept for MaxStale only when
    /// `stale_ok`.
    async fn fetch(&self, index: I, key: &str, stale_ok: bool) -> Result<Option<Hit<V>>> {
        let index_key = self.index_key(index, key)?;
        let ops = &self.ops;
        let index_key_ref = &index_key;
        let asked = Instant::now();
        let found = ops
            .with_connection(ops.shared.config.read_timeout, |mut c| async move {
                c.get::<_, Option<Vec<u8>>>(index_key_ref).await
            })
            .await;
        match found {
            Ok(Some(bytes)) => self.hit(index_key, &bytes, asked, stale_ok).await,
            Ok(None) => Ok(None),
            // The key holds another type (written behind the cache's back): garbage.
            Err(error) if error.kind() == ErrorKind::Rejected => {
                tracing::warn!(
                    purpose = %ops.purpose,
                    connector = CONNECTOR,
                    %error,
                    "a cache key held something that is not a stored object; removed"
                );
                ops.discard(index_key).await.map(|_| None)
            }
            Err(error) => Err(error),
        }
    }

    async fn store(&self, value: Arc<V>) -> Result<()> {
        let ops = &self.ops;
        let payload = codec::encode(&*value)?;
        let index_keys: Vec<String> = cache_core::entry_keys(&*value, &self.indices)
            .into_iter()
            .map(|(position, key)| {
                keys::index_key(&ops.prefix, self.indices[position].name(), &key)
            })
            .collect();
        if index_keys.is_empty() {
            return Ok(());
        }
        let id = keys::new_object_id();
        let mut invocation = ops.shared.scripts.set.prepare_invoke();
        invocation.key(keys::record_key(&ops.prefix, &id));
        for key in &index_keys {
            invocation.key(key);
        }
        invocation
            .arg(&ops.prefix)
            .arg(&id)
            .arg(&ops.version_part)
            .arg(payload)
            .arg(ops.kept_max_age_ms)
            .arg(ops.kept_last_usage_ms);
        let invocation = &invocation;
        ops.with_connection(ops.shared.config.write_timeout, |mut c| async move {
            invoke::<i64>(invocation, &mut c).await.map(drop)
        })
        .await
    }

    /// What an index key held: the object, or a miss — after removing it when it is not a
    /// stored object of ours or does not decode. Its age is the server's time of the set
    /// against this machine's clock (as exact as the clocks agree).
    async fn hit(
        &self,
        index_key: String,
        bytes: &[u8],
        asked: Instant,
        stale_ok: bool,
    ) -> Result<Option<Hit<V>>> {
        let ops = &self.ops;
        let Some(stored) = value::parse(bytes) else {
            tracing::warn!(
                purpose = %ops.purpose,
                connector = CONNECTOR,
                "a cache key held something that is not a stored object; removed"
            );
            return ops.discard(index_key).await.map(|_| None);
        };
        if stored.version != ops.shared.version.as_bytes() {
            // Another release's object: not ours to decode, and not ours to remove.
            return Ok(None);
        }
        let now = now_ms();
        let expired = ops.expired(&stored, now);
        if !stale_ok && expired {
            // Kept past its expiry for stale-if-error only.
            return Ok(None);
        }
        match codec::decode_hit::<V>(stored.payload, &ops.purpose, CONNECTOR) {
            Some(value) => {
                // A stale read is no use: renewing LastUsage would make an expired object
                // fresh again for plain gets.
                if !expired {
                    ops.renew_if_due(&stored, asked, now);
                }
                let age = Duration::from_millis(now.saturating_sub(stored.created_ms));
                Ok(Some(Hit {
                    value,
                    age: Some(age),
                }))
            }
            None => ops.discard(index_key).await.map(|_| None),
        }
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
        // `fetch` directly: through `get_entry` would box a second future per get.
        Ok(self.fetch(index, key, false).await?.map(|hit| hit.value))
    }

    /// One plain `GET` of the index key, which holds the whole object.
    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.fetch(index, key, false).await
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.fetch(index, key, true).await
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        self.store(value).await
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        let index_keys = keys
            .iter()
            .map(|k| self.index_key(index, k))
            .collect::<Result<Vec<_>>>()?;
        self.ops.invalidate_keys(index_keys).await
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        let index_keys = keys
            .iter()
            .map(|k| self.index_key(index, k))
            .collect::<Result<Vec<_>>>()?;
        if index_keys.is_empty() {
            return Ok(());
        }
        let index_keys = &index_keys;
        self.ops
            .with_connection(self.ops.shared.config.write_timeout, |mut c| async move {
                c.del::<_, i64>(index_keys).await.map(drop)
            })
            .await
    }

    /// Removes every key of this object cache (all versions) in batches of `SCAN` + `UNLINK`;
    /// never `FLUSHDB`, never `KEYS`, nothing outside this cache's prefix. Each batch is a
    /// script called with a key of the cache's hash slot, so on a Redis Cluster it runs on
    /// the node that holds all of the cache's keys.
    async fn truncate(&self) -> Result<()> {
        let ops = &self.ops;
        let pattern = keys::scan_pattern(&ops.prefix);
        let mut cursor = "0".to_owned();
        loop {
            let mut invocation = ops.shared.scripts.truncate.prepare_invoke();
            invocation
                .key(&ops.prefix)
                .arg(&cursor)
                .arg(&pattern)
                .arg(500);
            let invocation = &invocation;
            cursor = ops
                .with_connection(ops.shared.config.write_timeout, |mut c| async move {
                    invoke::<String>(invocation, &mut c).await
                })
                .await?;
            if cursor == "0" {
                break;
            }
        }
        tracing::debug!(purpose = %ops.purpose, connector = CONNECTOR, "truncated");
        Ok(())
    }
}
