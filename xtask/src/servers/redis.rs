//! Throwaway Redis topologies on free loopback ports, without persistence: one server, a
//! 3-master Redis Cluster, a master + replica watched by 3 sentinels — each in plain TCP or
//! TLS only ([`Transport`]) — and TLS-only single servers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::certs::Certs;
use crate::util::{self, Result, TempDir};

/// The master set name the sentinels monitor.
pub(crate) const MASTER_NAME: &str = "cachemaster";

/// One running redis-server (or sentinel) process; killed on drop.
#[derive(Debug)]
struct Process {
    child: Child,
    port: u16,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's redis-server binary, installed with apt-get when missing (with redis-cli, which
/// also sets up the clusters of the other servers of the matrix).
pub(crate) fn binary() -> Result<PathBuf> {
    if let Some(b) = util::which("redis-server").filter(|_| util::which("redis-cli").is_some()) {
        return Ok(b);
    }
    util::apt_install(&["redis-server", "redis-tools"])?;
    util::which("redis-server")
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .ok_or_else(|| "redis-server still not found after installing it".to_owned())
}

/// Starts `server <args>` (which choose the port) in `dir`/`name`, bound to 127.0.0.1, and
/// waits up to 15 s until it is running and `ready` says so.
fn launch(
    server: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    args: &[&str],
    mut ready: impl FnMut() -> bool,
) -> Result<Process> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("redis.log")).map_err(|e| e.to_string())?;
    let child = Command::new(server)
        .args(args)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Own process group: Ctrl-C reaches us, and we stop the servers in order.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
    let mut process = Process { child, port };
    util::wait_until(name, Duration::from_secs(15), || {
        matches!(process.child.try_wait(), Ok(None)) && ready()
    })
    .map_err(|e| format!("{e}: see {}/redis.log", dir.display()))?;
    Ok(process)
}

/// `redis-cli -p <port> <args>`, its output.
fn cli(port: u16, args: &[&str]) -> Result<String> {
    util::output(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
    )
}

/// How a topology's servers listen, and talk among themselves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport<'a> {
    /// Plain TCP.
    Plain,
    /// TLS only, with the test CA's server certificate (client certificates optional), the
    /// cluster bus and replication over TLS too.
    Tls(&'a Certs),
}

impl Transport<'_> {
    /// The redis-server arguments that make it listen on `port` this way.
    fn listen(self, port: u16) -> Vec<String> {
        match self {
            Transport::Plain => vec!["--port".into(), port.to_string()],
            Transport::Tls(certs) => {
                let path = |p: &Path| p.to_string_lossy().into_owned();
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    &path(&certs.server.cert),
                    "--tls-key-file",
                    &path(&certs.server.key),
                    "--tls-ca-cert-file",
                    &path(&certs.ca),
                    // What a node presents when it connects to another (cluster bus,
                    // replication, a sentinel to its master): the server certificate is for
                    // server authentication only.
                    "--tls-client-cert-file",
                    &path(&certs.client.cert),
                    "--tls-client-key-file",
                    &path(&certs.client.key),
                    "--tls-auth-clients",
                    "optional",
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                ]
                .map(str::to_owned)
                .to_vec()
            }
        }
    }

    /// `redis-cli` against `port` this way, its output.
    fn cli(self, port: u16, args: &[&str]) -> Result<String> {
        match self {
            Transport::Plain => cli(port, args),
            Transport::Tls(certs) => tls_cli(port, certs, true, args),
        }
    }

    /// Starts `server <args>` listening on `port` this way, and waits until it answers PING.
    fn spawn(
        self,
        server: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        args: &[&str],
    ) -> Result<Process> {
        let listen = self.listen(port);
        let mut all = args.to_vec();
        all.extend(listen.iter().map(String::as_str));
        launch(server, dir, name, port, &all, || match self {
            Transport::Plain => ping(port),
            Transport::Tls(_) => self
                .cli(port, &["PING"])
                .is_ok_and(|out| out.trim() == "PONG"),
        })
    }
}

/// A single server, on a loopback port and a unix socket.
#[derive(Debug)]
pub(crate) struct RedisServer {
    process: Process,
    socket: PathBuf,
    _dir: TempDir,
}

impl RedisServer {
    /// Installs redis-server if missing, starts it and waits until it answers PING.
    pub(crate) fn start() -> Result<Self> {
        Self::start_on(&binary()?)
    }

    /// Starts the `server` binary (a redis-server or valkey-server) and waits until it answers
    /// PING.
    pub(crate) fn start_on(server: &Path) -> Result<Self> {
        let dir = TempDir::new("xtask-redis")?;
        let socket = dir.path().join("redis.sock");
        let socket_text = socket.to_string_lossy().into_owned();
        let process = Transport::Plain.spawn(
            server,
            dir.path(),
            "single",
            util::free_port()?,
            &["--unixsocket", &socket_text, "--unixsocketperm", "700"],
        )?;
        Ok(Self {
            process,
            socket,
            _dir: dir,
        })
    }

    /// The URL tests connect to.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.process.port)
    }

    /// The path of the same server's unix socket.
    pub(crate) fn socket(&self) -> String {
        self.socket.display().to_string()
    }
}

/// A single server that speaks only TLS (`--port 0 --tls-port`), with the test CA's server
/// certificate; clients authenticate with a certificate optionally, or necessarily (mutual TLS).
#[derive(Debug)]
pub(crate) struct RedisTlsServer {
    process: Process,
    _dir: TempDir,
}

