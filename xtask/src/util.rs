//! Small helpers shared by the tasks: commands, temp dirs, ports, signals.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Result type of every task: the error is a message for the user.
pub(crate) type Result<T> = std::result::Result<T, String>;

/// Set when SIGINT, SIGTERM or SIGHUP arrives; the tasks poll it and unwind, so guards run.
pub(crate) fn interrupted() -> &'static Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            // If registration fails the default action (exit) stays; nothing better to do.
            let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
        }
        flag
    })
}

/// True once a stop signal arrived. (No parent-death check: `cargo run` execs us, and `serve` is
/// meant to outlive the shell that started it in the background.)
pub(crate) fn should_stop() -> bool {
    interrupted().load(Ordering::SeqCst)
}

/// Waits for `child`, killing it if a stop signal arrives. Returns its exit status.
pub(crate) fn wait_interruptible(child: &mut Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for child: {e}"))?
        {
            return Ok(status);
        }
        if should_stop() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for `child` at most `limit`, killing it when the time is up or a stop signal arrives.
pub(crate) fn wait_bounded(child: &mut Child, what: &str, limit: Duration) -> Result<ExitStatus> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for {what}: {e}"))?
        {
            return Ok(status);
        }
        let late = start.elapsed() >= limit;
        if late || should_stop() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(if late {
                format!("{what} did not finish within {limit:?} and was killed")
            } else {
                "interrupted".into()
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command to completion within `limit` with its stdout sent to stderr (stdout stays
/// clean for `serve`); error if it fails or takes longer.
pub(crate) fn run_within(cmd: &mut Command, limit: Duration) -> Result<()> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(io::stderr()))
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let status = wait_bounded(&mut child, &shown, limit)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

/// Runs a command to completion, interruptible, echoing its stdout and stderr line by line to
/// our stderr; returns its exit status and everything it printed (stdout, then stderr).
pub(crate) fn run_tee(cmd: &mut Command) -> Result<(ExitStatus, String)> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let echo = |pipe: Option<Box<dyn io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut seen = String::new();
            if let Some(pipe) = pipe {
                for line in io::BufRead::lines(io::BufReader::new(pipe)).map_while(|l| l.ok()) {
                    eprintln!("{line}");
                    seen.push_str(&line);
                    seen.push('\n');
                }
            }
            seen
        })
    };
    let out = echo(child.stdout.take().map(|p| Box::new(p) as _));
    let err = echo(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_interruptible(&mut child);
    // The pipes close when the child exits (or was killed), so the readers end.
    let mut text = out.join().unwrap_or_default();
    text.push_str(&err.join().unwrap_or_default());
    Ok((status?, text))
}

/// Runs a command to completion (inheriting stdio), interruptible; error if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let status = wait_interruptible(&mut child)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed: {status}"))
    }
}

/// Runs a command quietly, returning its stdout on success and stderr in the error.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Finds an executable by name on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (asked from the kernel, then released).
pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free local port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// True when running as root (uid 0).
pub(crate) fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

/// Installs Debian packages with apt-get (runs `apt-get update` first).
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    if which("apt-get").is_none() {
        return Err(format!(
            "{packages:?} missing and apt-get not available: install them by hand"
        ));
    }
    let sudo = !is_root() && which("sudo").is_some();
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            // Keep stdout clean (`serve` prints the exports there).
            .stdout(Stdio::from(io::stderr()));
        cmd
    };
    eprintln!("xtask: installing {packages:?} with apt-get");
    run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    run(&mut install)
}

/// A directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory under the system temp dir.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        Self::new_in(&std::env::temp_dir(), prefix)
    }

    /// Creates a fresh, uniquely named directory inside `parent` (created when missing).
    pub(crate) fn new_in(parent: &Path, prefix: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = parent.join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("xtask: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Calls `probe` until it returns true or `limit` passes.
pub(crate) fn wait_until(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> bool,
) -> Result<()> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if probe() {
            return Ok(());
        }
        if interrupted().load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} not ready after {limit:?}"))
}
