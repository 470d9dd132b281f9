//! Hit and set cost of the memory connector through the public `ObjectCache` API, against raw
//! `quick_cache` and `moka` holding the same values under the same keys (each object under its
//! id and its domain, as our cache with two indices holds it), in the same run.
//!
//! `cargo bench -p cache-memory --bench hit`. Groups, each at 64 and 10 000 objects:
//! - `get_hit/<objects>`: one hit on a random cached object, single thread;
//! - `get_hit_2_threads/<objects>`: 2 threads hitting concurrently (per-get time reported);
//! - `set/<objects>`: storing one of those objects again (our set also invalidates the
//!   previous version).
//!
//! `quick_cache_shared_record` is raw quick_cache holding what every key of an object must
//! share (a record with the value and its state, behind a reference count): the floor for a
//! hit of any cache on quick_cache that answers with an `Arc<V>` and keeps per-object state.
//!
//! Keys are built before the measurement, so the figures are the lookups alone. Our `get` is
//! `async`; it is polled once with a no-op waker, which is the work an executor does for it
//! (the memory connector answers on the first poll, without awaiting). At the end the bench
//! prints each figure as a ratio to raw quick_cache's in the same run (the goal: a hit at most
//! 1.5x).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use cache_core::{Cache, CacheSettings, Entry, Index, ObjectCache};
use cache_memory::{MemoryCache, MemoryConfig, MemoryConnector};
use criterion::Criterion;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};

/// The cache sizes measured: everything in the CPU cache, and more than fits in L2.
const SIZES: [usize; 2] = [64, 10_000];

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum OrgIndex {
    Id,
    Domain,
}

impl Index for OrgIndex {
    fn name(self) -> &'static str {
        match self {
            OrgIndex::Id => "id",
            OrgIndex::Domain => "domain",
        }
    }
}

#[derive(Clone, Debug)]
struct Org {
    id: String,
    domain: String,
    /// Makes the value a realistic size; never read.
    _name: String,
}

impl Entry<OrgIndex> for Org {
    fn keys(&self, index: OrgIndex) -> Vec<String> {
        match index {
            OrgIndex::Id => vec![self.id.clone()],
            OrgIndex::Domain => vec![self.domain.clone()],
        }
    }
}

fn orgs(objects: usize) -> Vec<Arc<Org>> {
    (0..objects)
        .map(|i| {
            Arc::new(Org {
                id: format!("3074539{i:06}"),
                domain: format!("org-{i}.acme.example"),
                _name: format!("Organization {i}"),
            })
        })
        .collect()
}

/// Random lookup order over all ids, the same for every contender.
fn lookups(orgs: &[Arc<Org>]) -> Vec<String> {
    let mut ids: Vec<String> = orgs.iter().map(|o| o.id.clone()).collect();
    ids.shuffle(&mut StdRng::seed_from_u64(7));
    ids
}

/// Polls a future that must be ready at once, as an executor's first poll would.
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the memory connector must answer without awaiting"),
    }
}

/// What any cache built on quick_cache keeps per object when all of an object's keys share
/// its state (an invalid flag here; ours adds the times): the map holds a reference-counted
/// record, so a hit clones the record, clones the value out of it and drops the record.
struct Shared {
    value: Arc<Org>,
    invalid: AtomicBool,
}

struct Contenders {
    ours: ObjectCache<OrgIndex, Org>,
    /// The same memory cache without the `ObjectCache` layer, to attribute the cost.
    direct: Arc<MemoryCache<OrgIndex, Org>>,
    quick: quick_cache::sync::Cache<String, Arc<Org>>,
    /// Raw quick_cache holding a shared per-object record: the floor of any design on
    /// quick_cache whose hit returns an `Arc<V>` and whose keys share an object's state.
    quick_shared: quick_cache::sync::Cache<String, Arc<Shared>>,
    moka: moka::sync::Cache<String, Arc<Org>>,
}

fn contenders(orgs: &[Arc<Org>]) -> Contenders {
    // Room for both keys of every object, so nothing is evicted.
    let capacity = 4 * orgs.len() as u64;
    let connector = MemoryConnector::new(MemoryConfig::enabled().with_capacity(capacity));
    let settings = CacheSettings::default();
    let direct = connector.cache::<OrgIndex, Org>(
        "organization",
        &[OrgIndex::Id, OrgIndex::Domain],
        &settings,
    );
    let ours = ObjectCache::new("organization", direct.clone());
    let quick = quick_cache::sync::Cache::new(capacity as usize);
    let quick_shared = quick_cache::sync::Cache::new(capacity as usize);
    let moka = moka::sync::Cache::new(capacity);
    for org in orgs {
        ready(ours.set(Arc::clone(org)));
        // The same keys as our cache holds: the id and the domain of every object.
        let shared = Arc::new(Shared {
            value: Arc::clone(org),
            invalid: AtomicBool::new(false),
        });
        for key in [&org.id, &org.domain] {
            quick_shared.insert(key.clone(), Arc::clone(&shared));
            quick.insert(key.clone(), Arc::clone(org));
            moka.insert(key.clone(), Arc::clone(org));
        }
    }
    Contenders {
        ours,
        direct,
        quick,
        quick_shared,
        moka,
    }
}

