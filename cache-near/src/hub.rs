//! [`Hub`]: one process's end of a channel — the subscription, its health, the messages sent
//! and received — shared by every near cache announcing on that channel.
//!
//! **Health.** The hub is healthy once a heartbeat it sent itself came back through the
//! subscription: that proves the whole loop (publish, server, subscription) works. It is not
//! healthy from the start until then, after the channel reports the subscription lost, and
//! when the latest heartbeat that came back was *sent* more than [`SILENCE`] ago — a
//! subscription that died without a word, or one that lags that far behind (heartbeats still
//! arrive, late). A watchdog task that never waits on the channel checks this, so a publish
//! stuck on a dead connection cannot delay it. After [`RESUBSCRIBE_AFTER`] of such silence the
//! hub subscribes again on a new connection (a half-open TCP connection never reports itself
//! lost). Every change of health is logged at warn, and going unhealthy clears the memory
//! level of every near cache on the hub (they read through to the shared level until the hub
//! is healthy again): messages may have been lost meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use cache_core::announcement::{Announcement as Message, Kind};
use cache_core::{Channel, ChannelEvent, Counter, Listening};

/// How often a hub sends its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// A hub whose latest returned heartbeat was sent longer ago than this is not healthy.
pub const SILENCE: Duration = Duration::from_secs(1);
/// A hub silent for this long drops its subscription and subscribes again (at most this
/// often).
pub const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(2);
/// The longest a change waits for its announcement (all of its messages); what is not
/// published by then is sent again with the next heartbeat.
pub const ANNOUNCE_LIMIT: Duration = Duration::from_millis(500);
/// How often the watchdog looks at the silence.
const WATCH: Duration = Duration::from_millis(100);
/// Send times of the latest heartbeats kept, to date the one that comes back.
const SENT_KEPT: usize = 64;
/// Announcements that could not be sent and wait for the next heartbeat; past this many, the
/// object caches concerned are announced as truncated instead.
const RETRY_LIMIT: usize = 1_000;

/// Where a hub's channel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelState {
    /// Subscribed, and the hub's own heartbeat came back within [`SILENCE`]: near caches
    /// answer from memory.
    Healthy,
    /// Not subscribed yet, subscription lost, or silent: near caches read through.
    Unhealthy,
}

impl ChannelState {
    /// The state's name for logs and metrics (`healthy`, `unhealthy`).
    pub fn name(self) -> &'static str {
        match self {
            ChannelState::Healthy => "healthy",
            ChannelState::Unhealthy => "unhealthy",
        }
    }
}

/// What a hub's counters say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Messages sent (announcements and heartbeats).
    pub sent: u64,
    /// Messages received from other processes.
    pub received: u64,
    /// Sends that failed (each is retried with the next heartbeat).
    pub send_failures: u64,
    /// Times the hub became unhealthy.
    pub outages: u64,
}

/// A near cache as the hub sees it: told of other processes' changes (and of changes the
/// server saw made behind the library's back), and reset when messages may have been lost.
pub(crate) trait Receiver: Send + Sync {
    /// Applies another process's change to the memory level.
    fn apply(&self, message: &Message);
    /// Empties the memory level; fills in flight are not installed.
    fn reset(&self);
}

/// One process's end of a channel. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("transport", &self.inner.channel.transport())
            .field("state", &self.state())
            .finish()
    }
}

struct Inner {
    channel: Arc<dyn Channel>,
    /// This hub's id in messages: its own are not applied again.
    origin: u64,
    healthy: AtomicBool,
    /// When the latest of this hub's own heartbeats that came back was sent.
    last_echo: Mutex<Option<Instant>>,
    heartbeat_seq: AtomicU64,
    /// When each of the latest heartbeats was sent, by sequence number.
    heartbeats_sent: Mutex<VecDeque<(u64, Instant)>>,
    /// When the hub last subscribed.
    subscribed_at: Mutex<Instant>,
    receivers: RwLock<HashMap<String, Vec<Weak<dyn Receiver>>>>,
    /// Announcements that failed, with their purpose, oldest first.
    retry: Mutex<VecDeque<(String, Vec<u8>)>>,
    sent: Counter,
    received: Counter,
    send_failures: Counter,
    outages: Counter,
    /// `cache_channel_healthy`: 1 while healthy.
    healthy_gauge: metrics::Gauge,
    /// Keeps the subscription (dropped with the hub).
    listening: Mutex<Option<Box<dyn Listening>>>,
}

