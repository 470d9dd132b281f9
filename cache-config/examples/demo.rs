//! The object cache playing its part in a service, configured through `cache-config`.
//!
//! ```sh
//! cargo run --release --example demo [-- --seconds 8 --workers 8 --config FILE ... --metrics]
//! ```
//!
//! Its built-in configuration puts the instance and organization caches on the memory
//! connector; `--config FILE` (repeatable) and `DEMO_CACHES_...` environment variables
//! override it, e.g. `DEMO_CACHES_ORGANIZATION_CONNECTOR= cargo run --release --example demo`
//! runs the organization cache without caching. `--metrics` prints what the caches reported to
//! the `metrics` facade, as Prometheus text.
//!
//! Simulated requests resolve their instance by host and an organization by id or primary
//! domain through two object caches; misses load from a slower simulated source of truth.
//! Meanwhile an admin task renames instances and organizations in the source and invalidates
//! them in the cache. Every request checks that it never sees an object older than the last
//! change whose invalidation had finished when the request started. The report at the end
//! shows requests, loads, hit ratios, lookup latency and that check.
//!
//! Loads go through `ObjectCache::get_or_load`: one load per key at a time however many
//! requests miss it, no answer cached that may predate an invalidation running meanwhile (a
//! plain get / load / set would fail the check: an answer read from the database just before
//! a change arrives after the change's invalidation and would be cached stale), and, with
//! `MaxStale`, stale-if-error: a few seconds into the run the source of truth goes down for
//! [`OUTAGE`], objects keep expiring (MaxAge 2 s), and requests are answered with their expired
//! copies instead of failing. The report counts those answers and the requests that failed
//! (none).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cache_config::{Caches, Entry, Loader, ObjectCache};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The service's own types (shared with `near_demo`).
#[path = "common/service.rs"]
mod service;
use service::*;

/// How long the source of truth takes to answer one query.
const SOURCE_LATENCY: Duration = Duration::from_micros(500);
/// When the source of truth goes down, after the start.
const OUTAGE_AFTER: Duration = Duration::from_secs(2);
/// How long it stays down.
const OUTAGE: Duration = Duration::from_secs(3);

// ---- the simulated source of truth --------------------------------------------------------

/// The database: slower than the cache, always right. Objects are addressed by number.
struct Source {
    instances: Vec<RwLock<Instance>>,
    orgs: Vec<RwLock<Organization>>,
    instance_by_host: HashMap<String, usize>,
    org_by_key: HashMap<String, usize>,
    loads: AtomicU64,
    /// While set, every query fails (the database is down).
    down: AtomicBool,
}

impl Source {
    fn new() -> Self {
        let mut instances = Vec::new();
        let mut orgs = Vec::new();
        let mut instance_by_host = HashMap::new();
        let mut org_by_key = HashMap::new();
        for i in 0..INSTANCES {
            let id = format!("inst{i:03}");
            let hosts: Vec<String> = (0..DOMAINS_PER_INSTANCE)
                .map(|d| format!("{}.tenant{i}.example", ["auth", "login", "id"][d]))
                .collect();
            for host in &hosts {
                instance_by_host.insert(host.clone(), i);
            }
            for o in 0..ORGS_PER_INSTANCE {
                let org = Organization {
                    instance_id: id.clone(),
                    id: format!("{}", 300_000 + i * ORGS_PER_INSTANCE + o),
                    primary_domain: format!("org{o}.tenant{i}.example"),
                    name: format!("Organization {o} of tenant {i}"),
                    revision: 0,
                };
                for key in org
                    .keys(OrgIndex::Id)
                    .into_iter()
                    .chain(org.keys(OrgIndex::PrimaryDomain))
                {
                    org_by_key.insert(key, orgs.len());
                }
                orgs.push(RwLock::new(org));
            }
            instances.push(RwLock::new(Instance {
                id,
                hosts,
                name: format!("Tenant {i}"),
                revision: 0,
            }));
        }
        Source {
            instances,
            orgs,
            instance_by_host,
            org_by_key,
            loads: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }

    /// Answers with what the database held when the query ran; the answer then takes
    /// [`SOURCE_LATENCY`] to arrive (so it can be outdated on arrival, as in real life).
    async fn answer<T>(&self, snapshot: T) -> Result<T, String> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(SOURCE_LATENCY).await;
        if self.down.load(Ordering::Relaxed) {
            return Err("the database is down".to_owned());
        }
        Ok(snapshot)
    }

