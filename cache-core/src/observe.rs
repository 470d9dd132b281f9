//! What the caches report: metrics through the [`metrics`] facade (the application installs
//! the exporter it likes — Prometheus, OpenTelemetry, StatsD) and `tracing` spans around
//! every operation that leaves the process.
//!
//! Handles are registered when a cache, breaker, pruner or near cache is made: install the
//! recorder before building the caches (what a service does at startup anyway). Without a
//! recorder every update is a no-op handle's branch, so a memory hit costs what it did.
//!
//! The metrics, their labels and the spans are listed in the [crate documentation](crate#metrics).

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram, Unit};

use crate::ErrorKind;

/// `cache_gets_total`
pub const GETS: &str = "cache_gets_total";
/// `cache_sets_total`
pub const SETS: &str = "cache_sets_total";
/// `cache_invalidations_total`
pub const INVALIDATIONS: &str = "cache_invalidations_total";
/// `cache_errors_total`
pub const ERRORS: &str = "cache_errors_total";
/// `cache_operation_duration_seconds`
pub const OPERATION_DURATION: &str = "cache_operation_duration_seconds";
/// `cache_loads_total`
pub const LOADS: &str = "cache_loads_total";
/// `cache_load_duration_seconds`
pub const LOAD_DURATION: &str = "cache_load_duration_seconds";
/// `cache_stale_answers_total`
pub const STALE_ANSWERS: &str = "cache_stale_answers_total";
/// `cache_refreshes_total`
pub const REFRESHES: &str = "cache_refreshes_total";
/// `cache_leases_total`
pub const LEASES: &str = "cache_leases_total";
/// `cache_breaker_state`
pub const BREAKER_STATE: &str = "cache_breaker_state";
/// `cache_breaker_transitions_total`
pub const BREAKER_TRANSITIONS: &str = "cache_breaker_transitions_total";
/// `cache_breaker_rejected_total`
pub const BREAKER_REJECTED: &str = "cache_breaker_rejected_total";
/// `cache_breaker_kept_keys`
pub const BREAKER_KEPT_KEYS: &str = "cache_breaker_kept_keys";
/// `cache_breaker_kept_changes_total`
pub const BREAKER_KEPT_CHANGES: &str = "cache_breaker_kept_changes_total";
/// `cache_breaker_delivered_changes_total`
pub const BREAKER_DELIVERED_CHANGES: &str = "cache_breaker_delivered_changes_total";
/// `cache_prune_runs_total`
pub const PRUNE_RUNS: &str = "cache_prune_runs_total";
/// `cache_pruned_keys_total`
pub const PRUNED_KEYS: &str = "cache_pruned_keys_total";
/// `cache_prune_duration_seconds`
pub const PRUNE_DURATION: &str = "cache_prune_duration_seconds";
/// `cache_near_gets_total`
pub const NEAR_GETS: &str = "cache_near_gets_total";
/// `cache_near_messages_sent_total`
pub const NEAR_SENT: &str = "cache_near_messages_sent_total";
/// `cache_near_messages_received_total`
pub const NEAR_RECEIVED: &str = "cache_near_messages_received_total";
/// `cache_channel_healthy`
pub const CHANNEL_HEALTHY: &str = "cache_channel_healthy";
/// `cache_channel_outages_total`
pub const CHANNEL_OUTAGES: &str = "cache_channel_outages_total";
/// `cache_channel_send_failures_total`
pub const CHANNEL_SEND_FAILURES: &str = "cache_channel_send_failures_total";

/// Gives the installed recorder each metric's unit and help text. Called whenever caches are
/// made; call it again if the recorder is installed later.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        GETS,
        Unit::Count,
        "Gets answered, by outcome (hit, miss, error)."
    );
    describe_counter!(SETS, Unit::Count, "Objects set.");
    describe_counter!(
        INVALIDATIONS,
        Unit::Count,
        "Invalidations, deletes and truncates."
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "Failed cache operations, by operation and error kind."
    );
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of cache operations not answered at once."
    );
    describe_counter!(LOADS, Unit::Count, "Loads run by get_or_load, by outcome.");
    describe_histogram!(LOAD_DURATION, Unit::Seconds, "Duration of loads.");
    describe_counter!(
        STALE_ANSWERS,
        Unit::Count,
        "Failed loads answered with an expired object (stale-if-error)."
    );
    describe_counter!(
        REFRESHES,
        Unit::Count,
        "Background reloads of objects close to MaxAge."
    );
    describe_counter!(
        LEASES,
        Unit::Count,
        "Read-through leases, by event: taken, waited (another process held it), taken_over \
         (taken after waiting for its expiry), fill_refused (a change overtook the load)."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        Unit::Count,
        "Circuit breaker state changes."
    );
    describe_counter!(
        BREAKER_REJECTED,
        Unit::Count,
        "Calls refused by the circuit breaker."
    );
    describe_gauge!(
        BREAKER_KEPT_KEYS,
        Unit::Count,
        "Keys of changes kept for delivery."
    );
    describe_counter!(
        BREAKER_KEPT_CHANGES,
        Unit::Count,
        "Changes kept because the backend failed or the breaker was open."
    );
    describe_counter!(
        BREAKER_DELIVERED_CHANGES,
        Unit::Count,
        "Kept changes delivered once the backend was back."
    );
    describe_counter!(PRUNE_RUNS, Unit::Count, "Pruner runs, by outcome.");
    describe_counter!(PRUNED_KEYS, Unit::Count, "Keys removed by pruning.");
    describe_histogram!(PRUNE_DURATION, Unit::Seconds, "Duration of pruner runs.");
    describe_counter!(
        NEAR_GETS,
        Unit::Count,
        "Near cache gets by the level that answered them."
    );
    describe_counter!(
        NEAR_SENT,
        Unit::Count,
        "Changes announced to other processes."
    );
    describe_counter!(
        NEAR_RECEIVED,
        Unit::Count,
        "Changes of other processes applied."
    );
    describe_gauge!(
        CHANNEL_HEALTHY,
        "1 while near caches may answer from memory, else 0."
    );
    describe_counter!(
        CHANNEL_OUTAGES,
        Unit::Count,
        "Times the channel became unhealthy."
    );
    describe_counter!(
        CHANNEL_SEND_FAILURES,
        Unit::Count,
        "Announcements that failed and were retried."
    );
}

