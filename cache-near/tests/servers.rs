//! The near cache over real servers (`cargo xtask test` starts them): the conformance suite
//! and the model test over Redis (its pub/sub channel) and PostgreSQL (`LISTEN`/`NOTIFY`),
//! changes reaching another process's memory level, and subscriptions killed by the server.
//!
//! The memory levels run on the exact system clock: the suite checks expiry to the
//! millisecond in real time, finer than the memory connector's default coarse clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, Channel, SystemClock};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{ChannelState, Hub, NearCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};

use TestIndex::{Id, Name};

async fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

fn near(
    purpose: &str,
    shared: TestCache,
    hub: &Hub,
    settings: &CacheSettings,
) -> Arc<NearCache<TestIndex, TestEntry>> {
    let memory = MemoryConnector::with_clock(MemoryConfig::enabled(), SystemClock::shared()).cache(
        purpose,
        TestIndex::BUILT,
        settings,
    );
    Arc::new(NearCache::new(purpose, memory, Some(shared), hub.clone()))
}

fn redis_url() -> Option<String> {
    cache_core::testkit::server_url("CACHE_TEST_REDIS_URL")
}

fn postgres_url() -> Option<String> {
    cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")
}

async fn healthy(hub: &Hub) {
    wait_for("the hub is healthy", Duration::from_secs(10), || {
        hub.is_healthy()
    })
    .await;
}

mod redis_conformance {
    use super::*;

    async fn fixture() -> Option<impl Fixture> {
        let connector =
            RedisConnector::new(RedisConfig::with_url(redis_url()?), "test-v1").unwrap();
        let hub = Hub::new(Arc::new(connector.channel().unwrap()));
        healthy(&hub).await;
        Some(RealTimeFixture::new(
            true,
            move |purpose, indices, settings| {
                let shared: TestCache = connector.cache(purpose, indices, settings);
                let memory =
                    MemoryConnector::with_clock(MemoryConfig::enabled(), SystemClock::shared())
                        .cache(purpose, indices, settings);
                Arc::new(NearCache::new(purpose, memory, Some(shared), hub.clone())) as TestCache
            },
        ))
    }

    cache_core::conformance_suite!(fixture);
    cache_core::leases_suite!(fixture);
    cache_core::model_test!(fixture);
}

mod postgres_conformance {
    use super::*;

    async fn fixture() -> Option<impl Fixture> {
        let connector =
            PostgresConnector::new(&PostgresConfig::with_url(postgres_url()?), "test-v1").unwrap();
        connector.setup().await.unwrap();
        let hub = Hub::new(Arc::new(connector.channel().unwrap()));
        healthy(&hub).await;
        Some(RealTimeFixture::new(
            true,
            move |purpose, indices, settings| {
                let shared: TestCache = connector.cache(purpose, indices, settings);
                let memory =
                    MemoryConnector::with_clock(MemoryConfig::enabled(), SystemClock::shared())
                        .cache(purpose, indices, settings);
                Arc::new(NearCache::new(purpose, memory, Some(shared), hub.clone())) as TestCache
            },
        ))
    }

    cache_core::conformance_suite!(fixture);
    cache_core::leases_suite!(fixture);
    cache_core::model_test!(fixture);
}

/// Two processes' caches of `purpose`: their own connectors, hubs and memory levels.
async fn two_processes(
    make: impl Fn() -> (TestCache, Arc<dyn Channel>),
    purpose: &str,
) -> (
    Arc<NearCache<TestIndex, TestEntry>>,
    Arc<NearCache<TestIndex, TestEntry>>,
) {
    let settings = CacheSettings::default();
    let (shared_a, channel_a) = make();
    let (shared_b, channel_b) = make();
    let (hub_a, hub_b) = (Hub::new(channel_a), Hub::new(channel_b));
    healthy(&hub_a).await;
    healthy(&hub_b).await;
    (
        near(purpose, shared_a, &hub_a, &settings),
        near(purpose, shared_b, &hub_b, &settings),
    )
}

async fn changes_reach_the_other_process(
    a: &NearCache<TestIndex, TestEntry>,
    b: &NearCache<TestIndex, TestEntry>,
) {
    a.set(Arc::new(TestEntry::new("1", &["one"])))
        .await
        .unwrap();
    // B's first read may race with the announcement of A's set, which keeps it from filling
    // memory (the fence cannot tell the value it read from an overtaken one): read until
    // memory holds it.
    let started = Instant::now();
    loop {
        assert!(b.get(Name, "one").await.unwrap().is_some());
        if b.memory().get_ready(Id, "1").unwrap().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B never filled memory"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.invalidate(Id, &["1"]).await.unwrap();
    let took = wait_for(
        "B's memory dropped the object",
        Duration::from_secs(5),
        || {
            b.memory()
                .get_ready(Name, "one")
                .unwrap()
                .unwrap()
                .is_none()
        },
    )
    .await;
    eprintln!(
        "{}: B dropped the object {took:?} after A's invalidate returned",
        a.connector()
    );
    assert!(b.get(Name, "one").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_changes_reach_the_other_process_and_a_killed_subscription_reads_through() {
    let Some(url) = redis_url() else { return };
    let purpose = cache_core::testkit::unique_purpose("near-redis");
    let make = || {
        let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
        let shared: TestCache =
            connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
        (
            shared,
            Arc::new(connector.channel().unwrap()) as Arc<dyn Channel>,
        )
    };
    let (a, b) = two_processes(make, &purpose).await;
    changes_reach_the_other_process(&a, &b).await;
    // The server kills every subscription (as a restart or an operator would).
    a.set(Arc::new(TestEntry::new("2", &["two"])))
        .await
        .unwrap();
    assert!(b.get(Id, "2").await.unwrap().is_some());
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut admin)
        .await
        .unwrap();
    // The hub marks itself unhealthy (so memory answers nothing), then clears the memory
    // levels: both, within the bound.
    wait_for(
        "B noticed and cleared its memory",
        Duration::from_secs(5),
        || {
            (b.hub().state() == ChannelState::Unhealthy || b.hub().stats().outages > 0)
                && b.memory().get_ready(Id, "2").unwrap().unwrap().is_none()
        },
    )
    .await;
    let back = wait_for("B subscribed again", Duration::from_secs(10), || {
        b.hub().is_healthy()
    })
    .await;
    eprintln!("redis: subscription back {back:?} after CLIENT KILL");
    changes_reach_the_other_process(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_reach_the_other_process_and_a_terminated_listener_reads_through() {
    let Some(url) = postgres_url() else { return };
    let purpose = cache_core::testkit::unique_purpose("near-pg");
    let setup = PostgresConnector::new(&PostgresConfig::with_url(&url), "v1").unwrap();
    setup.setup().await.unwrap();
    let make = || {
        let connector = PostgresConnector::new(&PostgresConfig::with_url(&url), "v1").unwrap();
        let shared: TestCache =
            connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
        (
            shared,
            Arc::new(connector.channel().unwrap()) as Arc<dyn Channel>,
        )
    };
    let (a, b) = two_processes(make, &purpose).await;
    changes_reach_the_other_process(&a, &b).await;
    let outages = b.hub().stats().outages;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap();
    wait_for("B noticed", Duration::from_secs(5), || {
        b.hub().stats().outages > outages
    })
    .await;
    let back = wait_for("B listens again", Duration::from_secs(10), || {
        b.hub().is_healthy()
    })
    .await;
    eprintln!("postgres: listening again {back:?} after pg_terminate_backend");
    changes_reach_the_other_process(&a, &b).await;
}
