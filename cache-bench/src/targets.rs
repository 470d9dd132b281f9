//! What gets measured: every connector through the public `ObjectCache` API, and the raw
//! baselines each is compared with — all behind one small trait, so one runner drives them all.

use std::sync::Arc;
use std::time::Duration;

use cache_breaker::{Breaker, BreakerCache};
use cache_core::testkit::load::entry;
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{BreakerSettings, Cache, CacheSettings, NoopCache, ObjectCache, async_trait};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};
use redis::AsyncCommands;
use tokio_postgres::{Client, NoTls, Statement};

/// Objects each target holds during the workloads.
pub(crate) const OBJECTS: u64 = 10_000;

/// The id key of object `i`; a get of `i >= OBJECTS` is a miss everywhere.
pub(crate) fn key(i: u64) -> String {
    format!("org-{i}")
}

/// The operations of the workloads, on object `i`.
#[async_trait]
pub(crate) trait Target: Send + Sync {
    /// Whether object `i` was found.
    async fn get(&self, i: u64) -> bool;
    /// Stores object `i` (3 keys over 2 indices for the connectors).
    async fn set(&self, i: u64);
    /// Makes object `i` unreachable.
    async fn invalidate(&self, i: u64);
}

/// A target with its place in the report.
pub(crate) struct Named {
    /// Row label, e.g. `redis` or `raw redis-rs GET/SET/DEL`.
    pub(crate) name: &'static str,
    /// The backend family it belongs to (`memory`, `redis`, `postgres`, `reference`).
    pub(crate) family: &'static str,
    /// Whether it is a baseline (raw client) rather than a connector.
    pub(crate) baseline: bool,
    /// Whether set and invalidate mean something for it (the update-per-hit read does not).
    pub(crate) writes: bool,
    /// The target itself.
    pub(crate) target: Arc<dyn Target>,
}

/// A connector behind `ObjectCache`, the way applications use it.
struct Connector(ObjectCache<TestIndex, TestEntry>);

#[async_trait]
impl Target for Connector {
    async fn get(&self, i: u64) -> bool {
        self.0.get(TestIndex::Id, &key(i)).await.is_some()
    }
    async fn set(&self, i: u64) {
        self.0.set(entry(i)).await;
    }
    async fn invalidate(&self, i: u64) {
        let _ = self.0.invalidate(TestIndex::Id, &[key(i)]).await;
    }
}

fn connector(purpose: &str, cache: Arc<dyn Cache<TestIndex, TestEntry>>) -> Arc<dyn Target> {
    Arc::new(Connector(ObjectCache::new(purpose, cache)))
}

/// Raw quick_cache: one key per object, no object cache around it.
struct QuickCache(quick_cache::sync::Cache<String, Arc<TestEntry>>);

#[async_trait]
impl Target for QuickCache {
    async fn get(&self, i: u64) -> bool {
        self.0.get(&key(i)).is_some()
    }
    async fn set(&self, i: u64) {
        self.0.insert(key(i), Arc::new(entry(i)));
    }
    async fn invalidate(&self, i: u64) {
        self.0.remove(&key(i));
    }
}

/// Raw moka (sync cache).
struct Moka(moka::sync::Cache<String, Arc<TestEntry>>);

#[async_trait]
impl Target for Moka {
    async fn get(&self, i: u64) -> bool {
        self.0.get(&key(i)).is_some()
    }
    async fn set(&self, i: u64) {
        self.0.insert(key(i), Arc::new(entry(i)));
    }
    async fn invalidate(&self, i: u64) {
        self.0.invalidate(&key(i));
    }
}

/// Raw redis-rs `GET`/`SET`/`DEL` of the same JSON payload on one multiplexed connection
/// (a get decodes it, as the connector does).
struct RawRedis(redis::aio::MultiplexedConnection);

#[async_trait]
impl Target for RawRedis {
    async fn get(&self, i: u64) -> bool {
        // The same payload as the connector's, decoded as the connector decodes it.
        let v: Option<Vec<u8>> = self.0.clone().get(format!("raw:{i}")).await.unwrap_or(None);
        v.and_then(|v| serde_json::from_slice::<TestEntry>(&v).ok())
            .is_some()
    }
    async fn set(&self, i: u64) {
        let payload = serde_json::to_vec(&entry(i)).expect("json");
        let _: redis::RedisResult<()> = self.0.clone().set(format!("raw:{i}"), payload).await;
    }
    async fn invalidate(&self, i: u64) {
        let _: redis::RedisResult<i64> = self.0.clone().del(format!("raw:{i}")).await;
    }
}

/// One connection with the raw statements prepared on it.
struct PgConnection {
    client: Client,
    select: Statement,
    update_per_hit: Statement,
    upsert: Statement,
    delete: Statement,
}

/// Raw prepared statements on an unlogged table, or the reference's update-per-hit read;
/// connections are shared round-robin.
struct RawPostgres {
    connections: Vec<PgConnection>,
    next: std::sync::atomic::AtomicUsize,
    update_per_hit: bool,
}

