//! `cargo xtask`: the project's tasks.
//!
//! - `cargo xtask test [--pg-matrix=off|all|16,18] [--redis-matrix=off|all]` — start
//!   throwaway Redis and PostgreSQL (plain and TLS: `servers/tls.rs`), run every test of the
//!   workspace (nextest when installed, else `cargo test`) and the doc tests, then the
//!   cache-postgres tests on PostgreSQL 15, 16, 17 and 18 (`pg_matrix.rs`;
//!   `XTASK_PG_MATRIX=off` skips them) and the Redis tests on Redis 7.0, Redis 6.2 and Valkey 9
//!   (`redis_matrix.rs`; `XTASK_REDIS_MATRIX=off` skips them), stop the servers.
//! - `cargo xtask lint`  — fmt check, clippy `-D warnings`, rustdoc `-D warnings`, every crate
//!   packaged and built from its package (`cargo package --workspace`), and each
//!   `cache-config` feature building on its own.
//! - `cargo xtask ci`    — lint, then test with the whole PostgreSQL and Redis matrices.
//! - `cargo xtask bench [--quick] [--compare OLD.json]` — start the servers, run the benchmark
//!   harness (`cache-bench`) over every connector and its baselines, write `target/bench/`.
//! - `cargo xtask pg-setup <url> [schema]` — create or update the PostgreSQL cache tables.
//! - `cargo xtask mutants [cargo-mutants args]` — mutation testing of the core, memory,
//!   breaker and near crates (installs cargo-mutants when missing; not in CI).
//! - `cargo xtask pg-latest` — the newest published PostgreSQL builds against the pinned ones.
//! - `cargo xtask serve` — start all servers, print (and write to `target/xtask/servers.env`)
//!   the `export CACHE_TEST_...=` lines, and stay in the foreground until killed.
//! - `cargo xtask demo [--processes 3] [--seconds 20] [--connector redis|postgres]` — start
//!   the servers and run `cache-config`'s example `near_demo` as N processes with near caches
//!   (`demo.rs`): hit ratios, propagation delay of invalidations, stale reads (must be 0).

mod demo;
mod pg_matrix;
mod redis_matrix;
mod servers;
mod summary;
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pg_matrix::Choice;
use util::Result;

const USAGE: &str = "usage: cargo xtask <test|lint|ci|serve|bench|demo|pg-setup|pg-latest|mutants>

  test [--pg-matrix=off|all|16,18] [--redis-matrix=off|all]
         start throwaway redis-server and PostgreSQL (plain and TLS), run all tests
         (+ doc tests), then the cache-postgres tests on PostgreSQL 15, 16, 17, 18
         (or the versions given; off or XTASK_PG_MATRIX=off skips them) and the Redis
         tests on Redis 7.0, Redis 6.2 and Valkey 9 (off or XTASK_REDIS_MATRIX=off skips
         them), stop the servers
  lint   cargo fmt --check, clippy -D warnings, rustdoc -D warnings, cargo package --workspace,
         cache-config features
  ci     lint, then test with the whole PostgreSQL and Redis matrices
  serve  start all servers, print their env vars, stay up until Ctrl-C / SIGTERM
  bench [--quick] [--compare OLD.json] [--only FAMILY,...] [--tasks N,...] [--workloads W,...]
         start the servers, benchmark every connector against its baselines,
         write table, chart and JSON to target/bench/ (the filters run some cells only)
  demo [--processes 3] [--seconds 20] [--connector redis|postgres]
         start the servers, run the near-cache demo as N processes (process 0 changes
         and invalidates objects), report hits, propagation delay and stale reads
  pg-setup <url> [schema]
         create or update the PostgreSQL cache tables (idempotent, safe while in use)
  pg-latest
         list the newest published PostgreSQL builds of the matrix against the pinned ones
  mutants [args]
         mutation testing (cargo-mutants) of cache-core, cache-memory, cache-breaker, cache-near;
         extra args go to cargo mutants (e.g. --file cache-breaker/src/breaker.rs)";

