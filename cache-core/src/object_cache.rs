//! The face applications use: one object cache, with the failure policy applied.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::Instrument;

use crate::cache::{Cache, Hit};
use crate::counter::Counter;
use crate::error::{ErrorKind, Result};
use crate::flight::{self, Flights, Gate, Generation, Landed, Seat};
use crate::index::{Entry, Index};
use crate::lease::{Filled, Lease, LeaseToken};
use crate::noop::NoopCache;
use crate::observe::{ObjectMetrics, Op};
use crate::settings::ReadThrough;
use crate::switch::Switch;

/// The `tracing` target of every event an object cache logs. Each event carries the fields
/// `purpose` and `connector`, so a subscriber can route or filter each cache's events.
pub const LOG_TARGET: &str = "object_cache";

/// One object cache of a service, e.g. the instance cache, as the application uses it.
///
/// It applies the failure policy: [`get`](Self::get) and [`set`](Self::set) never return an
/// error (a backend failure is logged through `tracing` with the cache's purpose and connector,
/// counted in [`stats`](Self::stats), and answered as a miss);
/// [`invalidate`](Self::invalidate), [`delete`](Self::delete) and [`truncate`](Self::truncate)
/// return the error, because the caller may need to know that stale objects can remain.
///
/// Cloning is cheap and every clone is the same cache. The backend can be replaced at runtime
/// ([`replace`](Self::replace)) without blocking readers; operations in flight finish on the
/// backend they started on.
pub struct ObjectCache<I: Index, V: Entry<I>> {
    inner: Arc<Inner<I, V>>,
}

struct Inner<I: Index, V: Entry<I>> {
    purpose: Arc<str>,
    backend: Switch<Backend<I, V>>,
    stats: Counters,
    /// Bumped before every invalidate / delete / truncate / replace, so
    /// [`ObjectCache::get_or_load`] can tell that a load raced with one.
    changes: AtomicU64,
    /// The loads running, one per key.
    flights: Flights<I, V>,
    /// Keeps loaded objects from landing after a change that returned.
    gate: Gate,
}

struct Backend<I: Index, V: Entry<I>> {
    cache: Arc<dyn Cache<I, V>>,
    read: ReadThrough,
    /// The metric handles for this purpose on this backend's connector.
    metrics: Arc<ObjectMetrics>,
}

impl<I: Index, V: Entry<I>> Backend<I, V> {
    fn new(purpose: &Arc<str>, cache: Arc<dyn Cache<I, V>>, read: ReadThrough) -> Self {
        let metrics = Arc::new(ObjectMetrics::new(Arc::clone(purpose), cache.connector()));
        Backend {
            cache,
            read,
            metrics,
        }
    }
}

/// How an operation ended, for its span.
fn outcome_of_get<V>(result: &Result<Option<V>>) -> &'static str {
    match result {
        Ok(Some(_)) => "hit",
        Ok(None) => "miss",
        Err(_) => "error",
    }
}

fn outcome_of_change(result: &Result<()>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(_) => "error",
    }
}

/// The counts of one object cache.
#[derive(Default)]
struct Counters {
    hits: Counter,
    misses: Counter,
    errors: Counter,
    loads: Counter,
    stale: Counter,
    refreshes: Counter,
    leases: Counter,
    lease_waits: Counter,
    lease_takeovers: Counter,
    refused_fills: Counter,
}

/// Counts of what an [`ObjectCache`] has answered since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Gets answered with an object.
    pub hits: u64,
    /// Gets answered with nothing (including those a backend error turned into a miss).
    pub misses: u64,
    /// Operations of any kind that failed in the backend.
    pub errors: u64,
    /// Loads [`get_or_load`](ObjectCache::get_or_load) ran (one per key at a time, however
    /// many callers missed it), refreshes included.
    pub loads: u64,
    /// Read-throughs answered with an expired object because the load failed
    /// (stale-if-error).
    pub stale_answers: u64,
    /// Background reloads of objects close to MaxAge (refresh-ahead).
    pub refreshes: u64,
    /// Leases taken by read-through misses (shared connectors: this process loads).
    pub leases: u64,
    /// Read-through misses that found another process's lease and waited for its fill
    /// instead of loading.
    pub lease_waits: u64,
    /// Leases taken after waiting for another process's lease to expire (its holder died or
    /// gave up).
    pub lease_takeovers: u64,
    /// Loads not cached because a change overtook them (the shared level refused the fill);
    /// their callers still got what was loaded.
    pub refused_fills: u64,
}

