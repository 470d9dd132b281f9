//! The connection pool: bb8 over multiplexed connections to one server, a Redis Cluster, or
//! the current master of a Sentinel-managed set, with a way to retire a connection that failed.
//!
//! A multiplexed connection pipelines concurrent commands, so an operation clones it and gives
//! the pool slot back at once (concurrent operations share connections instead of queueing for
//! exclusive ones). redis-rs does not reconnect a multiplexed connection, and bb8 cannot tell
//! that one broke; so an operation that fails at the connection level marks its
//! connection, and bb8 drops it the next time it comes back to the pool.
//!
//! - **Cluster**: a connection is redis-rs's cluster connection, which follows `MOVED`/`ASK`
//!   redirections and refreshes its slot map itself.
//! - **Sentinel**: every new connection asks the sentinels for the current master (and checks
//!   its `ROLE`). redis-rs does not follow a failover on an open connection; a connection to
//!   the old master fails (it is gone) or is refused writes (`READONLY`, it was demoted), is
//!   retired, and its replacement goes to the new master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bb8::ManageConnection;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, Pipeline, PushInfo, RedisError, RedisFuture, Value};

use crate::config::RedisConfig;
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

/// A pooled connection and what is known of its health.
pub(crate) struct Connection {
    pub(crate) redis: Conn,
    pub(crate) health: Arc<Health>,
}

/// Shared by a pooled connection and the operations using a clone of it.
#[derive(Debug)]
pub(crate) struct Health {
    /// Set when a command on it failed at the connection level or timed out: bb8 drops it.
    broken: AtomicBool,
    /// When it was found broken first.
    broken_at: OnceLock<Instant>,
    /// When it was connected.
    connected: Instant,
}

impl Health {
    fn new() -> Self {
        Health {
            broken: AtomicBool::new(false),
            broken_at: OnceLock::new(),
            connected: Instant::now(),
        }
    }

