//! [`PostgresConnector`]: one pool, shared by every object cache on this database.

use std::sync::Arc;

use bb8_postgres::PostgresConnectionManager;
use cache_core::{CacheSettings, Entry, Error, Index, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use crate::cache::PostgresCache;
use crate::channel::PostgresChannel;
use crate::config::PostgresConfig;
use crate::db::{Db, Manager};
use crate::schema::{self, Schema};
use crate::shared::Shared;
use crate::sql::Statements;
use crate::tls::Connect;

/// The PostgreSQL connector: makes object caches that share one connection pool and one set of
/// tables.
#[derive(Clone, Debug)]
pub struct PostgresConnector {
    pub(crate) shared: Arc<Shared>,
}

fn config_error(key: &str, message: String) -> Error {
    Error::config(format!("Caches.Connectors.Postgres.{key}: {message}"))
}

impl PostgresConnector {
    /// A connector with its own pool for `config`, scoping objects by the application's
    /// `version`.
    ///
    /// Does not connect: a database that is down at startup makes the caches miss until it is
    /// reachable. Fails only on invalid settings. Call it inside a Tokio runtime (the pool
    /// runs background tasks). The tables must exist: run [`setup`](Self::setup) once (or
    /// let operators run it, see the crate docs).
    pub fn new(config: &PostgresConfig, version: &str) -> Result<Self> {
        config.validate().map_err(|(k, m)| config_error(k, m))?;
        let schema = config.schema().map_err(|(k, m)| config_error(k, m))?;
        let mut pg = config
            .connection_config()
            .map_err(|(k, m)| config_error(k, m))?;
        let tls = config.make_tls().map_err(|(k, m)| config_error(k, m))?;
        config.tls.warn_if_insecure(crate::CONNECTOR, "PostgreSQL");
        // The server cancels what runs too long, so a slow statement frees its connection.
        // Prepared statements keep one generic plan: every statement is written to plan well
        // without knowing its parameters (per-key index lookups), while the default would
        // plan a read of many keys anew on every call (the custom plan looks cheaper for a
        // known key count), which costs more than running it.
        // And no plan may depend on the table's statistics: a cache table is often empty
        // when a connection first plans a statement (after setup, after a crash), and a
        // generic plan made then (a sequential scan of a "small" table) would stay with the
        // connection while the table grows to millions of rows. Every statement is an index
        // lookup by design, so sequential scans are ruled out.
        let limit = format!(
            "-c statement_timeout={} -c plan_cache_mode=force_generic_plan -c enable_seqscan=off",
            cache_core::whole_millis(config.statement_timeout)
        );
        let options = match pg.get_options() {
            Some(options) => format!("{options} {limit}"),
            None => limit,
        };
        pg.options(&options);
        let listener = Connect { config: pg, tls };
        let failures = cache_core::pool::ConnectFailures::new();
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(config.min_idle_conns).filter(|n| *n > 0))
            .connection_timeout(config.pool_wait())
            .idle_timeout(Some(config.conn_max_idle_time).filter(|d| !d.is_zero()))
            .max_lifetime(Some(config.conn_max_lifetime).filter(|d| !d.is_zero()))
            // A down database fails the checkout at once (a miss), instead of retrying until
            // the pool timeout; closed connections are found without a query (see `Db`).
            .retry_connection(false)
            .test_on_check_out(false)
            .error_sink(Box::new(failures.clone()))
            .build_unchecked(Manager::new(listener.config.clone(), listener.tls()));
        let db = Db::own(
            pool,
            failures,
            Statements::new(&schema),
            config.pool_wait(),
            config.statement_timeout,
        );
        Ok(Self::from_parts(
            db,
            schema,
            version,
            config,
            Some(listener),
        ))
    }

    /// A connector on the application's own pool, so the service can reuse its connections.
    /// Of `config`, only `Schema`, `StatementTimeout` (as a client-side limit) and `MaxObjectSize`
    /// are used.
    ///
    /// The pool may connect in plain text ([`ApplicationPool`](crate::ApplicationPool)) or through any TLS connector
    /// (e.g. `tokio_postgres_rustls::MakeRustlsConnect`): its connections are used as they
    /// are, and `SSLMode` / `TLS` of `config` do not apply to them.
    ///
    /// Statements run unprepared in one round trip each (the server parses them every time,
    /// since the pool's connections are not ours to prepare statements on); a pool of our own
    /// ([`new`](Self::new)) is faster.
    pub fn with_pool<T>(
        pool: bb8::Pool<PostgresConnectionManager<T>>,
        config: &PostgresConfig,
        version: &str,
    ) -> Result<Self>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + Sync,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let schema = config.schema().map_err(|(k, m)| config_error(k, m))?;
        if config.statement_timeout.is_zero() {
            return Err(config_error(
                "StatementTimeout",
                "0 would let an operation hang forever; write e.g. 3s".to_owned(),
            ));
        }
        let db = Db::application(
            Box::new(pool),
            Statements::new(&schema),
            config.statement_timeout,
        );
        Ok(Self::from_parts(db, schema, version, config, None))
    }

    fn from_parts(
        db: Db,
        schema: Schema,
        version: &str,
        config: &PostgresConfig,
        listener: Option<Connect>,
    ) -> Self {
        PostgresConnector {
            shared: Arc::new(Shared {
                db,
                version: cache_core::keys::storable(version, crate::cache::MAX_PLAIN_KEY).into(),
                max_concurrent_reads: config.concurrent_reads(),
                max_object_size: config.max_object_size,
                origin: (rand::random::<u64>() >> 1) | 1,
                channel: schema.channel(),
                schema,
                listener,
            }),
        }
    }

    /// The `LISTEN`/`NOTIFY` channel of this database that near caches announce their changes
    /// on. Connects only when listened to or published on. Not available on an application's
    /// pool ([`with_pool`](Self::with_pool)), whose connection settings the connector does not
    /// know.
    pub fn channel(&self) -> Result<PostgresChannel> {
        let listener = self.shared.listener.clone().ok_or_else(|| {
            Error::config(
                "the PostgreSQL channel needs connection settings of its own: make the \
                 connector with PostgresConnector::new, not with_pool",
            )
        })?;
        Ok(PostgresChannel::new(Arc::clone(&self.shared), listener))
    }

    /// Creates the schema, tables and function the connector needs, or brings them up to date.
    /// Idempotent, and safe when several processes run it at once (they wait for each other
    /// on an advisory lock). Fails when the database is unreachable: call it at startup when
    /// a missing cache should stop the service, or run `cargo xtask pg-setup` once instead.
    pub async fn setup(&self) -> Result<()> {
        self.shared
            .db
            .batch_in_transaction(&schema::setup_sql(&self.shared.schema))
            .await?;
        tracing::info!(
            connector = crate::CONNECTOR,
            schema = %self.shared.schema,
            "cache tables are set up"
        );
        Ok(())
    }

    /// A new object cache for `purpose` in this database, reachable through `indices`,
    /// expiring by `settings` (its `Connector` field is not looked at).
    ///
    /// The cache needs a pruner: pass `cache.clone().into_prune()` to
    /// `cache_pruner::Pruner::start` with [`PostgresConfig::auto_prune`].
    pub fn cache<I, V>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Arc<PostgresCache<I, V>>
    where
        I: Index,
        V: Entry<I> + Serialize + DeserializeOwned,
    {
        Arc::new(PostgresCache::new(
            Arc::clone(&self.shared),
            purpose,
            indices,
            settings,
        ))
    }
}
