//! A stampede: many requests missing the same key at once (the popular object that just
//! expired or was invalidated). With single flight, one load answers them all; the waiters'
//! latency is compared with one load alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::testkit::load::entry;
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ObjectCache};
use cache_memory::{MemoryConfig, MemoryConnector};
use serde::{Deserialize, Serialize};

use crate::counted::Counted;

/// How long the simulated source of truth takes to answer.
const LOAD: Duration = Duration::from_millis(5);

/// What one stampede did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Stampede {
    /// Where: `memory` (one process), or a shared connector with several processes.
    #[serde(default)]
    pub(crate) connector: String,
    /// Processes (object caches with connections of their own) the tasks were spread over.
    #[serde(default)]
    pub(crate) processes: u64,
    /// Tasks that missed the same key at once.
    pub(crate) tasks: u64,
    /// Loads the source of truth served for them.
    pub(crate) loads: u64,
    /// One load alone, through `get_or_load`, µs.
    pub(crate) single_us: f64,
    /// The waiters' latency, µs: median, 99th percentile, longest.
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

/// One process on the memory connector.
pub(crate) async fn run(tasks: u64) -> Stampede {
    let connector = MemoryConnector::new(MemoryConfig::enabled());
    let cache = ObjectCache::new(
        "stampede",
        connector.cache::<TestIndex, TestEntry>(
            "stampede",
            TestIndex::BUILT,
            &CacheSettings::default(),
        ) as Arc<dyn Cache<_, _>>,
    );
    stampede("memory", vec![cache], tasks).await
}

/// `tasks` concurrent `get_or_load`s of one missing key spread over `caches` (processes), the
/// load taking [`LOAD`]: how many loads ran and how long the waiters took.
pub(crate) async fn stampede(
    connector: &str,
    caches: Vec<ObjectCache<TestIndex, TestEntry>>,
    tasks: u64,
) -> Stampede {
    let processes = caches.len() as u64;
    let cache = caches[0].clone();
    let loads = Arc::new(AtomicU64::new(0));
    let loader = |i: u64| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(LOAD).await;
            Ok::<_, std::convert::Infallible>(Some(entry(i)))
        }
    };
    let started = Instant::now();
    cache
        .get_or_load(TestIndex::Id, "org-1", loader(1))
        .await
        .expect("infallible");
    let single_us = started.elapsed().as_secs_f64() * 1e6;
    loads.store(0, Ordering::SeqCst);
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks as usize));
    let handles: Vec<_> = (0..tasks)
        .map(|n| {
            let cache = caches[n as usize % caches.len()].clone();
            let (barrier, load) = (Arc::clone(&barrier), loader(2));
            tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let found = cache
                    .get_or_load(TestIndex::Id, "org-2", load)
                    .await
                    .expect("infallible");
                assert!(found.is_some());
                started.elapsed().as_secs_f64() * 1e6
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.push(handle.await.expect("a stampeding task"));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Stampede {
        connector: connector.to_owned(),
        processes,
        tasks,
        loads: loads.load(Ordering::SeqCst),
        single_us,
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: latencies.last().copied().unwrap_or(0.0),
    }
}

/// The miss path of a read-through on a shared connector with leases against without: the
/// median `get_or_load` of a key that misses, with an instant load, µs; and one round trip to
/// the shared level (the median `get` of a missing key) to judge the difference by.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MissCost {
    /// The connector.
    pub(crate) connector: String,
    /// With a lease (the miss taking the lease, load, fill).
    pub(crate) leased_us: f64,
    /// Without (get, load, set).
    pub(crate) plain_us: f64,
    /// One round trip: a plain `get` of a missing key, µs.
    #[serde(default)]
    pub(crate) round_trip_us: f64,
    /// Calls reaching the connector (each one round trip) per miss with a lease, on average.
    #[serde(default)]
    pub(crate) leased_round_trips: f64,
    /// The same without a lease.
    #[serde(default)]
    pub(crate) plain_round_trips: f64,
}

/// The median of `times`.
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Processes of a shared connector: `processes` object caches of one purpose, each made by
/// `make` (with connections of its own).
pub(crate) async fn shared(
    connector: &str,
    processes: usize,
    tasks: u64,
    make: impl Fn(&str) -> Arc<dyn Cache<TestIndex, TestEntry>>,
) -> Stampede {
    let purpose = format!("stampede-{connector}-{}", std::process::id());
    let caches = (0..processes)
        .map(|_| ObjectCache::new(purpose.as_str(), make(&purpose)))
        .collect();
    stampede(connector, caches, tasks).await
}

/// [`MissCost`] of caches made by `make(purpose, leases on)`.
pub(crate) async fn miss_cost(
    connector: &str,
    make: impl Fn(&str, bool) -> Arc<dyn Cache<TestIndex, TestEntry>>,
) -> MissCost {
    let cache = |leases: bool, calls: &Arc<AtomicU64>| {
        let purpose = format!("miss-{connector}-{leases}-{}", std::process::id());
        let counted = Counted::new(make(&purpose, leases), Arc::clone(calls));
        ObjectCache::new(purpose.as_str(), counted as Arc<dyn Cache<_, _>>)
    };
    let read_through = |leases: bool| {
        let calls = Arc::new(AtomicU64::new(0));
        let cache = cache(leases, &calls);
        async move {
            let mut times = Vec::new();
            for i in 0..MISSES {
                let started = Instant::now();
                cache
                    .get_or_load(TestIndex::Id, &format!("org-{i}"), move || async move {
                        Ok::<_, std::convert::Infallible>(Some(entry(i)))
                    })
                    .await
                    .expect("infallible");
                times.push(started.elapsed().as_secs_f64() * 1e6);
            }
            let round_trips = calls.load(Ordering::Relaxed) as f64 / MISSES as f64;
            (median(times), round_trips)
        }
    };
    let (leased_us, leased_round_trips) = read_through(true).await;
    let (plain_us, plain_round_trips) = read_through(false).await;
    let plain = cache(false, &Arc::new(AtomicU64::new(0)));
    let mut times = Vec::new();
    for i in 0..MISSES {
        let started = Instant::now();
        let found = plain.get(TestIndex::Id, &format!("absent-{i}")).await;
        assert!(found.is_none(), "{connector}: a key never set is found");
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    MissCost {
        connector: connector.to_owned(),
        leased_us,
        plain_us,
        round_trip_us: median(times),
        leased_round_trips,
        plain_round_trips,
    }
}

/// Misses measured per figure of [`MissCost`].
const MISSES: u64 = 300;

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stampede_runs_one_load() {
        let stampede = super::run(200).await;
        assert_eq!(stampede.loads, 1, "{stampede:?}");
        assert!(stampede.max_us >= super::LOAD.as_secs_f64() * 1e6 * 0.9);
    }
}
