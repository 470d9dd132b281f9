//! The conformance suite every connector and decorator must pass (feature `testkit`).
//!
//! A connector crate implements [`Fixture`] once, writes an `async fn` that builds it
//! (returning `None`, after printing why, when its server is missing), and stamps the whole
//! suite and the model-based test into its tests with two lines:
//!
//! ```text
//! async fn fixture() -> Option<MyFixture> { ... }
//!
//! cache_core::conformance_suite!(fixture);
//! cache_core::model_test!(fixture);
//! ```
//!
//! That makes one `#[test]` per case in [`cases`] (module `conformance`) and one
//! `model_matches_reference` test ([`model::check`]). Each test runs on its own
//! multi-threaded Tokio runtime and builds its own fixture, so the connector crate needs no
//! async test framework.

pub mod cases;
mod channel;
pub mod leases;
pub mod load;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod releases;
pub mod scale;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use channel::LocalChannel;

use crate::{Cache, CacheSettings, Entry, Index};

/// The indices of the test object: `Id`, `Name`, and `Unused` (never built into a cache,
/// for the unknown-index case).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TestIndex {
    /// One key per object.
    Id,
    /// Any number of keys per object.
    Name,
    /// Not part of any cache the suite builds.
    Unused,
}

impl TestIndex {
    /// The indices the suite builds its caches with.
    pub const BUILT: &'static [TestIndex] = &[TestIndex::Id, TestIndex::Name];
}

impl Index for TestIndex {
    fn name(self) -> &'static str {
        match self {
            TestIndex::Id => "id",
            TestIndex::Name => "name",
            TestIndex::Unused => "unused",
        }
    }
}

/// The object the suite stores: an id, any number of names, and a revision that tells
/// versions of the same object apart.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TestEntry {
    /// The key under [`TestIndex::Id`].
    pub id: String,
    /// The keys under [`TestIndex::Name`].
    pub names: Vec<String>,
    /// Which version of the object this is.
    pub revision: u64,
}

impl TestEntry {
    /// An entry with `id`, `names` and revision 0.
    pub fn new(id: &str, names: &[&str]) -> Self {
        TestEntry {
            id: id.to_owned(),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            revision: 0,
        }
    }

    /// The same entry with another revision.
    pub fn revision(mut self, revision: u64) -> Self {
        self.revision = revision;
        self
    }
}

impl Entry<TestIndex> for TestEntry {
    fn keys(&self, index: TestIndex) -> Vec<String> {
        match index {
            TestIndex::Id => vec![self.id.clone()],
            TestIndex::Name => self.names.clone(),
            TestIndex::Unused => Vec::new(),
        }
    }
}

/// A [`TestEntry`] whose serialisation fails while `encodable` is false, as a value whose
/// `Serialize` implementation fails at runtime: for
/// [`failed_set_leaves_no_older_object`](cases::failed_set_leaves_no_older_object).
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
pub struct FragileEntry {
    /// The object.
    pub entry: TestEntry,
    /// Whether it can be encoded (never stored: decoded values read `false`).
    #[serde(skip)]
    pub encodable: bool,
}

impl Serialize for FragileEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.encodable {
            return Err(serde::ser::Error::custom("this value cannot be encoded"));
        }
        #[derive(Serialize)]
        struct Stored<'a> {
            entry: &'a TestEntry,
        }
        Stored { entry: &self.entry }.serialize(serializer)
    }
}

impl Entry<TestIndex> for FragileEntry {
    fn keys(&self, index: TestIndex) -> Vec<String> {
        self.entry.keys(index)
    }
}

/// The cache type every case works on.
pub type TestCache = Arc<dyn Cache<TestIndex, TestEntry>>;

/// What a connector provides to run the suite.
#[async_trait]
pub trait Fixture: Send + Sync + 'static {
    /// A new cache for `purpose` on this fixture's connector, built with `indices`.
    /// Caches made by one fixture share one connector (and one clock); different purposes
    /// must be isolated from each other. Purposes are unique per test run (see
    /// [`unique_purpose`]), so fixtures on shared servers need no clean-up between cases.
    async fn cache(
        &self,
        purpose: &str,
        indices: &[TestIndex],
        settings: &CacheSettings,
    ) -> TestCache;

    /// Lets `duration` pass as the caches see it: a manual clock's advance, or a real sleep
    /// for backends that keep time themselves (Redis TTLs).
    async fn advance(&self, duration: Duration);

    /// Whether this connector's caches must offer [`Cache::into_prune`] (memory, postgres).
    fn prunable(&self) -> bool;

    /// Whether [`advance`](Fixture::advance) moves the caches' clock exactly (a manual
    /// clock), so cases may check expiry to the millisecond. `false` when time passes for
    /// real (a server keeping its own TTLs): cases then use safe margins and the model test
    /// leaves expiry out.
    fn exact_time(&self) -> bool;
}

/// The fixture of a connector whose backend keeps time itself (Redis TTLs, a database
/// clock): [`advance`](Fixture::advance) sleeps for real and cases check expiry with margins.
/// `make` builds a cache on the connector under test.
///
/// ```text
/// let connector = RedisConnector::new(config, "test-v1")?;
/// RealTimeFixture::new(false, move |purpose, indices, settings| {
///     connector.cache(purpose, indices, settings) as TestCache
/// })
/// ```
pub struct RealTimeFixture<F> {
    make: F,
    prunable: bool,
}

