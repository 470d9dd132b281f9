//! The connection pool: bb8 over multiplexed connections to one server, a Redis Cluster, or
//! the current master of a Sentinel-managed set, with a way to retire a connection that failed.
//!
//! A multiplexed connection pipelines concurrent commands, so an operation clones it and gives
//! the pool slot back at once (concurrent operations share connections instead of queueing for
//! exclusive ones). redis-rs does not reconnect a multiplexed connection, and bb8-redis never
//! reports one as broken; so an operation that fails at the connection level marks its
//! connection, and bb8 drops it the next time it comes back to the pool.
//!
//! - **Cluster**: a connection is redis-rs's cluster connection, which follows `MOVED`/`ASK`
//!   redirections and refreshes its slot map itself.
//! - **Sentinel**: every new connection asks the sentinels for the current master (and checks
//!   its `ROLE`). redis-rs does not follow a failover on an open connection; a connection to
//!   the old master fails (it is gone) or is refused writes (`READONLY`, it was demoted), is
//!   retired, and its replacement goes to the new master.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::topology::Topology;

/// The pool type of the connector.
pub(crate) type Pool = bb8::Pool<Manager>;

/// A connection of any topology; cheap to clone (shares the underlying connection).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, or the master found through the sentinels.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A pooled connection and the flag that retires it.
pub(crate) struct Connection {
    pub(crate) redis: Conn,
    pub(crate) broken: Arc<AtomicBool>,
}

/// Makes connections for one topology and tells bb8 which ones failed.
pub(crate) enum Manager {
    Single(RedisConnectionManager),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Manager::Single(_) => "Manager::Single",
            Manager::Cluster(_) => "Manager::Cluster",
            Manager::Sentinel(_) => "Manager::Sentinel",
        })
    }
}

impl Manager {
    /// A manager for `topology`; `dial` and `response` bound the cluster client's own
    /// connects and commands (the other modes are bounded by the caller).
    pub(crate) fn new(
        topology: Topology,
        dial: Duration,
        response: Duration,
    ) -> Result<Self, RedisError> {
        Ok(match topology {
            Topology::Single(info) => Manager::Single(RedisConnectionManager::new(info)?),
            Topology::Cluster(nodes) => Manager::Cluster(
                redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(dial)
                    .response_timeout(response)
                    .retries(2)
                    .build()?,
            ),
            Topology::Sentinel {
                master_name,
                sentinels,
                sentinel_auth: (username, password),
                node,
            } => {
                let mut builder =
                    SentinelClientBuilder::new(sentinels, master_name, SentinelServerType::Master)?
                        .set_client_to_redis_db(node.db());
                if let Some(user) = node.username() {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(password) = node.password() {
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(user) = username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
                Manager::Sentinel(tokio::sync::Mutex::new(builder.build()?))
            }
        })
    }
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        let redis = match self {
            Manager::Single(manager) => Conn::Single(manager.connect().await?),
            Manager::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Manager::Sentinel(sentinel) => {
                // Ask the sentinels for the master now: after a failover, the new one.
                let client = sentinel.lock().await.async_get_client().await?;
                Conn::Single(client.get_multiplexed_async_connection().await?)
            }
        };
        Ok(Connection {
            redis,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn is_valid(&self, connection: &mut Connection) -> Result<(), RedisError> {
        redis::cmd("PING")
            .query_async::<()>(&mut connection.redis)
            .await
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.broken.load(Ordering::Relaxed)
    }
}

/// Whether `error` means the connection itself is unusable (rather than one command failing):
/// I/O, a dropped or refused connection — or `READONLY`, a master demoted by a failover.
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}