impl RedisTlsServer {
    /// Starts the server and waits until `redis-cli --tls` (verifying the server certificate
    /// against the CA, presenting the client certificate) gets `PONG`. With
    /// `require_client_cert`, clients without a certificate from the CA are refused.
    pub(crate) fn start(certs: &Certs, require_client_cert: bool) -> Result<Self> {
        let dir = TempDir::new(if require_client_cert {
            "xtask-redis-mtls"
        } else {
            "xtask-redis-tls"
        })?;
        let port = util::free_port()?;
        let port_text = port.to_string();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let (cert, key, ca) = (
            path(&certs.server.cert),
            path(&certs.server.key),
            path(&certs.ca),
        );
        let auth = if require_client_cert {
            "yes"
        } else {
            "optional"
        };
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            auth,
        ];
        let process = launch(&binary()?, dir.path(), "tls", port, &args, || {
            tls_cli(port, certs, true, &["PING"]).is_ok_and(|out| out.trim() == "PONG")
        })
        .map_err(|e| {
            format!("{e} (is redis-server built with TLS? `redis-server --tls-port` must work)")
        })?;
        Ok(Self { process, _dir: dir })
    }

    /// The URL tests connect to (`rediss://`, verify against the test CA).
    pub(crate) fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.process.port)
    }
}

/// `redis-cli --tls --cacert <CA> [--cert --key] -p <port> <args>`, its output; killed after
/// 20 s (redis-cli has no timeout of its own for a stuck handshake; `--cluster create` takes
/// a few seconds).
fn tls_cli(port: u16, certs: &Certs, client_cert: bool, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "20",
        "redis-cli",
        "--tls",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
    ])
    .arg("--cacert")
    .arg(&certs.ca);
    if client_cert {
        cmd.arg("--cert")
            .arg(&certs.client.cert)
            .arg("--key")
            .arg(&certs.client.key);
    }
    util::output(cmd.args(args))
}

/// A Redis Cluster of 3 masters (no replicas), all 16 384 slots assigned.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<Process>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts the nodes, listening by `transport`, and joins them into one cluster.
    pub(crate) fn start(transport: Transport<'_>) -> Result<Self> {
        Self::start_on(transport, &binary()?)
    }

    /// Like [`start`](Self::start), with the `server` binary.
    pub(crate) fn start_on(transport: Transport<'_>, server: &Path) -> Result<Self> {
        let dir = TempDir::new(match transport {
            Transport::Plain => "xtask-redis-cluster",
            Transport::Tls(_) => "xtask-redis-tls-cluster",
        })?;
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(transport.spawn(
                server,
                dir.path(),
                &format!("node{i}"),
                util::free_port()?,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        transport
            .cli(nodes[0].port, &create)
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        util::wait_until("the redis cluster", Duration::from_secs(30), || {
            ports.iter().all(|port| {
                transport
                    .cli(*port, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })
        })?;
        Ok(Self { nodes, _dir: dir })
    }

    /// The seed nodes, `host:port,host:port,...`.
    pub(crate) fn addrs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A master, one replica, and 3 sentinels monitoring them as [`MASTER_NAME`] (quorum 2,
/// down after 1 s).
#[derive(Debug)]
pub(crate) struct RedisSentinels {
    // Sentinels first: they stop before the servers they watch.
    sentinels: Vec<Process>,
    _replica: Process,
    _master: Process,
    _dir: TempDir,
}

impl RedisSentinels {
    /// Starts the master, its replica and the sentinels, all listening by `transport`.
    pub(crate) fn start(transport: Transport<'_>) -> Result<Self> {
        Self::start_on(transport, &binary()?)
    }

    /// Like [`start`](Self::start), with the `server` binary.
    pub(crate) fn start_on(transport: Transport<'_>, server: &Path) -> Result<Self> {
        let dir = TempDir::new(match transport {
            Transport::Plain => "xtask-redis-sentinel",
            Transport::Tls(_) => "xtask-redis-tls-sentinel",
        })?;
        // No delay before a replica's first sync (the default waits 5 s for more replicas).
        let master = transport.spawn(
            server,
            dir.path(),
            "master",
            util::free_port()?,
            &["--repl-diskless-sync-delay", "0"],
        )?;
        let master_port = master.port.to_string();
        let replica = transport.spawn(
            server,
            dir.path(),
            "replica",
            util::free_port()?,
            &["--replicaof", "127.0.0.1", &master_port],
        )?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let name = format!("sentinel{i}");
            let conf_dir = dir.path().join(&name);
            std::fs::create_dir_all(&conf_dir).map_err(|e| e.to_string())?;
            // A sentinel rewrites its configuration file: it must be its own, writable.
            let conf = conf_dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n"
                ),
            )
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
            let conf = conf.to_string_lossy().into_owned();
            sentinels.push(transport.spawn(
                server,
                dir.path(),
                &name,
                util::free_port()?,
                &[&conf, "--sentinel"],
            )?);
        }
        let ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
        util::wait_until("the sentinels", Duration::from_secs(30), || {
            ports.iter().all(|port| {
                transport
                    .cli(*port, &["SENTINEL", "REPLICAS", MASTER_NAME])
                    .is_ok_and(|out| out.contains("slave") || out.contains("replica"))
                    && transport
                        .cli(*port, &["SENTINEL", "SENTINELS", MASTER_NAME])
                        .is_ok_and(|out| out.matches("127.0.0.1").count() >= 2)
            })
        })?;
        Ok(Self {
            sentinels,
            _replica: replica,
            _master: master,
            _dir: dir,
        })
    }

    /// The sentinels, `host:port,host:port,...`.
    pub(crate) fn addrs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

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
