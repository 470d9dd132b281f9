//! Which Redis the connector talks to: one server, a Redis Cluster, or the master of a
//! Sentinel-managed set (`Caches.Connectors.Redis.Cluster` / `.Sentinel`).

use std::fmt;

use cache_core::settings::text;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::{Deserialize, Serialize};

/// `Caches.Connectors.Redis.Cluster`: a Redis Cluster, found through seed nodes.
///
/// ```yaml
/// Redis:
///   Enabled: true
///   Cluster:
///     Addrs: [redis-1:6379, redis-2:6379, redis-3:6379]
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` of one or more nodes; the client learns the rest of the cluster from them.
    #[serde(rename = "addrs")]
    pub addrs: Vec<String>,
}

/// `Caches.Connectors.Redis.Sentinel`: the current master of a set monitored by Sentinel.
///
/// ```yaml
/// Redis:
///   Enabled: true
///   Sentinel:
///     MasterName: cache
///     Addrs: [sentinel-1:26379, sentinel-2:26379, sentinel-3:26379]
/// ```
#[derive(Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> ...`).
    #[serde(rename = "mastername", with = "text")]
    pub master_name: String,
    /// `host:port` of the sentinels.
    #[serde(rename = "addrs")]
    pub addrs: Vec<String>,
    /// ACL user for the sentinels themselves (the data nodes use `Username`).
    #[serde(rename = "username", with = "text")]
    pub username: String,
    /// Password for the sentinels themselves. Never shown in logs, errors or `Debug`.
    #[serde(rename = "password", with = "text")]
    pub password: String,
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("master_name", &self.master_name)
            .field("addrs", &self.addrs)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .finish()
    }
}

/// The resolved topology.
#[derive(Clone, Debug)]
pub(crate) enum Topology {
    /// One server.
    Single(ConnectionInfo),
    /// Seed nodes of a cluster, with the data nodes' credentials.
    Cluster(Vec<ConnectionInfo>),
    /// Sentinels, the master set's name, and how to talk to the data nodes.
    Sentinel {
        master_name: String,
        sentinels: Vec<ConnectionAddr>,
        sentinel_auth: (Option<String>, Option<String>),
        node: RedisConnectionInfo,
    },
}

/// `host:port` (port 6379 when omitted) as a TCP address; `key` names the setting in errors.
pub(crate) fn tcp_address(
    key: &'static str,
    text: &str,
    default_port: u16,
) -> Result<ConnectionAddr, (&'static str, String)> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()),
        None => (text, Some(default_port)),
    };
    match port {
        Some(port) if !host.is_empty() => Ok(ConnectionAddr::Tcp(host.to_owned(), port)),
        _ => Err((
            key,
            format!("{text:?} is not host:port; write e.g. localhost:{default_port}"),
        )),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl Topology {
    /// The topology of `cluster` / `sentinel` (at most one), with `node` the data nodes'
    /// connection settings (credentials, DB) from the rest of the configuration.
    pub(crate) fn resolve(
        cluster: Option<&ClusterConfig>,
        sentinel: Option<&SentinelConfig>,
        single: ConnectionInfo,
    ) -> Result<Self, (&'static str, String)> {
        match (cluster, sentinel) {
            (Some(_), Some(_)) => Err((
                "Cluster",
                "Cluster and Sentinel exclude each other; keep the block of your topology"
                    .to_owned(),
            )),
            (Some(cluster), None) => {
                if cluster.addrs.is_empty() {
                    return Err((
                        "Cluster.Addrs",
                        "lists no node; write at least one host:port of the cluster".to_owned(),
                    ));
                }
                if single.redis_settings().db() != 0 {
                    return Err((
                        "DB",
                        "a Redis Cluster has only database 0; remove DB (or the /db of the URL)"
                            .to_owned(),
                    ));
                }
                let nodes = cluster
                    .addrs
                    .iter()
                    .map(|addr| {
                        let info = tcp_address("Cluster.Addrs", addr, 6379)?
                            .into_connection_info()
                            .map_err(|e| ("Cluster.Addrs", format!("{addr:?}: {e}")))?;
                        Ok(info.set_redis_settings(single.redis_settings().clone()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Topology::Cluster(nodes))
            }
            (None, Some(sentinel)) => {
                if sentinel.master_name.is_empty() {
                    return Err((
                        "Sentinel.MasterName",
                        "is empty; write the name the sentinels monitor the master under"
                            .to_owned(),
                    ));
                }
                if sentinel.addrs.is_empty() {
                    return Err((
                        "Sentinel.Addrs",
                        "lists no sentinel; write their host:port".to_owned(),
                    ));
                }
                let sentinels = sentinel
                    .addrs
                    .iter()
                    .map(|addr| tcp_address("Sentinel.Addrs", addr, 26379))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Topology::Sentinel {
                    master_name: sentinel.master_name.clone(),
                    sentinels,
                    sentinel_auth: (non_empty(&sentinel.username), non_empty(&sentinel.password)),
                    node: single.redis_settings().clone(),
                })
            }
            (None, None) => Ok(Topology::Single(single)),
        }
    }

    /// A short description for logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Topology::Single(info) => format!("server {}", info.addr()),
            Topology::Cluster(nodes) => format!("cluster of {} seed node(s)", nodes.len()),
            Topology::Sentinel {
                master_name,
                sentinels,
                ..
            } => format!("master {master_name:?} of {} sentinel(s)", sentinels.len()),
        }
    }
}
