//! [`Db`]: runs the connector's statements on a pool, bounded in time, and turns PostgreSQL
//! errors into cache errors.
//!
//! Two kinds of pool:
//! - **ours** (bb8 over bb8-postgres): every statement is prepared once per connection and
//!   reused, so a read is one round trip of Bind/Execute; the server enforces
//!   `statement_timeout`; a connection that timed out or closed is retired.
//! - **the application's** `bb8::Pool<PostgresConnectionManager<T>>`, plain text or any TLS
//!   connector `T`: statements run unprepared with declared parameter types (`query_typed`),
//!   still one round trip, parsed by the server each time; only the client-side timeout
//!   applies.

use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::time::Duration;

use bb8::ManageConnection;
use bb8_postgres::PostgresConnectionManager;
use cache_core::pool::ConnectFailures;
use cache_core::{Error, ErrorKind, Losses, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row, Socket, Statement};

use crate::sql::{Statements, Stmt};
use crate::tls::MakeTls;

/// A plain-text pool handed in by the application (a pool made with a TLS connector is
/// accepted as well: see [`PostgresConnector::with_pool`](crate::PostgresConnector::with_pool)).
pub type ApplicationPool = bb8::Pool<PostgresConnectionManager<NoTls>>;

/// A client the application's pool lent, given back when dropped.
type Lent<'a> = Box<dyn Deref<Target = Client> + Send + Sync + 'a>;

/// A checkout from the application's pool.
type Checkout<'a> = Pin<
    Box<
        dyn Future<Output = std::result::Result<Lent<'a>, bb8::RunError<tokio_postgres::Error>>>
            + Send
            + 'a,
    >,
>;

/// The application's pool, whichever TLS connector (or none) it connects with.
pub(crate) trait LendsClients: Send + Sync + 'static {
    /// A client of the pool.
    fn lend(&self) -> Checkout<'_>;
}

impl<T> LendsClients for bb8::Pool<PostgresConnectionManager<T>>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + Sync,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn lend(&self) -> Checkout<'_> {
        Box::pin(async move { self.get().await.map(|client| Box::new(client) as Lent<'_>) })
    }
}

/// Statement parameters.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Where to run statements, with the limits of every call.
#[derive(Debug)]
pub(crate) struct Db {
    pool: Pool,
    statements: Statements,
    /// Longest wait for a pooled connection.
    pool_wait: Duration,
    /// Longest one statement (with its conflict retries) may run.
    timeout: Duration,
    /// Connect errors of our pool, so a checkout does not wait on a refusing server.
    failures: ConnectFailures,
    /// The failure events of lost connections.
    losses: Losses,
}

enum Pool {
    Own(bb8::Pool<Manager>),
    Application(Box<dyn LendsClients>),
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pool::Own(pool) => f.debug_tuple("Own").field(&pool.state()).finish(),
            Pool::Application(_) => f.write_str("Application"),
        }
    }
}

/// How often a statement that lost a deadlock or serialisation conflict is run again.
const CONFLICT_ATTEMPTS: usize = 3;

impl Db {
    pub(crate) fn own(
        pool: bb8::Pool<Manager>,
        failures: ConnectFailures,
        statements: Statements,
        pool_wait: Duration,
        timeout: Duration,
    ) -> Self {
        Db {
            pool: Pool::Own(pool),
            statements,
            pool_wait,
            timeout,
            failures,
            losses: Losses::new(),
        }
    }

    pub(crate) fn application(
        pool: Box<dyn LendsClients>,
        statements: Statements,
        timeout: Duration,
    ) -> Self {
        Db {
            pool_wait: timeout,
            pool: Pool::Application(pool),
            statements,
            timeout,
            // The application's pool reports its errors elsewhere: waits are bounded by time.
            failures: ConnectFailures::new(),
            losses: Losses::new(),
        }
    }

    /// Longest one call may take: the wait for a connection plus the statement.
    pub(crate) fn longest_call(&self) -> Duration {
        self.pool_wait + self.timeout
    }

