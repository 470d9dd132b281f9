//! [`PostgresCache`]: one object cache in the connector's tables.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use cache_core::announcement::{Announcement, Kind};
use cache_core::{
    Cache, CacheSettings, Entry, Error, Filled, Hit, Index, Lease, LeaseToken, Prune, Result,
    async_trait, codec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;

use crate::CONNECTOR;
use crate::reads::Reads;
use crate::shared::Shared;
use crate::sql::Stmt;

/// A stored object as read, shared by every get of its key that one statement answered:
/// its payload and its age in milliseconds (on the server's clock).
#[derive(Clone, Debug)]
struct Payload {
    bytes: Arc<[u8]>,
    age_ms: i64,
}

/// What a key row takes besides its payload (header, purpose, index, key, version, times,
/// digest), roughly: counted against the inline budget with the payload.
const ROW_OVERHEAD: usize = 120;

/// Rows one prune statement removes at most, so a huge backlog never holds long locks.
pub const PRUNE_BATCH: i64 = 2_000;

/// Rows one statement of a truncate removes at most (see [`PostgresCache`]'s `truncate`).
pub const TRUNCATE_BATCH: i64 = 10_000;

/// Longest key (in bytes) stored as it is; longer keys, and keys with a NUL byte (which
/// `text` cannot hold), are stored as a digest ([`cache_core::keys::storable`]), so that a key
/// row always fits a btree entry (about 2.7 kB with the purpose and index name).
pub const MAX_PLAIN_KEY: usize = 512;

/// A key, purpose or version as stored in the tables.
fn stored(key: &str) -> std::borrow::Cow<'_, str> {
    cache_core::keys::storable(key, MAX_PLAIN_KEY)
}

/// Keys as stored in the tables, for the statements that take a key list.
fn stored_keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| stored(k).into_owned()).collect()
}

/// One object cache of the [PostgreSQL connector](crate::PostgresConnector).
pub struct PostgresCache<I: Index, V: Entry<I>> {
    shared: Arc<Shared>,
    purpose: String,
    indices: Box<[I]>,
    /// The gets of each index (same order as `indices`).
    reads: Box<[Reads<Payload>]>,
    max_age_ms: i64,
    last_usage_ms: i64,
    /// MaxAge and LastUsage stretched by MaxStale: how long rows are kept (pruned later),
    /// for stale-if-error.
    kept_max_age_ms: i64,
    kept_last_usage_ms: i64,
    /// LastUsage is written again only once this long has passed since the last write: a
    /// tenth of LastUsage, so most hits write no row (reference defect 10), and an idle
    /// object expires at most 10 % early.
    renew_after_ms: i64,
    /// How long a read-through's lease holds, and a change is noted for fills; 0: no leases.
    lease_ms: i64,
    values: PhantomData<fn() -> V>,
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for PostgresCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCache")
            .field("purpose", &self.purpose)
            .field("indices", &self.indices)
            .field("max_age_ms", &self.max_age_ms)
            .field("last_usage_ms", &self.last_usage_ms)
            .finish()
    }
}

