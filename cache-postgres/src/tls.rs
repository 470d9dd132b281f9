//! TLS to the database: `SSLMode` and the `TLS` files, read the way libpq reads `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey`.
//!
//! | mode          | encrypted          | server certificate checked                      |
//! |---------------|--------------------|-------------------------------------------------|
//! | `disable`     | no                 | —                                               |
//! | `prefer`      | if the server can  | no                                              |
//! | `require`     | yes                | no; with `TLS.CAFile`: signed by that CA        |
//! | `verify-ca`   | yes                | signed by a trusted CA                          |
//! | `verify-full` | yes                | signed by a trusted CA and made for the host    |
//!
//! Trusted CAs are those of `TLS.CAFile`, else the system's. Without the Cargo feature `tls`,
//! `disable` and `prefer` connect in plain text and stricter modes are refused with what to do.

use std::fmt;

/// How a connection uses TLS (`SSLMode`, or `sslmode` in the URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text.
    Disable,
    /// TLS when the server offers it, unverified; plain text otherwise (libpq's default).
    Prefer,
    /// TLS, the certificate unverified unless a CA file is named.
    Require,
    /// TLS with a certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA and made for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling (`allow` is taken as `prefer`).
    pub fn parse(text: &str) -> Result<SslMode, String> {
        match text.to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "{other:?} is not an sslmode; write disable, prefer, require, verify-ca or \
                 verify-full"
            )),
        }
    }

    /// What tokio-postgres is told: it knows whether to try TLS, not how to verify it.
    pub(crate) fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            SslMode::Disable => Pg::Disable,
            SslMode::Prefer => Pg::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Pg::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// The TLS parameters of a connection URL or `key=value` string, taken out of it (tokio-postgres
/// knows neither the `verify-*` modes nor the file parameters).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UrlTls {
    pub(crate) mode: Option<String>,
    pub(crate) root_cert: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
}

impl UrlTls {
    /// Takes `name`'s value if it is a TLS parameter.
    fn take(&mut self, name: &str, value: String) -> bool {
        let slot = match name {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.root_cert,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// `url` without its TLS parameters, and those parameters.
pub(crate) fn split_url(url: &str) -> (String, UrlTls) {
    let mut tls = UrlTls::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), tls);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned();
                !tls.take(name, value)
            })
            .collect();
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (url, tls)
    } else {
        let mut kept = Vec::new();
        for (name, value, raw) in key_values(url) {
            if !tls.take(name, value) {
                kept.push(raw);
            }
        }
        (kept.join(" "), tls)
    }
}

/// The `name=value` pairs of a libpq connection string, each with its text as written
/// (values may be single-quoted, with `\'` and `\\` escapes). Text that is not a pair ends
/// the scan; tokio-postgres reports it.
fn key_values(text: &str) -> Vec<(&str, String, &str)> {
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let Some(eq) = rest.find('=') else {
            pairs.push(("", String::new(), start));
            break;
        };
        let name = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let mut value = String::new();
        let mut end = rest.len();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            end = quoted.len() + 1;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '\'' => {
                        end = i + 2;
                        break;
                    }
                    c => value.push(c),
                }
            }
        } else {
            end = rest.find(char::is_whitespace).unwrap_or(end);
            value.push_str(&rest[..end]);
        }
        let written = start.len() - rest.len() + end;
        pairs.push((name, value, &start[..written]));
        rest = rest[end..].trim_start();
    }
    pairs
}

#[cfg(feature = "tls")]
pub(crate) use connector::{MakeTls, make_tls};

/// How a connection of the connector's own connects (the channel's listener): where, and
/// with what TLS.
#[derive(Clone)]
pub(crate) struct Connect {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeTls,
}

impl Connect {
    /// A connector for one more connection.
    #[allow(
        clippy::clone_on_copy,
        reason = "without the `tls` feature it is NoTls, Copy"
    )]
    pub(crate) fn tls(&self) -> MakeTls {
        self.tls.clone()
    }
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres' Debug redacts the password.
        f.debug_struct("Connect")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The connector tokio-postgres negotiates TLS with: rustls with the mode's verification.
#[cfg(feature = "tls")]
mod connector {
    use std::sync::Arc;

