//! `Caches.Connectors.Postgres`: where the database is, how the pool behaves, where the tables
//! live.
//!
//! The database is given by `URL` (`postgres://user:password@host:port/database?sslmode=...`,
//! or the `host=... user=...` form) and/or discrete fields; a discrete field that is set wins
//! over the URL. Instead of all of this, an application can hand in its own pool
//! ([`PostgresConnector::with_pool`](crate::PostgresConnector::with_pool)).

use std::fmt;
use std::time::Duration;

use cache_core::settings::{duration, redact_url, text};
use cache_core::{AutoPrune, BreakerSettings, TlsFiles};
use serde::{Deserialize, Serialize};
use tokio_postgres::config::Host;

use crate::schema::Schema;
use crate::tls::{self, MakeTls, SslMode};

/// The PostgreSQL connector's settings. Field names are the lower-cased configuration keys.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Whether object caches may name this connector. Default `false`.
    #[serde(rename = "enabled")]
    pub enabled: bool,
    /// How often expired, invalidated and orphaned objects are removed. Default: every
    /// 15 minutes, each run bounded by 30 seconds.
    #[serde(rename = "autoprune")]
    pub auto_prune: AutoPrune,
    /// The database as a URL (`postgres://user:password@host:port/database?sslmode=disable`)
    /// or a `key=value` connection string. Empty (the default): discrete fields only.
    #[serde(rename = "url", with = "text")]
    pub url: String,
    /// Host name, IP address or Unix socket directory; overrides the URL's. Default
    /// `localhost` when neither sets one.
    #[serde(rename = "host", with = "text")]
    pub host: String,
    /// Port; overrides the URL's when not 0. Default 5432.
    #[serde(rename = "port")]
    pub port: u16,
    /// Database name; overrides the URL's. Default: the user name.
    #[serde(rename = "database", with = "text")]
    pub database: String,
    /// User name; overrides the URL's. Default `postgres` when neither sets one.
    #[serde(rename = "user", with = "text")]
    pub user: String,
    /// Password; overrides the URL's. Never shown in logs, errors or `Debug`.
    #[serde(rename = "password", with = "text")]
    pub password: String,
    /// TLS, as libpq's `sslmode`: `disable`, `prefer` (TLS when the server offers it,
    /// unverified), `require` (TLS, unverified unless `TLS.CAFile` is set), `verify-ca`
    /// (signed by a trusted CA) or `verify-full` (and made for the host). Overrides the URL's
    /// `sslmode`; empty (the default): the URL's, else `prefer`. All but `disable` and
    /// `prefer` need the Cargo feature `tls`.
    #[serde(rename = "sslmode", with = "text")]
    pub ssl_mode: String,
    /// The CA to trust (else the system's) and the client certificate for servers that
    /// require one. Each file set here overrides the URL's `sslrootcert`, `sslcert`,
    /// `sslkey`. Needs the Cargo feature `tls`.
    #[serde(rename = "tls")]
    pub tls: TlsFiles,
    /// The PostgreSQL schema holding the cache's tables, created by the setup step. A plain
    /// lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes). Default `cache`.
    #[serde(rename = "schema", with = "text")]
    pub schema: String,
    /// Most connections in the pool. Default 10.
    #[serde(rename = "poolsize")]
    pub pool_size: u32,
    /// Read statements one object cache runs at once for one index. Gets that arrive while
    /// that many run wait, and the next statement answers all of them with one lookup of
    /// their keys, so a busy cache costs the database one statement per batch of gets
    /// instead of one per get. Without load nothing waits. Default 2; 0: up to `PoolSize`.
    #[serde(rename = "maxconcurrentreads")]
    pub max_concurrent_reads: u32,
    /// Idle connections kept ready. Default 0.
    #[serde(rename = "minidleconns")]
    pub min_idle_conns: u32,
    /// Idle connections are closed after this. Default `30m`; 0 keeps them.
    #[serde(rename = "connmaxidletime", with = "duration")]
    pub conn_max_idle_time: Duration,
    /// Connections are replaced after this age. Default 0: never.
    #[serde(rename = "connmaxlifetime", with = "duration")]
    pub conn_max_lifetime: Duration,
    /// Longest wait for a connection from a full pool; 0 (the default) means
    /// `StatementTimeout` + 1s.
    #[serde(rename = "pooltimeout", with = "duration")]
    pub pool_timeout: Duration,
    /// Longest wait to connect. Default `5s`.
    #[serde(rename = "connecttimeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Longest one operation may run, enforced by the server (`statement_timeout`) and by the
    /// client. Default `3s`; must be above 0.
    #[serde(rename = "statementtimeout", with = "duration")]
    pub statement_timeout: Duration,
    /// The circuit breaker in front of every object cache on this database
    /// (`cache-breaker`); absent (the default): none.
    #[serde(rename = "circuitbreaker")]
    pub circuit_breaker: Option<BreakerSettings>,
    /// The largest object stored, encoded (`16MiB`, `512KiB`, or bytes): a larger one is not
    /// cached, and its set fails as `Rejected` — the request's own size, never a failure of
    /// the database (the circuit breaker does not count it). Default `16MiB`.
    #[serde(rename = "maxobjectsize", with = "cache_core::settings::byte_size")]
    pub max_object_size: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            enabled: false,
            auto_prune: AutoPrune::new(Duration::from_secs(15 * 60), Duration::from_secs(30)),
            url: String::new(),
            host: String::new(),
            port: 0,
            database: String::new(),
            user: String::new(),
            password: String::new(),
            ssl_mode: String::new(),
            tls: TlsFiles::default(),
            schema: "cache".to_owned(),
            pool_size: 10,
            max_concurrent_reads: 2,
            min_idle_conns: 0,
            conn_max_idle_time: Duration::from_secs(30 * 60),
            conn_max_lifetime: Duration::ZERO,
            pool_timeout: Duration::ZERO,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(3),
            circuit_breaker: None,
            max_object_size: 16 << 20,
        }
    }
}