impl RawPostgres {
    fn connection(&self) -> &PgConnection {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.connections[n % self.connections.len()]
    }
}

#[async_trait]
impl Target for RawPostgres {
    async fn get(&self, i: u64) -> bool {
        let c = self.connection();
        let statement = if self.update_per_hit {
            &c.update_per_hit
        } else {
            &c.select
        };
        matches!(c.client.query_opt(statement, &[&key(i)]).await, Ok(Some(_)))
    }
    async fn set(&self, i: u64) {
        let c = self.connection();
        let payload = serde_json::to_vec(&entry(i)).expect("json");
        let _ = c.client.execute(&c.upsert, &[&key(i), &payload]).await;
    }
    async fn invalidate(&self, i: u64) {
        let c = self.connection();
        let _ = c.client.execute(&c.delete, &[&key(i)]).await;
    }
}

/// The servers a run uses; `None` leaves that family out.
pub(crate) struct Servers {
    /// `CACHE_TEST_REDIS_URL`.
    pub(crate) redis: Option<String>,
    /// `CACHE_TEST_POSTGRES_URL`.
    pub(crate) postgres: Option<String>,
}

fn settings() -> CacheSettings {
    CacheSettings::default()
}

/// Every target of a run. Connections are sized for `max_tasks` concurrent tasks.
pub(crate) async fn all(servers: &Servers, max_tasks: u64) -> Vec<Named> {
    let mut targets = Vec::new();
    let memory = MemoryConnector::new(MemoryConfig::enabled().with_capacity(4 * OBJECTS * 3));
    targets.push(Named {
        name: "memory",
        family: "memory",
        baseline: false,
        writes: true,
        target: connector(
            "bench",
            memory.cache("bench", TestIndex::BUILT, &settings()),
        ),
    });
    targets.push(Named {
        name: "raw quick_cache",
        family: "memory",
        baseline: true,
        writes: true,
        target: Arc::new(QuickCache(quick_cache::sync::Cache::new(
            (4 * OBJECTS) as usize,
        ))),
    });
    targets.push(Named {
        name: "raw moka",
        family: "memory",
        baseline: true,
        writes: true,
        target: Arc::new(Moka(moka::sync::Cache::new(4 * OBJECTS))),
    });
    if let Some(url) = &servers.redis {
        let config = RedisConfig {
            pool_size: max_tasks.clamp(1, 32) as u32,
            ..RedisConfig::with_url(url)
        };
        let redis = RedisConnector::new(config, "bench").expect("redis connector");
        let cache: Arc<dyn Cache<TestIndex, TestEntry>> =
            redis.cache("bench", TestIndex::BUILT, &settings());
        targets.push(Named {
            name: "redis",
            family: "redis",
            baseline: false,
            writes: true,
            target: connector("bench", Arc::clone(&cache)),
        });
        let raw = redis::Client::open(url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("a redis connection");
        targets.push(Named {
            name: "raw redis GET/SET/DEL",
            family: "redis",
            baseline: true,
            writes: true,
            target: Arc::new(RawRedis(raw)),
        });
        // The breaker, open: what a call costs while the backend is down.
        let breaker = Arc::new(Breaker::new(
            "redis",
            BreakerSettings {
                max_consecutive_failures: 1,
                timeout: Duration::from_secs(24 * 3600),
                ..BreakerSettings::default()
            },
        ));
        for _ in 0..2 {
            if let Some(permit) = breaker.permit() {
                permit.failure();
            }
        }
        targets.push(Named {
            name: "redis, breaker open",
            family: "reference",
            baseline: false,
            writes: true,
            target: connector("open", Arc::new(BreakerCache::new("open", cache, breaker))),
        });
    }
    if let Some(url) = &servers.postgres {
        let config = PostgresConfig {
            pool_size: max_tasks.clamp(1, 32) as u32,
            ..PostgresConfig::with_url(url)
        };
        let postgres = PostgresConnector::new(&config, "bench").expect("postgres connector");
        postgres.setup().await.expect("postgres setup");
        targets.push(Named {
            name: "postgres",
            family: "postgres",
            baseline: false,
            writes: true,
            target: connector(
                "bench",
                postgres.cache("bench", TestIndex::BUILT, &settings()),
            ),
        });
        targets.push(Named {
            name: "raw prepared SELECT",
            family: "postgres",
            baseline: true,
            writes: true,
            target: Arc::new(RawPostgres {
                connections: raw_postgres(url, max_tasks.clamp(1, 32)).await,
                next: Default::default(),
                update_per_hit: false,
            }),
        });
        targets.push(Named {
            name: "update per hit (reference)",
            family: "postgres",
            baseline: true,
            writes: false,
            target: Arc::new(RawPostgres {
                connections: raw_postgres(url, max_tasks.clamp(1, 32)).await,
                next: Default::default(),
                update_per_hit: true,
            }),
        });
    }
    // Near caches: a memory level in front of each shared connector, on its channel.
    if let Some(url) = &servers.redis {
        let redis = RedisConnector::new(
            RedisConfig {
                pool_size: max_tasks.clamp(1, 32) as u32,
                ..RedisConfig::with_url(url)
            },
            "bench",
        )
        .expect("redis connector");
        let hub = Hub::new(Arc::new(redis.channel().expect("redis channel")));
        targets.push(Named {
            name: "near (redis)",
            family: "near",
            baseline: false,
            writes: true,
            target: near(
                "bench-near",
                redis.cache("bench-near", TestIndex::BUILT, &settings()),
                hub,
            )
            .await,
        });
    }
    if let Some(url) = &servers.postgres {
        let postgres = PostgresConnector::new(
            &PostgresConfig {
                pool_size: max_tasks.clamp(1, 32) as u32,
                ..PostgresConfig::with_url(url)
            },
            "bench",
        )
        .expect("postgres connector");
        let hub = Hub::new(Arc::new(postgres.channel().expect("postgres channel")));
        targets.push(Named {
            name: "near (postgres)",
            family: "near",
            baseline: false,
            writes: true,
            target: near(
                "bench-near",
                postgres.cache("bench-near", TestIndex::BUILT, &settings()),
                hub,
            )
            .await,
        });
    }
    targets.push(Named {
        name: "no-op (no caching)",
        family: "reference",
        baseline: false,
        writes: true,
        target: connector("noop", Arc::new(NoopCache)),
    });
    targets
}

/// A near cache over `shared`, once its hub is healthy.
async fn near(
    purpose: &str,
    shared: Arc<dyn Cache<TestIndex, TestEntry>>,
    hub: Hub,
) -> Arc<dyn Target> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !hub.is_healthy() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let memory = MemoryConnector::new(MemoryConfig::enabled().with_capacity(4 * OBJECTS * 3))
        .cache(purpose, TestIndex::BUILT, &settings());
    connector(
        purpose,
        Arc::new(NearCache::new(purpose, memory, Some(shared), hub)),
    )
}

