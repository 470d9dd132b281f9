//! Settings shared by every connector and object cache, as plain, deserializable types.
//!
//! Field names here are the **lower-cased** configuration keys (`maxage`, `lastusage`): the
//! configuration loader folds every key to lower case before deserializing, which is how
//! `MaxAge`, `maxAge` and `MAXAGE` all reach the same field.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Expiry;

/// The settings of one object cache (`Caches.Instance`, `Caches.Organization`, ...).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Name of the connector that stores this cache (`memory`, `postgres`, `redis`),
    /// case-insensitive. Empty (the default): no caching, every get misses.
    #[serde(rename = "connector", with = "text")]
    pub connector: String,
    /// How long an object stays cached after it was set. Zero: no limit. Default `1h`.
    #[serde(rename = "maxage", with = "duration")]
    pub max_age: Duration,
    /// How long an object stays cached without being read. Zero: no limit. Default `10m`.
    /// `LastUseAge` is accepted as another name.
    #[serde(rename = "lastusage", alias = "lastuseage", with = "duration")]
    pub last_usage: Duration,
    /// How long past its MaxAge (or LastUsage) an object is kept to answer a read-through
    /// whose load fails (stale-if-error, see `ObjectCache::get_or_load`); a plain get never
    /// returns it, and an invalidated object is never kept. Zero (the default): off.
    #[serde(rename = "maxstale", with = "duration")]
    pub max_stale: Duration,
    /// Refresh-ahead: a read-through hit on an object older than this fraction of MaxAge
    /// reloads it in the background (one load at a time), so a popular object does not miss
    /// once per MaxAge. 0 (the default) is off; e.g. 0.8 reloads in the last fifth of MaxAge.
    #[serde(rename = "refreshahead")]
    pub refresh_ahead: f64,
    /// Logging of this cache's events. Default: errors only.
    #[serde(rename = "log")]
    pub log: LogSettings,
    /// A memory level in each process in front of a shared connector (`redis`, `postgres`),
    /// kept consistent across processes over [`channel`](Self::channel). Default: off.
    #[serde(rename = "near")]
    pub near: NearSettings,
    /// The connector whose channel carries this cache's changes between processes (`redis`,
    /// `postgres`), case-insensitive. Empty (the default): the cache's own connector when
    /// [`near`](Self::near) is enabled, none otherwise. With `Connector: memory` it keeps the
    /// memory caches of several processes consistent.
    #[serde(rename = "channel", with = "text")]
    pub channel: String,
    /// Leases of a shared connector (`redis`, `postgres`) for read-throughs: across processes,
    /// one load per miss of a key, and no fill that a change overtook. Default: on, 5 s.
    #[serde(rename = "lease")]
    pub lease: LeaseSettings,
}

/// The leases of an object cache (`Caches.<Purpose>.Lease`), see
/// [`ObjectCache::get_or_load`](crate::ObjectCache::get_or_load).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseSettings {
    /// Whether a read-through miss takes a lease on the key. Default `true`; only shared
    /// connectors keep leases.
    #[serde(rename = "enabled")]
    pub enabled: bool,
    /// How long a lease holds: the longest the other processes wait for its fill before one
    /// of them takes it over — make it a little longer than a load takes. Default `5s`.
    #[serde(rename = "time", with = "duration")]
    pub time: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            enabled: true,
            time: Duration::from_secs(5),
        }
    }
}

impl LeaseSettings {
    /// The lease time, or zero when leases are off.
    pub fn effective(&self) -> Duration {
        if self.enabled {
            self.time
        } else {
            Duration::ZERO
        }
    }
}

/// The near cache of an object cache (`Caches.<Purpose>.Near`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NearSettings {
    /// Whether the object cache keeps a memory level in front of its connector. Default
    /// `false`.
    #[serde(rename = "enabled")]
    pub enabled: bool,
    /// The most keys the memory level holds per process (an object counts once per key).
    /// Default 10 000; at least 1.
    #[serde(rename = "capacity")]
    pub capacity: u64,
}

