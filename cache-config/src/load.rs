//! [`Loader`]: merges the layers and turns them into a checked [`CachesConfig`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use cache_core::CacheSettings;
use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Yaml};
use figment::value::Value;
use serde::de::DeserializeOwned;

use crate::env::EnvVars;
use crate::error::ConfigError;
use crate::keys::{self, did_you_mean};
use crate::layer::{CONNECTORS, Layer};
use crate::model::{BUILT_IN, CachesConfig, ConnectorsConfig};

/// The embedded defaults: the complete, commented reference of every key.
pub const DEFAULTS_YAML: &str = include_str!("../defaults.yaml");

/// Builds the configuration from layers, later layers winning: the embedded
/// [defaults](DEFAULTS_YAML), then YAML texts and files in the order given, then environment
/// variables under a prefix.
///
/// ```
/// use cache_config::Loader;
///
/// let config = Loader::new()
///     .yaml("Caches: { Memory: { Enabled: true }, Instance: { Connector: memory, MaxAge: 1s } }")
///     .load()?;
/// assert_eq!(config.instance.connector_name(), "memory");
/// assert_eq!(config.instance.max_age, std::time::Duration::from_secs(1));
/// # Ok::<(), cache_config::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct Loader {
    layers: Vec<Source>,
    env_prefix: Option<String>,
    purposes: Vec<String>,
}

#[derive(Clone)]
enum Source {
    Text(String),
    File(PathBuf),
}

/// Shows files by path and text layers by size only: a layer may hold passwords.
impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Text(text) => write!(f, "Text({} bytes)", text.len()),
            Source::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("layers", &self.layers)
            .field("env_prefix", &self.env_prefix)
            .field("purposes", &self.purposes)
            .finish()
    }
}

impl Loader {
    /// A loader with only the embedded defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a YAML file as the next layer. A missing file is an error at [`load`](Self::load).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.layers.push(Source::File(path.into()));
        self
    }

    /// Adds YAML text as the next layer (e.g. the application's own built-in settings).
    pub fn yaml(mut self, text: impl Into<String>) -> Self {
        self.layers.push(Source::Text(text.into()));
        self
    }

    /// Reads environment variables `<PREFIX>_CACHES_...` as the last layer: the path joined
    /// by `_`, e.g. `MYAPP_CACHES_INSTANCE_MAXAGE=1s`, `MYAPP_CACHES_CONNECTORS_MEMORY_ENABLED=true`.
    pub fn env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.env_prefix = Some(prefix.into());
        self
    }

    /// Declares an object cache of the application's own besides `instance`, `milestones`
    /// and `organization`, configured under `Caches.<Purpose>`.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purposes.push(purpose.into().to_ascii_lowercase());
        self
    }

    /// The merged layers, before checking.
    pub fn figment(&self) -> Figment {
        let mut figment = Figment::from(Layer(Yaml::string(DEFAULTS_YAML)));
        for source in &self.layers {
            figment = match source {
                Source::Text(text) => figment.merge(Layer(Yaml::string(text))),
                Source::File(path) => figment.merge(Layer(Yaml::file_exact(path))),
            };
        }
        if let Some(prefix) = &self.env_prefix {
            figment = figment.merge(Layer(EnvVars::new(prefix, &self.purposes)));
        }
        figment
    }

    /// Merges and checks every layer. Any key the configuration does not know, any value of
    /// the wrong type or out of range, and any object cache naming a connector that is not
    /// enabled or not compiled in is an error naming the key path.
    pub fn load(&self) -> Result<CachesConfig, ConfigError> {
        for source in &self.layers {
            if let Source::File(path) = source
                && !path.is_file()
            {
                return Err(ConfigError::new(
                    "Caches",
                    format!(
                        "the configuration file {} does not exist; check the path",
                        path.display()
                    ),
                ));
            }
        }
        let figment = self.figment();
        // Reading everything once surfaces YAML syntax errors and layer errors with their path.
        if let Err(error) = figment.extract::<figment::value::Dict>() {
            return Err(convert(error, ""));
        }
        let caches = dict_keys(&figment, "caches")?;
        let mut known: Vec<&str> = vec!["connectors"];
        known.extend(BUILT_IN);
        known.extend(self.purposes.iter().map(String::as_str));
        reject_unknown(&["caches"], &caches, &known)?;
        let connectors = dict_keys(&figment, "caches.connectors")?;
        reject_unknown(&["caches", "connectors"], &connectors, CONNECTORS)?;

        let connectors = connectors_config(&figment)?;
        let instance = extract(&figment, "caches.instance")?;
        let milestones = extract(&figment, "caches.milestones")?;
        let organization = extract(&figment, "caches.organization")?;
        let mut purposes = BTreeMap::new();
        for purpose in &self.purposes {
            let path = format!("caches.{purpose}");
            let settings = if figment.find_value(&path).is_ok() {
                extract(&figment, &path)?
            } else {
                CacheSettings::default()
            };
            purposes.insert(purpose.clone(), settings);
        }
        let config = CachesConfig {
            connectors,
            instance,
            milestones,
            organization,
            purposes,
        };
        for (purpose, settings) in config.object_caches() {
            check_connector(&config.connectors, purpose, settings)?;
        }
        Ok(config)
    }
}

