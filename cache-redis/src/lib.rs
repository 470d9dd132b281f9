#![doc = include_str!("../README.md")]
//!
//! # Key layout
//!
#![doc = include_str!("keys.md")]

mod cache;
mod channel;
mod config;
mod connector;
mod error;
mod keys;
mod pool;
mod scripts;
mod shared;
mod topology;
mod value;
mod watch;

pub use cache::RedisCache;
pub use channel::RedisChannel;
pub use config::RedisConfig;
pub use connector::RedisConnector;
pub use topology::{ClusterConfig, SentinelConfig};

/// The connector name object caches write in `Connector:` to use this crate.
pub const CONNECTOR: &str = "redis";