impl Default for NearSettings {
    fn default() -> Self {
        NearSettings {
            enabled: false,
            capacity: 10_000,
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            connector: String::new(),
            max_age: Duration::from_secs(3600),
            last_usage: Duration::from_secs(600),
            max_stale: Duration::ZERO,
            refresh_ahead: 0.0,
            log: LogSettings::default(),
            near: NearSettings::default(),
            channel: String::new(),
            lease: LeaseSettings::default(),
        }
    }
}

impl CacheSettings {
    /// The expiry rules of these settings.
    pub fn expiry(&self) -> Expiry {
        Expiry {
            max_age: self.max_age,
            last_usage: self.last_usage,
        }
    }

    /// How long objects are kept: the expiry rules stretched by [`max_stale`](Self::max_stale)
    /// (what stale-if-error may still answer with).
    pub fn kept(&self) -> Expiry {
        let stretch = |d: Duration| {
            if d.is_zero() {
                d
            } else {
                d.saturating_add(self.max_stale)
            }
        };
        Expiry {
            max_age: stretch(self.max_age),
            last_usage: stretch(self.last_usage),
        }
    }

    /// The read-through settings of [`ObjectCache`](crate::ObjectCache).
    pub fn read_through(&self) -> ReadThrough {
        ReadThrough {
            max_age: self.max_age,
            max_stale: self.max_stale,
            refresh_ahead: self.refresh_ahead,
        }
    }

    /// Checks the values serde cannot: the offending key below the object cache and what
    /// is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..1.0).contains(&self.refresh_ahead) {
            return Err((
                "RefreshAhead",
                format!(
                    "{} is outside 0..1: write the fraction of MaxAge after which a hit reloads \
                     the object, e.g. 0.8, or 0 to disable refresh-ahead",
                    self.refresh_ahead
                ),
            ));
        }
        if self.lease.enabled && self.lease.time < Duration::from_millis(10) {
            return Err((
                "Lease.Time",
                format!(
                    "{} is too short for a load: write how long a load may take at most, e.g. \
                     5s, or Lease: {{ Enabled: false }}",
                    duration::format(self.lease.time)
                ),
            ));
        }
        if self.refresh_ahead > 0.0 && self.max_age.is_zero() {
            return Err((
                "RefreshAhead",
                "refreshes ahead of MaxAge, which is 0 (no limit): set a MaxAge, or \
                 RefreshAhead: 0"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The connector name, lower-cased; empty means no caching.
    pub fn connector_name(&self) -> String {
        self.connector.trim().to_ascii_lowercase()
    }

    /// The connector whose channel carries this cache's changes, lower-cased: `Channel`, or
    /// the cache's connector when the near cache is enabled; empty: none.
    pub fn channel_name(&self) -> String {
        let channel = self.channel.trim().to_ascii_lowercase();
        if channel.is_empty() && self.near.enabled {
            self.connector_name()
        } else {
            channel
        }
    }
}

/// What [`ObjectCache::get_or_load`](crate::ObjectCache::get_or_load) needs of the settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReadThrough {
    /// MaxAge (refresh-ahead counts from it).
    pub max_age: Duration,
    /// MaxStale: 0 turns stale-if-error off.
    pub max_stale: Duration,
    /// RefreshAhead: 0 turns it off.
    pub refresh_ahead: f64,
}

impl ReadThrough {
    /// Whether a hit of an object `age` old should be refreshed in the background.
    pub fn wants_refresh(&self, age: Duration) -> bool {
        self.refresh_ahead > 0.0
            && !self.max_age.is_zero()
            && age.as_secs_f64() >= self.max_age.as_secs_f64() * self.refresh_ahead
    }
}

/// How one object cache logs (`Caches.<Purpose>.Log`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Lowest level logged. Default `error`.
    #[serde(rename = "level")]
    pub level: LogLevel,
    /// Add the source file and line to each event. Default `false`.
    #[serde(rename = "addsource")]
    pub add_source: bool,
    /// How events are written.
    #[serde(rename = "formatter")]
    pub formatter: LogFormatter,
}

/// A log level of [`LogSettings`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including each cache operation's outcome.
    Debug,
    /// Lifecycle events.
    Info,
    /// Degradations: breaker state changes, undecodable values.
    Warn,
    /// Failures only (the default).
    #[default]
    Error,
}

