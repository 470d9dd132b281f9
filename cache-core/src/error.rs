//! The one error type of every connector and decorator.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend could not be reached: connection refused or reset, pool exhausted, I/O error.
    Unavailable,
    /// The backend did not answer within the configured timeout.
    Timeout,
    /// The backend answered with an error of its own (a server error).
    Backend,
    /// A value could not be encoded, or a stored value could not be decoded.
    Codec,
    /// The backend refused the request's own data (a value larger than it accepts, a
    /// constraint it enforces, a stored entry of an unexpected shape): retrying the same
    /// request will not help, and the backend itself is healthy.
    Rejected,
    /// The operation named an index the object cache was not built with: a programming error.
    UnknownIndex,
    /// The circuit breaker is open: the backend is considered down and was not called.
    BreakerOpen,
    /// The configuration is invalid.
    Config,
}

impl ErrorKind {
    /// Whether errors of this kind are usually temporary (see [`Error::is_temporary`]).
    pub fn is_temporary_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Backend
                | ErrorKind::BreakerOpen
        )
    }

    /// A short snake_case name for metric labels and log fields: `unavailable`, `timeout`,
    /// `backend`, `codec`, `rejected`, `unknown_index`, `breaker_open`, `config`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Backend => "backend",
            ErrorKind::Codec => "codec",
            ErrorKind::Rejected => "rejected",
            ErrorKind::UnknownIndex => "unknown_index",
            ErrorKind::BreakerOpen => "breaker_open",
            ErrorKind::Config => "config",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "cache backend unavailable",
            ErrorKind::Timeout => "cache backend timed out",
            ErrorKind::Backend => "cache backend error",
            ErrorKind::Codec => "cache value codec error",
            ErrorKind::Rejected => "cache backend refused the request",
            ErrorKind::UnknownIndex => "unknown cache index",
            ErrorKind::BreakerOpen => "cache circuit breaker open",
            ErrorKind::Config => "invalid cache configuration",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// An error of a cache operation.
///
/// It carries a [`kind`](Error::kind), a message that says what to do next, an optional
/// source, and whether it is **temporary**: a temporary error says the backend itself is
/// unhealthy (the circuit breaker counts it as a failure); a permanent one says the request
/// was wrong (an unknown index, an undecodable value) and retrying it will not help.
///
/// One pointer wide (the details are boxed), so a `Result` of a hit stays two words and a
/// cache's hot path never moves an error's worth of bytes.
pub struct Error(Box<Details>);

struct Details {
    kind: ErrorKind,
    temporary: bool,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    event: Option<FailureEvent>,
}

/// One cause of failures: errors that carry the same event failed together for one reason —
/// the commands in flight on a connection that was lost (a restart, `CLIENT KILL`,
/// `pg_terminate_backend`, a proxy's idle timeout, a failover) — and the circuit breaker counts
/// them as one failure, not one per command.
///
/// A connector asks its [`Losses`] for the event of a connection it finds lost and attaches it
/// ([`Error::with_event`]) to the errors that say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FailureEvent(u64);

impl FailureEvent {
    /// A new event, distinct from every other one made in this process.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        FailureEvent(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for FailureEvent {
    fn default() -> Self {
        Self::new()
    }
}

/// The failure events of one connector's lost connections: the connections found lost within
/// [`Losses::WINDOW`] of the first of them are one event. A server restart, a failover, a
/// proxy's idle timeout or an administrator's `CLIENT KILL` / `pg_terminate_backend` drop
/// many connections at once, and every call in flight on any of them fails; that is one
/// cause, not one failure per call or per connection. A server that refuses new connections
/// or does not answer fails calls with errors of no event, each counted.
#[derive(Debug, Default)]
pub struct Losses {
    /// When the current event began, and the event.
    current: Mutex<Option<(Instant, FailureEvent)>>,
}

impl Losses {
    /// How long after a first loss further losses belong to its event.
    pub const WINDOW: Duration = Duration::from_secs(1);

    /// No loss yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event of a connection found lost now.
    pub fn event(&self) -> FailureEvent {
        self.event_at(Instant::now())
    }

    fn event_at(&self, now: Instant) -> FailureEvent {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match *current {
            Some((began, event)) if now.saturating_duration_since(began) < Self::WINDOW => event,
            _ => {
                let event = FailureEvent::new();
                *current = Some((now, event));
                event
            }
        }
    }
}

