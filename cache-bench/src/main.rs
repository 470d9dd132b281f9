//! The benchmark harness behind `cargo xtask bench` (which starts the servers and passes their
//! URLs in `CACHE_TEST_REDIS_URL` / `CACHE_TEST_POSTGRES_URL`).
//!
//! ```text
//! cache-bench [--quick] [--out DIR] [--compare OLD.json] [--only FAMILY[,FAMILY...]|isolated]
//!             [--tasks N[,N...]] [--workloads LABEL[,LABEL...]]
//! ```
//!
//! Runs every workload ([`workload::Workload`]) on every target ([`targets::all`]) at 1, 8 and
//! 32 tasks (and 16 for PostgreSQL, where its goals are set), then the scale run, and writes
//! `results.json`, `results.md` and `latency.svg` to `DIR` (default `target/bench`).

mod counted;
mod deploy;
mod fanout;
mod isolated;
mod keys;
mod propagation;
mod report;
mod scale;
mod stampede;
mod targets;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use report::{Cell, Report};
use targets::Servers;
use workload::{Timing, Workload};

/// The target families `--only` takes (several, comma-separated).
const FAMILIES: [&str; 5] = ["memory", "redis", "postgres", "near", "reference"];
/// The sections `--only` takes (one at a time).
const SECTIONS: [&str; 6] = [
    "isolated",
    "keys",
    "deploy",
    "fanout",
    "propagation",
    "stampede",
];

struct Args {
    quick: bool,
    out: PathBuf,
    compare: Option<PathBuf>,
    /// Only the targets of this family (for a quick look at one connector).
    only: Option<String>,
    /// Only these task counts (for a quick look at one cell).
    tasks: Option<Vec<u64>>,
    /// Only these workloads.
    workloads: Option<Vec<Workload>>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        out: PathBuf::from("target/bench"),
        compare: None,
        only: None,
        tasks: None,
        workloads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = it.next().ok_or("--out needs a directory")?.into(),
            "--compare" => args.compare = Some(it.next().ok_or("--compare needs a file")?.into()),
            "--only" => {
                let only = it.next().ok_or("--only needs a family or a section")?;
                let known = |name: &str| FAMILIES.contains(&name);
                if !SECTIONS.contains(&only.as_str()) && !only.split(',').all(known) {
                    return Err(format!(
                        "--only: {only:?} is neither a section ({}) nor families ({}, \
                         comma-separated)",
                        SECTIONS.join(", "),
                        FAMILIES.join(", ")
                    ));
                }
                args.only = Some(only);
            }
            "--tasks" => {
                let list = it.next().ok_or("--tasks needs task counts, e.g. 1,8")?;
                let counts = list
                    .split(',')
                    .map(|n| match n.trim().parse::<u64>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!("--tasks: {n:?} is not a task count (1 or more)")),
                    })
                    .collect::<Result<_, _>>()?;
                args.tasks = Some(counts);
            }
            "--workloads" => {
                let list = it
                    .next()
                    .ok_or("--workloads needs workloads, e.g. set,mixed")?;
                let workloads = list
                    .split(',')
                    .map(|name| {
                        Workload::ALL
                            .into_iter()
                            .find(|w| w.name() == name.trim())
                            .ok_or_else(|| {
                                format!(
                                    "--workloads: unknown workload {name:?}; one of {}",
                                    Workload::ALL.map(Workload::name).join(", ")
                                )
                            })
                    })
                    .collect::<Result<_, _>>()?;
                args.workloads = Some(workloads);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cache-bench [--quick] [--out DIR] \
                     [--compare OLD.json] [--only FAMILY,... or SECTION] [--tasks N,...] \
                     [--workloads get-hit,get-miss,set,mixed,invalidate]; families: {}; \
                     sections: {}",
                    FAMILIES.join(", "),
                    SECTIONS.join(", ")
                ));
            }
        }
    }
    Ok(args)
}

/// CPU model, cores and memory, for the report.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {memory:.0} GiB")
}

/// The key-count cells of every shared connector that has a server.
async fn shared_keys(servers: &Servers) -> Vec<keys::KeyScale> {
    let mut out = Vec::new();
    if let Some(url) = &servers.redis {
        out.extend(keys::redis(url).await);
    }
    if let Some(url) = &servers.postgres {
        out.extend(keys::postgres(url).await);
    }
    out
}

