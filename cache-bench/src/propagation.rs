//! How long after `invalidate` starts — and after it returns — in one process another process
//! still hits the old object: two near caches on their own connectors and hubs (two
//! processes' worth), one reading the object in a loop on a thread of its own while the other
//! invalidates it. A loopback round trip of the server (`PING`, `SELECT 1`) is measured in the
//! same run, as the yardstick.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, Channel};
use cache_memory::{MemoryConfig, MemoryConnector};
use cache_near::{Hub, NearCache};
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};
use serde::{Deserialize, Serialize};

type Near = Arc<NearCache<TestIndex, TestEntry>>;

/// The propagation delays measured over one transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Propagation {
    /// `redis` (pub/sub) or `postgres` (LISTEN/NOTIFY).
    pub(crate) transport: String,
    /// Invalidations measured.
    pub(crate) rounds: u64,
    /// Median delay from `invalidate` returning to the other process's last hit, µs (0 when
    /// the last hit came before the return).
    pub(crate) p50_us: f64,
    /// 99th percentile, µs.
    pub(crate) p99_us: f64,
    /// Longest, µs.
    pub(crate) max_us: f64,
    /// The same from the start of the `invalidate` call, µs: median, 99th percentile.
    #[serde(default)]
    pub(crate) from_start_p50_us: f64,
    #[serde(default)]
    pub(crate) from_start_p99_us: f64,
    /// The median loopback round trip of the server, timed in every round while the other
    /// process reads (the same load as the propagation), µs.
    #[serde(default)]
    pub(crate) round_trip_us: f64,
}

fn near(purpose: &str, shared: Arc<dyn Cache<TestIndex, TestEntry>>, hub: &Hub) -> Near {
    let memory = MemoryConnector::new(MemoryConfig::enabled()).cache(
        purpose,
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    Arc::new(NearCache::new(purpose, memory, Some(shared), hub.clone()))
}

async fn healthy(hub: &Hub) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hub.is_healthy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two processes' near caches on Redis.
pub(crate) async fn redis(url: &str, rounds: u64) -> Propagation {
    let make = || {
        let connector = RedisConnector::new(RedisConfig::with_url(url), "bench").expect("redis");
        let channel: Arc<dyn Channel> = Arc::new(connector.channel().expect("channel"));
        (
            connector.cache::<TestIndex, TestEntry>(
                "propagation",
                TestIndex::BUILT,
                &CacheSettings::default(),
            ) as Arc<dyn Cache<_, _>>,
            Hub::new(channel),
        )
    };
    let conn = redis::Client::open(url)
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let ping = move || {
        let mut conn = conn.clone();
        async move {
            let _: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        }
    };
    measure("redis", make(), make(), rounds, ping).await
}

/// Two processes' near caches on PostgreSQL.
pub(crate) async fn postgres(url: &str, rounds: u64) -> Propagation {
    PostgresConnector::new(&PostgresConfig::with_url(url), "bench")
        .expect("postgres")
        .setup()
        .await
        .expect("setup");
    let make = || {
        let connector =
            PostgresConnector::new(&PostgresConfig::with_url(url), "bench").expect("postgres");
        let channel: Arc<dyn Channel> = Arc::new(connector.channel().expect("channel"));
        (
            connector.cache::<TestIndex, TestEntry>(
                "propagation",
                TestIndex::BUILT,
                &CacheSettings::default(),
            ) as Arc<dyn Cache<_, _>>,
            Hub::new(channel),
        )
    };
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("postgres");
    tokio::spawn(connection);
    let statement = client.prepare("SELECT 1").await.expect("SELECT 1");
    let client = Arc::new(client);
    let ping = move || {
        let (client, statement) = (Arc::clone(&client), statement.clone());
        async move {
            let _ = client.query_one(&statement, &[]).await;
        }
    };
    measure("postgres", make(), make(), rounds, ping).await
}

/// `rounds` invalidations by process A of objects process B reads in a loop; `ping` is one
/// loopback round trip of the server, timed in each round while B reads (the same load).
async fn measure<P, Fut>(
    transport: &str,
    (shared_a, hub_a): (Arc<dyn Cache<TestIndex, TestEntry>>, Hub),
    (shared_b, hub_b): (Arc<dyn Cache<TestIndex, TestEntry>>, Hub),
    rounds: u64,
    ping: P,
) -> Propagation
where
    P: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    healthy(&hub_a).await;
    healthy(&hub_b).await;
    let (a, b) = (
        near("propagation", shared_a, &hub_a),
        near("propagation", shared_b, &hub_b),
    );
    let mut delays = Vec::with_capacity(rounds as usize);
    let mut from_start = Vec::with_capacity(rounds as usize);
    let mut round_trips = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let key = format!("p{round}");
        a.set(Arc::new(TestEntry::new(&key, &[])))
            .await
            .expect("set");
        // B reads it until its memory level holds it (a read racing the set's announcement
        // is not filled).
        let deadline = Instant::now() + Duration::from_secs(1);
        while !matches!(b.get_ready(TestIndex::Id, &key), Some(Ok(Some(_)))) {
            let _ = b.get(TestIndex::Id, &key).await;
            if Instant::now() > deadline {
                break;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (b, key, stop) = (Arc::clone(&b), key.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut last_hit = None;
                let deadline = Instant::now() + Duration::from_secs(2);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match b.get_ready(TestIndex::Id, &key) {
                        Some(Ok(Some(_))) => last_hit = Some(Instant::now()),
                        _ => break,
                    }
                    std::thread::yield_now();
                }
                last_hit
            })
        };
        tokio::time::sleep(Duration::from_micros(200)).await;
        let pinged = Instant::now();
        ping().await;
        round_trips.push(pinged.elapsed().as_secs_f64() * 1e6);
        let started = Instant::now();
        a.invalidate(TestIndex::Id, &[key.as_str()])
            .await
            .expect("invalidate");
        let returned = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.store(true, Ordering::Relaxed);
        let last_hit = reader.join().expect("the reader");
        let delay = last_hit.map_or(Duration::ZERO, |hit| {
            hit.saturating_duration_since(returned)
        });
        delays.push(delay.as_secs_f64() * 1e6);
        let since_start =
            last_hit.map_or(Duration::ZERO, |hit| hit.saturating_duration_since(started));
        from_start.push(since_start.as_secs_f64() * 1e6);
    }
    delays.sort_by(f64::total_cmp);
    from_start.sort_by(f64::total_cmp);
    round_trips.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Propagation {
        transport: transport.to_owned(),
        rounds,
        p50_us: at(&delays, 0.5),
        p99_us: at(&delays, 0.99),
        max_us: delays.last().copied().unwrap_or(0.0),
        from_start_p50_us: at(&from_start, 0.5),
        from_start_p99_us: at(&from_start, 0.99),
        round_trip_us: at(&round_trips, 0.5),
    }
}