    use cache_core::TlsPem;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    };

    use super::SslMode;

    /// What connections negotiate TLS with.
    pub(crate) type MakeTls = tokio_postgres_rustls::MakeRustlsConnect;

    /// A connector for `mode` trusting `pem`'s CA (else the system's) and presenting its client
    /// certificate. `skip_verify` accepts any certificate. On error, the key and what to do.
    pub(crate) fn make_tls(
        mode: SslMode,
        pem: &TlsPem,
        skip_verify: bool,
    ) -> Result<MakeTls, (&'static str, String)> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ("SSLMode", format!("no TLS version available: {e}")))?;
        let check = match mode {
            _ if skip_verify => Check::Nothing,
            SslMode::Disable | SslMode::Prefer => Check::Nothing,
            SslMode::Require if pem.ca.is_none() => Check::Nothing,
            SslMode::Require | SslMode::VerifyCa => Check::Authority,
            SslMode::VerifyFull => Check::AuthorityAndName,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match check {
            Check::Nothing => Arc::new(Unverified(provider)),
            Check::Authority | Check::AuthorityAndName => {
                let roots = Arc::new(roots(pem)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| ("TLS.CAFile", format!("cannot verify with it: {e}")))?;
                match check {
                    Check::Authority => Arc::new(AnyName(webpki)),
                    _ => webpki,
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &pem.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ("TLS.CertFile", format!("is not a PEM certificate: {e}")))?;
                if chain.is_empty() {
                    return Err((
                        "TLS.CertFile",
                        "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                    (
                        "TLS.KeyFile",
                        format!("holds no PEM private key the client can use: {e}"),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    (
                        "TLS.KeyFile",
                        format!("does not go with TLS.CertFile's certificate: {e}"),
                    )
                })?
            }
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    enum Check {
        Nothing,
        Authority,
        AuthorityAndName,
    }

    /// The CAs of `TLS.CAFile`, else the system's.
    fn roots(pem: &TlsPem) -> Result<RootCertStore, (&'static str, String)> {
        let mut roots = RootCertStore::empty();
        match &pem.ca {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert =
                        cert.map_err(|e| ("TLS.CAFile", format!("is not PEM certificates: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| ("TLS.CAFile", format!("holds an unusable CA: {e}")))?;
                }
                if roots.is_empty() {
                    return Err((
                        "TLS.CAFile",
                        "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
                    ));
                }
            }
            None => {
                let system = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(system.certs);
                if roots.is_empty() {
                    return Err((
                        "TLS.CAFile",
                        "is empty and the system has no CA certificates to verify the server \
                         with; name the PEM file of the CA that signed the server's certificate"
                            .to_owned(),
                    ));
                }
            }
        }
        Ok(roots)
    }

    /// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
    #[derive(Debug)]
    struct AnyName(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            // WebPKI checks the chain first and the name last: a name error means the chain
            // was good.
            match self.0.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    /// `prefer`, `require` without a CA, `InsecureSkipVerify`: any certificate is accepted
    /// (the handshake is still checked to be signed by its key).
    #[derive(Debug)]
    struct Unverified(Arc<CryptoProvider>);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

/// Without the `tls` feature connections are plain: `prefer` never gets TLS.
#[cfg(not(feature = "tls"))]
pub(crate) type MakeTls = tokio_postgres::NoTls;

/// Without the `tls` feature: plain connections for `disable` and `prefer`, a clear refusal
/// otherwise.
#[cfg(not(feature = "tls"))]
pub(crate) fn make_tls(
    mode: SslMode,
    pem: &cache_core::TlsPem,
    skip_verify: bool,
) -> Result<MakeTls, (&'static str, String)> {
    if matches!(mode, SslMode::Disable | SslMode::Prefer)
        && pem.ca.is_none()
        && pem.client.is_none()
        && !skip_verify
    {
        return Ok(tokio_postgres::NoTls);
    }
    Err((
        "SSLMode",
        format!(
            "sslmode {mode} and TLS files need the `tls` Cargo feature of cache-postgres \
             (feature `tls` of cache-config); enable it, or connect with sslmode=disable over \
             a trusted network"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_urls() {
        let (url, tls) = split_url(
            "postgres://u:p@db:5432/app?sslmode=verify-full&application_name=svc&\
             sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/c.key",
        );
        assert_eq!(url, "postgres://u:p@db:5432/app?application_name=svc");
        assert_eq!(
            tls,
            UrlTls {
                mode: Some("verify-full".into()),
                root_cert: Some("/etc/ca.pem".into()),
                cert: Some("/c.pem".into()),
                key: Some("/c.key".into()),
            }
        );
        let (url, tls) = split_url("postgresql://db/app?sslmode=require");
        assert_eq!(url, "postgresql://db/app");
        assert_eq!(tls.mode.as_deref(), Some("require"));
        let (url, tls) = split_url("postgres://db/app");
        assert_eq!(
            (url.as_str(), tls),
            ("postgres://db/app", UrlTls::default())
        );
    }

    #[test]
    fn tls_parameters_leave_key_value_strings() {
        let (text, tls) = split_url(
            "host=db sslmode = verify-ca user=svc sslrootcert='/my certs/ca.pem' \
             password='it\\'s' sslkey=/k",
        );
        assert_eq!(text, "host=db user=svc password='it\\'s'");
        assert_eq!(tls.mode.as_deref(), Some("verify-ca"));
        assert_eq!(tls.root_cert.as_deref(), Some("/my certs/ca.pem"));
        assert_eq!(tls.key.as_deref(), Some("/k"));
        let parsed: tokio_postgres::Config = text.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's"[..]));
        // Not pairs: left for tokio-postgres to report.
        let (text, _) = split_url("host=db nonsense");
        assert_eq!(text, "host=db nonsense");
    }

    #[test]
    fn modes_parse_like_libpq() {
        assert_eq!(SslMode::parse("VERIFY-FULL"), Ok(SslMode::VerifyFull));
        assert_eq!(SslMode::parse("allow"), Ok(SslMode::Prefer));
        assert!(
            SslMode::parse("verify_full")
                .unwrap_err()
                .contains("verify-full")
        );
        assert_eq!(SslMode::VerifyCa.to_string(), "verify-ca");
    }
}
