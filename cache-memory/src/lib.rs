#![doc = include_str!("../README.md")]

mod cache;
mod config;
mod connector;
mod store;

pub use cache::MemoryCache;
pub use config::{DEFAULT_CAPACITY, MemoryConfig};
pub use connector::MemoryConnector;

/// The connector name object caches write in `Connector:` to use this crate.
pub const CONNECTOR: &str = "memory";
