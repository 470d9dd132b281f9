//! Leases across processes (SPEC 12) on real servers: object caches with connections (and, for
//! near caches, hubs and memory levels) of their own stand for the processes of a service.
//!
//! - **Herd**: after each invalidation of a hot object, 8 processes × 50 concurrent
//!   `get_or_load` of it run one load between them (at most 1.1 on average over 20 rounds); a
//!   holder whose load never returns is taken over once its lease expires, and nobody waits
//!   longer than the lease plus one load; the lease of a load that found nothing is released,
//!   so no process waits out a lease for an object the source does not have.
//! - **Outdated fills**: a load that read the source of truth before another process changed it
//!   and invalidated it is returned to its caller but never cached, however long it took.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::testkit::{TestCache, TestEntry, TestIndex, unique_purpose};
use cache_core::{CacheSettings, Channel, LeaseSettings, ObjectCache, SystemClock};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{ClusterConfig, RedisConfig, RedisConnector};

use TestIndex::Id;

type Cache = ObjectCache<TestIndex, TestEntry>;

/// The servers a fleet can run on.
#[derive(Clone, Copy, Debug)]
enum Server {
    Redis,
    Cluster,
    Postgres,
}

impl Server {
    fn address(self) -> Option<String> {
        cache_core::testkit::server_url(match self {
            Server::Redis => "CACHE_TEST_REDIS_URL",
            Server::Cluster => "CACHE_TEST_REDIS_CLUSTER",
            Server::Postgres => "CACHE_TEST_POSTGRES_URL",
        })
    }
}

fn settings(lease: Duration) -> CacheSettings {
    CacheSettings {
        lease: LeaseSettings {
            enabled: true,
            time: lease,
        },
        ..CacheSettings::default()
    }
}

