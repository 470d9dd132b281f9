//! TLS test servers, all with certificates from one throwaway CA (see `certs.rs`), and the
//! variables that find them:
//!
//! - `CACHE_TEST_TLS_CA`: path of the CA certificate (PEM) that every certificate below chains
//!   to; the only trust anchor a client needs.
//! - `CACHE_TEST_TLS_CLIENT_CERT`, `CACHE_TEST_TLS_CLIENT_KEY`: paths of a client certificate
//!   (CN `postgres`) and its private key (PKCS#8 PEM, ECDSA P-256), from the same CA.
//! - `CACHE_TEST_REDIS_TLS_URL`: `rediss://127.0.0.1:PORT/`, a redis-server that speaks only
//!   TLS; its certificate names `localhost` and `127.0.0.1`; a client certificate is optional
//!   (`--tls-auth-clients optional`: one that does not chain to the CA is refused).
//! - `CACHE_TEST_REDIS_MTLS_URL`: the same kind of server, but a client certificate from the
//!   CA is required (`--tls-auth-clients yes`): without one the handshake fails.
//! - `CACHE_TEST_REDIS_TLS_CLUSTER`: `host:port,...`, a 3-master Redis Cluster that speaks only
//!   TLS, its cluster bus too (`--tls-cluster yes`); client certificates optional.
//! - `CACHE_TEST_REDIS_TLS_SENTINELS`: `host:port,...`, 3 sentinels that speak only TLS,
//!   watching a TLS-only master and replica as `CACHE_TEST_REDIS_MASTER` (`--tls-replication
//!   yes`); client certificates optional.
//! - `CACHE_TEST_POSTGRES_TLS_URL`: `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=require`,
//!   a PostgreSQL with `ssl = on` and a certificate for `localhost` / `127.0.0.1`. Over TCP it
//!   accepts TLS only (plain connections are rejected by pg_hba.conf); no password, no client
//!   certificate needed.
//! - `CACHE_TEST_POSTGRES_MTLS_URL`: the same server, database `cache_mtls`, which needs the
//!   client certificate (`hostssl cache_mtls all 127.0.0.1/32 cert`: its CN is the user name).
//! - `CACHE_TEST_POSTGRES_WRONG_HOST_URL`: another PostgreSQL (TLS only, trust) that serves a
//!   certificate for `wrong.example` only, from the same CA: `verify-ca` succeeds, `verify-full`
//!   against 127.0.0.1 fails.
//!
//! The PostgreSQL URLs carry `sslmode=require`, the strongest mode tokio-postgres parses;
//! verifying the certificate (and the host name) with `CACHE_TEST_TLS_CA` is the client's
//! setting. With libpq: `psql "$CACHE_TEST_POSTGRES_TLS_URL&sslmode=verify-full&sslrootcert=$CACHE_TEST_TLS_CA"`.
//! Every server listens on 127.0.0.1 only; [`TlsServers::start`] checks each PostgreSQL with
//! `psql` (verify-full / client certificate / wrong host) before the tests run.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::certs::{Certs, KeyPair};
use super::postgres::{Install, Options, PostgresServer, ServerTls};
use super::redis::{RedisCluster, RedisSentinels, RedisTlsServer, Transport};
use crate::util::{self, Result};

/// The database on the TLS PostgreSQL that needs a client certificate.
const MTLS_DATABASE: &str = "cache_mtls";

/// pg_hba.conf of the TLS servers: TCP only with TLS; [`MTLS_DATABASE`] by client certificate,
/// everything else trusted; the local socket (for createdb) trusted.
const HBA: &str = "\
# xtask: TLS-only test server
local     all         all                  trust
hostnossl all         all       0.0.0.0/0    reject
hostssl   cache_mtls  all       127.0.0.1/32 cert
hostssl   all         all       127.0.0.1/32 trust
";

/// The TLS servers; each stops when this is dropped, then the certificates are removed.
#[derive(Debug)]
pub(crate) struct TlsServers {
    redis: RedisTlsServer,
    redis_mtls: RedisTlsServer,
    redis_cluster: RedisCluster,
    redis_sentinels: RedisSentinels,
    postgres: PostgresServer,
    postgres_wrong_host: PostgresServer,
    // Last: removed after every server using the files stopped.
    certs: Certs,
}

impl TlsServers {
    /// Makes the certificates under `target/xtask/`, starts the servers (PostgreSQL from
    /// `install`) and checks that each accepts TLS as documented above.
    pub(crate) fn start(install: &Install) -> Result<Self> {
        let certs = Certs::generate(&crate::root().join("target").join("xtask"))?;
        let redis = RedisTlsServer::start(&certs, false)?;
        let redis_mtls = RedisTlsServer::start(&certs, true)?;
        let redis_cluster = RedisCluster::start(Transport::Tls(&certs))?;
        let redis_sentinels = RedisSentinels::start(Transport::Tls(&certs))?;
        let postgres = start_postgres(install, &certs, &certs.server, &[MTLS_DATABASE])?;
        let postgres_wrong_host = start_postgres(install, &certs, &certs.wrong_host, &[])?;
        let servers = Self {
            redis,
            redis_mtls,
            redis_cluster,
            redis_sentinels,
            postgres,
            postgres_wrong_host,
            certs,
        };
        servers.check_postgres()?;
        Ok(servers)
    }

