//! Changes made behind the library's back reach every near cache (SPEC 11): on Redis another
//! client's `DEL`, a foreign `SET` over one of our keys, `FLUSHDB`, eviction under
//! `allkeys-lru`; on PostgreSQL rows deleted or updated by hand and `TRUNCATE`. Two "processes"
//! (connectors, hubs and memory levels of their own) hold an object in memory; after the change
//! neither serves it within the propagation bound — through any of its keys, since the object
//! is removed from the shared level through all of them (a key lost behind the library's back
//! must not leave the object reachable through the others).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::testkit::{TestCache, TestEntry, TestIndex, unique_purpose};
use cache_core::{Cache, CacheSettings, SystemClock};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "../../cache-redis/tests/common/throwaway.rs"]
mod throwaway;

use TestIndex::{Id, Name};

/// Generous: what the test checks is that the change arrives at all (a change nobody
/// announced stays until MaxAge); the benchmark measures how fast.
const BOUND: Duration = Duration::from_secs(5);

type Near = Arc<NearCache<TestIndex, TestEntry>>;

fn object() -> Arc<TestEntry> {
    Arc::new(TestEntry::new("o1", &["n1", "n2"]))
}

/// A near cache of `purpose` over `shared`, announcing on `hub`.
fn near(purpose: &str, shared: TestCache, hub: &Hub) -> Near {
    let memory = MemoryConnector::with_clock(MemoryConfig::enabled(), SystemClock::shared()).cache(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    Arc::new(NearCache::new(purpose, memory, Some(shared), hub.clone()))
}

async fn healthy(hub: &Hub) {
    let started = Instant::now();
    while !hub.is_healthy() {
        assert!(started.elapsed() < Duration::from_secs(20), "never healthy");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `near` holds `object` in its memory level, through every key.
fn in_memory(near: &Near) -> bool {
    let memory = near.memory();
    [(Id, "o1"), (Name, "n1"), (Name, "n2")]
        .iter()
        .all(|(index, key)| memory.peek(*index, key).ok().flatten().is_some())
}

/// Both processes read the object into memory.
async fn hold(processes: &[Near]) {
    for near in processes {
        for (index, key) in [(Id, "o1"), (Name, "n1"), (Name, "n2")] {
            assert!(
                near.get(index, key).await.unwrap().is_some(),
                "the object is stored"
            );
        }
        assert!(in_memory(near), "the object is in memory");
    }
}

/// Within [`BOUND`], no process serves the object through any key — and it stays so.
async fn gone_everywhere(processes: &[Near], what: &str) {
    let started = Instant::now();
    for near in processes {
        loop {
            let mut found = Vec::new();
            for (index, key) in [(Id, "o1"), (Name, "n1"), (Name, "n2")] {
                if near.get(index, key).await.unwrap().is_some() {
                    found.push(key);
                }
            }
            if found.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < BOUND,
                "{what}: still served through {found:?} after {BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("{what}: gone everywhere after {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    for near in processes {
        for (index, key) in [(Id, "o1"), (Name, "n1"), (Name, "n2")] {
            assert!(
                near.get(index, key).await.unwrap().is_none(),
                "{what}: served again through {key}"
            );
        }
    }
}

mod redis_server {
    use super::*;

    /// A throwaway server (started with `extra`), two processes on it, and a raw connection.
    async fn rig(
        extra: &[&str],
    ) -> Option<(
        throwaway::Server,
        Vec<Near>,
        redis::aio::MultiplexedConnection,
        String,
    )> {
        let Some(server) = throwaway::Server::start_with(None, None, extra) else {
            if std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() == Ok("1") {
                panic!("redis-server is not installed; `cargo xtask test` installs it");
            }
            eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
            return None;
        };
        let purpose = unique_purpose("outside");
        let mut processes = Vec::new();
        for _ in 0..2 {
            let connector = RedisConnector::new(RedisConfig::with_url(server.url()), "v1").unwrap();
            let hub = Hub::new(Arc::new(connector.channel().unwrap()));
            healthy(&hub).await;
            let shared: TestCache =
                connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
            processes.push(near(&purpose, shared, &hub));
        }
        processes[0].set(object()).await.unwrap();
        hold(&processes).await;
        let raw = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Some((server, processes, raw, purpose))
    }

    /// The Redis key of `key` under `index` (whatever the release).
    async fn key_name(
        raw: &mut redis::aio::MultiplexedConnection,
        purpose: &str,
        index: &str,
        key: &str,
    ) -> String {
        let pattern = format!("oc3{{{purpose}}}:*:{}:{index}:{key}", index.len());
        let names: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(raw)
            .await
            .unwrap();
        assert_eq!(names.len(), 1, "{names:?}");
        names.into_iter().next().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_clients_del_reaches_every_near_cache() {
        let Some((_server, processes, mut raw, purpose)) = rig(&[]).await else {
            return;
        };
        let name = key_name(&mut raw, &purpose, "name", "n1").await;
        redis::cmd("DEL")
            .arg(&name)
            .query_async::<i64>(&mut raw)
            .await
            .unwrap();
        gone_everywhere(&processes, "DEL of one key").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_foreign_set_over_one_of_our_keys_reaches_every_near_cache() {
        let Some((_server, processes, mut raw, purpose)) = rig(&[]).await else {
            return;
        };
        let name = key_name(&mut raw, &purpose, "id", "o1").await;
        redis::cmd("SET")
            .arg(&name)
            .arg("written by someone else")
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        gone_everywhere(&processes, "a foreign SET").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushdb_reaches_every_near_cache() {
        let Some((_server, processes, mut raw, _)) = rig(&[]).await else {
            return;
        };
        redis::cmd("FLUSHDB")
            .query_async::<()>(&mut raw)
            .await
            .unwrap();
        gone_everywhere(&processes, "FLUSHDB").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eviction_reaches_every_near_cache() {
        let Some((_server, processes, mut raw, purpose)) =
            rig(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]).await
        else {
            return;
        };
        let names = [
            key_name(&mut raw, &purpose, "id", "o1").await,
            key_name(&mut raw, &purpose, "name", "n1").await,
            key_name(&mut raw, &purpose, "name", "n2").await,
        ];
        // A write flood until one of the object's keys is evicted (the near caches read from
        // memory, so Redis sees the object's keys as cold).
        let filler = "x".repeat(2_048);
        let mut evicted = false;
        for batch in 0..200 {
            let mut pipe = redis::pipe();
            for i in 0..100 {
                pipe.set(format!("flood:{batch}:{i}"), &filler).ignore();
            }
            pipe.query_async::<()>(&mut raw).await.unwrap();
            let present: i64 = redis::cmd("EXISTS")
                .arg(&names)
                .query_async(&mut raw)
                .await
                .unwrap();
            if present < 3 {
                evicted = true;
                break;
            }
        }
        assert!(evicted, "the flood evicted none of the object's keys");
        gone_everywhere(&processes, "eviction").await;
    }
}

mod postgres_server {
    use super::*;

    /// Two processes in a schema of this test's own, and a plain client on the database.
    async fn rig(test: &str) -> Option<(Vec<Near>, tokio_postgres::Client, String)> {
        let url = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL")?;
        let schema = format!("t_outside_{test}_{}", std::process::id());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
        let config = PostgresConfig {
            schema: schema.clone(),
            ..PostgresConfig::with_url(&url)
        };
        let purpose = unique_purpose("outside");
        let mut processes = Vec::new();
        for _ in 0..2 {
            let connector = PostgresConnector::new(&config, "v1").unwrap();
            connector.setup().await.unwrap();
            let hub = Hub::new(Arc::new(connector.channel().unwrap()));
            healthy(&hub).await;
            let shared: TestCache =
                connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
            processes.push(near(&purpose, shared, &hub));
        }
        processes[0].set(object()).await.unwrap();
        hold(&processes).await;
        Some((processes, client, schema))
    }

    async fn by_hand(client: &tokio_postgres::Client, sql: &str, schema: &str) {
        client
            .batch_execute(&sql.replace("{s}", schema))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_deleted_by_hand_reaches_every_near_cache() {
        let Some((processes, client, schema)) = rig("delete").await else {
            return;
        };
        by_hand(&client, "DELETE FROM {s}.keys WHERE key = 'n1'", &schema).await;
        gone_everywhere(&processes, "DELETE by hand").await;
        by_hand(&client, "DROP SCHEMA {s} CASCADE", &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_updated_by_hand_reaches_every_near_cache() {
        let Some((processes, client, schema)) = rig("update").await else {
            return;
        };
        by_hand(
            &client,
            "UPDATE {s}.keys SET payload = convert_to('{}', 'UTF8') WHERE key = 'o1'",
            &schema,
        )
        .await;
        gone_everywhere(&processes, "UPDATE by hand").await;
        by_hand(&client, "DROP SCHEMA {s} CASCADE", &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncate_by_hand_reaches_every_near_cache() {
        let Some((processes, client, schema)) = rig("truncate").await else {
            return;
        };
        by_hand(&client, "TRUNCATE {s}.keys, {s}.bodies", &schema).await;
        gone_everywhere(&processes, "TRUNCATE by hand").await;
        by_hand(&client, "DROP SCHEMA {s} CASCADE", &schema).await;
    }
}
