//! [`Caches`]: the running connectors and object caches of a service, built from a
//! [`CachesConfig`] and switchable at runtime.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cache_core::{Cache, CacheSettings, Entry, Index, ObjectCache, Prune};
use cache_pruner::Pruner;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ConfigError;
use crate::keys;
use crate::model::{CachesConfig, ConnectorsConfig};

/// The connectors a configuration enables, made once and shared by every object cache that
/// names them.
struct Connectors {
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    config: ConnectorsConfig,
    #[cfg(feature = "memory")]
    memory: Option<cache_memory::MemoryConnector>,
    #[cfg(feature = "postgres")]
    postgres: Option<cache_postgres::PostgresConnector>,
    #[cfg(feature = "postgres")]
    postgres_breaker: Option<Arc<cache_breaker::Breaker>>,
    #[cfg(feature = "redis")]
    redis: Option<cache_redis::RedisConnector>,
    #[cfg(feature = "redis")]
    redis_breaker: Option<Arc<cache_breaker::Breaker>>,
    /// The channel hubs of this process, by connector, made when a cache first needs one.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    hubs: Mutex<BTreeMap<String, cache_near::Hub>>,
}

/// A shared backend (redis, postgres) as built: the cache to use, and its breaker decorator
/// when there is one (a near cache in front listens to what it delivers late).
#[cfg(any(feature = "redis", feature = "postgres"))]
struct Guarded<I: Index, V: Entry<I>> {
    cache: Arc<dyn Cache<I, V>>,
    breaker: Option<Arc<cache_breaker::BreakerCache<I, V>>>,
}

