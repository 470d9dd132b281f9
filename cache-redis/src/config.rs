//! `Caches.Connectors.Redis`: where the server is and how the pool behaves.
//!
//! The keys are the reference's, so its configuration files load as written. The server is
//! given by `URL` or by `Addr` (+ `Network`); `Username`, `Password` and `DB` override what the
//! URL says. Keys of the reference that have no meaning here are accepted and reported once,
//! at warn, when the connector starts ([`RedisConfig::ignored_keys`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cache_core::{BreakerSettings, TlsFiles};

use crate::topology::{ClusterConfig, SentinelConfig, Topology, tcp_address};
use cache_core::settings::{duration, duration_or_off, text};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use serde::{Deserialize, Serialize};

/// The Redis connector's settings. Field names are the lower-cased configuration keys.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Whether object caches may name this connector. Default `false`.
    #[serde(rename = "enabled")]
    pub enabled: bool,
    /// The server as a URL: `redis://[user[:password]@]host:port[/db]`. Empty (the default):
    /// use `Addr`.
    #[serde(rename = "url", with = "text")]
    pub url: String,
    /// `host:port` of the server, or the socket path with `Network: unix`. Default
    /// `localhost:6379`; not used when `URL` is set.
    #[serde(rename = "addr", with = "text")]
    pub addr: String,
    /// `tcp` (default) or `unix`.
    #[serde(rename = "network", with = "text")]
    pub network: String,
    /// ACL user name; overrides the URL's.
    #[serde(rename = "username", with = "text")]
    pub username: String,
    /// Password; overrides the URL's. Never shown in logs, errors or `Debug`.
    #[serde(rename = "password", with = "text")]
    pub password: String,
    /// Database number; overrides the URL's when not 0.
    #[serde(rename = "db")]
    pub db: i64,
    /// TLS to the server (as a `rediss://` URL does), verified against the system's roots or
    /// [`tls`](Self::tls)`.CAFile`. Needs the Cargo feature `tls`. Default `false`.
    #[serde(rename = "enabletls")]
    pub enable_tls: bool,
    /// The certificate files of TLS: a CA to trust, a client certificate and key (mutual
    /// TLS), and `InsecureSkipVerify` for development.
    #[serde(rename = "tls")]
    pub tls: TlsFiles,
    /// Most connections in the pool (honoured). Default 10.
    #[serde(rename = "poolsize")]
    pub pool_size: u32,
    /// When above 0, caps [`pool_size`](Self::pool_size).
    #[serde(rename = "maxactiveconns")]
    pub max_active_conns: u32,
    /// Idle connections kept ready. Default 0.
    #[serde(rename = "minidleconns")]
    pub min_idle_conns: u32,
    /// Idle connections are closed after this. Default `30m`; 0 (or the reference's -1) keeps
    /// them.
    #[serde(rename = "connmaxidletime", with = "duration_or_off")]
    pub conn_max_idle_time: Duration,
    /// Connections are replaced after this age. Default 0 (or the reference's -1): never.
    #[serde(rename = "connmaxlifetime", with = "duration_or_off")]
    pub conn_max_lifetime: Duration,
    /// Longest wait for a connection from a full pool; 0 means `ReadTimeout` + 1s.
    #[serde(rename = "pooltimeout", with = "duration")]
    pub pool_timeout: Duration,
    /// Longest wait to connect. Default `5s`.
    #[serde(rename = "dialtimeout", with = "duration")]
    pub dial_timeout: Duration,
    /// Longest a read (get) may take before it counts as failed. Default `3s`, also for 0
    /// and for the reference's -1 / -2 (no limit: every operation here is bounded).
    #[serde(rename = "readtimeout", with = "duration_or_off")]
    pub read_timeout: Duration,
    /// Longest a write (set, invalidate, delete, truncate batch) may take. Default `3s`, also
    /// for 0 and for the reference's -1 / -2.
    #[serde(rename = "writetimeout", with = "duration_or_off")]
    pub write_timeout: Duration,
    /// Accepted for the reference's files; no effect (no CLIENT SETNAME is sent).
    #[serde(rename = "clientname", with = "text")]
    pub client_name: String,
    /// Accepted for the reference's files; no effect (no DB offset).
    #[serde(rename = "dboffset")]
    pub db_offset: i64,
    /// Accepted for the reference's files; no effect (a failed operation is a miss, not retried).
    #[serde(rename = "maxretries")]
    pub max_retries: i64,
    /// Accepted for the reference's files (-1 too); no effect (no retries).
    #[serde(rename = "minretrybackoff", with = "duration_or_off")]
    pub min_retry_backoff: Duration,
    /// Accepted for the reference's files (-1 too); no effect (no retries).
    #[serde(rename = "maxretrybackoff", with = "duration_or_off")]
    pub max_retry_backoff: Duration,
    /// Accepted for the reference's files; no effect (the pool's order is its own).
    #[serde(rename = "poolfifo")]
    pub pool_fifo: bool,
    /// Accepted for the reference's files; no effect (idle connections are limited by
    /// `ConnMaxIdleTime`).
    #[serde(rename = "maxidleconns")]
    pub max_idle_conns: u32,
    /// Accepted for the reference's files (its spelling); no effect (no CLIENT SETINFO).
    #[serde(rename = "disableindentity")]
    pub disable_indentity: bool,
    /// Accepted for the reference's files; no effect (no CLIENT SETINFO).
    #[serde(rename = "identitysuffix", with = "text")]
    pub identity_suffix: String,
    /// The circuit breaker in front of every object cache on this server (`cache-breaker`);
    /// absent (the default): none.
    #[serde(rename = "circuitbreaker")]
    pub circuit_breaker: Option<BreakerSettings>,
    /// A Redis Cluster instead of one server (`URL`/`Addr` are then not used; `Username`,
    /// `Password` apply to every node). Absent (the default): one server.
    #[serde(rename = "cluster")]
    pub cluster: Option<ClusterConfig>,
    /// The master of a Sentinel-managed set instead of one server (`URL`/`Addr` are then not
    /// used; `Username`, `Password`, `DB` apply to the master). Absent (the default): one
    /// server.
    #[serde(rename = "sentinel")]
    pub sentinel: Option<SentinelConfig>,
    /// The largest object stored, encoded (`16MiB`, `512KiB`, or bytes): a larger one is not
    /// cached, and its set fails as `Rejected` — the request's own size, never a failure of
    /// the server (the circuit breaker does not count it). Default `16MiB`.
    #[serde(rename = "maxobjectsize", with = "cache_core::settings::byte_size")]
    pub max_object_size: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            enabled: false,
            url: String::new(),
            addr: "localhost:6379".to_owned(),
            network: "tcp".to_owned(),
            username: String::new(),
            password: String::new(),
            db: 0,
            enable_tls: false,
            tls: TlsFiles::default(),
            pool_size: 10,
            max_active_conns: 0,
            min_idle_conns: 0,
            conn_max_idle_time: Duration::from_secs(30 * 60),
            conn_max_lifetime: Duration::ZERO,
            pool_timeout: Duration::ZERO,
            dial_timeout: Duration::from_secs(5),
            read_timeout: Self::DEFAULT_TIMEOUT,
            write_timeout: Self::DEFAULT_TIMEOUT,
            client_name: String::new(),
            db_offset: 0,
            max_retries: 0,
            min_retry_backoff: Duration::ZERO,
            max_retry_backoff: Duration::ZERO,
            pool_fifo: false,
            max_idle_conns: 0,
            disable_indentity: false,
            identity_suffix: String::new(),
            circuit_breaker: None,
            cluster: None,
            sentinel: None,
            max_object_size: Self::DEFAULT_MAX_OBJECT_SIZE,
        }
    }
}

