//! The listening side of the [Redis channel](crate::RedisChannel): what a process hears of the
//! changes of every other process, and of the changes the server sees made behind the
//! library's back.
//!
//! A **watcher** is a connection that speaks RESP3 and, on one server (or the current master
//! of a Sentinel-managed set, or each master of a Cluster), is
//!
//! - subscribed to the channel, where every change made through the library is announced by
//!   its own script, in the same atomic step as the change (a client that dies after sending
//!   its change cannot keep the announcement from going out), and where heartbeats go; and
//! - tracking every key of the layout in broadcast mode (`CLIENT TRACKING ON BCAST PREFIX
//!   oc3{`, Redis 6+, no server setting needed): the server reports every key that changes —
//!   written, deleted, expired or evicted, by anyone — and a flush.
//!
//! A report of a key that an announcement covered is the library's own change (or a renewal
//! the scripts announce as such) and is dropped; any other is a change made behind the
//! library's back, reported as an invalidation of that (purpose, index, key) — or of the
//! whole object cache for a key stored as its digest — or, for a flush, of everything. The
//! server sends a script's announcement as the script runs and its tracking reports when the
//! event loop goes to sleep, on the same connection: so the announcements that cover a
//! report always arrive before it, and those received since the previous report are exactly
//! the ones that can cover it.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cache_core::announcement::{Announcement, Kind};
use cache_core::{ChannelEvent, EventSink};
use redis::{PushInfo, PushKind, Value};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::keys;
use crate::pool::Manager;

/// The first wait before watching again, doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often a Cluster's masters are looked up again (a new master, a failover): a change
/// starts the watch over.
const REDISCOVER: Duration = Duration::from_secs(10);
/// Messages counted until every watcher has seen them (heartbeats on a Cluster).
const PENDING_KEPT: usize = 256;

/// Handles the pushes of watcher `n` (called on the connection's own task, so a push is
/// handled the moment it is read).
pub(crate) type OnPush = Arc<dyn Fn(usize, PushInfo) + Send + Sync>;