    /// Retires the connection.
    pub(crate) fn broken(&self) {
        self.broken_at.get_or_init(Instant::now);
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Whether it was connected after `other` was found broken (`other` not broken: false).
    pub(crate) fn connected_after_loss_of(&self, other: &Health) -> bool {
        other
            .broken_at
            .get()
            .is_some_and(|lost| self.connected > *lost)
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Whether operations may keep using it: not broken, and younger than `lifetime` (0: no
    /// limit).
    pub(crate) fn usable(&self, lifetime: Duration) -> bool {
        !self.is_broken() && (lifetime.is_zero() || self.connected.elapsed() < lifetime)
    }
}

/// Makes connections for one topology and tells bb8 which ones failed.
pub(crate) struct Manager {
    topology: Managed,
    /// Connect and response timeouts of every connection (redis-rs' own default response
    /// timeout, 500 ms, would cut `ReadTimeout`/`WriteTimeout` short).
    settings: redis::AsyncConnectionConfig,
    /// Whether the server's eviction policy was looked at (once per connector).
    eviction_checked: AtomicBool,
}

enum Managed {
    /// The server's client (with TLS when configured).
    Single(redis::Client),
    /// The cluster client, and a client of each seed node (with TLS when configured): a
    /// subscription goes to one of them, since a plain `PUBLISH` reaches the subscribers of
    /// every node.
    Cluster(redis::cluster::ClusterClient, Vec<redis::Client>),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.topology {
            Managed::Single(..) => "Manager::Single",
            Managed::Cluster(..) => "Manager::Cluster",
            Managed::Sentinel(_) => "Manager::Sentinel",
        })
    }
}

impl Manager {
    /// A manager for the topology of `config` (checked by [`RedisConfig::validate`]), with
    /// its TLS settings; the dial and response timeouts bound each connection's own connects
    /// and commands (operations are also bounded by the caller).
    pub(crate) fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let invalid = |(key, message): (&'static str, String)| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "invalid configuration",
                format!("{key}: {message}"),
            ))
        };
        let topology = config.topology().map_err(invalid)?;
        let dial = config.dial_timeout;
        let response = config.read_timeout.max(config.write_timeout);
        #[cfg(feature = "tls")]
        let certificates = config.certificates().map_err(invalid)?;
        #[cfg(feature = "tls")]
        let tls_mode = if config.tls.insecure_skip_verify {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        let topology = match topology {
            Topology::Single(info) => {
                #[cfg(feature = "tls")]
                let client = match &certificates {
                    Some(certificates) => {
                        redis::Client::build_with_tls(info, certificates.clone())?
                    }
                    None => redis::Client::open(info)?,
                };
                #[cfg(not(feature = "tls"))]
                let client = redis::Client::open(info)?;
                Managed::Single(client)
            }
            Topology::Cluster(nodes) => {
                let builder = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(dial)
                    .response_timeout(response)
                    .retries(2);
                #[cfg(feature = "tls")]
                let builder = match &certificates {
                    Some(certificates) => builder.certs(certificates.clone()).tls(tls_mode),
                    None => builder,
                };
                let seeds = nodes
                    .into_iter()
                    .map(|node| {
                        #[cfg(feature = "tls")]
                        if let Some(certificates) = &certificates {
                            let node = config.with_tls(node).map_err(invalid)?;
                            return redis::Client::build_with_tls(node, certificates.clone());
                        }
                        redis::Client::open(node)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Managed::Cluster(builder.build()?, seeds)
            }
            Topology::Sentinel {
                master_name,
                sentinels,
                sentinel_auth: (username, password),
                node,
            } => {
                // With TLS, the sentinels speak it too: redis-rs wants their addresses as TLS
                // addresses (and refuses TLS settings for plain ones).
                #[cfg(feature = "tls")]
                let sentinels: Vec<redis::ConnectionAddr> = match &certificates {
                    Some(_) => sentinels
                        .into_iter()
                        .map(|addr| match addr {
                            redis::ConnectionAddr::Tcp(host, port) => {
                                redis::ConnectionAddr::TcpTls {
                                    host,
                                    port,
                                    insecure: config.tls.insecure_skip_verify,
                                    tls_params: None,
                                }
                            }
                            other => other,
                        })
                        .collect(),
                    None => sentinels,
                };
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
                // With TLS, the sentinels and the data nodes both speak it.
                #[cfg(feature = "tls")]
                if let Some(certificates) = &certificates {
                    builder = builder
                        .set_client_to_redis_tls_mode(tls_mode)
                        .set_client_to_redis_certificates(certificates.clone())
                        .set_client_to_sentinel_tls_mode(tls_mode)
                        .set_client_to_sentinel_certificates(certificates.clone());
                }
                Managed::Sentinel(tokio::sync::Mutex::new(builder.build()?))
            }
        };
        Ok(Manager {
            topology,
            settings: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(dial))
                .set_response_timeout(Some(response)),
            eviction_checked: AtomicBool::new(false),
        })
    }
}

impl Manager {
    /// The watchers of the channel `channel` (see `watch.rs`): RESP3 connections to the
    /// server, to the current master of a Sentinel-managed set (asking the sentinels), or to
    /// every master of a cluster (learnt from its `attempt`-th seed node, round robin), each
    /// tracking the keys of this layout in broadcast mode and subscribed to the channel, its
    /// pushes handed to `on_push` with its position.
    pub(crate) async fn watch(
        &self,
        channel: &str,
        attempt: usize,
        on_push: crate::watch::OnPush,
    ) -> Result<Vec<MultiplexedConnection>, RedisError> {
        let clients: Vec<redis::Client> = match &self.topology {
            Managed::Single(client) => vec![resp3(client.get_connection_info())?],
            Managed::Sentinel(sentinel) => {
                let master = sentinel.lock().await.async_get_client().await?;
                vec![resp3(master.get_connection_info())?]
            }
            Managed::Cluster(_, seeds) => {
                let seed = seeds[attempt % seeds.len()].get_connection_info().clone();
                self.cluster_masters(&seed)
                    .await?
                    .into_iter()
                    .map(|(host, port)| {
                        resp3(&seed.clone().set_addr(same_kind(seed.addr(), host, port)))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let mut watchers = Vec::with_capacity(clients.len());
        for (position, client) in clients.iter().enumerate() {
            let on_push = Arc::clone(&on_push);
            let settings = self
                .settings
                .clone()
                .set_push_sender(move |push: PushInfo| {
                    on_push(position, push);
                    Ok::<(), redis::aio::SendError>(())
                });
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&settings)
                .await?;
            redis::cmd("CLIENT")
                .arg(&["TRACKING", "ON", "BCAST", "PREFIX"])
                .arg(format!("{}{{", crate::keys::LAYOUT))
                .query_async::<()>(&mut connection)
                .await?;
            connection.subscribe(channel).await?;
            watchers.push(connection);
        }
        Ok(watchers)
    }

    /// A cluster's masters as its `attempt`-th seed node knows them, sorted; `None` for the
    /// other topologies.
    pub(crate) async fn masters(
        &self,
        attempt: usize,
    ) -> Result<Option<Vec<(String, u16)>>, RedisError> {
        match &self.topology {
            Managed::Cluster(_, seeds) => {
                let seed = seeds[attempt % seeds.len()].get_connection_info().clone();
                self.cluster_masters(&seed).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The masters (host, port) that `CLUSTER SLOTS` on `seed` names, sorted and distinct.
    async fn cluster_masters(
        &self,
        seed: &redis::ConnectionInfo,
    ) -> Result<Vec<(String, u16)>, RedisError> {
        let seed_host = match seed.addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host.clone()
            }
            _ => String::new(),
        };
        let client = redis::Client::open(seed.clone())?;
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&self.settings)
            .await?;
        let slots: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await?;
        let mut masters = Vec::new();
        for range in slots {
            let Value::Array(range) = range else { continue };
            let Some(Value::Array(master)) = range.get(2) else {
                continue;
            };
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                continue;
            };
            // An empty (or unknown) host is the node we asked.
            let host = if host.is_empty() || host == "?" {
                seed_host.clone()
            } else {
                host
            };
            if let Ok(port) = u16::try_from(*port) {
                masters.push((host, port));
            }
        }
        masters.sort();
        masters.dedup();
        if masters.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "CLUSTER SLOTS named no master",
            )));
        }
        Ok(masters)
    }
}

