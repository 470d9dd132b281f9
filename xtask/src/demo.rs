//! `cargo xtask demo [--processes 3] [--seconds 20] [--connector redis|postgres]`: near caches
//! across OS processes. Starts the one throwaway server the connector needs (a plain
//! redis-server or PostgreSQL, not the tests' whole set), builds `cache-config`'s example
//! `near_demo` (release, features `redis,postgres`), runs it as N processes of one simulated
//! service (process 0 also changes objects and invalidates them), and shows what their
//! `NEAR_DEMO {json}` lines report: requests, memory / shared hits and misses, the propagation
//! delay of the admin's invalidations to the other processes, and stale reads (must be 0).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{self, Result};
use crate::{cargo, root, servers, step};

/// What `cargo xtask demo` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) processes: usize,
    pub(crate) seconds: u64,
    pub(crate) connector: String,
}

/// The arguments after `demo`: `--processes N`, `--seconds N`, `--connector redis|postgres`
/// (also as `--flag=value`).
pub(crate) fn options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        processes: 3,
        seconds: 20,
        connector: "redis".to_owned(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag, value.to_owned()),
            None => (
                arg.as_str(),
                args.next()
                    .ok_or_else(|| format!("{arg} needs a value"))?
                    .clone(),
            ),
        };
        let positive = || {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} needs a positive number, not {value:?}"))
        };
        match flag {
            "--processes" => options.processes = positive()? as usize,
            "--seconds" => options.seconds = positive()?,
            "--connector" if value == "redis" || value == "postgres" => options.connector = value,
            "--connector" => {
                return Err(format!("--connector is redis or postgres, not {value:?}"));
            }
            _ => {
                return Err(format!(
                    "unknown argument {arg:?} for demo; use --processes N, --seconds N, \
                     --connector redis|postgres"
                ));
            }
        }
    }
    Ok(options)
}

/// The task.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = options(args)?;
    step(
        "build near_demo (release, features redis,postgres)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "cache-config",
            "--example",
            "near_demo",
            "--features",
            "redis,postgres",
        ]),
    )?;
    let binary = target_dir()
        .join("release")
        .join("examples")
        .join("near_demo");
    let server = Server::start(&options.connector)?;
    let env = server.env();
    let run_id = format!(
        "near-demo-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    eprintln!(
        "\n==== xtask: near_demo as {} processes on {}, {} s ====",
        options.processes, options.connector, options.seconds
    );
    let mut children = Vec::new();
    for process in 0..options.processes {
        let mut cmd = Command::new(&binary);
        cmd.args(["--process", &process.to_string()])
            .args(["--seconds", &options.seconds.to_string()])
            .args(["--connector", &options.connector])
            .args(["--run", &run_id])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match Demo::start(process, &mut cmd) {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(children);
                return Err(e);
            }
        }
    }
    let limit = Duration::from_secs(options.seconds + 180);
    let finished = wait_all(&mut children, limit);
    let outputs: Vec<Result<(ExitStatus, Vec<String>)>> =
        children.into_iter().map(Demo::finish).collect();
    eprintln!("xtask: stopping the {} server", options.connector);
    drop(server);
    finished?;

    let mut reports = Vec::new();
    let mut problems = Vec::new();
    for (process, output) in outputs.iter().enumerate() {
        let (status, lines) = match output {
            Ok(output) => output,
            Err(e) => {
                problems.push(format!("process {process}: {e}"));
                continue;
            }
        };
        if !status.success() {
            problems.push(format!("process {process} exited with {status}"));
        }
        match lines.last() {
            Some(line) => reports.push(Report::parse(line)?),
            None => problems.push(format!("process {process} printed no NEAR_DEMO line")),
        }
    }
    if reports.is_empty() {
        return Err(problems.join("; "));
    }
    let stale = print_report(&options, &reports);
    if stale > 0 {
        problems.push(format!("{stale} stale reads"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The one server the demo's connector needs. (`servers::Servers::start`, for the tests, also
/// starts Redis Clusters, Sentinels, TLS servers and a second PostgreSQL: minutes the demo
/// does not use.) Stopped when dropped.
enum Server {
    Redis(servers::redis::RedisServer),
    Postgres(servers::postgres::PostgresServer),
}

impl Server {
    /// Starts the plain server of `connector` (`redis` or `postgres`), installing it with
    /// apt-get when missing, and waits until it accepts connections.
    fn start(connector: &str) -> Result<Self> {
        if connector == "postgres" {
            eprintln!("xtask: starting postgres");
            Ok(Server::Postgres(servers::postgres::PostgresServer::start()?))
        } else {
            eprintln!("xtask: starting redis-server");
            Ok(Server::Redis(servers::redis::RedisServer::start()?))
        }
    }

    /// The variable `near_demo` reads the server's URL from.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Server::Redis(redis) => vec![("CACHE_TEST_REDIS_URL", redis.url())],
            Server::Postgres(postgres) => vec![("CACHE_TEST_POSTGRES_URL", postgres.url())],
        }
    }
}

/// Where cargo puts the build (`CARGO_TARGET_DIR`, else `target/` of the workspace).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// One running `near_demo` process: its output echoed to our stderr as `[pN] ...`, its
/// `NEAR_DEMO` lines kept.
struct Demo {
    child: Child,
    stdout: JoinHandle<Vec<String>>,
    stderr: JoinHandle<Vec<String>>,
}

impl Demo {
    fn start(process: usize, cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let echo = move |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let Some(pipe) = pipe else { return kept };
                for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                    match line.strip_prefix("NEAR_DEMO ") {
                        Some(json) => kept.push(json.to_owned()),
                        None => eprintln!("[p{process}] {line}"),
                    }
                }
                kept
            })
        };
        let stdout = echo(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = echo(child.stderr.take().map(|p| Box::new(p) as _));
        Ok(Demo {
            child,
            stdout,
            stderr,
        })
    }

    /// Waits for the process (killed already if it had to be) and its output.
    fn finish(mut self) -> Result<(ExitStatus, Vec<String>)> {
        let status = self.child.wait().map_err(|e| e.to_string())?;
        let mut lines = self.stdout.join().unwrap_or_default();
        lines.extend(self.stderr.join().unwrap_or_default());
        Ok((status, lines))
    }
}