    /// Runs `stmt` and returns its rows.
    pub(crate) async fn query(&self, stmt: Stmt, params: &Params<'_>) -> Result<Vec<Row>> {
        match &self.pool {
            Pool::Own(pool) => {
                // The whole call is bounded by PoolTimeout + StatementTimeout.
                let started = std::time::Instant::now();
                let left = || self.longest_call().saturating_sub(started.elapsed());
                let mut connection = self.own_connection(pool).await?;
                match self.run(&mut connection, stmt, params, left()).await {
                    // The connection was lost under the call (a server restart, a failover,
                    // a proxy's idle timeout, `pg_terminate_backend`): not the server failing
                    // this call. Once more on a new connection, within what is left of the
                    // bound; an error of a loss carries its event (see `Losses`), so the
                    // breaker counts it once whatever number of calls it failed.
                    Err(error) if error.kind() == ErrorKind::Unavailable => {
                        connection.broken = true;
                        drop(connection);
                        let Ok(mut fresh) = self.fresh_connection(pool, left()).await else {
                            return Err(error.with_event(self.losses.event()));
                        };
                        let result = self.run(&mut fresh, stmt, params, left()).await;
                        if !fresh.broken {
                            // Give it to the pool (it may be full meanwhile: then it goes).
                            let _ = pool.add(fresh);
                        }
                        result.map_err(|e| self.lost(e))
                    }
                    result => result,
                }
            }
            Pool::Application(pool) => {
                let connection = self.checkout(pool.lend(), pg_error).await?;
                let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
                    .iter()
                    .copied()
                    .zip(stmt.types().iter().cloned())
                    .collect();
                let sql = self.statements.sql(stmt);
                tokio::time::timeout(
                    self.timeout,
                    retry_conflicts(|| connection.query_typed(sql, &typed)),
                )
                .await
                .map_err(|_| timed_out())?
                .map_err(pg_error)
            }
        }
    }

    /// Runs `stmt` on `connection` within the statement timeout and `left` of the call's
    /// bound; marks the connection broken when it did not answer in time or was lost.
    async fn run(
        &self,
        connection: &mut Connection,
        stmt: Stmt,
        params: &Params<'_>,
        left: Duration,
    ) -> Result<Vec<Row>> {
        let result = tokio::time::timeout(self.timeout.min(left), async {
            let statement = connection.prepared(stmt, &self.statements).await?;
            retry_conflicts(|| connection.client.query(&statement, params)).await
        })
        .await;
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                let error = pg_error(e);
                if error.kind() == ErrorKind::Unavailable {
                    connection.broken = true;
                }
                Err(error)
            }
            Err(_) => {
                // The server may still be working on it: do not queue behind it.
                connection.broken = true;
                Err(timed_out())
            }
        }
    }

    /// A new connection outside the pool's idle ones, within the pool wait and `left`.
    async fn fresh_connection(
        &self,
        pool: &bb8::Pool<Manager>,
        left: Duration,
    ) -> Result<Connection> {
        tokio::time::timeout(self.pool_wait.min(left), pool.dedicated_connection())
            .await
            .map_err(|_| {
                Error::timeout(
                    "postgres: no new connection within Caches.Connectors.Postgres.PoolTimeout",
                )
            })?
    }

    /// `error` marked with the event of a loss when it says the connection was lost.
    fn lost(&self, error: Error) -> Error {
        if error.kind() == ErrorKind::Unavailable {
            error.with_event(self.losses.event())
        } else {
            error
        }
    }

    /// Runs `stmt` and returns the count its single row reports.
    pub(crate) async fn count(&self, stmt: Stmt, params: &Params<'_>) -> Result<u64> {
        let rows = self.query(stmt, params).await?;
        let count: i64 = rows
            .first()
            .and_then(|row| row.try_get(0).ok())
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Runs the setup script in one transaction (on a connection of the pool).
    pub(crate) async fn batch_in_transaction(&self, script: &str) -> Result<()> {
        let script = format!("BEGIN;\n{script}\nCOMMIT;");
        let result = match &self.pool {
            Pool::Own(pool) => {
                let connection = self.own_connection(pool).await?;
                retry_conflicts(|| in_transaction(&connection.client, &script)).await
            }
            Pool::Application(pool) => {
                let connection = self.checkout(pool.lend(), pg_error).await?;
                retry_conflicts(|| in_transaction(&connection, &script)).await
            }
        };
        result.map_err(pg_error)
    }

    /// A connection of our pool that is still open: connections the server closed (a restart,
    /// an administrator) are retired here, without a round trip, instead of failing a call.
    async fn own_connection<'p>(
        &self,
        pool: &'p bb8::Pool<Manager>,
    ) -> Result<bb8::PooledConnection<'p, Manager>> {
        let mut attempts = pool.state().connections + 1;
        loop {
            let mut connection = self.checkout(pool.get(), |e| e).await?;
            if !connection.client.is_closed() || attempts == 0 {
                return Ok(connection);
            }
            connection.broken = true;
            attempts -= 1;
        }
    }

    async fn checkout<C, E>(
        &self,
        get: impl Future<Output = std::result::Result<C, bb8::RunError<E>>>,
        error: fn(E) -> Error,
    ) -> Result<C> {
        cache_core::pool::checkout(
            get,
            &self.failures,
            self.pool_wait,
            "postgres",
            "Caches.Connectors.Postgres.PoolTimeout",
            error,
        )
        .await
    }
}

