#![doc = include_str!("../README.md")]
//!
//! # Key layout
//!
#![doc = include_str!("keys.md")]

mod cache;
mod config;
mod connector;
mod keys;
mod pool;

pub use cache::RedisCache;
pub use config::RedisConfig;
pub use connector::RedisConnector;

/// The connector name object caches write in `Connector:` to use this crate.
pub const CONNECTOR: &str = "redis";
