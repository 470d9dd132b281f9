//! A real master + replica watched by 3 sentinels (`CACHE_TEST_REDIS_SENTINELS`,
//! `CACHE_TEST_REDIS_MASTER`, started by `cargo xtask test`): the whole conformance suite and
//! the model test on the master the sentinels name, and a failover under load — on a master
//! set of the test's own, registered with the same sentinels, so the suite's master is never
//! disturbed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ObjectCache};
use cache_redis::{RedisConfig, RedisConnector, SentinelConfig};

#[path = "common/throwaway.rs"]
mod throwaway;

/// The sentinels' addresses and the suite's master name.
fn sentinels() -> Option<(Vec<String>, String)> {
    let addrs = cache_core::testkit::server_url("CACHE_TEST_REDIS_SENTINELS")?;
    let master = cache_core::testkit::server_url("CACHE_TEST_REDIS_MASTER")?;
    Some((addrs.split(',').map(str::to_owned).collect(), master))
}

fn config(addrs: Vec<String>, master_name: String) -> RedisConfig {
    RedisConfig {
        sentinel: Some(SentinelConfig {
            master_name,
            addrs,
            ..SentinelConfig::default()
        }),
        ..RedisConfig::with_url("")
    }
}

async fn fixture() -> Option<impl Fixture> {
    let (addrs, master) = sentinels()?;
    let connector = RedisConnector::new(config(addrs, master), "test-v1").expect("a valid config");
    Some(RealTimeFixture::new(
        false,
        move |purpose, indices, settings| connector.cache(purpose, indices, settings) as TestCache,
    ))
}

cache_core::conformance_suite!(fixture);
cache_core::leases_suite!(fixture);
cache_core::model_test!(fixture);

async fn connect(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&admin())
        .await
        .unwrap()
}

/// Runs `SENTINEL <args>` on every sentinel.
async fn on_sentinels(addrs: &[String], args: &[&str]) {
    for addr in addrs {
        let mut c = connect(addr).await;
        let _: redis::Value = redis::cmd("SENTINEL")
            .arg(args)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// Whether every sentinel knows a replica of `name` and at least 2 other sentinels.
async fn sentinels_ready(addrs: &[String], name: &str) -> bool {
    for addr in addrs {
        let mut c = connect(addr).await;
        let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(name)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("SENTINELS")
            .arg(name)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if replicas.is_empty() || peers.len() < 2 {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_master_is_killed_the_cache_serves_from_the_promoted_replica() {
    let Some((addrs, _)) = sentinels() else {
        return;
    };
    // A master set of this test's own on the shared sentinels.
    let mut master =
        throwaway::Server::start_with(None, None, &["--repl-diskless-sync-delay", "0"])
            .expect("redis-server");
    let master_port = master.port.to_string();
    let replica =
        throwaway::Server::start_with(None, None, &["--replicaof", "127.0.0.1", &master_port])
            .expect("redis-server replica");
    let mut r = connect(&format!("127.0.0.1:{}", replica.port)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut r)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = format!("failover{}", std::process::id());
    on_sentinels(&addrs, &["MONITOR", &name, "127.0.0.1", &master_port, "2"]).await;
    on_sentinels(&addrs, &["SET", &name, "down-after-milliseconds", "1000"]).await;
    on_sentinels(&addrs, &["SET", &name, "failover-timeout", "5000"]).await;
    // The sentinels' failover-timeout, made generous for a loaded machine (5x): what is
    // checked is that the cache follows the promoted replica by itself, not how fast the
    // sentinels elect it (the figure is printed).
    let recovery_bound = 5 * Duration::from_millis(5_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sentinels_ready(&addrs, &name).await {
        assert!(
            Instant::now() < deadline,
            "the sentinels did not learn the set"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let connector = RedisConnector::new(
        RedisConfig {
            dial_timeout: Duration::from_millis(300),
            read_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(300),
            pool_timeout: Duration::from_millis(500),
            ..config(addrs.clone(), name.clone())
        },
        "v1",
    )
    .unwrap();
    let backend: Arc<dyn Cache<TestIndex, TestEntry>> =
        connector.cache("failover", TestIndex::BUILT, &CacheSettings::default());
    let cache = ObjectCache::new("failover", backend);
    for i in 0..20 {
        cache.set(TestEntry::new(&format!("o{i}"), &[])).await;
    }
    assert!(cache.get(TestIndex::Id, "o1").await.is_some());
    // Replicated before the kill, so the promoted replica has the objects.
    let mut m = connect(&format!("127.0.0.1:{master_port}")).await;
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(400)
        .query_async(&mut m)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica has the objects");

    let stop = Arc::new(AtomicBool::new(false));
    let last_miss_ns = Arc::new(AtomicU64::new(0));
    let gets = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let reader = {
        let (cache, stop, last_miss_ns, gets) = (
            cache.clone(),
            stop.clone(),
            last_miss_ns.clone(),
            gets.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // `get` cannot fail the caller: a backend error is a miss.
                if cache
                    .get(TestIndex::Id, &format!("o{}", n % 20))
                    .await
                    .is_none()
                {
                    let at = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    last_miss_ns.store(at, Ordering::Relaxed);
                }
                gets.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        last_miss_ns.load(Ordering::Relaxed),
        0,
        "hits before the kill"
    );
    master.kill();
    let killed = started.elapsed();
    // Back to hits: no miss for a whole second, with room past the bound for that second.
    let give_up = recovery_bound + Duration::from_secs(5);
    let deadline = Instant::now() + give_up;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let last_miss = Duration::from_nanos(last_miss_ns.load(Ordering::Relaxed));
        if last_miss > killed && started.elapsed() - last_miss > Duration::from_secs(1) {
            let recovered = last_miss - killed;
            eprintln!(
                "failover: gets missed for {recovered:?} after the master was killed, then hit \
                 on the promoted replica ({} gets in all, errors logged {})",
                gets.load(Ordering::Relaxed),
                cache.stats().errors
            );
            assert!(
                recovered < recovery_bound,
                "took {recovered:?} (bound {recovery_bound:?})"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no hits {give_up:?} after the master was killed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    // Writes work on the new master too.
    cache.set(TestEntry::new("after", &[])).await;
    assert!(cache.get(TestIndex::Id, "after").await.is_some());
    on_sentinels(&addrs, &["REMOVE", &name]).await;
    drop(replica);
}

/// Test-side admin connections wait 10 s for an answer (redis-rs' default 500 ms is too short
/// for SAVE or SENTINEL commands on a loaded CI machine).
fn admin() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
}