impl CacheStats {
    /// Hits per get, 0 when there were no gets.
    pub fn hit_ratio(&self) -> f64 {
        let gets = self.hits + self.misses;
        if gets == 0 {
            0.0
        } else {
            self.hits as f64 / gets as f64
        }
    }
}

/// What a flight's lease came to.
enum Leased<V> {
    /// Another process's load, filled while this one waited (or found after all).
    Filled(Arc<V>),
    /// This flight holds the lease: load, then fill with it.
    Token(LeaseToken),
    /// No lease (the cache keeps none, or could not be asked): load, then set.
    Nothing,
}

/// How long a read-through holding a lease waits for this process's changes to let its fill
/// through (each is one call), before it gives the fill up (and releases the lease).
const FILL_PASS_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The longest pause between two looks for another process's fill.
const FILL_POLL_MAX: std::time::Duration = std::time::Duration::from_millis(25);

impl<I: Index, V: Entry<I>> Clone for ObjectCache<I, V> {
    fn clone(&self) -> Self {
        ObjectCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<I: Index, V: Entry<I>> fmt::Debug for ObjectCache<I, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("purpose", &self.purpose())
            .field("connector", &self.connector())
            .finish()
    }
}

impl<I: Index, V: Entry<I>> ObjectCache<I, V> {
    /// The object cache `purpose`, stored by `cache`, with stale-if-error and refresh-ahead
    /// off (see [`with_read_through`](Self::with_read_through)).
    pub fn new(purpose: impl Into<Arc<str>>, cache: Arc<dyn Cache<I, V>>) -> Self {
        let purpose = purpose.into();
        ObjectCache {
            inner: Arc::new(Inner {
                backend: Switch::new(Backend::new(&purpose, cache, ReadThrough::default())),
                purpose,
                stats: Counters::default(),
                changes: AtomicU64::new(0),
                flights: Flights::default(),
                gate: Gate::default(),
            }),
        }
    }

    /// The same cache with `read` as its read-through settings (MaxStale, RefreshAhead; see
    /// [`CacheSettings::read_through`](crate::CacheSettings::read_through)). The connector
    /// must keep objects for MaxStale past their expiry for stale-if-error to find them (the
    /// connectors of this workspace do when their settings say so).
    pub fn with_read_through(self, read: ReadThrough) -> Self {
        let current = self.inner.backend.load_full();
        self.inner.backend.swap(Arc::new(Backend {
            cache: Arc::clone(&current.cache),
            read,
            metrics: Arc::clone(&current.metrics),
        }));
        self
    }

    /// The object cache `purpose` with no caching: every get misses.
    pub fn noop(purpose: impl Into<Arc<str>>) -> Self {
        Self::new(purpose, Arc::new(NoopCache))
    }

    /// The name of this object cache (`instance`, `organization`, ...).
    pub fn purpose(&self) -> &str {
        &self.inner.purpose
    }