impl PostgresConfig {
    /// An enabled configuration for the database at `url`.
    pub fn with_url(url: impl Into<String>) -> Self {
        PostgresConfig {
            enabled: true,
            url: url.into(),
            ..PostgresConfig::default()
        }
    }

    /// Read statements one object cache runs at once for one index: `MaxConcurrentReads`, or
    /// `PoolSize` when that is 0.
    pub fn concurrent_reads(&self) -> usize {
        let reads = match self.max_concurrent_reads {
            0 => self.pool_size,
            n => n,
        };
        usize::try_from(reads).unwrap_or(usize::MAX).max(1)
    }

    /// How long an operation may wait for a pooled connection.
    pub fn pool_wait(&self) -> Duration {
        if self.pool_timeout.is_zero() {
            self.statement_timeout + Duration::from_secs(1)
        } else {
            self.pool_timeout
        }
    }

    /// The checked schema name.
    pub(crate) fn schema(&self) -> Result<Schema, (&'static str, String)> {
        Schema::new(&self.schema).map_err(|message| ("Schema", message))
    }

    /// Where and how to connect: the URL, then every discrete field that is set over it.
    /// On error, the offending key and what to write instead (never the password).
    pub fn connection_config(&self) -> Result<tokio_postgres::Config, (&'static str, String)> {
        let (stripped, _) = tls::split_url(&self.url);
        let url = if stripped.is_empty() {
            tokio_postgres::Config::new()
        } else {
            stripped.parse::<tokio_postgres::Config>().map_err(|e| {
                (
                    "URL",
                    format!(
                        "{:?} is not a PostgreSQL connection URL ({e}); write e.g. \
                         postgres://user@localhost:5432/app?sslmode=verify-full",
                        self.redacted_url()
                    ),
                )
            })?
        };
        // Hosts and ports are lists in tokio-postgres; a discrete field replaces the list.
        let mut config = tokio_postgres::Config::new();
        if !self.host.is_empty() {
            config.host(&self.host);
        } else if url.get_hosts().is_empty() {
            config.host("localhost");
        } else {
            for host in url.get_hosts() {
                match host {
                    Host::Tcp(name) => config.host(name),
                    #[cfg(unix)]
                    Host::Unix(path) => config.host_path(path),
                };
            }
        }
        if self.port != 0 {
            config.port(self.port);
        } else {
            for port in url.get_ports() {
                config.port(*port);
            }
        }
        copy_settings(&url, &mut config);
        if !self.database.is_empty() {
            config.dbname(&self.database);
        }
        if !self.user.is_empty() {
            config.user(&self.user);
        } else if config.get_user().is_none() {
            config.user("postgres");
        }
        if !self.password.is_empty() {
            config.password(&self.password);
        }
        config.ssl_mode(self.tls_settings()?.0.negotiation());
        if config.get_application_name().is_none() {
            config.application_name("object-cache");
        }
        config.connect_timeout(self.connect_timeout);
        Ok(config)
    }