impl Connectors {
    #[cfg_attr(
        not(any(feature = "redis", feature = "postgres")),
        allow(unused_variables)
    )]
    fn new(config: &ConnectorsConfig, version: &str) -> Result<Self, ConfigError> {
        Ok(Connectors {
            config: config.clone(),
            #[cfg(feature = "postgres")]
            postgres: if config.postgres.enabled {
                Some(
                    cache_postgres::PostgresConnector::new(&config.postgres, version)
                        .map_err(|e| ConfigError::new("Caches.Connectors.Postgres", e.message()))?,
                )
            } else {
                None
            },
            #[cfg(feature = "postgres")]
            postgres_breaker: breaker(cache_postgres::CONNECTOR, &config.postgres.circuit_breaker),
            #[cfg(feature = "redis")]
            redis_breaker: breaker(cache_redis::CONNECTOR, &config.redis.circuit_breaker),
            #[cfg(feature = "memory")]
            memory: config
                .memory
                .enabled
                .then(|| cache_memory::MemoryConnector::new(config.memory.clone())),
            #[cfg(feature = "redis")]
            redis: if config.redis.enabled {
                Some(
                    cache_redis::RedisConnector::new(config.redis.clone(), version).map_err(
                        |e| ConfigError::new("Caches.Connectors.Redis.URL", e.message()),
                    )?,
                )
            } else {
                None
            },
            #[cfg(any(feature = "redis", feature = "postgres"))]
            hubs: Mutex::new(BTreeMap::new()),
        })
    }

    /// A backend for one object cache, with its prune capability and the connector's
    /// prune schedule when it needs a pruner: the connector's cache, behind its breaker, with
    /// a near cache in front when the settings ask for one.
    #[cfg_attr(not(feature = "memory"), allow(unused_variables))]
    fn backend<I: Index, V: CacheValue<I>>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Result<Backend<I, V>, ConfigError> {
        let name = settings.connector_name();
        #[cfg(any(feature = "redis", feature = "postgres"))]
        if !settings.channel_name().is_empty() {
            return self.near::<I, V>(purpose, indices, settings);
        }
        match name.as_str() {
            "" => Ok(Backend {
                cache: Arc::new(cache_core::NoopCache),
                prune: None,
                near: None,
            }),
            #[cfg(feature = "memory")]
            "memory" => {
                let cache = self.memory_cache::<I, V>(purpose, indices, settings)?;
                let prune = Arc::clone(&cache)
                    .into_prune()
                    .map(|prune| (prune, self.config.memory.auto_prune));
                Ok(Backend {
                    cache,
                    prune,
                    near: None,
                })
            }
            #[cfg(any(feature = "redis", feature = "postgres"))]
            "redis" | "postgres" => {
                let guarded = self.shared::<I, V>(purpose, indices, settings)?;
                let prune = Arc::clone(&guarded.cache)
                    .into_prune()
                    .map(|prune| (prune, self.prune_schedule(&name)));
                Ok(Backend {
                    cache: guarded.cache,
                    prune,
                    near: None,
                })
            }
            _ => Err(not_enabled(purpose, &name)),
        }
    }

    #[cfg(feature = "memory")]
    fn memory_cache<I: Index, V: CacheValue<I>>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Result<Arc<dyn Cache<I, V>>, ConfigError> {
        let connector = self
            .memory
            .as_ref()
            .ok_or_else(|| not_enabled(purpose, "memory"))?;
        Ok(connector.cache::<I, V>(purpose, indices, settings))
    }

    /// The cache of a shared connector (`redis`, `postgres`), behind its breaker.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn shared<I: Index, V: CacheValue<I>>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Result<Guarded<I, V>, ConfigError> {
        let name = settings.connector_name();
        let (cache, breaker): (Arc<dyn Cache<I, V>>, Option<&Arc<cache_breaker::Breaker>>) =
            match name.as_str() {
                #[cfg(feature = "postgres")]
                "postgres" => {
                    let connector = self
                        .postgres
                        .as_ref()
                        .ok_or_else(|| not_enabled(purpose, &name))?;
                    (
                        connector.cache::<I, V>(purpose, indices, settings),
                        self.postgres_breaker.as_ref(),
                    )
                }
                #[cfg(feature = "redis")]
                "redis" => {
                    let connector = self
                        .redis
                        .as_ref()
                        .ok_or_else(|| not_enabled(purpose, &name))?;
                    (
                        connector.cache::<I, V>(purpose, indices, settings),
                        self.redis_breaker.as_ref(),
                    )
                }
                _ => return Err(not_enabled(purpose, &name)),
            };
        Ok(match breaker {
            Some(breaker) => {
                let guarded = Arc::new(cache_breaker::BreakerCache::new(
                    purpose,
                    cache,
                    Arc::clone(breaker),
                ));
                Guarded {
                    cache: Arc::clone(&guarded) as Arc<dyn Cache<I, V>>,
                    breaker: Some(guarded),
                }
            }
            None => Guarded {
                cache,
                breaker: None,
            },
        })
    }

    /// How often the caches of connector `name` are pruned.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn prune_schedule(&self, name: &str) -> cache_core::AutoPrune {
        match name {
            #[cfg(feature = "postgres")]
            "postgres" => self.config.postgres.auto_prune,
            #[cfg(feature = "memory")]
            _ => self.config.memory.auto_prune,
            #[cfg(not(feature = "memory"))]
            _ => cache_core::AutoPrune::new(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(5),
            ),
        }
    }

    /// A near cache: a memory level in front of the shared connector (or the memory
    /// connector's cache alone), on the hub of the settings' channel.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn near<I: Index, V: CacheValue<I>>(
        &self,
        purpose: &str,
        indices: &[I],
        settings: &CacheSettings,
    ) -> Result<Backend<I, V>, ConfigError> {
        let name = settings.connector_name();
        let hub = self.hub(purpose, &settings.channel_name())?;
        let (memory, shared, prune_with) = if name == "memory" {
            #[cfg(feature = "memory")]
            let connector = self
                .memory
                .as_ref()
                .ok_or_else(|| not_enabled(purpose, "memory"))?;
            #[cfg(not(feature = "memory"))]
            return Err(not_enabled(purpose, "memory"));
            #[cfg(feature = "memory")]
            (
                connector.cache::<I, V>(purpose, indices, settings),
                None,
                "memory",
            )
        } else {
            let capacity =
                cache_memory::MemoryConfig::enabled().with_capacity(settings.near.capacity);
            let memory = cache_memory::MemoryConnector::new(capacity)
                .cache::<I, V>(purpose, indices, settings);
            (
                memory,
                Some(self.shared::<I, V>(purpose, indices, settings)?),
                name.as_str(),
            )
        };
        let near = Arc::new(cache_near::NearCache::new(
            purpose,
            memory,
            shared.as_ref().map(|s| Arc::clone(&s.cache)),
            hub,
        ));
        if let Some(breaker) = shared.and_then(|s| s.breaker) {
            breaker.on_delivered(near.delivered_listener());
        }
        let prune = Arc::clone(&near)
            .into_prune()
            .map(|prune| (prune, self.prune_schedule(prune_with)));
        let stats = {
            let near = Arc::downgrade(&near);
            Box::new(move || near.upgrade().map(|n| n.stats())) as NearStatsFn
        };
        Ok(Backend {
            cache: near,
            prune,
            near: Some(stats),
        })
    }

    /// The hub of `channel`'s connector in this process, made on first use.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    fn hub(&self, purpose: &str, channel: &str) -> Result<cache_near::Hub, ConfigError> {
        let mut hubs = self.hubs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hub) = hubs.get(channel) {
            return Ok(hub.clone());
        }
        let path = format!("Caches.{}.Channel", keys::documented(purpose));
        let transport: Arc<dyn cache_core::Channel> = match channel {
            #[cfg(feature = "redis")]
            "redis" => Arc::new(
                self.redis
                    .as_ref()
                    .ok_or_else(|| not_enabled(purpose, channel))?
                    .channel()
                    .map_err(|e| ConfigError::new(&path, e.message()))?,
            ),
            #[cfg(feature = "postgres")]
            "postgres" => Arc::new(
                self.postgres
                    .as_ref()
                    .ok_or_else(|| not_enabled(purpose, channel))?
                    .channel()
                    .map_err(|e| ConfigError::new(&path, e.message()))?,
            ),
            other => return Err(not_enabled(purpose, other)),
        };
        let hub = cache_near::Hub::new(transport);
        hubs.insert(channel.to_owned(), hub.clone());
        Ok(hub)
    }
}

