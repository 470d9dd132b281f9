//! Assembling object caches from a configuration and switching them at runtime.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cache_config::{Caches, CachesConfig, Loader};
use cache_core::testkit::{TestEntry, TestIndex};

type OrgIndex = TestIndex;
type Org = TestEntry;

fn org() -> Org {
    TestEntry::new("1", &["acme.example"])
}

fn config(yaml: &str) -> CachesConfig {
    Loader::new()
        .yaml(yaml)
        .load()
        .expect("valid configuration")
}

const INDICES: &[OrgIndex] = TestIndex::BUILT;

#[tokio::test]
async fn built_in_and_declared_purposes_get_their_configured_connector() {
    let config = Loader::new()
        .yaml("Caches: { Memory: { Enabled: true }, Organization: { Connector: memory }, Sessions: { Connector: memory } }")
        .purpose("sessions")
        .load()
        .unwrap();
    let caches = Caches::start(&config, "v1").unwrap();
    assert_eq!(caches.version(), "v1");
    let orgs = caches
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    let instances = caches
        .object_cache::<OrgIndex, Org>("instance", INDICES)
        .unwrap();
    let sessions = caches
        .object_cache::<OrgIndex, Org>("Sessions", INDICES)
        .unwrap();
    assert_eq!(orgs.connector(), "memory");
    assert_eq!(
        instances.connector(),
        "none",
        "an empty connector is the no-op cache"
    );
    assert_eq!(sessions.connector(), "memory");
    orgs.set(org()).await;
    assert_eq!(
        orgs.get(OrgIndex::Name, "acme.example").await.as_deref(),
        Some(&org())
    );

    let again = caches
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap_err();
    assert_eq!(again.path(), "Caches.Organization");
    let unknown = caches
        .object_cache::<OrgIndex, Org>("tokens", INDICES)
        .unwrap_err();
    assert!(unknown.message().contains("Loader::purpose"), "{unknown}");
    caches.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_switches_connector_at_runtime_while_tasks_read_it() {
    let caches = Caches::start(&config("Caches: { Memory: { Enabled: true } }"), "v1").unwrap();
    let orgs = caches
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    assert_eq!(orgs.connector(), "none");

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (orgs, done, reads) = (orgs.clone(), done.clone(), reads.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if let Some(found) = orgs.get(OrgIndex::Id, "1").await {
                        assert_eq!(*found, org());
                    }
                    orgs.set(org()).await;
                    reads.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(20)).await;
    caches
        .reconfigure(&config(
            "Caches: { Memory: { Enabled: true }, Organization: { Connector: memory } }",
        ))
        .await
        .unwrap();
    assert_eq!(orgs.connector(), "memory");
    // Waited for, not slept on: how soon the readers run is up to the machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while orgs.stats().hits == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        orgs.stats().hits > 0,
        "readers hit the memory backend after the switch"
    );
    let first_memory: Weak<_> = Arc::downgrade(&orgs.backend());

    caches
        .reconfigure(&config(
            "Caches: { Memory: { Enabled: true, Capacity: 500 }, Organization: { Connector: memory, MaxAge: 5m } }",
        ))
        .await
        .unwrap();
    assert_eq!(orgs.connector(), "memory");
    tokio::time::sleep(Duration::from_millis(20)).await;

    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("a reader failed");
    }
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(
        first_memory.upgrade().is_none(),
        "the replaced memory cache (and its pruner) is gone once in-flight calls ended"
    );
    assert_eq!(orgs.stats().errors, 0);
    caches.shutdown().await;
}

#[tokio::test]
async fn unchanged_settings_keep_the_cached_objects() {
    let yaml = "Caches: { Memory: { Enabled: true }, Organization: { Connector: memory }, Instance: { Connector: memory } }";
    let caches = Caches::start(&config(yaml), "v1").unwrap();
    let orgs = caches
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    let instances = caches
        .object_cache::<OrgIndex, Org>("instance", INDICES)
        .unwrap();
    orgs.set(org()).await;
    instances.set(org()).await;
    caches
        .reconfigure(&config(
            "Caches: { Memory: { Enabled: true }, Organization: { Connector: memory }, Instance: { Connector: memory, MaxAge: 1s } }",
        ))
        .await
        .unwrap();
    assert!(
        orgs.get(OrgIndex::Id, "1").await.is_some(),
        "unchanged: kept"
    );
    assert!(
        instances.get(OrgIndex::Id, "1").await.is_none(),
        "changed: a new, empty backend"
    );
    caches.shutdown().await;
}

#[tokio::test]
async fn a_bad_new_configuration_changes_nothing() {
    let caches = Caches::start(
        &config("Caches: { Memory: { Enabled: true }, Organization: { Connector: memory } }"),
        "v1",
    )
    .unwrap();
    let orgs = caches
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    orgs.set(org()).await;
    // Loading already rejects a cache naming a disabled connector; a hand-made config that
    // slips past loading is rejected by reconfigure without touching the running caches.
    let mut bad = config("Caches: { Organization: { Connector: \"\" } }");
    bad.organization.connector = "memory".into();
    let e = caches.reconfigure(&bad).await.unwrap_err();
    assert_eq!(e.path(), "Caches.Organization.Connector");
    assert_eq!(orgs.connector(), "memory");
    assert!(orgs.get(OrgIndex::Id, "1").await.is_some());
    caches.shutdown().await;
}

