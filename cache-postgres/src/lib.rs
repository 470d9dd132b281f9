#![doc = include_str!("../README.md")]
//!
//! # Schema
//!
#![doc = include_str!("schema.md")]

mod cache;
mod channel;
mod config;
mod connector;
mod db;
mod reads;
mod schema;
mod shared;
mod sql;
mod tls;

pub use cache::{MAX_PLAIN_KEY, PRUNE_BATCH, PostgresCache, PruneReport, TRUNCATE_BATCH};
pub use channel::{MAX_MESSAGE, PostgresChannel};
pub use config::PostgresConfig;
pub use connector::PostgresConnector;
pub use db::ApplicationPool;
pub use tls::SslMode;

/// The connector name object caches write in `Connector:` to use this crate.
pub const CONNECTOR: &str = "postgres";

/// The SQL that creates (or updates) the tables in `schema`, for operators who prefer to run
/// it themselves, e.g. `psql -1 -f`; [`PostgresConnector::setup`] runs the same script.
/// Fails on a schema name that is not a plain lower-case identifier.
pub fn setup_sql(schema: &str) -> Result<String, cache_core::Error> {
    let schema = schema::Schema::new(schema).map_err(|m| {
        cache_core::Error::config(format!("Caches.Connectors.Postgres.Schema: {m}"))
    })?;
    Ok(schema::setup_sql(&schema))
}
