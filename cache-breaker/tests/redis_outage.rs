//! Fault injection on a real `redis-server` of the test's own (started by the test; installed by
//! `cargo xtask test`): under steady load the server is killed with SIGKILL and restarted with
//! its saved data. The breaker must open, keep calls cheap while open, close once the server is
//! back, and deliver the invalidation made during the outage before serving the restored
//! (stale) object. A second test flushes the scripts under load: the breaker must not open.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_breaker::{Breaker, BreakerCache, BreakerState};
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{BreakerSettings, Cache, CacheSettings, ObjectCache};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "../../cache-redis/tests/common/throwaway.rs"]
mod throwaway;

use TestIndex::Id;
use throwaway::Server;

const OBJECTS: u64 = 20;
const TASKS: u64 = 4;

fn server(dir: Option<&std::path::Path>) -> Option<Server> {
    let server = Server::start_in(None, dir);
    if server.is_none() {
        if std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() == Ok("1") {
            panic!("redis-server is not installed; `cargo xtask test` installs it");
        }
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
    }
    server
}

struct Rig {
    cache: ObjectCache<TestIndex, TestEntry>,
    breaker: Arc<Breaker>,
    raw: redis::Client,
}

fn rig(port: u16, purpose: &str) -> Rig {
    let url = format!("redis://127.0.0.1:{port}/");
    let config = RedisConfig {
        dial_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(200),
        write_timeout: Duration::from_millis(200),
        pool_timeout: Duration::from_millis(300),
        ..RedisConfig::with_url(&url)
    };
    let connector = RedisConnector::new(config, "v1").unwrap();
    let breaker = Arc::new(Breaker::new(
        "redis",
        BreakerSettings {
            max_consecutive_failures: 3,
            max_failure_ratio: 0.5,
            min_requests: 20,
            timeout: Duration::from_secs(1),
            max_retry_requests: 1,
            interval: Duration::ZERO,
        },
    ));
    let backend: Arc<dyn Cache<TestIndex, TestEntry>> =
        connector.cache(purpose, TestIndex::BUILT, &CacheSettings::default());
    let guarded = BreakerCache::new(purpose, backend, Arc::clone(&breaker));
    Rig {
        cache: ObjectCache::new(purpose, Arc::new(guarded)),
        breaker,
        raw: redis::Client::open(url).unwrap(),
    }
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    calls_while_open: AtomicU64,
    /// Slowest get or set that started while the breaker was rejecting, in ns.
    slowest_open_ns: AtomicU64,
    /// Slowest get or set overall, in ns.
    slowest_ns: AtomicU64,
    opened: AtomicBool,
}