/// The formatter block of [`LogSettings`].
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFormatter {
    /// `text` (the default) or `json`.
    #[serde(rename = "format")]
    pub format: LogFormat,
}

/// An output format of [`LogFormatter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// Background pruning of a connector (`AutoPrune`), see the `cache-pruner` crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoPrune {
    /// Time between the end of one run and the start of the next. Zero disables pruning.
    #[serde(rename = "interval", with = "duration")]
    pub interval: Duration,
    /// Longest a single run may take before it is abandoned. Zero: no limit.
    /// `TimeOut` is accepted as another spelling.
    #[serde(rename = "timeout", with = "duration")]
    pub timeout: Duration,
}

impl AutoPrune {
    /// Pruning every `interval`, each run bounded by `timeout`.
    pub const fn new(interval: Duration, timeout: Duration) -> Self {
        AutoPrune { interval, timeout }
    }
}

/// The circuit breaker of a remote connector (`Caches.Connectors.<Redis|Postgres>.CircuitBreaker`),
/// see the `cache-breaker` crate. Key names follow the reference; `MinRequests` is ours.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// How often the failure counters are cleared while the breaker is closed. Zero (the
    /// default): never.
    #[serde(rename = "interval", with = "duration")]
    pub interval: Duration,
    /// The breaker opens when consecutive failures **exceed** this. Zero disables the rule.
    /// Default 5.
    #[serde(rename = "maxconsecutivefailures")]
    pub max_consecutive_failures: u32,
    /// The breaker opens when failures per request **exceed** this ratio (0..=1), once at
    /// least [`min_requests`](Self::min_requests) were counted. Zero disables the rule.
    /// Default 0.1.
    #[serde(rename = "maxfailureratio")]
    pub max_failure_ratio: f64,
    /// How long the breaker stays open before it lets trial requests through. Default `60s`.
    #[serde(rename = "timeout", with = "duration")]
    pub timeout: Duration,
    /// Trial requests let through while half-open; that many consecutive successes close
    /// the breaker. Default 1.
    #[serde(rename = "maxretryrequests")]
    pub max_retry_requests: u32,
    /// Requests counted (since the last reset) before the ratio rule may trip, so a single
    /// failure right after startup does not switch the cache off. Default 20.
    #[serde(rename = "minrequests")]
    pub min_requests: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            interval: Duration::ZERO,
            max_consecutive_failures: 5,
            max_failure_ratio: 0.1,
            timeout: Duration::from_secs(60),
            max_retry_requests: 1,
            min_requests: 20,
        }
    }
}

impl BreakerSettings {
    /// Checks the values serde cannot: returns the offending key below the connector (e.g.
    /// `CircuitBreaker.MaxFailureRatio`) and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.max_failure_ratio) || self.max_failure_ratio.is_nan() {
            return Err((
                "CircuitBreaker.MaxFailureRatio",
                format!(
                    "{} is outside 0..1; write e.g. 0.1 for 10 %, or 0 to disable the rule",
                    self.max_failure_ratio
                ),
            ));
        }
        if self.max_retry_requests == 0 {
            return Err((
                "CircuitBreaker.MaxRetryRequests",
                "0 would keep the breaker half-open forever; write 1 or more".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The certificate files of TLS to a server (`Caches.Connectors.<Redis|Postgres>.TLS`).
/// Whether TLS is used at all is the connector's own setting (`EnableTLS` or a `rediss://`
/// URL for Redis, `SSLMode` for PostgreSQL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the certificate authorities to trust instead of the system's roots.
    /// Empty (the default): the system's roots.
    #[serde(rename = "cafile", with = "text")]
    pub ca_file: String,
    /// PEM file of the client certificate, for servers that require one (mutual TLS).
    /// Empty (the default): none.
    #[serde(rename = "certfile", with = "text")]
    pub cert_file: String,
    /// PEM file of the client certificate's private key.
    #[serde(rename = "keyfile", with = "text")]
    pub key_file: String,
    /// Development only: accept any server certificate, unverified (logged at warn whenever
    /// a connector starts with it). Default `false`.
    #[serde(rename = "insecureskipverify")]
    pub insecure_skip_verify: bool,
}

/// The contents of the files of [`TlsFiles`].
#[derive(Clone, Default)]
pub struct TlsPem {
    /// The CA certificates (PEM), when a file was given.
    pub ca: Option<Vec<u8>>,
    /// The client certificate and its key (PEM), when given.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPem")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field(
                "client",
                &self.client.as_ref().map(|_| "certificate and key"),
            )
            .finish()
    }
}

