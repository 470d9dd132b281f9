//! A throwaway `redis-server` on a free loopback port, without persistence.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{self, Result, TempDir};

/// A running redis-server; killed (and its dir removed) on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// Installs redis-server if missing, starts it and waits until it answers PING.
    pub(crate) fn start() -> Result<Self> {
        let binary = match util::which("redis-server") {
            Some(b) => b,
            None => {
                util::apt_install(&["redis-server", "redis-tools"])?;
                util::which("redis-server")
                    .or_else(|| {
                        Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file())
                    })
                    .ok_or("redis-server still not found after installing it")?
            }
        };
        let dir = TempDir::new("xtask-redis")?;
        let port = util::free_port()?;
        let log = std::fs::File::create(dir.path().join("redis.log")).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            // Own process group: Ctrl-C reaches us, and we stop the server in order.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let mut server = Self {
            child,
            port,
            _dir: dir,
        };
        util::wait_until("redis-server", Duration::from_secs(15), || {
            matches!(server.child.try_wait(), Ok(None)) && ping(port)
        })
        .map_err(|e| format!("{e}: see {}/redis.log", server._dir.path().display()))?;
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("redis-server exited: {status}"));
        }
        Ok(server)
    }

    /// The URL tests connect to.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

use std::os::unix::process::CommandExt;

/// True when the server answers an inline `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
