//! [`Shared`]: what every object cache and channel of one connector uses — the database
//! (pool and statements), the schema and the channel name.

use std::sync::Arc;

use crate::db::Db;
use crate::schema::Schema;
use crate::tls::Connect;

/// One connector's database, schema and settings, shared by its object caches and channels.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: Db,
    pub(crate) version: Arc<str>,
    /// Read statements one object cache runs at once per index (see `reads`).
    pub(crate) max_concurrent_reads: usize,
    /// `MaxObjectSize`: the largest encoded object stored.
    pub(crate) max_object_size: u64,
    pub(crate) schema: Schema,
    /// The origin the functions stamp on the announcements of this connector's changes.
    pub(crate) origin: u64,
    /// The notification channel of the schema (see [`crate::PostgresChannel`]).
    pub(crate) channel: String,
    /// How a connection of our own connects (the channel's listener); `None` on an
    /// application's pool.
    pub(crate) listener: Option<Connect>,
}