impl RedisConfig {
    /// An enabled configuration for the server at `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        RedisConfig {
            enabled: true,
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// The pool's size: `PoolSize`, capped by `MaxActiveConns` when that is set.
    pub fn max_connections(&self) -> u32 {
        match self.max_active_conns {
            0 => self.pool_size,
            cap => self.pool_size.min(cap),
        }
    }

    /// The default of `MaxObjectSize`: 16 MiB.
    pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 16 << 20;

    /// The default of `ReadTimeout` and `WriteTimeout`, also what 0 (and the reference's -1 /
    /// -2) means for them.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    /// This configuration with a zero `ReadTimeout` / `WriteTimeout` set to
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT), as go-redis reads 0 (what the connector
    /// runs with).
    pub fn with_default_timeouts(mut self) -> Self {
        for timeout in [&mut self.read_timeout, &mut self.write_timeout] {
            if timeout.is_zero() {
                *timeout = Self::DEFAULT_TIMEOUT;
            }
        }
        self
    }

    /// How long an operation may wait for a pooled connection.
    pub fn pool_wait(&self) -> Duration {
        if self.pool_timeout.is_zero() {
            self.read_timeout + Duration::from_secs(1)
        } else {
            self.pool_timeout
        }
    }

    /// Where and how to connect: the URL (or `Addr`/`Network`), then `Username`, `Password`
    /// and `DB` over it. On error, the offending key and what to write instead (never the
    /// password).
    pub fn connection_info(&self) -> Result<ConnectionInfo, (&'static str, String)> {
        let mut info = if self.url.is_empty() {
            let address = match self.network.to_ascii_lowercase().as_str() {
                "" | "tcp" => tcp_address("Addr", &self.addr, 6379)?,
                "unix" => ConnectionAddr::Unix(PathBuf::from(&self.addr)),
                other => {
                    return Err((
                        "Network",
                        format!("{other:?} is not supported; write tcp or unix"),
                    ));
                }
            };
            address.into_connection_info().map_err(|e| {
                (
                    "Addr",
                    format!("{:?} cannot be used ({})", self.addr, e.category()),
                )
            })?
        } else {
            self.url.as_str().into_connection_info().map_err(|e| {
                (
                    "URL",
                    format!(
                        "{:?} is not a Redis URL ({}); write e.g. redis://localhost:6379/0",
                        self.redacted_url(),
                        e.category()
                    ),
                )
            })?
        };
        if self.uses_tls(&info) {
            info = self.with_tls(info)?;
        }
        let mut redis = info.redis_settings().clone();
        if !self.username.is_empty() {
            redis = redis.set_username(&self.username);
        }
        if !self.password.is_empty() {
            redis = redis.set_password(&self.password);
        }
        if self.db != 0 {
            redis = redis.set_db(self.db);
        }
        info = info.set_redis_settings(redis);
        Ok(info)
    }

    /// Whether connections use TLS: `EnableTLS`, or a `rediss://` URL.
    pub(crate) fn uses_tls(&self, info: &ConnectionInfo) -> bool {
        self.enable_tls || matches!(info.addr(), ConnectionAddr::TcpTls { .. })
    }

    /// `info` switched to TLS (with `InsecureSkipVerify` applied).
    #[cfg(feature = "tls")]
    pub(crate) fn with_tls(
        &self,
        info: ConnectionInfo,
    ) -> Result<ConnectionInfo, (&'static str, String)> {
        let skip = self.tls.insecure_skip_verify;
        let addr = match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: skip,
                tls_params: None,
            },
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: insecure || skip,
                tls_params,
            },
            _ => {
                return Err((
                    "EnableTLS",
                    "TLS needs a TCP address (Network: tcp), not a unix socket".to_owned(),
                ));
            }
        };
        Ok(info.set_addr(addr))
    }

    #[cfg(not(feature = "tls"))]
    fn with_tls(&self, _: ConnectionInfo) -> Result<ConnectionInfo, (&'static str, String)> {
        Err((
            "EnableTLS",
            "TLS (EnableTLS: true or a rediss:// URL) needs the `tls` Cargo feature of \
             cache-redis (feature `tls` of cache-config); enable it, or use redis:// without \
             EnableTLS"
                .to_owned(),
        ))
    }

    /// The certificates for TLS, read from the `TLS` files; `None` without TLS.
    #[cfg(feature = "tls")]
    pub(crate) fn certificates(
        &self,
    ) -> Result<Option<redis::TlsCertificates>, (&'static str, String)> {
        if !self.uses_tls(&self.connection_info()?) {
            return Ok(None);
        }
        let pem = self.tls.read()?;
        Ok(Some(redis::TlsCertificates {
            client_tls: pem
                .client
                .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: pem.ca,
        }))
    }

    /// One server, a cluster or a sentinel-managed master, checked.
    pub(crate) fn topology(&self) -> Result<Topology, (&'static str, String)> {
        Topology::resolve(
            self.cluster.as_ref(),
            self.sentinel.as_ref(),
            self.connection_info()?,
        )
    }

    /// Checks what serde cannot: on error, the offending key (below
    /// `Caches.Connectors.Redis`) and what to write instead. Never shows the password.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.topology()?;
        if self.tls.names_files() || self.tls.insecure_skip_verify {
            if !self.uses_tls(&self.connection_info()?) {
                return Err((
                    "TLS",
                    "names TLS settings, but TLS is off: set EnableTLS: true (or a rediss:// \
                     URL), or remove the TLS block"
                        .to_owned(),
                ));
            }
            self.tls.read()?;
        }
        if let Some(breaker) = &self.circuit_breaker {
            breaker.validate()?;
        }
        if self.max_connections() == 0 {
            return Err((
                "PoolSize",
                "0 connections cannot serve anything; write 1 or more (default 10)".to_owned(),
            ));
        }
        if self.min_idle_conns > self.max_connections() {
            return Err((
                "MinIdleConns",
                format!(
                    "{} idle connections do not fit a pool of {}; lower it or raise PoolSize",
                    self.min_idle_conns,
                    self.max_connections()
                ),
            ));
        }
        Ok(())
    }

    /// The reference's keys that are set but have no effect here, by their documented names.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let defaults = RedisConfig::default();
        let mut ignored = Vec::new();
        let mut check = |set: bool, key| {
            if set {
                ignored.push(key);
            }
        };
        check(self.client_name != defaults.client_name, "ClientName");
        check(self.db_offset != defaults.db_offset, "DBOffset");
        check(self.max_retries != defaults.max_retries, "MaxRetries");
        check(
            self.min_retry_backoff != defaults.min_retry_backoff,
            "MinRetryBackoff",
        );
        check(
            self.max_retry_backoff != defaults.max_retry_backoff,
            "MaxRetryBackoff",
        );
        check(self.pool_fifo != defaults.pool_fifo, "PoolFIFO");
        check(
            self.max_idle_conns != defaults.max_idle_conns,
            "MaxIdleConns",
        );
        check(
            self.disable_indentity != defaults.disable_indentity,
            "DisableIndentity",
        );
        check(
            self.identity_suffix != defaults.identity_suffix,
            "IdentitySuffix",
        );
        ignored
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        cache_core::settings::redact_url(&self.url)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.redacted_url())
            .field("addr", &self.addr)
            .field("network", &self.network)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("db", &self.db)
            .field("pool_size", &self.max_connections())
            .field("min_idle_conns", &self.min_idle_conns)
            .field("dial_timeout", &self.dial_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("cluster", &self.cluster)
            .field("sentinel", &self.sentinel)
            .field("max_object_size", &self.max_object_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let c = RedisConfig {
            password: "hunter2".into(),
            ..RedisConfig::with_url("redis://app:s3cret@cache:6379/2")
        };
        assert_eq!(c.redacted_url(), "redis://app:***@cache:6379/2");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn validate_names_the_key_and_hides_the_password() {
        assert!(
            RedisConfig::with_url("redis://127.0.0.1:6379/0")
                .validate()
                .is_ok()
        );
        let (key, message) = RedisConfig::with_url("http://app:s3cret@cache")
            .validate()
            .unwrap_err();
        assert_eq!(key, "URL");
        assert!(!message.contains("s3cret"), "{message}");
        let zero = RedisConfig {
            pool_size: 0,
            ..RedisConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "PoolSize");
        let idle = RedisConfig {
            min_idle_conns: 11,
            ..RedisConfig::default()
        };
        assert_eq!(idle.validate().unwrap_err().0, "MinIdleConns");
        let tls = RedisConfig {
            enable_tls: true,
            ..RedisConfig::default()
        };
        if cfg!(feature = "tls") {
            assert!(tls.validate().is_ok());
        } else {
            assert_eq!(tls.validate().unwrap_err().0, "EnableTLS");
        }
        let addr = RedisConfig {
            addr: "cache:port".into(),
            ..RedisConfig::default()
        };
        assert_eq!(addr.validate().unwrap_err().0, "Addr");
    }

    #[test]
    fn discrete_fields_override_the_url() {
        let c = RedisConfig {
            username: "svc".into(),
            password: "pw".into(),
            db: 3,
            ..RedisConfig::with_url("redis://app:old@cache:6380/1")
        };
        let info = c.connection_info().unwrap();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("cache".into(), 6380));
        assert_eq!(info.redis_settings().username(), Some("svc"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 3);
        let by_addr = RedisConfig {
            addr: "10.0.0.5:7000".into(),
            ..RedisConfig::default()
        };
        assert_eq!(
            by_addr.connection_info().unwrap().addr(),
            &ConnectionAddr::Tcp("10.0.0.5".into(), 7000)
        );
    }

    #[test]
    fn cluster_and_sentinel_are_checked() {
        use crate::topology::{ClusterConfig, SentinelConfig, Topology};
        let cluster = RedisConfig {
            cluster: Some(ClusterConfig {
                addrs: vec!["10.0.0.1:7000".into(), "10.0.0.2".into()],
            }),
            password: "pw".into(),
            ..RedisConfig::default()
        };
        let Ok(Topology::Cluster(nodes)) = cluster.topology() else {
            panic!("a cluster");
        };
        assert_eq!(
            nodes[0].addr(),
            &ConnectionAddr::Tcp("10.0.0.1".into(), 7000)
        );
        assert_eq!(
            nodes[1].addr(),
            &ConnectionAddr::Tcp("10.0.0.2".into(), 6379)
        );
        assert_eq!(nodes[1].redis_settings().password(), Some("pw"));
        let empty = RedisConfig {
            cluster: Some(ClusterConfig::default()),
            ..RedisConfig::default()
        };
        assert_eq!(empty.validate().unwrap_err().0, "Cluster.Addrs");
        let db = RedisConfig {
            db: 2,
            ..cluster.clone()
        };
        assert_eq!(db.validate().unwrap_err().0, "DB");
        let sentinel = SentinelConfig {
            master_name: "cache".into(),
            addrs: vec!["s1:26379".into(), "s2".into()],
            password: "s3cret".into(),
            ..SentinelConfig::default()
        };
        let with_sentinel = RedisConfig {
            sentinel: Some(sentinel.clone()),
            ..RedisConfig::default()
        };
        let Ok(Topology::Sentinel { sentinels, .. }) = with_sentinel.topology() else {
            panic!("sentinels");
        };
        assert_eq!(sentinels[1], ConnectionAddr::Tcp("s2".into(), 26379));
        assert!(!format!("{with_sentinel:?}").contains("s3cret"));
        let both = RedisConfig {
            sentinel: Some(sentinel.clone()),
            ..cluster
        };
        assert_eq!(both.validate().unwrap_err().0, "Cluster");
        let nameless = RedisConfig {
            sentinel: Some(SentinelConfig {
                master_name: String::new(),
                ..sentinel
            }),
            ..RedisConfig::default()
        };
        assert_eq!(nameless.validate().unwrap_err().0, "Sentinel.MasterName");
        let bad = RedisConfig {
            sentinel: Some(SentinelConfig {
                master_name: "m".into(),
                addrs: vec!["s1:port".into()],
                ..SentinelConfig::default()
            }),
            ..RedisConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "Sentinel.Addrs");
    }

    #[test]
    fn keys_without_effect_are_reported() {
        let c = RedisConfig {
            max_retries: 3,
            pool_fifo: true,
            ..RedisConfig::default()
        };
        assert_eq!(c.ignored_keys(), ["MaxRetries", "PoolFIFO"]);
        assert!(RedisConfig::default().ignored_keys().is_empty());
        assert_eq!(
            RedisConfig {
                pool_size: 50,
                max_active_conns: 20,
                ..RedisConfig::default()
            }
            .max_connections(),
            20
        );
    }
}