impl Hub {
    /// A hub on `channel`: subscribes and starts the heartbeat. Must be called inside a Tokio
    /// runtime; both stop when the last clone of the hub is dropped.
    pub fn new(channel: Arc<dyn Channel>) -> Self {
        use cache_core::observe::{self, CHANNEL_HEALTHY, CHANNEL_OUTAGES, CHANNEL_SEND_FAILURES};
        observe::describe();
        let transport = channel.transport();
        let healthy_gauge = metrics::gauge!(CHANNEL_HEALTHY, "transport" => transport);
        healthy_gauge.set(0.0);
        let exported = |name| Counter::exported(metrics::counter!(name, "transport" => transport));
        // The channel's origin when its server announces this process's changes (so they are
        // not applied twice); otherwise one of our own.
        let origin = channel
            .origin()
            .unwrap_or_else(|| rand::random::<u64>() | 1);
        let inner = Arc::new(Inner {
            channel,
            origin,
            healthy: AtomicBool::new(false),
            last_echo: Mutex::new(None),
            heartbeat_seq: AtomicU64::new(0),
            heartbeats_sent: Mutex::new(VecDeque::new()),
            subscribed_at: Mutex::new(Instant::now()),
            receivers: RwLock::new(HashMap::new()),
            retry: Mutex::new(VecDeque::new()),
            sent: Counter::default(),
            received: Counter::default(),
            send_failures: exported(CHANNEL_SEND_FAILURES),
            outages: exported(CHANNEL_OUTAGES),
            healthy_gauge,
            listening: Mutex::new(None),
        });
        inner.subscribe();
        tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        tokio::spawn(watchdog(Arc::downgrade(&inner)));
        Hub { inner }
    }

    /// Whether near caches may answer from memory now.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }

    /// The channel's state.
    pub fn state(&self) -> ChannelState {
        if self.is_healthy() {
            ChannelState::Healthy
        } else {
            ChannelState::Unhealthy
        }
    }

    /// The transport's name (`redis`, `postgres`).
    pub fn transport(&self) -> &'static str {
        self.inner.channel.transport()
    }

    /// This hub's id in messages (the channel's origin when its server announces changes).
    pub(crate) fn origin(&self) -> u64 {
        self.inner.origin
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        let i = &self.inner;
        HubStats {
            sent: i.sent.get(),
            received: i.received.get(),
            send_failures: i.send_failures.get(),
            outages: i.outages.get(),
        }
    }

    pub(crate) fn register(&self, purpose: &str, receiver: Weak<dyn Receiver>) {
        let mut receivers = self
            .inner
            .receivers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let list = receivers.entry(purpose.to_owned()).or_default();
        list.retain(|r| r.strong_count() > 0);
        list.push(receiver);
    }

    /// Tells every other process that `kind` happened to `keys` of `index` in `purpose`
    /// (`replaced`: the invalidation a set announces for the keys its object took). Never
    /// fails: a message that cannot be sent is logged, counted and sent again with the next
    /// heartbeat.
    pub(crate) async fn announce(
        &self,
        purpose: &str,
        (kind, replaced): (Kind, bool),
        index: &str,
        keys: &[&str],
    ) {
        let inner = &self.inner;
        let messages = Message::split(
            inner.origin,
            purpose,
            (kind, replaced),
            index,
            keys,
            inner.channel.max_message(),
        );
        // The caller waits at most ANNOUNCE_LIMIT for all of it, whatever the transport's own
        // timeouts: what is not out by then is sent again with the next heartbeat.
        let deadline = Instant::now() + ANNOUNCE_LIMIT;
        for message in messages {
            inner.send(purpose, message, deadline).await;
        }
    }
}

