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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Name of the connector that stores this cache (`memory`, `postgres`, `redis`),
    /// case-insensitive. Empty (the default): no caching, every get misses.
    #[serde(rename = "connector")]
    pub connector: String,
    /// How long an object stays cached after it was set. Zero: no limit. Default `1h`.
    #[serde(rename = "maxage", with = "duration")]
    pub max_age: Duration,
    /// How long an object stays cached without being read. Zero: no limit. Default `10m`.
    /// `LastUseAge` is accepted as another name.
    #[serde(rename = "lastusage", alias = "lastuseage", with = "duration")]
    pub last_usage: Duration,
    /// Logging of this cache's events. Default: errors only.
    #[serde(rename = "log")]
    pub log: LogSettings,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            connector: String::new(),
            max_age: Duration::from_secs(3600),
            last_usage: Duration::from_secs(600),
            log: LogSettings::default(),
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

    /// The connector name, lower-cased; empty means no caching.
    pub fn connector_name(&self) -> String {
        self.connector.trim().to_ascii_lowercase()
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, Serialize)]
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
            return Err(format!("{text:?} is negative; durations must be 0 or positive"));
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
            format!("{text:?} is not a duration ({e}); write e.g. \"1h30m\", \"10m\", \"500ms\" or 0")
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
        for d in [Duration::ZERO, Duration::from_millis(500), Duration::from_secs(5400)] {
            assert_eq!(parse(&duration::format(d)).unwrap(), d);
        }
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
