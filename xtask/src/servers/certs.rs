//! A throwaway certificate authority and the certificates the TLS test servers and clients use,
//! made with the `openssl` command-line tool (installed with apt-get when missing) as PEM files
//! in a temp dir under `target/xtask/`, removed on drop.
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM, mode 0600. Certificates are valid for 30 days:
//!
//! - `ca.pem`: the CA (the only trust anchor the tests need);
//! - `server.pem` / `server.key`: SANs `DNS:localhost` and `IP:127.0.0.1`;
//! - `wrong-host.pem` / `wrong-host.key`: SAN `DNS:wrong.example` only, so verifying the host
//!   name fails for 127.0.0.1 and localhost (the chain itself is valid);
//! - `client.pem` / `client.key`: a client certificate, CN `postgres` (the PostgreSQL user its
//!   `cert` authentication maps to).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Result, TempDir};

/// Days the certificates are valid.
const DAYS: &str = "30";

/// The openssl configuration: an empty subject section (subjects come from `-subj`) and one
/// extension section per certificate kind.
const CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]

[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[wrong_host]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// A certificate and its private key.
#[derive(Debug, Clone)]
pub(crate) struct KeyPair {
    /// The certificate (PEM).
    pub(crate) cert: PathBuf,
    /// Its private key (PKCS#8 PEM, mode 0600).
    pub(crate) key: PathBuf,
}

/// The generated files; the directory is removed on drop.
#[derive(Debug)]
pub(crate) struct Certs {
    /// The CA certificate (PEM).
    pub(crate) ca: PathBuf,
    /// The server certificate for `localhost` / `127.0.0.1`.
    pub(crate) server: KeyPair,
    /// A server certificate for `wrong.example` only.
    pub(crate) wrong_host: KeyPair,
    /// The client certificate (CN `postgres`).
    pub(crate) client: KeyPair,
    _dir: TempDir,
}

impl Certs {
    /// Makes the CA and the certificates in a fresh directory inside `parent`.
    pub(crate) fn generate(parent: &Path) -> Result<Self> {
        openssl_binary()?;
        let dir = TempDir::new_in(parent, "tls")?;
        let at = |name: &str| dir.path().join(name);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", dir.path().display()))?;
        let config = at("openssl.cnf");
        std::fs::write(&config, CONFIG)
            .map_err(|e| format!("writing {}: {e}", config.display()))?;

        let ca = KeyPair {
            cert: at("ca.pem"),
            key: at("ca.key"),
        };
        new_key(&ca.key)?;
        openssl(
            Command::new("openssl")
                .args(["req", "-new", "-x509", "-days", DAYS, "-extensions", "ca"])
                .args(["-subj", "/CN=xtask throwaway test CA"])
                .arg("-config")
                .arg(&config)
                .arg("-key")
                .arg(&ca.key)
                .arg("-out")
                .arg(&ca.cert),
        )?;
        let issue = |name: &str, subject: &str, extensions: &str, serial: u32| {
            let pair = KeyPair {
                cert: at(&format!("{name}.pem")),
                key: at(&format!("{name}.key")),
            };
            let csr = at(&format!("{name}.csr"));
            new_key(&pair.key)?;
            openssl(
                Command::new("openssl")
                    .args(["req", "-new", "-subj", subject])
                    .arg("-config")
                    .arg(&config)
                    .arg("-key")
                    .arg(&pair.key)
                    .arg("-out")
                    .arg(&csr),
            )?;
            openssl(
                Command::new("openssl")
                    .args(["x509", "-req", "-days", DAYS, "-extensions", extensions])
                    .args(["-set_serial", &serial.to_string()])
                    .arg("-extfile")
                    .arg(&config)
                    .arg("-in")
                    .arg(&csr)
                    .arg("-CA")
                    .arg(&ca.cert)
                    .arg("-CAkey")
                    .arg(&ca.key)
                    .arg("-out")
                    .arg(&pair.cert),
            )?;
            Ok::<_, String>(pair)
        };
        let server = issue("server", "/CN=localhost", "server", 2)?;
        let wrong_host = issue("wrong-host", "/CN=wrong.example", "wrong_host", 3)?;
        let client = issue("client", "/CN=postgres", "client", 4)?;
        Ok(Self {
            ca: ca.cert,
            server,
            wrong_host,
            client,
            _dir: dir,
        })
    }
}

/// The openssl binary, installed with apt-get when missing.
fn openssl_binary() -> Result<PathBuf> {
    if let Some(b) = util::which("openssl") {
        return Ok(b);
    }
    util::apt_install(&["openssl"])?;
    util::which("openssl").ok_or_else(|| "openssl still not found after installing it".into())
}

/// A new P-256 private key at `path`, mode 0600.
fn new_key(path: &Path) -> Result<()> {
    openssl(
        Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC"])
            .args(["-pkeyopt", "ec_paramgen_curve:P-256"])
            .arg("-out")
            .arg(path),
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Runs one openssl command (stdin closed, so it can never wait for a prompt).
fn openssl(cmd: &mut Command) -> Result<()> {
    util::output(cmd)
        .map(drop)
        .map_err(|e| format!("making the test certificates: {e}"))
}
