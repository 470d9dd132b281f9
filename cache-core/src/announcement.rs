//! [`Announcement`]: what travels on a [`Channel`](crate::Channel) between processes — the wire
//! format of a change (keys, never values) or of a heartbeat.
//!
//! A small JSON object — `{"o":origin,"p":purpose,"k":kind,"x":index,"s":[keys]}` — that a
//! process publishes itself (the near cache of a connector whose server does not announce its
//! changes, heartbeats) or that a connector's server sends as part of a change (a Redis script,
//! a PostgreSQL function: the connector builds the messages and hands them to the script, so
//! they leave the server in the same atomic step as the change). Receivers ignore fields they
//! do not know, so a field added later is no break between releases.

use serde::{Deserialize, Serialize};

/// What an announcement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// The objects reachable through the keys are gone (also what a set announces for the
    /// keys the new object took, then with [`replaced`](Announcement::replaced)).
    #[serde(rename = "i")]
    Invalidate,
    /// The key mappings are gone; their objects stay reachable otherwise.
    #[serde(rename = "d")]
    Delete,
    /// The object cache is empty.
    #[serde(rename = "t")]
    Truncate,
    /// Every object cache on the channel is empty (a server flushed, a table truncated).
    #[serde(rename = "f")]
    Flush,
    /// Keys the server wrote that are no change of their own — their LastUsage renewed, or
    /// the other keys of an object removed by a change announced through one of its keys:
    /// nothing for a receiver to do. A connector whose server also reports every write (Redis
    /// tracking) announces them so that those reports are not taken for changes made behind
    /// the library's back.
    #[serde(rename = "u")]
    Touched,
    /// A process checking that its own messages come back.
    #[serde(rename = "h")]
    Heartbeat,
}

/// One message on a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The process that made the change (its hub's origin, see
    /// [`Channel::origin`](crate::Channel::origin)); 0 for a change the server saw made by
    /// someone else.
    #[serde(rename = "o")]
    pub origin: u64,
    /// The object cache it is about (empty for a heartbeat or a flush).
    #[serde(rename = "p", default)]
    pub purpose: String,
    /// What happened.
    #[serde(rename = "k")]
    pub kind: Kind,
    /// The index of the keys.
    #[serde(rename = "x", default, skip_serializing_if = "String::is_empty")]
    pub index: String,
    /// The keys.
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// A heartbeat's sequence number.
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// An invalidation a set announces (the keys a new object took), not an invalidation.
    #[serde(rename = "r", default, skip_serializing_if = "is_false")]
    pub replaced: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Announcement {
    /// A heartbeat of `origin`.
    pub fn heartbeat(origin: u64, seq: u64) -> Self {
        Announcement {
            origin,
            purpose: String::new(),
            kind: Kind::Heartbeat,
            index: String::new(),
            keys: Vec::new(),
            seq,
            replaced: false,
        }
    }

    /// A change of `kind` to `keys` of `index` in `purpose`, by `origin`.
    pub fn change(origin: u64, purpose: &str, kind: Kind, index: &str, keys: Vec<String>) -> Self {
        Announcement {
            origin,
            purpose: purpose.to_owned(),
            kind,
            index: index.to_owned(),
            keys,
            seq: 0,
            replaced: false,
        }
    }

    /// The message as sent.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message of strings and numbers always encodes")
    }

    /// A message as received; `None` when it is not one (another application's traffic on
    /// the channel, or a newer format).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// `kind` of `keys` under `index` in `purpose` by `origin` (by a set when `replaced`), as
    /// messages of at most `max` bytes each. A key too long to fit a message on its own turns
    /// the whole change into a truncate of the object cache, which is always correct (and the
    /// only way to say it).
    pub fn split(
        origin: u64,
        purpose: &str,
        (kind, replaced): (Kind, bool),
        index: &str,
        keys: &[&str],
        max: usize,
    ) -> Vec<Vec<u8>> {
        let empty = Announcement {
            replaced,
            ..Announcement::change(origin, purpose, kind, index, Vec::new())
        };
        if matches!(kind, Kind::Truncate | Kind::Flush | Kind::Heartbeat) {
            return vec![empty.encode()];
        }
        // `"s":[]` plus the separator it needs, on top of the message without keys.
        let base = empty.encode().len() + 7;
        let mut messages = Vec::new();
        let mut batch: Vec<String> = Vec::new();
        let mut size = base;
        for key in keys {
            let encoded = serde_json::to_string(key).map_or(usize::MAX, |k| k.len()) + 1;
            if base.saturating_add(encoded) > max {
                if kind == Kind::Touched {
                    continue; // no change: nothing to say instead
                }
                let truncate = Announcement {
                    kind: Kind::Truncate,
                    index: String::new(),
                    replaced: false,
                    ..empty
                };
                return vec![truncate.encode()];
            }
            if size + encoded > max && !batch.is_empty() {
                let keys = std::mem::take(&mut batch);
                messages.push(
                    Announcement {
                        keys,
                        ..empty.clone()
                    }
                    .encode(),
                );
                size = base;
            }
            batch.push((*key).to_owned());
            size += encoded;
        }
        if !batch.is_empty() {
            messages.push(
                Announcement {
                    keys: batch,
                    ..empty
                }
                .encode(),
            );
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_any_key() {
        let keys = ["a", "b\0c", "\"quoted\"", "日本", ""];
        let messages = Announcement::split(
            7,
            "instance",
            (Kind::Invalidate, false),
            "host",
            &keys,
            8_000,
        );
        assert_eq!(messages.len(), 1);
        let m = Announcement::decode(&messages[0]).unwrap();
        assert_eq!(
            (m.origin, m.purpose.as_str(), m.kind),
            (7, "instance", Kind::Invalidate)
        );
        assert_eq!(m.index, "host");
        assert_eq!(m.keys, keys);
        assert_eq!(Announcement::decode(b"not json"), None);
        assert_eq!(Announcement::decode(br#"{"o":1,"k":"zz"}"#), None);
    }

    #[test]
    fn long_key_lists_are_split_below_the_limit_and_lose_no_key() {
        let keys: Vec<String> = (0..3_000)
            .map(|i| format!("tenant-{i}.example.com"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let messages = Announcement::split(1, "org", (Kind::Delete, false), "domain", &refs, 7_900);
        assert!(messages.len() > 1);
        let mut seen = Vec::new();
        for bytes in &messages {
            assert!(bytes.len() <= 7_900, "{} bytes", bytes.len());
            let m = Announcement::decode(bytes).unwrap();
            assert_eq!(m.kind, Kind::Delete);
            seen.extend(m.keys);
        }
        assert_eq!(seen, keys);
    }

    #[test]
    fn a_key_longer_than_a_message_becomes_a_truncate() {
        let huge = "k".repeat(10_000);
        let messages = Announcement::split(
            1,
            "org",
            (Kind::Invalidate, false),
            "id",
            &["a", &huge],
            7_900,
        );
        assert_eq!(messages.len(), 1);
        let m = Announcement::decode(&messages[0]).unwrap();
        assert_eq!(m.kind, Kind::Truncate);
        assert!(m.keys.is_empty());
        // A touch is no change: a key too long for it is left out, never a truncate.
        let renewed =
            Announcement::split(1, "org", (Kind::Touched, false), "id", &["a", &huge], 7_900);
        assert_eq!(Announcement::decode(&renewed[0]).unwrap().keys, ["a"]);
    }
}
