#![doc = include_str!("../README.md")]

mod cache;
mod fence;
mod hub;

pub use cache::{NearCache, NearStats, RETRACT_WINDOW};
pub use hub::{ANNOUNCE_LIMIT, ChannelState, HEARTBEAT, Hub, HubStats, RESUBSCRIBE_AFTER, SILENCE};