/// An object cache on a real PostgreSQL (`CACHE_TEST_POSTGRES_URL`, started by
/// `cargo xtask test`), with the setup step run through `Caches` and its pruner started.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_cache_runs_on_postgres_when_configured() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL") else {
        return;
    };
    let purpose = cache_core::testkit::unique_purpose("config-postgres");
    let config = Loader::new()
        .yaml(format!(
            "Caches: {{ Postgres: {{ Enabled: true, URL: \"{url}\" }}, {purpose}: {{ Connector: postgres, MaxAge: 1m }} }}"
        ))
        .purpose(purpose.as_str())
        .load()
        .unwrap();
    let caches = Caches::start(&config, "v1").unwrap();
    caches.setup().await.expect("the setup step");
    let orgs = caches
        .object_cache::<OrgIndex, Org>(&purpose, INDICES)
        .unwrap();
    assert_eq!(orgs.connector(), "postgres");
    orgs.set(org()).await;
    assert_eq!(
        orgs.get(OrgIndex::Name, "acme.example").await.as_deref(),
        Some(&org())
    );
    orgs.invalidate(OrgIndex::Id, &["1"]).await.unwrap();
    assert!(orgs.get(OrgIndex::Name, "acme.example").await.is_none());
    caches.shutdown().await;

    // Unreachable database: startup still works, only the requested setup step fails.
    let down = Loader::new()
        .yaml(
            "Caches: { Postgres: { Enabled: true, URL: \"postgres://postgres@127.0.0.1:1/x\" }, Instance: { Connector: postgres } }",
        )
        .load()
        .unwrap();
    let caches = Caches::start(&down, "v1").expect("startup does not need the database");
    let e = caches.setup().await.unwrap_err();
    assert_eq!(e.path(), "Caches.Connectors.Postgres");
    assert!(e.message().contains("setup step failed"), "{e}");
}

/// A `CircuitBreaker` block puts the connector's caches behind one breaker: against a server
/// that is not there, it opens and changes are refused as `BreakerOpen` (no server needed).
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_circuit_breaker_block_guards_the_connector() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Loader::new()
        .yaml(format!(
            "Caches:
  Redis:
    Enabled: true
    URL: redis://127.0.0.1:{port}/
    DialTimeout: 200ms
    CircuitBreaker: {{ MaxConsecutiveFailures: 1, Timeout: 1m }}
  Organization: {{ Connector: redis }}"
        ))
        .load()
        .unwrap();
    let breaker = config
        .connectors
        .redis
        .circuit_breaker
        .expect("a breaker block");
    assert_eq!(breaker.max_consecutive_failures, 1);
    assert_eq!(
        breaker.min_requests, 20,
        "defaults fill the rest of the block"
    );
    let caches = Caches::start(&config, "v1").unwrap();
    let orgs = caches
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    for _ in 0..2 {
        assert!(orgs.get(OrgIndex::Id, "1").await.is_none());
    }
    let e = orgs.invalidate(OrgIndex::Id, &["1"]).await.unwrap_err();
    assert_eq!(e.kind(), cache_core::ErrorKind::BreakerOpen, "{e}");
    let breaker = caches.breaker("redis").expect("the connector's breaker");
    assert_eq!(breaker.state(), cache_breaker::BreakerState::Open);
    assert!(caches.breaker("postgres").is_none());
    caches.shutdown().await;
}

/// An object cache on a real Redis (`CACHE_TEST_REDIS_URL`, started by `cargo xtask test`).
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_cache_runs_on_redis_when_configured() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
    let purpose = cache_core::testkit::unique_purpose("config-redis");
    let config = Loader::new()
        .yaml(format!(
            "Caches: {{ Redis: {{ Enabled: true, URL: \"{url}\" }}, {purpose}: {{ Connector: redis, MaxAge: 1m }} }}"
        ))
        .purpose(purpose.as_str())
        .load()
        .unwrap();
    let caches = Caches::start(&config, "v1").unwrap();
    let orgs = caches
        .object_cache::<OrgIndex, Org>(&purpose, INDICES)
        .unwrap();
    assert_eq!(orgs.connector(), "redis");
    orgs.set(org()).await;
    assert_eq!(
        orgs.get(OrgIndex::Name, "acme.example").await.as_deref(),
        Some(&org())
    );
    orgs.invalidate(OrgIndex::Id, &["1"]).await.unwrap();
    assert!(orgs.get(OrgIndex::Name, "acme.example").await.is_none());
    caches.shutdown().await;
}