fn main() {
    // Register the signal flag before starting anything.
    util::interrupted();
    let task = std::env::args().nth(1).unwrap_or_default();
    let started = Instant::now();
    let result = match task.as_str() {
        "test" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            matrix_choice(
                &args,
                std::env::var("XTASK_PG_MATRIX").ok(),
                std::env::var("XTASK_REDIS_MATRIX").ok(),
            )
            .and_then(|(pg, redis)| test(&pg, redis))
        }
        "lint" => lint(),
        "ci" => lint().and_then(|()| test(&Choice::all(), true)),
        "pg-latest" => pg_matrix::latest(),
        "serve" => serve(),
        "pg-setup" => pg_setup(),
        "bench" => bench(),
        "demo" => demo::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        "mutants" => mutants(),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return;
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let took = fmt_duration(started.elapsed());
    match result {
        Ok(()) => eprintln!("\nxtask {task}: OK in {took}"),
        Err(e) => {
            eprintln!("\nxtask {task}: FAILED after {took}: {e}");
            std::process::exit(1);
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs one step with a banner and its timing.
fn step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==== xtask: {name} ====");
    let started = Instant::now();
    let result = util::run(cmd);
    let took = fmt_duration(started.elapsed());
    match &result {
        Ok(()) => eprintln!("==== {name}: ok ({took}) ===="),
        Err(_) => eprintln!("==== {name}: FAILED ({took}) ===="),
    }
    result
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The PostgreSQL versions `cargo xtask test` runs and whether it runs the Redis matrix:
/// `--pg-matrix=X` / `--redis-matrix=X` (or with the value as the next argument; the last one
/// wins), else the `XTASK_PG_MATRIX` / `XTASK_REDIS_MATRIX` variables `pg_env` / `redis_env`,
/// else all.
fn matrix_choice(
    args: &[String],
    pg_env: Option<String>,
    redis_env: Option<String>,
) -> Result<(Choice, bool)> {
    let (mut pg, mut redis) = (pg_env, redis_env);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if let Some(v) = arg.strip_prefix("--pg-matrix=") {
            pg = Some(v.to_owned());
        } else if arg == "--pg-matrix" {
            pg = Some(
                args.next()
                    .ok_or("--pg-matrix needs a value: off, all or 16,18")?
                    .clone(),
            );
        } else if let Some(v) = arg.strip_prefix("--redis-matrix=") {
            redis = Some(v.to_owned());
        } else if arg == "--redis-matrix" {
            redis = Some(
                args.next()
                    .ok_or("--redis-matrix needs a value: off or all")?
                    .clone(),
            );
        } else {
            return Err(format!("unknown argument {arg:?} for test\n\n{USAGE}"));
        }
    }
    let pg = pg.map_or_else(|| Ok(Choice::all()), |v| Choice::parse(&v))?;
    let redis = redis.map_or(Ok(true), |v| redis_matrix::parse(&v))?;
    Ok((pg, redis))
}

fn test(choice: &Choice, redis_matrix: bool) -> Result<()> {
    // Before the servers: a missing PostgreSQL or Redis build is downloaded, or fails early.
    let matrix = pg_matrix::Matrix::prepare(choice, &servers::postgres::Install::system()?)?;
    let redis_matrix = if redis_matrix {
        redis_matrix::Matrix::prepare()?
    } else {
        redis_matrix::Matrix::off()
    };
    let servers = servers::Servers::start()?;
    let env = servers.env();
    for (k, v) in &env {
        eprintln!("xtask: {k}={v}");
    }
    let with_env = |mut cmd: Command| {
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CACHE_TEST_REQUIRE_SERVERS", "1");
        cmd
    };
    let nextest = util::output(cargo().args(["nextest", "--version"])).is_ok();
    let mut tests = with_env(cargo());
    if nextest {
        tests.args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--no-fail-fast",
        ]);
    } else {
        tests.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
    }
    let tests_result = step(
        if nextest {
            "tests (cargo nextest)"
        } else {
            "tests (cargo test)"
        },
        &mut tests,
    );
    // Doc tests run even if the unit tests failed, so one run reports everything.
    let mut doc = with_env(cargo());
    doc.args(["test", "--workspace", "--all-features", "--doc"]);
    let doc_result = if util::should_stop() {
        Err("interrupted".into())
    } else {
        step("doc tests", &mut doc)
    };
    // The matrix runs even if tests failed, so one run reports everything.
    let matrix_result = if matrix.is_empty() {
        eprintln!("\nxtask: PostgreSQL matrix skipped (--pg-matrix=off)");
        Ok(())
    } else if util::should_stop() {
        Err("interrupted".into())
    } else {
        matrix.run(&servers, &env)
    };
    // The Redis matrix runs even if tests failed, so one run reports everything.
    let redis_result = if redis_matrix.is_empty() {
        eprintln!("\nxtask: Redis matrix skipped (--redis-matrix=off)");
        Ok(())
    } else if util::should_stop() {
        Err("interrupted".into())
    } else {
        redis_matrix.run(&env)
    };
    eprintln!("xtask: stopping servers");
    drop(servers);
    drop(matrix);
    tests_result
        .and(doc_result)
        .and(matrix_result)
        .and(redis_result)
}