/// Watches, forwards what it hears until a watcher is lost, and starts over after a backoff
/// — until aborted.
pub(crate) async fn listen(manager: Arc<Manager>, name: Arc<str>, dial: Duration, sink: EventSink) {
    let sink: Arc<EventSink> = Arc::new(sink);
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0usize;
    loop {
        let (ended, mut end) = mpsc::unbounded_channel::<String>();
        let watch = Arc::new(Mutex::new(None::<Watch>));
        let on_push: OnPush = {
            let watch = Arc::clone(&watch);
            Arc::new(move |watcher, push| {
                let mut watch = watch.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(watch) = watch.as_mut()
                    && let Some(reason) = watch.on_push(watcher, push)
                {
                    let _ = ended.send(reason);
                }
            })
        };
        match tokio::time::timeout(dial, manager.watch(&name, attempt, on_push)).await {
            Ok(Ok(watchers)) => {
                backoff = FIRST_BACKOFF;
                *watch.lock().unwrap_or_else(PoisonError::into_inner) = Some(Watch::new(
                    Arc::clone(&name),
                    watchers.len(),
                    Arc::clone(&sink),
                ));
                sink(ChannelEvent::Subscribed);
                let reason = watch_until_lost(&manager, &mut end, attempt).await;
                watch.lock().unwrap_or_else(PoisonError::into_inner).take();
                drop(watchers);
                sink(ChannelEvent::Lost(reason));
            }
            Ok(Err(error)) => sink(ChannelEvent::Lost(format!("cannot watch: {error}"))),
            Err(_) => sink(ChannelEvent::Lost(format!(
                "cannot watch within {dial:?} (Caches.Connectors.Redis.DialTimeout)"
            ))),
        }
        attempt = attempt.wrapping_add(1);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits until a watcher is lost (or a Cluster's masters change); why it ended.
async fn watch_until_lost(
    manager: &Manager,
    end: &mut mpsc::UnboundedReceiver<String>,
    attempt: usize,
) -> String {
    let masters = manager.masters(attempt).await.ok().flatten();
    let mut rediscover = tokio::time::interval(REDISCOVER);
    rediscover.tick().await;
    loop {
        tokio::select! {
            reason = end.recv() => {
                return reason.unwrap_or_else(|| "the watching connections closed".to_owned());
            }
            _ = rediscover.tick(), if masters.is_some() => {
                let now = manager.masters(attempt).await.ok().flatten();
                if now.is_some() && now != masters {
                    return "the cluster's masters changed".to_owned();
                }
            }
        }
    }
}

/// The key suffixes (what follows a release's prefix) a script announced as touched.
#[derive(Deserialize)]
struct Touched {
    #[serde(rename = "z", default)]
    suffixes: Vec<String>,
}

/// A key as the coverage compares them: the hash of its purpose, index and key as stored (no
/// allocation per key; two keys sharing a 64-bit hash within one report's window — far less
/// likely than a lost packet — would count as one).
type Covered = u64;

fn coverage_key(purpose: &str, index: &str, key: &str) -> Covered {
    let mut hasher = DefaultHasher::new();
    (purpose, index, key).hash(&mut hasher);
    hasher.finish()
}

/// The watch of one subscription: the coverage of each watcher, and messages waiting to be
/// seen by every watcher.
struct Watch {
    name: Arc<str>,
    sink: Arc<EventSink>,
    coverage: Vec<HashSet<Covered>>,
    /// Purposes whose whole cache an announcement covered (a truncate), per watcher.
    whole: Vec<HashSet<String>>,
    /// Messages other than announcements of changes (heartbeats), by content: on which
    /// watchers they arrived.
    pending: HashMap<Vec<u8>, Vec<bool>>,
}

impl Watch {
    fn new(name: Arc<str>, watchers: usize, sink: Arc<EventSink>) -> Self {
        Watch {
            name,
            sink,
            coverage: vec![HashSet::new(); watchers],
            whole: vec![HashSet::new(); watchers],
            pending: HashMap::new(),
        }
    }

    /// One push; `Some(reason)` when the watch is over.
    fn on_push(&mut self, watcher: usize, push: PushInfo) -> Option<String> {
        match push.kind {
            PushKind::Disconnection => {
                return Some("a watching connection closed".to_owned());
            }
            PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    return None;
                };
                if text(&channel).as_deref() == Some(&*self.name)
                    && let Some(payload) = bytes(payload)
                {
                    self.on_message(watcher, payload);
                }
            }
            PushKind::Invalidate => {
                let keys = push.data.into_iter().next();
                self.on_invalidate(watcher, keys);
            }
            _ => {}
        }
        None
    }

    /// A message on the channel: an announcement covers its keys on this watcher and is
    /// forwarded (from the first watcher: on a Cluster every watcher hears every message);
    /// anything else (heartbeats) is forwarded once every watcher has heard it, which proves
    /// every watcher's subscription.
    fn on_message(&mut self, watcher: usize, payload: Vec<u8>) {
        if let Some(announcement) = Announcement::decode(&payload) {
            self.cover(watcher, &announcement, &payload);
            match announcement.kind {
                Kind::Touched => return,
                Kind::Heartbeat => {}
                _ => {
                    if watcher == 0 {
                        (self.sink)(ChannelEvent::Change(announcement));
                    }
                    return;
                }
            }
        }
        let watchers = self.coverage.len();
        if watchers == 1 {
            (self.sink)(ChannelEvent::Message(payload));
            return;
        }
        if self.pending.len() >= PENDING_KEPT && !self.pending.contains_key(&payload) {
            self.pending.clear();
        }
        let seen = self
            .pending
            .entry(payload.clone())
            .or_insert_with(|| vec![false; watchers]);
        seen[watcher] = true;
        if seen.iter().all(|s| *s) {
            self.pending.remove(&payload);
            (self.sink)(ChannelEvent::Message(payload));
        }
    }

    fn cover(&mut self, watcher: usize, announcement: &Announcement, payload: &[u8]) {
        let covered = &mut self.coverage[watcher];
        let purpose = &announcement.purpose;
        match announcement.kind {
            Kind::Truncate => {
                self.whole[watcher].insert(purpose.clone());
            }
            Kind::Touched => {
                let suffixes = serde_json::from_slice::<Touched>(payload)
                    .map(|r| r.suffixes)
                    .unwrap_or_default();
                for suffix in &suffixes {
                    if let Some((index, key)) = keys::parse_suffix(suffix) {
                        covered.insert(coverage_key(purpose, index, key));
                    }
                }
            }
            _ => {}
        }
        for key in &announcement.keys {
            let stored = cache_core::keys::storable(key, keys::MAX_PLAIN_KEY);
            covered.insert(coverage_key(purpose, &announcement.index, &stored));
        }
    }

    /// The server's report of changed keys (`None` or nil: everything was flushed): what no
    /// announcement covered goes on as a change made behind the library's back.
    fn on_invalidate(&mut self, watcher: usize, keys: Option<Value>) {
        let covered = std::mem::take(&mut self.coverage[watcher]);
        let whole = std::mem::take(&mut self.whole[watcher]);
        let names = match keys {
            Some(Value::Array(names)) | Some(Value::Set(names)) => names,
            // A flush of a database (or of all).
            _ => {
                (self.sink)(ChannelEvent::Change(Announcement::change(
                    0,
                    "",
                    Kind::Flush,
                    "",
                    Vec::new(),
                )));
                return;
            }
        };
        // (purpose, index) -> keys; purposes changed as a whole.
        let mut changed: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut truncated: HashSet<String> = HashSet::new();
        for name in names.into_iter().filter_map(|n| text(&n)) {
            let Some((purpose, name)) = keys::parse_key(&name) else {
                continue;
            };
            if whole.contains(&purpose) {
                continue;
            }
            match name {
                keys::Name::Index { index, key } => {
                    if covered.contains(&coverage_key(&purpose, &index, &key)) {
                        continue;
                    }
                    if key.starts_with(cache_core::keys::DIGEST_MARK) {
                        truncated.insert(purpose);
                    } else {
                        changed.entry((purpose, index)).or_default().push(key);
                    }
                }
                // A body's removal is announced through its keys; the registry and leases are
                // no objects.
                keys::Name::Body | keys::Name::Registry | keys::Name::Lease => {}
            }
        }
        for purpose in truncated {
            changed.retain(|(p, _), _| *p != purpose);
            (self.sink)(ChannelEvent::Change(Announcement::change(
                0,
                &purpose,
                Kind::Truncate,
                "",
                Vec::new(),
            )));
        }
        for ((purpose, index), keys) in changed {
            (self.sink)(ChannelEvent::Change(Announcement::change(
                0,
                &purpose,
                Kind::Invalidate,
                &index,
                keys,
            )));
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}
