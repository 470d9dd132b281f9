//! A server that goes away and comes back: operations fail fast while it is down (a get is a
//! miss for the application), and the cache works again once it is back. Uses its own
//! throwaway `redis-server` on a free loopback port, so it can kill it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, ObjectCache};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "common/throwaway.rs"]
mod throwaway;

use throwaway::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_fail_fast_while_down_and_recover_when_back() {
    let Some(mut server) = Server::start(None) else {
        if std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() == Ok("1") {
            panic!("redis-server is not installed; `cargo xtask test` installs it");
        }
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
        return;
    };
    let config = RedisConfig {
        dial_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_millis(200),
        pool_timeout: Duration::from_millis(300),
        ..RedisConfig::with_url(format!("redis://127.0.0.1:{}/", server.port))
    };
    // What a get and a set may take while the server is down, by the configuration: each
    // waits at most PoolTimeout for a connection and Read/WriteTimeout for the answer, once
    // more on a new connection when the pooled one turns out lost. The bound is generous for
    // a loaded machine (5x, and at least 2 s beyond): what is checked is that a call gives up
    // at its timeouts instead of hanging (no benchmark times a call to a dead server; the
    // figure is printed).
    let configured = 2 * 2 * (config.pool_timeout + config.read_timeout);
    let bound = (configured * 5).max(configured + Duration::from_secs(2));
    let connector = RedisConnector::new(config, "v1").unwrap();
    let backend = connector.cache::<TestIndex, TestEntry>(
        "outage",
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let cache = ObjectCache::new("outage", backend.clone() as Arc<dyn Cache<_, _>>);
    cache.set(TestEntry::new("a", &["x"])).await;
    assert!(cache.get(TestIndex::Name, "x").await.is_some());

    server.kill();
    let down = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        assert!(
            cache.get(TestIndex::Name, "x").await.is_none(),
            "down: a get is a miss"
        );
        cache.set(TestEntry::new("b", &["y"])).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < bound,
        "a get + set while down took {slowest:?} (configured at most {configured:?})"
    );
    assert!(
        backend.invalidate(TestIndex::Id, &["a"]).await.is_err(),
        "down: invalidate reports the failure"
    );
    assert!(cache.stats().errors >= 10, "{:?}", cache.stats());

    eprintln!(
        "down phase {:?}, slowest get+set {slowest:?}",
        down.elapsed()
    );
    let server = Server::start(Some(server.port)).expect("redis-server restarts");
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.set(TestEntry::new("c", &["z"])).await;
        if cache.get(TestIndex::Name, "z").await.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache did not recover after the server came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("recovered {:?} after the restart", back.elapsed());
    drop(server);
}
