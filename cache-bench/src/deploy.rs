//! A rolling deploy: two releases of a service (their own version strings, connections and,
//! for near caches, memory levels and channels) reading and writing the same 200 objects
//! alternately — against one release alone. Both must keep hitting (SPEC 8).

use std::sync::Arc;
use std::time::Duration;

use cache_core::testkit::releases::deploy;
use cache_core::testkit::{TestCache, TestIndex};
use cache_core::{CacheSettings, SystemClock};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};
use serde::{Deserialize, Serialize};

/// Objects both releases read.
const OBJECTS: u64 = 200;

/// One connector's rolling deploy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Deploy {
    /// The object cache's connector (`redis`, `near (postgres)`, ...).
    pub(crate) target: String,
    /// Hits per get of one release alone.
    pub(crate) alone_hit_ratio: f64,
    /// Loads one release alone caused.
    pub(crate) alone_loads: u64,
    /// Hits per get of each of the two releases side by side.
    pub(crate) hit_ratios: [f64; 2],
    /// Loads each caused.
    pub(crate) loads: [u64; 2],
    /// Gets each made.
    pub(crate) gets: [u64; 2],
}

/// Makes the cache `purpose` of a release (`version`) as its own process would.
type Release<'a> = Box<dyn Fn(&str, &str) -> TestCache + 'a>;

async fn measure(target: &str, release: Release<'_>, run: Duration) -> Deploy {
    let purpose = format!("deploy-{}-{}", target.replace(' ', ""), std::process::id());
    let alone = release("v1", &format!("{purpose}-alone"));
    let alone = deploy(&[&alone], OBJECTS, run).await[0];
    let (a, b) = (release("v1", &purpose), release("v2", &purpose));
    let both = deploy(&[&a, &b], OBJECTS, run).await;
    Deploy {
        target: target.to_owned(),
        alone_hit_ratio: alone.hit_ratio,
        alone_loads: alone.loads,
        hit_ratios: [both[0].hit_ratio, both[1].hit_ratio],
        loads: [both[0].loads, both[1].loads],
        gets: [both[0].gets, both[1].gets],
    }
}

/// A near cache of `purpose` with a memory level and hub of its own over `shared`.
fn near(purpose: &str, shared: TestCache, hub: &Hub) -> TestCache {
    let memory = MemoryConnector::with_clock(MemoryConfig::enabled(), SystemClock::shared()).cache(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    Arc::new(NearCache::new(purpose, memory, Some(shared), hub.clone()))
}

/// Waits (up to 10 s) for `hub` to be healthy.
async fn healthy(hub: &Hub) {
    for _ in 0..1_000 {
        if hub.is_healthy() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Redis and its near cache.
pub(crate) async fn redis(url: &str, run: Duration) -> Vec<Deploy> {
    let connectors: Vec<RedisConnector> = ["v1", "v2"]
        .iter()
        .map(|v| RedisConnector::new(RedisConfig::with_url(url), v).expect("a valid URL"))
        .collect();
    let connector = |version: &str| &connectors[usize::from(version == "v2")];
    let plain = measure(
        "redis",
        Box::new(|version, purpose| {
            connector(version).cache(purpose, TestIndex::BUILT, &CacheSettings::default())
                as TestCache
        }),
        run,
    )
    .await;
    let hubs: Vec<Hub> = connectors
        .iter()
        .map(|c| Hub::new(Arc::new(c.channel().expect("a channel"))))
        .collect();
    for hub in &hubs {
        healthy(hub).await;
    }
    let hub = |version: &str| &hubs[usize::from(version == "v2")];
    let near_deploy = measure(
        "near (redis)",
        Box::new(|version, purpose| {
            let shared =
                connector(version).cache(purpose, TestIndex::BUILT, &CacheSettings::default());
            near(purpose, shared, hub(version))
        }),
        run,
    )
    .await;
    vec![plain, near_deploy]
}

/// PostgreSQL and its near cache.
pub(crate) async fn postgres(url: &str, run: Duration) -> Vec<Deploy> {
    let config = PostgresConfig::with_url(url);
    let connectors: Vec<PostgresConnector> = ["v1", "v2"]
        .iter()
        .map(|v| PostgresConnector::new(&config, v).expect("a valid URL"))
        .collect();
    connectors[0].setup().await.expect("setup");
    let connector = |version: &str| &connectors[usize::from(version == "v2")];
    let plain = measure(
        "postgres",
        Box::new(|version, purpose| {
            connector(version).cache(purpose, TestIndex::BUILT, &CacheSettings::default())
                as TestCache
        }),
        run,
    )
    .await;
    let hubs: Vec<Hub> = connectors
        .iter()
        .map(|c| Hub::new(Arc::new(c.channel().expect("a channel"))))
        .collect();
    for hub in &hubs {
        healthy(hub).await;
    }
    let near_deploy = measure(
        "near (postgres)",
        Box::new(|version, purpose| {
            let shared =
                connector(version).cache(purpose, TestIndex::BUILT, &CacheSettings::default());
            near(purpose, shared, &hubs[usize::from(version == "v2")])
        }),
        run,
    )
    .await;
    vec![plain, near_deploy]
}