fn stop(children: Vec<Demo>) {
    for mut demo in children {
        let _ = demo.child.kill();
        let _ = demo.finish();
    }
}

/// Waits until every process has exited; kills them all when `limit` passes or a stop signal
/// arrives, or when one failed (the others would wait for it).
fn wait_all(children: &mut [Demo], limit: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut running = 0;
        let mut failed = None;
        for (process, demo) in children.iter_mut().enumerate() {
            match demo.child.try_wait() {
                Ok(None) => running += 1,
                Ok(Some(status)) if !status.success() => failed = Some((process, status)),
                Ok(Some(_)) => {}
                Err(e) => return Err(format!("waiting for process {process}: {e}")),
            }
        }
        if running == 0 {
            return Ok(());
        }
        let reason = if util::should_stop() {
            Some("interrupted".to_owned())
        } else if started.elapsed() > limit {
            Some(format!("the demo did not finish within {limit:?}"))
        } else {
            // The admin's failure strands the readers (they wait for its "done").
            failed
                .filter(|(process, _)| *process == 0)
                .map(|(_, status)| format!("the admin (process 0) failed: {status}"))
        };
        if let Some(reason) = reason {
            for demo in children.iter_mut() {
                let _ = demo.child.kill();
            }
            return Err(reason);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the children's reports -------------------------------------------------------------------

/// One process's `NEAR_DEMO` line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) process: u64,
    pub(crate) admin: bool,
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    pub(crate) memory_hits: u64,
    pub(crate) shared_hits: u64,
    pub(crate) misses: u64,
    pub(crate) loads: u64,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) channel: String,
    /// How the process's object caches are made, e.g. `instance: redis + near cache`.
    pub(crate) caches: String,
    pub(crate) changes: u64,
    pub(crate) invalidate_errors: u64,
    pub(crate) not_found: u64,
    pub(crate) failed: u64,
    /// Changes of objects whose old revision this process had read.
    pub(crate) observed: u64,
    /// Of those, the delays that were 0, and the others (µs, sorted).
    pub(crate) zero_delays: u64,
    pub(crate) delays_us: Vec<u64>,
    pub(crate) stale_reads: u64,
    pub(crate) stale_at_least: bool,
}

