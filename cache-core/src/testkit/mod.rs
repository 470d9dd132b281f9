//! The conformance suite every connector and decorator must pass (feature `testkit`).
//!
//! A connector crate implements [`Fixture`] once and stamps the whole suite into its tests
//! with one macro call:
//!
//! ```ignore
//! cache_core::conformance_suite!(my_fixture().await);
//! cache_core::model_test!(my_fixture().await);
//! ```
//!
//! Each case is a plain `async fn` over `&dyn Fixture`, documented with the rule it checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
}

/// A purpose name unique in this process run, e.g. `max_age-3f2a-7`, so cases on a shared
/// server never see each other's objects.
pub fn unique_purpose(case: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = std::process::id();
    format!("{case}-{run:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
