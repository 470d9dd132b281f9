//! Throwaway servers for the tests: one small module per backend, plus TLS variants.

pub(crate) mod certs;
pub(crate) mod postgres;
pub(crate) mod redis;
pub(crate) mod tls;

use crate::util::Result;

/// All servers the tests need; each stops when this is dropped (also on error, panic, Ctrl-C).
#[derive(Debug)]
pub(crate) struct Servers {
    redis: redis::RedisServer,
    cluster: redis::RedisCluster,
    sentinels: redis::RedisSentinels,
    postgres: postgres::PostgresServer,
    tls: tls::TlsServers,
}

impl Servers {
    /// Starts every server and waits until each accepts connections.
    pub(crate) fn start() -> Result<Self> {
        eprintln!("xtask: starting redis-server");
        let redis = redis::RedisServer::start()?;
        eprintln!("xtask: starting a 3-master redis cluster");
        let cluster = redis::RedisCluster::start(redis::Transport::Plain)?;
        eprintln!("xtask: starting a redis master, replica and 3 sentinels");
        let sentinels = redis::RedisSentinels::start(redis::Transport::Plain)?;
        eprintln!("xtask: starting postgres");
        let postgres = postgres::PostgresServer::start()?;
        eprintln!(
            "xtask: starting TLS servers (2 redis-server, a redis cluster, sentinels, 2 postgres, \
             throwaway CA)"
        );
        let tls = tls::TlsServers::start(postgres.install())?;
        Ok(Self {
            redis,
            cluster,
            sentinels,
            postgres,
            tls,
        })
    }

    /// The plain PostgreSQL server (`CACHE_TEST_POSTGRES_URL`).
    pub(crate) fn postgres(&self) -> &postgres::PostgresServer {
        &self.postgres
    }

    /// The environment variables tests read to find the servers.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CACHE_TEST_REDIS_URL", self.redis.url()),
            ("CACHE_TEST_REDIS_SOCKET", self.redis.socket()),
            ("CACHE_TEST_REDIS_CLUSTER", self.cluster.addrs()),
            ("CACHE_TEST_REDIS_SENTINELS", self.sentinels.addrs()),
            ("CACHE_TEST_REDIS_MASTER", redis::MASTER_NAME.to_owned()),
            ("CACHE_TEST_POSTGRES_URL", self.postgres.url()),
        ];
        env.extend(self.tls.env());
        env
    }
}
