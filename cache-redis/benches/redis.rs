//! The Redis connector through the public `ObjectCache` API against the floor of raw redis-rs
//! commands on the same kind of connection (multiplexed), the same payload, in the same run:
//! get-hit vs `GET` of the same JSON payload, decoded (at 1, 8 and 32 concurrent tasks), set
//! (an object with 3 keys over 2 indices) vs `SET`, invalidate vs `DEL` (1 and 32 tasks).
//! Reported time is per operation (lower = more throughput); the bench ends with the ratios
//! of this run (goal: get-hit throughput at least 0.8x the raw GET at every task count).
//!
//! `cargo bench -p cache-redis --bench redis` uses `CACHE_TEST_REDIS_URL` when set (e.g. from
//! `cargo xtask serve`), otherwise starts a throwaway `redis-server` on a free loopback port.

use std::time::Duration;

use cache_core::testkit::load::{OBJECTS, entry, pick, spread};
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{CacheSettings, ObjectCache};
use cache_redis::{RedisConfig, RedisConnector};
use criterion::Criterion;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

#[path = "../tests/common/throwaway.rs"]
mod throwaway;

/// The server to measure against, and the throwaway one if this run started it.
fn server() -> (String, Option<throwaway::Server>) {
    if let Ok(url) = std::env::var("CACHE_TEST_REDIS_URL") {
        return (url, None);
    }
    let server = throwaway::Server::start(None).expect(
        "redis-server (install it, or run `cargo xtask serve` and export CACHE_TEST_REDIS_URL)",
    );
    (server.url(), Some(server))
}

async fn populate(cache: &ObjectCache<TestIndex, TestEntry>, raw: &MultiplexedConnection) {
    for i in 0..OBJECTS {
        cache.set(entry(i)).await;
        let payload = serde_json::to_vec(&entry(i)).expect("json");
        let _: () = raw
            .clone()
            .set(format!("raw:{i}"), payload)
            .await
            .expect("SET");
    }
}

fn benches(c: &mut Criterion) {
    let (url, _server) = server();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (cache, raw) = rt.block_on(async {
        let config = RedisConfig {
            pool_size: 32,
            ..RedisConfig::with_url(&url)
        };
        let connector = RedisConnector::new(config, "bench").expect("connector");
        let backend = connector.cache::<TestIndex, TestEntry>(
            "bench",
            TestIndex::BUILT,
            &CacheSettings::default(),
        );
        let raw = redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        (ObjectCache::new("bench", backend), raw)
    });
    for tasks in [1u64, 8, 32] {
        rt.block_on(populate(&cache, &raw));
        let mut group = c.benchmark_group(format!("redis_{tasks}_tasks"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20);
        group.bench_function("get_hit/object_cache", |b| {
            b.iter_custom(|iters| {
                let cache = cache.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let cache = cache.clone();
                    async move {
                        let hit = cache
                            .get(TestIndex::Id, &format!("org-{}", pick(t, n)))
                            .await;
                        assert!(hit.is_some(), "a hit");
                    }
                })
            })
        });
        group.bench_function("get_hit/raw_GET", |b| {
            b.iter_custom(|iters| {
                let raw = raw.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let mut raw = raw.clone();
                    async move {
                        let v: Option<Vec<u8>> =
                            raw.get(format!("raw:{}", pick(t, n))).await.expect("GET");
                        let decoded: TestEntry =
                            serde_json::from_slice(&v.expect("a hit")).expect("JSON");
                        std::hint::black_box(decoded);
                    }
                })
            })
        });
        if tasks == 8 {
            // Writes at 1 and 32 tasks tell enough.
            group.finish();
            continue;
        }
        group.bench_function("set_3_keys/object_cache", |b| {
            b.iter_custom(|iters| {
                let cache = cache.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let cache = cache.clone();
                    async move { cache.set(entry(pick(t, n))).await }
                })
            })
        });
        group.bench_function("set_3_keys/raw_SET", |b| {
            b.iter_custom(|iters| {
                let raw = raw.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let mut raw = raw.clone();
                    async move {
                        let payload = serde_json::to_vec(&entry(pick(t, n))).expect("json");
                        let _: () = raw
                            .set(format!("raw:{}", pick(t, n)), payload)
                            .await
                            .expect("SET");
                    }
                })
            })
        });
        group.bench_function("invalidate/object_cache", |b| {
            b.iter_custom(|iters| {
                let cache = cache.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let cache = cache.clone();
                    async move {
                        let key = format!("org-{}", pick(t, n));
                        cache
                            .invalidate(TestIndex::Id, &[key])
                            .await
                            .expect("invalidate");
                    }
                })
            })
        });
        group.bench_function("invalidate/raw_DEL", |b| {
            b.iter_custom(|iters| {
                let raw = raw.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let mut raw = raw.clone();
                    async move {
                        let _: i64 = raw.del(format!("raw:{}", pick(t, n))).await.expect("DEL");
                    }
                })
            })
        });
        group.finish();
    }
    rt.block_on(async { cache.truncate().await.expect("truncate") });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    let mut rows = Vec::new();
    for tasks in [1, 8, 32] {
        let group = format!("redis_{tasks}_tasks");
        rows.push((group.clone(), "get_hit/object_cache", "get_hit/raw_GET"));
        rows.push((
            group.clone(),
            "set_3_keys/object_cache",
            "set_3_keys/raw_SET",
        ));
        rows.push((group, "invalidate/object_cache", "invalidate/raw_DEL"));
    }
    cache_core::testkit::load::print_ratios(
        "against raw redis-rs in this run (goal: get-hit throughput at least 0.8x the raw GET)",
        &rows,
    );
}