/// Gets (and every tenth call a set) from `TASKS` tasks until `stop`, plus a sampler of the
/// breaker state.
fn load(rig: &Rig, stop: &Arc<AtomicBool>, seen: &Arc<Seen>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (cache, breaker) = (rig.cache.clone(), Arc::clone(&rig.breaker));
            let (stop, seen) = (Arc::clone(stop), Arc::clone(seen));
            tokio::spawn(async move {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("o{}", n % OBJECTS);
                    let open = breaker.is_rejecting();
                    let started = Instant::now();
                    if n % 10 == 0 {
                        cache.set(TestEntry::new(&id, &[])).await;
                    } else {
                        let _ = cache.get(Id, &id).await;
                    }
                    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    seen.calls.fetch_add(1, Ordering::Relaxed);
                    seen.slowest_ns.fetch_max(took, Ordering::Relaxed);
                    if open {
                        seen.calls_while_open.fetch_add(1, Ordering::Relaxed);
                        seen.slowest_open_ns.fetch_max(took, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let (breaker, stop, seen) = (Arc::clone(&rig.breaker), Arc::clone(stop), Arc::clone(seen));
    tasks.push(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if breaker.state() == BreakerState::Open {
                seen.opened.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }));
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_opens_the_breaker_and_nothing_stale_is_served_after_it() {
    let dir = std::env::temp_dir().join(format!("breaker-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mut server) = server(Some(&dir)) else {
        return;
    };
    let port = server.port;
    let rig = rig(port, "outage");
    for i in 0..OBJECTS {
        rig.cache.set(TestEntry::new(&format!("o{i}"), &[])).await;
    }
    rig.cache.set(TestEntry::new("stale", &["old-name"])).await;
    rig.cache.set(TestEntry::new("untouched", &[])).await;
    // The restarted server will come back with all of these, "stale" included.
    let mut raw = rig
        .raw
        .get_multiplexed_async_connection_with_config(&admin())
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut raw).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let tasks = load(&rig, &stop, &seen);
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = rig.cache.invalidate(Id, &["stale"]).await;
    assert!(refused.is_err(), "the backend is down: the caller is told");
    tokio::time::sleep(Duration::from_millis(2_800)).await;
    let errors_while_down = rig.cache.stats().errors;
    let calls_while_down = seen.calls.load(Ordering::Relaxed);

    let server = Server::start_in(Some(port), Some(&dir)).expect("redis-server restarts");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(10);
    while rig.breaker.state() != BreakerState::Closed {
        assert!(Instant::now() < deadline, "the breaker did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let closed_after = restarted.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    assert!(seen.opened.load(Ordering::Relaxed), "the breaker opened");
    let open_calls = seen.calls_while_open.load(Ordering::Relaxed);
    let slowest_open = Duration::from_nanos(seen.slowest_open_ns.load(Ordering::Relaxed));
    eprintln!(
        "outage of {:?}: {calls_while_down} calls, {open_calls} while open (slowest {slowest_open:?}), \
         {errors_while_down} errors logged, slowest call overall {:?}; closed {closed_after:?} \
         after the restart",
        restarted.duration_since(killed),
        Duration::from_nanos(seen.slowest_ns.load(Ordering::Relaxed)),
    );
    assert!(open_calls > 100, "the load kept running while open");
    assert!(
        slowest_open < Duration::from_millis(50),
        "a call while open took {slowest_open:?}"
    );
    assert!(
        errors_while_down < 50,
        "{errors_while_down} failed calls reached the backend during the outage: the breaker did not hold"
    );
    assert!(
        closed_after < Duration::from_secs(3),
        "closed {closed_after:?} after the restart"
    );
    // The restored server still had "stale"; the kept invalidation was delivered first.
    assert!(
        rig.cache.get(Id, "stale").await.is_none(),
        "an object invalidated during the outage was served afterwards"
    );
    assert!(
        rig.cache.get(TestIndex::Name, "old-name").await.is_none(),
        "not through its other key either"
    );
    // The load's sets refused during the outage kept invalidations of their keys, each key
    // once: no truncate, so what nobody touched is served.
    assert!(
        rig.cache.get(Id, "untouched").await.is_some(),
        "the restored data is served otherwise (no truncate: each refused set's keys kept once)"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flushes_under_load_never_open_the_breaker() {
    let Some(server) = server(None) else {
        return;
    };
    let rig = rig(server.port, "flush");
    for i in 0..OBJECTS {
        rig.cache.set(TestEntry::new(&format!("o{i}"), &[])).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let tasks = load(&rig, &stop, &seen);
    let mut raw = rig
        .raw
        .get_multiplexed_async_connection_with_config(&admin())
        .await
        .unwrap();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "{} calls with 20 SCRIPT FLUSHes: {} errors, breaker {:?}",
        seen.calls.load(Ordering::Relaxed),
        rig.cache.stats().errors,
        rig.breaker.counts()
    );
    assert!(!seen.opened.load(Ordering::Relaxed), "the breaker opened");
    assert_eq!(rig.breaker.counts().failures, 0);
    assert_eq!(rig.cache.stats().errors, 0);
    assert!(seen.calls.load(Ordering::Relaxed) > 100);
}

/// Test-side admin connections wait 10 s for an answer (redis-rs' default 500 ms is too short
/// for SAVE or SENTINEL commands on a loaded CI machine).
fn admin() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
}

/// How long after the server is back another process may still read an object invalidated
/// during the outage by a process that stays idle: the delivery task's longest backoff
/// (`RETRY_MAX`, 1 s) plus the breaker's Timeout (1 s in this rig), plus a second of slack
/// for a loaded machine.
const IDLE_DELIVERY_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_delivers_its_kept_invalidation_so_others_stop_reading_it() {
    let dir = std::env::temp_dir().join(format!("breaker-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Some(mut server) = server(Some(&dir)) else {
        return;
    };
    let port = server.port;
    // Two processes' handles: A invalidates during the outage, then stays idle; B only reads.
    let a = rig(port, "idle");
    let b = rig(port, "idle");
    a.cache.set(TestEntry::new("stale", &["old-name"])).await;
    let mut raw = a
        .raw
        .get_multiplexed_async_connection_with_config(&admin())
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut raw).await.unwrap();
    server.kill();
    assert!(
        a.cache.invalidate(Id, &["stale"]).await.is_err(),
        "the backend is down: the caller is told"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Back with its saved data, "stale" included. A makes no call from here on.
    let _server = Server::start_in(Some(port), Some(&dir)).expect("redis-server restarts");
    let restarted = Instant::now();
    let mut last_stale = None;
    while restarted.elapsed() < IDLE_DELIVERY_BOUND + Duration::from_secs(2) {
        if b.cache.get(Id, "stale").await.is_some()
            || b.cache.get(TestIndex::Name, "old-name").await.is_some()
        {
            last_stale = Some(restarted.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "B last read the invalidated object {last_stale:?} after the restart (bound {IDLE_DELIVERY_BOUND:?})"
    );
    assert!(
        last_stale.is_none_or(|t| t < IDLE_DELIVERY_BOUND),
        "B still read the object invalidated during the outage {last_stale:?} after the server came back"
    );
    assert!(
        b.cache.get(Id, "stale").await.is_none(),
        "delivered by A's background task"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
