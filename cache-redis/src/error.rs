//! The one place where redis-rs errors become cache errors.

use cache_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Error codes of a server that is unhealthy, overloaded or misconfigured rather than of a
/// wrong request: counted as backend failures.
const SERVER_TROUBLE: &[&str] = &[
    "OOM",
    "MISCONF",
    "BUSY",
    "NOAUTH",
    "WRONGPASS",
    "NOREPLICAS",
    "MASTERDOWN",
    "LOADING",
    "UNBLOCKED",
];

/// A redis-rs error as a cache error: unreachable servers and broken connections are
/// `Unavailable`, timeouts `Timeout`, a server that is loading, failing over, out of memory
/// or refusing our credentials `Backend` (all temporary: the breaker counts them); an error
/// of the command itself — a script error, a wrong type, an unexpected reply, which is what
/// stored garbage or a request the server refuses cause — is `Rejected`, never a failure.
pub(crate) fn redis_error(e: RedisError) -> Error {
    let message = format!("redis: {e}");
    let error = if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        Error::unavailable(message)
    } else if e.is_timeout() {
        Error::timeout(message)
    } else if is_rejection(&e) {
        Error::rejected(message)
    } else {
        Error::backend(message)
    };
    error.with_source(e)
}

/// Whether the server answered this command with an error of the command itself.
fn is_rejection(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError | ServerErrorKind::ExecAbort)
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::Parse => true,
        ErrorKind::Extension => !e.code().is_some_and(|code| SERVER_TROUBLE.contains(&code)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> RedisError {
        redis::make_extension_error(code.to_owned(), Some("detail".to_owned()))
    }

    #[test]
    fn command_errors_are_rejections_and_server_trouble_is_a_failure() {
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "user_script:1: bad argument".to_owned(),
        ));
        assert!(!redis_error(script).is_temporary());
        assert!(!redis_error(server("WRONGTYPE")).is_temporary());
        assert_eq!(
            redis_error(server("WRONGTYPE")).kind(),
            cache_core::ErrorKind::Rejected
        );
        for trouble in ["OOM", "MISCONF", "BUSY", "NOAUTH", "MASTERDOWN"] {
            assert!(redis_error(server(trouble)).is_temporary(), "{trouble}");
        }
        for kind in [
            ServerErrorKind::BusyLoading,
            ServerErrorKind::TryAgain,
            ServerErrorKind::ClusterDown,
            ServerErrorKind::MasterDown,
            ServerErrorKind::ReadOnly,
            ServerErrorKind::NoScript,
        ] {
            let e = RedisError::from((ErrorKind::Server(kind), "x"));
            assert!(redis_error(e).is_temporary(), "{kind:?}");
        }
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(redis_error(io).kind(), cache_core::ErrorKind::Unavailable);
    }
}