impl Inner {
    /// Subscribes (again): the previous subscription, if any, is dropped.
    fn subscribe(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        *self
            .subscribed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let listening = self.channel.listen(Box::new(move |event| {
            if let Some(inner) = weak.upgrade() {
                inner.on_event(event);
            }
        }));
        let previous = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(listening);
        drop(previous);
    }

    /// A heartbeat message with the next sequence number, its send time noted.
    fn next_heartbeat(&self) -> Vec<u8> {
        let seq = self.heartbeat_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sent = self
            .heartbeats_sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sent.push_back((seq, Instant::now()));
        if sent.len() > SENT_KEPT {
            sent.pop_front();
        }
        Message::heartbeat(self.origin, seq).encode()
    }

    async fn send(&self, purpose: &str, message: Vec<u8>, deadline: Instant) {
        let published = tokio::time::timeout_at(deadline, self.channel.publish(message.clone()))
            .await
            .unwrap_or_else(|_| {
                Err(cache_core::Error::timeout(format!(
                    "{} channel: not published within {ANNOUNCE_LIMIT:?}",
                    self.channel.transport()
                )))
            });
        match published {
            Ok(()) => self.sent.increment(),
            Err(error) => {
                self.send_failures.increment();
                tracing::warn!(
                    purpose,
                    connector = self.channel.transport(),
                    %error,
                    "a change could not be announced to the other processes; sent again with \
                     the next heartbeat"
                );
                self.keep(purpose, message);
            }
        }
    }

    /// Keeps a failed announcement; past the limit, the oldest ones are replaced by a
    /// truncate of their object cache.
    fn keep(&self, purpose: &str, message: Vec<u8>) {
        let mut retry = self.retry.lock().unwrap_or_else(PoisonError::into_inner);
        retry.push_back((purpose.to_owned(), message));
        if retry.len() > RETRY_LIMIT {
            let purposes: std::collections::BTreeSet<String> =
                retry.drain(..).map(|(purpose, _)| purpose).collect();
            for purpose in purposes {
                let truncate = Message::split(
                    self.origin,
                    &purpose,
                    (Kind::Truncate, false),
                    "",
                    &[],
                    usize::MAX,
                );
                for message in truncate {
                    retry.push_back((purpose.clone(), message));
                }
            }
        }
    }

    fn on_event(&self, event: ChannelEvent) {
        match event {
            ChannelEvent::Subscribed => {
                // Healthy once our own heartbeat comes back through the new subscription.
                self.send_heartbeat_soon();
            }
            ChannelEvent::Lost(reason) => self.unhealthy(&reason),
            ChannelEvent::Message(bytes) => match Message::decode(&bytes) {
                Some(message) => self.on_message(message),
                None => tracing::debug!(
                    connector = self.channel.transport(),
                    "ignored a message that is not a near-cache message"
                ),
            },
            ChannelEvent::Change(message) => self.on_message(message),
        }
    }

    /// A message or a change reported by the channel: a heartbeat, or a change to apply to
    /// the memory levels of its object cache (of every object cache, for a flush) — unless
    /// this process made it (its own changes are applied already).
    fn on_message(&self, message: Message) {
        match message.kind {
            Kind::Heartbeat => {
                if message.origin == self.origin {
                    self.echo(message.seq);
                }
                return;
            }
            Kind::Touched => return,
            _ => {}
        }
        if message.origin == self.origin {
            return;
        }
        self.received.increment();
        let receivers = self
            .receivers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if message.kind == Kind::Flush {
            for receiver in receivers.values().flatten() {
                if let Some(receiver) = receiver.upgrade() {
                    receiver.reset();
                }
            }
            return;
        }
        for receiver in receivers.get(&message.purpose).into_iter().flatten() {
            if let Some(receiver) = receiver.upgrade() {
                receiver.apply(&message);
            }
        }
    }

