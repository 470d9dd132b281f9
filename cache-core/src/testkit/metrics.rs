//! A recorder of the `metrics` facade for tests: installed once per process, read without
//! resetting anything, queried by name and labels.
//!
//! Handles are registered when caches are made, so call [`install`] before making them. Tests
//! of one process share the recorder: give each test its own purpose and filter by it.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

struct Recording(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

static REGISTRY: OnceLock<Arc<Registry<Key, AtomicStorage>>> = OnceLock::new();

/// Installs the recording recorder as the process's recorder (once; later calls do nothing).
///
/// # Panics
///
/// When another recorder was installed first.
pub fn install() {
    REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::atomic());
        metrics::set_global_recorder(Recording(Arc::clone(&registry)))
            .expect("no other metrics recorder is installed in test processes");
        registry
    });
}

fn registry() -> &'static Registry<Key, AtomicStorage> {
    REGISTRY
        .get()
        .expect("call testkit::metrics::install() before making the caches")
}

/// Whether `key` is `name` with every one of `labels` (and possibly more).
fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The sum of the counters `name` carrying `labels`.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    registry()
        .get_counter_handles()
        .into_iter()
        .filter(|(key, _)| matches(key, name, labels))
        .map(|(_, value)| value.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// The value of the gauge `name` carrying `labels`, if one was registered (the first found
/// when several match).
pub fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    registry()
        .get_gauge_handles()
        .into_iter()
        .find(|(key, _)| matches(key, name, labels))
        .map(|(_, bits)| f64::from_bits(bits.load(std::sync::atomic::Ordering::Relaxed)))
}

/// Every value recorded in the histograms `name` carrying `labels`.
pub fn histogram(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    registry()
        .get_histogram_handles()
        .into_iter()
        .filter(|(key, _)| matches(key, name, labels))
        .flat_map(|(_, bucket)| bucket.data())
        .collect()
}
