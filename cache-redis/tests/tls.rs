//! TLS to real `redis-server`s with a TLS port (started by `cargo xtask test` with a throwaway
//! CA): the conformance suite over TLS — on a single server, a Redis Cluster and a
//! Sentinel-managed master, each speaking TLS only — and the failures a misconfiguration must
//! give, clearly, at the first operation, never a hang.

use std::time::Duration;

use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestEntry, TestIndex};
use cache_core::{CacheSettings, Channel, ChannelEvent, ErrorKind, TlsFiles};
use cache_redis::{RedisConfig, RedisConnector};

fn var(name: &str) -> Option<String> {
    cache_core::testkit::server_url(name)
}

/// TLS settings trusting the test CA, with the client certificate when `client` is set.
fn tls(client: bool) -> Option<TlsFiles> {
    Some(TlsFiles {
        ca_file: var("CACHE_TEST_TLS_CA")?,
        cert_file: if client {
            var("CACHE_TEST_TLS_CLIENT_CERT")?
        } else {
            String::new()
        },
        key_file: if client {
            var("CACHE_TEST_TLS_CLIENT_KEY")?
        } else {
            String::new()
        },
        insecure_skip_verify: false,
    })
}

fn config(url: String, tls: TlsFiles) -> RedisConfig {
    RedisConfig {
        tls,
        dial_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        ..RedisConfig::with_url(url)
    }
}

/// The conformance fixture on a connector made with `config`.
fn fixture_on(config: RedisConfig) -> impl Fixture {
    let connector = RedisConnector::new(config, "test-v1").expect("a valid TLS configuration");
    RealTimeFixture::new(false, move |purpose, indices, settings| {
        connector.cache(purpose, indices, settings) as TestCache
    })
}

async fn fixture() -> Option<impl Fixture> {
    Some(fixture_on(config(
        var("CACHE_TEST_REDIS_TLS_URL")?,
        tls(false)?,
    )))
}

cache_core::conformance_suite!(fixture);