    fn send_heartbeat_soon(&self) {
        let message = self.next_heartbeat();
        let channel = Arc::clone(&self.channel);
        tokio::spawn(async move {
            let _ = channel.publish(message).await;
        });
    }

    /// Our own heartbeat `seq` came back: everything published before it was sent has been
    /// delivered.
    fn echo(&self, seq: u64) {
        let sent = self
            .heartbeats_sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, at)| *at);
        // One so old its send time is forgotten proves nothing recent.
        let Some(sent) = sent else { return };
        {
            let mut last = self
                .last_echo
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at >= sent) {
                return;
            }
            *last = Some(sent);
        }
        if sent.elapsed() > SILENCE {
            // It came back, but so late that the subscription lags: not healthy (the
            // watchdog says so if it was).
            return;
        }
        if !self.healthy.load(Ordering::Acquire) {
            // Fills that began while unhealthy must not be installed: reset first.
            self.reset_all();
            self.healthy.store(true, Ordering::Release);
            self.healthy_gauge.set(1.0);
            tracing::warn!(
                connector = self.channel.transport(),
                state = ChannelState::Healthy.name(),
                "near-cache channel healthy: memory levels answer again"
            );
        }
    }

    fn unhealthy(&self, reason: &str) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            self.healthy_gauge.set(0.0);
            self.outages.increment();
            tracing::warn!(
                connector = self.channel.transport(),
                state = ChannelState::Unhealthy.name(),
                reason,
                "near-cache channel unhealthy: memory levels cleared, reading through until \
                 it is back"
            );
        }
        // Even when already unhealthy: fills of reads that began before must not land.
        self.reset_all();
    }

    fn reset_all(&self) {
        let receivers = self
            .receivers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for receiver in receivers.values().flatten() {
            if let Some(receiver) = receiver.upgrade() {
                receiver.reset();
            }
        }
    }

    /// The watchdog's look: unhealthy when the latest returned heartbeat was sent more than
    /// [`SILENCE`] ago; a new subscription after [`RESUBSCRIBE_AFTER`] of that.
    fn watch(self: &Arc<Self>) {
        let last = *self
            .last_echo
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let subscribed_for = self
            .subscribed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        // Never heard back: silent since subscribing.
        let silent_for = last.map_or(subscribed_for, |at| at.elapsed());
        if self.healthy.load(Ordering::Acquire) && silent_for > SILENCE {
            self.unhealthy(&format!(
                "no heartbeat sent within the last {SILENCE:?} came back: the subscription is \
                 dead or lags"
            ));
        }
        if silent_for > RESUBSCRIBE_AFTER && subscribed_for > RESUBSCRIBE_AFTER {
            tracing::warn!(
                connector = self.channel.transport(),
                "near-cache channel silent for {RESUBSCRIBE_AFTER:?}: subscribing again on a \
                 new connection"
            );
            self.subscribe();
        }
    }

    /// One heartbeat: sends what failed before, and the heartbeat; each publish is given up
    /// after [`SILENCE`].
    async fn tick(&self) {
        loop {
            let next = self
                .retry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            let Some((purpose, message)) = next else {
                break;
            };
            if !self.publish_within(message.clone(), SILENCE).await {
                self.retry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_front((purpose, message));
                break;
            }
            self.sent.increment();
        }
        if self.publish_within(self.next_heartbeat(), SILENCE).await {
            self.sent.increment();
        }
    }

    /// Publishes `message`, giving up after `limit` (a connection that died without a word
    /// may not fail a write for much longer); whether it was published.
    async fn publish_within(&self, message: Vec<u8>, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.channel.publish(message)).await,
            Ok(Ok(()))
        )
    }
}

/// The heartbeat task: a tick every [`HEARTBEAT`] until the hub is dropped.
async fn heartbeat(inner: Weak<Inner>) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.tick().await;
    }
}

/// The watchdog task: looks at the silence every [`WATCH`] until the hub is dropped. It never
/// waits on the channel.
async fn watchdog(inner: Weak<Inner>) {
    let mut ticks = tokio::time::interval(WATCH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.watch();
    }
}
