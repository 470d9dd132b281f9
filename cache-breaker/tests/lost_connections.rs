//! A lost connection is one failure event, not one failure per command in flight on it: the
//! cache's connections killed by the server (`CLIENT KILL`, `pg_terminate_backend`) from its
//! first operation on, again and again, never open a breaker with the default settings
//! (`MaxConsecutiveFailures: 5`, `MaxFailureRatio: 0.1` after 20 requests) — as a proxy's idle
//! timeout, a restart or a failover does in production. A real outage still opens it
//! (`redis_outage.rs`, `decorator.rs`).
//!
//! Redis runs on a server of the test's own (killing every client of the shared test server
//! would disturb other tests); PostgreSQL on the test server, killing only this test's
//! connections (by their `application_name`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_breaker::{Breaker, BreakerCache, BreakerState};
use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{BreakerSettings, Cache, CacheSettings, ObjectCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};

#[path = "../../cache-redis/tests/common/throwaway.rs"]
mod throwaway;

use TestIndex::Id;

/// Runs of each test: a new connector each (its connections made during the first calls).
const RUNS: usize = 20;
/// Kills per run, `KILL_EVERY` apart, the first as the load starts.
const KILLS: usize = 8;
const KILL_EVERY: Duration = Duration::from_millis(20);
const TASKS: u64 = 4;
const OBJECTS: u64 = 20;

/// What one run's load saw.
#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    opened: AtomicBool,
}

/// Gets, every 10th call a set and every 25th an invalidate, from `TASKS` tasks until `stop`;
/// and a sampler of the breaker's state.
fn load(
    cache: &ObjectCache<TestIndex, TestEntry>,
    breaker: &Arc<Breaker>,
    stop: &Arc<AtomicBool>,
    seen: &Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (cache, stop, seen) = (cache.clone(), Arc::clone(stop), Arc::clone(seen));
            tokio::spawn(async move {
                let mut n = t;
                while !stop.load(Ordering::Relaxed) {
                    n += TASKS;
                    let id = format!("o{}", n % OBJECTS);
                    if n % 10 == 0 {
                        cache.set(TestEntry::new(&id, &[])).await;
                    } else if n % 25 == 1 {
                        let _ = cache.invalidate(Id, &[&id]).await;
                    } else {
                        let _ = cache.get(Id, &id).await;
                    }
                    seen.calls.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let (breaker, stop, seen) = (Arc::clone(breaker), Arc::clone(stop), Arc::clone(seen));
    tasks.push(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            if breaker.state() != BreakerState::Closed {
                seen.opened.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }));
    tasks
}

/// One run: the load on `cache` starts, `kill` runs `KILLS` times; the breaker must stay
/// closed. Returns the calls made and the failures the breaker counted.
async fn run<K, F>(
    cache: ObjectCache<TestIndex, TestEntry>,
    breaker: Arc<Breaker>,
    mut kill: K,
) -> (u64, u32, u64)
where
    K: FnMut() -> F,
    F: Future<Output = u64>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let tasks = load(&cache, &breaker, &stop, &seen);
    let mut killed = 0;
    for _ in 0..KILLS {
        killed += kill().await;
        tokio::time::sleep(KILL_EVERY).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        !seen.opened.load(Ordering::Relaxed),
        "the breaker opened: {:?}, {} errors in {} calls, {killed} connections killed",
        breaker.counts(),
        cache.stats().errors,
        seen.calls.load(Ordering::Relaxed)
    );
    (
        seen.calls.load(Ordering::Relaxed),
        breaker.counts().failures,
        killed,
    )
}

fn breaker() -> Arc<Breaker> {
    Arc::new(Breaker::new("test", BreakerSettings::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_connections_never_open_the_breaker() {
    let Some(server) = throwaway::Server::start(None) else {
        assert!(
            std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "redis-server is not installed; `cargo xtask test` installs it"
        );
        eprintln!("skipped: redis-server is not installed (run `cargo xtask test`)");
        return;
    };
    let url = server.url();
    let admin = redis::Client::open(url.as_str()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let (mut calls, mut failures, mut killed) = (0, 0, 0);
    for _ in 0..RUNS {
        let connector = RedisConnector::new(RedisConfig::with_url(&url), "v1").unwrap();
        let breaker = breaker();
        let purpose = unique_purpose("killed");
        let backend: Arc<dyn Cache<TestIndex, TestEntry>> =
            connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
        let guarded = BreakerCache::new(&purpose, backend, Arc::clone(&breaker));
        let cache = ObjectCache::new(purpose.as_str(), Arc::new(guarded));
        let (c, f, k) = run(cache, breaker, || {
            let mut admin = admin.clone();
            async move {
                // Every client but this one (SKIPME yes is the default).
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .query_async::<u64>(&mut admin)
                    .await
                    .unwrap()
            }
        })
        .await;
        (calls, failures, killed) = (calls + c, failures + u64::from(f), killed + k);
    }
    eprintln!(
        "{RUNS} runs: {calls} calls, {killed} connections killed, {failures} failures counted, \
         the breaker never opened"
    );
    assert!(killed >= RUNS as u64, "the test killed connections");
    let _: () = redis::cmd("PING").query_async(&mut admin).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_postgres_connections_never_open_the_breaker() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL") else {
        return;
    };
    let name = format!("killed-{}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let ours = format!("{url}{separator}application_name={name}");
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let admin = Arc::new(admin);
    let setup = PostgresConnector::new(&PostgresConfig::with_url(&ours), "v1").unwrap();
    setup.setup().await.unwrap();
    let (mut calls, mut failures, mut killed) = (0, 0, 0);
    for _ in 0..RUNS {
        let connector = PostgresConnector::new(&PostgresConfig::with_url(&ours), "v1").unwrap();
        let breaker = breaker();
        let purpose = unique_purpose("killed");
        let backend: Arc<dyn Cache<TestIndex, TestEntry>> =
            connector.cache(&purpose, TestIndex::BUILT, &CacheSettings::default());
        let guarded = BreakerCache::new(&purpose, backend, Arc::clone(&breaker));
        let cache = ObjectCache::new(purpose.as_str(), Arc::new(guarded));
        let (c, f, k) = run(cache, breaker, || {
            let (admin, name) = (Arc::clone(&admin), name.clone());
            async move {
                let rows = admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await
                    .unwrap();
                rows.len() as u64
            }
        })
        .await;
        (calls, failures, killed) = (calls + c, failures + u64::from(f), killed + k);
    }
    eprintln!(
        "{RUNS} runs: {calls} calls, {killed} connections killed, {failures} failures counted, \
         the breaker never opened"
    );
    assert!(killed >= RUNS as u64, "the test killed connections");
}