/// A near cache and a memory cache with a channel on a real Redis: built from the YAML, hits
/// from memory, a change made through another `Caches` (another process) reaching this one.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_caches_and_memory_with_a_channel_are_built_from_the_configuration() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
    let purpose = cache_core::testkit::unique_purpose("config-near");
    let config = Loader::new()
        .yaml(format!(
            "Caches:
  Memory: {{ Enabled: true }}
  Redis: {{ Enabled: true, URL: \"{url}\", CircuitBreaker: {{ MaxConsecutiveFailures: 5 }} }}
  Organization: {{ Connector: redis, Near: {{ Enabled: true, Capacity: 100 }} }}
  Instance: {{ Connector: memory, Channel: redis }}
  {purpose}: {{ Connector: redis }}"
        ))
        .purpose(purpose.as_str())
        .load()
        .unwrap();
    // Two processes' caches.
    let (one, two) = (
        Caches::start(&config, "v1").unwrap(),
        Caches::start(&config, "v1").unwrap(),
    );
    let orgs_one = one
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    let orgs_two = two
        .object_cache::<OrgIndex, Org>("organization", INDICES)
        .unwrap();
    assert_eq!(orgs_one.connector(), "redis");
    let healthy = |caches: &Caches, purpose: &str| {
        caches
            .near_stats(purpose)
            .is_some_and(|s| s.channel == cache_near::ChannelState::Healthy)
    };
    for _ in 0..500 {
        if healthy(&one, "organization") && healthy(&two, "organization") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(healthy(&one, "organization") && healthy(&two, "organization"));
    orgs_one.set(org()).await;
    // Two reads in process two: the shared level, then memory.
    for _ in 0..50 {
        assert!(orgs_two.get(OrgIndex::Id, "1").await.is_some());
        if two.near_stats("organization").unwrap().memory_hits > 0 {
            break;
        }
    }
    let stats = two.near_stats("organization").unwrap();
    assert!(stats.memory_hits > 0 && stats.shared_hits > 0, "{stats:?}");
    orgs_one
        .invalidate(OrgIndex::Name, &["acme.example"])
        .await
        .unwrap();
    // At least 5 s: a deadline against a hang, not a propagation bound.
    for _ in 0..5_000 {
        if orgs_two.get(OrgIndex::Id, "1").await.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(orgs_two.get(OrgIndex::Id, "1").await.is_none());
    // Memory alone, with a channel: an invalidation in one process reaches the other.
    let instances_one = one
        .object_cache::<OrgIndex, Org>("instance", INDICES)
        .unwrap();
    let instances_two = two
        .object_cache::<OrgIndex, Org>("instance", INDICES)
        .unwrap();
    assert_eq!(instances_two.connector(), "memory");
    for _ in 0..500 {
        if healthy(&two, "instance") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    instances_two.set(org()).await;
    assert!(instances_two.get(OrgIndex::Id, "1").await.is_some());
    instances_one
        .invalidate(OrgIndex::Id, &["1"])
        .await
        .unwrap();
    for _ in 0..5_000 {
        if instances_two.get(OrgIndex::Id, "1").await.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(
        instances_two
            .get(OrgIndex::Name, "acme.example")
            .await
            .is_none()
    );
    // A plain redis cache is no near cache.
    let plain = one
        .object_cache::<OrgIndex, Org>(&purpose, INDICES)
        .unwrap();
    assert_eq!(plain.connector(), "redis");
    assert!(one.near_stats(&purpose).is_none());
    one.shutdown().await;
    two.shutdown().await;
}

/// A cache switched from Redis to memory and back starts on an empty Redis cache: an object
/// invalidated while it ran on memory is not served from what Redis kept.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_cache_switched_back_to_redis_serves_nothing_invalidated_meanwhile() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_REDIS_URL") else {
        return;
    };
    let purpose = cache_core::testkit::unique_purpose("config-switch");
    let config = |connector: &str| {
        Loader::new()
            .yaml(format!(
                "Caches: {{ Memory: {{ Enabled: true }}, Redis: {{ Enabled: true, URL: \"{url}\" }}, \
                 {purpose}: {{ Connector: {connector}, MaxAge: 1h }} }}"
            ))
            .purpose(purpose.as_str())
            .load()
            .unwrap()
    };
    let caches = Caches::start(&config("redis"), "v1").unwrap();
    let orgs = caches
        .object_cache::<OrgIndex, Org>(&purpose, INDICES)
        .unwrap();
    orgs.set(org()).await;
    assert!(
        orgs.get(OrgIndex::Name, "acme.example").await.is_some(),
        "stored in Redis"
    );
    caches.reconfigure(&config("memory")).await.unwrap();
    assert_eq!(orgs.connector(), "memory");
    // The organization changes while the cache runs on memory.
    orgs.invalidate(OrgIndex::Id, &["1"]).await.unwrap();
    caches.reconfigure(&config("redis")).await.unwrap();
    assert_eq!(orgs.connector(), "redis");
    assert!(
        orgs.get(OrgIndex::Name, "acme.example").await.is_none(),
        "Redis still held the organization invalidated while the cache ran on memory"
    );
    caches.shutdown().await;
}
