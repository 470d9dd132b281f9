//! TLS to real PostgreSQL servers that accept TLS only (started by `cargo xtask test` with a
//! throwaway CA): the conformance suite over `verify-full`, each `SSLMode`'s verification, mutual
//! TLS, the channel's listener over TLS — and the failures a misconfiguration must give,
//! clearly, at the first operation, never a hang.

use std::sync::Arc;
use std::time::Duration;

use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestEntry, TestIndex};
use cache_core::{CacheSettings, Channel, ChannelEvent, ErrorKind, TlsFiles};
use cache_postgres::{PostgresConfig, PostgresConnector};

fn var(name: &str) -> Option<String> {
    cache_core::testkit::server_url(name)
}

/// The test CA, and the client certificate when `client` is set.
fn files(client: bool) -> Option<TlsFiles> {
    let (cert_file, key_file) = if client {
        (
            var("CACHE_TEST_TLS_CLIENT_CERT")?,
            var("CACHE_TEST_TLS_CLIENT_KEY")?,
        )
    } else {
        Default::default()
    };
    Some(TlsFiles {
        ca_file: var("CACHE_TEST_TLS_CA")?,
        cert_file,
        key_file,
        insecure_skip_verify: false,
    })
}

fn config(url: String, mode: &str, tls: TlsFiles) -> PostgresConfig {
    PostgresConfig {
        ssl_mode: mode.into(),
        tls,
        connect_timeout: Duration::from_secs(3),
        ..PostgresConfig::with_url(url)
    }
}

async fn fixture() -> Option<impl Fixture> {
    let url = var("CACHE_TEST_POSTGRES_TLS_URL")?;
    let connector = PostgresConnector::new(&config(url, "verify-full", files(false)?), "test-v1")
        .expect("a valid TLS configuration");
    connector.setup().await.expect("the setup step over TLS");
    Some(RealTimeFixture::new(
        true,
        move |purpose, indices, settings| connector.cache(purpose, indices, settings) as TestCache,
    ))
}

cache_core::conformance_suite!(fixture);

