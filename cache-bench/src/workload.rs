//! The workload family and the runner: warm-up, then repetitions, each task timing every
//! operation into its own histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use crate::targets::{OBJECTS, Target};

/// One kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Workload {
    /// Gets of stored objects, uniformly.
    GetHit,
    /// Gets of keys never stored.
    GetMiss,
    /// Sets (3 keys over 2 indices for the connectors).
    Set,
    /// Invalidations through one key (each followed by no re-set: mostly of absent objects
    /// after the first pass, as in a service).
    Invalidate,
    /// 95 % gets, 5 % sets, keys drawn from a Zipf distribution (exponent 1.0): a few hot
    /// objects, a long tail.
    Mixed,
}

impl Workload {
    /// Every workload, in report order.
    pub(crate) const ALL: [Workload; 5] = [
        Workload::GetHit,
        Workload::GetMiss,
        Workload::Set,
        Workload::Invalidate,
        Workload::Mixed,
    ];

    /// Its label in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Workload::GetHit => "get-hit",
            Workload::GetMiss => "get-miss",
            Workload::Set => "set",
            Workload::Invalidate => "invalidate",
            Workload::Mixed => "mixed 95/5 zipf",
        }
    }

    /// Its name on the command line (`--workloads`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::GetHit => "get-hit",
            Workload::GetMiss => "get-miss",
            Workload::Set => "set",
            Workload::Invalidate => "invalidate",
            Workload::Mixed => "mixed",
        }
    }

    /// Whether it writes (and so needs a target whose writes mean something).
    pub(crate) fn writes(self) -> bool {
        matches!(self, Workload::Set | Workload::Invalidate | Workload::Mixed)
    }
}

/// How long to warm up and measure, and how often.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Untimed run before the repetitions.
    pub(crate) warm_up: Duration,
    /// Length of one repetition.
    pub(crate) measure: Duration,
    /// Repetitions; throughput is their median, noise their spread.
    pub(crate) repetitions: usize,
}

/// What one (target, workload, tasks) cell measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Measurement {
    /// Operations per second, median of the repetitions.
    pub(crate) ops_per_sec: f64,
    /// (max − min) / median of the repetitions' throughput: the run's own noise.
    pub(crate) noise: f64,
    /// Latency percentiles in microseconds, over all repetitions.
    pub(crate) p50_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// 99.9th percentile.
    pub(crate) p999_us: f64,
}

/// Runs `workload` on `target` from `tasks` tasks.
pub(crate) async fn run(
    target: &Arc<dyn Target>,
    workload: Workload,
    tasks: u64,
    timing: Timing,
) -> Measurement {
    let _ = round(target, workload, tasks, timing.warm_up).await;
    let mut rates = Vec::new();
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..timing.repetitions.max(1) {
        let (ops, elapsed, histogram) = round(target, workload, tasks, timing.measure).await;
        rates.push(ops as f64 / elapsed.as_secs_f64());
        all.add(&histogram).expect("same histogram bounds");
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let noise = if median > 0.0 {
        (rates[rates.len() - 1] - rates[0]) / median
    } else {
        0.0
    };
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1_000.0;
    Measurement {
        ops_per_sec: median,
        noise,
        p50_us: us(0.50),
        p99_us: us(0.99),
        p999_us: us(0.999),
    }
}

/// One timed round: every task loops until `length` passed; operations, elapsed time and the
/// latencies (ns).
async fn round(
    target: &Arc<dyn Target>,
    workload: Workload,
    tasks: u64,
    length: Duration,
) -> (u64, Duration, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (target, stop) = (Arc::clone(target), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                let mut rng = SmallRng::seed_from_u64(t);
                let zipf = Zipf::new(OBJECTS as f64, 1.0).expect("zipf");
                let mut n = t * 7_919;
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let i = n % OBJECTS;
                    let op_started = Instant::now();
                    match workload {
                        Workload::GetHit => {
                            target.get(i).await;
                        }
                        Workload::GetMiss => {
                            target.get(OBJECTS * 10 + i).await;
                        }
                        Workload::Set => target.set(i).await,
                        Workload::Invalidate => target.invalidate(i).await,
                        Workload::Mixed => {
                            let hot = (zipf.sample(&mut rng) as u64).saturating_sub(1) % OBJECTS;
                            if n % 20 == 0 {
                                target.set(hot).await;
                            } else {
                                target.get(hot).await;
                            }
                        }
                    }
                    let took = u64::try_from(op_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    histogram.record(took.max(1)).ok();
                    ops += 1;
                    if ops % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                (ops, histogram)
            })
        })
        .collect();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0;
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    for handle in handles {
        let (n, h) = handle.await.expect("a load task panicked");
        ops += n;
        histogram.add(&h).expect("same histogram bounds");
    }
    (ops, started.elapsed(), histogram)
}

/// Stores every object in `target` (before the get workloads).
pub(crate) async fn populate(target: &Arc<dyn Target>, tasks: u64) {
    let handles: Vec<_> = (0..tasks.max(1))
        .map(|t| {
            let target = Arc::clone(target);
            tokio::spawn(async move {
                let mut i = t;
                while i < OBJECTS {
                    target.set(i).await;
                    i += tasks.max(1);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("populate task panicked");
    }
}