/// A set through a cache on `config`, and what it gave.
async fn set_on(config: RedisConfig) -> cache_core::Result<()> {
    let connector = RedisConnector::new(config, "v1")?;
    let cache = connector.cache::<TestIndex, TestEntry>(
        &cache_core::testkit::unique_purpose("tls"),
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    cache_core::Cache::set(&*cache, std::sync::Arc::new(TestEntry::new("1", &[]))).await
}

#[tokio::test]
async fn without_the_ca_the_server_is_not_trusted() {
    let Some(url) = var("CACHE_TEST_REDIS_TLS_URL") else {
        return;
    };
    assert_untrusted(set_on(config(url, TlsFiles::default())).await);
}

#[tokio::test]
async fn insecure_skip_verify_connects_without_the_ca_and_warns() {
    let Some(url) = var("CACHE_TEST_REDIS_TLS_URL") else {
        return;
    };
    let (guard, logs) = cache_core::testkit::logs::capture();
    let skip = TlsFiles {
        insecure_skip_verify: true,
        ..TlsFiles::default()
    };
    set_on(config(url, skip))
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

#[tokio::test]
async fn a_server_that_requires_client_certificates_gets_one_or_refuses() {
    let Some(url) = var("CACHE_TEST_REDIS_MTLS_URL") else {
        return;
    };
    let Some(with_client) = tls(true) else { return };
    set_on(config(url.clone(), with_client))
        .await
        .expect("mutual TLS with the client certificate");
    let error = set_on(config(url, tls(false).unwrap()))
        .await
        .expect_err("no client certificate, no connection");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
}

#[test]
fn tls_settings_are_checked_when_the_configuration_is() {
    let missing = TlsFiles {
        ca_file: "/nonexistent/ca.pem".into(),
        ..TlsFiles::default()
    };
    let mut bad = config("rediss://127.0.0.1:1/".into(), missing);
    let (key, message) = bad.validate().unwrap_err();
    assert_eq!(key, "TLS.CAFile");
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
    bad.tls = TlsFiles {
        cert_file: "/etc/hostname".into(),
        ..TlsFiles::default()
    };
    assert_eq!(bad.validate().unwrap_err().0, "TLS.KeyFile");
    let off = RedisConfig {
        tls: TlsFiles {
            insecure_skip_verify: true,
            ..TlsFiles::default()
        },
        ..RedisConfig::with_url("redis://127.0.0.1:1/")
    };
    assert_eq!(off.validate().unwrap_err().0, "TLS", "TLS files but no TLS");
}

/// The refusal of a server whose certificate comes from a CA the client does not trust.
fn assert_untrusted(result: cache_core::Result<()>) {
    let error = result.expect_err("a certificate of an unknown CA is refused");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "the error says why: {error}"
    );
}

/// In a module whose `config(tls)` names a TLS topology: the conformance suite over it, and
/// the test (named `$untrusted`) that it is refused without the test CA.
macro_rules! tls_topology {
    ($untrusted:ident) => {
        async fn fixture() -> Option<impl Fixture> {
            Some(fixture_on(config(tls(false)?)?))
        }

        cache_core::conformance_suite!(fixture);

        #[tokio::test]
        async fn $untrusted() {
            let Some(config) = config(TlsFiles::default()) else {
                return;
            };
            assert_untrusted(set_on(config).await);
        }
    };
}

/// A Redis Cluster that speaks TLS only, its cluster bus too (`CACHE_TEST_REDIS_TLS_CLUSTER`):
/// `EnableTLS` with the seed nodes.
mod cluster {
    use super::*;
    use cache_redis::ClusterConfig;

    pub(super) fn config(tls: TlsFiles) -> Option<RedisConfig> {
        let addrs = var("CACHE_TEST_REDIS_TLS_CLUSTER")?;
        Some(RedisConfig {
            cluster: Some(ClusterConfig {
                addrs: addrs.split(',').map(str::to_owned).collect(),
            }),
            enable_tls: true,
            ..super::config(String::new(), tls)
        })
    }

    tls_topology!(without_the_ca_the_cluster_is_not_trusted);
}

/// A master and replica that speak TLS only, watched by sentinels that speak TLS only
/// (`CACHE_TEST_REDIS_TLS_SENTINELS`, `CACHE_TEST_REDIS_MASTER`): `EnableTLS` covers the
/// sentinels and the data nodes alike.
mod sentinel {
    use super::*;
    use cache_redis::SentinelConfig;

    pub(super) fn config(tls: TlsFiles) -> Option<RedisConfig> {
        let addrs = var("CACHE_TEST_REDIS_TLS_SENTINELS")?;
        let master_name = var("CACHE_TEST_REDIS_MASTER")?;
        Some(RedisConfig {
            sentinel: Some(SentinelConfig {
                master_name,
                addrs: addrs.split(',').map(str::to_owned).collect(),
                ..SentinelConfig::default()
            }),
            enable_tls: true,
            ..super::config(String::new(), tls)
        })
    }

    tls_topology!(without_the_ca_the_sentinels_are_not_trusted);
}

/// The near caches' channel on `config`: subscribed, and a message published comes back —
/// over TLS, on whichever topology `config` names.
async fn channel_round_trip(config: RedisConfig) {
    let connector = RedisConnector::new(config, "v1").unwrap();
    let channel = connector.channel().unwrap();
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let _listening = channel.listen(Box::new(move |event| {
        let _ = events.send(event);
    }));
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("an event within 10 s")
            .unwrap()
    };
    let first = next().await;
    assert!(
        matches!(first, ChannelEvent::Subscribed),
        "subscribed over TLS, got {first:?}"
    );
    channel.publish(b"over tls".to_vec()).await.unwrap();
    let message = next().await;
    assert!(
        matches!(&message, ChannelEvent::Message(m) if m == b"over tls"),
        "{message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_works_over_tls_on_every_topology() {
    let (Some(url), Some(ca)) = (var("CACHE_TEST_REDIS_TLS_URL"), tls(false)) else {
        return;
    };
    channel_round_trip(config(url, ca.clone())).await;
    let (Some(cluster), Some(sentinel)) = (cluster::config(ca.clone()), sentinel::config(ca))
    else {
        return;
    };
    channel_round_trip(cluster).await;
    channel_round_trip(sentinel).await;
}