impl Report {
    pub(crate) fn parse(json: &str) -> Result<Self> {
        let value = Json::parse(json).map_err(|e| format!("a NEAR_DEMO line: {e}: {json}"))?;
        let number = |key: &str| match value.get(key) {
            Some(Json::Num(n)) if *n >= 0.0 => Ok(*n),
            _ => Err(format!("a NEAR_DEMO line lacks the number {key:?}")),
        };
        let count = |key: &str| number(key).map(|n| n as u64);
        let text = |key: &str| match value.get(key) {
            Some(Json::Str(s)) => Ok(s.clone()),
            _ => Err(format!("a NEAR_DEMO line lacks the text {key:?}")),
        };
        let mut delays_us = match value.get("delays_us") {
            Some(Json::Arr(items)) => items
                .iter()
                .map(|item| match item {
                    Json::Num(n) if *n >= 0.0 => Ok(*n as u64),
                    _ => Err("delays_us holds something else than numbers".to_owned()),
                })
                .collect::<Result<Vec<u64>>>()?,
            _ => return Err("a NEAR_DEMO line lacks delays_us".into()),
        };
        delays_us.sort_unstable();
        Ok(Report {
            process: count("process")?,
            admin: text("role")? == "admin",
            seconds: number("seconds")?,
            requests: count("requests")?,
            memory_hits: count("memory_hits")?,
            shared_hits: count("shared_hits")?,
            misses: count("misses")?,
            loads: count("loads")?,
            sent: count("sent")?,
            received: count("received")?,
            channel: text("channel")?,
            caches: text("caches").unwrap_or_default(),
            changes: count("changes")?,
            invalidate_errors: count("invalidate_errors")?,
            not_found: count("not_found")?,
            failed: count("failed")?,
            observed: count("observed")?,
            zero_delays: count("zero_delays")?,
            delays_us,
            stale_reads: count("stale_reads")?,
            stale_at_least: matches!(value.get("stale_at_least"), Some(Json::Bool(true))),
        })
    }
}

/// The delays of some processes together: `zero` zeros, then `sorted` (µs, ascending).
#[derive(Debug, Default)]
pub(crate) struct Delays {
    zero: u64,
    sorted: Vec<u64>,
}

impl Delays {
    pub(crate) fn of<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Self {
        let mut delays = Delays::default();
        for report in reports {
            delays.zero += report.zero_delays;
            delays.sorted.extend(&report.delays_us);
        }
        delays.sorted.sort_unstable();
        delays
    }

    fn len(&self) -> u64 {
        self.zero + self.sorted.len() as u64
    }

    /// The `q` quantile (nearest rank) in µs; `None` without samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let at = ((n - 1) as f64 * q).round() as u64;
        Some(if at < self.zero {
            0
        } else {
            self.sorted[(at - self.zero) as usize]
        })
    }
}

fn micros(us: Option<u64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(us) if us < 1000 => format!("{us} µs"),
        Some(us) if us < 100_000 => format!("{:.2} ms", us as f64 / 1000.0),
        Some(us) => format!("{:.0} ms", us as f64 / 1000.0),
    }
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.1} %", 100.0 * part as f64 / whole.max(1) as f64)
}

