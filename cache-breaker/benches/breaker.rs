//! What the breaker costs per call: closed (permit + outcome under the lock) and open (the
//! lock-free reject), directly and through `BreakerCache::get`, next to a get on the no-op
//! cache (the floor of an async cache call) measured in the same run.
//!
//! `cargo bench -p cache-breaker --bench breaker`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_breaker::{Breaker, BreakerCache, BreakerState};
use cache_core::testkit::{TestEntry, TestIndex};
use cache_core::{BreakerSettings, Cache, NoopCache};
use criterion::{Criterion, criterion_group, criterion_main};

fn open_breaker() -> Arc<Breaker> {
    let breaker = Arc::new(Breaker::new(
        "bench",
        BreakerSettings {
            max_consecutive_failures: 1,
            timeout: Duration::from_secs(3600),
            ..BreakerSettings::default()
        },
    ));
    for _ in 0..2 {
        breaker.permit().expect("closed").failure();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    breaker
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("breaker");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));

    let closed = Breaker::new("bench", BreakerSettings::default());
    group.bench_function("closed/permit_and_success", |b| {
        b.iter(|| closed.permit().expect("closed").success())
    });
    let open = open_breaker();
    group.bench_function("open/permit_rejected", |b| {
        b.iter(|| assert!(open.permit().is_none()))
    });

    let noop: Arc<dyn Cache<TestIndex, TestEntry>> = Arc::new(NoopCache);
    let guarded_closed = BreakerCache::new(
        "bench",
        Arc::clone(&noop),
        Arc::new(Breaker::new("bench", BreakerSettings::default())),
    );
    let guarded_open = BreakerCache::new("bench", Arc::clone(&noop), open_breaker());
    let mut get = |name: &str, cache: &dyn Cache<TestIndex, TestEntry>| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let miss = cache.get(TestIndex::Id, "k").await.expect("no error");
                        assert!(miss.is_none());
                    }
                    started.elapsed()
                })
            })
        });
    };
    get("get/noop_floor", &*noop);
    get("get/breaker_closed", &guarded_closed);
    get("get/breaker_open", &guarded_open);
    group.finish();
}

criterion_group!(breaker_benches, benches);
criterion_main!(breaker_benches);
