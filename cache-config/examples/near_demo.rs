//! Near caches across OS processes: one process of a simulated service, run as several by
//! `cargo xtask demo`.
//!
//! ```sh
//! cargo xtask demo [--processes 3] [--seconds 20] [--connector redis|postgres]
//! ```
//!
//! xtask starts throwaway servers, builds this example (`--release --features
//! redis,postgres`) and runs it as N processes with `--process 0..N --run ID`. Each process
//! configures its instance and organization caches as **near caches** on the chosen connector
//! through [`Loader`] YAML (`Organization: { Connector: redis, Near: { Enabled: true } }`),
//! the connector's URL from `CACHE_TEST_REDIS_URL` / `CACHE_TEST_POSTGRES_URL`, and serves
//! simulated requests that resolve an instance by host and an organization by id or domain
//! with `ObjectCache::get_or_load`: hits come from the memory level (or the shared one),
//! misses load from the source of truth.
//!
//! **The source of truth** is shared by all processes: a record per object on the same server,
//! written and read through a plain object cache (`Truth`: no near level, nothing expires) —
//! this example can only use cache-config's own dependencies, and the connector is a reliable
//! key-value store when nothing expires. Process 0, the **admin**, also renames objects: it
//! writes the new revision to the truth, invalidates the object through its near cache, and
//! then writes into the truth the wall-clock time its invalidate returned. The other
//! processes only read.
//!
//! Every read is recorded with the time it began and the revision it returned. At the end each
//! process reads the invalidation times back from the truth and finds, for every change of an
//! object it had read, the **propagation delay** (the last read that still returned the old
//! revision, minus the time the invalidate returned, at least 0) and the **stale reads** (reads
//! that began more than 100 ms after the invalidation of the revision they returned: there
//! must be none). It prints one machine-readable line `NEAR_DEMO {json}` for xtask, which
//! shows the table; the exit status is 1 when a read was stale or a request failed.

#[cfg(any(feature = "redis", feature = "postgres"))]
fn main() {
    demo::main();
}

#[cfg(not(any(feature = "redis", feature = "postgres")))]
fn main() {
    eprintln!(
        "near_demo needs a shared connector: cargo build --release -p cache-config --example \
         near_demo --features redis,postgres (or run `cargo xtask demo`)"
    );
    std::process::exit(2);
}

/// The service's own types (shared with `demo`).
#[cfg(any(feature = "redis", feature = "postgres"))]
#[path = "common/service.rs"]
mod service;

#[cfg(any(feature = "redis", feature = "postgres"))]
mod demo {
    use super::service::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use cache_config::{Caches, Entry, Loader, NearStats, ObjectCache};
    use cache_core::Cache;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde::{Deserialize, Serialize};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    /// Instances are objects `0..INSTANCES`, organizations the ones after.
    const OBJECTS: usize = INSTANCES + INSTANCES * ORGS_PER_INSTANCE;
    /// A read that begins this long after the invalidation of the revision it returns is stale.
    const BOUND_US: u64 = 100_000;
    /// Between the admin's "ready" and the start of the run: time for every process to subscribe.
    const START_AFTER: Duration = Duration::from_secs(1);
    /// Longest wait for another process (the admin's "ready" and "done").
    const WAIT_LIMIT: Duration = Duration::from_secs(90);
    /// Start times of the last reads of each revision kept per worker (to count stale reads).
    const RECENT: usize = 8;

    // The fixed parts of every object, the same in every process.

    fn instance_id(i: usize) -> String {
        format!("inst{i:03}")
    }

    fn instance_host(i: usize, d: usize) -> String {
        format!("{}.tenant{i}.example", ["auth", "login", "id"][d])
    }

    /// Object number of organization `o` of instance `i`.
    fn org_object(i: usize, o: usize) -> usize {
        INSTANCES + i * ORGS_PER_INSTANCE + o
    }

