//! The PostgreSQL connector through the public `ObjectCache` API against two baselines on the
//! same server, with the same payloads, in the same run, at 1 and 16 concurrent tasks:
//!
//! - **raw**: the floor — a prepared `SELECT payload FROM <unlogged table> WHERE key = $1`
//!   (get), `INSERT ... ON CONFLICT DO UPDATE` (set), `DELETE` (invalidate), one dedicated
//!   connection per task;
//! - **update per hit**: the reference's read — key table → object table in one
//!   `UPDATE objects SET last_used_at = now() WHERE id = (SELECT object_id FROM keys ...) AND
//!   <not expired> RETURNING payload` on every hit (reference defect 10), on unlogged tables of
//!   the same shape as ours.
//!
//! `get_hit/object_cache` runs with the default `MaxConcurrentReads` (gets queued behind
//! running statements share the next one); `get_hit/object_cache_unbatched` with
//! `MaxConcurrentReads: 0` (up to one statement per pooled connection), to show what that buys.
//!
//! Reported time is per operation (lower = more throughput).
//!
//! `cargo bench -p cache-postgres --bench postgres` needs `CACHE_TEST_POSTGRES_URL` (e.g. from
//! `cargo xtask serve`).

use std::sync::Arc;
use std::time::Duration;

use cache_core::testkit::load::{OBJECTS, entry, pick, spread};
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{CacheSettings, ObjectCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use criterion::Criterion;
use tokio_postgres::{Client, NoTls, Statement};

const TASKS: [u64; 2] = [1, 16];

/// One connection per task with the baselines' statements prepared on it.
struct Raw {
    client: Client,
    select: Statement,
    update_per_hit: Statement,
    upsert: Statement,
    delete: Statement,
}

async fn raw_connections(url: &str, count: u64) -> Vec<Arc<Raw>> {
    let mut all = Vec::new();
    for _ in 0..count {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("a connection to CACHE_TEST_POSTGRES_URL");
        tokio::spawn(connection);
        let prepare = |sql: &'static str| client.prepare(sql);
        let select = prepare("SELECT payload FROM bench_raw.objects WHERE key = $1")
            .await
            .expect("prepare");
        let update_per_hit = prepare(
            "UPDATE bench_raw.ref_objects SET last_used_at = now()
             WHERE id = (SELECT object_id FROM bench_raw.ref_keys WHERE key = $1)
               AND created_at > now() - interval '1 hour'
               AND last_used_at > now() - interval '10 minutes'
             RETURNING payload",
        )
        .await
        .expect("prepare");
        let upsert = prepare(
            "INSERT INTO bench_raw.objects (key, payload) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET payload = EXCLUDED.payload, last_used_at = now()",
        )
        .await
        .expect("prepare");
        let delete = prepare("DELETE FROM bench_raw.objects WHERE key = $1")
            .await
            .expect("prepare");
        all.push(Arc::new(Raw {
            client,
            select,
            update_per_hit,
            upsert,
            delete,
        }));
    }
    all
}

async fn populate(cache: &ObjectCache<TestIndex, TestEntry>, raw: &Raw) {
    for i in 0..OBJECTS {
        cache.set(entry(i)).await;
        let payload = serde_json::to_vec(&entry(i)).expect("json");
        raw.client
            .execute(&raw.upsert, &[&format!("org-{i}"), &payload])
            .await
            .expect("upsert");
    }
    // The reference-shaped tables: one object row, one key row per object.
    raw.client
        .batch_execute(
            "TRUNCATE bench_raw.ref_objects, bench_raw.ref_keys;
             INSERT INTO bench_raw.ref_objects (id, payload) SELECT row_number() OVER (), payload
             FROM bench_raw.objects;
             INSERT INTO bench_raw.ref_keys (key, object_id)
             SELECT 'org-' || (id - 1), id FROM bench_raw.ref_objects;",
        )
        .await
        .expect("reference tables");
}

fn benches(c: &mut Criterion) {
    let Ok(url) = std::env::var("CACHE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set CACHE_TEST_POSTGRES_URL (e.g. `cargo xtask serve`)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let max_tasks = *TASKS.iter().max().unwrap_or(&1);
    let (cache, unbatched, raws) = rt.block_on(async {
        let config = PostgresConfig {
            pool_size: max_tasks as u32,
            ..PostgresConfig::with_url(&url)
        };
        let connector = PostgresConnector::new(&config, "bench").expect("connector");
        connector.setup().await.expect("setup");
        let settings = CacheSettings::default();
        let backend = connector.cache::<TestIndex, TestEntry>("bench", TestIndex::BUILT, &settings);
        let unbatched = PostgresConnector::new(
            &PostgresConfig {
                max_concurrent_reads: 0,
                ..config
            },
            "bench",
        )
        .expect("connector")
        .cache::<TestIndex, TestEntry>("bench", TestIndex::BUILT, &settings);
        let (admin, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("a connection to CACHE_TEST_POSTGRES_URL");
        tokio::spawn(connection);
        admin
            .batch_execute(
                "DROP SCHEMA IF EXISTS bench_raw CASCADE; CREATE SCHEMA bench_raw;
                 CREATE UNLOGGED TABLE bench_raw.objects (
                     key text PRIMARY KEY,
                     last_used_at timestamptz NOT NULL DEFAULT now(),
                     payload bytea NOT NULL);
                 CREATE UNLOGGED TABLE bench_raw.ref_objects (
                     id bigint PRIMARY KEY,
                     created_at timestamptz NOT NULL DEFAULT now(),
                     last_used_at timestamptz NOT NULL DEFAULT now(),
                     payload bytea NOT NULL);
                 CREATE UNLOGGED TABLE bench_raw.ref_keys (
                     key text PRIMARY KEY,
                     object_id bigint NOT NULL)",
            )
            .await
            .expect("baseline table");
        let raws = raw_connections(&url, max_tasks).await;
        (
            ObjectCache::new("bench", backend),
            ObjectCache::new("bench", unbatched),
            raws,
        )
    });
    let raw_for = move |raws: &[Arc<Raw>], t: u64| Arc::clone(&raws[t as usize % raws.len()]);
    for tasks in TASKS {
        rt.block_on(populate(&cache, &raws[0]));
        let mut group = c.benchmark_group(format!("postgres_{tasks}_tasks"));
        group
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .sample_size(20);
        for (name, cache) in [
            ("get_hit/object_cache", &cache),
            ("get_hit/object_cache_unbatched", &unbatched),
        ] {
            group.bench_function(name, |b| {
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
        }
        for (name, update) in [
            ("get_hit/raw_SELECT", false),
            ("get_hit/UPDATE_per_hit", true),
        ] {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let raws = raws.clone();
                    spread(&rt, iters, tasks, move |t, n| {
                        let raw = raw_for(&raws, t);
                        async move {
                            let statement = if update {
                                &raw.update_per_hit
                            } else {
                                &raw.select
                            };
                            let row = raw
                                .client
                                .query_opt(statement, &[&format!("org-{}", pick(t, n))])
                                .await
                                .expect("query");
                            assert!(row.is_some(), "a hit");
                        }
                    })
                })
            });
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
        group.bench_function("set_3_keys/raw_UPSERT", |b| {
            b.iter_custom(|iters| {
                let raws = raws.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let raw = raw_for(&raws, t);
                    async move {
                        let payload = serde_json::to_vec(&entry(pick(t, n))).expect("json");
                        raw.client
                            .execute(&raw.upsert, &[&format!("org-{}", pick(t, n)), &payload])
                            .await
                            .expect("upsert");
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
        group.bench_function("invalidate/raw_DELETE", |b| {
            b.iter_custom(|iters| {
                let raws = raws.clone();
                spread(&rt, iters, tasks, move |t, n| {
                    let raw = raw_for(&raws, t);
                    async move {
                        raw.client
                            .execute(&raw.delete, &[&format!("org-{}", pick(t, n))])
                            .await
                            .expect("delete");
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
    for tasks in TASKS {
        let group = format!("postgres_{tasks}_tasks");
        rows.push((group.clone(), "get_hit/object_cache", "get_hit/raw_SELECT"));
        rows.push((
            group.clone(),
            "get_hit/object_cache",
            "get_hit/UPDATE_per_hit",
        ));
        rows.push((
            group.clone(),
            "get_hit/object_cache_unbatched",
            "get_hit/raw_SELECT",
        ));
        rows.push((
            group.clone(),
            "set_3_keys/object_cache",
            "set_3_keys/raw_UPSERT",
        ));
        rows.push((group, "invalidate/object_cache", "invalidate/raw_DELETE"));
    }
    cache_core::testkit::load::print_ratios(
        "against the raw statements in this run (goals: get-hit throughput at 1 task at least \
         0.8x the raw SELECT, at 16 tasks at least 2x the update-per-hit read)",
        &rows,
    );
}
