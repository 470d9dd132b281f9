#![doc = include_str!("../README.md")]

mod breaker;
mod cache;
mod pending;

pub use breaker::{Breaker, BreakerState, Counts, Permit};
pub use cache::{BreakerCache, RETRY_FIRST, RETRY_MAX, is_failure};
pub use pending::DEFAULT_PENDING_KEYS;
