//! The contract between processes that share object caches: a **channel** carries short
//! messages (the keys a process changed, never values: [`Announcement`]s) to every process
//! listening on it.
//!
//! A [`Channel`] is one transport — Redis pub/sub and server-assisted tracking, PostgreSQL
//! `LISTEN`/`NOTIFY` — implemented next to the client that owns the connection (`cache-redis`,
//! `cache-postgres`). It publishes bytes, and while it listens it reports what happens on its
//! subscription as [`ChannelEvent`]s: the messages published, and the changes its server saw
//! made behind the library's back (another client's `DEL`, a flush, an eviction, SQL by hand),
//! which the connector turns into announcements of (purpose, index, key) or of a whole object
//! cache. A connector whose server announces the changes made through it — as part of the
//! change, so that no client can forget one — says so ([`Channel::origin`] and
//! [`Cache::announced_on`](crate::Cache::announced_on)). What a message means to a memory
//! level, and what a process must do when its subscription is not healthy, is the near cache's
//! business (`cache-near`).

use async_trait::async_trait;

use crate::announcement::Announcement;
use crate::error::Result;

/// What happens on a channel's subscription, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The subscription is (again) in place: messages published from now on arrive. Messages
    /// published while it was not may have been lost.
    Subscribed,
    /// A message, as published (by any process, this one included).
    Message(Vec<u8>),
    /// A change the channel reports itself: one its server made as part of a change through
    /// the library (decoded already), or one the server saw made by someone else (origin 0):
    /// a key changed, expired or evicted, an object cache or everything flushed.
    Change(Announcement),
    /// The subscription is gone (connection lost, server restarted, killed by an
    /// administrator): messages may be lost until the next [`Subscribed`](Self::Subscribed).
    /// The channel reconnects by itself, with backoff.
    Lost(String),
}

/// Where events of a [`Channel`] go. Called from the channel's own task, one event at a time:
/// it must not block.
pub type EventSink = Box<dyn Fn(ChannelEvent) + Send + Sync>;

/// Stops listening when dropped.
pub trait Listening: Send + Sync {}

/// A [`Listening`] that is a Tokio task: dropping it aborts the task (the usual shape of a
/// channel's listener: a task that subscribes, forwards and reconnects).
#[derive(Debug)]
pub struct ListeningTask(pub tokio::task::JoinHandle<()>);

impl Listening for ListeningTask {}

impl Drop for ListeningTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One transport for messages between processes.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// The transport's name for logs (`redis`, `postgres`).
    fn transport(&self) -> &'static str;

    /// The largest message, in bytes, this transport carries (PostgreSQL: under 8 000).
    fn max_message(&self) -> usize;

    /// The origin the server stamps on the announcements of changes made through the
    /// connector this channel belongs to (see
    /// [`Cache::announced_on`](crate::Cache::announced_on)); a hub on this channel takes it
    /// as its own, so it does not apply its own changes twice. `None` (the default): the
    /// server announces nothing by itself.
    fn origin(&self) -> Option<u64> {
        None
    }

    /// Sends `message` to every process listening, this one included. Bounded in time by the
    /// transport's timeouts.
    async fn publish(&self, message: Vec<u8>) -> Result<()>;

    /// Starts listening on a connection of its own, reconnecting with backoff whenever the
    /// subscription is lost, and reports every [`ChannelEvent`] to `sink` until the returned
    /// handle is dropped. Must be called inside a Tokio runtime.
    fn listen(&self, sink: EventSink) -> Box<dyn Listening>;
}

/// Compile-time check that the trait stays object safe.
#[allow(dead_code)]
fn _object_safe(_: &dyn Channel) {}