impl TlsFiles {
    /// Reads the files. On error, the offending key (below the connector, e.g. `TLS.CAFile`)
    /// and what is wrong — a missing or unreadable file, a certificate without its key.
    pub fn read(&self) -> Result<TlsPem, (&'static str, String)> {
        let read =
            |key: &'static str, path: &str| -> Result<Option<Vec<u8>>, (&'static str, String)> {
                if path.is_empty() {
                    return Ok(None);
                }
                std::fs::read(path).map(Some).map_err(|e| {
                    (
                        key,
                        format!("cannot read {path:?}: {e}; write the path of a PEM file"),
                    )
                })
            };
        let ca = read("TLS.CAFile", &self.ca_file)?;
        let cert = read("TLS.CertFile", &self.cert_file)?;
        let key = read("TLS.KeyFile", &self.key_file)?;
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err((
                    "TLS.KeyFile",
                    "is empty, but TLS.CertFile is set: a client certificate needs its key"
                        .to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "TLS.CertFile",
                    "is empty, but TLS.KeyFile is set: write the client certificate's file"
                        .to_owned(),
                ));
            }
        };
        Ok(TlsPem { ca, client })
    }

    /// Logs at warn, once per connector start, that `InsecureSkipVerify` is on (when it is):
    /// `server` names what goes unverified (`Redis`, `PostgreSQL`).
    pub fn warn_if_insecure(&self, connector: &'static str, server: &str) {
        if self.insecure_skip_verify {
            tracing::warn!(
                connector,
                "TLS.InsecureSkipVerify is on: the server's certificate is NOT verified, anyone \
                 between this service and {server} can read and change its traffic; never use \
                 it outside development"
            );
        }
    }

    /// Whether any file is named.
    pub fn names_files(&self) -> bool {
        !(self.ca_file.is_empty() && self.cert_file.is_empty() && self.key_file.is_empty())
    }
}

/// A connection URL (or libpq connection string) with its secrets replaced by `***`, for
/// `Debug`, logs and errors: `scheme://user:secret@host` → `scheme://user:***@host`,
/// `scheme://token@host` → `scheme://***@host`, and the value of every `password=` or
/// `sslpassword=` setting, in a query string or a `key=value` connection string.
///
/// ```
/// use cache_core::settings::redact_url;
/// assert_eq!(redact_url("redis://app:s3cret@cache:6379/2"), "redis://app:***@cache:6379/2");
/// assert_eq!(redact_url("postgres://cache@db/app"), "postgres://***@db/app");
/// assert_eq!(redact_url("redis://localhost:6379"), "redis://localhost:6379");
/// assert_eq!(
///     redact_url("postgres://db/app?sslmode=require&password=s3cret&user=app"),
///     "postgres://db/app?sslmode=require&password=***&user=app"
/// );
/// assert_eq!(
///     redact_url("host=db user=app password='s3 cr\\'et' sslpassword=k3y dbname=app"),
///     "host=db user=app password=*** sslpassword=*** dbname=app"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    redact_password_settings(&redact_user_info(url))
}

