//! The one error of loading a configuration: where, and what to write instead.

use std::fmt;

/// A configuration that cannot be used, with the full key path as the reference documents it
/// (e.g. `Caches.Connectors.Memory.Capacity`) and what is wrong and allowed there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    path: String,
    message: String,
}

impl ConfigError {
    /// An error at `path` (PascalCase segments joined by `.`).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The key path the error is about, e.g. `Caches.Instance.MaxAge`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong and what is allowed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}