/// `count` connections with the baseline statements prepared, on fresh baseline tables.
async fn raw_postgres(url: &str, count: u64) -> Vec<PgConnection> {
    let (admin, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a postgres connection");
    tokio::spawn(connection);
    admin
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS bench_raw;
             CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw.objects (
                 key text PRIMARY KEY,
                 last_used_at timestamptz NOT NULL DEFAULT now(),
                 payload bytea NOT NULL);
             CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw.ref_objects (
                 id bigint PRIMARY KEY,
                 created_at timestamptz NOT NULL DEFAULT now(),
                 last_used_at timestamptz NOT NULL DEFAULT now(),
                 payload bytea NOT NULL);
             CREATE UNLOGGED TABLE IF NOT EXISTS bench_raw.ref_keys (
                 key text PRIMARY KEY,
                 object_id bigint NOT NULL)",
        )
        .await
        .expect("baseline tables");
    let mut all = Vec::new();
    for _ in 0..count {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("a postgres connection");
        tokio::spawn(connection);
        let select = client
            .prepare("SELECT payload FROM bench_raw.objects WHERE key = $1")
            .await
            .expect("prepare");
        let update_per_hit = client
            .prepare(
                "UPDATE bench_raw.ref_objects SET last_used_at = now()
                 WHERE id = (SELECT object_id FROM bench_raw.ref_keys WHERE key = $1)
                   AND created_at > now() - interval '1 hour'
                   AND last_used_at > now() - interval '10 minutes'
                 RETURNING payload",
            )
            .await
            .expect("prepare");
        let upsert = client
            .prepare(
                "INSERT INTO bench_raw.objects (key, payload) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET payload = EXCLUDED.payload, last_used_at = now()",
            )
            .await
            .expect("prepare");
        let delete = client
            .prepare("DELETE FROM bench_raw.objects WHERE key = $1")
            .await
            .expect("prepare");
        all.push(PgConnection {
            client,
            select,
            update_per_hit,
            upsert,
            delete,
        });
    }
    all
}

/// Fills the reference-shaped tables from `bench_raw.objects` (the update-per-hit read needs
/// them; call after the raw table was populated).
pub(crate) async fn mirror_reference_tables(url: &str) {
    let (admin, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a postgres connection");
    tokio::spawn(connection);
    admin
        .batch_execute(
            "TRUNCATE bench_raw.ref_objects, bench_raw.ref_keys;
             INSERT INTO bench_raw.ref_objects (id, payload)
             SELECT substr(key, 5)::bigint, payload FROM bench_raw.objects;
             INSERT INTO bench_raw.ref_keys (key, object_id)
             SELECT key, substr(key, 5)::bigint FROM bench_raw.objects;",
        )
        .await
        .expect("reference tables");
}
