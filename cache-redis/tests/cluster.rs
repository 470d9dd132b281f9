//! A real 3-master Redis Cluster (`CACHE_TEST_REDIS_CLUSTER`, seed nodes started by
//! `cargo xtask test`): the whole conformance suite and the model test through the same
//! scripts and key layout, and the layout's sharding — all keys of one object cache on the
//! node owning its hash slot, different caches spread by purpose — with truncate clearing it.

use cache_core::testkit::{Fixture, RealTimeFixture, TestCache, TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings};
use cache_redis::{ClusterConfig, RedisConfig, RedisConnector};

fn seeds() -> Option<Vec<String>> {
    let addrs = cache_core::testkit::server_url("CACHE_TEST_REDIS_CLUSTER")?;
    Some(addrs.split(',').map(str::to_owned).collect())
}

fn config(addrs: Vec<String>) -> RedisConfig {
    RedisConfig {
        cluster: Some(ClusterConfig { addrs }),
        ..RedisConfig::with_url("")
    }
}

async fn fixture() -> Option<impl Fixture> {
    let connector = RedisConnector::new(config(seeds()?), "test-v1").expect("a valid config");
    Some(RealTimeFixture::new(
        false,
        move |purpose, indices, settings| connector.cache(purpose, indices, settings) as TestCache,
    ))
}

cache_core::conformance_suite!(fixture);
cache_core::leases_suite!(fixture);
cache_core::model_test!(fixture);

/// The keys of `purpose` on each node, in seed order.
async fn keys_per_node(seeds: &[String], purpose: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for seed in seeds {
        let mut node = redis::Client::open(format!("redis://{seed}/"))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&admin())
            .await
            .unwrap();
        let mut cursor = 0u64;
        let mut count = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("oc3{{{purpose}}}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut node)
                .await
                .unwrap();
            count += batch.len();
            if next == 0 {
                break;
            }
            cursor = next;
        }
        counts.push(count);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cache_lives_on_the_node_of_its_slot_and_truncate_clears_it() {
    let Some(seeds) = seeds() else {
        return;
    };
    let connector = RedisConnector::new(config(seeds.clone()), "test-v1").unwrap();
    let run = std::process::id();
    // The varying part last: with a common suffix after it ("spread{i}-{run}"), CRC16's
    // linearity put all 12 purposes on one node for about a quarter of process ids.
    let purposes: Vec<String> = (0..12).map(|i| format!("{run}-spread{i}")).collect();
    let mut nodes_used = std::collections::BTreeSet::new();
    for purpose in &purposes {
        let cache = connector.cache::<TestIndex, TestEntry>(
            purpose,
            TestIndex::BUILT,
            &CacheSettings::default(),
        );
        for i in 0..50 {
            let entry = TestEntry::new(&format!("{i}"), &[&format!("n{i}"), &format!("m{i}")]);
            cache.set(std::sync::Arc::new(entry)).await.unwrap();
        }
        let counts = keys_per_node(&seeds, purpose).await;
        // 50 objects x 3 index keys and the release registry, all on one node.
        assert_eq!(counts.iter().sum::<usize>(), 151, "{purpose}: {counts:?}");
        let holders: Vec<usize> = (0..counts.len()).filter(|n| counts[*n] > 0).collect();
        assert_eq!(
            holders.len(),
            1,
            "{purpose} is split over nodes: {counts:?}"
        );
        // ...the node that owns the slot of the hash tag.
        let mut any = redis::Client::open(format!("redis://{}/", seeds[0]))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&admin())
            .await
            .unwrap();
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(purpose.as_str())
            .query_async(&mut any)
            .await
            .unwrap();
        let mut owner = redis::Client::open(format!("redis://{}/", seeds[holders[0]]))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&admin())
            .await
            .unwrap();
        let in_slot: i64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut owner)
            .await
            .unwrap();
        assert!(in_slot >= 151, "slot {slot} holds {in_slot} keys");
        nodes_used.insert(holders[0]);
        cache.truncate().await.unwrap();
        assert_eq!(
            keys_per_node(&seeds, purpose).await,
            vec![0; seeds.len()],
            "truncate left keys of {purpose}"
        );
    }
    assert!(
        nodes_used.len() >= 2,
        "12 purposes all landed on one node: {nodes_used:?}"
    );
}

/// Test-side admin connections wait 10 s for an answer (redis-rs' default 500 ms is too short
/// for SAVE or SENTINEL commands on a loaded CI machine).
fn admin() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
}

#[tokio::test]
async fn every_purpose_works_on_a_cluster_even_the_empty_one() {
    let Some(seeds) = seeds() else { return };
    let connector = RedisConnector::new(config(seeds), "test-v1").unwrap();
    for purpose in ["", "{", "}", "{}", "%", "a{b}c"] {
        let cache = connector.cache::<TestIndex, TestEntry>(
            purpose,
            TestIndex::BUILT,
            &CacheSettings::default(),
        );
        let entry = std::sync::Arc::new(TestEntry::new("1", &["a", "b", "c"]));
        cache
            .set(entry.clone())
            .await
            .unwrap_or_else(|e| panic!("set in purpose {purpose:?}: {e}"));
        assert_eq!(cache.get(TestIndex::Name, "c").await.unwrap(), Some(entry));
        cache.invalidate(TestIndex::Id, &["1"]).await.unwrap();
        assert!(cache.get(TestIndex::Name, "a").await.unwrap().is_none());
        cache.truncate().await.unwrap();
    }
}