/// The client of `info` speaking RESP3 (for push messages: tracking reports and messages on a
/// connection that runs commands too).
fn resp3(info: &redis::ConnectionInfo) -> Result<redis::Client, RedisError> {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.clone().set_redis_settings(settings))
}

/// `host:port` as an address of the same kind as `like` (TLS with its settings, or plain).
fn same_kind(like: &redis::ConnectionAddr, host: String, port: u16) -> redis::ConnectionAddr {
    match like {
        redis::ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => redis::ConnectionAddr::Tcp(host, port),
    }
}

/// Warns when the server may evict keys: an evicted index key leaves its object reachable
/// through its other keys after an invalidation through the evicted one. Quiet when the server
/// does not let us look (managed services often rename or forbid `CONFIG`).
async fn check_eviction(connection: &mut Conn) {
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory*")
            .query_async::<std::collections::HashMap<String, String>>(connection),
    )
    .await;
    let Ok(Ok(settings)) = answer else {
        tracing::debug!(
            connector = crate::CONNECTOR,
            "could not read the server's maxmemory-policy"
        );
        return;
    };
    let policy = settings
        .get("maxmemory-policy")
        .map(String::as_str)
        .unwrap_or("noeviction");
    let limited = settings.get("maxmemory").is_some_and(|m| m != "0");
    if limited && policy != "noeviction" {
        tracing::warn!(
            connector = crate::CONNECTOR,
            maxmemory_policy = policy,
            "the Redis server evicts keys (maxmemory-policy {policy}); every cache key has a \
             TTL, so volatile-* policies evict them too. Near caches hear of evictions, but an \
             evicted key of an object no process holds in memory can leave it reachable \
             through its other keys after an invalidation through the evicted one: \
             maxmemory-policy noeviction is recommended"
        );
    }
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Connection, RedisError> {
        let mut redis = match &self.topology {
            Managed::Single(client) => Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&self.settings)
                    .await?,
            ),
            Managed::Cluster(client, _) => Conn::Cluster(client.get_async_connection().await?),
            Managed::Sentinel(sentinel) => {
                // Ask the sentinels for the master now: after a failover, the new one.
                let client = sentinel.lock().await.async_get_client().await?;
                Conn::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&self.settings)
                        .await?,
                )
            }
        };
        if !self.eviction_checked.swap(true, Ordering::Relaxed) {
            check_eviction(&mut redis).await;
        }
        Ok(Connection {
            redis,
            health: Arc::new(Health::new()),
        })
    }

    async fn is_valid(&self, connection: &mut Connection) -> Result<(), RedisError> {
        redis::cmd("PING")
            .query_async::<()>(&mut connection.redis)
            .await
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.health.is_broken()
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
