//! Fan-out: many processes listening on one server while one process changes objects at a
//! steady rate. Each "process" is a hub with connections of its own (its health watched) and a
//! listener that notes when each change arrives; the delay is from the start of the changing
//! call to the arrival, and the server's CPU per change is read from `INFO cpu` (Redis).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::announcement::Kind;
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{Cache, CacheSettings, Channel, ChannelEvent, Listening};
use cache_near::Hub;
use cache_postgres::{PostgresConfig, PostgresConnector};
use cache_redis::{RedisConfig, RedisConnector};
use serde::{Deserialize, Serialize};

/// One fan-out run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Fanout {
    /// `redis` or `postgres`.
    pub(crate) transport: String,
    /// Listening processes.
    pub(crate) listeners: usize,
    /// Changes per second asked for.
    pub(crate) rate: u64,
    /// Changes made.
    pub(crate) changes: u64,
    /// Deliveries expected (changes × listeners) and seen.
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    /// Delay from the start of the changing call to a listener's arrival, µs.
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
    /// Times a hub became unhealthy during the run.
    pub(crate) outages: u64,
    /// The server's CPU time per change, µs (Redis `INFO cpu`; `None` for PostgreSQL).
    pub(crate) server_cpu_us_per_change: Option<f64>,
}

/// Arrival times by key, per listener.
type Arrivals = Arc<Mutex<Vec<HashMap<String, Instant>>>>;

fn listen_all(channels: &[Arc<dyn Channel>], arrivals: &Arrivals) -> Vec<Box<dyn Listening>> {
    channels
        .iter()
        .enumerate()
        .map(|(n, channel)| {
            let arrivals = Arc::clone(arrivals);
            channel.listen(Box::new(move |event| {
                let now = Instant::now();
                let announcement = match event {
                    ChannelEvent::Change(a) => Some(a),
                    ChannelEvent::Message(bytes) => cache_core::Announcement::decode(&bytes),
                    _ => None,
                };
                if let Some(a) = announcement.filter(|a| a.kind == Kind::Invalidate) {
                    let mut arrivals = arrivals.lock().expect("arrivals");
                    for key in a.keys {
                        arrivals[n].entry(key).or_insert(now);
                    }
                }
            }))
        })
        .collect()
}

async fn run(
    transport: &str,
    changer: Arc<dyn Cache<TestIndex, TestEntry>>,
    channels: Vec<Arc<dyn Channel>>,
    hubs: &[Hub],
    rate: u64,
    seconds: u64,
    cpu: Option<&mut redis::aio::MultiplexedConnection>,
) -> Fanout {
    let listeners = channels.len();
    let arrivals: Arrivals = Arc::new(Mutex::new(vec![HashMap::new(); listeners]));
    let _listening = listen_all(&channels, &arrivals);
    // Every listener subscribed: settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outages_before: u64 = hubs.iter().map(|h| h.stats().outages).sum();
    let mut cpu = cpu;
    let cpu_before = match cpu.as_deref_mut() {
        Some(conn) => Some(server_cpu(conn).await),
        None => None,
    };
    let changes = rate * seconds;
    let every = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
    let mut started: HashMap<String, Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..changes {
        ticks.tick().await;
        let key = format!("f{n}");
        started.insert(key.clone(), Instant::now());
        let _ = changer.invalidate(TestIndex::Id, &[key.as_str()]).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_cpu_us_per_change = match (cpu, cpu_before) {
        (Some(conn), Some(before)) => {
            Some((server_cpu(conn).await - before) * 1e6 / changes as f64)
        }
        _ => None,
    };
    let outages = hubs.iter().map(|h| h.stats().outages).sum::<u64>() - outages_before;
    let arrivals = arrivals.lock().expect("arrivals");
    let mut delays: Vec<f64> = Vec::new();
    for per_listener in arrivals.iter() {
        for (key, at) in per_listener {
            if let Some(start) = started.get(key) {
                delays.push(at.saturating_duration_since(*start).as_secs_f64() * 1e6);
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| {
        delays
            .get(((delays.len() as f64 * q) as usize).min(delays.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Fanout {
        transport: transport.to_owned(),
        listeners,
        rate,
        changes,
        expected: changes * listeners as u64,
        delivered: delays.len() as u64,
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: delays.last().copied().unwrap_or(0.0),
        outages,
        server_cpu_us_per_change,
    }
}

/// The server's CPU seconds so far (user + system, main thread and the rest).
async fn server_cpu(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            matches!(name, "used_cpu_sys" | "used_cpu_user")
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// `listeners` processes on one Redis server, one changing `rate` objects a second.
pub(crate) async fn redis(url: &str, listeners: usize, rate: u64, seconds: u64) -> Fanout {
    let connector =
        |_: usize| RedisConnector::new(RedisConfig::with_url(url), "bench").expect("redis");
    let changer = connector(0).cache::<TestIndex, TestEntry>(
        "fanout",
        TestIndex::BUILT,
        &CacheSettings::default(),
    );
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    let mut hubs = Vec::new();
    for n in 0..listeners {
        let c = connector(n);
        channels.push(Arc::new(c.channel().expect("channel")));
        hubs.push(Hub::new(Arc::new(c.channel().expect("channel"))));
    }
    let mut cpu = redis::Client::open(url)
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis for INFO");
    run(
        "redis",
        changer,
        channels,
        &hubs,
        rate,
        seconds,
        Some(&mut cpu),
    )
    .await
}

/// `listeners` processes on one PostgreSQL database, one changing `rate` objects a second.
pub(crate) async fn postgres(url: &str, listeners: usize, rate: u64, seconds: u64) -> Fanout {
    let config = PostgresConfig::with_url(url);
    let connector = || PostgresConnector::new(&config, "bench").expect("postgres");
    let first = connector();
    first.setup().await.expect("setup");
    let changer =
        first.cache::<TestIndex, TestEntry>("fanout", TestIndex::BUILT, &CacheSettings::default());
    let mut channels: Vec<Arc<dyn Channel>> = Vec::new();
    let mut hubs = Vec::new();
    for _ in 0..listeners {
        let c = connector();
        channels.push(Arc::new(c.channel().expect("channel")));
        hubs.push(Hub::new(Arc::new(c.channel().expect("channel"))));
    }
    run("postgres", changer, channels, &hubs, rate, seconds, None).await
}