fn connectors_config(figment: &Figment) -> Result<ConnectorsConfig, ConfigError> {
    for name in CONNECTORS {
        let compiled = (cfg!(feature = "memory") && *name == "memory")
            || (cfg!(feature = "postgres") && *name == "postgres")
            || (cfg!(feature = "redis") && *name == "redis");
        if !compiled && enabled(figment, name)? {
            let connector = keys::documented(name);
            return Err(ConfigError::new(
                format!("Caches.Connectors.{connector}.Enabled"),
                format!(
                    "the {connector} connector is enabled but its backend is not compiled in; \
                     enable the `{name}` Cargo feature of cache-config"
                ),
            ));
        }
    }
    #[cfg(feature = "memory")]
    let memory: cache_memory::MemoryConfig = {
        let memory = extract(figment, "caches.connectors.memory")?;
        if let Err((key, message)) = cache_memory::MemoryConfig::validate(&memory) {
            return Err(ConfigError::new(
                format!("Caches.Connectors.Memory.{key}"),
                message,
            ));
        }
        memory
    };
    #[cfg(feature = "postgres")]
    let postgres: cache_postgres::PostgresConfig = {
        let postgres: cache_postgres::PostgresConfig =
            extract(figment, "caches.connectors.postgres")?;
        if let Err((key, message)) = postgres.validate() {
            return Err(ConfigError::new(
                format!("Caches.Connectors.Postgres.{key}"),
                message,
            ));
        }
        postgres
    };
    #[cfg(feature = "redis")]
    let redis: cache_redis::RedisConfig = {
        let redis: cache_redis::RedisConfig = extract(figment, "caches.connectors.redis")?;
        if let Err((key, message)) = redis.validate() {
            return Err(ConfigError::new(
                format!("Caches.Connectors.Redis.{key}"),
                message,
            ));
        }
        redis
    };
    Ok(ConnectorsConfig {
        #[cfg(feature = "memory")]
        memory,
        #[cfg(feature = "postgres")]
        postgres,
        #[cfg(feature = "redis")]
        redis,
    })
}

/// Whether `caches.connectors.<name>.enabled` is true.
fn enabled(figment: &Figment, name: &str) -> Result<bool, ConfigError> {
    let path = format!("caches.connectors.{name}.enabled");
    if figment.find_value(&path).is_err() {
        return Ok(false);
    }
    extract(figment, &path)
}

/// An object cache may only name an enabled connector, and its near cache and channel must
/// make sense together.
pub(crate) fn check_connector(
    connectors: &ConnectorsConfig,
    purpose: &str,
    settings: &CacheSettings,
) -> Result<(), ConfigError> {
    let name = settings.connector_name();
    check_enabled(connectors, purpose, &name, "Connector")?;
    if let Err((key, message)) = settings.validate() {
        return Err(ConfigError::new(
            format!("Caches.{}.{key}", keys::documented(purpose)),
            message,
        ));
    }
    check_near(connectors, purpose, settings)
}

/// `Near` and `Channel` of one object cache.
fn check_near(
    connectors: &ConnectorsConfig,
    purpose: &str,
    settings: &CacheSettings,
) -> Result<(), ConfigError> {
    let cache = keys::documented(purpose);
    let connector = settings.connector_name();
    let explicit = settings.channel.trim().to_ascii_lowercase();
    if settings.near.enabled {
        if settings.near.capacity == 0 {
            return Err(ConfigError::new(
                format!("Caches.{cache}.Near.Capacity"),
                "0 would keep nothing in memory; write the most keys one process may hold \
                 (default 10000), or Near.Enabled: false",
            ));
        }
        if connector.is_empty() || connector == "memory" {
            return Err(ConfigError::new(
                format!("Caches.{cache}.Near.Enabled"),
                format!(
                    "a near cache sits in front of a shared connector (redis or postgres), not \
                     Connector: {connector:?}; to keep memory caches of several processes \
                     consistent, set Connector: memory and Channel: redis (or postgres)"
                ),
            ));
        }
    }
    if explicit.is_empty() {
        return Ok(());
    }
    let path = format!("Caches.{cache}.Channel");
    if !matches!(explicit.as_str(), "redis" | "postgres") {
        let hint = did_you_mean(&explicit, &["redis", "postgres"])
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return Err(ConfigError::new(
            path,
            format!("unknown channel {explicit:?}; {hint}allowed: \"\" (none), redis, postgres"),
        ));
    }
    if connector.is_empty() {
        return Err(ConfigError::new(
            path,
            "a cache that caches nothing (Connector: \"\") has no changes to announce; set a \
             Connector, or Channel: \"\"",
        ));
    }
    if connector != "memory" && !settings.near.enabled {
        return Err(ConfigError::new(
            path,
            format!(
                "the {connector} connector is shared by every process already; a channel only \
                 matters for a memory level: set Near.Enabled: true, or Channel: \"\""
            ),
        ));
    }
    check_enabled(connectors, purpose, &explicit, "Channel")
}