/// What one [`PostgresCache::prune_report`] run removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Rows removed: the keys of expired objects (an object has one row per key).
    pub rows: u64,
    /// Statements run, each removing at most [`PRUNE_BATCH`] rows.
    pub batches: u64,
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl<I, V> PostgresCache<I, V>
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
        let last_usage_ms = ms(cache_core::whole_millis(settings.last_usage));
        let indices = cache_core::unique_indices(indices).into_boxed_slice();
        let reads = indices
            .iter()
            .map(|_| Reads::new(shared.max_concurrent_reads, shared.db.longest_call()))
            .collect();
        PostgresCache {
            shared,
            purpose: stored(purpose).into_owned(),
            indices,
            reads,
            max_age_ms: ms(cache_core::whole_millis(settings.max_age)),
            last_usage_ms,
            kept_max_age_ms: ms(cache_core::whole_millis(settings.kept().max_age)),
            kept_last_usage_ms: ms(cache_core::whole_millis(settings.kept().last_usage)),
            renew_after_ms: if last_usage_ms > 0 {
                (last_usage_ms / 10).max(1)
            } else {
                0
            },
            lease_ms: ms(cache_core::whole_millis(settings.lease.effective())),
            values: PhantomData,
        }
    }

    fn check(&self, index: I) -> Result<&'static str> {
        self.position(index).map(|_| index.name())
    }

    fn position(&self, index: I) -> Result<usize> {
        self.indices
            .iter()
            .position(|i| *i == index)
            .ok_or_else(|| Error::unknown_index(&self.purpose, index.name()))
    }

    /// The payloads of the live objects behind `keys` of one index, in one statement (one
    /// round trip; see [`Reads`]). Writes LastUsage back, in a second statement, only for
    /// objects whose last write is older than `renew_after_ms`.
    async fn lookup(
        &self,
        index_name: &str,
        keys: Vec<String>,
    ) -> Result<HashMap<String, Payload>> {
        self.lookup_aged(index_name, keys, self.max_age_ms, self.last_usage_ms, true)
            .await
    }

    /// [`lookup`](Self::lookup) of objects younger than `max_age_ms` and used within
    /// `last_usage_ms` (the kept ages find what stale-if-error may answer with); renews
    /// LastUsage of what it found only when `renews` says so.
    async fn lookup_aged(
        &self,
        index_name: &str,
        keys: Vec<String>,
        max_age_ms: i64,
        last_usage_ms: i64,
        renews: bool,
    ) -> Result<HashMap<String, Payload>> {
        let version = &*self.shared.version;
        let (stmt, key_or_keys): (Stmt, &(dyn ToSql + Sync)) = match keys.as_slice() {
            [key] => (Stmt::Get, key),
            _ => (Stmt::GetMany, &keys),
        };
        let params: [&(dyn ToSql + Sync); 7] = [
            &self.purpose,
            &index_name,
            key_or_keys,
            &version,
            &max_age_ms,
            &last_usage_ms,
            &self.renew_after_ms,
        ];
        let rows = self.shared.db.query(stmt, &params).await?;
        let mut found = HashMap::with_capacity(rows.len());
        let mut renew: Vec<i64> = Vec::new();
        for row in &rows {
            let unreadable =
                |e| Error::backend("postgres: a read returned unreadable columns").with_source(e);
            let key: String = row.try_get(0).map_err(unreadable)?;
            let payload: &[u8] = row.try_get(1).map_err(unreadable)?;
            if renews && row.try_get(3).unwrap_or(false) {
                renew.push(row.try_get(2).map_err(unreadable)?);
            }
            let age_ms: i64 = row.try_get(4).map_err(unreadable)?;
            found.insert(
                key,
                Payload {
                    bytes: Arc::from(payload),
                    age_ms,
                },
            );
        }
        if !renew.is_empty() {
            // Rare (once per tenth of LastUsage per object): the only hits that write a row.
            // Best effort: a renewal that fails never turns the hits it follows into errors.
            if let Err(error) = self
                .shared
                .db
                .query(
                    Stmt::Renew,
                    &[
                        &renew,
                        &self.renew_after_ms,
                        &self.max_age_ms,
                        &self.last_usage_ms,
                    ],
                )
                .await
            {
                tracing::debug!(
                    purpose = %self.purpose,
                    connector = CONNECTOR,
                    %error,
                    "renewing LastUsage failed; the next hit tries again"
                );
            }
        }
        Ok(found)
    }

    /// The live object behind `key` under `index`, with its age (a get).
    async fn read(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        let position = self.position(index)?;
        let found = self.reads[position]
            .get(&stored(key), |keys| self.lookup(index.name(), keys))
            .await?;
        let Some(payload) = found else {
            return Ok(None);
        };
        match codec::decode_hit::<V>(&payload.bytes, &self.purpose, CONNECTOR) {
            Some(value) => Ok(Some(Hit {
                value,
                age: Some(std::time::Duration::from_millis(
                    u64::try_from(payload.age_ms).unwrap_or(0),
                )),
            })),
            None => {
                // Not decodable by this release: its object goes (other releases' stay).
                self.remove(index, &[key], Some(&self.shared.version))
                    .await?;
                Ok(None)
            }
        }
    }

    /// Stores `value` — as a fill for the holder of `lease`, refused when a change overtook it.
    async fn store(&self, value: Arc<V>, lease: Option<&LeaseToken>) -> Result<Filled> {
        let payload = codec::encode(&*value)?;
        let limit = self.shared.max_object_size;
        if payload.len() as u64 > limit {
            return Err(Error::rejected(format!(
                "postgres: the object is {} bytes encoded, more than Caches.Connectors.Postgres.\
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
        // Every older object holding one of these keys is gone: announced as an invalidation
        // of the keys the object takes, index by index.
        let mut messages = Vec::new();
        for index in self.indices.iter().map(|i| i.name()) {
            let keys: Vec<&str> = pairs
                .iter()
                .filter(|(name, _)| *name == index)
                .map(|(_, key)| key.as_str())
                .collect();
            if !keys.is_empty() {
                messages.extend(self.announcements((Kind::Invalidate, true), index, &keys));
            }
        }
        let digest = cache_core::keys::key_set_digest(
            pairs.iter().map(|(index, key)| (*index, key.as_str())),
        );
        let (indices, keys): (Vec<&str>, Vec<String>) = pairs
            .into_iter()
            .map(|(index, key)| {
                let key = match stored(&key) {
                    std::borrow::Cow::Borrowed(_) => key,
                    std::borrow::Cow::Owned(digest) => digest,
                };
                (index, key)
            })
            .unzip();
        // A row's copy: the payload and the row's own columns.
        let row_bytes = payload.len() + ROW_OVERHEAD;
        let inline = cache_core::keys::inline_copies(keys.len(), row_bytes);
        let rows = self
            .shared
            .db
            .query(
                Stmt::Set,
                &[
                    &self.purpose,
                    &&*self.shared.version,
                    &payload,
                    &indices,
                    &keys,
                    &digest,
                    &inline,
                    &self.shared.channel,
                    &messages,
                    &lease.map(|l| l.index),
                    &lease.map(|l| stored(&l.key).into_owned()),
                    &lease.map(|l| l.token.as_str()),
                ],
            )
            .await?;
        let status: Option<String> = rows.first().and_then(|row| row.try_get(0).ok());
        Ok(if status.as_deref() == Some("refused") {
            Filled::Refused
        } else {
            Filled::Stored
        })
    }

    /// The announcements of `kind` of `keys` under `index` (`replaced`: by a set), as the
    /// functions notify them with the change.
    fn announcements(
        &self,
        (kind, replaced): (Kind, bool),
        index: &str,
        keys: &[&str],
    ) -> Vec<String> {
        Announcement::split(
            self.shared.origin,
            &self.purpose,
            (kind, replaced),
            index,
            keys,
            crate::channel::MAX_MESSAGE,
        )
        .into_iter()
        .map(|m| String::from_utf8(m).expect("JSON is UTF-8"))
        .collect()
    }

    /// Removes the objects behind `keys` of `index` entirely, and the keys' rows: of every
    /// release, or of `release` only.
    async fn remove(&self, index: I, keys: &[&str], release: Option<&str>) -> Result<()> {
        let index_name = self.check(index)?;
        if keys.is_empty() {
            return Ok(());
        }
        let messages = self.announcements((Kind::Invalidate, false), index_name, keys);
        let keys = stored_keys(keys);
        self.shared
            .db
            .count(
                Stmt::Invalidate,
                &[
                    &self.purpose,
                    &index_name,
                    &keys,
                    &release,
                    &self.shared.channel,
                    &messages,
                    &self.lease_ms,
                ],
            )
            .await
            .map(drop)
    }

    /// Removes the rows of expired objects in batches of [`PRUNE_BATCH`] rows (objects stored
    /// once: [`PRUNE_BATCH`] bodies, with their key rows), and says how much went. Never
    /// renews LastUsage.
    pub async fn prune_report(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let params: [&(dyn ToSql + Sync); 4] = [
            &self.purpose,
            &self.kept_max_age_ms,
            &self.kept_last_usage_ms,
            &PRUNE_BATCH,
        ];
        loop {
            let removed = self.shared.db.count(Stmt::PruneKeys, &params).await?;
            report.rows += removed;
            report.batches += 1;
            if removed < PRUNE_BATCH as u64 {
                break;
            }
        }
        loop {
            let rows = self.shared.db.query(Stmt::PruneBodies, &params).await?;
            let column = |n| {
                rows.first()
                    .and_then(|row| row.try_get::<_, i64>(n).ok())
                    .map_or(0, |v| u64::try_from(v).unwrap_or(0))
            };
            let (bodies, key_rows) = (column(0), column(1));
            report.rows += key_rows;
            report.batches += 1;
            if bodies < PRUNE_BATCH as u64 {
                break;
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl<I, V> Cache<I, V> for PostgresCache<I, V>
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
        // `read` directly: through `get_entry` would box a second future per get.
        Ok(self.read(index, key).await?.map(|hit| hit.value))
    }

    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.read(index, key).await
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.check(index)?;
        let key = stored(key).into_owned();
        let found = self
            .lookup_aged(
                index.name(),
                vec![key.clone()],
                self.kept_max_age_ms,
                self.kept_last_usage_ms,
                // A stale read is no use: renewing LastUsage would make an expired object
                // fresh again for plain gets.
                false,
            )
            .await?;
        Ok(found.get(&key).and_then(|payload| {
            let value = codec::decode_hit::<V>(&payload.bytes, &self.purpose, CONNECTOR)?;
            Some(Hit {
                value,
                age: Some(std::time::Duration::from_millis(
                    u64::try_from(payload.age_ms).unwrap_or(0),
                )),
            })
        }))
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        self.store(value, None).await.map(drop)
    }

    /// One statement: the key checked once more, and leased when it holds no live object.
    async fn lease(&self, index: I, key: &str) -> Result<Lease<V>> {
        let index_name = self.check(index)?;
        if self.lease_ms == 0 {
            return Ok(Lease::None);
        }
        let stored_key = stored(key).into_owned();
        let token = format!("{:016x}", rand::random::<u64>());
        let rows = self
            .shared
            .db
            .query(
                Stmt::Lease,
                &[
                    &self.purpose,
                    &index_name,
                    &stored_key,
                    &&*self.shared.version,
                    &self.lease_ms,
                    &token,
                    &self.max_age_ms,
                    &self.last_usage_ms,
                ],
            )
            .await?;
        let unreadable =
            |e| Error::backend("postgres: a lease returned unreadable columns").with_source(e);
        let Some(row) = rows.first() else {
            return Ok(Lease::None);
        };
        let status: String = row.try_get(0).map_err(unreadable)?;
        match status.as_str() {
            "granted" => Ok(Lease::Granted(LeaseToken {
                index: index_name,
                key: key.to_owned(),
                token,
            })),
            "held" => {
                let left: Option<i64> = row.try_get(3).map_err(unreadable)?;
                Ok(Lease::Held(std::time::Duration::from_millis(
                    u64::try_from(left.unwrap_or(0)).unwrap_or(0),
                )))
            }
            _ => {
                let payload: Vec<u8> = row.try_get(1).map_err(unreadable)?;
                let age_ms: i64 = row.try_get(2).map_err(unreadable)?;
                Ok(
                    codec::decode_hit::<V>(&payload, &self.purpose, CONNECTOR).map_or(
                        Lease::None,
                        |value| {
                            Lease::Hit(Hit {
                                value,
                                age: Some(std::time::Duration::from_millis(
                                    u64::try_from(age_ms).unwrap_or(0),
                                )),
                            })
                        },
                    ),
                )
            }
        }
    }

    /// `put_object` as the holder of `lease`: refused when a change overtook the load.
    async fn fill(&self, value: Arc<V>, lease: &LeaseToken) -> Result<Filled> {
        self.store(value, Some(lease)).await
    }

    /// One statement: the lease's row removed when it still holds this lease's token.
    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        let stored_key = stored(&lease.key).into_owned();
        self.shared
            .db
            .query(
                Stmt::Release,
                &[
                    &self.purpose,
                    &lease.index,
                    &stored_key,
                    &&*self.shared.version,
                    &lease.token,
                ],
            )
            .await
            .map(drop)
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.remove(index, keys, None).await
    }

    /// Renews LastUsage of the object behind the value's first key, as a hit that finds it
    /// due would.
    async fn touch(&self, value: &V) -> Result<()> {
        if self.last_usage_ms == 0 {
            return Ok(());
        }
        let Some((position, key)) = cache_core::entry_keys(value, &self.indices)
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let key = stored(&key).into_owned();
        self.shared
            .db
            .query(
                Stmt::RenewKey,
                &[
                    &self.purpose,
                    &self.indices[position].name(),
                    &key,
                    &&*self.shared.version,
                    &self.renew_after_ms,
                    &self.max_age_ms,
                    &self.last_usage_ms,
                ],
            )
            .await
            .map(drop)
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        let index_name = self.check(index)?;
        if keys.is_empty() {
            return Ok(());
        }
        let messages = self.announcements((Kind::Delete, false), index_name, keys);
        let keys = stored_keys(keys);
        self.shared
            .db
            .query(
                Stmt::Delete,
                &[
                    &self.purpose,
                    &index_name,
                    &keys,
                    &self.shared.channel,
                    &messages,
                    &self.lease_ms,
                ],
            )
            .await
            .map(drop)
    }

    /// Removes every key and object of this object cache (all versions): batches of
    /// [`TRUNCATE_BATCH`] rows, each its own short statement (a million objects would not be
    /// removed within one `StatementTimeout`, and would hold their rows meanwhile), then the
    /// rest and the announcement in one. Once it returns no get finds anything stored before
    /// it began; during it, gets may still find objects it has not reached yet.
    async fn truncate(&self) -> Result<()> {
        let db = &self.shared.db;
        let mut after = (String::new(), String::new(), String::new());
        loop {
            let rows = db
                .query(
                    Stmt::TruncateKeys,
                    &[&self.purpose, &TRUNCATE_BATCH, &after.0, &after.1, &after.2],
                )
                .await?;
            let last = rows.first().and_then(|row| {
                Some((
                    row.try_get::<_, Option<String>>(1).ok()??,
                    row.try_get::<_, Option<String>>(2).ok()??,
                    row.try_get::<_, Option<String>>(3).ok()??,
                ))
            });
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        let mut after_id = i64::MIN;
        loop {
            let rows = db
                .query(
                    Stmt::TruncateBodies,
                    &[&self.purpose, &TRUNCATE_BATCH, &after_id],
                )
                .await?;
            match rows
                .first()
                .and_then(|row| row.try_get::<_, Option<i64>>(1).ok().flatten())
            {
                Some(last) => after_id = last,
                None => break,
            }
        }
        let messages = self.announcements((Kind::Truncate, false), "", &[]);
        self.shared
            .db
            .query(
                Stmt::Truncate,
                &[&self.purpose, &self.shared.channel, &messages],
            )
            .await?;
        tracing::debug!(purpose = %self.purpose, connector = CONNECTOR, "truncated");
        Ok(())
    }

    /// Every change is notified by its function, in its transaction.
    fn announced_on(&self) -> Option<u64> {
        Some(self.shared.origin)
    }

    fn into_prune(self: Arc<Self>) -> Option<Arc<dyn Prune>> {
        Some(self)
    }
}

#[async_trait]
impl<I, V> Prune for PostgresCache<I, V>
where
    I: Index,
    V: Entry<I> + Serialize + DeserializeOwned,
{
    async fn prune(&self) -> Result<u64> {
        let report = self.prune_report().await?;
        tracing::debug!(
            purpose = %self.purpose,
            connector = CONNECTOR,
            rows = report.rows,
            batches = report.batches,
            "pruned"
        );
        Ok(report.rows)
    }
}