    async fn instance_by_host(&self, host: &str) -> Result<Option<Instance>, String> {
        let snapshot = self
            .instance_by_host
            .get(host)
            .map(|&i| read(&self.instances[i]).clone());
        self.answer(snapshot).await
    }

    async fn org_by_key(&self, key: &str) -> Result<Option<Organization>, String> {
        let snapshot = self
            .org_by_key
            .get(key)
            .map(|&o| read(&self.orgs[o]).clone());
        self.answer(snapshot).await
    }
}

fn read<T: Clone>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---- the service ----------------------------------------------------------------------------

struct Service {
    source: Arc<Source>,
    instances: ObjectCache<InstanceIndex, Instance>,
    orgs: ObjectCache<OrgIndex, Organization>,
    /// Per object, the revision whose invalidation has finished: no request that starts later
    /// may see an older one.
    fresh_instances: Vec<AtomicU64>,
    fresh_orgs: Vec<AtomicU64>,
    stale_reads: AtomicU64,
    not_found: AtomicU64,
    /// Requests whose lookup failed (the source was down and no copy was left).
    failed: AtomicU64,
}

#[derive(Default)]
struct Latencies {
    all: Vec<u64>,
}

impl Service {
    /// One request: resolve the instance by host, then an organization by id or domain.
    async fn request(&self, rng: &mut StdRng, latencies: &mut Latencies) {
        let i = skewed(rng, INSTANCES);
        let host = read(&self.source.instances[i]).hosts[rng.random_range(0..DOMAINS_PER_INSTANCE)]
            .clone();
        let fresh = self.fresh_instances[i].load(Ordering::SeqCst);
        let started = Instant::now();
        let instance = self.instance(&host).await;
        latencies.all.push(nanos(started));
        let instance = match instance {
            Ok(Some(instance)) => instance,
            Ok(None) => {
                self.not_found.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if instance.revision < fresh {
            self.stale_reads.fetch_add(1, Ordering::Relaxed);
        }

        let o = i * ORGS_PER_INSTANCE + skewed(rng, ORGS_PER_INSTANCE);
        let (index, key) = {
            let org = read(&self.source.orgs[o]);
            if rng.random_bool(0.7) {
                (OrgIndex::Id, format!("{}-{}", instance.id, org.id))
            } else {
                let domain = &org.primary_domain;
                (OrgIndex::PrimaryDomain, format!("{}-{domain}", instance.id))
            }
        };
        let fresh = self.fresh_orgs[o].load(Ordering::SeqCst);
        let started = Instant::now();
        let org = self.org(index, &key).await;
        latencies.all.push(nanos(started));
        match org {
            Ok(Some(org)) if org.revision < fresh => {
                self.stale_reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                self.not_found.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The instance of `host`, through the cache.
    async fn instance(&self, host: &str) -> Result<Option<Arc<Instance>>, Arc<String>> {
        let (source, host_owned) = (Arc::clone(&self.source), host.to_owned());
        self.instances
            .get_or_load(InstanceIndex::Host, host, move || async move {
                source.instance_by_host(&host_owned).await
            })
            .await
    }

    /// The organization of `key` under `index`, through the cache.
    async fn org(
        &self,
        index: OrgIndex,
        key: &str,
    ) -> Result<Option<Arc<Organization>>, Arc<String>> {
        let (source, key_owned) = (Arc::clone(&self.source), key.to_owned());
        self.orgs
            .get_or_load(index, key, move || async move {
                source.org_by_key(&key_owned).await
            })
            .await
    }

    /// One admin change: rename an instance or an organization in the source of truth, then
    /// invalidate it in the cache, then publish that the new revision is the one to see.
    async fn change(&self, rng: &mut StdRng) -> &'static str {
        if rng.random_bool(0.2) {
            let i = rng.random_range(0..INSTANCES);
            let (id, host, revision) = {
                let mut instance = write(&self.source.instances[i]);
                instance.revision += 1;
                instance.name = format!("Tenant {i} (rev {})", instance.revision);
                (
                    instance.id.clone(),
                    instance.hosts[0].clone(),
                    instance.revision,
                )
            };
            self.instances
                .invalidate(InstanceIndex::Id, &[id])
                .await
                .expect("the memory connector cannot fail");
            self.fresh_instances[i].store(revision, Ordering::SeqCst);
            // The service loads what it changed, so the cache holds every object.
            let _ = self.instance(&host).await;
            "instance"
        } else {
            let o = rng.random_range(0..self.source.orgs.len());
            let (key, revision) = {
                let mut org = write(&self.source.orgs[o]);
                org.revision += 1;
                org.name = format!("Organization {o} (rev {})", org.revision);
                (org.keys(OrgIndex::Id), org.revision)
            };
            self.orgs
                .invalidate(OrgIndex::Id, &key)
                .await
                .expect("the memory connector cannot fail");
            self.fresh_orgs[o].store(revision, Ordering::SeqCst);
            let _ = self.org(OrgIndex::Id, &key[0]).await;
            "organization"
        }
    }
}

/// A popularity-skewed pick in `0..n`: low numbers are much more frequent (like real tenants).
fn skewed(rng: &mut StdRng, n: usize) -> usize {
    let x: f64 = rng.random();
    ((x * x * x) * n as f64) as usize % n
}

fn nanos(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_nanos(sorted[at])
}

/// The demo's own configuration layer, below `--config` files and the environment.
const DEMO_CONFIG: &str = "
Caches:
  Memory:
    Enabled: true
    AutoPrune: { Interval: 250ms, Timeout: 1s }
  # Objects expire after 2 s but are kept a minute longer for stale-if-error; instances are
  # reloaded in the background once they are 1.6 s old (refresh-ahead).
  Instance: { Connector: memory, MaxAge: 2s, MaxStale: 1m, RefreshAhead: 0.8 }
  Organization: { Connector: memory, MaxAge: 2s, MaxStale: 1m }
";

struct Args {
    seconds: usize,
    workers: usize,
    configs: Vec<String>,
    /// Print the caches' metrics as Prometheus text at the end.
    metrics: bool,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        seconds: 8,
        workers: 8,
        configs: Vec::new(),
        metrics: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{flag} needs a positive number"))
        };
        if flag == "--metrics" {
            parsed.metrics = true;
            continue;
        }
        if flag == "--config" {
            let file = args.next().ok_or("--config needs a file")?;
            parsed.configs.push(file);
            continue;
        }
        match flag.as_str() {
            "--seconds" => parsed.seconds = value()?,
            "--workers" => parsed.workers = value()?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --seconds N, --workers N, --config FILE, \
                     --metrics"
                ));
            }
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("demo: {message}");
            std::process::exit(2);
        }
    };
    // The recorder goes first: the caches register their metrics when they are made.
    let prometheus = args.metrics.then(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder in the demo")
    });
    let mut loader = Loader::new().yaml(DEMO_CONFIG);
    for file in &args.configs {
        loader = loader.file(file);
    }
    let config = match loader.env_prefix("DEMO").load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("demo: bad configuration: {error}");
            std::process::exit(2);
        }
    };
    // Each object cache logs as its `Log` settings say (default: errors, to stderr).
    tracing_subscriber::registry()
        .with(cache_config::log_layer(&config))
        .init();
    let caches = match Caches::start(&config, env!("CARGO_PKG_VERSION")) {
        Ok(caches) => caches,
        Err(error) => {
            eprintln!("demo: {error}");
            std::process::exit(2);
        }
    };
    let (instances, orgs) = match (
        caches.object_cache("instance", &[InstanceIndex::Id, InstanceIndex::Host]),
        caches.object_cache("organization", &[OrgIndex::Id, OrgIndex::PrimaryDomain]),
    ) {
        (Ok(instances), Ok(orgs)) => (instances, orgs),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("demo: {error}");
            std::process::exit(2);
        }
    };
    let source = Arc::new(Source::new());
    let service = Arc::new(Service {
        fresh_instances: (0..INSTANCES).map(|_| AtomicU64::new(0)).collect(),
        fresh_orgs: (0..source.orgs.len()).map(|_| AtomicU64::new(0)).collect(),
        source,
        instances,
        orgs,
        stale_reads: AtomicU64::new(0),
        not_found: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    // Warm-up: the service loads every object once, so each has a copy to fall back on.
    for instance in &service.source.instances {
        let host = read(instance).hosts[0].clone();
        let _ = service.instance(&host).await;
    }
    for org in &service.source.orgs {
        let key = read(org).keys(OrgIndex::Id)[0].clone();
        let _ = service.org(OrgIndex::Id, &key).await;
    }

    println!(
        "object-cache demo: {} s of requests from {} workers; {INSTANCES} instances, {} \
         organizations; instance cache on {:?}, organization cache on {:?}; source of truth \
         answers in {:?}",
        args.seconds,
        args.workers,
        service.source.orgs.len(),
        service.instances.connector(),
        service.orgs.connector(),
        SOURCE_LATENCY,
    );

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // A change (the database write, the invalidation, the read back) is whole before the
    // database goes down: one that began just before would leave its object invalidated with
    // no copy to answer from while the database is down — failures the demo does not simulate.
    let changing = Arc::new(tokio::sync::Mutex::new(()));
    let admin = {
        let (service, done, changing) = (
            Arc::clone(&service),
            Arc::clone(&done),
            Arc::clone(&changing),
        );
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(1);
            let mut changes: HashMap<&'static str, u64> = HashMap::new();
            while !done.load(Ordering::Relaxed) {
                {
                    let _change = changing.lock().await;
                    // Nobody changes a database that is down.
                    if !service.source.down.load(Ordering::Relaxed) {
                        *changes.entry(service.change(&mut rng).await).or_default() += 1;
                    }
                }
                tokio::time::sleep(CHANGE_EVERY).await;
            }
            changes
        })
    };
    let outage = {
        let source = Arc::clone(&service.source);
        tokio::spawn(async move {
            tokio::time::sleep(OUTAGE_AFTER).await;
            {
                let _no_change = changing.lock().await;
                source.down.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(OUTAGE).await;
            source.down.store(false, Ordering::Relaxed);
        })
    };
    let deadline = started + Duration::from_secs(args.seconds as u64);
    let workers: Vec<_> = (0..args.workers)
        .map(|w| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(100 + w as u64);
                let mut latencies = Latencies::default();
                let mut requests = 0u64;
                while Instant::now() < deadline {
                    service.request(&mut rng, &mut latencies).await;
                    requests += 1;
                    // A service's request rate, not a load test: a pause every 100 requests.
                    if requests % 100 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                (requests, latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut requests = 0u64;
    for worker in workers {
        let (count, latencies) = worker.await.expect("a worker panicked");
        requests += count;
        all.extend(latencies.all);
    }
    done.store(true, Ordering::Relaxed);
    let changes = admin.await.expect("the admin task panicked");
    let outage_seen = outage.is_finished();
    outage.abort();
    let elapsed = started.elapsed();
    caches.shutdown().await;
    all.sort_unstable();

    let loads = service.source.loads.load(Ordering::Relaxed);
    let stale = service.stale_reads.load(Ordering::Relaxed);
    let (i, o) = (service.instances.stats(), service.orgs.stats());
    println!();
    println!(
        "  requests            {:>10}  in {:.2?} ({:.0} requests/s)",
        requests,
        elapsed,
        requests as f64 / elapsed.as_secs_f64()
    );
    println!("  cache lookups       {:>10}", all.len());
    println!(
        "  loads from source   {:>10}  ({:.1} % of lookups)",
        loads,
        100.0 * loads as f64 / all.len().max(1) as f64
    );
    println!(
        "  hit ratio           {:>9.1} %  instance {:.1} %, organization {:.1} %",
        100.0 * (i.hits + o.hits) as f64 / (i.hits + i.misses + o.hits + o.misses).max(1) as f64,
        100.0 * i.hit_ratio(),
        100.0 * o.hit_ratio()
    );
    println!(
        "  lookup latency      p50 {:.2?}, p99 {:.2?}, max {:.2?} (misses include the load)",
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
    println!(
        "  changes             {:>10}  ({} instances, {} organizations), each invalidated",
        changes.values().sum::<u64>(),
        changes.get("instance").unwrap_or(&0),
        changes.get("organization").unwrap_or(&0)
    );
    println!("  cache errors        {:>10}", i.errors + o.errors);
    println!(
        "  source outage       {:>10}  ({OUTAGE:?} from {OUTAGE_AFTER:?} after the start{})",
        "",
        if outage_seen {
            ""
        } else {
            "; the run ended before it was over"
        }
    );
    println!(
        "  stale-if-error      {:>10}  (answered with an expired copy while the source was down)",
        i.stale_answers + o.stale_answers
    );
    println!(
        "  refreshes ahead     {:>10}  (instances reloaded in the background before MaxAge)",
        i.refreshes
    );
    let failed = service.failed.load(Ordering::Relaxed);
    println!("  failed requests     {:>10}", failed);
    println!(
        "  not found           {:>10}",
        service.not_found.load(Ordering::Relaxed)
    );
    println!(
        "  stale reads         {:>10}  (requests that saw an object older than a finished invalidation)",
        stale
    );
    println!();
    if let Some(prometheus) = prometheus {
        println!("metrics (Prometheus text format):");
        println!("{}", prometheus.render());
    }
    if stale == 0 && failed == 0 {
        println!(
            "OK: no request saw a stale object after its invalidation, and none failed while \
             the source was down."
        );
    } else {
        println!(
            "FAILED: {stale} requests saw a stale object after its invalidation, {failed} failed."
        );
        std::process::exit(1);
    }
}