/// `scheme://user:password@host...` with the password (or a lone user info) hidden.
fn redact_user_info(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// Hides the value of every `password=` / `sslpassword=` setting, in a query string
/// (`?password=...&...`) or a libpq connection string (`host=db password='...'`).
fn redact_password_settings(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let at = from + found;
        let value = at + KEY.len();
        from = value;
        // The setting's name starts after a separator; it is `password` or `sslpassword`.
        let name_start = lower[..at]
            .rfind(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(0, |i| i + 1);
        let name = &lower[name_start..at];
        if !(name.is_empty() || name == "ssl") {
            continue;
        }
        let rest = &text[value..];
        let end = if rest.starts_with('\'') {
            // A quoted libpq value: up to the closing quote, `\'` and `\\` escaped.
            let mut i = 1;
            while i < rest.len() {
                match rest.as_bytes()[i] {
                    b'\\' => i += 2,
                    b'\'' => {
                        i += 1;
                        break;
                    }
                    _ => i += 1,
                }
            }
            i.min(rest.len())
        } else {
            rest.find(|c: char| c == '&' || c == '#' || c.is_whitespace())
                .unwrap_or(rest.len())
        };
        out.push_str(&text[done..value]);
        out.push_str("***");
        done = value + end;
        from = done.max(from);
    }
    out.push_str(&text[done..]);
    out
}

/// Serde support for durations written as `1h`, `10m`, `60s`, `500ms`, `1h30m`, or a bare `0`.
///
/// Use with `#[serde(with = "cache_core::settings::duration")]`. A bare non-zero number is
/// rejected (its unit would be a guess), as is a negative duration.
pub mod duration {
    use super::*;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Parses a duration the way configuration files write it.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text.starts_with('-') {
            return Err(format!(
                "{text:?} is negative; durations must be 0 or positive"
            ));
        }
        if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
            return match text.parse::<u64>() {
                Ok(0) => Ok(Duration::ZERO),
                _ => Err(format!(
                    "{text:?} has no unit; write it with one, e.g. \"{text}s\" or \"{text}ms\""
                )),
            };
        }
        humantime::parse_duration(text).map_err(|e| {
            format!(
                "{text:?} is not a duration ({e}); write e.g. \"1h30m\", \"10m\", \"500ms\" or 0"
            )
        })
    }

    /// Writes a duration the way [`parse`] reads it.
    pub fn format(d: Duration) -> String {
        if d.is_zero() {
            "0".to_owned()
        } else {
            humantime::format_duration(d).to_string().replace(' ', "")
        }
    }

    /// Deserializes a duration (see the [module](self) docs).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    /// Serializes a duration as a string [`parse`] reads back.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*d))
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"1h30m\", \"10m\", \"500ms\" or 0")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            parse(&v.to_string()).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            parse(&v.to_string()).map_err(E::custom)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            if v == 0.0 {
                Ok(Duration::ZERO)
            } else {
                parse(&v.to_string()).map_err(E::custom)
            }
        }
    }
}

/// Serde support for the durations of settings kept from go-redis, whose documentation gives
/// negative values a meaning (`-1`: no limit, or the check switched off; `-2`: no deadline
/// set): like [`duration`], but any negative value reads as 0 — what the field documents 0 to
/// mean. The reference's files write e.g. `ConnMaxLifetime: -1`, and load unchanged.
///
/// Use with `#[serde(with = "cache_core::settings::duration_or_off")]`; only on fields whose
/// 0 means "off", never on MaxAge-like settings (a negative one stays an error there).
pub mod duration_or_off {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Deserializes a duration, a negative one as 0.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        // Numbers as text, so `-1` and `"-1"` read alike.
        let text = super::text::deserialize(deserializer)?;
        let text = text.trim();
        match text.strip_prefix('-') {
            Some(number) if number.starts_with(|c: char| c.is_ascii_digit()) => Ok(Duration::ZERO),
            Some(_) => Err(serde::de::Error::custom(format!(
                "{text:?} is not a duration; write e.g. \"10m\", 0, or -1 (off)"
            ))),
            None => super::duration::parse(text).map_err(serde::de::Error::custom),
        }
    }

    /// Serializes like [`duration`].
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        super::duration::serialize(d, serializer)
    }
}

/// Serde support for sizes in bytes, as configuration files write them: a number of bytes
/// (`16777216`) or a number with a unit — `B`, `KiB`, `MiB`, `GiB` (powers of 1024) or `kB`,
/// `MB`, `GB` (powers of 1000), case-insensitive, e.g. `16MiB`, `512 KiB`, `64MB`.
///
/// Use with `#[serde(with = "cache_core::settings::byte_size")]`.
pub mod byte_size {
    use serde::{Deserializer, Serializer};

