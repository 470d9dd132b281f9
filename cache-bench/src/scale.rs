//! The scale run: many objects per connector through the API, the memory each object costs,
//! and how long pruning expired objects takes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::testkit::load::entry;
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ObjectCache};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};
use tokio_postgres::NoTls;

use crate::report::Scale;

const TASKS: u64 = 32;

/// Stores objects `0..objects` from [`TASKS`] tasks; the seconds it took.
async fn load(cache: &ObjectCache<TestIndex, TestEntry>, objects: u64) -> f64 {
    let started = Instant::now();
    let handles: Vec<_> = (0..TASKS)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < objects {
                    cache.set(entry(i)).await;
                    i += TASKS;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("a load task panicked");
    }
    started.elapsed().as_secs_f64()
}

fn settings(max_age: Duration) -> CacheSettings {
    CacheSettings {
        max_age,
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    }
}

/// This process's resident memory in bytes.
fn rss() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb * 1024.0)
        .unwrap_or(0.0)
}

/// The memory connector: RSS growth per object, and pruning `expired` objects.
pub(crate) async fn memory(objects: u64, expired: u64) -> Scale {
    let connector =
        MemoryConnector::new(MemoryConfig::enabled().with_capacity(objects * 3 + expired * 3));
    let before = rss();
    let cache = ObjectCache::new(
        "scale",
        connector.cache::<TestIndex, TestEntry>(
            "scale",
            TestIndex::BUILT,
            &settings(Duration::ZERO),
        ) as Arc<dyn Cache<_, _>>,
    );
    let load_secs = load(&cache, objects).await;
    let bytes_per_object = (rss() - before) / objects as f64;
    drop(cache);
    let short = connector.cache::<TestIndex, TestEntry>(
        "prune",
        TestIndex::BUILT,
        &settings(Duration::from_millis(200)),
    );
    let prune = Arc::clone(&short).into_prune().expect("memory prunes");
    load(
        &ObjectCache::new("prune", short as Arc<dyn Cache<_, _>>),
        expired,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    prune.prune().await.expect("memory prune");
    Scale {
        connector: "memory".into(),
        objects,
        measure: "process RSS".into(),
        bytes_per_object,
        load_secs,
        prune_ms: Some(started.elapsed().as_secs_f64() * 1e3),
        pruned: expired,
    }
}

async fn used_memory(client: &redis::Client) -> f64 {
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("a redis connection");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut c)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Redis: `used_memory` growth per object (keys expire on their own: no prune).
pub(crate) async fn redis(url: &str, objects: u64) -> Scale {
    let client = redis::Client::open(url).expect("redis url");
    let connector = RedisConnector::new(
        RedisConfig {
            pool_size: TASKS as u32,
            ..RedisConfig::with_url(url)
        },
        "bench",
    )
    .expect("redis connector");
    let cache = ObjectCache::new(
        "scale",
        connector.cache::<TestIndex, TestEntry>(
            "scale",
            TestIndex::BUILT,
            &settings(Duration::from_secs(3600)),
        ) as Arc<dyn Cache<_, _>>,
    );
    let before = used_memory(&client).await;
    let load_secs = load(&cache, objects).await;
    let bytes_per_object = (used_memory(&client).await - before) / objects as f64;
    cache.truncate().await.expect("truncate");
    Scale {
        connector: "redis".into(),
        objects,
        measure: "used_memory".into(),
        bytes_per_object,
        load_secs,
        prune_ms: None,
        pruned: 0,
    }
}

/// PostgreSQL: table size growth per object, and pruning `expired` objects.
pub(crate) async fn postgres(url: &str, objects: u64, expired: u64) -> Scale {
    let (admin, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("a postgres connection");
    tokio::spawn(connection);
    let size = || async {
        let row = admin
            .query_one(
                "SELECT (pg_total_relation_size('cache.keys') + pg_total_relation_size('cache.bodies'))::float8",
                &[],
            )
            .await
            .expect("table size");
        row.get::<_, f64>(0)
    };
    let connector = PostgresConnector::new(
        &PostgresConfig {
            pool_size: TASKS as u32,
            ..PostgresConfig::with_url(url)
        },
        "bench",
    )
    .expect("postgres connector");
    connector.setup().await.expect("setup");
    let cache = ObjectCache::new(
        "scale",
        connector.cache::<TestIndex, TestEntry>(
            "scale",
            TestIndex::BUILT,
            &settings(Duration::ZERO),
        ) as Arc<dyn Cache<_, _>>,
    );
    let before = size().await;
    let load_secs = load(&cache, objects).await;
    let bytes_per_object = (size().await - before) / objects as f64;
    cache.truncate().await.expect("truncate");
    let short = connector.cache::<TestIndex, TestEntry>(
        "prune",
        TestIndex::BUILT,
        &settings(Duration::from_secs(1)),
    );
    load(
        &ObjectCache::new("prune", Arc::clone(&short) as Arc<dyn Cache<_, _>>),
        expired,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let started = Instant::now();
    let report = short.prune_report().await.expect("postgres prune");
    Scale {
        connector: "postgres".into(),
        objects,
        measure: "table + index size".into(),
        bytes_per_object,
        load_secs,
        prune_ms: Some(started.elapsed().as_secs_f64() * 1e3),
        // Every benchmark object has 3 keys, a row each.
        pruned: report.rows / 3,
    }
}
