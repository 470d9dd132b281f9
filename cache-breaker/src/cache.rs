//! [`BreakerCache`]: any cache behind a connector's [`Breaker`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cache_core::{
    Cache, ChangeListener, Entry, Error, ErrorKind, Filled, Hit, Index, Lease, LeaseToken, Prune,
    Result, async_trait,
};

use crate::breaker::{Breaker, Permit};
use crate::pending::{DEFAULT_PENDING_KEYS, Op, Pending};

/// One object cache behind its connector's circuit breaker.
///
/// While the breaker is open a get misses without reaching the backend; a set is not stored
/// and keeps an invalidation of the value's keys (what they point at is outdated, or the
/// caller would not set it); set, invalidate, delete and truncate return a
/// [`BreakerOpen`](ErrorKind::BreakerOpen) error — and are kept, as are those that failed
/// while the breaker was closed. Kept changes
/// are delivered by a background task as soon as the backend answers again (it probes with
/// backoff, [`RETRY_FIRST`] doubling up to [`RETRY_MAX`], also while the breaker is open), so other
/// processes stop seeing invalidated objects even when this one stays idle; until they are
/// delivered, gets miss. Past the memory budget they collapse into one truncate. A kept change
/// the backend refuses for good (a [permanent](Error::is_temporary) error) is never retried
/// forever: it is replaced by a truncate of the cache, which is what keeps the cache correct,
/// and logged as an error.
pub struct BreakerCache<I: Index, V: Entry<I>> {
    shared: Arc<Shared<I, V>>,
}

/// The first wait of the delivery task after a failed delivery.
pub const RETRY_FIRST: Duration = Duration::from_millis(10);
/// The longest wait of the delivery task between two attempts: kept changes reach the backend
/// within about this long of it answering again — other processes stop reading what they
/// invalidate — however long the breaker stays open. One attempt at a time per object cache
/// with kept changes (an attempt on a server that hangs lasts the call's bound), so a server
/// still down sees at most a dozen cheap calls a second from it.
pub const RETRY_MAX: Duration = Duration::from_millis(80);

/// What the cache and its delivery task share.
struct Shared<I: Index, V: Entry<I>> {
    inner: Arc<dyn Cache<I, V>>,
    breaker: Arc<Breaker>,
    purpose: String,
    pending: Pending<I>,
    /// One delivery of kept changes at a time.
    replaying: tokio::sync::Mutex<()>,
    /// Whether a delivery task is running.
    delivering: AtomicBool,
    /// Told about every kept change once it is delivered.
    delivered: std::sync::OnceLock<ChangeListener<I>>,
    /// `cache_breaker_kept_changes_total`, `cache_breaker_delivered_changes_total`,
    /// `cache_breaker_kept_keys`.
    kept_changes: metrics::Counter,
    delivered_changes: metrics::Counter,
    kept_keys: metrics::Gauge,
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for BreakerCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerCache")
            .field("purpose", &self.shared.purpose)
            .field("connector", &self.shared.inner.connector())
            .field("breaker", &self.shared.breaker.state())
            .finish()
    }
}

/// Whether `error` says the backend is unhealthy (a failure for the breaker): timeouts,
/// connection and server errors. A wrong request (unknown index, undecodable value, data the
/// backend refuses) is not.
pub fn is_failure(error: &Error) -> bool {
    error.is_temporary() && error.kind() != ErrorKind::BreakerOpen
}

fn report<T>(permit: Permit<'_>, outcome: &Result<T>) {
    match outcome {
        Err(error) if is_failure(error) => permit.failure_of(error.event()),
        _ => permit.success(),
    }
}

/// How one attempt to deliver the kept changes ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Nothing is kept any more.
    Done,
    /// The backend is still unreachable (or the breaker refused): try again later.
    Later,
    /// Another delivery is running.
    Busy,
}

impl<I: Index, V: Entry<I>> BreakerCache<I, V> {
    /// `inner`, the object cache `purpose`, behind `breaker` (shared by every object cache of
    /// the connector). Keeps up to [`DEFAULT_PENDING_KEYS`] undelivered keys.
    pub fn new(purpose: &str, inner: Arc<dyn Cache<I, V>>, breaker: Arc<Breaker>) -> Self {
        Self::with_pending_limit(purpose, inner, breaker, DEFAULT_PENDING_KEYS)
    }