/// Sets up and sets one object through a cache on `config`: what it gave.
async fn set_on(config: PostgresConfig) -> cache_core::Result<()> {
    let connector = PostgresConnector::new(&config, "v1")?;
    connector.setup().await?;
    let cache = connector.cache::<TestIndex, TestEntry>(
        &cache_core::testkit::unique_purpose("tls"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache_core::Cache::set(&*cache, Arc::new(TestEntry::new("1", &[]))).await
}

fn assert_refused(result: cache_core::Result<()>, why: &str) {
    let error = result.expect_err(why);
    eprintln!("refused as it should be: {error}");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "the error says why ({why}): {error}"
    );
}

#[tokio::test]
async fn prefer_and_require_encrypt_without_verifying() {
    let Some(url) = var("CACHE_TEST_POSTGRES_TLS_URL") else {
        return;
    };
    // The server refuses plain connections: these connected over TLS, its certificate (from
    // a CA the client does not know) unchecked, as libpq does.
    set_on(config(url.clone(), "prefer", TlsFiles::default()))
        .await
        .expect("prefer takes the TLS the server offers");
    set_on(config(url, "require", TlsFiles::default()))
        .await
        .expect("require encrypts");
}

#[tokio::test]
async fn verification_needs_the_servers_ca() {
    let Some(url) = var("CACHE_TEST_POSTGRES_TLS_URL") else {
        return;
    };
    for mode in ["verify-ca", "verify-full"] {
        assert_refused(
            set_on(config(url.clone(), mode, TlsFiles::default())).await,
            "the system's CAs did not sign the test certificate",
        );
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_and_verify_ca_does_not() {
    let (Some(url), Some(ca)) = (var("CACHE_TEST_POSTGRES_WRONG_HOST_URL"), files(false)) else {
        return;
    };
    assert_refused(
        set_on(config(url.clone(), "verify-full", ca.clone())).await,
        "the certificate is for wrong.example, not 127.0.0.1",
    );
    set_on(config(url.clone(), "verify-ca", ca.clone()))
        .await
        .expect("verify-ca checks the CA only");
    // As in libpq, `require` with a CA file verifies like `verify-ca`.
    set_on(config(url, "require", ca))
        .await
        .expect("require with a CA file is verify-ca");
}

#[tokio::test]
async fn require_with_a_ca_file_still_checks_the_ca() {
    let (Some(url), Some(ca)) = (var("CACHE_TEST_POSTGRES_TLS_URL"), var("CACHE_TEST_TLS_CA"))
    else {
        return;
    };
    // A CA file that holds another certificate than the server's CA: the client certificate's
    // own, which is no CA at all.
    let Some(other) = var("CACHE_TEST_TLS_CLIENT_CERT") else {
        return;
    };
    assert_ne!(ca, other);
    let wrong_ca = TlsFiles {
        ca_file: other,
        ..TlsFiles::default()
    };
    assert_refused(
        set_on(config(url, "require", wrong_ca)).await,
        "the server's certificate is not signed by the file's certificate",
    );
}

#[tokio::test]
async fn a_database_that_requires_a_client_certificate_gets_one_or_refuses() {
    let (Some(url), Some(with_client), Some(without)) = (
        var("CACHE_TEST_POSTGRES_MTLS_URL"),
        files(true),
        files(false),
    ) else {
        return;
    };
    set_on(config(url.clone(), "verify-full", with_client))
        .await
        .expect("mutual TLS with the client certificate");
    let error = set_on(config(url, "verify-full", without))
        .await
        .expect_err("no client certificate, no connection");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
}

#[tokio::test]
async fn insecure_skip_verify_connects_without_the_ca_and_warns() {
    let Some(url) = var("CACHE_TEST_POSTGRES_TLS_URL") else {
        return;
    };
    let (guard, logs) = cache_core::testkit::logs::capture();
    let skip = TlsFiles {
        insecure_skip_verify: true,
        ..TlsFiles::default()
    };
    set_on(config(url, "require", skip))
        .await
        .expect("no verification, no failure");
    drop(guard);
    assert_eq!(
        logs.lines_with(&["WARN", "InsecureSkipVerify", "NOT verified"])
            .len(),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_listens_over_tls() {
    let (Some(url), Some(ca)) = (var("CACHE_TEST_POSTGRES_TLS_URL"), files(false)) else {
        return;
    };
    let connector = PostgresConnector::new(&config(url, "verify-full", ca), "v1").unwrap();
    let channel = connector.channel().unwrap();
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let _listening = channel.listen(Box::new(move |event| {
        let _ = events.send(event);
    }));
    let first = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the listener connects within 10 s")
        .unwrap();
    assert!(
        matches!(first, ChannelEvent::Subscribed),
        "subscribed over TLS, got {first:?}"
    );
    channel.publish(b"over tls".to_vec()).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the message arrives within 10 s")
        .unwrap();
    assert!(
        matches!(&message, ChannelEvent::Message(m) if m == b"over tls"),
        "{message:?}"
    );
}

/// An application's own pool that connects over TLS (rustls, verifying the test CA) serves the
/// caches through `with_pool`: set, hit, invalidate, miss — on a server that accepts TLS only,
/// and `pg_stat_ssl` confirms the pool's connection is encrypted.
#[tokio::test]
async fn the_applications_own_tls_pool_serves_the_caches() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let (Some(url), Some(ca)) = (var("CACHE_TEST_POSTGRES_TLS_URL"), var("CACHE_TEST_TLS_CA"))
    else {
        return;
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut database: tokio_postgres::Config = url.parse().unwrap();
    database.ssl_mode(tokio_postgres::config::SslMode::Require);
    let manager = bb8_postgres::PostgresConnectionManager::new(
        database,
        tokio_postgres_rustls::MakeRustlsConnect::new(tls),
    );
    let pool = bb8::Pool::builder()
        .max_size(2)
        .build(manager)
        .await
        .unwrap();

    let connector =
        PostgresConnector::with_pool(pool.clone(), &PostgresConfig::with_url(url), "v1").unwrap();
    connector.setup().await.unwrap();
    let cache = connector.cache::<TestIndex, TestEntry>(
        &cache_core::testkit::unique_purpose("app-tls"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let entry = Arc::new(TestEntry::new("1", &[]));
    cache_core::Cache::set(&*cache, Arc::clone(&entry))
        .await
        .unwrap();
    let hit = cache_core::Cache::get(&*cache, TestIndex::Id, "1")
        .await
        .unwrap();
    assert_eq!(hit.as_deref(), Some(&*entry));
    cache_core::Cache::invalidate(&*cache, TestIndex::Id, &["1"])
        .await
        .unwrap();
    let miss = cache_core::Cache::get(&*cache, TestIndex::Id, "1")
        .await
        .unwrap();
    assert!(miss.is_none(), "invalidated through the application's pool");

    let encrypted: bool = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "the application's pool connects over TLS");
}