    /// Instance and organization number of an organization's object number.
    fn org_of(object: usize) -> (usize, usize) {
        let n = object - INSTANCES;
        (n / ORGS_PER_INSTANCE, n % ORGS_PER_INSTANCE)
    }

    fn org_id(object: usize) -> String {
        format!("{}", 300_000 + object - INSTANCES)
    }

    fn org_domain(object: usize) -> String {
        let (i, o) = org_of(object);
        format!("org{o}.tenant{i}.example")
    }

    fn org_key(object: usize, index: OrgIndex) -> String {
        let (i, _) = org_of(object);
        match index {
            OrgIndex::Id => format!("{}-{}", instance_id(i), org_id(object)),
            OrgIndex::PrimaryDomain => format!("{}-{}", instance_id(i), org_domain(object)),
        }
    }

    fn object_key(object: usize) -> String {
        format!("object:{object}")
    }

    // ---- the shared source of truth -------------------------------------------------------

    cache_config::index! {
        enum TruthIndex {
            Key => "key",
        }
    }

    /// What the source of truth holds per object (and the admin's markers `ready`, `done`).
    #[derive(Clone, Debug, Default, Serialize, Deserialize)]
    struct Record {
        key: String,
        revision: u64,
        name: String,
        /// Per change: the new revision and when (unix µs) its invalidate returned.
        invalidated: Vec<(u64, u64)>,
        /// `ready`: when the run starts (unix µs).
        at_us: u64,
    }

    impl Entry<TruthIndex> for Record {
        fn keys(&self, _: TruthIndex) -> Vec<String> {
            vec![self.key.clone()]
        }
    }

    /// The truth's records, read and written through the connector directly, so that every
    /// error is seen (an `ObjectCache` answers a failed get as a miss).
    #[derive(Clone)]
    struct Truth(Arc<dyn Cache<TruthIndex, Record>>);

    impl Truth {
        async fn read(&self, key: &str) -> Result<Option<Arc<Record>>, String> {
            self.0
                .get(TruthIndex::Key, key)
                .await
                .map_err(|e| format!("reading {key} from the source of truth: {e}"))
        }

