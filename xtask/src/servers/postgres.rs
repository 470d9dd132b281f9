//! A throwaway PostgreSQL cluster: initdb in a temp dir, trust auth, loopback port, fsync off.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{self, Result, TempDir};

/// The OS user that runs the server when we are root (PostgreSQL refuses to run as root).
const OS_USER: &str = "postgres";

/// A running cluster; stopped with `pg_ctl stop -m immediate` and removed on drop.
#[derive(Debug)]
pub(crate) struct PostgresServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_user: bool,
    running: bool,
    _dir: TempDir,
}

impl PostgresServer {
    /// Installs PostgreSQL if missing, creates a cluster, starts it and waits until it accepts
    /// connections.
    pub(crate) fn start() -> Result<Self> {
        let bin = match find_bin_dir() {
            Some(b) => b,
            None => {
                util::apt_install(&["postgresql"])?;
                find_bin_dir().ok_or("initdb still not found after installing postgresql")?
            }
        };
        let as_user = util::is_root();
        let dir = TempDir::new("xtask-postgres")?;
        if as_user {
            let uid = id(&["-u", OS_USER]).or_else(|_| {
                util::output(Command::new("useradd").args(["--system", OS_USER]))?;
                id(&["-u", OS_USER])
            })?;
            let gid = id(&["-g", OS_USER])?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let data = dir.path().join("data");
        let port = util::free_port()?;
        let mut server = Self {
            bin,
            data,
            port,
            as_user,
            running: false,
            _dir: dir,
        };
        server.pg(
            "initdb",
            &[
                "-D".as_ref(),
                server.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        let conf = format!(
            "\n# xtask: throwaway test server\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 300\n",
            server._dir.path().display()
        );
        append(&server.data.join("postgresql.conf"), &conf)?;
        let log = server._dir.path().join("postgres.log");
        server.running = true;
        server
            .pg(
                "pg_ctl",
                &[
                    "start".as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-D".as_ref(),
                    server.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                ],
            )
            .map_err(|e| format!("{e}; see {}", log.display()))?;
        util::wait_until("postgres", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(server)
    }

    /// The URL tests connect to.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the PostgreSQL programs, as the `postgres` user when we are root.
    fn pg(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
        let path = self.bin.join(program);
        let mut cmd = if self.as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        // A directory the postgres user can read, so its tools don't complain about cwd.
        cmd.args(args)
            .current_dir(self._dir.path())
            .stdin(Stdio::null());
        util::output(&mut cmd)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data.clone();
            if let Err(e) = self.pg(
                "pg_ctl",
                &[
                    "stop".as_ref(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-w".as_ref(),
                    "-D".as_ref(),
                    data.as_os_str(),
                ],
            ) {
                eprintln!("xtask: stopping postgres: {e}");
            }
        }
    }
}

/// The directory holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/*/bin.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(initdb) = util::which("initdb") {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent().filter(|d| d.join("pg_ctl").is_file()) {
            return Some(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn id(args: &[&str]) -> Result<u32> {
    util::output(Command::new("id").args(args))?
        .trim()
        .parse()
        .map_err(|e| format!("id {args:?}: {e}"))
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