/// Prints the table; returns the stale reads.
fn print_report(options: &Options, reports: &[Report]) -> u64 {
    let changes: u64 = reports.iter().map(|r| r.changes).sum();
    println!();
    println!(
        "near_demo: {} processes for {} s; {}",
        reports.len(),
        options.seconds,
        reports[0].caches
    );
    println!(
        "process 0 (admin) changed {changes} objects in the source of truth and invalidated each \
         through its cache"
    );
    println!();
    let header = [
        "process",
        "requests",
        "req/s",
        "memory",
        "shared",
        "miss",
        "loads",
        "sent",
        "recv",
        "seen",
        "delay p50",
        "p99",
        "max",
        "stale",
    ];
    let widths = [9, 8, 7, 7, 7, 6, 6, 6, 7, 5, 9, 8, 8, 6];
    let row = |cells: &[String]| {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        println!("  {}", line.join(" ").trim_end());
    };
    row(&header.map(str::to_owned));
    let line = |name: String, rs: &[&Report], delays: &Delays| {
        let sum = |field: fn(&Report) -> u64| rs.iter().map(|r| field(r)).sum::<u64>();
        let gets = sum(|r| r.memory_hits) + sum(|r| r.shared_hits) + sum(|r| r.misses);
        let seconds = rs.iter().map(|r| r.seconds).fold(0.0, f64::max);
        let stale = sum(|r| r.stale_reads);
        let at_least = rs.iter().any(|r| r.stale_at_least);
        row(&[
            name,
            sum(|r| r.requests).to_string(),
            format!("{:.0}", sum(|r| r.requests) as f64 / seconds.max(0.001)),
            percent(sum(|r| r.memory_hits), gets),
            percent(sum(|r| r.shared_hits), gets),
            percent(sum(|r| r.misses), gets),
            sum(|r| r.loads).to_string(),
            sum(|r| r.sent).to_string(),
            sum(|r| r.received).to_string(),
            sum(|r| r.observed).to_string(),
            micros(delays.quantile(0.50)),
            micros(delays.quantile(0.99)),
            micros(delays.quantile(1.0)),
            format!("{stale}{}", if at_least { "+" } else { "" }),
        ]);
    };
    for report in reports {
        let role = if report.admin { "admin" } else { "" };
        line(
            format!("p{} {role}", report.process),
            &[report],
            &Delays::of([report]),
        );
    }
    let all: Vec<&Report> = reports.iter().collect();
    let readers: Vec<&Report> = reports.iter().filter(|r| !r.admin).collect();
    line(
        "total".to_owned(),
        &all,
        &Delays::of(readers.iter().copied()),
    );
    let readers_delays = Delays::of(readers.iter().copied());
    let delayed = readers_delays.sorted.len();
    let mut channels: Vec<&str> = reports.iter().map(|r| r.channel.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    let stale: u64 = reports.iter().map(|r| r.stale_reads).sum();
    let errors: u64 = reports
        .iter()
        .map(|r| r.failed + r.not_found + r.invalidate_errors)
        .sum();
    let channels = if channels == ["healthy"] {
        "every channel healthy at the end".to_owned()
    } else {
        format!("channels at the end: {}", channels.join(", "))
    };
    let notes = [
        format!(
            "memory / shared / miss: the near caches' gets answered by the memory level, by {}",
            options.connector
        ),
        "  (then kept in memory), or by nothing (then loaded from the source of truth: loads)"
            .to_owned(),
        "sent / recv: messages announced (the admin's changes, and the keys of every set after"
            .to_owned(),
        format!("  a load) / applied from other processes; {channels}"),
        "seen: the admin's changes of objects whose old revision the process had read".to_owned(),
        "delay: from the admin's invalidate returning to the last read, begun later, that still"
            .to_owned(),
        format!(
            "  returned the old revision (0 when none); total: the {} readers, {delayed} of {} \
             above 0",
            readers.len(),
            readers_delays.len()
        ),
        "stale: reads that began more than 100 ms after the invalidation of the revision they"
            .to_owned(),
        "  returned (+: at least)".to_owned(),
    ];
    println!();
    for note in notes {
        println!("  {note}");
    }
    println!();
    if stale == 0 && errors == 0 {
        println!(
            "OK: no read began more than 100 ms after the invalidation of the revision it \
             returned;\n    no lookup failed, no object went missing, no invalidation failed."
        );
    } else {
        println!(
            "FAILED: {stale} stale reads, {errors} failed lookups / missing objects / failed \
             invalidations."
        );
    }
    stale
}

// ---- a small JSON reader, enough for the NEAR_DEMO lines --------------------------------------

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub(crate) fn parse(text: &str) -> Result<Json> {
        let mut parser = Parser {
            text: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.space();
        if parser.at != parser.text.len() {
            return Err(format!("unexpected text at byte {}", parser.at));
        }
        Ok(value)
    }

    /// The member `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", byte as char, self.at))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json> {
        if self.text[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(format!("unexpected text at byte {}", self.at))
        }
    }

    fn value(&mut self) -> Result<Json> {
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    let key = self.string()?;
                    self.expect(b':')?;
                    members.push((key, self.value()?));
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Obj(members));
                        }
                        _ => return Err(format!("expected , or }} at byte {}", self.at)),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected , or ] at byte {}", self.at)),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                {
                    self.at += 1;
                }
                let number = std::str::from_utf8(&self.text[start..self.at])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("a bad number at byte {start}"))?;
                Ok(Json::Num(number))
            }
            _ => Err(format!("expected a value at byte {}", self.at)),
        }
    }

    fn string(&mut self) -> Result<String> {
        self.expect(b'"')?;
        let mut bytes = Vec::new();
        loop {
            let byte = *self
                .text
                .get(self.at)
                .ok_or("a string without its closing quote")?;
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let escaped = *self.text.get(self.at).ok_or("a dangling backslash")?;
                    self.at += 1;
                    match escaped {
                        b'n' => bytes.push(b'\n'),
                        b't' => bytes.push(b'\t'),
                        b'r' => bytes.push(b'\r'),
                        b'u' => {
                            let hex = self
                                .text
                                .get(self.at..self.at + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or("a bad \\u escape")?;
                            self.at += 4;
                            let c = char::from_u32(hex).unwrap_or(char::REPLACEMENT_CHARACTER);
                            bytes.extend(c.to_string().as_bytes());
                        }
                        other => bytes.push(other),
                    }
                }
                other => bytes.push(other),
            }
        }
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_have_defaults_and_take_both_spellings() {
        assert_eq!(
            options(&[]).unwrap(),
            Options {
                processes: 3,
                seconds: 20,
                connector: "redis".into()
            }
        );
        assert_eq!(
            options(&args(&[
                "--processes",
                "5",
                "--seconds=7",
                "--connector=postgres"
            ]))
            .unwrap(),
            Options {
                processes: 5,
                seconds: 7,
                connector: "postgres".into()
            }
        );
        assert!(options(&args(&["--processes", "0"])).is_err());
        assert!(options(&args(&["--connector", "memory"])).is_err());
        assert!(options(&args(&["--seconds"])).is_err());
        assert!(options(&args(&["--quick"])).is_err());
    }

    #[test]
    fn json_reads_the_near_demo_line() {
        let line = r#"{"process":1,"role":"reader","connector":"redis","seconds":10.002,
            "requests":42,"memory_hits":80,"shared_hits":3,"misses":1,"loads":1,"sent":0,
            "received":12,"channel":"healthy","changes":0,"invalidate_errors":0,"not_found":0,
            "failed":0,"observed":9,"zero_delays":7,"delays_us":[300,120],"stale_reads":0,
            "stale_at_least":false}"#;
        let report = Report::parse(line).unwrap();
        assert_eq!(report.process, 1);
        assert!(!report.admin);
        assert_eq!(report.requests, 42);
        assert_eq!(report.channel, "healthy");
        assert_eq!(report.delays_us, [120, 300]);
        assert!((report.seconds - 10.002).abs() < 1e-9);
        assert!(Report::parse(r#"{"process":1}"#).is_err());
        assert_eq!(
            Json::parse(r#" {"a": [true, null, -1.5e1, "x\"\u00e9"], "b": {}} "#).unwrap(),
            Json::Obj(vec![
                (
                    "a".into(),
                    Json::Arr(vec![
                        Json::Bool(true),
                        Json::Null,
                        Json::Num(-15.0),
                        Json::Str("x\"é".into())
                    ])
                ),
                ("b".into(), Json::Obj(vec![]))
            ])
        );
        assert!(Json::parse("{\"a\":1,}").is_err());
        assert!(Json::parse("[1] x").is_err());
    }

    #[test]
    fn delays_count_the_zeros() {
        let report = |zero, delays: &[u64]| Report {
            zero_delays: zero,
            delays_us: delays.to_vec(),
            ..Report::parse(
                r#"{"process":0,"role":"admin","seconds":1,"requests":0,"memory_hits":0,
                "shared_hits":0,"misses":0,"loads":0,"sent":0,"received":0,"channel":"healthy",
                "changes":0,"invalidate_errors":0,"not_found":0,"failed":0,"observed":0,
                "zero_delays":0,"delays_us":[],"stale_reads":0}"#,
            )
            .unwrap()
        };
        let (a, b) = (report(8, &[500]), report(0, &[900]));
        let delays = Delays::of([&a, &b]);
        assert_eq!(delays.quantile(0.5), Some(0));
        assert_eq!(delays.quantile(0.99), Some(900));
        assert_eq!(delays.quantile(1.0), Some(900));
        assert_eq!(Delays::default().quantile(0.5), None);
        assert_eq!(micros(Some(12)), "12 µs");
        assert_eq!(micros(Some(1500)), "1.50 ms");
        assert_eq!(micros(None), "-");
    }
}
