//! [`RedisCache`]: one object cache on a Redis server. A hit of an ordinary object is one
//! plain `GET`; every change is one atomic Lua script (a batch of one, for objects with many
//! keys). The layout is in `keys.md`.

use std::collections::HashSet;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::announcement::{Announcement, Kind};
use cache_core::{
    Cache, CacheSettings, Entry, Error, ErrorKind, Filled, Hit, Index, Lease, LeaseToken, Result,
    async_trait, codec,
};
use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::CONNECTOR;
use crate::pool::Conn;
use crate::scripts::Call;
use crate::shared::Shared;
use crate::value::{Object, Stored};
use crate::{keys, value};

/// Most keys one script call changes: a set, invalidate or delete of an object with more keys
/// runs as several calls, so no single call holds the server for long (each is a few ms).
pub(crate) const BATCH: usize = 1_000;

/// One object cache of the [Redis connector](crate::RedisConnector).
pub struct RedisCache<I: Index, V: Entry<I>> {
    ops: Arc<Ops>,
    indices: Box<[I]>,
    values: PhantomData<fn() -> V>,
}

/// What every operation of one object cache needs, shared with its background work (LastUsage
/// renewals, sweeping the pointers of removed bodies).
struct Ops {
    shared: Arc<Shared>,
    purpose: String,
    /// `oc3{<purpose>}:`, the prefix of every key of this cache.
    prefix: String,
    /// This release's tag in key names.
    tag: String,
    /// `<prefix><tag>:`, the prefix of this release's keys.
    own: String,
    max_age_ms: u64,
    last_usage_ms: u64,
    /// MaxAge and LastUsage stretched by MaxStale: the keys' TTLs, so stale-if-error finds
    /// expired objects for that long.
    kept_max_age_ms: u64,
    kept_last_usage_ms: u64,
    /// LastUsage is renewed once a hit finds it older than this: a tenth of LastUsage, so
    /// hot objects cost no write per hit and an idle object expires at most 10 % early.
    renew_after_ms: u64,
    /// How long a read-through's lease holds, and a change's tombstone stays; 0: no leases.
    lease_ms: u64,
    /// Objects whose renewal is under way, so that a hot object is renewed once, not once
    /// per concurrent hit.
    renewing: Mutex<HashSet<String>>,
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for RedisCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("purpose", &self.ops.purpose)
            .field("prefix", &self.ops.own)
            .field("indices", &self.indices)
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which part of a pointer-stored object a sweep handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sweep {
    /// Delete the pointers of a removed body, then the body.
    Delete,
    /// Move the pointers' TTL to the body's after its LastUsage was renewed.
    Renew(u64),
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

    /// Runs `call` as a write, bounded by WriteTimeout.
    async fn write<T: redis::FromRedisValue>(&self, call: &Call<'_>) -> Result<T> {
        self.with_connection(self.shared.config.write_timeout, |mut c| async move {
            call.run::<T>(&mut c).await
        })
        .await
    }

    /// The announcements of `kind` of `keys` under `index` (`replaced`: by a set), as the
    /// scripts publish them with the change.
    fn announcements(
        &self,
        (kind, replaced): (Kind, bool),
        index: &str,
        keys: &[&str],
    ) -> Vec<Vec<u8>> {
        Announcement::split(
            self.shared.origin,
            &self.purpose,
            (kind, replaced),
            index,
            keys,
            crate::channel::MAX_MESSAGE,
        )
    }

    /// Runs the invalidate of `keys` under `index` (or, with `own_only`, the removal of this
    /// release's objects only), a batch at a time, each announcing its keys.
    async fn invalidate_keys(
        self: &Arc<Self>,
        index: &str,
        keys: &[&str],
        own_only: bool,
    ) -> Result<()> {
        for batch in keys.chunks(BATCH) {
            let index_keys: Vec<String> = batch
                .iter()
                .map(|key| keys::index_key(&self.own, index, key))
                .collect();
            let call = Call::new(&self.shared.scripts.invalidate)
                .keys(index_keys.iter().map(String::as_str))
                .arg(&self.prefix)
                .arg(&self.tag)
                .arg(if own_only { "own" } else { "all" })
                .arg(self.lease_ms)
                .arg(&self.shared.channel)
                .arg(&self.purpose)
                .arg(self.announcements((Kind::Invalidate, false), index, batch));
            let killed: Vec<String> = self.write(&call).await?;
            self.sweep(killed, Sweep::Delete);
        }
        Ok(())
    }

    /// A key of this release holding something that is not one of our values (or an object
    /// that no longer decodes): a miss, and removed with its object.
    async fn discard(self: &Arc<Self>, index: &str, key: &str) -> Result<Option<()>> {
        tracing::warn!(
            purpose = %self.purpose,
            connector = CONNECTOR,
            "a cache key held something that is not a stored object of this release; removed"
        );
        self.invalidate_keys(index, &[key], true)
            .await
            .map(|()| None)
    }

    /// Whether `object` has expired although its keys live on (they are kept for MaxStale
    /// past expiry): by this machine's clock against the server's set and renewal times.
    fn expired(&self, object: &Object<'_>, now: u64) -> bool {
        if self.kept_max_age_ms == self.max_age_ms && self.kept_last_usage_ms == self.last_usage_ms
        {
            return false; // no MaxStale: the TTLs are the expiry
        }
        (self.max_age_ms > 0 && now.saturating_sub(object.created_ms) >= self.max_age_ms)
            || (self.last_usage_ms > 0
                && now.saturating_sub(object.renewed_ms) >= self.last_usage_ms)
    }

    /// Renews the object's LastUsage in the background when a hit (whose read was sent at
    /// `asked`) finds it due at `now` (ms since the epoch); `key` is where the hit found it.
    fn renew_if_due(self: &Arc<Self>, object: &Object<'_>, key: String, asked: Instant, now: u64) {
        if self.last_usage_ms == 0 || now.saturating_sub(object.renewed_ms) < self.renew_after_ms {
            return;
        }
        let id = object.id.to_owned();
        {
            let mut renewing = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
            if !renewing.insert(id.clone()) {
                return;
            }
        }
        let ops = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = ops.renew(&id, &key, asked).await {
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

    /// Renews LastUsage as of `asked` (when the hit's read was sent, so the object never
    /// lives longer than LastUsage after the hit, however long the renewal took to start) of
    /// object `id` stored at `key` (a copy or a body); with an empty id, of the object that
    /// index key `key` reaches.
    async fn renew(self: &Arc<Self>, id: &str, key: &str, asked: Instant) -> Result<()> {
        let since_hit = u64::try_from(asked.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let call = Call::new(&self.shared.scripts.renew)
            .key(key)
            .arg(&self.prefix)
            .arg(&self.tag)
            .arg(id)
            .arg(self.kept_max_age_ms)
            .arg(self.kept_last_usage_ms)
            .arg(self.renew_after_ms)
            .arg(since_hit)
            .arg(&self.shared.channel)
            .arg(&self.purpose);
        let (ttl, renewed): (i64, String) = self.write(&call).await?;
        if ttl > 0 && keys::parse_key(&renewed).is_some_and(|(_, name)| name == keys::Name::Body) {
            self.sweep_now(&renewed, Sweep::Renew(ttl.unsigned_abs()))
                .await?;
        }
        Ok(())
    }

    /// Sweeps the pointers of `bodies` in the background (see `lua/sweep.lua`): what a
    /// removal leaves costs no caller any time, and a sweep that cannot finish leaves nothing
    /// wrong behind (the pointers answer nothing; they expire with their TTL).
    fn sweep(self: &Arc<Self>, bodies: Vec<String>, sweep: Sweep) {
        if bodies.is_empty() {
            return;
        }
        let ops = Arc::clone(self);
        tokio::spawn(async move {
            for body in bodies {
                if let Err(error) = ops.sweep_now(&body, sweep).await {
                    tracing::debug!(
                        purpose = %ops.purpose,
                        connector = CONNECTOR,
                        %error,
                        "sweeping the keys of a large object failed; they expire with their TTL"
                    );
                }
            }
        });
    }

    /// Sweeps the pointers of one body, a chunk per script call.
    async fn sweep_now(&self, body: &str, sweep: Sweep) -> Result<()> {
        // `<release prefix>o:<16 hex digits>`.
        let Some(release) = body.len().checked_sub(18).and_then(|at| body.get(..at)) else {
            return Ok(());
        };
        let id = &body[body.len() - 16..];
        let (mode, ttl) = match sweep {
            Sweep::Delete => ("delete", 0),
            Sweep::Renew(ttl) => ("renew", ttl),
        };
        let (mut offset, mut done) = (0i64, 0i64);
        loop {
            let call = Call::new(&self.shared.scripts.sweep)
                .key(body)
                .arg(mode)
                .arg(release)
                .arg(id)
                .arg(offset)
                .arg(done)
                .arg(ttl)
                .arg(&self.shared.channel)
                .arg(&self.purpose);
            let (next, handled, all): (i64, i64, i64) = self.write(&call).await?;
            if handled >= all || next <= offset {
                return Ok(());
            }
            (offset, done) = (next, handled);
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
        let last_usage_ms = cache_core::whole_millis(settings.last_usage);
        let prefix = keys::prefix(purpose);
        let tag = keys::version_tag(&shared.version);
        RedisCache {
            ops: Arc::new(Ops {
                own: keys::version_prefix(&prefix, &tag),
                prefix,
                tag,
                shared,
                purpose: purpose.to_owned(),
                max_age_ms: cache_core::whole_millis(settings.max_age),
                last_usage_ms,
                kept_max_age_ms: cache_core::whole_millis(settings.kept().max_age),
                kept_last_usage_ms: cache_core::whole_millis(settings.kept().last_usage),
                renew_after_ms: (last_usage_ms / 10).max(1),
                lease_ms: cache_core::whole_millis(settings.lease.effective()),
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
        Ok(keys::index_key(&self.ops.own, index.name(), key))
    }

    fn check(&self, index: I) -> Result<()> {
        if self.indices.contains(&index) {
            Ok(())
        } else {
            Err(Error::unknown_index(&self.ops.purpose, index.name()))
        }
    }

    /// The object behind `key`: one plain `GET` (a second for an object stored once);
    /// expired objects kept for MaxStale only when `stale_ok`.
    async fn fetch(&self, index: I, key: &str, stale_ok: bool) -> Result<Option<Hit<V>>> {
        let index_key = self.index_key(index, key)?;
        let ops = &self.ops;
        let (index_key_ref, own) = (&index_key, &ops.own);
        let asked = Instant::now();
        // Both reads of an object stored once in one bounded call.
        let found = ops
            .with_connection(ops.shared.config.read_timeout, |mut c| async move {
                let bytes = c.get::<_, Option<Vec<u8>>>(index_key_ref).await?;
                let body = match bytes.as_deref().and_then(value::parse) {
                    Some(Stored::Pointer(id)) => {
                        let body = keys::body_key(own, id);
                        let bytes = c.get::<_, Option<Vec<u8>>>(&body).await?;
                        Some((body, bytes))
                    }
                    _ => None,
                };
                Ok((bytes, body))
            })
            .await;
        match found {
            Ok((None, _)) => Ok(None),
            Ok((Some(bytes), None)) => match value::parse(&bytes) {
                Some(Stored::Object(object)) if !object.body => {
                    self.hit((index, key), index_key, &object, asked, stale_ok)
                        .await
                }
                Some(Stored::Tombstone | Stored::Pointer(_)) => Ok(None),
                _ => ops.discard(index.name(), key).await.map(|_| None),
            },
            Ok((Some(_), Some((body, bytes)))) => match bytes.as_deref().and_then(value::parse) {
                Some(Stored::Object(object)) if object.body => {
                    self.hit((index, key), body, &object, asked, stale_ok).await
                }
                // Removed or expired meanwhile: the pointer is swept or expires.
                _ => Ok(None),
            },
            // The key holds another type (written behind the cache's back): garbage.
            Err(error) if error.kind() == ErrorKind::Rejected => {
                ops.discard(index.name(), key).await.map(|_| None)
            }
            Err(error) => Err(error),
        }
    }

    /// What a key held: the object, or a miss — after removing it when it does not decode.
    /// `key` is where the object is stored (a copy, or the body). Its age is the server's
    /// time of the set against this machine's clock (as exact as the clocks agree).
    async fn hit(
        &self,
        (index, asked_key): (I, &str),
        key: String,
        object: &Object<'_>,
        asked: Instant,
        stale_ok: bool,
    ) -> Result<Option<Hit<V>>> {
        let ops = &self.ops;
        let now = now_ms();
        let expired = ops.expired(object, now);
        if !stale_ok && expired {
            // Kept past its expiry for stale-if-error only.
            return Ok(None);
        }
        match codec::decode_hit::<V>(object.payload, &ops.purpose, CONNECTOR) {
            Some(value) => {
                // A stale read is no use: renewing LastUsage would make an expired object
                // fresh again for plain gets.
                if !expired {
                    ops.renew_if_due(object, key, asked, now);
                }
                let age = Duration::from_millis(now.saturating_sub(object.created_ms));
                Ok(Some(Hit {
                    value,
                    age: Some(age),
                }))
            }
            None if object.body => {
                // Undecodable: remove the body (its pointers then answer nothing).
                let id = object.id.to_owned();
                let body = keys::body_key(&ops.own, &id);
                let call = Call::new(&ops.shared.scripts.invalidate)
                    .key(&body)
                    .arg(&ops.prefix)
                    .arg(&ops.tag)
                    .arg("body")
                    .arg(ops.lease_ms)
                    .arg(&ops.shared.channel)
                    .arg(&ops.purpose)
                    .arg(ops.announcements((Kind::Invalidate, false), index.name(), &[asked_key]));
                let killed: Vec<String> = ops.write(&call).await?;
                ops.sweep(killed, Sweep::Delete);
                Ok(None)
            }
            None => ops.discard(index.name(), asked_key).await.map(|_| None),
        }
    }

    /// Stores `value` — as a fill for the holder of `lease`, refused when a change overtook it.
    async fn store(&self, value: Arc<V>, lease: Option<&LeaseToken>) -> Result<Filled> {
        let ops = &self.ops;
        let payload = codec::encode(&*value)?;
        let limit = ops.shared.config.max_object_size;
        if payload.len() as u64 > limit {
            return Err(Error::rejected(format!(
                "redis: the object is {} bytes encoded, more than Caches.Connectors.Redis.\
                 MaxObjectSize ({}); it is not cached (raise the limit if it should be)",
                payload.len(),
                cache_core::settings::byte_size::format(limit)
            )));
        }
        let pairs: Vec<(&'static str, String)> = cache_core::entry_keys(&*value, &self.indices)
            .into_iter()
            .map(|(position, key)| (self.indices[position].name(), key))
            .collect();
        if pairs.is_empty() {
            return Ok(Filled::Stored);
        }
        let suffixes: Vec<String> = pairs
            .iter()
            .map(|(index, key)| keys::suffix(index, key))
            .collect();
        let digest = cache_core::keys::key_set_digest(
            pairs.iter().map(|(index, key)| (*index, key.as_str())),
        );
        let list = value::key_list(suffixes.iter().map(String::as_str));
        let inline =
            cache_core::keys::inline_copies(suffixes.len(), value::copy_len(&list, &payload));
        let mut tail = list.into_bytes();
        tail.extend_from_slice(&payload);
        let index_keys: Vec<String> = suffixes
            .iter()
            .map(|suffix| format!("{}{suffix}", ops.own))
            .collect();
        let id = keys::new_object_id();
        let batch_size = if inline { index_keys.len() } else { BATCH };
        let batches = index_keys.len().div_ceil(batch_size);
        let (leased, token) = match lease {
            Some(lease) => (keys::suffix(lease.index, &lease.key), lease.token.as_str()),
            None => (String::new(), ""),
        };
        for (n, (batch, batch_pairs)) in index_keys
            .chunks(batch_size)
            .zip(pairs.chunks(batch_size))
            .enumerate()
        {
            // Every older object holding one of these keys is gone: announced as an
            // invalidation of the keys the object takes, index by index.
            let mut announcements = Vec::new();
            for index in self.indices.iter().map(|i| i.name()) {
                let keys: Vec<&str> = batch_pairs
                    .iter()
                    .filter(|(name, _)| *name == index)
                    .map(|(_, key)| key.as_str())
                    .collect();
                if !keys.is_empty() {
                    announcements.extend(ops.announcements((Kind::Invalidate, true), index, &keys));
                }
            }
            let call = Call::new(&ops.shared.scripts.set)
                .keys(batch.iter().map(String::as_str))
                .arg(&ops.prefix)
                .arg(&ops.tag)
                .arg(&id)
                .arg(if inline { "I" } else { "P" })
                .arg(&digest)
                .arg(if n == 0 { &tail[..] } else { &[][..] })
                .arg(ops.kept_max_age_ms)
                .arg(ops.kept_last_usage_ms)
                .arg(&leased)
                .arg(token)
                .arg(if n + 1 == batches { "1" } else { "0" })
                .arg(&ops.shared.channel)
                .arg(&ops.purpose)
                .arg(announcements);
            let mut outcome: Vec<String> = ops.write(&call).await?;
            let stored = outcome.first().is_some_and(|s| s == "stored");
            let killed = outcome.split_off(1.min(outcome.len()));
            ops.sweep(killed, Sweep::Delete);
            if !stored {
                return Ok(Filled::Refused);
            }
        }
        Ok(Filled::Stored)
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

    /// Every change is published by its script, on the connector's channel.
    fn announced_on(&self) -> Option<u64> {
        Some(self.ops.shared.origin)
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        // `fetch` directly: through `get_entry` would box a second future per get.
        Ok(self.fetch(index, key, false).await?.map(|hit| hit.value))
    }

    /// One plain `GET` of the index key, which holds the whole object (a second `GET` for
    /// an object stored once).
    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.fetch(index, key, false).await
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.fetch(index, key, true).await
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        self.store(value, None).await.map(drop)
    }

    /// One script: the key checked once more, and leased when it holds no live object.
    async fn lease(&self, index: I, key: &str) -> Result<Lease<V>> {
        let ops = &self.ops;
        if ops.lease_ms == 0 {
            return Ok(Lease::None);
        }
        let index_key = self.index_key(index, key)?;
        let token = keys::new_object_id();
        let call = Call::new(&ops.shared.scripts.lease)
            .key(&index_key)
            .arg(&ops.prefix)
            .arg(&ops.tag)
            .arg(ops.lease_ms)
            .arg(&token)
            .arg(ops.max_age_ms)
            .arg(ops.last_usage_ms);
        let asked = Instant::now();
        let answer: Vec<redis::Value> = ops.write(&call).await?;
        let status = match answer.first() {
            Some(redis::Value::BulkString(s)) => s.as_slice(),
            Some(redis::Value::SimpleString(s)) => s.as_bytes(),
            _ => b"",
        };
        match (status, answer.get(1)) {
            (b"granted", _) => Ok(Lease::Granted(LeaseToken {
                index: index.name(),
                key: key.to_owned(),
                token,
            })),
            (b"held", Some(redis::Value::Int(left))) => Ok(Lease::Held(Duration::from_millis(
                u64::try_from(*left).unwrap_or(0),
            ))),
            (b"hit", Some(redis::Value::BulkString(bytes))) => match value::parse(bytes) {
                Some(Stored::Object(object)) => {
                    let key_stored = if object.body {
                        keys::body_key(&ops.own, object.id)
                    } else {
                        index_key
                    };
                    let hit = self
                        .hit((index, key), key_stored, &object, asked, false)
                        .await?;
                    Ok(hit.map_or(Lease::None, Lease::Hit))
                }
                _ => Ok(Lease::None),
            },
            _ => Err(Error::backend(
                "redis: the lease script answered something unexpected; please report this",
            )),
        }
    }

    /// The set script as the holder of `lease`: refused when a change overtook the load.
    async fn fill(&self, value: Arc<V>, lease: &LeaseToken) -> Result<Filled> {
        self.store(value, Some(lease)).await
    }

    /// One script: the lease's key removed when it still holds this lease's token.
    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        let ops = &self.ops;
        let key = keys::lease_key(&ops.own, &keys::suffix(lease.index, &lease.key));
        let call = Call::new(&ops.shared.scripts.release)
            .key(&key)
            .arg(&lease.token);
        ops.write::<i64>(&call).await.map(drop)
    }

    /// The renewal script on the object's first key, as a hit that finds LastUsage due would.
    async fn touch(&self, value: &V) -> Result<()> {
        let Some((position, key)) = cache_core::entry_keys(value, &self.indices)
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        if self.ops.last_usage_ms == 0 {
            return Ok(());
        }
        let key = keys::index_key(&self.ops.own, self.indices[position].name(), &key);
        self.ops.renew("", &key, Instant::now()).await
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        self.ops.invalidate_keys(index.name(), keys, false).await
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let ops = &self.ops;
        for batch in keys.chunks(BATCH) {
            let index_keys: Vec<String> = batch
                .iter()
                .map(|key| keys::index_key(&ops.own, index.name(), key))
                .collect();
            let call = Call::new(&ops.shared.scripts.delete)
                .keys(index_keys.iter().map(String::as_str))
                .arg(&ops.prefix)
                .arg(&ops.tag)
                .arg(ops.lease_ms)
                .arg(&ops.shared.channel)
                .arg(ops.announcements((Kind::Delete, false), index.name(), batch));
            ops.write::<i64>(&call).await?;
        }
        Ok(())
    }

    /// Removes every key of this object cache (all releases, and what the layout before this
    /// one left) in batches of `SCAN` + `UNLINK`; never `FLUSHDB`, never `KEYS`, nothing
    /// outside this cache's prefix. Each batch is a script called with a key of the cache's
    /// hash slot, so on a Redis Cluster it runs on the node that holds all of the cache's
    /// keys.
    async fn truncate(&self) -> Result<()> {
        let ops = &self.ops;
        let older = keys::prefix_in("oc2", &ops.purpose);
        for (prefix, mode) in [(&ops.prefix, "oc3"), (&older, "plain")] {
            let pattern = keys::scan_pattern(prefix);
            let mut cursor = "0".to_owned();
            loop {
                // The last batch of this layout announces the truncate.
                let announcements = if mode == "oc3" {
                    ops.announcements((Kind::Truncate, false), "", &[])
                } else {
                    Vec::new()
                };
                let call = Call::new(&ops.shared.scripts.truncate)
                    .key(prefix)
                    .arg(&cursor)
                    .arg(&pattern)
                    .arg(500)
                    .arg(mode)
                    .arg(&ops.shared.channel)
                    .arg(announcements);
                cursor = ops.write::<String>(&call).await?;
                if cursor == "0" {
                    break;
                }
            }
        }
        tracing::debug!(purpose = %ops.purpose, connector = CONNECTOR, "truncated");
        Ok(())
    }
}
