//! [`RedisChannel`]: messages between processes over Redis pub/sub.
//!
//! Messages are published with `PUBLISH` on a pooled connection. Each listening process keeps
//! one connection of its own subscribed to the channel: on one server; on the current master
//! of a Sentinel-managed set (asked again on every reconnect, so the subscription follows a
//! failover); on one seed node of a Redis Cluster (a plain `PUBLISH` on any node reaches the
//! subscribers of every node, and a reconnect tries the next seed). A lost subscription is
//! reported, then re-established with backoff.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{Channel, ChannelEvent, EventSink, Listening, ListeningTask, Result, async_trait};
use futures_util::StreamExt;

use crate::connector::Shared;
use crate::pool::Manager;

/// The largest message published (pub/sub itself takes far more; this keeps one message from
/// tying up a connection).
const MAX_MESSAGE: usize = 1 << 20;
/// The first wait before subscribing again, doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The Redis pub/sub channel of a [`RedisConnector`](crate::RedisConnector), made by
/// [`RedisConnector::channel`](crate::RedisConnector::channel).
#[derive(Clone)]
pub struct RedisChannel {
    shared: Arc<Shared>,
    /// Makes the subscription connections (not the pool's).
    subscriber: Arc<Manager>,
    name: Arc<str>,
}

impl std::fmt::Debug for RedisChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannel")
            .field("name", &self.name)
            .finish()
    }
}

impl RedisChannel {
    pub(crate) fn new(shared: Arc<Shared>, subscriber: Manager) -> Self {
        // Pub/sub ignores the database number: name the channel after it, so caches in other
        // databases of the same server do not hear each other.
        let db = shared
            .config
            .connection_info()
            .map(|info| info.redis_settings().db())
            .unwrap_or(0);
        RedisChannel {
            shared,
            subscriber: Arc::new(subscriber),
            name: format!("oc2-changes-{db}").into(),
        }
    }

    /// The pub/sub channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Channel for RedisChannel {
    fn transport(&self) -> &'static str {
        crate::CONNECTOR
    }

    fn max_message(&self) -> usize {
        MAX_MESSAGE
    }

    async fn publish(&self, message: Vec<u8>) -> Result<()> {
        let (name, message) = (&*self.name, &message);
        self.shared
            .with_connection(self.shared.config.write_timeout, |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(name)
                    .arg(message)
                    .query_async::<i64>(&mut c)
                    .await
                    .map(drop)
            })
            .await
    }

    fn listen(&self, sink: EventSink) -> Box<dyn Listening> {
        let task = tokio::spawn(listen(
            Arc::clone(&self.subscriber),
            Arc::clone(&self.name),
            self.shared.config.dial_timeout,
            sink,
        ));
        Box::new(ListeningTask(task))
    }
}

/// Subscribes, forwards messages until the subscription ends, and starts over after a
/// backoff — until aborted.
async fn listen(subscriber: Arc<Manager>, name: Arc<str>, dial: Duration, sink: EventSink) {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0usize;
    loop {
        match tokio::time::timeout(dial, subscriber.subscribe(&name, attempt)).await {
            Ok(Ok(pubsub)) => {
                backoff = FIRST_BACKOFF;
                sink(ChannelEvent::Subscribed);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    sink(ChannelEvent::Message(message.get_payload_bytes().to_vec()));
                }
                sink(ChannelEvent::Lost(
                    "the subscription's connection closed".to_owned(),
                ));
            }
            Ok(Err(error)) => sink(ChannelEvent::Lost(format!("cannot subscribe: {error}"))),
            Err(_) => sink(ChannelEvent::Lost(format!(
                "cannot subscribe within {dial:?} (Caches.Connectors.Redis.DialTimeout)"
            ))),
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