fn lint() -> Result<()> {
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "cargo doc (warnings are errors)",
        cargo()
            .args(["doc", "--workspace", "--all-features", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // Every crate stays publishable: metadata, versions on path dependencies, and (the
    // verification: ~30 s more with a warm target directory, ~2 min on a fresh clone) each
    // crate building from its packaged files alone, which is what catches a file included
    // from outside the crate or left out of the package.
    step(
        "cargo package --workspace (each crate built from its package)",
        cargo().args(["package", "--workspace", "--allow-dirty"]),
    )?;
    let manifest = root().join("cache-config").join("Cargo.toml");
    if manifest.is_file() {
        for feature in features(&manifest)? {
            step(
                &format!("cache-config builds with only feature `{feature}`"),
                cargo().args([
                    "check",
                    "-p",
                    "cache-config",
                    "--no-default-features",
                    "--features",
                    &feature,
                ]),
            )?;
        }
        memory_build_has_no_server_clients()?;
    }
    Ok(())
}

/// Client crates that must only come with their backend's Cargo feature.
const SERVER_CLIENTS: &[&str] = &[
    "redis",
    "bb8-redis",
    "tokio-postgres",
    "bb8-postgres",
    "postgres-types",
];

/// `cargo tree` of cache-config with only the memory backend: no Redis or PostgreSQL client.
fn memory_build_has_no_server_clients() -> Result<()> {
    eprintln!("\n==== xtask: cache-config --features memory pulls in no server client ====");
    let tree = util::output(cargo().args([
        "tree",
        "-p",
        "cache-config",
        "--no-default-features",
        "--features",
        "memory",
        "--edges",
        "normal,build",
        "--prefix",
        "none",
        "--format",
        "{p}",
    ]))?;
    let found = clients_in(&tree);
    if found.is_empty() {
        eprintln!("==== feature isolation: ok ====");
        Ok(())
    } else {
        Err(format!(
            "cache-config with only the memory feature depends on {}; gate them behind their backend feature",
            found.join(", ")
        ))
    }
}

/// The server client crates named in `cargo tree --prefix none --format {p}` output.
fn clients_in(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| SERVER_CLIENTS.contains(name))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The feature names of a Cargo.toml `[features]` table, except `default`.
fn features(manifest: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    let mut in_features = false;
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_matches('"');
            if !name.is_empty() && !name.starts_with('#') && name != "default" {
                names.push(name.to_string());
            }
        }
    }
    Ok(names)
}

/// Starts the servers and runs the benchmark harness with the arguments after `bench`.
fn bench() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let servers = servers::Servers::start()?;
    let mut run = cargo();
    run.args(["run", "--release", "--quiet", "-p", "cache-bench", "--"])
        .args(["--out", "target/bench"])
        .args(&args)
        .envs(servers.env());
    let result = step("benchmarks (cache-bench)", &mut run);
    eprintln!("xtask: stopping servers");
    drop(servers);
    result
}

/// The crates mutated, whose tests (all of them, for every mutant) judge the mutants without a
/// server (cache-near's in-process tests cover its fence, hub and read-through; the lease logic
/// of `get_or_load` lives in cache-core and is exercised by cache-memory's and cache-near's).
const MUTATED: &[&str] = &["cache-core", "cache-memory", "cache-breaker", "cache-near"];