    /// The name of the connector currently storing this cache.
    pub fn connector(&self) -> &'static str {
        self.inner.backend.read(|backend| backend.cache.connector())
    }

    /// The cache currently behind this object cache.
    pub fn backend(&self) -> Arc<dyn Cache<I, V>> {
        self.inner
            .backend
            .read(|backend| Arc::clone(&backend.cache))
    }

    /// Switches this object cache to another backend and returns the previous one. Readers
    /// are never blocked; operations already running finish on the previous backend, and
    /// every operation that starts after this returns runs on the new one. Each thread that
    /// read through the previous backend lets go of it at its next get of this cache (a get
    /// reads the backend through a per-thread copy, without an atomic read-modify-write), so
    /// the previous backend is dropped once all of them have, or with this cache.
    pub fn replace(&self, cache: Arc<dyn Cache<I, V>>) -> Arc<dyn Cache<I, V>> {
        let read = self.inner.backend.read(|backend| backend.read);
        self.replace_with(cache, read)
    }

    /// Like [`replace`](Self::replace), with new read-through settings.
    pub fn replace_with(
        &self,
        cache: Arc<dyn Cache<I, V>>,
        read: ReadThrough,
    ) -> Arc<dyn Cache<I, V>> {
        self.inner.changes.fetch_add(1, Ordering::SeqCst);
        let old = self
            .inner
            .backend
            .swap(Arc::new(Backend::new(&self.inner.purpose, cache, read)));
        tracing::info!(
            target: LOG_TARGET,
            purpose = %self.inner.purpose,
            from = old.cache.connector(),
            to = self.connector(),
            "object cache switched connector"
        );
        Arc::clone(&old.cache)
    }

    /// What this cache has answered so far.
    pub fn stats(&self) -> CacheStats {
        let s = &self.inner.stats;
        CacheStats {
            hits: s.hits.get(),
            misses: s.misses.get(),
            errors: s.errors.get(),
            loads: s.loads.get(),
            stale_answers: s.stale.get(),
            refreshes: s.refreshes.get(),
            leases: s.leases.get(),
            lease_waits: s.lease_waits.get(),
            lease_takeovers: s.lease_takeovers.get(),
            refused_fills: s.refused_fills.get(),
        }
    }

    /// The object reachable through `key` under `index`, or `None`. Never fails: a backend
    /// error is logged and counted and answered as a miss.
    ///
    /// A connector that can answer at once (memory, a near cache's memory level) is asked
    /// before the future is made, so awaiting a hit costs no more than a synchronous call.
    pub fn get<'a>(
        &'a self,
        index: I,
        key: &'a str,
    ) -> impl Future<Output = Option<Arc<V>>> + Send + 'a {
        let ready = self.inner.backend.read(|backend| {
            backend
                .cache
                .get_ready(index, key)
                .map(|outcome| self.answered(&backend.metrics, index, outcome))
        });
        async move {
            match ready {
                Some(answer) => answer,
                // Boxed: the future a hit returns stays as small as it was without spans and
                // timing (moving a larger one costs the memory hit several nanoseconds).
                None => Box::pin(self.get_remote(index, key)).await,
            }
        }
    }

    /// A get the connector could not answer at once: in a span, timed, counted.
    async fn get_remote(&self, index: I, key: &str) -> Option<Arc<V>> {
        let backend = self.inner.backend.load_full();
        let work = backend.cache.get(index, key);
        let outcome = self
            .observe(&backend, Op::Get, index.name(), work, outcome_of_get)
            .await;
        self.answered(&backend.metrics, index, outcome)
    }

    /// Counts and logs the outcome of a get.
    #[inline]
    fn answered<T>(
        &self,
        metrics: &ObjectMetrics,
        index: I,
        outcome: Result<Option<T>>,
    ) -> Option<T> {
        let stats = &self.inner.stats;
        match outcome {
            Ok(Some(value)) => {
                stats.hits.increment();
                metrics.hits.increment(1);
                Some(value)
            }
            Ok(None) => {
                stats.misses.increment();
                metrics.misses.increment(1);
                None
            }
            Err(error) => {
                stats.misses.increment();
                metrics.get_errors.increment(1);
                self.failed(metrics, "get", index.name(), &error);
                None
            }
        }
    }

    /// Runs `work`, an operation `op` of `backend`, in a span and times it.
    async fn observe<T>(
        &self,
        backend: &Backend<I, V>,
        op: Op,
        index: &str,
        work: impl Future<Output = Result<T>>,
        outcome: fn(&Result<T>) -> &'static str,
    ) -> Result<T> {
        let span = tracing::info_span!(
            target: LOG_TARGET,
            "cache",
            otel.name = op.span_name(),
            purpose = %self.inner.purpose,
            connector = backend.metrics.connector,
            operation = op.name(),
            index,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = work.instrument(span.clone()).await;
        backend.metrics.record(op, started.elapsed());
        span.record("outcome", outcome(&result));
        result
    }

    /// Stores `value` under all its keys, invalidating older objects that shared one. Never
    /// fails: a backend error is logged and counted. A set that fails still invalidates what
    /// the value's keys pointed at (as far as the backend can be told): the caller set it
    /// because those objects are outdated. When the backend is unhealthy (a temporary error)
    /// those invalidations run in the background, so a set takes no longer than one call
    /// (its connector's bound, e.g. `PoolTimeout` + `WriteTimeout`); when it refused the value
    /// they run before the set returns.
    pub async fn set(&self, value: impl Into<Arc<V>>) {
        let value = value.into();
        let backend = self.inner.backend.load_full();
        backend.metrics.sets.increment(1);
        let work = backend.cache.set(Arc::clone(&value));
        let outcome = self
            .observe(&backend, Op::Set, "", work, outcome_of_change)
            .await;
        match outcome {
            Ok(()) => {}
            // A circuit breaker refused it and keeps the invalidation of its keys itself.
            // Not a failure of the backend (the breaker counts its refusals).
            Err(error) if error.kind() == ErrorKind::BreakerOpen => {
                tracing::debug!(
                    target: LOG_TARGET,
                    purpose = %self.inner.purpose,
                    connector = backend.metrics.connector,
                    error = %error,
                    "set not stored: circuit breaker open"
                );
            }
            Err(error) => {
                self.failed(&backend.metrics, "set", "", &error);
                // The backend is unhealthy (a timeout, a lost connection): taking the keys
                // back may take as long again per index, so it runs after the call returns,
                // which stays within its own bound. A request the backend refused (a value it
                // cannot store) is taken back at once.
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) if error.is_temporary() => {
                        let this = self.clone();
                        runtime.spawn(async move { this.unset(&value).await });
                    }
                    _ => self.unset(&value).await,
                }
            }
        }
    }

    /// The object reachable through `key`, loading it with `load` on a miss and caching what
    /// it returns: the read-through way to use a cache. What a production read path needs:
    ///
    /// - **One load per key at a time** (single flight): concurrent misses of the same key in
    ///   this process run one load and all get its result — the object, or the load's error
    ///   (shared as `Arc<E>`, never cached). The load runs as a task of its own: a caller that
    ///   gives up (is dropped) never stops it, and never leaves the others waiting. A load that
    ///   panics panics in the caller whose load it was; the callers waiting on it run their
    ///   own, and the key is free for the next miss.
    /// - **No outdated load is cached** (the cache-aside race): if an invalidate, delete,
    ///   truncate or backend switch of this object cache starts while the load runs — or, on
    ///   a near cache, another process's announced change of one of the loaded object's keys
    ///   arrives — the loaded value is returned but not left in the cache; a change waits for
    ///   a loaded object already on its way to the backend, so its own call removes it. And a
    ///   miss after a change never joins a load begun before it. So once an invalidation has
    ///   returned, no later get or read-through in this process sees the older object.
    /// - **One load across processes** (shared connectors, `Lease` on by default): a miss takes
    ///   a lease on the key from the shared level, atomically with checking it again; only
    ///   the holder loads, and its object is stored only if no change touched its keys since
    ///   the lease was taken (an overtaken load is returned, not cached). A miss that finds
    ///   another process's lease waits for that fill (polling the key, with backoff) up to the
    ///   lease's expiry, then one of the waiters takes the lease over and loads. A load that
    ///   finds nothing or fails releases its lease (in the background), so the waiters lease
    ///   the key at once instead of waiting it out. A hit costs what it did; a miss one round
    ///   trip more.
    /// - **Stale-if-error** (with `MaxStale`): when the load fails, an object that expired
    ///   less than MaxStale ago (never an invalidated one) is returned instead, logged at warn
    ///   and counted ([`CacheStats::stale_answers`]).
    /// - **Refresh-ahead** (with `RefreshAhead`): a hit on an object older than that fraction
    ///   of MaxAge is answered at once and reloads the object in the background (one load at a
    ///   time; it never resurrects an object invalidated meanwhile), so a popular object does
    ///   not miss once per MaxAge.
    ///
    /// Cache errors never reach the caller (a failed get is a miss, a failed set is logged).
    /// Must be called inside a Tokio runtime: loads run as tasks.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cache_core::{Entry, Index, ObjectCache};
    /// # #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)] enum Idx { Id }
    /// # impl Index for Idx { fn name(self) -> &'static str { "id" } }
    /// # struct User { id: String }
    /// # impl Entry<Idx> for User { fn keys(&self, _: Idx) -> Vec<String> { vec![self.id.clone()] } }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Arc<std::io::Error>> {
    /// let users: ObjectCache<Idx, User> = ObjectCache::noop("user");
    /// let id = "7".to_owned();
    /// let loaded = id.clone(); // the loader runs as a task of its own: it owns what it uses
    /// let user = users
    ///     .get_or_load(Idx::Id, &id, move || async move {
    ///         Ok::<_, std::io::Error>(Some(User { id: loaded })) // the database query
    ///     })
    ///     .await?;
    /// assert_eq!(user.map(|u| u.id.clone()).as_deref(), Some("7"));
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load<F, Fut, E>(
        &self,
        index: I,
        key: &str,
        load: F,
    ) -> std::result::Result<Option<Arc<V>>, Arc<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: fmt::Display + Send + Sync + 'static,
    {
        let before = self.inner.changes.load(Ordering::SeqCst);
        let (refresh_ahead, token) = self.inner.backend.read(|backend| {
            (
                backend.read.refresh_ahead > 0.0,
                backend.cache.change_token(),
            )
        });
        if refresh_ahead {
            // Held across the get's await (a switch meanwhile bumps `changes`).
            let backend = self.inner.backend.load_full();
            if let Some(hit) = self.get_entry(&backend, index, key).await {
                let now: Generation = (
                    self.inner.changes.load(Ordering::SeqCst),
                    backend.cache.change_token(),
                );
                if hit.age.is_some_and(|age| backend.read.wants_refresh(age))
                    && !self.inner.flights.is_running::<E>(index, key)
                    && let Seat::Started(sender, _) = self.inner.flights.seat::<E>(index, key, now)
                {
                    self.inner.stats.refreshes.increment();
                    backend.metrics.refreshes.increment(1);
                    let (this, key) = (self.clone(), key.to_owned());
                    tokio::spawn(async move {
                        let crew = this.inner.flights.crew::<E>(index, &key, now);
                        let landed = this.fly(index, &key, load, now).await;
                        crew.disarm();
                        this.inner
                            .flights
                            .land::<E>(index, &key, now, sender, landed);
                    });
                }
                return Ok(Some(hit.value));
            }
        } else if let Some(hit) = self.get(index, key).await {
            return Ok(Some(hit));
        }
        let mut generation = (before, token);
        let mut load = Some(load);
        loop {
            let (receiver, task) = match self.inner.flights.seat::<E>(index, key, generation) {
                Seat::Joined(receiver) => (receiver, None),
                Seat::Started(sender, receiver) => {
                    let load = load
                        .take()
                        .expect("a caller starts at most one flight: it waits for its own");
                    let (this, key) = (self.clone(), key.to_owned());
                    let task = tokio::spawn(async move {
                        let crew = this.inner.flights.crew::<E>(index, &key, generation);
                        let landed = this.fly(index, &key, load, generation).await;
                        crew.disarm();
                        this.inner
                            .flights
                            .land::<E>(index, &key, generation, sender, landed);
                    });
                    (receiver, Some(task))
                }
            };
            match flight::wait::<V, E>(receiver).await {
                flight::Outcome::Landed(result) => return result,
                // Our own load ended without a result: its panic is ours (as if it had run
                // inline); a runtime shutting down answers none.
                flight::Outcome::Abandoned if let Some(task) = task => {
                    return match task.await {
                        Err(error) if error.is_panic() => {
                            std::panic::resume_unwind(error.into_panic())
                        }
                        _ => Ok(None),
                    };
                }
                // Someone else's load panicked: run ours (the key is free again).
                flight::Outcome::Abandoned => {
                    if load.is_none() {
                        return Ok(None);
                    }
                    generation = (
                        self.inner.changes.load(Ordering::SeqCst),
                        self.inner
                            .backend
                            .read(|backend| backend.cache.change_token()),
                    );
                }
            }
        }
    }

    /// A get with the object's age, counted like [`get`](Self::get).
    async fn get_entry(&self, backend: &Backend<I, V>, index: I, key: &str) -> Option<Hit<V>> {
        let work = backend.cache.get_entry(index, key);
        let outcome = self
            .observe(backend, Op::Get, index.name(), work, outcome_of_get)
            .await;
        self.answered(&backend.metrics, index, outcome)
    }

    /// One flight's work: a lease on the key (or the fill of another process's), the load,
    /// caching what it found unless a change overtook it, and stale-if-error when it failed.
    async fn fly<F, Fut, E>(
        &self,
        index: I,
        key: &str,
        load: F,
        (before, token): Generation,
    ) -> Landed<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<V>, E>>,
        E: fmt::Display + Send + Sync + 'static,
    {
        let backend = self.inner.backend.load_full();
        let lease = match self.lease(&backend, index, key).await {
            Leased::Filled(value) => return Ok(Some(value)),
            Leased::Token(lease) => Some(lease),
            Leased::Nothing => None,
        };
        self.inner.stats.loads.increment();
        let metrics = &backend.metrics;
        let span = tracing::info_span!(
            target: LOG_TARGET,
            "cache",
            otel.name = "cache.load",
            purpose = %self.inner.purpose,
            connector = metrics.connector,
            operation = "load",
            index = index.name(),
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = load().instrument(span.clone()).await;
        metrics.load_duration.record(started.elapsed());
        let (counter, outcome) = match &result {
            Ok(Some(_)) => (&metrics.loaded, "loaded"),
            Ok(None) => (&metrics.absent, "absent"),
            Err(_) => (&metrics.load_failures, "failed"),
        };
        counter.increment(1);
        span.record("outcome", outcome);
        let loaded = match result {
            Ok(Some(loaded)) => Arc::new(loaded),
            Ok(None) => {
                self.release(&backend, lease);
                return Ok(None);
            }
            Err(error) => {
                self.release(&backend, lease);
                return self.stale_if_error(index, key, error).await;
            }
        };
        if let Some(lease) = &lease {
            // The shared level decides: it stores the fill only if no change of any of the
            // object's keys, from any process, came after the lease was taken — and a refused
            // fill ends the lease, so the next miss anywhere loads at once. (Deciding here on
            // this process's own view of changes would skip fills the server would take, and
            // leave the lease to expire while every other process waits for it.) The pass
            // still keeps this process's changes apart from the fill, so a memory level above
            // never keeps what a change of this process removed: a change running now is
            // waited for (changes are single calls), a stream of them for a while at most.
            let mut pass = self.inner.gate.try_load();
            let mut waited = std::time::Duration::ZERO;
            while pass.is_none() && waited < FILL_PASS_WAIT {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                waited += std::time::Duration::from_millis(1);
                pass = self.inner.gate.try_load();
            }
            if pass.is_some() {
                self.fill(&backend, Arc::clone(&loaded), lease).await;
            } else {
                self.release(&backend, Some(lease.clone()));
            }
            return Ok(Some(loaded));
        }
        // A change made here (any key) or seen from another process (one of the loaded
        // object's keys) since the read began: the load may predate it.
        let changed = |loaded: &V| {
            self.inner.changes.load(Ordering::SeqCst) != before
                || backend.cache.changed_since(token, loaded)
        };
        // While the pass is held, changes of this process wait for the set to land (and then
        // remove what it wrote); while one runs, there is no pass and nothing is cached.
        let Some(_pass) = self.inner.gate.try_load() else {
            return Ok(Some(loaded));
        };
        if changed(&loaded) {
            return Ok(Some(loaded));
        }
        self.set(Arc::clone(&loaded)).await;
        // Another process's change announced while the set was on its way (or a switch of
        // backend here) may predate the set's landing: take the set back.
        if changed(&loaded) {
            self.unset(&loaded).await;
        }
        Ok(Some(loaded))
    }

    /// A lease on `key` for this flight's load — or, when another process holds it, the
    /// object it fills: asking again with backoff (1 ms, doubling up to [`FILL_POLL_MAX`])
    /// until the holder's fill is there, or the lease is free to take — because it expired
    /// (the holder died or hangs) or a change ended it (the holder's fill would be refused):
    /// then one of the waiters takes it and loads.
    async fn lease(&self, backend: &Backend<I, V>, index: I, key: &str) -> Leased<V> {
        let stats = &self.inner.stats;
        let metrics = &backend.metrics;
        let mut pause = std::time::Duration::from_millis(1);
        let mut waited = false;
        loop {
            match backend.cache.lease(index, key).await {
                Ok(Lease::Hit(hit)) => return Leased::Filled(hit.value),
                Ok(Lease::Granted(lease)) => {
                    stats.leases.increment();
                    metrics.leases_taken.increment(1);
                    if waited {
                        stats.lease_takeovers.increment();
                        metrics.lease_takeovers.increment(1);
                    }
                    return Leased::Token(lease);
                }
                Ok(Lease::None) => return Leased::Nothing,
                Err(error) => {
                    // Load without a lease: the cache is an optimisation.
                    self.failed(metrics, "lease", index.name(), &error);
                    return Leased::Nothing;
                }
                Ok(Lease::Held(left)) => {
                    if !waited {
                        waited = true;
                        stats.lease_waits.increment();
                        metrics.lease_waits.increment(1);
                    }
                    // Never past the lease's expiry, when it may be taken over.
                    tokio::time::sleep(pause.min(left.max(std::time::Duration::from_millis(1))))
                        .await;
                    pause = (pause * 2).min(FILL_POLL_MAX);
                }
            }
        }
    }

    /// Ends the lease of a load that found nothing or failed, in the background (the caller
    /// has its answer): the other processes waiting for a fill that will not come lease the
    /// key at once, not when the lease expires.
    fn release(&self, backend: &Arc<Backend<I, V>>, lease: Option<LeaseToken>) {
        let Some(lease) = lease else { return };
        let (this, backend) = (self.clone(), Arc::clone(backend));
        tokio::spawn(async move {
            match backend.cache.release(&lease).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::BreakerOpen => {}
                Err(error) => this.failed(&backend.metrics, "release", lease.index, &error),
            }
        });
    }

    /// Fills the shared level with a loaded object as the holder of `lease`.
    async fn fill(&self, backend: &Backend<I, V>, value: Arc<V>, lease: &LeaseToken) {
        backend.metrics.sets.increment(1);
        let work = backend.cache.fill(value, lease);
        let outcome = self
            .observe(backend, Op::Set, "", work, |r: &Result<Filled>| match r {
                Ok(_) => "ok",
                Err(_) => "error",
            })
            .await;
        match outcome {
            Ok(Filled::Stored) => {}
            Ok(Filled::Refused) => {
                self.inner.stats.refused_fills.increment();
                backend.metrics.refused_fills.increment(1);
                tracing::debug!(
                    target: LOG_TARGET,
                    purpose = %self.inner.purpose,
                    connector = backend.metrics.connector,
                    index = lease.index,
                    "a load was not cached: a change overtook it (the lease's fill was refused)"
                );
            }
            Err(error) if error.kind() == ErrorKind::BreakerOpen => {}
            Err(error) => self.failed(&backend.metrics, "set", "", &error),
        }
    }

    /// The load failed: an object that expired less than MaxStale ago, when there is one and
    /// stale-if-error is on; else the error.
    async fn stale_if_error<E>(&self, index: I, key: &str, error: E) -> Landed<V>
    where
        E: fmt::Display + Send + Sync + 'static,
    {
        let backend = self.inner.backend.load_full();
        if !backend.read.max_stale.is_zero()
            && let Ok(Some(stale)) = backend.cache.get_stale(index, key).await
        {
            self.inner.stats.stale.increment();
            backend.metrics.stale_answers.increment(1);
            tracing::warn!(
                target: LOG_TARGET,
                purpose = %self.inner.purpose,
                connector = backend.cache.connector(),
                index = index.name(),
                age = ?stale.age,
                error = %error,
                "the load failed: answered with an expired object (stale-if-error)"
            );
            return Ok(Some(stale.value));
        }
        Err(Arc::new(error))
    }

    /// Invalidates `value` through every key it has, for [`get_or_load`](Self::get_or_load).
    async fn unset(&self, value: &V) {
        let backend = self.inner.backend.load_full();
        for &index in backend.cache.indices() {
            let keys = value.keys(index);
            if keys.is_empty() {
                continue;
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            if let Err(error) = backend.cache.invalidate(index, &keys).await {
                self.failed(&backend.metrics, "invalidate", index.name(), &error);
            }
        }
    }

    /// Makes the objects reachable through `keys` under `index` unreachable through every
    /// index. Fails only if the backend could not be told.
    pub async fn invalidate<K: AsRef<str> + Sync>(&self, index: I, keys: &[K]) -> Result<()> {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let _pass = self.inner.gate.change().await;
        let backend = self.inner.backend.load_full();
        self.inner.changes.fetch_add(1, Ordering::SeqCst);
        backend.metrics.invalidations.increment(1);
        let work = backend.cache.invalidate(index, &keys);
        let outcome = self
            .observe(
                &backend,
                Op::Invalidate,
                index.name(),
                work,
                outcome_of_change,
            )
            .await;
        self.count(&backend.metrics, Op::Invalidate, index.name(), outcome)
    }

    /// Removes only these key mappings under `index`; the objects stay reachable through
    /// their other keys.
    pub async fn delete<K: AsRef<str> + Sync>(&self, index: I, keys: &[K]) -> Result<()> {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let _pass = self.inner.gate.change().await;
        let backend = self.inner.backend.load_full();
        self.inner.changes.fetch_add(1, Ordering::SeqCst);
        backend.metrics.deletes.increment(1);
        let work = backend.cache.delete(index, &keys);
        let outcome = self
            .observe(&backend, Op::Delete, index.name(), work, outcome_of_change)
            .await;
        self.count(&backend.metrics, Op::Delete, index.name(), outcome)
    }

    /// Empties this object cache (and nothing else).
    pub async fn truncate(&self) -> Result<()> {
        let _pass = self.inner.gate.change().await;
        let backend = self.inner.backend.load_full();
        self.inner.changes.fetch_add(1, Ordering::SeqCst);
        backend.metrics.truncates.increment(1);
        let work = backend.cache.truncate();
        let outcome = self
            .observe(&backend, Op::Truncate, "", work, outcome_of_change)
            .await;
        self.count(&backend.metrics, Op::Truncate, "", outcome)
    }

    fn count(
        &self,
        metrics: &ObjectMetrics,
        op: Op,
        index: &str,
        outcome: Result<()>,
    ) -> Result<()> {
        if let Err(error) = &outcome {
            self.failed(metrics, op.name(), index, error);
        }
        outcome
    }

    fn failed(
        &self,
        metrics: &ObjectMetrics,
        operation: &'static str,
        index: &str,
        error: &crate::Error,
    ) {
        self.inner.stats.errors.increment();
        metrics.error(operation, error.kind());
        tracing::error!(
            target: LOG_TARGET,
            purpose = %self.inner.purpose,
            connector = metrics.connector,
            operation,
            index,
            error = %error,
            temporary = error.is_temporary(),
            "cache operation failed"
        );
    }
}
