//! The connection pool: bb8 over bb8-redis's multiplexed connections, with a way to retire a
//! connection that failed.
//!
//! A multiplexed connection pipelines concurrent commands, so an operation clones it and gives
//! the pool slot back at once (concurrent operations share connections instead of queueing for
//! exclusive ones). redis-rs does not reconnect a multiplexed connection, and bb8-redis never
//! reports one as broken; so an operation that fails at the connection level marks its
//! connection, and bb8 drops it the next time it comes back to the pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, RedisError};

/// The pool type of the connector.
pub(crate) type Pool = bb8::Pool<Manager>;

/// A pooled connection and the flag that retires it.
pub(crate) struct Connection {
    pub(crate) redis: MultiplexedConnection,
    pub(crate) broken: Arc<AtomicBool>,
}

/// Makes connections with bb8-redis and tells bb8 which ones failed.
#[derive(Clone, Debug)]
pub(crate) struct Manager(RedisConnectionManager);

impl Manager {
    pub(crate) fn new(info: ConnectionInfo) -> Result<Self, RedisError> {
        RedisConnectionManager::new(info).map(Manager)
    }
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        Ok(Connection {
            redis: self.0.connect().await?,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, connection: &mut Connection) -> Result<(), RedisError> {
        self.0.is_valid(&mut connection.redis).await
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.broken.load(Ordering::Relaxed)
    }
}

/// Whether `error` means the connection itself is unusable (rather than one command failing).
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
}
