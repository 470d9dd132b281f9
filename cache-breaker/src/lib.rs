#![doc = include_str!("../README.md")]

mod breaker;
mod cache;
mod pending;

pub use breaker::{Breaker, BreakerState, Counts, Permit};
pub use cache::{BreakerCache, is_failure};
pub use pending::DEFAULT_PENDING_KEYS;
