#![doc = include_str!("../README.md")]
//!
//! ## The reference configuration (`defaults.yaml`)
//!
//! ```yaml
#![doc = include_str!("../defaults.yaml")]
//! ```

mod assemble;
mod error;
mod keys;
mod layer;
mod load;
mod model;

pub use assemble::Caches;
pub use error::ConfigError;
pub use load::{DEFAULTS_YAML, Loader};
pub use model::{CachesConfig, ConnectorsConfig};
