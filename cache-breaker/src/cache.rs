//! [`BreakerCache`]: any cache behind a connector's [`Breaker`].

use std::sync::Arc;

use cache_core::{Cache, Entry, Error, ErrorKind, Index, Prune, Result, async_trait};

use crate::breaker::{Breaker, Permit};
use crate::pending::{DEFAULT_PENDING_KEYS, Op, Pending};

/// One object cache behind its connector's circuit breaker.
///
/// While the breaker is open a get misses and a set is skipped, both without reaching the
/// backend; invalidate, delete and truncate return a [`BreakerOpen`](ErrorKind::BreakerOpen)
/// error — and are kept, as are those that failed while the breaker was closed. Before the
/// next get is answered from the backend, the kept changes are delivered (or, past the memory
/// budget, the cache is truncated), so no object invalidated during an outage is served
/// afterwards.
pub struct BreakerCache<I: Index, V: Entry<I>> {
    inner: Arc<dyn Cache<I, V>>,
    breaker: Arc<Breaker>,
    purpose: String,
    pending: Pending<I>,
    /// One delivery of kept changes at a time; callers that find one running wait for it.
    replaying: tokio::sync::Mutex<()>,
}

impl<I: Index, V: Entry<I>> std::fmt::Debug for BreakerCache<I, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerCache")
            .field("purpose", &self.purpose)
            .field("connector", &self.inner.connector())
            .field("breaker", &self.breaker.state())
            .finish()
    }
}

/// Whether `error` says the backend is unhealthy (a failure for the breaker): timeouts,
/// connection and server errors. A wrong request (unknown index, undecodable value) is not.
pub fn is_failure(error: &Error) -> bool {
    error.is_temporary() && error.kind() != ErrorKind::BreakerOpen
}

fn report<T>(permit: Permit<'_>, outcome: &Result<T>) {
    match outcome {
        Err(error) if is_failure(error) => permit.failure(),
        _ => permit.success(),
    }
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
        BreakerCache {
            inner,
            breaker,
            purpose: purpose.to_owned(),
            pending: Pending::new(limit),
            replaying: tokio::sync::Mutex::new(()),
        }
    }

    /// The breaker in front of this cache.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Keys of invalidations and deletes not delivered yet.
    pub fn pending_keys(&self) -> usize {
        self.pending.keys()
    }

    /// Whether changes wait to be delivered (a pending truncate included).
    pub fn has_pending(&self) -> bool {
        self.pending.is_dirty()
    }

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

    /// Delivers the kept changes, oldest first. `true` when none are left.
    async fn deliver_pending(&self) -> bool {
        if !self.pending.is_dirty() {
            return true;
        }
        let _turn = self.replaying.lock().await;
        let mut delivered = 0usize;
        while let Some((seq, op)) = self.pending.front() {
            let Some(permit) = self.breaker.permit() else {
                return false;
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
            report(permit, &outcome);
            if outcome.is_err() {
                return false;
            }
            self.pending.delivered(seq);
            delivered += 1;
        }
        tracing::warn!(
            purpose = %self.purpose,
            connector = self.inner.connector(),
            delivered,
            "delivered the changes kept while the cache backend was unreachable"
        );
        true
    }

    /// Runs a change through the breaker; keeps it when it could not be delivered.
    /// `run` is the backend call; it is only polled when the breaker lets it through.
    async fn change(
        &self,
        operation: &str,
        op: Op<I>,
        run: impl Future<Output = Result<()>> + Send,
    ) -> Result<()> {
        let Some(permit) = self.breaker.permit() else {
            self.pending.push(op);
            return Err(self.open_error(operation));
        };
        let outcome = run.await;
        report(permit, &outcome);
        if let Err(error) = &outcome
            && is_failure(error)
        {
            self.pending.push(op);
        }
        outcome
    }

    fn check(&self, index: I) -> Result<()> {
        // An unknown index is the caller's mistake: not kept, not counted.
        if self.inner.indices().is_empty() || self.inner.indices().contains(&index) {
            Ok(())
        } else {
            Err(Error::unknown_index(&self.purpose, index.name()))
        }
    }
}

#[async_trait]
impl<I: Index, V: Entry<I>> Cache<I, V> for BreakerCache<I, V> {
    fn connector(&self) -> &'static str {
        self.inner.connector()
    }

    fn indices(&self) -> &[I] {
        self.inner.indices()
    }

    async fn get(&self, index: I, key: &str) -> Result<Option<Arc<V>>> {
        if self.breaker.is_rejecting() || !self.deliver_pending().await {
            return Ok(None);
        }
        let Some(permit) = self.breaker.permit() else {
            return Ok(None);
        };
        let outcome = self.inner.get(index, key).await;
        report(permit, &outcome);
        outcome
    }

    async fn set(&self, value: Arc<V>) -> Result<()> {
        if self.breaker.is_rejecting() {
            return Ok(());
        }
        let Some(permit) = self.breaker.permit() else {
            return Ok(());
        };
        let outcome = self.inner.set(value).await;
        report(permit, &outcome);
        outcome
    }

    async fn invalidate(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let owned = keys.iter().map(|k| (*k).to_owned()).collect();
        let run = self.inner.invalidate(index, keys);
        self.change("invalidate", Op::Invalidate(index, owned), run)
            .await
    }

    async fn delete(&self, index: I, keys: &[&str]) -> Result<()> {
        self.check(index)?;
        let owned = keys.iter().map(|k| (*k).to_owned()).collect();
        let run = self.inner.delete(index, keys);
        self.change("delete", Op::Delete(index, owned), run).await
    }

    async fn truncate(&self) -> Result<()> {
        let run = self.inner.truncate();
        self.change("truncate", Op::Truncate, run).await
    }

    fn into_prune(self: Arc<Self>) -> Option<Arc<dyn Prune>> {
        // Pruning is the backend's own clean-up; it does not go through the breaker.
        Arc::clone(&self.inner).into_prune()
    }
}
