//! Throwaway PostgreSQL clusters: initdb in a temp dir, trust auth (but for the role
//! `cache_password`, which needs its password), loopback port, fsync off.
//! Optionally another installation (the version matrix), TLS with the test CA's files, a
//! pg_hba.conf of its own and extra databases.

use std::ffi::OsStr;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{self, Result, TempDir};

/// The OS user that runs the server when we are root (PostgreSQL refuses to run as root).
const OS_USER: &str = "postgres";

/// Where a PostgreSQL installation's programs are.
#[derive(Debug, Clone)]
pub(crate) struct Install {
    /// The directory holding initdb, pg_ctl and postgres.
    pub(crate) bin: PathBuf,
    /// LD_LIBRARY_PATH for those programs (the npm builds bring their own libraries).
    pub(crate) lib: Option<PathBuf>,
}

impl Install {
    /// Debian's newest PostgreSQL (on PATH or under /usr/lib/postgresql), installed with
    /// apt-get when missing.
    pub(crate) fn system() -> Result<Self> {
        let bin = match find_bin_dir() {
            Some(b) => b,
            None => {
                util::apt_install(&["postgresql"])?;
                find_bin_dir().ok_or("initdb still not found after installing postgresql")?
            }
        };
        Ok(Self { bin, lib: None })
    }

    /// `postgres --version` run as the user that runs the servers: proves that user can read
    /// and run this installation. E.g. `postgres (PostgreSQL) 16.14`.
    pub(crate) fn version(&self) -> Result<String> {
        let out = util::output(
            self.command("postgres", util::is_root())
                .arg("--version")
                .current_dir("/")
                .stdin(Stdio::null()),
        )?;
        Ok(out.trim().to_owned())
    }

    /// A command running one of this installation's programs, as [`OS_USER`] when `as_user`.
    fn command(&self, program: &str, as_user: bool) -> Command {
        let mut cmd = if as_user {
            let mut c = Command::new("runuser");
            c.args(["-u", OS_USER, "--", "env"]);
            c
        } else {
            Command::new("env")
        };
        // Through `env`, so the library path survives runuser whatever its PAM setup does.
        if let Some(lib) = &self.lib {
            cmd.arg(format!("LD_LIBRARY_PATH={}", lib.display()));
        }
        cmd.arg(self.bin.join(program));
        cmd
    }
}

/// The server's TLS files (copied into the cluster's directory, private to the server user).
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    /// Certificate (PEM), served to clients.
    pub(crate) cert: PathBuf,
    /// Its private key (PEM).
    pub(crate) key: PathBuf,
    /// CA certificate (PEM) that client certificates must chain to.
    pub(crate) ca: PathBuf,
}

/// The first line of a plain cluster's pg_hba.conf: the role `cache_password` (which the tests
/// create) logs in over TCP with its password (SCRAM); everyone else is trusted.
const PASSWORD_HBA: &str = "\
# xtask: the role cache_password authenticates with its password (tests of password auth)
host all cache_password 127.0.0.1/32 scram-sha-256
";

/// How to set up a cluster beyond the defaults.
#[derive(Debug)]
pub(crate) struct Options {
    /// The installation to run.
    pub(crate) install: Install,
    /// `ssl = on` with these files.
    pub(crate) tls: Option<ServerTls>,
    /// The whole pg_hba.conf, instead of initdb's (trust for everyone) with the
    /// `cache_password` role's line first.
    pub(crate) hba: Option<String>,
    /// Databases created once the server is up (needs `createdb` in the installation, and a
    /// `local` trust line when `hba` is set).
    pub(crate) databases: Vec<String>,
}

impl Options {
    /// A plain cluster of `install`.
    pub(crate) fn new(install: Install) -> Self {
        Self {
            install,
            tls: None,
            hba: None,
            databases: Vec::new(),
        }
    }
}

/// A running cluster; stopped with `pg_ctl stop -m immediate` and removed on drop.
#[derive(Debug)]
pub(crate) struct PostgresServer {
    install: Install,
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
        Self::start_with(Options::new(Install::system()?))
    }

    /// Creates a cluster as `options` say, starts it (at most 60 s) and waits until it accepts
    /// connections on a free loopback port.
    pub(crate) fn start_with(options: Options) -> Result<Self> {
        let as_user = util::is_root();
        let dir = TempDir::new("xtask-postgres")?;
        let owner = if as_user {
            let uid = id(&["-u", OS_USER]).or_else(|_| {
                util::output(Command::new("useradd").args(["--system", OS_USER]))?;
                id(&["-u", OS_USER])
            })?;
            let gid = id(&["-g", OS_USER])?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
            Some((uid, gid))
        } else {
            None
        };
        let data = dir.path().join("data");
        let port = util::free_port()?;
        let mut server = Self {
            install: options.install,
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
        let mut conf = format!(
            "\n# xtask: throwaway test server\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 300\n",
            server._dir.path().display()
        );
        if let Some(tls) = &options.tls {
            let copy = |from: &Path, name: &str| server.private_copy(from, name, owner);
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
                copy(&tls.cert, "server.pem")?.display(),
                copy(&tls.key, "server.key")?.display(),
                copy(&tls.ca, "ca.pem")?.display(),
            ));
        }
        append(&server.data.join("postgresql.conf"), &conf)?;
        // Rewritten in place: the file keeps its owner (the server user).
        let hba_path = server.data.join("pg_hba.conf");
        let hba = match &options.hba {
            Some(hba) => hba.clone(),
            // initdb's (trust for everyone), after a first line that makes one role log in
            // with its password, for the tests of password authentication.
            None => {
                let initdb = std::fs::read_to_string(&hba_path)
                    .map_err(|e| format!("reading {}: {e}", hba_path.display()))?;
                format!("{PASSWORD_HBA}{initdb}")
            }
        };
        std::fs::write(&hba_path, hba)
            .map_err(|e| format!("writing {}: {e}", hba_path.display()))?;
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
        for database in &options.databases {
            let socket_dir = server._dir.path().as_os_str().to_owned();
            server.pg(
                "createdb",
                &[
                    "-h".as_ref(),
                    &socket_dir,
                    "-p".as_ref(),
                    port.to_string().as_ref(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    database.as_ref(),
                ],
            )?;
        }
        Ok(server)
    }

    /// The URL tests connect to.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The installation this cluster runs.
    pub(crate) fn install(&self) -> &Install {
        &self.install
    }

    /// Runs one of the PostgreSQL programs, as the `postgres` user when we are root.
    fn pg(&self, program: &str, args: &[&OsStr]) -> Result<String> {
        let mut cmd = self.install.command(program, self.as_user);
        // A directory the postgres user can read, so its tools don't complain about cwd.
        cmd.args(args)
            .current_dir(self._dir.path())
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        util::output(&mut cmd)
    }

    /// Copies `from` into the cluster's directory as `name`: mode 0600, owned by the server
    /// user (PostgreSQL refuses a key file others can read).
    fn private_copy(&self, from: &Path, name: &str, owner: Option<(u32, u32)>) -> Result<PathBuf> {
        let to = self._dir.path().join(name);
        std::fs::copy(from, &to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", to.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", to.display()))?;
        }
        Ok(to)
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