/// A counter of `name` for one object cache.
pub fn counter(name: &'static str, purpose: &str, connector: &'static str) -> Counter {
    metrics::counter!(name, "purpose" => purpose.to_owned(), "connector" => connector)
}

/// A counter of `name` for one object cache, with one more label.
pub fn counter_with(
    name: &'static str,
    purpose: &str,
    connector: &'static str,
    label: &'static str,
    value: &'static str,
) -> Counter {
    metrics::counter!(
        name,
        "purpose" => purpose.to_owned(),
        "connector" => connector,
        label => value
    )
}

/// A histogram of `name` for one object cache, with one more label when given.
pub fn histogram(
    name: &'static str,
    purpose: &str,
    connector: &'static str,
    label: Option<(&'static str, &'static str)>,
) -> Histogram {
    match label {
        Some((label, value)) => metrics::histogram!(
            name,
            "purpose" => purpose.to_owned(),
            "connector" => connector,
            label => value
        ),
        None => metrics::histogram!(
            name,
            "purpose" => purpose.to_owned(),
            "connector" => connector
        ),
    }
}

/// Counts a failed operation in `cache_errors_total` (registered on the error path: errors
/// are rare, and their kinds many).
pub fn error(purpose: &str, connector: &'static str, operation: &'static str, kind: ErrorKind) {
    metrics::counter!(
        ERRORS,
        "purpose" => purpose.to_owned(),
        "connector" => connector,
        "operation" => operation,
        "kind" => kind.name()
    )
    .increment(1);
}

/// The operations of an object cache that are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
    Invalidate,
    Delete,
    Truncate,
}

impl Op {
    const ALL: [Op; 5] = [Op::Get, Op::Set, Op::Invalidate, Op::Delete, Op::Truncate];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Invalidate => "invalidate",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }

    /// The span name OpenTelemetry shows.
    pub(crate) fn span_name(self) -> &'static str {
        match self {
            Op::Get => "cache.get",
            Op::Set => "cache.set",
            Op::Invalidate => "cache.invalidate",
            Op::Delete => "cache.delete",
            Op::Truncate => "cache.truncate",
        }
    }
}

/// The metric handles of one object cache on one connector (made again when it switches).
pub(crate) struct ObjectMetrics {
    pub(crate) purpose: Arc<str>,
    pub(crate) connector: &'static str,
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) get_errors: Counter,
    pub(crate) sets: Counter,
    pub(crate) invalidations: Counter,
    pub(crate) deletes: Counter,
    pub(crate) truncates: Counter,
    durations: [Histogram; Op::ALL.len()],
    pub(crate) loaded: Counter,
    pub(crate) absent: Counter,
    pub(crate) load_failures: Counter,
    pub(crate) load_duration: Histogram,
    pub(crate) stale_answers: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) leases_taken: Counter,
    pub(crate) lease_waits: Counter,
    pub(crate) lease_takeovers: Counter,
    pub(crate) refused_fills: Counter,
}

impl ObjectMetrics {
    pub(crate) fn new(purpose: Arc<str>, connector: &'static str) -> Self {
        describe();
        let p = &*purpose;
        let c = connector;
        ObjectMetrics {
            hits: counter_with(GETS, p, c, "outcome", "hit"),
            misses: counter_with(GETS, p, c, "outcome", "miss"),
            get_errors: counter_with(GETS, p, c, "outcome", "error"),
            sets: counter(SETS, p, c),
            invalidations: counter_with(INVALIDATIONS, p, c, "operation", "invalidate"),
            deletes: counter_with(INVALIDATIONS, p, c, "operation", "delete"),
            truncates: counter_with(INVALIDATIONS, p, c, "operation", "truncate"),
            durations: Op::ALL
                .map(|op| histogram(OPERATION_DURATION, p, c, Some(("operation", op.name())))),
            loaded: counter_with(LOADS, p, c, "outcome", "loaded"),
            absent: counter_with(LOADS, p, c, "outcome", "absent"),
            load_failures: counter_with(LOADS, p, c, "outcome", "failed"),
            load_duration: histogram(LOAD_DURATION, p, c, None),
            stale_answers: counter(STALE_ANSWERS, p, c),
            refreshes: counter(REFRESHES, p, c),
            leases_taken: counter_with(LEASES, p, c, "event", "taken"),
            lease_waits: counter_with(LEASES, p, c, "event", "waited"),
            lease_takeovers: counter_with(LEASES, p, c, "event", "taken_over"),
            refused_fills: counter_with(LEASES, p, c, "event", "fill_refused"),
            purpose,
            connector,
        }
    }

    pub(crate) fn record(&self, op: Op, took: Duration) {
        self.durations[op as usize].record(took);
    }

    pub(crate) fn error(&self, operation: &'static str, kind: ErrorKind) {
        error(&self.purpose, self.connector, operation, kind);
    }
}
