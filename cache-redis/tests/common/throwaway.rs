//! A `redis-server` of a test's or benchmark's own, on a free loopback port, killed on drop.
//! The binary is `$CACHE_TEST_REDIS_SERVER` when set (the server of `cargo xtask test`'s Redis
//! matrix being tested, e.g. a valkey-server), else `redis-server` from `PATH`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throwaway server.
pub(crate) struct Server {
    child: Child,
    /// Its loopback port.
    pub(crate) port: u16,
}

impl Server {
    /// Starts a server without persistence on `port` (`None`: a free one) and waits until it
    /// listens. `None` when `redis-server` is not installed.
    #[allow(dead_code)] // not every includer needs it
    pub(crate) fn start(port: Option<u16>) -> Option<Server> {
        Self::start_in(port, None)
    }

    /// Like [`start`](Self::start), with its working directory `dir` when given: no automatic
    /// snapshots, but an explicit `SAVE` writes `dir/dump.rdb`, which a server started again
    /// in `dir` loads (a restart that keeps the data).
    #[allow(dead_code)] // not every includer needs it
    pub(crate) fn start_in(port: Option<u16>, dir: Option<&std::path::Path>) -> Option<Server> {
        Self::start_with(port, dir, &[])
    }

    /// Like [`start_in`](Self::start_in), with `extra` arguments for `redis-server` (e.g.
    /// `--replicaof 127.0.0.1 <port>`).
    pub(crate) fn start_with(
        port: Option<u16>,
        dir: Option<&std::path::Path>,
        extra: &[&str],
    ) -> Option<Server> {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port")
        });
        let binary =
            std::env::var_os("CACHE_TEST_REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let mut command = Command::new(binary);
        // Never the working directory: a dump.rdb left there by another server (of another
        // version, which an older server refuses to load) must not be read.
        let own_dir;
        let dir = match dir {
            Some(dir) => dir,
            None => {
                own_dir = std::env::temp_dir()
                    .join(format!("redis-throwaway-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&own_dir).expect("a temporary directory");
                &own_dir
            }
        };
        command.arg("--dir").arg(dir);
        let child = command
            .args(extra)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Server { child, port })
    }

    /// Its URL.
    #[allow(dead_code)] // not every includer needs it
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its process id (to stop it with SIGSTOP, say).
    #[allow(dead_code)] // not every includer needs it
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it at once (SIGKILL).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
