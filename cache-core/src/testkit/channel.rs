//! [`LocalChannel`]: a [`Channel`] inside one process, for tests of what listens to channels:
//! every listener hears every message, and a test can lose, silence, delay or jam it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;

use crate::{Channel, ChannelEvent, Error, EventSink, Listening, Result};

/// An in-process channel. Clones are the same channel (as two processes' connectors to one
/// server would be).
#[derive(Clone, Default)]
pub struct LocalChannel {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    listeners: Mutex<Vec<Weak<Listener>>>,
    /// Publishing fails while set.
    down: AtomicBool,
    /// Publishing never finishes while set (a write on a dead connection).
    stuck: AtomicBool,
    /// Messages reach the listeners this many milliseconds after they are published.
    lag_ms: AtomicU64,
}

struct Listener {
    sink: EventSink,
    /// Messages are dropped (not delivered) while set: a subscription that died silently.
    deaf: AtomicBool,
}

struct Subscription(#[allow(dead_code)] Arc<Listener>);

impl Listening for Subscription {}

impl std::fmt::Debug for LocalChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChannel").finish_non_exhaustive()
    }
}

impl LocalChannel {
    /// A channel nobody listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn listeners(&self) -> Vec<Arc<Listener>> {
        let mut listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| l.strong_count() > 0);
        listeners.iter().filter_map(Weak::upgrade).collect()
    }

    /// Every subscription is lost (as a server restart does), then subscribed again.
    pub fn reconnect_all(&self) {
        for listener in self.listeners() {
            (listener.sink)(ChannelEvent::Lost(
                "the test dropped the subscription".into(),
            ));
            (listener.sink)(ChannelEvent::Subscribed);
        }
    }

    /// Every subscription is lost and stays lost until [`reconnect_all`](Self::reconnect_all).
    pub fn lose_all(&self) {
        for listener in self.listeners() {
            (listener.sink)(ChannelEvent::Lost(
                "the test dropped the subscription".into(),
            ));
        }
    }

    /// While `deaf`, every subscription silently drops what is published (no event at all).
    pub fn set_deaf(&self, deaf: bool) {
        for listener in self.listeners() {
            listener.deaf.store(deaf, Ordering::SeqCst);
        }
    }

    /// While `down`, publishing fails.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// While `stuck`, a publish never returns (and delivers nothing), as a write to a
    /// connection that died without a word does until its timeout.
    pub fn set_stuck(&self, stuck: bool) {
        self.inner.stuck.store(stuck, Ordering::SeqCst);
    }

    /// Messages published from now on reach the listeners `lag` later (a subscription that
    /// falls behind), in order. Needs a Tokio runtime.
    pub fn set_lag(&self, lag: Duration) {
        let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
        self.inner.lag_ms.store(ms, Ordering::SeqCst);
    }
}

#[async_trait]
impl Channel for LocalChannel {
    fn transport(&self) -> &'static str {
        "local"
    }

    fn max_message(&self) -> usize {
        8_000
    }

    async fn publish(&self, message: Vec<u8>) -> Result<()> {
        if self.inner.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("local channel: down (set by the test)"));
        }
        if self.inner.stuck.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let lag = Duration::from_millis(self.inner.lag_ms.load(Ordering::SeqCst));
        for listener in self.listeners() {
            if listener.deaf.load(Ordering::SeqCst) {
                continue;
            }
            if lag.is_zero() {
                (listener.sink)(ChannelEvent::Message(message.clone()));
            } else {
                let message = message.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(lag).await;
                    (listener.sink)(ChannelEvent::Message(message));
                });
            }
        }
        Ok(())
    }

    fn listen(&self, sink: EventSink) -> Box<dyn Listening> {
        let listener = Arc::new(Listener {
            sink,
            deaf: AtomicBool::new(false),
        });
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&listener));
        (listener.sink)(ChannelEvent::Subscribed);
        Box::new(Subscription(listener))
    }
}