/// Runs `script` (`BEGIN; ...; COMMIT;`); when it fails, rolls the transaction back, so the
/// connection goes back to its pool usable (a failed statement skips the rest of a script,
/// its COMMIT too, and would leave the session in an aborted transaction).
async fn in_transaction(
    client: &Client,
    script: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    let result = client.batch_execute(script).await;
    if result.is_err() {
        // Outside a transaction (it failed before BEGIN) this is only a warning.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// Runs `op` again when it lost a deadlock or serialisation conflict (a concurrent writer of
/// the same rows): the whole statement was rolled back, so running it again is safe.
async fn retry_conflicts<T, F, Fut>(mut op: F) -> std::result::Result<T, tokio_postgres::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e)
                if attempt < CONFLICT_ATTEMPTS
                    && matches!(
                        e.code(),
                        Some(&SqlState::T_R_DEADLOCK_DETECTED)
                            | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                    ) =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn timed_out() -> Error {
    Error::timeout("postgres: no answer within Caches.Connectors.Postgres.StatementTimeout")
}

/// A PostgreSQL error as a cache error: unreachable and shutting-down servers are
/// `Unavailable`, cancelled statements `Timeout`, missing tables a `Backend` error that says
/// to run the setup step, errors the request's own data caused (SQLSTATE classes 22 data
/// exception, 23 integrity constraint, 54 program limit) `Rejected` — never counted as a
/// backend failure — and anything else the server says `Backend`.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: connecting failed, the connection broke, or I/O.
        return Error::unavailable(format!("postgres: {e}")).with_source(e);
    };
    let code = db.code();
    let error = match classify(code) {
        Class::Timeout => Error::timeout(format!(
            "postgres: statement cancelled ({}); raise Caches.Connectors.Postgres.StatementTimeout \
             if the database is just slow",
            db.message()
        )),
        Class::NoTables => Error::backend(format!(
            "postgres: the cache tables are missing ({}); run the setup step once: \
             PostgresConnector::setup, Caches::setup, or `cargo xtask pg-setup <url>`",
            db.message()
        )),
        Class::Unavailable => Error::unavailable(format!("postgres: {}", db.message())),
        Class::Rejected => Error::rejected(format!(
            "postgres refused the request's data: {} ({})",
            db.message(),
            code.code()
        )),
        Class::Backend => Error::backend(format!("postgres: {} ({})", db.message(), code.code())),
    };
    error.with_source(e)
}

/// A failed connection attempt, with why: the server's message (a refused login, a missing
/// database) or the whole chain of causes (tokio-postgres shows only what failed, e.g. `error
/// performing TLS handshake`, and keeps why — the certificate's fault — as its source).
fn connect_error(e: tokio_postgres::Error) -> Error {
    let why = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => cache_core::causes(&e),
    };
    if why.contains("TLS handshake") {
        return Error::unavailable(format!(
            "{why}; check Caches.Connectors.Postgres.SSLMode and TLS.CAFile (the CA that \
             signed the server's certificate), TLS.CertFile and TLS.KeyFile"
        ));
    }
    Error::unavailable(why)
}

