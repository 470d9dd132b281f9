//! Objects with many keys (SPEC 13): objects whose payload lists their keys, 1 to 10 000 keys
//! each, on Redis and PostgreSQL — bytes stored per object against what the object is worth,
//! set / get / invalidate latency per key count, and the worst latency another client's gets
//! see while a 10 000-key object is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cache_core::CacheSettings;
use cache_core::testkit::scale::{self, KEY_COUNTS};
use cache_core::testkit::{TestCache, TestIndex};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

/// One key count on one connector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KeyScale {
    /// Connector.
    pub(crate) connector: String,
    /// Keys per object.
    pub(crate) keys: usize,
    /// The backend's growth per object (Redis `used_memory`, PostgreSQL table + indexes).
    pub(crate) bytes_per_object: f64,
    /// Payload plus the keys' own bytes, per object.
    pub(crate) logical_bytes: f64,
    /// Median of a set of one such object (replacing the previous one), ms.
    pub(crate) set_ms: f64,
    /// Median of a get through one of its keys, µs.
    pub(crate) get_us: f64,
    /// Median of an invalidation through one of its keys, ms.
    pub(crate) invalidate_ms: f64,
    /// The longest get of another client (its own connections, other objects) while one such
    /// object was set, ms.
    pub(crate) other_get_max_ms: f64,
    /// That client's longest get when nothing else runs, ms.
    pub(crate) other_get_idle_max_ms: f64,
}

impl KeyScale {
    /// Bytes stored per byte the object is worth.
    pub(crate) fn ratio(&self) -> f64 {
        self.bytes_per_object / self.logical_bytes
    }
}

/// Every key count on Redis.
pub(crate) async fn redis(url: &str) -> Vec<KeyScale> {
    let connector = |version: &str| {
        RedisConnector::new(RedisConfig::with_url(url), version).expect("a valid Redis URL")
    };
    let (ours, other) = (connector("bench"), connector("bench-other"));
    let conn = redis::Client::open(url)
        .expect("a valid Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis for INFO");
    let mut out = Vec::new();
    for keys in KEY_COUNTS {
        let purpose = format!("keys-{keys}-{}", std::process::id());
        let cache: TestCache = ours.cache(&purpose, TestIndex::BUILT, &settings());
        let stored = scale::measure(&cache, keys, || {
            let mut conn = conn.clone();
            async move { used_memory(&mut conn).await }
        })
        .await;
        let bystander: TestCache = other.cache(&purpose, TestIndex::BUILT, &settings());
        out.push(timings("redis", &cache, &bystander, stored).await);
        cache.truncate().await.expect("truncate");
    }
    out
}

/// Every key count on PostgreSQL, each in a schema of its own (no freed space reused).
pub(crate) async fn postgres(url: &str) -> Vec<KeyScale> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("postgres for table sizes");
    tokio::spawn(connection);
    let client = Arc::new(client);
    let mut out = Vec::new();
    for keys in KEY_COUNTS {
        let schema = format!("bench_keys_{keys}");
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop the bench schema");
        let config = PostgresConfig {
            schema: schema.clone(),
            ..PostgresConfig::with_url(url)
        };
        let connector = |version: &str| {
            PostgresConnector::new(&config, version).expect("a valid PostgreSQL URL")
        };
        let (ours, other) = (connector("bench"), connector("bench-other"));
        ours.setup().await.expect("setup");
        let cache: TestCache = ours.cache("keys", TestIndex::BUILT, &settings());
        let sql = format!(
            "SELECT (pg_total_relation_size('{schema}.keys') \
             + pg_total_relation_size('{schema}.bodies'))::bigint"
        );
        let stored = scale::measure(&cache, keys, || {
            let (client, sql) = (Arc::clone(&client), sql.clone());
            async move {
                let size: i64 = client.query_one(&sql, &[]).await.expect("size").get(0);
                u64::try_from(size).unwrap_or(0)
            }
        })
        .await;
        let bystander: TestCache = other.cache("keys", TestIndex::BUILT, &settings());
        out.push(timings("postgres", &cache, &bystander, stored).await);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .expect("drop the bench schema");
    }
    out
}

fn settings() -> CacheSettings {
    CacheSettings {
        max_age: Duration::ZERO,
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    }
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Set, get and invalidate latency of objects with `stored.keys` keys on `cache`, and the
/// worst get `bystander` (another release's cache on its own connections) sees meanwhile.
async fn timings(
    connector: &str,
    cache: &TestCache,
    bystander: &TestCache,
    stored: scale::Stored,
) -> KeyScale {
    let keys = stored.keys;
    let rounds = if keys >= 10_000 { 5 } else { 20 };
    let probe = Arc::new(scale::object(1_000_000, 2));
    bystander.set(Arc::clone(&probe)).await.expect("set");
    let (_, other_get_idle_max_ms) = watch(bystander, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    let (mut sets, mut gets, mut invalidations) = (Vec::new(), Vec::new(), Vec::new());
    let mut other_get_max_ms: f64 = 0.0;
    for round in 0..rounds {
        let object = Arc::new(scale::object(round, keys));
        let (set_ms, watched) = watch(bystander, async {
            cache.set(Arc::clone(&object)).await.expect("set");
        })
        .await;
        sets.push(set_ms);
        other_get_max_ms = other_get_max_ms.max(watched);
        let key = object
            .names
            .last()
            .cloned()
            .unwrap_or_else(|| object.id.clone());
        let index = if keys > 1 {
            TestIndex::Name
        } else {
            TestIndex::Id
        };
        for _ in 0..5 {
            let started = Instant::now();
            let found = cache.get(index, &key).await.expect("get");
            gets.push(started.elapsed().as_secs_f64() * 1e6);
            assert!(found.is_some(), "{connector}: the object just set misses");
        }
        let started = Instant::now();
        cache
            .invalidate(TestIndex::Id, &[object.id.as_str()])
            .await
            .expect("invalidate");
        invalidations.push(started.elapsed().as_secs_f64() * 1e3);
    }
    KeyScale {
        connector: connector.to_owned(),
        keys,
        bytes_per_object: stored.bytes,
        logical_bytes: stored.logical,
        set_ms: median(sets),
        get_us: median(gets),
        invalidate_ms: median(invalidations),
        other_get_max_ms,
        other_get_idle_max_ms,
    }
}

/// Runs `work` while `bystander` reads its probe object in a loop: how long the work took and
/// the longest of those gets, ms.
async fn watch(bystander: &TestCache, work: impl Future<Output = ()>) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (bystander, stop) = (Arc::clone(bystander), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let id = format!("{:018}", 1_000_000);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let _ = bystander.get(TestIndex::Id, &id).await;
                longest = longest.max(started.elapsed());
            }
            longest
        })
    };
    // The reader is running before the work starts.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let started = Instant::now();
    work.await;
    let took = started.elapsed().as_secs_f64() * 1e3;
    stop.store(true, Ordering::Relaxed);
    let longest = reader
        .await
        .map_or(0.0, |longest| longest.as_secs_f64() * 1e3);
    (took, longest)
}