        async fn write(&self, record: Record) -> Result<(), String> {
            let record = Arc::new(record);
            let mut attempts = 0;
            loop {
                match self.0.set(Arc::clone(&record)).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempts >= 5 => {
                        return Err(format!(
                            "writing {} to the source of truth: {e}",
                            record.key
                        ));
                    }
                    Err(_) => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }

        /// The record `key` once another process has written it.
        async fn wait_for(&self, key: &str) -> Result<Arc<Record>, String> {
            let started = Instant::now();
            loop {
                if let Ok(Some(record)) = self.read(key).await {
                    return Ok(record);
                }
                if started.elapsed() > WAIT_LIMIT {
                    return Err(format!(
                        "no `{key}` from the admin (process 0) after {WAIT_LIMIT:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        /// Loads object `object` as the service sees it.
        async fn load(&self, object: usize) -> Result<Arc<Record>, String> {
            self.read(&object_key(object))
                .await?
                .ok_or_else(|| format!("object {object} is missing from the source of truth"))
        }
    }

    fn initial_record(object: usize) -> Record {
        let name = if object < INSTANCES {
            format!("Tenant {object}")
        } else {
            let (i, o) = org_of(object);
            format!("Organization {o} of tenant {i}")
        };
        Record {
            key: object_key(object),
            name,
            ..Record::default()
        }
    }

    // ---- what each process records ---------------------------------------------------------

    /// The reads of one revision of one object by one worker.
    #[derive(Clone, Copy, Default)]
    struct Seen {
        reads: u64,
        /// When the last of them began (unix µs).
        last_us: u64,
        /// When the last [`RECENT`] of them began, as a ring.
        recent: [u64; RECENT],
    }

    /// Per (object, revision): the reads of one worker.
    #[derive(Default)]
    struct Reads(HashMap<(u32, u64), Seen>);

    impl Reads {
        fn record(&mut self, object: usize, revision: u64, began_us: u64) {
            let seen = self.0.entry((object as u32, revision)).or_default();
            seen.recent[(seen.reads % RECENT as u64) as usize] = began_us;
            seen.reads += 1;
            seen.last_us = seen.last_us.max(began_us);
        }
    }

    fn now_us() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or_default()
    }

    /// Sleeps until the wall-clock time `at_us`.
    async fn sleep_until(at_us: u64) {
        let now = now_us();
        if at_us > now {
            tokio::time::sleep(Duration::from_micros(at_us - now)).await;
        }
    }

    /// A popularity-skewed pick in `0..n`: low numbers are much more frequent.
    fn skewed(rng: &mut StdRng, n: usize) -> usize {
        let x: f64 = rng.random();
        ((x * x * x) * n as f64) as usize % n
    }

    // ---- the service ------------------------------------------------------------------------

    struct Service {
        truth: Truth,
        instances: ObjectCache<InstanceIndex, Instance>,
        orgs: ObjectCache<OrgIndex, Organization>,
        not_found: AtomicU64,
        failed: AtomicU64,
    }

    impl Service {
        /// Instance `i` through `key` under `index`, loaded from the truth on a miss.
        async fn instance(
            &self,
            i: usize,
            index: InstanceIndex,
            key: &str,
        ) -> Result<Option<Arc<Instance>>, Arc<String>> {
            let truth = self.truth.clone();
            self.instances
                .get_or_load(index, key, move || async move {
                    let record = truth.load(i).await?;
                    Ok::<_, String>(Some(Instance {
                        id: instance_id(i),
                        hosts: (0..DOMAINS_PER_INSTANCE)
                            .map(|d| instance_host(i, d))
                            .collect(),
                        name: record.name.clone(),
                        revision: record.revision,
                    }))
                })
                .await
        }

        /// Organization object `object` through `index`, loaded from the truth on a miss.
        async fn org(
            &self,
            object: usize,
            index: OrgIndex,
        ) -> Result<Option<Arc<Organization>>, Arc<String>> {
            let truth = self.truth.clone();
            self.orgs
                .get_or_load(index, &org_key(object, index), move || async move {
                    let record = truth.load(object).await?;
                    Ok::<_, String>(Some(Organization {
                        instance_id: instance_id(org_of(object).0),
                        id: org_id(object),
                        primary_domain: org_domain(object),
                        name: record.name.clone(),
                        revision: record.revision,
                    }))
                })
                .await
        }

        fn count<T>(&self, answer: Result<Option<T>, Arc<String>>) -> Option<T> {
            match answer {
                Ok(Some(value)) => Some(value),
                Ok(None) => {
                    self.not_found.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(error) => {
                    if self.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("near_demo: a lookup failed: {error}");
                    }
                    None
                }
            }
        }

        /// One request: the instance by one of its hosts, then one of its organizations by id
        /// or domain; every answer recorded with the time its lookup began.
        async fn request(&self, rng: &mut StdRng, reads: &mut Reads) {
            let i = skewed(rng, INSTANCES);
            let host = instance_host(i, rng.random_range(0..DOMAINS_PER_INSTANCE));
            let began = now_us();
            let answer = self.instance(i, InstanceIndex::Host, &host).await;
            if let Some(instance) = self.count(answer) {
                reads.record(i, instance.revision, began);
            }
            let object = org_object(i, skewed(rng, ORGS_PER_INSTANCE));
            let index = if rng.random_bool(0.7) {
                OrgIndex::Id
            } else {
                OrgIndex::PrimaryDomain
            };
            let began = now_us();
            let answer = self.org(object, index).await;
            if let Some(org) = self.count(answer) {
                reads.record(object, org.revision, began);
            }
        }

        /// One admin change of `record` (object `object`): the new revision into the truth,
        /// the invalidation through the near cache, then the time it returned into the truth.
        async fn change(&self, object: usize, record: &mut Record) -> Result<bool, String> {
            record.revision += 1;
            record.name = format!("{} (rev {})", initial_record(object).name, record.revision);
            self.truth.write(record.clone()).await?;
            let invalidated = if object < INSTANCES {
                self.instances
                    .invalidate(InstanceIndex::Id, &[instance_id(object)])
                    .await
            } else {
                self.orgs
                    .invalidate(OrgIndex::Id, &[org_key(object, OrgIndex::Id)])
                    .await
            };
            record.invalidated.push((record.revision, now_us()));
            self.truth.write(record.clone()).await?;
            // The service loads what it changed, so the cache holds every object.
            if object < INSTANCES {
                let _ = self
                    .instance(object, InstanceIndex::Id, &instance_id(object))
                    .await;
            } else {
                let _ = self.org(object, OrgIndex::Id).await;
            }
            if let Err(error) = &invalidated {
                eprintln!("near_demo: invalidating object {object} failed: {error}");
            }
            Ok(invalidated.is_ok())
        }
    }

    // ---- the outcome --------------------------------------------------------------------------

    #[derive(Default)]
    struct Outcome {
        /// Changes of objects this process had read in their old revision.
        observed: u64,
        /// Their delays that were 0 (no read of the old revision began after the invalidate
        /// returned) and the others, in µs.
        zero_delays: u64,
        delays_us: Vec<u64>,
        stale_reads: u64,
        /// More stale reads than the [`RECENT`] kept per revision and worker may have happened.
        stale_at_least: bool,
    }

    /// Compares every change `(object, new revision, invalidate returned)` with the reads.
    fn outcome(changes: &[(usize, u64, u64)], workers: &[Reads]) -> Outcome {
        let mut outcome = Outcome::default();
        for &(object, revision, returned_us) in changes {
            let old = (object as u32, revision - 1);
            let mut last = None;
            for seen in workers.iter().filter_map(|reads| reads.0.get(&old)) {
                last = last.max(Some(seen.last_us));
                let kept = &seen.recent[..(seen.reads as usize).min(RECENT)];
                let stale = kept
                    .iter()
                    .filter(|&&began| began > returned_us + BOUND_US)
                    .count();
                outcome.stale_reads += stale as u64;
                if stale == RECENT && seen.reads > RECENT as u64 {
                    outcome.stale_at_least = true;
                }
            }
            if let Some(last) = last {
                outcome.observed += 1;
                match last.saturating_sub(returned_us) {
                    0 => outcome.zero_delays += 1,
                    delay => outcome.delays_us.push(delay),
                }
            }
        }
        outcome.delays_us.sort_unstable();
        outcome
    }

    // ---- the process ----------------------------------------------------------------------------

    struct Args {
        process: usize,
        seconds: u64,
        workers: usize,
        connector: String,
        run: String,
    }

    const USAGE: &str = "usage: near_demo --process N --run ID [--seconds N] \
                         [--workers N] [--connector redis|postgres]";

    fn args() -> Result<Args, String> {
        let mut parsed = Args {
            process: 0,
            seconds: 20,
            workers: 4,
            connector: "redis".to_owned(),
            run: String::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("{flag} needs a number, not {value:?}"))
            };
            match flag.as_str() {
                "--process" => parsed.process = number()?,
                "--seconds" => parsed.seconds = number()?.max(1) as u64,
                "--workers" => parsed.workers = number()?.max(1),
                "--connector" if value == "redis" || value == "postgres" => {
                    parsed.connector = value;
                }
                "--run" => parsed.run = value,
                _ => return Err(format!("unknown argument {flag} {value}; {USAGE}")),
            }
        }
        if parsed.run.is_empty() {
            return Err(format!(
                "--run ID is needed (the same, new one for every process of a run); {USAGE}"
            ));
        }
        Ok(parsed)
    }

    pub(crate) fn main() {
        let args = match args() {
            Ok(args) => args,
            Err(message) => {
                eprintln!("near_demo: {message}");
                std::process::exit(2);
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        match runtime.block_on(run(args)) {
            Ok(true) => {}
            Ok(false) => std::process::exit(1),
            Err(message) => {
                eprintln!("near_demo: {message}");
                std::process::exit(2);
            }
        }
    }

    /// The configuration: near caches on the connector, and the truth beside them.
    fn config_yaml(connector: &str, url: &str) -> String {
        let block = if connector == "redis" {
            "Redis"
        } else {
            "Postgres"
        };
        let url = url.replace('\'', "''");
        format!(
            "
Caches:
  {block}: {{ Enabled: true, URL: '{url}' }}
  Instance: {{ Connector: {connector}, Near: {{ Enabled: true }} }}
  Organization: {{ Connector: {connector}, Near: {{ Enabled: true }} }}
  # The source of truth: a plain object cache whose records never expire.
  Truth: {{ Connector: {connector}, MaxAge: 0, LastUsage: 0 }}
"
        )
    }

    /// Runs one process; `Ok(false)` when a read was stale or a request failed.
    async fn run(args: Args) -> Result<bool, String> {
        let variable = if args.connector == "redis" {
            "CACHE_TEST_REDIS_URL"
        } else {
            "CACHE_TEST_POSTGRES_URL"
        };
        let url = std::env::var(variable)
            .map_err(|_| format!("{variable} is not set (`cargo xtask demo` sets it)"))?;
        let config = Loader::new()
            .purpose("truth")
            .yaml(config_yaml(&args.connector, &url))
            .env_prefix("NEAR_DEMO")
            .load()
            .map_err(|e| format!("bad configuration: {e}"))?;
        tracing_subscriber::registry()
            .with(cache_config::log_layer(&config))
            .init();
        // The run's id scopes every object, so runs never see each other's.
        let caches = Caches::start(&config, args.run.as_str()).map_err(|e| e.to_string())?;
        caches.setup().await.map_err(|e| e.to_string())?;
        let instances = caches
            .object_cache("instance", &[InstanceIndex::Id, InstanceIndex::Host])
            .map_err(|e| e.to_string())?;
        let orgs = caches
            .object_cache("organization", &[OrgIndex::Id, OrgIndex::PrimaryDomain])
            .map_err(|e| e.to_string())?;
        let truth: ObjectCache<TruthIndex, Record> = caches
            .object_cache("truth", &[TruthIndex::Key])
            .map_err(|e| e.to_string())?;
        let service = Arc::new(Service {
            truth: Truth(truth.backend()),
            instances,
            orgs,
            not_found: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let admin = args.process == 0;

        // The admin fills the truth and says when the run starts.
        let mut records: Vec<Record> = Vec::new();
        if admin {
            records = (0..OBJECTS).map(initial_record).collect();
            let mut writes = tokio::task::JoinSet::new();
            for chunk in records.chunks(OBJECTS.div_ceil(8)) {
                let (truth, chunk) = (service.truth.clone(), chunk.to_vec());
                writes.spawn(async move {
                    for record in chunk {
                        truth.write(record).await?;
                    }
                    Ok::<_, String>(())
                });
            }
            while let Some(written) = writes.join_next().await {
                written.map_err(|e| e.to_string())??;
            }
            let start = now_us() + START_AFTER.as_micros() as u64;
            service
                .truth
                .write(Record {
                    key: "ready".into(),
                    at_us: start,
                    ..Record::default()
                })
                .await?;
        }
        let start_us = service.truth.wait_for("ready").await?.at_us;
        let deadline_us = start_us + args.seconds * 1_000_000;
        sleep_until(start_us).await;

        let changes = admin.then(|| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(1);
                let (mut changes, mut failed) = (0u64, 0u64);
                while now_us() < deadline_us {
                    let object = if rng.random_bool(0.2) {
                        skewed(&mut rng, INSTANCES)
                    } else {
                        org_object(
                            skewed(&mut rng, INSTANCES),
                            skewed(&mut rng, ORGS_PER_INSTANCE),
                        )
                    };
                    changes += 1;
                    if !service.change(object, &mut records[object]).await? {
                        failed += 1;
                    }
                    tokio::time::sleep(CHANGE_EVERY).await;
                }
                service
                    .truth
                    .write(Record {
                        key: "done".into(),
                        ..Record::default()
                    })
                    .await?;
                Ok::<_, String>((changes, failed))
            })
        });
        let workers: Vec<_> = (0..args.workers)
            .map(|w| {
                let service = Arc::clone(&service);
                let seed = 1000 * args.process as u64 + w as u64 + 2;
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed);
                    let mut reads = Reads::default();
                    let mut requests = 0u64;
                    while now_us() < deadline_us {
                        service.request(&mut rng, &mut reads).await;
                        requests += 1;
                        // A service's request rate, not a load test: a pause every 100.
                        if requests % 100 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    (requests, reads)
                })
            })
            .collect();
        let mut requests = 0;
        let mut reads = Vec::new();
        for worker in workers {
            let (count, worker_reads) = worker.await.map_err(|e| e.to_string())?;
            requests += count;
            reads.push(worker_reads);
        }
        let elapsed_us = now_us().saturating_sub(start_us);
        let (changes, invalidate_errors) = match changes {
            Some(task) => task.await.map_err(|e| e.to_string())??,
            None => (0, 0),
        };
        let near: Vec<NearStats> = ["instance", "organization"]
            .iter()
            .filter_map(|purpose| caches.near_stats(purpose))
            .collect();
        let loads = service.instances.stats().loads + service.orgs.stats().loads;
        let describe = |purpose: &str, connector: &str| {
            let near = caches.near_stats(purpose).map_or("", |_| " + near cache");
            format!("{purpose}: {connector}{near}")
        };
        let setup = format!(
            "{}, {}",
            describe("instance", service.instances.connector()),
            describe("organization", service.orgs.connector())
        );

        // Every invalidation time, from the truth, once the admin is done.
        service.truth.wait_for("done").await?;
        let mut history = Vec::new();
        for object in 0..OBJECTS {
            let record = service.truth.load(object).await?;
            history.extend(
                record
                    .invalidated
                    .iter()
                    .map(|&(rev, at)| (object, rev, at)),
            );
        }
        let outcome = outcome(&history, &reads);
        let sum = |field: fn(&NearStats) -> u64| near.iter().map(field).sum::<u64>();
        let mut channel: Vec<&str> = near.iter().map(|n| n.channel.name()).collect();
        channel.dedup();
        let not_found = service.not_found.load(Ordering::Relaxed);
        let failed = service.failed.load(Ordering::Relaxed);
        let delays: Vec<String> = outcome.delays_us.iter().map(u64::to_string).collect();
        println!(
            "NEAR_DEMO {{\"process\":{},\"role\":\"{}\",\"connector\":\"{}\",\"seconds\":{:.3},\
             \"requests\":{requests},\"memory_hits\":{},\"shared_hits\":{},\"misses\":{},\
             \"loads\":{loads},\"sent\":{},\"received\":{},\"channel\":\"{}\",\
             \"caches\":\"{setup}\",\"changes\":{changes},\
             \"invalidate_errors\":{invalidate_errors},\"not_found\":{not_found},\
             \"failed\":{failed},\"observed\":{},\
             \"zero_delays\":{},\"delays_us\":[{}],\"stale_reads\":{},\"stale_at_least\":{}}}",
            args.process,
            if admin { "admin" } else { "reader" },
            args.connector,
            elapsed_us as f64 / 1e6,
            sum(|n| n.memory_hits),
            sum(|n| n.shared_hits),
            sum(|n| n.misses),
            sum(|n| n.sent),
            sum(|n| n.received),
            channel.join("/"),
            outcome.observed,
            outcome.zero_delays,
            delays.join(","),
            outcome.stale_reads,
            outcome.stale_at_least,
        );
        drop(truth);
        caches.shutdown().await;
        Ok(outcome.stale_reads == 0 && failed == 0 && not_found == 0 && invalidate_errors == 0)
    }
}
