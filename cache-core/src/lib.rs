#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod announcement;
mod cache;
mod change;
mod channel;
mod clock;
mod coarse;
pub mod codec;
mod counter;
mod error;
mod flight;
mod index;
pub mod keys;
mod lease;
mod noop;
mod object_cache;
pub mod observe;
#[cfg(feature = "pool")]
pub mod pool;
pub mod settings;
mod switch;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use announcement::Announcement;
pub use cache::{Cache, Hit, Prune};
pub use change::{Change, ChangeListener};
pub use channel::{Channel, ChannelEvent, EventSink, Listening, ListeningTask};
pub use clock::{Clock, Expiry, ManualClock, SharedClock, SystemClock, Timestamp, whole_millis};
pub use coarse::{CoarseClock, RESOLUTION as COARSE_RESOLUTION};
pub use counter::Counter;
pub use error::{Error, ErrorKind, FailureEvent, Losses, Result, causes};
pub use index::{Entry, Index, entry_keys, unique_indices};
pub use lease::{Filled, Lease, LeaseToken};
pub use noop::{NOOP_CONNECTOR, NoopCache};
pub use object_cache::{CacheStats, LOG_TARGET, ObjectCache};
pub use settings::{
    AutoPrune, BreakerSettings, CacheSettings, LeaseSettings, LogFormat, LogLevel, LogSettings,
    NearSettings, ReadThrough, TlsFiles, TlsPem,
};

/// Re-exported so connector crates and applications use the same `async_trait`.
pub use async_trait::async_trait;