/// What a SQLSTATE says about the server and the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// The statement ran out of time.
    Timeout,
    /// The schema is not set up.
    NoTables,
    /// The server is unreachable, shutting down, overloaded or refuses our credentials.
    Unavailable,
    /// The request's own data: healthy server, wrong request.
    Rejected,
    /// Any other server error.
    Backend,
}

fn classify(code: &SqlState) -> Class {
    if *code == SqlState::QUERY_CANCELED {
        return Class::Timeout;
    }
    if [
        SqlState::UNDEFINED_TABLE,
        SqlState::INVALID_SCHEMA_NAME,
        SqlState::UNDEFINED_FUNCTION,
    ]
    .contains(code)
    {
        return Class::NoTables;
    }
    match &code.code()[..2] {
        // Data exception, integrity constraint violation, program limit exceeded (a row or
        // value larger than the server accepts).
        "22" | "23" | "54" => Class::Rejected,
        // Connection exception, insufficient resources, operator intervention (shutdown,
        // restart), invalid authorization, missing database.
        "08" | "53" | "57" | "28" | "3D" => Class::Unavailable,
        _ => Class::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_errors_are_rejections_and_server_trouble_is_not() {
        for (code, class) in [
            (SqlState::CHARACTER_NOT_IN_REPERTOIRE, Class::Rejected), // 22021: NUL in text
            (SqlState::PROGRAM_LIMIT_EXCEEDED, Class::Rejected),      // 54000: btree row size
            (SqlState::CHECK_VIOLATION, Class::Rejected),
            (SqlState::STRING_DATA_RIGHT_TRUNCATION, Class::Rejected),
            (SqlState::QUERY_CANCELED, Class::Timeout),
            (SqlState::UNDEFINED_TABLE, Class::NoTables),
            (SqlState::ADMIN_SHUTDOWN, Class::Unavailable),
            (SqlState::TOO_MANY_CONNECTIONS, Class::Unavailable),
            (SqlState::CONNECTION_FAILURE, Class::Unavailable),
            (SqlState::INVALID_PASSWORD, Class::Unavailable),
            (SqlState::T_R_DEADLOCK_DETECTED, Class::Backend),
            (SqlState::READ_ONLY_SQL_TRANSACTION, Class::Backend),
            (SqlState::INTERNAL_ERROR, Class::Backend),
        ] {
            assert_eq!(classify(&code), class, "{}", code.code());
        }
    }
}

/// A connection of our pool: the client, its prepared statements, and whether it must go.
pub(crate) struct Connection {
    client: Client,
    prepared: [Option<Statement>; Stmt::ALL.len()],
    broken: bool,
}

impl Connection {
    /// `stmt` prepared on this connection, preparing it the first time.
    async fn prepared(
        &mut self,
        stmt: Stmt,
        statements: &Statements,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = &self.prepared[stmt.position()] {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .prepare_typed(statements.sql(stmt), stmt.types())
            .await?;
        self.prepared[stmt.position()] = Some(statement.clone());
        Ok(statement)
    }
}

/// Makes connections with bb8-postgres and retires closed or timed-out ones without a round
/// trip (a checkout costs no query; see [`Db::own_connection`]).
#[derive(Debug)]
pub(crate) struct Manager(PostgresConnectionManager<MakeTls>);

impl Manager {
    pub(crate) fn new(config: tokio_postgres::Config, tls: MakeTls) -> Self {
        Manager(PostgresConnectionManager::new(config, tls))
    }
}

impl ManageConnection for Manager {
    type Connection = Connection;
    type Error = Error;

    async fn connect(&self) -> Result<Connection> {
        let client = self.0.connect().await.map_err(connect_error)?;
        Ok(Connection {
            client,
            prepared: Default::default(),
            broken: false,
        })
    }

    async fn is_valid(&self, connection: &mut Connection) -> Result<()> {
        // Only used if `test_on_check_out` is on; `Db::own_connection` checks for free.
        connection
            .client
            .simple_query("")
            .await
            .map(drop)
            .map_err(pg_error)
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        connection.broken || connection.client.is_closed()
    }
}