    /// How connections use TLS: `SSLMode` (else the URL's `sslmode`, else `prefer`) and the
    /// `TLS` files, each set one over the URL's `sslrootcert`, `sslcert`, `sslkey`.
    pub fn tls_settings(&self) -> Result<(SslMode, TlsFiles), (&'static str, String)> {
        let (_, from_url) = tls::split_url(&self.url);
        let mode = if !self.ssl_mode.is_empty() {
            SslMode::parse(&self.ssl_mode).map_err(|m| ("SSLMode", m))?
        } else if let Some(mode) = &from_url.mode {
            SslMode::parse(mode).map_err(|m| ("URL", m))?
        } else {
            SslMode::Prefer
        };
        let or_url = |set: &String, url: Option<String>| {
            if set.is_empty() {
                url.unwrap_or_default()
            } else {
                set.clone()
            }
        };
        let files = TlsFiles {
            ca_file: or_url(&self.tls.ca_file, from_url.root_cert),
            cert_file: or_url(&self.tls.cert_file, from_url.cert),
            key_file: or_url(&self.tls.key_file, from_url.key),
            insecure_skip_verify: self.tls.insecure_skip_verify,
        };
        if files.insecure_skip_verify && matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err((
                "TLS.InsecureSkipVerify",
                format!(
                    "is true, but sslmode {mode} asks for the server's certificate to be \
                     verified; choose one (require encrypts without verifying)"
                ),
            ));
        }
        if !files.ca_file.is_empty() && matches!(mode, SslMode::Disable | SslMode::Prefer) {
            return Err((
                "TLS.CAFile",
                format!(
                    "is set, but sslmode {mode} never verifies the server with it; write \
                     SSLMode: verify-full (or verify-ca), or remove the CA file"
                ),
            ));
        }
        if mode == SslMode::Disable && (files.names_files() || files.insecure_skip_verify) {
            return Err((
                "SSLMode",
                "is disable, but TLS settings are given; write prefer, require, verify-ca or \
                 verify-full, or remove the TLS settings"
                    .to_owned(),
            ));
        }
        Ok((mode, files))
    }

    /// What connections negotiate TLS with, the files read and checked.
    pub(crate) fn make_tls(&self) -> Result<MakeTls, (&'static str, String)> {
        let (mode, files) = self.tls_settings()?;
        let pem = files.read()?;
        tls::make_tls(mode, &pem, files.insecure_skip_verify).map_err(|(key, message)| match key {
            "SSLMode" if self.ssl_mode.is_empty() => ("URL", message),
            key => (key, message),
        })
    }

    /// Checks what serde cannot, reading the TLS files: on error, the offending key (below
    /// `Caches.Connectors.Postgres`) and what to write instead. Never shows the password.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.connection_config()?;
        self.make_tls()?;
        self.schema()?;
        if let Some(breaker) = &self.circuit_breaker {
            breaker.validate()?;
        }
        if self.pool_size == 0 {
            return Err((
                "PoolSize",
                "0 connections cannot serve anything; write 1 or more (default 10)".to_owned(),
            ));
        }
        if self.min_idle_conns > self.pool_size {
            return Err((
                "MinIdleConns",
                format!(
                    "{} idle connections do not fit a pool of {}; lower it or raise PoolSize",
                    self.min_idle_conns, self.pool_size
                ),
            ));
        }
        if self.statement_timeout.is_zero() {
            return Err((
                "StatementTimeout",
                "0 would let an operation hang forever; write e.g. 3s".to_owned(),
            ));
        }
        Ok(())
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Everything of the URL but its hosts and ports.
fn copy_settings(from: &tokio_postgres::Config, to: &mut tokio_postgres::Config) {
    if let Some(user) = from.get_user() {
        to.user(user);
    }
    if let Some(password) = from.get_password() {
        to.password(password);
    }
    if let Some(dbname) = from.get_dbname() {
        to.dbname(dbname);
    }
    if let Some(options) = from.get_options() {
        to.options(options);
    }
    if let Some(name) = from.get_application_name() {
        to.application_name(name);
    }
    to.target_session_attrs(from.get_target_session_attrs());
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.redacted_url())
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("ssl_mode", &self.ssl_mode)
            .field("tls", &self.tls)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("max_concurrent_reads", &self.max_concurrent_reads)
            .field("min_idle_conns", &self.min_idle_conns)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("auto_prune", &self.auto_prune)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("max_object_size", &self.max_object_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let c = PostgresConfig {
            password: "hunter2".into(),
            ..PostgresConfig::with_url("postgres://app:s3cret@db:5432/app")
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        let (key, message) = PostgresConfig::with_url("postgres://app:s3cret@db:port/app")
            .validate()
            .unwrap_err();
        assert_eq!(key, "URL");
        assert!(!message.contains("s3cret"), "{message}");
        // The password as a query setting, or in a libpq key=value string.
        for url in [
            "postgres://app@db:5432/app?password=s3cret&sslmode=bogus",
            "host=db user=app password=s3cret sslmode=bogus",
            "host=db user=app password='s3 cret' sslmode=bogus",
        ] {
            let c = PostgresConfig::with_url(url);
            let shown = format!("{c:?}");
            assert!(
                !shown.contains("s3cret") && !shown.contains("s3 cret"),
                "{shown}"
            );
            let (_, message) = c.validate().unwrap_err();
            assert!(
                !message.contains("s3cret") && !message.contains("s3 cret"),
                "{message}"
            );
        }
    }

    #[test]
    fn discrete_fields_override_the_url() {
        let c = PostgresConfig {
            host: "10.0.0.7".into(),
            port: 6543,
            user: "svc".into(),
            password: "pw".into(),
            database: "cachedb".into(),
            ..PostgresConfig::with_url("postgres://app:old@db:5433/app?sslmode=disable")
        };
        let pg = c.connection_config().unwrap();
        assert_eq!(pg.get_hosts(), [Host::Tcp("10.0.0.7".into())]);
        assert_eq!(pg.get_ports(), [6543]);
        assert_eq!(pg.get_user(), Some("svc"));
        assert_eq!(pg.get_password(), Some(&b"pw"[..]));
        assert_eq!(pg.get_dbname(), Some("cachedb"));
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);

        let defaults = PostgresConfig::default().connection_config().unwrap();
        assert_eq!(defaults.get_hosts(), [Host::Tcp("localhost".into())]);
        assert_eq!(defaults.get_user(), Some("postgres"));
        assert_eq!(defaults.get_application_name(), Some("object-cache"));
    }

    #[test]
    fn validate_names_the_key() {
        assert!(
            PostgresConfig::with_url("postgres://u@h/d")
                .validate()
                .is_ok()
        );
        let mode = PostgresConfig::with_url("postgres://u@h/d?sslmode=verify_full");
        assert_eq!(mode.validate().unwrap_err().0, "URL");
        let mode = PostgresConfig {
            ssl_mode: "on".into(),
            ..PostgresConfig::default()
        };
        assert_eq!(mode.validate().unwrap_err().0, "SSLMode");
        let schema = PostgresConfig {
            schema: "cache; DROP TABLE users".into(),
            ..PostgresConfig::default()
        };
        assert_eq!(schema.validate().unwrap_err().0, "Schema");
        let zero = PostgresConfig {
            pool_size: 0,
            ..PostgresConfig::default()
        };
        assert_eq!(zero.validate().unwrap_err().0, "PoolSize");
        let idle = PostgresConfig {
            min_idle_conns: 11,
            ..PostgresConfig::default()
        };
        assert_eq!(idle.validate().unwrap_err().0, "MinIdleConns");
        let hang = PostgresConfig {
            statement_timeout: Duration::ZERO,
            ..PostgresConfig::default()
        };
        assert_eq!(hang.validate().unwrap_err().0, "StatementTimeout");
    }

    #[test]
    fn tls_settings_come_from_fields_over_the_url() {
        let c = PostgresConfig {
            tls: TlsFiles {
                cert_file: "/mine.pem".into(),
                key_file: "/mine.key".into(),
                ..TlsFiles::default()
            },
            ..PostgresConfig::with_url(
                "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/ca.pem&sslcert=/url.pem",
            )
        };
        let (mode, files) = c.tls_settings().unwrap();
        assert_eq!(mode, SslMode::VerifyCa);
        assert_eq!(files.ca_file, "/ca.pem");
        assert_eq!(files.cert_file, "/mine.pem");
        assert_eq!(files.key_file, "/mine.key");
        let pg = c.connection_config().unwrap();
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let over = PostgresConfig {
            ssl_mode: "disable".into(),
            ..PostgresConfig::with_url("postgres://u@h/d?sslmode=verify-full")
        };
        assert_eq!(over.tls_settings().unwrap().0, SslMode::Disable);
        assert_eq!(
            PostgresConfig::default().tls_settings().unwrap().0,
            SslMode::Prefer
        );
    }

    #[test]
    fn contradictory_tls_settings_are_refused() {
        let skip = PostgresConfig {
            ssl_mode: "verify-full".into(),
            tls: TlsFiles {
                insecure_skip_verify: true,
                ..TlsFiles::default()
            },
            ..PostgresConfig::default()
        };
        assert_eq!(skip.validate().unwrap_err().0, "TLS.InsecureSkipVerify");
        let unused_ca = PostgresConfig::with_url("postgres://u@h/d?sslrootcert=/ca.pem");
        assert_eq!(unused_ca.validate().unwrap_err().0, "TLS.CAFile");
        let plain = PostgresConfig {
            ssl_mode: "disable".into(),
            tls: TlsFiles {
                cert_file: "/c.pem".into(),
                key_file: "/c.key".into(),
                ..TlsFiles::default()
            },
            ..PostgresConfig::default()
        };
        assert_eq!(plain.validate().unwrap_err().0, "SSLMode");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_tls_is_refused_with_what_to_do() {
        let (key, message) = PostgresConfig::with_url("postgres://u@h/d?sslmode=require")
            .validate()
            .unwrap_err();
        assert_eq!(key, "URL");
        assert!(message.contains("`tls` Cargo feature"), "{message}");
        let field = PostgresConfig {
            ssl_mode: "verify-full".into(),
            ..PostgresConfig::default()
        };
        assert_eq!(field.validate().unwrap_err().0, "SSLMode");
        assert!(PostgresConfig::default().validate().is_ok());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn with_the_feature_files_are_read_and_checked() {
        let require = PostgresConfig::with_url("postgres://u@h/d?sslmode=require");
        assert!(require.validate().is_ok());
        let missing = PostgresConfig {
            ssl_mode: "verify-full".into(),
            tls: TlsFiles {
                ca_file: "/nonexistent/ca.pem".into(),
                ..TlsFiles::default()
            },
            ..PostgresConfig::default()
        };
        let (key, message) = missing.validate().unwrap_err();
        assert_eq!(key, "TLS.CAFile");
        assert!(message.contains("/nonexistent/ca.pem"), "{message}");
        let dir = std::env::temp_dir().join(format!("cache-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk_ca = PostgresConfig {
            ssl_mode: "verify-ca".into(),
            tls: TlsFiles {
                ca_file: junk.display().to_string(),
                ..TlsFiles::default()
            },
            ..PostgresConfig::default()
        };
        assert_eq!(junk_ca.validate().unwrap_err().0, "TLS.CAFile");
        let junk_cert = PostgresConfig {
            ssl_mode: "require".into(),
            tls: TlsFiles {
                cert_file: junk.display().to_string(),
                key_file: junk.display().to_string(),
                ..TlsFiles::default()
            },
            ..PostgresConfig::default()
        };
        assert_eq!(junk_cert.validate().unwrap_err().0, "TLS.CertFile");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