/// `name` (from the key `key` of the object cache) is an enabled connector, or empty.
fn check_enabled(
    connectors: &ConnectorsConfig,
    purpose: &str,
    name: &str,
    key: &str,
) -> Result<(), ConfigError> {
    let path = format!("Caches.{}.{key}", keys::documented(purpose));
    match name {
        "" => Ok(()),
        "memory" if connectors.memory_enabled() => Ok(()),
        "postgres" if connectors.postgres_enabled() => Ok(()),
        "redis" if connectors.redis_enabled() => Ok(()),
        "memory" | "postgres" | "redis" => {
            let connector = keys::documented(name);
            Err(ConfigError::new(
                path,
                format!(
                    "names the {name} connector, which is not enabled; set \
                     Caches.Connectors.{connector}.Enabled: true, or Connector: \"\" for no caching"
                ),
            ))
        }
        other => {
            let hint = did_you_mean(other, CONNECTORS)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            Err(ConfigError::new(
                path,
                format!(
                    "unknown connector {other:?}; {hint}allowed: \"\" (no caching), memory, \
                     postgres, redis"
                ),
            ))
        }
    }
}

/// The keys of the map at `path` (none if it is absent); an error if it is not a map.
fn dict_keys(figment: &Figment, path: &str) -> Result<Vec<String>, ConfigError> {
    match figment.find_value(path) {
        Ok(Value::Dict(_, dict)) => Ok(dict.into_keys().collect()),
        Ok(other) => Err(ConfigError::new(
            keys::path(&path.split('.').collect::<Vec<_>>()),
            format!("expected a map of keys, found {:?}", other.to_actual()),
        )),
        Err(_) => Ok(Vec::new()),
    }
}

fn reject_unknown(parent: &[&str], found: &[String], known: &[&str]) -> Result<(), ConfigError> {
    for key in found {
        if known.contains(&key.as_str()) {
            continue;
        }
        let mut path: Vec<&str> = parent.to_vec();
        path.push(key);
        let documented: Vec<String> = known.iter().map(|k| keys::documented(k)).collect();
        let documented: Vec<&str> = documented.iter().map(String::as_str).collect();
        let hint = did_you_mean(key, &documented)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return Err(ConfigError::new(
            keys::path(&path),
            format!("unknown key; {hint}allowed here: {}", documented.join(", ")),
        ));
    }
    Ok(())
}

/// Deserializes the value at `path`, turning figment's error into one with the documented
/// key path.
fn extract<T: DeserializeOwned>(figment: &Figment, path: &str) -> Result<T, ConfigError> {
    figment
        .extract_inner(path)
        .map_err(|error| convert(error, path))
}

/// figment's error as a [`ConfigError`] with the documented key path; `path` is where the
/// failed extraction started.
fn convert(error: figment::Error, path: &str) -> ConfigError {
    // figment reports the path below `path` first, then `path` itself.
    let prefix: Vec<String> = path
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let below = if error.path.ends_with(&prefix) {
        &error.path[..error.path.len() - prefix.len()]
    } else {
        &error.path[..]
    };
    let mut segments = prefix.clone();
    segments.extend(below.iter().cloned());
    let message = match &error.kind {
        Kind::UnknownField(field, allowed) => {
            if segments.last() != Some(field) {
                segments.push(field.clone());
            }
            let documented: Vec<String> = allowed.iter().map(|k| keys::documented(k)).collect();
            let documented: Vec<&str> = documented.iter().map(String::as_str).collect();
            let hint = did_you_mean(field, &documented)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            format!("unknown key; {hint}allowed here: {}", documented.join(", "))
        }
        Kind::InvalidType(actual, expected) if is_secret(&segments) => {
            format!("expected {expected}, found {}", kind_of(actual))
        }
        Kind::InvalidValue(actual, expected) if is_secret(&segments) => {
            format!("invalid {}, expected {expected}", kind_of(actual))
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value {actual}, expected {expected}")
        }
        Kind::UnknownVariant(value, allowed) => {
            format!("unknown value {value:?}; allowed: {}", allowed.join(", "))
        }
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    let path = if segments.is_empty() {
        "Caches".to_owned()
    } else {
        keys::path(&segments)
    };
    ConfigError::new(path, message)
}

/// Whether the key at `path` holds a secret (a password, or a URL that may carry one), whose
/// value no error may show.
fn is_secret(path: &[String]) -> bool {
    path.last()
        .is_some_and(|key| matches!(key.to_ascii_lowercase().as_str(), "password" | "url"))
}

/// What kind of value `actual` is, without the value itself.
fn kind_of(actual: &figment::error::Actual) -> &'static str {
    use figment::error::Actual;
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "text",
        Actual::Bytes(_) => "bytes",
        Actual::Unit => "nothing",
        Actual::Option => "an optional value",
        Actual::Seq => "a list",
        Actual::Map => "a map",
        _ => "a value of another type",
    }
}