/// Cross-process stampedes (8 processes, 1 000 `get_or_load`s of one missing key) and the
/// miss path's cost with a lease, on every shared connector that has a server.
async fn shared_stampedes(servers: &Servers) -> (Vec<stampede::Stampede>, Vec<stampede::MissCost>) {
    use cache_core::testkit::{TestEntry, TestIndex};
    use cache_core::{Cache, CacheSettings, LeaseSettings};
    use std::sync::Arc;
    let settings = |leases: bool| CacheSettings {
        lease: LeaseSettings {
            enabled: leases,
            ..LeaseSettings::default()
        },
        ..CacheSettings::default()
    };
    let (mut stampedes, mut costs) = (Vec::new(), Vec::new());
    if let Some(url) = &servers.redis {
        let make = |purpose: &str, leases: bool| -> Arc<dyn Cache<TestIndex, TestEntry>> {
            cache_redis::RedisConnector::new(cache_redis::RedisConfig::with_url(url), "bench")
                .expect("redis")
                .cache(purpose, TestIndex::BUILT, &settings(leases))
        };
        stampedes.push(stampede::shared("redis", 8, 1_000, |p| make(p, true)).await);
        costs.push(stampede::miss_cost("redis", make).await);
    }
    if let Some(url) = &servers.postgres {
        let config = cache_postgres::PostgresConfig::with_url(url);
        let setup = cache_postgres::PostgresConnector::new(&config, "bench").expect("postgres");
        setup.setup().await.expect("setup");
        let make = |purpose: &str, leases: bool| -> Arc<dyn Cache<TestIndex, TestEntry>> {
            cache_postgres::PostgresConnector::new(&config, "bench")
                .expect("postgres")
                .cache(purpose, TestIndex::BUILT, &settings(leases))
        };
        stampedes.push(stampede::shared("postgres", 8, 1_000, |p| make(p, true)).await);
        costs.push(stampede::miss_cost("postgres", make).await);
    }
    (stampedes, costs)
}

/// Propagation between two processes over every transport that has a server.
async fn propagations(servers: &Servers, rounds: u64) -> Vec<propagation::Propagation> {
    let mut out = Vec::new();
    if let Some(url) = &servers.redis {
        out.push(propagation::redis(url, rounds).await);
    }
    if let Some(url) = &servers.postgres {
        out.push(propagation::postgres(url, rounds).await);
    }
    out
}

/// Fan-out to 32 processes: Redis at 1 000 changes a second, PostgreSQL at 200.
async fn fanouts(servers: &Servers, seconds: u64) -> Vec<fanout::Fanout> {
    let mut out = Vec::new();
    if let Some(url) = &servers.redis {
        out.push(fanout::redis(url, 32, 1_000, seconds).await);
    }
    if let Some(url) = &servers.postgres {
        out.push(fanout::postgres(url, 32, 200, seconds).await);
    }
    out
}

