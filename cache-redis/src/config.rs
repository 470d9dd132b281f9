//! `Caches.Connectors.Redis`: where the server is and how the pool behaves.

use std::fmt;
use std::time::Duration;

use cache_core::settings::duration;
use serde::{Deserialize, Serialize};

/// The Redis connector's settings. Field names are the lower-cased configuration keys.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Whether object caches may name this connector. Default `false`.
    #[serde(rename = "enabled")]
    pub enabled: bool,
    /// The server as a URL: `redis://[user[:password]@]host:port[/db]`, `rediss://` for TLS.
    /// Default `redis://localhost:6379`.
    #[serde(rename = "url")]
    pub url: String,
    /// Most connections in the pool (honoured). Default 10.
    #[serde(rename = "poolsize")]
    pub pool_size: u32,
    /// Longest wait for a connection (dialling or from the pool). Default `5s`.
    #[serde(rename = "dialtimeout", with = "duration")]
    pub dial_timeout: Duration,
    /// Longest one operation may take before it counts as failed. Default `3s`.
    #[serde(rename = "readtimeout", with = "duration")]
    pub read_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            enabled: false,
            url: "redis://localhost:6379".to_owned(),
            pool_size: 10,
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
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

    /// Checks what serde cannot: on error, the offending key (below
    /// `Caches.Connectors.Redis`) and what to write instead. Never shows the password.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        use redis::IntoConnectionInfo;
        if let Err(e) = self.url.as_str().into_connection_info() {
            return Err((
                "URL",
                format!(
                    "{:?} is not a Redis URL ({}); write e.g. redis://localhost:6379/0, or \
                     rediss://user:password@host:6380/0 for TLS",
                    self.redacted_url(),
                    e.category()
                ),
            ));
        }
        if self.pool_size == 0 {
            return Err((
                "PoolSize",
                "0 connections cannot serve anything; write 1 or more (default 10)".to_owned(),
            ));
        }
        Ok(())
    }

    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("dial_timeout", &self.dial_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`.
fn redact(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let c = RedisConfig::with_url("redis://app:s3cret@cache:6379/2");
        assert_eq!(c.redacted_url(), "redis://app:***@cache:6379/2");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(redact("redis://localhost:6379"), "redis://localhost:6379");
        assert_eq!(redact("rediss://tok3n@h:1"), "rediss://***@h:1");
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
    }
}