fn get_hit(c: &mut Criterion) {
    for objects in SIZES {
        let orgs = orgs(objects);
        let keys = lookups(&orgs);
        let all = contenders(&orgs);
        let mut group = c.benchmark_group(format!("get_hit/{objects}"));
        let mut i = 0;
        let mut next = move || {
            i = (i + 1) % objects;
            i
        };
        group.bench_function("object_cache", |b| {
            b.iter(|| ready(all.ours.get(OrgIndex::Id, black_box(&keys[next()]))).expect("hit"))
        });
        group.bench_function("memory_cache_direct", |b| {
            b.iter(|| {
                all.direct
                    .get_ready(OrgIndex::Id, black_box(&keys[next()]))
                    .expect("ready")
                    .expect("no error")
                    .expect("hit")
            })
        });
        let dynamic: Arc<dyn Cache<OrgIndex, Org>> = all.direct.clone();
        group.bench_function("memory_cache_dyn", |b| {
            b.iter(|| {
                dynamic
                    .get_ready(OrgIndex::Id, black_box(&keys[next()]))
                    .expect("ready")
                    .expect("no error")
                    .expect("hit")
            })
        });
        group.bench_function("quick_cache", |b| {
            b.iter(|| {
                all.quick
                    .get(black_box(keys[next()].as_str()))
                    .expect("hit")
            })
        });
        group.bench_function("quick_cache_shared_record", |b| {
            b.iter(|| {
                let shared = all
                    .quick_shared
                    .get(black_box(keys[next()].as_str()))
                    .expect("hit");
                (!shared.invalid.load(Ordering::Acquire)).then(|| Arc::clone(&shared.value))
            })
        });
        group.bench_function("moka", |b| {
            b.iter(|| all.moka.get(black_box(keys[next()].as_str())).expect("hit"))
        });
        group.finish();
    }
}

fn set(c: &mut Criterion) {
    for objects in SIZES {
        let orgs = orgs(objects);
        let all = contenders(&orgs);
        let mut group = c.benchmark_group(format!("set/{objects}"));
        let mut i = 0;
        let mut next = move || {
            i = (i + 1) % objects;
            i
        };
        group.bench_function("object_cache", |b| {
            b.iter(|| ready(all.ours.set(Arc::clone(&orgs[next()]))))
        });
        group.bench_function("quick_cache", |b| {
            b.iter(|| {
                let org = &orgs[next()];
                all.quick.insert(org.id.clone(), Arc::clone(org));
                all.quick.insert(org.domain.clone(), Arc::clone(org))
            })
        });
        group.bench_function("moka", |b| {
            b.iter(|| {
                let org = &orgs[next()];
                all.moka.insert(org.id.clone(), Arc::clone(org));
                all.moka.insert(org.domain.clone(), Arc::clone(org))
            })
        });
        group.finish();
    }
}

/// Runs `get` on 2 threads, `iters` calls in all; the time reported is per call, so a lower
/// figure is a higher throughput.
fn on_two_threads(iters: u64, keys: &[String], get: impl Fn(&str) + Sync) -> Duration {
    let per_thread = iters.div_ceil(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let get = &get;
            s.spawn(move || {
                let offset = (t as usize) * keys.len() / 2;
                for n in 0..per_thread {
                    get(&keys[(offset + n as usize) % keys.len()]);
                }
            });
        }
    });
    start.elapsed()
}

fn get_hit_2_threads(c: &mut Criterion) {
    for objects in SIZES {
        let orgs = orgs(objects);
        let keys = lookups(&orgs);
        let all = contenders(&orgs);
        let mut group = c.benchmark_group(format!("get_hit_2_threads/{objects}"));
        group.bench_function("object_cache", |b| {
            b.iter_custom(|iters| {
                on_two_threads(iters, &keys, |k| {
                    black_box(ready(all.ours.get(OrgIndex::Id, k)).expect("hit"));
                })
            })
        });
        group.bench_function("quick_cache", |b| {
            b.iter_custom(|iters| {
                on_two_threads(iters, &keys, |k| {
                    black_box(all.quick.get(k).expect("hit"));
                })
            })
        });
        group.bench_function("moka", |b| {
            b.iter_custom(|iters| {
                on_two_threads(iters, &keys, |k| {
                    black_box(all.moka.get(k).expect("hit"));
                })
            })
        });
        group.finish();
    }
}

/// Prints every contender's time as a ratio to raw quick_cache's in the same run.
fn print_ratios() {
    let mut rows = Vec::new();
    for kind in ["get_hit", "get_hit_2_threads", "set"] {
        for objects in SIZES {
            for function in [
                "object_cache",
                "memory_cache_direct",
                "memory_cache_dyn",
                "quick_cache_shared_record",
                "moka",
            ] {
                rows.push((format!("{kind}/{objects}"), function, "quick_cache"));
            }
        }
    }
    cache_core::testkit::load::print_ratios(
        "time per operation against raw quick_cache (goal for object_cache hits: at most 1.5x)",
        &rows,
    );
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn main() {
    let mut criterion = config().configure_from_args();
    get_hit(&mut criterion);
    get_hit_2_threads(&mut criterion);
    set(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