    /// The environment variables documented in the module docs.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.display().to_string();
        vec![
            ("CACHE_TEST_TLS_CA", path(&self.certs.ca)),
            ("CACHE_TEST_TLS_CLIENT_CERT", path(&self.certs.client.cert)),
            ("CACHE_TEST_TLS_CLIENT_KEY", path(&self.certs.client.key)),
            ("CACHE_TEST_REDIS_TLS_URL", self.redis.url()),
            ("CACHE_TEST_REDIS_MTLS_URL", self.redis_mtls.url()),
            ("CACHE_TEST_REDIS_TLS_CLUSTER", self.redis_cluster.addrs()),
            (
                "CACHE_TEST_REDIS_TLS_SENTINELS",
                self.redis_sentinels.addrs(),
            ),
            (
                "CACHE_TEST_POSTGRES_TLS_URL",
                tls_url(&self.postgres, "postgres"),
            ),
            (
                "CACHE_TEST_POSTGRES_MTLS_URL",
                tls_url(&self.postgres, MTLS_DATABASE),
            ),
            (
                "CACHE_TEST_POSTGRES_WRONG_HOST_URL",
                tls_url(&self.postgres_wrong_host, "postgres"),
            ),
        ]
    }

    /// With psql (when installed): verify-full works, the client certificate opens the mTLS
    /// database, and the wrong-host server passes verify-ca but fails verify-full.
    fn check_postgres(&self) -> Result<()> {
        let Some(psql) = psql(self.postgres.install()) else {
            eprintln!("xtask: psql not found, TLS PostgreSQL servers not checked");
            return Ok(());
        };
        let ca = self.certs.ca.display();
        let conninfo = |server: &PostgresServer, db: &str, mode: &str| {
            format!(
                "host=127.0.0.1 port={} user=postgres dbname={db} sslmode={mode} sslrootcert={ca}",
                server.port()
            )
        };
        let client = format!(
            " sslcert={} sslkey={}",
            self.certs.client.cert.display(),
            self.certs.client.key.display()
        );
        let tls = conninfo(&self.postgres, "postgres", "verify-full");
        let mtls = conninfo(&self.postgres, MTLS_DATABASE, "verify-full") + &client;
        let wrong_ca = conninfo(&self.postgres_wrong_host, "postgres", "verify-ca");
        let wrong_full = conninfo(&self.postgres_wrong_host, "postgres", "verify-full");
        for (what, info) in [
            ("TLS with verify-full", &tls),
            ("mTLS with the client certificate", &mtls),
            ("the wrong-host server with verify-ca", &wrong_ca),
        ] {
            select_one(&psql, info).map_err(|e| format!("PostgreSQL {what} does not work: {e}"))?;
        }
        match select_one(&psql, &wrong_full) {
            Err(e) if e.contains("does not match host name") => Ok(()),
            Err(e) => Err(format!(
                "the wrong-host PostgreSQL failed verify-full for another reason: {e}"
            )),
            Ok(()) => Err("the wrong-host PostgreSQL passed verify-full".into()),
        }
    }
}

/// A TLS-only PostgreSQL serving `served`, client certificates checked against the CA.
fn start_postgres(
    install: &Install,
    certs: &Certs,
    served: &KeyPair,
    databases: &[&str],
) -> Result<PostgresServer> {
    PostgresServer::start_with(Options {
        tls: Some(ServerTls {
            cert: served.cert.clone(),
            key: served.key.clone(),
            ca: certs.ca.clone(),
        }),
        hba: Some(HBA.to_owned()),
        databases: databases.iter().map(|d| (*d).to_owned()).collect(),
        ..Options::new(install.clone())
    })
    .map_err(|e| format!("starting a TLS PostgreSQL: {e}"))
}

/// The URL of `database` on a TLS server.
fn tls_url(server: &PostgresServer, database: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/{database}?sslmode=require",
        server.port()
    )
}

/// psql of the installation, else the one on PATH.
fn psql(install: &Install) -> Option<PathBuf> {
    Some(install.bin.join("psql"))
        .filter(|p| p.is_file())
        .or_else(|| util::which("psql"))
}

/// `psql -c 'select 1'` with `conninfo`, at most 10 s; error (with psql's message) unless it
/// printed 1.
fn select_one(psql: &Path, conninfo: &str) -> Result<()> {
    let out = util::output(
        Command::new("timeout")
            .arg("10")
            .arg(psql)
            .args(["-X", "-A", "-t", "-q", "-d", conninfo, "-c", "select 1"])
            .env("PGCONNECT_TIMEOUT", "5"),
    )?;
    if out.trim() == "1" {
        Ok(())
    } else {
        Err(format!("psql printed {:?}", out.trim()))
    }
}