    /// Parses a size.
    ///
    /// ```
    /// use cache_core::settings::byte_size::parse;
    ///
    /// assert_eq!(parse("16MiB"), Ok(16 << 20));
    /// assert_eq!(parse("64 mb"), Ok(64_000_000));
    /// assert_eq!(parse("1024"), Ok(1024));
    /// assert!(parse("-1").is_err() && parse("12 parsecs").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => {
                return Err(format!(
                    "{text:?} is not a size; write a number of bytes or one with a unit, e.g. \
                     \"16MiB\", \"512KiB\" or 1048576"
                ));
            }
        };
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a size; write a number of bytes or one with a unit, e.g. \
                     \"16MiB\", \"512KiB\" or 1048576"
                )
            })
    }

    /// Writes a size the way [`parse`] reads it (the largest binary unit that divides it).
    pub fn format(bytes: u64) -> String {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if bytes >= size && bytes % size == 0 {
                return format!("{}{unit}", bytes / size);
            }
        }
        bytes.to_string()
    }

    /// Deserializes a size (a number, or text with a unit).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = super::text::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// Serializes a size as [`format()`] writes it.
    pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*bytes))
    }
}

/// Serde support for text settings (passwords, names, URLs) that a configuration layer may
/// hand over as a number or a boolean: `Password: 987654` in YAML or
/// `..._PASSWORD=12345` in the environment is the text `"987654"`, not a type error.
///
/// Use with `#[serde(with = "cache_core::settings::text")]`. Note that YAML reads `0123` as
/// the number 123: quote such values in YAML files.
pub mod text {
    use super::*;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Deserializes text, or a number or boolean as the text it was written as.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }

    /// Serializes the text as it is.
    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(text)
    }

    struct TextVisitor;

    impl Visitor<'_> for TextVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("text (or a number or boolean, taken as text)")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }

        fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration::parse;
    use super::*;

    #[test]
    fn durations_parse_as_configuration_writes_them() {
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("15").unwrap_err().contains("no unit"));
        assert!(parse("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn durations_round_trip_through_format() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(5400),
        ] {
            assert_eq!(parse(&duration::format(d)).unwrap(), d);
        }
    }

    #[test]
    fn breaker_settings_validate_ratio_and_quota() {
        assert!(BreakerSettings::default().validate().is_ok());
        let bad = BreakerSettings {
            max_failure_ratio: 1.5,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().0,
            "CircuitBreaker.MaxFailureRatio"
        );
        let stuck = BreakerSettings {
            max_retry_requests: 0,
            ..Default::default()
        };
        assert_eq!(
            stuck.validate().unwrap_err().0,
            "CircuitBreaker.MaxRetryRequests"
        );
    }

    #[test]
    fn text_settings_take_numbers_and_booleans_as_text() {
        #[derive(Deserialize)]
        struct T {
            #[serde(with = "text")]
            a: String,
        }
        for (json, text) in [
            (r#"{"a": 987654}"#, "987654"),
            (r#"{"a": -5}"#, "-5"),
            (r#"{"a": true}"#, "true"),
            (r#"{"a": 1.5}"#, "1.5"),
            (r#"{"a": "s3cret"}"#, "s3cret"),
        ] {
            assert_eq!(serde_json::from_str::<T>(json).unwrap().a, text, "{json}");
        }
        assert!(serde_json::from_str::<T>(r#"{"a": [1]}"#).is_err());
    }

    #[test]
    fn cache_settings_deserialize_lowercased_keys_and_alias() {
        let s: CacheSettings = serde_json::from_str(
            r#"{"connector":"Memory","maxage":"1s","lastuseage":"500ms","log":{"level":"debug"}}"#,
        )
        .unwrap();
        assert_eq!(s.connector_name(), "memory");
        assert_eq!(s.max_age, Duration::from_secs(1));
        assert_eq!(s.last_usage, Duration::from_millis(500));
        assert_eq!(s.log.level, LogLevel::Debug);
        let defaults: CacheSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, CacheSettings::default());
        assert!(serde_json::from_str::<CacheSettings>(r#"{"maxag":"1s"}"#).is_err());
    }
}
