//! The connector-level cache contract every backend and decorator implements.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::index::{Entry, Index};
use crate::lease::{Filled, Lease, LeaseToken};

/// A hit, with what the connector knows of the object.
#[derive(Debug)]
pub struct Hit<V> {
    /// The object.
    pub value: Arc<V>,
    /// How long ago it was set (the age MaxAge counts), when the connector knows it.
    pub age: Option<Duration>,
}

impl<V> Clone for Hit<V> {
    fn clone(&self) -> Self {
        Hit {
            value: Arc::clone(&self.value),
            age: self.age,
        }
    }
}

/// One object cache as a connector implements it.
///
/// Every operation returns a [`Result`]; a miss is `Ok(None)`, never an error. Applications
/// do not call this trait directly: they hold an [`ObjectCache`](crate::ObjectCache), which
/// applies the failure policy (gets and sets never fail the caller).
///
/// The trait is object safe, so caches are held as `Arc<dyn Cache<I, V>>` and can be swapped
/// at runtime; decorators (circuit breaker, ...) wrap one and forward every method.
#[async_trait]
pub trait Cache<I: Index, V: Entry<I>>: Send + Sync + 'static {
    /// The name of the connector storing this cache (`memory`, `redis`, ...), for logs.
    fn connector(&self) -> &'static str;

    /// The indices this cache was built with; invalidate and delete through any other index
    /// fail with [`UnknownIndex`](crate::ErrorKind::UnknownIndex). (The no-op cache reports
    /// none and accepts every index.)
    fn indices(&self) -> &[I];

    /// Answers a get without awaiting when the connector can (an in-process connector);
    /// `None` means "call [`get`](Cache::get)". Lets the memory connector skip the boxed
    /// future of an async call on its hot path.
    fn get_ready(&self, index: I, key: &str) -> Option<Result<Option<Arc<V>>>> {
        let _ = (index, key);
        None
    }

    /// The object reachable through `key` under `index`, or `None` if the key is unknown, the
    /// object was invalidated or has expired. A hit renews the object's LastUsage.
    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>>;

    /// Like [`get`](Cache::get), with the object's age when the connector knows it (a near
    /// cache fills its memory level with it, so an object never outlives its MaxAge there).
    /// The default knows no age.
    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        Ok(self
            .get(index, key)
            .await?
            .map(|value| Hit { value, age: None }))
    }

    /// An object that expired less than MaxStale ago (never an invalidated one), for
    /// stale-if-error: `ObjectCache::get_or_load` asks for it when its load failed. The default
    /// keeps nothing past expiry.
    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        let _ = (index, key);
        Ok(None)
    }

    /// Stores `value` under every key of every index of this cache. Any older object that one
    /// of those keys pointed at is invalidated entirely.
    async fn set(&self, value: Arc<V>) -> Result<()>;

    /// Makes the objects reachable through `keys` unreachable through every index. Unknown
    /// keys are ignored and never stop the other keys from being invalidated.
    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()>;

    /// Removes only these key mappings of `index`; the objects stay reachable through their
    /// other keys.
    async fn delete(&self, index: I, keys: &[&str]) -> Result<()>;

    /// Empties this object cache, every version and index of it, and nothing else.
    async fn truncate(&self) -> Result<()>;

    /// After a miss of `key` under `index` in a read-through: a [`Lease`] on the key — checked
    /// once more and leased atomically (one script, one statement) — so that across processes
    /// one loads and the others wait for its fill. The default keeps no leases
    /// ([`Lease::None`]).
    async fn lease(&self, index: I, key: &str) -> Result<Lease<V>> {
        let _ = (index, key);
        Ok(Lease::None)
    }

    /// Stores a loaded `value` for the holder of `lease`: only if no set, invalidation, delete
    /// or truncate touched any of the value's keys since the lease was taken (and the lease is
    /// still this one). Every change removes the leases of the keys it touches. The default
    /// (a cache without leases) sets the value.
    async fn fill(&self, value: Arc<V>, lease: &LeaseToken) -> Result<Filled> {
        let _ = lease;
        self.set(value).await.map(|()| Filled::Stored)
    }

    /// Ends `lease` without a fill — its load found nothing or failed — when it is still this
    /// one: a process waiting for its fill leases the key at once instead of waiting for the
    /// lease to expire. Best effort (an unreleased lease expires); the default does nothing.
    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        let _ = lease;
        Ok(())
    }

    /// Renews the LastUsage of the object stored under `value`'s keys as a hit would (a
    /// stored object that replaced it meanwhile is renewed instead, which is harmless): what a
    /// near cache does for the objects it answers from memory, so that the shared level keeps
    /// an object read often in any process. Best effort; the default does nothing.
    async fn touch(&self, value: &V) -> Result<()> {
        let _ = value;
        Ok(())
    }

    /// A token for the changes this cache has seen so far — its own and, for a near cache,
    /// those other processes announced — for [`changed_since`](Cache::changed_since). The
    /// default (a cache that keeps no such record) is 0.
    fn change_token(&self) -> u64 {
        0
    }

    /// Whether a change of one of `value`'s keys was seen since `token` (from
    /// [`change_token`](Cache::change_token)): a value loaded from the source of truth since
    /// then may be older than the change, and must not be cached. The default sees none (the
    /// caller's own bookkeeping then decides).
    fn changed_since(&self, token: u64, value: &V) -> bool {
        let _ = (token, value);
        false
    }

    /// The origin under which this cache's server announces every change made through it, as
    /// part of the change (a Redis script publishes it, a PostgreSQL function notifies it in
    /// the same transaction): a near cache over it whose hub has the same origin announces
    /// nothing itself. `None` (the default): the server announces nothing.
    fn announced_on(&self) -> Option<u64> {
        None
    }

    /// The prune capability of this cache, for connectors that need a pruner (memory,
    /// postgres). `None` (the default) for connectors whose backend expires objects itself.
    fn into_prune(self: Arc<Self>) -> Option<Arc<dyn Prune>> {
        None
    }
}

/// Physical clean-up of a cache whose backend does not expire objects by itself.
#[async_trait]
pub trait Prune: Send + Sync + 'static {
    /// Removes invalidated, expired and orphaned objects and returns how many keys it
    /// removed (an object has one per key it is reachable through). Never renews LastUsage.
    async fn prune(&self) -> Result<u64>;
}

/// Compile-time check that the traits stay object safe.
#[allow(dead_code)]
fn _object_safe<I: Index, V: Entry<I>>(_: &dyn Cache<I, V>, _: &dyn Prune) {}
