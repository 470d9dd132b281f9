//! Every call is bounded by its own timeout, also when it fails: with the server stopped
//! (SIGSTOP: connections stay open, nothing answers), no get, set, invalidate or delete takes
//! longer than the README's bound for it — `PoolTimeout` + `ReadTimeout` (get) or
//! `WriteTimeout` (the others) — plus a generous margin for a loaded machine. Before, a failed
//! set took its keys back index after index, each waiting its own timeout: 3x the bound with
//! two indices.
//!
//! A server of the test's own (stopping the shared one would stop every other test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{CacheSettings, ObjectCache};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "common/throwaway.rs"]
mod throwaway;

use TestIndex::{Id, Name};

const READ: Duration = Duration::from_millis(500);
const WRITE: Duration = Duration::from_millis(500);
/// Longer than the command timeouts, as by default (`ReadTimeout` + 1 s): a call that needs a
/// new connection waits this long for it against a stopped server.
const POOL: Duration = Duration::from_secs(2);
/// Room for a machine that schedules the timers late: what is checked is that no call takes
/// several timeouts (a loop of them), not how precisely one fires.
const MARGIN: Duration = Duration::from_secs(2);

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_against_a_stopped_server_ends_within_its_bound() {
    let Some(server) = throwaway::Server::start(None) else {
        assert!(
            std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "redis-server is not installed; `cargo xtask test` installs it"
        );
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
        return;
    };
    let config = RedisConfig {
        read_timeout: READ,
        write_timeout: WRITE,
        pool_timeout: POOL,
        ..RedisConfig::with_url(server.url())
    };
    let connector = RedisConnector::new(config, "v1").unwrap();
    let cache: ObjectCache<TestIndex, TestEntry> = ObjectCache::new(
        "bounded",
        connector.cache("bounded", TestIndex::BUILT, &CacheSettings::default()),
    );
    for i in 0..8 {
        cache
            .set(TestEntry::new(&format!("o{i}"), &[&format!("n{i}")]))
            .await;
    }
    assert!(
        cache.get(Id, "o1").await.is_some(),
        "stored before the stop"
    );

    signal(server.pid(), "-STOP");
    let mut slowest = [Duration::ZERO; 4];
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let mut slowest = [Duration::ZERO; 4];
            let stop = Instant::now() + Duration::from_secs(4);
            let mut n = t;
            while Instant::now() < stop {
                n += 1;
                let (id, name) = (format!("o{}", n % 8), format!("n{}", n % 8));
                let started = Instant::now();
                let op = (n % 4) as usize;
                match op {
                    0 => drop(cache.get(Name, &name).await),
                    1 => cache.set(TestEntry::new(&id, &[&name])).await,
                    2 => drop(cache.invalidate(Id, &[&id]).await),
                    _ => drop(cache.delete(Name, &[&name]).await),
                }
                slowest[op] = slowest[op].max(started.elapsed());
            }
            slowest
        }));
    }
    for task in tasks {
        for (op, took) in task.await.unwrap().into_iter().enumerate() {
            slowest[op] = slowest[op].max(took);
        }
    }
    signal(server.pid(), "-CONT");

    let names = ["get", "set", "invalidate", "delete"];
    eprintln!(
        "server stopped: slowest {:?} (bounds: get {:?}, others {:?})",
        names.iter().zip(slowest).collect::<Vec<_>>(),
        POOL + READ,
        POOL + WRITE,
    );
    for (op, took) in slowest.into_iter().enumerate() {
        let bound = if op == 0 { POOL + READ } else { POOL + WRITE };
        assert!(
            took <= bound + MARGIN,
            "a {} took {took:?} against a stopped server: the bound is {bound:?}",
            names[op]
        );
    }
    assert!(
        cache.stats().errors > 0,
        "the calls failed: {:?}",
        cache.stats()
    );

    // Back: the cache works again (a failed set's keys were taken back in the background).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.set(TestEntry::new("after", &["after-name"])).await;
        if cache.get(Name, "after-name").await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never worked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(Arc::new(server));
}
