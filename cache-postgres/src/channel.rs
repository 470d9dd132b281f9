//! [`PostgresChannel`]: messages between processes over PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! Every change made through the connector is announced by its own function (`pg_notify` in
//! the same transaction: delivered at commit, in commit order, never for a change rolled
//! back), and changes made by hand on the tables (rows updated or deleted, `TRUNCATE`) by
//! triggers. Other messages (heartbeats) are sent with `pg_notify` on a pooled connection
//! (one round trip; delivered at commit). Each listening process keeps one connection of its own that runs `LISTEN` and
//! hands every notification on; when that connection is lost (a restart, an administrator's
//! `pg_terminate_backend`), the loss is reported and the connection made again with backoff.
//! A notification carries less than 8 000 bytes ([`MAX_MESSAGE`]); the near cache splits
//! longer key lists.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{
    Channel, ChannelEvent, Error, EventSink, Listening, ListeningTask, Result, async_trait,
};
use tokio_postgres::AsyncMessage;

use crate::shared::Shared;
use crate::sql::Stmt;
use crate::tls::Connect;

/// The largest message: PostgreSQL refuses a notification payload of 8 000 bytes or more.
pub const MAX_MESSAGE: usize = 7_900;
/// The first wait before listening again, doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The `LISTEN`/`NOTIFY` channel of a [`PostgresConnector`](crate::PostgresConnector), made by
/// [`PostgresConnector::channel`](crate::PostgresConnector::channel).
#[derive(Clone)]
pub struct PostgresChannel {
    shared: Arc<Shared>,
    /// How the listening connection connects.
    listener: Arc<Connect>,
    name: Arc<str>,
}

impl std::fmt::Debug for PostgresChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresChannel")
            .field("name", &self.name)
            .finish()
    }
}

impl PostgresChannel {
    pub(crate) fn new(shared: Arc<Shared>, listener: Connect) -> Self {
        PostgresChannel {
            name: shared.channel.as_str().into(),
            shared,
            listener: Arc::new(listener),
        }
    }

    /// The notification channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[async_trait]
impl Channel for PostgresChannel {
    fn transport(&self) -> &'static str {
        crate::CONNECTOR
    }

    fn max_message(&self) -> usize {
        MAX_MESSAGE
    }

    fn origin(&self) -> Option<u64> {
        Some(self.shared.origin)
    }

    async fn publish(&self, message: Vec<u8>) -> Result<()> {
        let payload = String::from_utf8(message).map_err(|_| {
            Error::rejected("postgres: a notification must be text (UTF-8); this one is not")
        })?;
        if payload.len() > MAX_MESSAGE {
            return Err(Error::rejected(format!(
                "postgres: a notification holds at most {MAX_MESSAGE} bytes, this one has {}",
                payload.len()
            )));
        }
        self.shared
            .db
            .query(Stmt::Notify, &[&&*self.name, &payload])
            .await
            .map(drop)
    }

    fn listen(&self, sink: EventSink) -> Box<dyn Listening> {
        let task = tokio::spawn(listen(
            Arc::clone(&self.listener),
            Arc::clone(&self.name),
            sink,
        ));
        Box::new(ListeningTask(task))
    }
}

/// Listens, forwards notifications until the connection is lost, and starts over after a
/// backoff — until aborted.
async fn listen(config: Arc<Connect>, name: Arc<str>, sink: EventSink) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let reason = listen_once(&config, &name, &sink, &mut backoff).await;
        sink(ChannelEvent::Lost(reason));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: connect, `LISTEN`, forward notifications. Returns why it ended.
async fn listen_once(
    connect: &Connect,
    name: &str,
    sink: &EventSink,
    backoff: &mut Duration,
) -> String {
    let connect_timeout = connect
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let (client, mut connection) =
        match tokio::time::timeout(connect_timeout, connect.config.connect(connect.tls())).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return format!("cannot connect: {}", cache_core::causes(&error)),
            Err(_) => return format!("cannot connect within {connect_timeout:?}"),
        };
    // The connection must be driven for any query to complete, and it is what hands over the
    // notifications: one future does both until the connection ends.
    let drive = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    sink(ChannelEvent::Message(n.payload().as_bytes().to_vec()));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return format!("the connection failed: {error}"),
                None => return "the connection closed".to_owned(),
            }
        }
    };
    tokio::pin!(drive);
    let statement = format!("LISTEN \"{name}\"");
    let listen = client.batch_execute(&statement);
    tokio::select! {
        reason = &mut drive => return reason,
        listened = listen => if let Err(error) = listened {
            return format!("LISTEN failed: {error}");
        },
    }
    *backoff = FIRST_BACKOFF;
    sink(ChannelEvent::Subscribed);
    let reason = drive.await;
    drop(client);
    reason
}