/// The rolling-deploy cells of every shared connector that has a server (and its near cache).
async fn deploys(servers: &Servers, run: Duration) -> Vec<deploy::Deploy> {
    let mut out = Vec::new();
    if let Some(url) = &servers.redis {
        out.extend(deploy::redis(url, run).await);
    }
    if let Some(url) = &servers.postgres {
        out.extend(deploy::postgres(url, run).await);
    }
    out
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    if let Err(e) = rt.block_on(run(&args)) {
        eprintln!("cache-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    // Read the earlier run first: it may live where this run writes.
    let old: Option<Report> = match &args.compare {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        None => None,
    };
    if args.only.as_deref() == Some("isolated") {
        let mut report = Report {
            isolated: isolated::run(args.quick).await,
            ..Report::empty(args.quick)
        };
        report.evaluate_goals();
        return write(args, &report, old.as_ref());
    }
    let servers = Servers {
        redis: std::env::var("CACHE_TEST_REDIS_URL").ok(),
        postgres: std::env::var("CACHE_TEST_POSTGRES_URL").ok(),
    };
    let deploy_run = Duration::from_secs(if args.quick { 1 } else { 3 });
    let rounds = if args.quick { 200 } else { 1_000 };
    let fanout_seconds = if args.quick { 1 } else { 3 };
    if let Some(only @ ("keys" | "deploy" | "fanout" | "propagation" | "stampede")) =
        args.only.as_deref()
    {
        let mut report = Report::empty(args.quick);
        match only {
            "keys" => report.keys = shared_keys(&servers).await,
            "deploy" => report.deploys = deploys(&servers, deploy_run).await,
            "fanout" => report.fanouts = fanouts(&servers, fanout_seconds).await,
            "stampede" => {
                report.stampede.push(stampede::run(1_000).await);
                let (stampedes, costs) = shared_stampedes(&servers).await;
                report.stampede.extend(stampedes);
                report.miss_costs = costs;
            }
            _ => report.propagation = propagations(&servers, rounds).await,
        }
        report.evaluate_goals();
        return write(args, &report, old.as_ref());
    }
    if servers.redis.is_none() || servers.postgres.is_none() {
        eprintln!(
            "cache-bench: CACHE_TEST_REDIS_URL / CACHE_TEST_POSTGRES_URL missing, leaving those \
             connectors out (run through `cargo xtask bench` to have both)"
        );
    }
    let timing = if args.quick {
        Timing {
            warm_up: Duration::from_millis(150),
            measure: Duration::from_millis(300),
            repetitions: 2,
        }
    } else {
        Timing {
            warm_up: Duration::from_millis(500),
            measure: Duration::from_millis(1_500),
            repetitions: 3,
        }
    };
    let (scale_objects, expired) = if args.quick {
        (20_000, 5_000)
    } else {
        (1_000_000, 100_000)
    };
    let mut targets = targets::all(&servers, 32).await;
    // Several families (`--only memory,redis,near`) keep the goals that compare them.
    if let Some(only) = &args.only {
        targets.retain(|t| only.split(',').any(|family| family == t.family));
    }
    let tasks_for = |family: &str| -> Vec<u64> {
        let all: &[u64] = if family == "postgres" || family == "near" {
            &[1, 8, 16, 32]
        } else {
            &[1, 8, 32]
        };
        all.iter()
            .copied()
            .filter(|n| args.tasks.as_ref().is_none_or(|only| only.contains(n)))
            .collect()
    };
    let order: Vec<Workload> = [
        Workload::GetHit,
        Workload::GetMiss,
        Workload::Set,
        Workload::Mixed,
        Workload::Invalidate,
    ]
    .into_iter()
    .filter(|w| args.workloads.as_ref().is_none_or(|only| only.contains(w)))
    .collect();
    let cells_total: usize = targets
        .iter()
        .map(|t| {
            tasks_for(t.family).len() * order.iter().filter(|w| t.writes || !w.writes()).count()
        })
        .sum();
    let progress = ProgressBar::new(cells_total as u64 + 5);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    // Warm the machine up (CPU clocks, allocator, runtime threads) before the first cell, so
    // it is not measured colder than the rest.
    if let Some(first) = targets.first() {
        progress.set_message("warming up");
        workload::populate(&first.target, 16).await;
        let warm = Timing {
            warm_up: Duration::from_secs(if args.quick { 1 } else { 3 }),
            ..timing
        };
        let _ = workload::run(&first.target, Workload::GetHit, 1, warm).await;
    }
    let mut report = Report::empty(args.quick);
    let everything = args.only.is_none() && args.tasks.is_none() && args.workloads.is_none();
    progress.set_message("stampede");
    if everything {
        report.stampede.push(stampede::run(1_000).await);
        let (stampedes, costs) = shared_stampedes(&servers).await;
        report.stampede.extend(stampedes);
        report.miss_costs = costs;
    }
    progress.set_message("hits measured alone");
    if everything {
        report.isolated = isolated::run(args.quick).await;
    }
    progress.inc(1);
    progress.set_message("near-cache propagation");
    if everything {
        report.propagation = propagations(&servers, rounds).await;
        progress.set_message("fan-out");
        report.fanouts = fanouts(&servers, fanout_seconds).await;
    }
    progress.inc(1);
    for named in &targets {
        for tasks in tasks_for(named.family) {
            progress.set_message(format!(
                "{}: storing {} objects",
                named.name,
                targets::OBJECTS
            ));
            workload::populate(&named.target, 16).await;
            if named.name.starts_with("update per hit") {
                if let Some(url) = &servers.postgres {
                    targets::mirror_reference_tables(url).await;
                }
            }
            for &workload in &order {
                if workload.writes() && !named.writes {
                    continue;
                }
                progress.set_message(format!("{} {} x{tasks}", named.name, workload.label()));
                let measured = workload::run(&named.target, workload, tasks, timing).await;
                report.cells.push(Cell {
                    target: named.name.to_owned(),
                    family: named.family.to_owned(),
                    baseline: named.baseline,
                    workload,
                    tasks,
                    measured,
                });
                progress.inc(1);
            }
        }
    }
    drop(targets);
    if everything {
        progress.set_message("objects with many keys");
        report.keys = shared_keys(&servers).await;
        progress.set_message("rolling deploy");
        report.deploys = deploys(&servers, deploy_run).await;
    }
    progress.set_message(format!("scale: memory, {scale_objects} objects"));
    if everything {
        report
            .scale
            .push(scale::memory(scale_objects, expired).await);
    }
    progress.inc(1);
    if let Some(url) = servers.redis.as_ref().filter(|_| everything) {
        progress.set_message(format!("scale: redis, {scale_objects} objects"));
        report.scale.push(scale::redis(url, scale_objects).await);
    }
    progress.inc(1);
    if let Some(url) = servers.postgres.as_ref().filter(|_| everything) {
        progress.set_message(format!("scale: postgres, {scale_objects} objects"));
        report
            .scale
            .push(scale::postgres(url, scale_objects, expired).await);
    }
    progress.inc(1);
    progress.finish_with_message("done");
    report.evaluate_goals();
    write(args, &report, old.as_ref())
}

/// Writes `report` to `args.out` (table, JSON, chart), prints the table, and the change
/// against `old` when there is one.
fn write(args: &Args, report: &Report, old: Option<&Report>) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let path = args.out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("results.json", &json)?;
    let markdown = format!("Machine: {}\n\n{}", report.machine, report.markdown());
    write("results.md", &markdown)?;
    report.chart(&args.out.join("latency.svg"), 8)?;
    println!("{markdown}");
    println!(
        "written: {0}/results.json, {0}/results.md, {0}/latency.svg",
        args.out.display()
    );
    if let Some(old) = old {
        let (table, regressions) = report.compare(old);
        let path = args.compare.as_ref().map(|p| p.display().to_string());
        println!("\nChange against {}:\n\n{table}", path.unwrap_or_default());
        println!("{regressions} regression(s) beyond the noise either run measured");
    }
    Ok(())
}
