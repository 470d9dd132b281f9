//! Checking out pooled connections of a remote backend (feature `pool`).
//!
//! bb8 never hands a connect error to the caller waiting for a connection: it keeps the
//! caller waiting until the pool timeout. For a cache that is the wrong trade — while the
//! server refuses connections, every get would wait that long before it misses. With
//! [`ConnectFailures`] installed as the pool's error sink, [`checkout`] returns
//! [`Unavailable`](crate::ErrorKind::Unavailable) with the server's reason the moment a
//! connect attempt fails.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bb8::{ErrorSink, RunError};
use tokio::sync::Notify;

use crate::{Error, FailureEvent, Result};

/// The error sink of a pool: remembers the last connect error and wakes every checkout
/// waiting for a connection. Cheap to clone; clones share the state.
#[derive(Clone, Debug, Default)]
pub struct ConnectFailures {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Why the last connect attempt failed, and its failure event: the checkouts it ends
    /// fail together, counted once by the breaker.
    last: Mutex<(String, Option<FailureEvent>)>,
    notify: Notify,
}

impl ConnectFailures {
    /// A sink that has seen no failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last connect error, empty if there was none.
    pub fn last(&self) -> String {
        self.last_with_event().0
    }

    fn last_with_event(&self) -> (String, Option<FailureEvent>) {
        self.inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<E: std::error::Error + Send + 'static> ErrorSink<E> for ConnectFailures {
    fn sink(&self, error: E) {
        // Why, in full (drivers keep it in the source chain); a cache error without its
        // kind, which the checkout's error shows anyway.
        let why = match (&error as &dyn std::any::Any).downcast_ref::<Error>() {
            Some(ours) => ours.explanation(),
            None => crate::causes(&error),
        };
        *self
            .inner
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (why, Some(FailureEvent::new()));
        self.inner.notify.notify_waiters();
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<E>> {
        Box::new(self.clone())
    }
}

/// Waits for `get` (a bb8 `get` / `get_owned`) at most `wait`, and not at all past a failed
/// connect attempt (then the error carries the attempt's [`FailureEvent`], the same for every
/// checkout it ended). `backend` and `timeout_hint` name the server and the setting to look at in
/// the errors; `user` turns an error of the connection manager into a cache error.
pub async fn checkout<C, E>(
    get: impl Future<Output = std::result::Result<C, RunError<E>>>,
    failures: &ConnectFailures,
    wait: Duration,
    backend: &str,
    timeout_hint: &str,
    user: impl FnOnce(E) -> Error,
) -> Result<C> {
    let failed = failures.inner.notify.notified();
    tokio::pin!(failed);
    failed.as_mut().enable();
    tokio::select! {
        biased;
        got = tokio::time::timeout(wait, get) => match got {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(RunError::User(e))) => Err(user(e)),
            Ok(Err(RunError::TimedOut)) | Err(_) => Err(Error::timeout(format!(
                "{backend}: no connection within {timeout_hint}; is the server reachable, \
                 is the pool large enough?"
            ))),
        },
        () = &mut failed => {
            let (why, event) = failures.last_with_event();
            let error = Error::unavailable(format!("{backend}: cannot connect: {why}"));
            // Every checkout this attempt ends fails with it: one failure for the breaker.
            Err(match event {
                Some(event) => error.with_event(event),
                None => error,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connect_failure_ends_the_wait_at_once() {
        let failures = ConnectFailures::new();
        let never = std::future::pending::<std::result::Result<(), RunError<Error>>>();
        let sink = failures.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ErrorSink::<Error>::sink(&sink, Error::unavailable("connection refused"));
        });
        let started = std::time::Instant::now();
        let error = checkout(never, &failures, Duration::from_secs(30), "db", "X", |e| e)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(error.kind(), crate::ErrorKind::Unavailable);
        assert_eq!(error.message(), "db: cannot connect: connection refused");
        assert!(
            error.event().is_some(),
            "a failed attempt is a failure event"
        );
    }

    // Paused time: the sleeps below end once every waiter is parked in its checkout.
    #[tokio::test(start_paused = true)]
    async fn the_checkouts_one_failed_connect_ends_share_its_event() {
        let failures = ConnectFailures::new();
        let wait = |failures: ConnectFailures| async move {
            let never = std::future::pending::<std::result::Result<(), RunError<Error>>>();
            checkout(never, &failures, Duration::from_secs(30), "db", "X", |e| e)
                .await
                .unwrap_err()
        };
        let waiting: Vec<_> = (0..3)
            .map(|_| tokio::spawn(wait(failures.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        ErrorSink::<Error>::sink(&failures, Error::unavailable("connection reset"));
        let mut events = Vec::new();
        for waiter in waiting {
            events.push(waiter.await.unwrap().event());
        }
        assert!(events[0].is_some());
        assert!(events.iter().all(|e| *e == events[0]), "{events:?}");
        // The next failed attempt is another event.
        let next = tokio::spawn(wait(failures.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        ErrorSink::<Error>::sink(&failures, Error::unavailable("connection refused"));
        assert_ne!(next.await.unwrap().event(), events[0]);
    }

    #[tokio::test]
    async fn without_failures_the_wait_is_bounded() {
        let failures = ConnectFailures::new();
        let never = std::future::pending::<std::result::Result<(), RunError<Error>>>();
        let error = checkout(
            never,
            &failures,
            Duration::from_millis(30),
            "db",
            "X",
            |e| e,
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Timeout);
        assert!(error.message().contains("within X"), "{error}");
    }
}