/// `processes` object caches of `purpose` on `server`, each with connections of its own (and
/// a memory level and hub of its own when `near`).
async fn fleet(
    server: Server,
    address: &str,
    near: bool,
    purpose: &str,
    processes: usize,
    settings: &CacheSettings,
) -> Vec<Cache> {
    let mut caches = Vec::new();
    for _ in 0..processes {
        let (shared, channel): (TestCache, Arc<dyn Channel>) = match server {
            Server::Redis | Server::Cluster => {
                let config = match server {
                    Server::Cluster => RedisConfig {
                        cluster: Some(ClusterConfig {
                            addrs: address.split(',').map(str::to_owned).collect(),
                        }),
                        ..RedisConfig::with_url("")
                    },
                    _ => RedisConfig::with_url(address),
                };
                let connector = RedisConnector::new(config, "v1").unwrap();
                (
                    connector.cache(purpose, TestIndex::BUILT, settings),
                    Arc::new(connector.channel().unwrap()),
                )
            }
            Server::Postgres => {
                let connector =
                    PostgresConnector::new(&PostgresConfig::with_url(address), "v1").unwrap();
                connector.setup().await.unwrap();
                (
                    connector.cache(purpose, TestIndex::BUILT, settings),
                    Arc::new(connector.channel().unwrap()),
                )
            }
        };
        let cache: TestCache =
            if near {
                let hub = Hub::new(channel);
                let started = Instant::now();
                while !hub.is_healthy() {
                    assert!(started.elapsed() < Duration::from_secs(20), "never healthy");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let memory =
                    MemoryConnector::with_clock(MemoryConfig::enabled(), SystemClock::shared())
                        .cache(purpose, TestIndex::BUILT, settings);
                Arc::new(NearCache::new(purpose, memory, Some(shared), hub))
            } else {
                shared
            };
        caches.push(ObjectCache::new(purpose, cache));
    }
    caches
}

fn object(revision: u64) -> TestEntry {
    TestEntry::new("hot", &["hot.example"]).revision(revision)
}

/// A bound for a loaded machine on what takes `figure` when nothing else runs: 5x it, and at
/// least 2 s beyond it (issue 26: a test asserts no wall-clock duration a busy CI machine can
/// miss).
fn generous(figure: Duration) -> Duration {
    (figure * 5).max(figure + Duration::from_secs(2))
}

/// Waits until no process serves a hot object that `served` picks (a change reached every
/// memory level): the time it took. The deadline is generous; a process that keeps serving
/// it for longer fails `what`.
async fn until_no_process_serves(
    caches: &[Cache],
    what: &str,
    served: impl Fn(&TestEntry) -> bool,
) -> Duration {
    let deadline = Duration::from_secs(5);
    let started = Instant::now();
    loop {
        let mut serving = Vec::new();
        for (n, cache) in caches.iter().enumerate() {
            if let Some(found) = cache.get(Id, "hot").await
                && served(&found)
            {
                serving.push((n, found.revision));
            }
        }
        if serving.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: (process, revision) {serving:?} still served after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every process runs `tasks` concurrent `get_or_load`s of the hot object, with a load taking
/// `load` and counted in `loads`; the longest any of them took.
async fn herd(caches: &[Cache], tasks: usize, loads: &Arc<AtomicU64>, load: Duration) -> Duration {
    let mut handles = Vec::new();
    for cache in caches {
        for _ in 0..tasks {
            let (cache, loads) = (cache.clone(), Arc::clone(loads));
            handles.push(tokio::spawn(async move {
                let started = Instant::now();
                let found = cache
                    .get_or_load(Id, "hot", move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(load).await;
                        Ok::<_, std::convert::Infallible>(Some(object(1)))
                    })
                    .await
                    .unwrap();
                assert!(found.is_some(), "a get_or_load answered nothing");
                started.elapsed()
            }));
        }
    }
    let mut longest = Duration::ZERO;
    for handle in handles {
        longest = longest.max(handle.await.unwrap());
    }
    longest
}

/// 20 rounds of an invalidation followed by a herd of 8 × 50: one load per round (1.1 on
/// average at most).
async fn one_load_per_change(server: Server, near: bool) {
    let Some(address) = server.address() else {
        return;
    };
    let purpose = unique_purpose("herd");
    let caches = fleet(
        server,
        &address,
        near,
        &purpose,
        8,
        &settings(Duration::from_secs(5)),
    )
    .await;
    let loads = Arc::new(AtomicU64::new(0));
    const ROUNDS: u64 = 20;
    for _ in 0..ROUNDS {
        caches[0].invalidate(Id, &["hot"]).await.unwrap();
        // The invalidation reaches every memory level first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        herd(&caches, 50, &loads, Duration::from_millis(20)).await;
    }
    let per_change = loads.load(Ordering::SeqCst) as f64 / ROUNDS as f64;
    eprintln!("{server:?} (near: {near}): {per_change:.2} loads per invalidation");
    assert!(
        per_change <= 1.1,
        "{per_change:.2} loads per invalidation across 8 processes"
    );
    let stats: Vec<_> = caches.iter().map(Cache::stats).collect();
    assert!(stats.iter().map(|s| s.leases).sum::<u64>() >= ROUNDS);
    assert!(
        stats.iter().map(|s| s.lease_waits).sum::<u64>() > 0,
        "no process waited for another's fill: {stats:?}"
    );
}

/// A holder whose load never returns: once its lease expires, one other process loads, and
/// nobody waits longer than the lease plus one load.
async fn a_hung_holder_is_taken_over(server: Server, near: bool) {
    let Some(address) = server.address() else {
        return;
    };
    let lease = Duration::from_millis(800);
    let load = Duration::from_millis(50);
    let purpose = unique_purpose("herd_hung");
    let caches = fleet(server, &address, near, &purpose, 8, &settings(lease)).await;
    let hung = {
        let cache = caches[0].clone();
        tokio::spawn(async move {
            let _ = cache
                .get_or_load(Id, "hot", || async {
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                    Ok::<_, std::convert::Infallible>(Some(object(0)))
                })
                .await;
        })
    };
    // The hung load holds the lease.
    let started = Instant::now();
    while caches[0].stats().leases == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no lease taken"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let loads = Arc::new(AtomicU64::new(0));
    let longest = herd(&caches[1..], 50, &loads, load).await;
    hung.abort();
    eprintln!("{server:?} (near: {near}): taken over, longest wait {longest:?}");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one process took the lease over: {:?}",
        caches.iter().map(Cache::stats).collect::<Vec<_>>()
    );
    let takeovers: u64 = caches.iter().map(|c| c.stats().lease_takeovers).sum();
    assert_eq!(takeovers, 1);
    // The bound is the point (nobody waits for the hung load: the lease, one load, polling),
    // made generous for a loaded machine. No benchmark times a takeover (cache-bench's
    // stampede cells time waiters behind a load that returns); the figure is printed above.
    assert!(
        longest < generous(lease + load),
        "a caller waited {longest:?} (lease {lease:?}, load {load:?})"
    );
}

/// An object the source of truth does not have: each holder's load finds nothing and releases
/// its lease, so the processes waiting for a fill that will not come lease the key at once —
/// one after the other — instead of waiting out the lease, which
/// every process but the first did (one lease time more for each process before it).
async fn absent_object_herd(server: Server, near: bool) {
    let Some(address) = server.address() else {
        return;
    };
    let lease = Duration::from_secs(5);
    let purpose = unique_purpose("herd_absent");
    let caches = fleet(server, &address, near, &purpose, 8, &settings(lease)).await;
    let loads = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for cache in &caches {
        for _ in 0..50 {
            let (cache, loads) = (cache.clone(), Arc::clone(&loads));
            handles.push(tokio::spawn(async move {
                let started = Instant::now();
                let found = cache
                    .get_or_load(Id, "absent", move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<Option<TestEntry>, std::convert::Infallible>(None)
                    })
                    .await
                    .unwrap();
                assert!(found.is_none(), "an absent object was found");
                started.elapsed()
            }));
        }
    }
    let mut longest = Duration::ZERO;
    for handle in handles {
        longest = longest.max(handle.await.unwrap());
    }
    let loads = loads.load(Ordering::SeqCst);
    eprintln!("{server:?} (near: {near}): absent object, {loads} loads, longest wait {longest:?}");
    // (A process may load more than once: a task that misses after its process's load found
    // nothing starts another — absence is not cached. The bound below is what this is about.)
    assert!(loads >= 1);
    // The bound is the point: no caller waits out the lease of a load that found nothing.
    assert!(
        longest < lease,
        "a caller waited {longest:?}, a lease being {lease:?}"
    );
}

