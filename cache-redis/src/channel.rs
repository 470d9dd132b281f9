//! [`RedisChannel`]: messages between processes over Redis pub/sub, and the changes the
//! server reports by itself.
//!
//! Every change made through the connector is announced by its own script (`PUBLISH` in the
//! same atomic step as the change); heartbeats and other messages are published with
//! `PUBLISH` on a pooled connection. Each listening process keeps watchers of its own
//! (`watch.rs`): RESP3 connections subscribed to the channel and tracking every key of the
//! layout — on one server; on the current master of a Sentinel-managed set (asked again on
//! every reconnect, so the watch follows a failover); on every master of a Redis Cluster (a
//! plain `PUBLISH` reaches the subscribers of every node, and each master reports the keys it
//! holds). A lost watcher is reported, then the watch is set up again with backoff.

use std::sync::Arc;

use cache_core::{Channel, EventSink, Listening, ListeningTask, Result, async_trait};

use crate::config::RedisConfig;
use crate::pool::Manager;
use crate::shared::Shared;

/// The largest message published (pub/sub itself takes far more; this keeps one message from
/// tying up a connection).
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

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

/// The channel's name: pub/sub ignores the database number, so the channel is named after
/// it, and caches in other databases of the same server do not hear each other.
pub(crate) fn channel_name(config: &RedisConfig) -> String {
    let db = config
        .connection_info()
        .map(|info| info.redis_settings().db())
        .unwrap_or(0);
    format!("oc3-changes-{db}")
}

impl RedisChannel {
    pub(crate) fn new(shared: Arc<Shared>, subscriber: Manager) -> Self {
        RedisChannel {
            name: shared.channel.as_str().into(),
            shared,
            subscriber: Arc::new(subscriber),
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

    fn origin(&self) -> Option<u64> {
        Some(self.shared.origin)
    }

    fn listen(&self, sink: EventSink) -> Box<dyn Listening> {
        let task = tokio::spawn(crate::watch::listen(
            Arc::clone(&self.subscriber),
            Arc::clone(&self.name),
            self.shared.config.dial_timeout,
            sink,
        ));
        Box::new(ListeningTask(task))
    }
}