/// The breaker of a connector whose configuration has a `CircuitBreaker` block.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn breaker(
    connector: &'static str,
    settings: &Option<cache_core::BreakerSettings>,
) -> Option<Arc<cache_breaker::Breaker>> {
    settings.map(|s| Arc::new(cache_breaker::Breaker::new(connector, s)))
}

/// What a value must be to be cached on any connector: its keys, and JSON for the shared
/// backends (PostgreSQL, Redis). Implemented for every such type.
pub trait CacheValue<I: Index>: Entry<I> + Serialize + DeserializeOwned {}

impl<I: Index, V: Entry<I> + Serialize + DeserializeOwned> CacheValue<I> for V {}

fn not_enabled(purpose: &str, connector: &str) -> ConfigError {
    ConfigError::new(
        format!("Caches.{}.Connector", keys::documented(purpose)),
        format!(
            "names the {connector} connector, which is not enabled or not compiled in; enable \
             Caches.Connectors.{}.Enabled and its Cargo feature",
            keys::documented(connector)
        ),
    )
}

struct Backend<I: Index, V: Entry<I>> {
    cache: Arc<dyn Cache<I, V>>,
    prune: Option<PruneJob>,
    /// The near cache's figures, when the backend is one.
    near: Option<NearStatsFn>,
}

/// Reads a near cache's figures (`None` once it was replaced and dropped).
#[cfg(any(feature = "redis", feature = "postgres"))]
type NearStatsFn = Box<dyn Fn() -> Option<cache_near::NearStats> + Send + Sync>;
#[cfg(not(any(feature = "redis", feature = "postgres")))]
type NearStatsFn = Box<dyn Fn() -> Option<()> + Send + Sync>;