impl<F> RealTimeFixture<F>
where
    F: Fn(&str, &[TestIndex], &CacheSettings) -> TestCache + Send + Sync + 'static,
{
    /// A fixture making caches with `make`; `prunable` says whether they must offer a prune.
    pub fn new(prunable: bool, make: F) -> Self {
        RealTimeFixture { make, prunable }
    }
}

#[async_trait]
impl<F> Fixture for RealTimeFixture<F>
where
    F: Fn(&str, &[TestIndex], &CacheSettings) -> TestCache + Send + Sync + 'static,
{
    async fn cache(
        &self,
        purpose: &str,
        indices: &[TestIndex],
        settings: &CacheSettings,
    ) -> TestCache {
        (self.make)(purpose, indices, settings)
    }

    async fn advance(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    fn prunable(&self) -> bool {
        self.prunable
    }

    fn exact_time(&self) -> bool {
        false
    }
}

/// A purpose name unique in this process run, e.g. `max_age-3f2a-7`, so cases on a shared
/// server never see each other's objects.
pub fn unique_purpose(case: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = std::process::id();
    format!("{case}-{run:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The smallest proof that a cache works end to end (a connection, credentials, an address
/// to check): sets an object under an id and a name, reads it back through the name,
/// invalidates it through the id, and finds it gone through the name. Panics on any error.
pub async fn round_trip(cache: &dyn crate::Cache<TestIndex, TestEntry>) {
    let entry = std::sync::Arc::new(TestEntry::new("1", &["one"]));
    cache.set(std::sync::Arc::clone(&entry)).await.unwrap();
    assert_eq!(
        cache.get(TestIndex::Name, "one").await.unwrap().as_deref(),
        Some(&*entry)
    );
    cache.invalidate(TestIndex::Id, &["1"]).await.unwrap();
    assert!(cache.get(TestIndex::Name, "one").await.unwrap().is_none());
}

/// The runtime each generated test runs on: 2 worker threads, I/O and time enabled.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime for the conformance suite")
}

/// The longest one conformance case may take before it fails as hung.
pub const CASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `case` to completion on a fresh runtime, failing it after [`CASE_TIMEOUT`]. Used by
/// [`conformance_suite!`](crate::conformance_suite).
pub fn run<Fut: Future<Output = ()>>(case: Fut) {
    runtime().block_on(async {
        if tokio::time::timeout(CASE_TIMEOUT, case).await.is_err() {
            panic!("the case did not finish within {CASE_TIMEOUT:?}");
        }
    });
}

/// Stamps one `#[test]` per conformance case into a `conformance` module.
///
/// `$make` names an `async fn() -> Option<F>` (or a closure returning such a future) with
/// `F: Fixture`; `None` skips the case. See the [module docs](crate::testkit).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::__conformance_cases!($make;
            set_then_get_through_every_index,
            unknown_key_misses,
            invalidate_hides_through_every_index,
            invalidate_skips_unknown_keys,
            delete_removes_one_mapping_only,
            set_invalidates_older_objects_sharing_a_key,
            set_replaces_the_previous_version,
            duplicate_keys_in_one_entry,
            max_age_expires,
            last_usage_expires_and_hits_renew_it,
            zero_durations_disable_expiry,
            max_stale_keeps_expired_objects_for_stale_reads_only,
            a_stale_read_never_renews_last_usage,
            prune_never_renews_last_usage,
            truncate_empties_only_this_cache,
            unknown_index_is_an_error,
            awkward_keys_never_collide,
            hostile_keys,
            purposes_are_isolated,
            large_values_round_trip,
            objects_with_many_keys_behave_like_small_ones,
            concurrent_operations_stay_consistent,
            no_stale_read_after_invalidate,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $case() {
                    $crate::testkit::run(async {
                        let Some(fixture) = ($make)().await else { return };
                        $crate::testkit::cases::$case(&fixture).await;
                    });
                }
            )*
        }
    };
}

/// Stamps the model-based test ([`model::check`]) as `model_matches_reference`.
///
/// `$make` is the same fixture builder [`conformance_suite!`](crate::conformance_suite) takes.
#[macro_export]
macro_rules! model_test {
    ($make:expr) => {
        #[test]
        fn model_matches_reference() {
            $crate::testkit::model::check($make);
        }
    };
}

/// The server address in the environment variable `var` (e.g. `CACHE_TEST_REDIS_URL`, set by
/// `cargo xtask test`). Without it, `None` after printing why the test is skipped — unless
/// `CACHE_TEST_REQUIRE_SERVERS=1`, which makes a missing server a failure.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CACHE_TEST_REQUIRE_SERVERS").as_deref() == Ok("1") => {
            panic!(
                "{var} is not set; run the tests with `cargo xtask test`, which starts the servers"
            )
        }
        Err(_) => {
            eprintln!("skipped: {var} is not set (run `cargo xtask test` to start the servers)");
            None
        }
    }
}