/// A load that read the source of truth before another process changed it and invalidated it
/// (the load taking `delay` after its read) is returned to its caller but leaves no process
/// serving the old revision.
async fn an_outdated_load_is_never_cached(server: Server, near: bool, delay: Duration) {
    let Some(address) = server.address() else {
        return;
    };
    let purpose = unique_purpose("outdated");
    let caches = fleet(
        server,
        &address,
        near,
        &purpose,
        3,
        &settings(Duration::from_secs(5)),
    )
    .await;
    let truth = Arc::new(AtomicU64::new(1));
    let read = Arc::new(tokio::sync::Notify::new());
    let loader = {
        let (cache, truth, read) = (caches[0].clone(), Arc::clone(&truth), Arc::clone(&read));
        tokio::spawn(async move {
            cache
                .get_or_load(Id, "hot", move || async move {
                    let revision = truth.load(Ordering::SeqCst);
                    read.notify_one();
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::convert::Infallible>(Some(object(revision)))
                })
                .await
                .unwrap()
        })
    };
    read.notified().await;
    // Another process changes the source of truth and invalidates.
    truth.store(2, Ordering::SeqCst);
    caches[1].invalidate(Id, &["hot"]).await.unwrap();
    let returned = loader.await.unwrap().expect("the loaded object");
    assert_eq!(returned.revision, 1, "the caller gets what it loaded");
    if !near {
        // (A near cache hears of the change before its fill and does not even try.)
        assert_eq!(
            caches[0].stats().refused_fills,
            1,
            "{:?}",
            caches[0].stats()
        );
    }
    // The invalidation reaches every memory level (waited for, not slept on); an outdated
    // load that was cached anywhere would be served for good.
    let gone = until_no_process_serves(
        &caches,
        &format!("the outdated load ({server:?}, near: {near}, load {delay:?})"),
        |found| found.revision == 1,
    )
    .await;
    eprintln!(
        "{server:?} (near: {near}, load {delay:?}): outdated load served by none {gone:?} after the invalidation"
    );
}

macro_rules! lease_tests {
    ($name:ident, $server:expr, $near:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_load_per_change_across_processes() {
                one_load_per_change($server, $near).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_hung_lease_holder_is_taken_over_once() {
                a_hung_holder_is_taken_over($server, $near).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_absent_object_never_waits_out_a_lease() {
                absent_object_herd($server, $near).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_outdated_load_of_200_ms_is_never_cached() {
                an_outdated_load_is_never_cached($server, $near, Duration::from_millis(200)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_outdated_load_of_3_s_is_never_cached() {
                an_outdated_load_is_never_cached($server, $near, Duration::from_secs(3)).await;
            }
        }
    };
}

lease_tests!(redis_plain, Server::Redis, false);
lease_tests!(redis_near, Server::Redis, true);
lease_tests!(cluster_plain, Server::Cluster, false);
lease_tests!(cluster_near, Server::Cluster, true);
lease_tests!(postgres_plain, Server::Postgres, false);
lease_tests!(postgres_near, Server::Postgres, true);