/// The result of a cache operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind`; temporary when the kind usually is.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Details {
            kind,
            temporary: kind.is_temporary_by_default(),
            message: message.into(),
            source: None,
            event: None,
        }))
    }

    /// The backend could not be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// The backend did not answer in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// The backend answered with an error.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, message)
    }

    /// The backend refused the request's own data (never counted as a backend failure).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Rejected, message)
    }

    /// A value could not be encoded or decoded.
    pub fn codec(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Codec, message)
    }

    /// The configuration is invalid.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// `index` is not one of the indices the object cache `purpose` was built with.
    pub fn unknown_index(purpose: &str, index: impl fmt::Debug) -> Self {
        Self::new(
            ErrorKind::UnknownIndex,
            format!(
                "index {index:?} is not an index of the {purpose:?} cache; \
                 pass it in the index list when the cache is built"
            ),
        )
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.0.source = Some(Box::new(source));
        self
    }

    /// Marks this error as one of the failures of `event` (see [`FailureEvent`]).
    pub fn with_event(mut self, event: FailureEvent) -> Self {
        self.0.event = Some(event);
        self
    }

    /// The failure event this error belongs to, if its connector knows one.
    pub fn event(&self) -> Option<FailureEvent> {
        self.0.event
    }

    /// Overrides whether this error is temporary.
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.0.temporary = temporary;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Whether the backend is unhealthy (counted as a failure by the circuit breaker), as
    /// opposed to a request that was wrong in itself.
    pub fn is_temporary(&self) -> bool {
        self.0.temporary
    }

    /// The message, without the kind and the source.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The message and its causes (see [`causes`]), without the kind.
    pub fn explanation(&self) -> String {
        match &self.0.source {
            Some(source) => format!("{}: {}", self.0.message, causes(source.as_ref())),
            None => self.0.message.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.kind, self.explanation())
    }
}

/// `error` and every error beneath it (its [`source`](StdError::source) chain) as one line,
/// `a: b: c`, leaving out a cause whose text its parent already shows. Drivers often print only
/// what failed (`error performing TLS handshake`) and keep why in the chain
/// (`invalid peer certificate: UnknownIssuer`): this shows both.
pub fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind)
            .field("temporary", &self.0.temporary)
            .field("message", &self.0.message);
        if let Some(source) = &self.0.source {
            d.field("source", source);
        }
        if let Some(event) = &self.0.event {
            d.field("event", event);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_within_the_window_of_the_first_are_one_event() {
        let losses = Losses::new();
        let start = Instant::now();
        let first = losses.event_at(start);
        assert_eq!(losses.event_at(start + Duration::from_millis(10)), first);
        assert_eq!(
            losses.event_at(start + Losses::WINDOW - Duration::from_millis(1)),
            first
        );
        let next = losses.event_at(start + Losses::WINDOW);
        assert_ne!(next, first, "a loss after the window is a new event");
        assert_eq!(losses.event_at(start + Losses::WINDOW * 3 / 2), next);
        assert_ne!(
            Losses::new().event(),
            next,
            "connectors' events are distinct"
        );
    }

    #[test]
    fn a_result_of_a_hit_is_two_words() {
        use std::mem::size_of;
        assert_eq!(size_of::<Error>(), size_of::<usize>());
        assert_eq!(
            size_of::<Result<Option<std::sync::Arc<String>>>>(),
            2 * size_of::<usize>()
        );
    }

    #[test]
    fn display_shows_every_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error performing TLS handshake")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let e = Error::unavailable("postgres").with_source(Outer(inner));
        assert_eq!(
            e.to_string(),
            "cache backend unavailable: postgres: error performing TLS handshake: invalid peer \
             certificate: UnknownIssuer"
        );
        let repeated = Error::unavailable("redis").with_source(std::io::Error::other("refused"));
        assert_eq!(
            causes(&repeated),
            "cache backend unavailable: redis: refused",
            "the source is shown by the error itself and not again"
        );
    }

    #[test]
    fn temporary_flag_follows_kind_unless_overridden() {
        assert!(Error::timeout("x").is_temporary());
        assert!(Error::unavailable("x").is_temporary());
        assert!(!Error::codec("x").is_temporary());
        assert!(!Error::rejected("x").is_temporary());
        assert!(!Error::unknown_index("p", 3).is_temporary());
        assert!(!Error::backend("x").set_temporary(false).is_temporary());
    }

    #[test]
    fn display_names_kind_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::unavailable("connecting to redis at 127.0.0.1:1").with_source(io);
        assert_eq!(
            e.to_string(),
            "cache backend unavailable: connecting to redis at 127.0.0.1:1: refused"
        );
        assert!(e.source().is_some());
    }
}