/// Mutation testing with cargo-mutants (installed on first use) over [`MUTATED`]; the
/// arguments after `mutants` go to `cargo mutants`. Results in `target/mutants/mutants.out`.
fn mutants() -> Result<()> {
    if util::output(cargo().args(["mutants", "--version"])).is_err() {
        step(
            "install cargo-mutants",
            cargo().args(["install", "--locked", "cargo-mutants"]),
        )?;
    }
    let args: Vec<String> = std::env::args().skip(2).collect();
    let mut run = cargo();
    run.args(["mutants", "--no-shuffle", "--output", "target/mutants"]);
    for package in MUTATED {
        run.args(["--package", package]);
    }
    // Every mutant is judged by the tests of all these crates, not only its own: the
    // read-through and lease code of cache-core is exercised by cache-memory's and
    // cache-near's tests.
    run.args(["--test-package", &MUTATED.join(",")]);
    if util::output(cargo().args(["nextest", "--version"])).is_ok() {
        run.args(["--test-tool", "nextest"]);
    }
    run.args(&args);
    step("cargo mutants", &mut run)
}

/// Runs the cache-postgres setup example with the arguments after `pg-setup`.
fn pg_setup() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    if args.is_empty() {
        return Err("usage: cargo xtask pg-setup <postgres URL> [schema]".into());
    }
    step(
        "PostgreSQL cache setup",
        cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "cache-postgres",
                "--example",
                "setup",
                "--",
            ])
            .args(&args),
    )
}

fn serve() -> Result<()> {
    let servers = servers::Servers::start()?;
    let mut exports: String = servers
        .env()
        .iter()
        .map(|(k, v)| format!("export {k}={v}\n"))
        .collect();
    exports.push_str(&format!(
        "# stop with: kill {} (SIGINT/SIGTERM/SIGHUP stop both servers)\n",
        std::process::id()
    ));
    let dir = root().join("target").join("xtask");
    let file = dir.join("servers.env");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(&file, &exports).map_err(|e| format!("writing {}: {e}", file.display()))?;
    print!("{exports}");
    eprintln!(
        "xtask: servers up (exports also in {}); Ctrl-C or SIGTERM stops them",
        file.display()
    );
    while !util::should_stop() {
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: stopping servers");
    let _ = std::fs::remove_file(&file);
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_lists_every_feature_but_default() {
        let dir = util::TempDir::new("xtask-test").unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(
            &manifest,
            "[package]\nname = \"x\"\n\n[features]\ndefault = [\"memory\"]\n# a comment\nmemory = [\"dep:cache-memory\"]\n\"redis\" = []\npostgres = [\"dep:cache-postgres\"]\n\n[dependencies]\nserde = \"1\"\n",
        )
        .unwrap();
        assert_eq!(
            features(&manifest).unwrap(),
            ["memory", "redis", "postgres"]
        );
    }

    #[test]
    fn clients_in_finds_server_clients_only() {
        let tree = "cache-config v0.1.0 (/w/cache-config)\nredis v1.0.0\nserde v1.0.0\nredis v1.0.0\ntokio-postgres v0.7.13\n";
        assert_eq!(clients_in(tree), ["redis", "tokio-postgres"]);
        assert!(clients_in("cache-core v0.1.0\nquick_cache v0.7.0\n").is_empty());
    }

    #[test]
    fn matrix_choice_takes_the_flag_over_the_variable() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pg = |a: &[&str], env: Option<&str>| {
            matrix_choice(&args(a), env.map(str::to_owned), None).map(|(pg, _)| pg)
        };
        assert_eq!(pg(&[], None).unwrap(), Choice::all());
        assert_eq!(pg(&[], Some("off")).unwrap(), Choice::Off);
        assert_eq!(
            pg(&["--pg-matrix=17"], Some("off")).unwrap(),
            Choice::Majors(vec![17])
        );
        assert_eq!(pg(&["--pg-matrix", "off"], None).unwrap(), Choice::Off);
        assert!(pg(&["--pg-matrix"], None).is_err());
        assert!(
            pg(&["--quick"], None)
                .unwrap_err()
                .contains("unknown argument")
        );
        let redis = |a: &[&str], env: Option<&str>| {
            matrix_choice(&args(a), None, env.map(str::to_owned)).map(|(_, redis)| redis)
        };
        assert!(redis(&[], None).unwrap());
        assert!(!redis(&[], Some("off")).unwrap());
        assert!(redis(&["--redis-matrix=all"], Some("off")).unwrap());
        assert!(!redis(&["--redis-matrix", "off"], None).unwrap());
        assert!(redis(&["--redis-matrix"], None).is_err());
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = util::TempDir::new("xtask-test").unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("f"), "x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }
}
