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

/// Where criterion keeps its results: `CRITERION_HOME`, or `criterion` in the target
/// directory the running benchmark was built in (`target/release/deps/<bench>-*`).
fn criterion_home() -> Option<std::path::PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The mean time (ns) criterion measured for `group/function` in its latest run, read from
/// its estimates file; `None` when it was not measured. Lets a benchmark print ratios of
/// figures measured in the same run.
pub fn criterion_mean_ns(group: &str, function: &str) -> Option<f64> {
    // Criterion names a group's directory with `/` replaced by `_`.
    let path = criterion_home()?
        .join(group.replace('/', "_"))
        .join(function.replace('/', "_"))
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Prints, per group, `function`'s time as a ratio to `baseline`'s (both measured in this
/// run) as a Markdown table, for each `(group, function, baseline)`; a ratio above 1 is slower.
pub fn print_ratios(title: &str, rows: &[(String, &str, &str)]) {
    println!("\n{title}");
    println!("| group | measured | baseline | time ratio | throughput ratio |");
    println!("| --- | --- | --- | ---: | ---: |");
    for (group, function, baseline) in rows {
        let (Some(ours), Some(base)) = (
            criterion_mean_ns(group, function),
            criterion_mean_ns(group, baseline),
        ) else {
            continue;
        };
        println!(
            "| {group} | {function} ({ours:.1} ns) | {baseline} ({base:.1} ns) | {:.2}x | {:.2}x |",
            ours / base,
            base / ours
        );
    }
}
