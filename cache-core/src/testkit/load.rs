//! Load generation for the connectors' benchmarks: the same objects, key choice and task
//! spreading for every backend, so their figures compare.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use super::TestEntry;

/// Objects a benchmark cycles through.
pub const OBJECTS: u64 = 1_000;

/// The `i`-th benchmark object: an organisation with an id and two domains, so a set stores
/// 3 keys over 2 indices.
pub fn entry(i: u64) -> TestEntry {
    TestEntry::new(
        &format!("org-{i}"),
        &[&format!("org-{i}.example"), &format!("alias-{i}.example")],
    )
}

/// The object task `task` uses for its `n`-th operation: tasks walk the objects from
/// different starting points.
pub fn pick(task: u64, n: u64) -> u64 {
    (task * 7_919 + n) % OBJECTS
}

/// Runs `op(task, n)` about `iters` times spread over `tasks` concurrent tasks on `rt`, and
/// returns the elapsed time (for criterion's `iter_custom`).
pub fn spread<F, Fut>(rt: &Runtime, iters: u64, tasks: u64, op: F) -> Duration
where
    F: Fn(u64, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    rt.block_on(async {
        let started = Instant::now();
        let per_task = iters.div_ceil(tasks);
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let op = Arc::clone(&op);
                tokio::spawn(async move {
                    for n in 0..per_task {
                        op(t, n).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a benchmark task panicked");
        }
        started.elapsed()
    })
}