/// What [`Caches`] keeps of one object cache to rebuild it on a new configuration.
struct Registered {
    /// Builds a backend from these connectors and settings, ready to be swapped into the
    /// object cache (see [`Prepared`]).
    rebuild: Rebuild,
    pruner: Option<Pruner>,
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    near: Option<NearStatsFn>,
}

/// A prune capability and the schedule to run it on.
type PruneJob = (Arc<dyn Prune>, cache_core::AutoPrune);
type Rebuild =
    Box<dyn Fn(&Connectors, &CacheSettings) -> Result<Prepared, ConfigError> + Send + Sync>;

/// A truncate of a backend on its way.
type Truncating =
    std::pin::Pin<Box<dyn std::future::Future<Output = cache_core::Result<()>> + Send>>;

/// A backend built for a new configuration, not in use yet: [`Prepared::empty`] truncates it
/// (a shared backend the cache switches onto may hold what was invalidated while the cache
/// used another connector), [`Prepared::commit`] swaps it in and returns its prune capability
/// and schedule, and its near-cache figures.
struct Prepared {
    empty: Box<dyn FnOnce() -> Truncating + Send>,
    commit: Box<dyn FnOnce() -> (Option<PruneJob>, Option<NearStatsFn>) + Send>,
}

struct State {
    config: CachesConfig,
    connectors: Connectors,
    caches: BTreeMap<String, Registered>,
}