    /// Like [`new`](Self::new), keeping up to `limit` undelivered keys; past it the cache is
    /// truncated on recovery instead.
    pub fn with_pending_limit(
        purpose: &str,
        inner: Arc<dyn Cache<I, V>>,
        breaker: Arc<Breaker>,
        limit: usize,
    ) -> Self {
        use cache_core::observe::{
            self, BREAKER_DELIVERED_CHANGES, BREAKER_KEPT_CHANGES, BREAKER_KEPT_KEYS,
        };
        let connector = inner.connector();
        let kept_keys = metrics::gauge!(
            BREAKER_KEPT_KEYS,
            "purpose" => purpose.to_owned(),
            "connector" => connector
        );
        kept_keys.set(0.0);
        BreakerCache {
            shared: Arc::new(Shared {
                kept_changes: observe::counter(BREAKER_KEPT_CHANGES, purpose, connector),
                delivered_changes: observe::counter(BREAKER_DELIVERED_CHANGES, purpose, connector),
                kept_keys,
                inner,
                breaker,
                purpose: purpose.to_owned(),
                pending: Pending::new(limit),
                replaying: tokio::sync::Mutex::new(()),
                delivering: AtomicBool::new(false),
                delivered: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The breaker in front of this cache.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.shared.breaker
    }

    /// Tells `listener` about every kept change once it is delivered (a near cache in front
    /// announces it to the other processes then). One listener per cache: a second call is
    /// ignored and returns `false`.
    pub fn on_delivered(&self, listener: ChangeListener<I>) -> bool {
        self.shared.delivered.set(listener).is_ok()
    }

    /// Keys of invalidations and deletes not delivered yet.
    pub fn pending_keys(&self) -> usize {
        self.shared.pending.keys()
    }

    /// Whether changes wait to be delivered (a pending truncate included).
    pub fn has_pending(&self) -> bool {
        self.shared.pending.is_dirty()
    }

    /// Runs a change through the breaker; keeps it when it could not be delivered and makes
    /// sure the delivery task runs. `run` is the backend call; it is only polled when the
    /// breaker lets it through.
    async fn change(
        &self,
        operation: &str,
        op: Op<I>,
        run: impl Future<Output = Result<()>> + Send,
    ) -> Result<()> {
        let shared = &self.shared;
        let Some(permit) = shared.breaker.permit() else {
            shared.keep(op);
            return Err(shared.open_error(operation));
        };
        let outcome = run.await;
        report(permit, &outcome);
        if let Err(error) = &outcome
            && is_failure(error)
        {
            shared.keep(op);
        }
        outcome
    }

    fn check(&self, index: I) -> Result<()> {
        // An unknown index is the caller's mistake: not kept, not counted.
        let inner = &self.shared.inner;
        if inner.indices().is_empty() || inner.indices().contains(&index) {
            Ok(())
        } else {
            Err(Error::unknown_index(&self.shared.purpose, index.name()))
        }
    }
}

impl<I: Index, V: Entry<I>> Shared<I, V> {
    fn open_error(&self, operation: &str) -> Error {
        Error::new(
            ErrorKind::BreakerOpen,
            format!(
                "{operation} of the {:?} cache not delivered: the {} circuit breaker is open \
                 (its backend failed); it is kept and delivered when the backend is back",
                self.purpose,
                self.breaker.connector()
            ),
        )
    }

    /// Keeps `op` and starts the delivery task unless it runs.
    fn keep(self: &Arc<Self>, op: Op<I>) {
        self.pending.push(op);
        self.kept_changes.increment(1);
        self.count_kept_keys();
        self.start_delivery();
    }

    fn count_kept_keys(&self) {
        self.kept_keys.set(self.pending.keys() as f64);
    }

    fn start_delivery(self: &Arc<Self>) {
        if self.delivering.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run it on: the next get delivers instead.
            self.delivering.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(deliver_in_background(Arc::downgrade(self)));
    }

    /// Delivers the kept changes, oldest first, through the breaker — or, with `probe`, also
    /// while it refuses calls (then the outcomes are not counted: a probe says nothing the
    /// breaker's own trial calls will not).
    async fn deliver_pending(&self, wait_for_turn: bool, probe: bool) -> Delivery {
        if !self.pending.is_dirty() {
            return Delivery::Done;
        }
        let _turn = if wait_for_turn {
            self.replaying.lock().await
        } else {
            match self.replaying.try_lock() {
                Ok(turn) => turn,
                Err(_) => return Delivery::Busy,
            }
        };
        let mut delivered = 0usize;
        while let Some((seq, op)) = self.pending.front() {
            let permit = if probe && self.breaker.is_rejecting() {
                None
            } else {
                match self.breaker.permit() {
                    Some(permit) => Some(permit),
                    None if probe => None,
                    None => return Delivery::Later,
                }
            };
            let outcome = match &op {
                Op::Truncate => self.inner.truncate().await,
                Op::Invalidate(index, keys) => {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    self.inner.invalidate(*index, &keys).await
                }
                Op::Delete(index, keys) => {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    self.inner.delete(*index, &keys).await
                }
            };
            if let Some(permit) = permit {
                report(permit, &outcome);
            }
            match outcome {
                Ok(()) => {
                    self.pending.delivered(seq);
                    self.delivered_changes.increment(1);
                    self.count_kept_keys();
                    if let Some(listener) = self.delivered.get() {
                        listener(&op);
                    }
                }
                Err(error) if is_failure(&error) => return Delivery::Later,
                Err(error) => self.refused(seq, &op, &error),
            }
            delivered += 1;
        }
        tracing::warn!(
            purpose = %self.purpose,
            connector = self.inner.connector(),
            delivered,
            "delivered the changes kept while the cache backend was unreachable"
        );
        Delivery::Done
    }

    /// A kept change the backend refuses for good: retrying it would block the cache
    /// forever. An invalidation or delete that cannot be delivered may leave stale objects,
    /// so the cache is truncated instead; a truncate that cannot be delivered is dropped.
    fn refused(&self, seq: u64, op: &Op<I>, error: &Error) {
        let replacement = match op {
            Op::Truncate => {
                tracing::error!(
                    purpose = %self.purpose,
                    connector = self.inner.connector(),
                    %error,
                    "a kept truncate was refused by the cache backend and is dropped"
                );
                None
            }
            Op::Invalidate(..) | Op::Delete(..) => {
                tracing::error!(
                    purpose = %self.purpose,
                    connector = self.inner.connector(),
                    %error,
                    "a kept invalidation was refused by the cache backend; the cache is \
                     truncated instead"
                );
                Some(Op::Truncate)
            }
        };
        self.pending.replace_front(seq, replacement);
        self.count_kept_keys();
    }
}

/// The delivery task: tries to deliver the kept changes with backoff until none are left or
/// the cache is dropped.
async fn deliver_in_background<I: Index, V: Entry<I>>(shared: Weak<Shared<I, V>>) {
    let mut wait = RETRY_FIRST;
    loop {
        let Some(cache) = shared.upgrade() else {
            return;
        };
        // Also while the breaker is open: the kept changes are what other processes need
        // most once the server answers again (a probe, not counted by the breaker).
        let outcome = cache.deliver_pending(true, true).await;
        if outcome == Delivery::Done {
            cache.delivering.store(false, Ordering::Release);
            // A change kept after the last look but before the flag fell would wait for the
            // next get: look once more.
            if !cache.pending.is_dirty() || cache.delivering.swap(true, Ordering::AcqRel) {
                return;
            }
            wait = RETRY_FIRST;
            continue;
        }
        drop(cache);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

impl<I: Index, V: Entry<I>> BreakerCache<I, V> {
    /// Leave to store `value`, or — while the breaker refuses — the invalidation of its keys
    /// kept (the caller stores it because what its keys point at is outdated: that is
    /// invalidated once the backend is back, before anything is served again) and the error.
    fn admit_write(&self, value: &V) -> Result<Permit<'_>> {
        let shared = &self.shared;
        let permit = if shared.breaker.refuses_call() {
            None
        } else {
            shared.breaker.permit()
        };
        permit.ok_or_else(|| {
            for &index in shared.inner.indices() {
                let keys = value.keys(index);
                if !keys.is_empty() {
                    shared.keep(Op::Invalidate(index, keys));
                }
            }
            shared.open_error("set")
        })
    }

    /// A read through the breaker: `read` runs only if the breaker lets the call through and
    /// no kept change is left to deliver first.
    async fn read<T, F>(&self, read: impl FnOnce() -> F) -> Result<Option<T>>
    where
        F: Future<Output = Result<Option<T>>>,
    {
        let shared = &self.shared;
        if shared.breaker.refuses_call() {
            return Ok(None);
        }
        // Kept changes first: the backend may still hold what they invalidate. A get never
        // queues behind a delivery in progress; it misses instead.
        if shared.pending.is_dirty() && shared.deliver_pending(false, false).await != Delivery::Done
        {
            shared.start_delivery();
            return Ok(None);
        }
        let Some(permit) = shared.breaker.permit() else {
            return Ok(None);
        };
        let outcome = read().await;
        report(permit, &outcome);
        outcome
    }
}

#[async_trait]
impl<I: Index, V: Entry<I>> Cache<I, V> for BreakerCache<I, V> {
    fn connector(&self) -> &'static str {
        self.shared.inner.connector()
    }

    fn indices(&self) -> &[I] {
        self.shared.inner.indices()
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        self.read(|| self.shared.inner.get(index, key)).await
    }

    async fn get_entry(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        self.read(|| self.shared.inner.get_entry(index, key)).await
    }

    async fn get_stale(&self, index: I, key: &str) -> Result<Option<Hit<V>>> {
        let shared = &self.shared;
        let Some(permit) = shared.breaker.permit() else {
            return Ok(None);
        };
        let outcome = shared.inner.get_stale(index, key).await;
        report(permit, &outcome);
        outcome
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        let permit = self.admit_write(&value)?;
        let outcome = self.shared.inner.set(value).await;
        report(permit, &outcome);
        outcome
    }

    /// A lease through the breaker, like a get: none while it is open (the load then runs
    /// without one) or while kept changes wait to be delivered first.
    async fn lease(&self, index: I, key: &str) -> Result<Lease<V>> {
        let shared = &self.shared;
        if shared.breaker.refuses_call() {
            return Ok(Lease::None);
        }
        if shared.pending.is_dirty() && shared.deliver_pending(false, false).await != Delivery::Done
        {
            shared.start_delivery();
            return Ok(Lease::None);
        }
        let Some(permit) = shared.breaker.permit() else {
            return Ok(Lease::None);
        };
        let outcome = shared.inner.lease(index, key).await;
        report(permit, &outcome);
        outcome
    }

    /// A fill through the breaker, like a set.
    async fn fill(&self, value: Arc<V>, lease: &LeaseToken) -> Result<Filled> {
        let permit = self.admit_write(&value)?;
        let outcome = self.shared.inner.fill(value, lease).await;
        report(permit, &outcome);
        outcome
    }

    /// A release through the breaker (none while it is open: the lease expires instead).
    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        let Some(permit) = self.shared.breaker.permit() else {
            return Ok(());
        };
        let outcome = self.shared.inner.release(lease).await;
        report(permit, &outcome);
        outcome
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let owned = keys.iter().map(|k| (*k).to_owned()).collect();
        let run = self.shared.inner.invalidate(index, keys);
        self.change("invalidate", Op::Invalidate(index, owned), run)
            .await
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let owned = keys.iter().map(|k| (*k).to_owned()).collect();
        let run = self.shared.inner.delete(index, keys);
        self.change("delete", Op::Delete(index, owned), run).await
    }

    async fn truncate(&self) -> Result<()> {
        let run = self.shared.inner.truncate();
        self.change("truncate", Op::Truncate, run).await
    }

    fn change_token(&self) -> u64 {
        self.shared.inner.change_token()
    }

    fn changed_since(&self, token: u64, value: &V) -> bool {
        self.shared.inner.changed_since(token, value)
    }

    fn announced_on(&self) -> Option<u64> {
        self.shared.inner.announced_on()
    }

    /// Best-effort background work: passed to the backend, not counted.
    async fn touch(&self, value: &V) -> Result<()> {
        self.shared.inner.touch(value).await
    }

    fn into_prune(self: Arc<Self>) -> Option<Arc<dyn Prune>> {
        // Pruning is the backend's own clean-up; it does not go through the breaker.
        Arc::clone(&self.shared.inner).into_prune()
    }
}
