//! Hits measured alone: no key building, no task spawning, the future polled once (the work an
//! executor does for a get that answers at once) — nanoseconds per hit, for the goals that
//! compare hit paths (the workload cells include ~80 ns of key building per operation).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use cache_core::testkit::load::entry;
use cache_core::testkit::{LocalChannel, TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ObjectCache};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};
use serde::{Deserialize, Serialize};

/// One isolated measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Isolated {
    /// What was measured, e.g. `memory hit`.
    pub(crate) subject: String,
    /// What it is compared with, e.g. `raw quick_cache get`.
    pub(crate) baseline: String,
    /// Objects held.
    pub(crate) objects: u64,
    /// Threads hitting at once.
    pub(crate) threads: u64,
    /// Nanoseconds per hit of the subject.
    pub(crate) subject_ns: f64,
    /// Nanoseconds per get of the baseline.
    pub(crate) baseline_ns: f64,
}

impl Isolated {
    /// How many times the baseline's cost a hit of the subject costs.
    pub(crate) fn ratio(&self) -> f64 {
        self.subject_ns / self.baseline_ns
    }
}

/// Polls a future that must be ready at once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-process hit must answer without awaiting"),
    }
}

/// Nanoseconds per call of `get` over `keys` on `threads` threads, `per_round` calls each.
fn round(threads: u64, keys: &[String], per_round: u64, get: &(impl Fn(&str) + Sync)) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let offset = t as usize * keys.len() / threads as usize;
                for n in 0..per_round as usize {
                    get(&keys[(offset + n) % keys.len()]);
                }
            });
        }
    });
    started.elapsed().as_nanos() as f64 / (per_round * threads) as f64
}

/// The best of `rounds` rounds of each contender, the contenders taking turns round by round:
/// on a shared machine a disturbance then hits every contender alike instead of one of them,
/// and the best round of each is its least disturbed one.
fn interleaved<const N: usize>(
    threads: u64,
    keys: &[String],
    per_round: u64,
    rounds: u32,
    contenders: [&(dyn Fn(&str) + Sync); N],
) -> [f64; N] {
    let mut best = [f64::INFINITY; N];
    for _ in 0..rounds {
        for (best, get) in best.iter_mut().zip(contenders) {
            *best = best.min(round(threads, keys, per_round, &get));
        }
    }
    best
}

/// The memory connector's hit through `ObjectCache` against raw quick_cache on the same keys,
/// and a near cache's memory-level hit against the memory connector's, at 64 and 10 000
/// objects on 1 and 2 threads.
pub(crate) async fn run(quick: bool) -> Vec<Isolated> {
    let (per_round, rounds) = if quick { (200_000, 3) } else { (1_000_000, 15) };
    let settings = CacheSettings::default();
    let hub = Hub::new(Arc::new(LocalChannel::new()));
    while !hub.is_healthy() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut results = Vec::new();
    for objects in [64u64, 10_000] {
        // Room for every key of every object in every shard of the map (3 keys an object).
        let capacity = 16 * objects;
        let connector = MemoryConnector::new(MemoryConfig::enabled().with_capacity(capacity));
        let memory = ObjectCache::new(
            "isolated",
            connector.cache::<TestIndex, TestEntry>("isolated", TestIndex::BUILT, &settings)
                as Arc<dyn Cache<_, _>>,
        );
        let near = ObjectCache::new(
            "isolated-near",
            Arc::new(NearCache::new(
                "isolated-near",
                connector.cache("isolated-near", TestIndex::BUILT, &settings),
                Some(
                    connector.cache("isolated-shared", TestIndex::BUILT, &settings)
                        as Arc<dyn Cache<_, _>>,
                ),
                hub.clone(),
            )) as Arc<dyn Cache<_, _>>,
        );
        let quick_cache =
            quick_cache::sync::Cache::<String, Arc<TestEntry>>::new(capacity as usize);
        let keys: Vec<String> = (0..objects).map(|i| format!("org-{i}")).collect();
        for i in 0..objects {
            memory.set(entry(i)).await;
            near.set(entry(i)).await;
            quick_cache.insert(format!("org-{i}"), Arc::new(entry(i)));
        }
        for threads in [1u64, 2] {
            let hit = |cache: &ObjectCache<TestIndex, TestEntry>| {
                let cache = cache.clone();
                move |key: &str| {
                    black_box(ready(cache.get(TestIndex::Id, black_box(key))).expect("a hit"));
                }
            };
            let raw = |key: &str| {
                black_box(quick_cache.get(black_box(key)).expect("a hit"));
            };
            let [raw, ours, near_ns] = interleaved(
                threads,
                &keys,
                per_round,
                rounds,
                [&raw, &hit(&memory), &hit(&near)],
            );
            results.push(Isolated {
                subject: "memory hit (ObjectCache)".into(),
                baseline: "raw quick_cache get".into(),
                objects,
                threads,
                subject_ns: ours,
                baseline_ns: raw,
            });
            results.push(Isolated {
                subject: "near cache memory-level hit".into(),
                baseline: "memory hit (ObjectCache)".into(),
                objects,
                threads,
                subject_ns: near_ns,
                baseline_ns: ours,
            });
        }
    }
    results
}