/// The running caches of a service: the enabled connectors, and every object cache made
/// through [`object_cache`](Caches::object_cache), with their pruners.
///
/// Call it once at startup, inside a Tokio runtime (pruners are tasks):
///
/// ```
/// use cache_config::{Caches, Loader};
/// use cache_core::{Entry, Index};
///
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// enum InstanceIndex { Id, Host }
/// impl Index for InstanceIndex {
///     fn name(self) -> &'static str {
///         match self { InstanceIndex::Id => "id", InstanceIndex::Host => "host" }
///     }
/// }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Instance { id: String, hosts: Vec<String> }
/// impl Entry<InstanceIndex> for Instance {
///     fn keys(&self, index: InstanceIndex) -> Vec<String> {
///         match index {
///             InstanceIndex::Id => vec![self.id.clone()],
///             InstanceIndex::Host => self.hosts.clone(),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cache_config::ConfigError> {
/// let config = Loader::new()
///     .yaml("Caches: { Memory: { Enabled: true }, Instance: { Connector: memory } }")
///     .load()?;
/// let caches = Caches::start(&config, env!("CARGO_PKG_VERSION"))?;
/// let instances = caches.object_cache::<InstanceIndex, Instance>(
///     "instance",
///     &[InstanceIndex::Id, InstanceIndex::Host],
/// )?;
/// assert_eq!(instances.connector(), "memory");
/// caches.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Caches {
    version: String,
    state: Mutex<State>,
    /// One reconfiguration at a time (it waits on the backends between its steps).
    reconfiguring: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Caches")
            .field("version", &self.version)
            .field("object_caches", &state.caches.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Caches {
    /// Makes the connectors `config` enables. `version` scopes the objects of shared backends
    /// (PostgreSQL, Redis) so that two releases running side by side never read each other's
    /// objects; pass the application's build version.
    ///
    /// Does not connect to servers: a server that is down at startup makes its caches miss
    /// until it is reachable. Fails only on settings a loaded configuration cannot have
    /// (e.g. a malformed Redis URL in a hand-made [`CachesConfig`]).
    pub fn start(config: &CachesConfig, version: impl Into<String>) -> Result<Self, ConfigError> {
        let version = version.into();
        Ok(Caches {
            reconfiguring: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                config: config.clone(),
                connectors: Connectors::new(&config.connectors, &version)?,
                caches: BTreeMap::new(),
            }),
            version,
        })
    }

    /// The version string given at [`start`](Self::start).
    pub fn version(&self) -> &str {
        &self.version
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object cache `purpose` (`instance`, `milestones`, `organization`, or one declared
    /// with [`Loader::purpose`](crate::Loader::purpose)), storing `V` found through `indices`,
    /// on the connector its settings name; its pruner is started when the connector needs one.
    /// Must be called inside a Tokio runtime when a pruner starts.
    ///
    /// Each purpose can be made once per `Caches`; a second call is an error.
    pub fn object_cache<I: Index, V: CacheValue<I>>(
        &self,
        purpose: &str,
        indices: &[I],
    ) -> Result<ObjectCache<I, V>, ConfigError> {
        let purpose = purpose.to_ascii_lowercase();
        let path = format!("Caches.{}", keys::documented(&purpose));
        let mut state = self.lock();
        if state.caches.contains_key(&purpose) {
            return Err(ConfigError::new(
                path,
                "this object cache was already made; clone the ObjectCache you have instead",
            ));
        }
        let settings = state.config.settings(&purpose).cloned().ok_or_else(|| {
            ConfigError::new(
                &path,
                "not a built-in object cache and not declared; declare it with Loader::purpose",
            )
        })?;
        let backend = state
            .connectors
            .backend::<I, V>(&purpose, indices, &settings)?;
        let cache = ObjectCache::new(purpose.as_str(), backend.cache)
            .with_read_through(settings.read_through());
        let pruner = start_pruner(&purpose, &settings, backend.prune);
        let rebuild = {
            let (cache, indices, purpose) = (cache.clone(), indices.to_vec(), purpose.clone());
            Box::new(move |connectors: &Connectors, settings: &CacheSettings| {
                let backend = connectors.backend::<I, V>(&purpose, &indices, settings)?;
                let (read, target) = (settings.read_through(), Arc::clone(&backend.cache));
                let cache = cache.clone();
                Ok(Prepared {
                    empty: Box::new(move || Box::pin(async move { target.truncate().await })),
                    commit: Box::new(move || {
                        cache.replace_with(backend.cache, read);
                        (backend.prune, backend.near)
                    }),
                })
            })
        };
        state.caches.insert(
            purpose,
            Registered {
                rebuild,
                pruner,
                near: backend.near,
            },
        );
        Ok(cache)
    }

    /// Switches to `config` without a restart: every object cache whose connector or settings
    /// changed gets a new backend (readers are never blocked; operations already running
    /// finish on the old one), pruners follow, and connectors no longer used are dropped. A
    /// cache that switches to another connector starts there empty (a shared backend is
    /// truncated first: it may hold objects invalidated while the cache was elsewhere).
    /// Object caches whose settings did not change keep their contents.
    ///
    /// Nothing changes if any object cache cannot be built from `config`, or a shared backend
    /// a cache switches onto cannot be emptied.
    pub async fn reconfigure(&self, config: &CachesConfig) -> Result<(), ConfigError> {
        let _one_at_a_time = self.reconfiguring.lock().await;
        let stopped = {
            let mut guard = self.lock();
            let state = &mut *guard;
            // Check every object cache first, so a bad configuration changes nothing.
            let mut changes = Vec::new();
            let connectors_changed = state.config.connectors != config.connectors;
            for purpose in state.caches.keys() {
                let settings = config.settings(purpose).cloned().ok_or_else(|| {
                    ConfigError::new(
                        format!("Caches.{}", keys::documented(purpose)),
                        "the running object cache is missing from the new configuration",
                    )
                })?;
                crate::load::check_connector(&config.connectors, purpose, &settings)?;
                if connectors_changed || state.config.settings(purpose) != Some(&settings) {
                    changes.push((purpose.clone(), settings));
                }
            }
            // New connectors (pools) only when their configuration changed.
            let new_connectors = if connectors_changed {
                Some(Connectors::new(&config.connectors, &self.version)?)
            } else {
                None
            };
            let connectors = new_connectors.as_ref().unwrap_or(&state.connectors);
            // Every new backend is built before any is swapped in: nothing changes on error.
            let mut prepared = Vec::new();
            for (purpose, settings) in changes {
                let registered = &state.caches[&purpose];
                let built = (registered.rebuild)(connectors, &settings)?;
                let switched = state
                    .config
                    .settings(&purpose)
                    .is_none_or(|old| old.connector_name() != settings.connector_name());
                prepared.push((purpose, settings, built, switched));
            }
            (prepared, new_connectors)
        };
        let (prepared, new_connectors) = stopped;
        // A cache switching onto a connector starts on an empty backend there: what it holds
        // may have been invalidated while the cache used another one.
        let mut ready = Vec::new();
        for (purpose, settings, built, switched) in prepared {
            if switched && !settings.connector_name().is_empty() {
                (built.empty)().await.map_err(|error| {
                    ConfigError::new(
                        format!("Caches.{}", keys::documented(&purpose)),
                        format!(
                            "could not empty the cache on {} before switching to it: {error}",
                            settings.connector_name()
                        ),
                    )
                })?;
            }
            ready.push((purpose, settings, built.commit));
        }
        let stopped = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let mut stopped = Vec::new();
            for (purpose, settings, commit) in ready {
                let (prune, near) = commit();
                if let Some(registered) = state.caches.get_mut(&purpose) {
                    stopped.extend(registered.pruner.take());
                    registered.pruner = start_pruner(&purpose, &settings, prune);
                    registered.near = near;
                }
            }
            if let Some(connectors) = new_connectors {
                state.connectors = connectors;
            }
            state.config = config.clone();
            stopped
        };
        for pruner in stopped {
            pruner.shutdown().await;
        }
        Ok(())
    }

    /// The circuit breaker of `connector` (`redis`, `postgres`) when its configuration has a
    /// `CircuitBreaker` block: read its [`state`](cache_breaker::Breaker::state) and
    /// [`counts`](cache_breaker::Breaker::counts) for health checks and metrics.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub fn breaker(&self, connector: &str) -> Option<Arc<cache_breaker::Breaker>> {
        let state = self.lock();
        match connector.to_ascii_lowercase().as_str() {
            #[cfg(feature = "redis")]
            "redis" => state.connectors.redis_breaker.clone(),
            #[cfg(feature = "postgres")]
            "postgres" => state.connectors.postgres_breaker.clone(),
            _ => None,
        }
    }

    /// The figures of the object cache `purpose` when it is a near cache (`Near.Enabled`, or
    /// a `Channel`): memory and shared hits, misses, messages sent and received, and the
    /// state of its channel.
    #[cfg(any(feature = "redis", feature = "postgres"))]
    pub fn near_stats(&self, purpose: &str) -> Option<cache_near::NearStats> {
        let state = self.lock();
        let registered = state.caches.get(&purpose.to_ascii_lowercase())?;
        registered.near.as_ref().and_then(|stats| stats())
    }

    /// Runs the setup step of every enabled connector that has one — PostgreSQL: creates or
    /// updates its schema, tables and function (idempotent, safe from many processes at once).
    ///
    /// Call it at startup when the service should not start without working cache tables: it
    /// fails when the database is unreachable. Without it, startup never waits for a database,
    /// and operators run the setup once (`cargo xtask pg-setup <url>`).
    pub async fn setup(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "postgres")]
        {
            let postgres = self.lock().connectors.postgres.clone();
            if let Some(connector) = postgres {
                connector.setup().await.map_err(|e| {
                    ConfigError::new(
                        "Caches.Connectors.Postgres",
                        format!("the setup step failed: {e}"),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Stops every pruner and waits for them. The object caches keep working until dropped.
    pub async fn shutdown(self) {
        let pruners: Vec<Pruner> = {
            let mut state = self.lock();
            state
                .caches
                .values_mut()
                .filter_map(|r| r.pruner.take())
                .collect()
        };
        for pruner in pruners {
            pruner.shutdown().await;
        }
    }
}

fn start_pruner(
    purpose: &str,
    settings: &CacheSettings,
    prune: Option<PruneJob>,
) -> Option<Pruner> {
    let (prune, schedule) = prune?;
    Some(Pruner::start(
        purpose,
        settings.connector_name(),
        prune,
        schedule,
    ))
}
