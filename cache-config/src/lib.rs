#![doc = include_str!("../README.md")]
//!
//! ## The reference configuration (`defaults.yaml`)
//!
//! ```yaml
#![doc = include_str!("../defaults.yaml")]
//! ```

mod assemble;
mod env;
mod error;
mod keys;
mod layer;
mod load;
mod log;
mod model;

pub use assemble::{CacheValue, Caches};
pub use error::ConfigError;
pub use load::{DEFAULTS_YAML, Loader};
pub use log::{log_layer, log_layer_with_writer};
pub use model::{CachesConfig, ConnectorsConfig};

// What a service needs to define and use its caches, so that it depends on this crate alone.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub use cache_breaker::{Breaker, BreakerState};
pub use cache_core::{
    CacheSettings, CacheStats, Entry, Error, ErrorKind, Index, ObjectCache, Result, async_trait,
    index,
};
#[cfg(any(feature = "redis", feature = "postgres"))]
pub use cache_near::{ChannelState, NearStats};
/// serde, whose derives make a value storable on any connector, so that a service needs no
/// serde dependency of its own: `#[derive(cache_config::serde::Serialize,
/// cache_config::serde::Deserialize)]` with `#[serde(crate = "cache_config::serde")]`.
pub use serde;
