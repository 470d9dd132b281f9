//! Releases side by side (SPEC 8): two releases of a service, each with its own version
//! string, sharing one backend during a rolling deploy. Each reads and writes its own objects
//! (a hit never decodes the other's), both keep hitting, and every change through any key
//! reaches the objects of both.
//!
//! A shared connector implements [`Releases`] (caches of one purpose for a version) and stamps
//! the cases with [`releases_suite!`](crate::releases_suite).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::CacheSettings;
use crate::testkit::{TestCache, TestEntry, TestIndex, unique_purpose};

use TestIndex::{Id, Name};

/// Caches of one backend for different releases.
#[async_trait]
pub trait Releases: Send + Sync {
    /// The cache `purpose` as the release with `version` builds it.
    async fn cache(&self, version: &str, purpose: &str, settings: &CacheSettings) -> TestCache;
}

/// [`Releases`] made by a closure `(version, purpose, settings) -> cache`.
pub struct MakeReleases<F>(pub F);

#[async_trait]
impl<F> Releases for MakeReleases<F>
where
    F: Fn(&str, &str, &CacheSettings) -> TestCache + Send + Sync,
{
    async fn cache(&self, version: &str, purpose: &str, settings: &CacheSettings) -> TestCache {
        (self.0)(version, purpose, settings)
    }
}

/// The caches `purpose` of releases `v1` and `v2`, objects kept until removed.
async fn pair(f: &dyn Releases, case: &str) -> (TestCache, TestCache) {
    let purpose = unique_purpose(case);
    let settings = CacheSettings {
        max_age: Duration::ZERO,
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    };
    (
        f.cache("v1", &purpose, &settings).await,
        f.cache("v2", &purpose, &settings).await,
    )
}

async fn get(cache: &TestCache, index: TestIndex, key: &str) -> Option<Arc<TestEntry>> {
    cache
        .get(index, key)
        .await
        .unwrap_or_else(|e| panic!("get({index:?}, {key:?}) failed: {e}"))
}

async fn set(cache: &TestCache, entry: &TestEntry) {
    cache
        .set(Arc::new(entry.clone()))
        .await
        .unwrap_or_else(|e| panic!("set({entry:?}) failed: {e}"));
}

/// Each release reads its own objects: a release never finds the other's object (it would
/// have to decode another shape), and a set by one leaves the other's copy of the same object
/// (same keys) in place — both keep hitting.
pub async fn each_release_keeps_its_own_objects(f: &dyn Releases) {
    let (a, b) = pair(f, "releases_own").await;
    let v1 = TestEntry::new("1", &["one", "uno"]).revision(1);
    set(&a, &v1).await;
    assert!(
        get(&b, Id, "1").await.is_none(),
        "release v2 found release v1's object: it must never decode another release's"
    );
    let v2 = TestEntry::new("1", &["one", "uno"]).revision(2);
    set(&b, &v2).await;
    assert_eq!(
        get(&a, Name, "uno").await.as_deref(),
        Some(&v1),
        "release v2's set of the same object evicted release v1's copy"
    );
    assert_eq!(get(&b, Name, "one").await.as_deref(), Some(&v2));
    // And back: v1 setting it again leaves v2's.
    set(&a, &v1).await;
    assert_eq!(get(&b, Id, "1").await.as_deref(), Some(&v2));
}

/// An invalidation through any key, by either release, removes both releases' objects
/// through every key; a delete reaches both releases' mappings; truncate empties both.
pub async fn changes_reach_every_release(f: &dyn Releases) {
    let (a, b) = pair(f, "releases_changes").await;
    let object = TestEntry::new("1", &["one", "uno"]);
    set(&a, &object).await;
    set(&b, &object).await;
    b.invalidate(Name, &["uno"]).await.expect("invalidate");
    for (cache, release) in [(&a, "v1"), (&b, "v2")] {
        for (index, key) in [(Id, "1"), (Name, "one"), (Name, "uno")] {
            assert!(
                get(cache, index, key).await.is_none(),
                "release v2's invalidation left release {release}'s object behind {key:?}"
            );
        }
    }
    set(&a, &object).await;
    set(&b, &object).await;
    a.delete(Name, &["one"]).await.expect("delete");
    for cache in [&a, &b] {
        assert!(
            get(cache, Name, "one").await.is_none(),
            "a delete in one release only"
        );
        assert!(
            get(cache, Name, "uno").await.is_some(),
            "a delete took the object"
        );
    }
    a.truncate().await.expect("truncate");
    assert!(
        get(&b, Id, "1").await.is_none(),
        "a truncate in one release only"
    );
}

/// A set removes the objects it makes ghosts of in every release: another release's object
/// holding one of its keys but other keys (the key moved to another object) goes entirely.
pub async fn a_set_removes_ghosts_in_every_release(f: &dyn Releases) {
    let (a, b) = pair(f, "releases_ghosts").await;
    set(&a, &TestEntry::new("old", &["shared", "old-only"])).await;
    set(&b, &TestEntry::new("new", &["shared"])).await;
    for (index, key) in [(Id, "old"), (Name, "shared"), (Name, "old-only")] {
        assert!(
            get(&a, index, key).await.is_none(),
            "release v1's object that lost {key:?} to another object stayed reachable"
        );
    }
}

/// The same for an object with thousands of keys (stored once by a shared backend): release
/// v1's copy survives release v2's set of the same object, and an invalidation by v2 through
/// one key removes v1's through all of them.
pub async fn objects_with_many_keys_cross_releases(f: &dyn Releases) {
    let (a, b) = pair(f, "releases_many").await;
    let names: Vec<String> = (0..2_000).map(|i| format!("d{i}.example.com")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let object = TestEntry::new("big", &names);
    set(&a, &object).await;
    set(&b, &object).await;
    assert!(get(&a, Name, names[1_999]).await.is_some());
    b.invalidate(Name, &[names[5]]).await.expect("invalidate");
    for key in [names[0], names[1_999]] {
        assert!(
            get(&a, Name, key).await.is_none(),
            "v1's copy outlived v2's invalidation"
        );
        assert!(get(&b, Name, key).await.is_none());
    }
}

/// What a rolling deploy costs the caches: hits and loads of each release.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Deploy {
    /// Hits per get of each release (the first: the release alone).
    pub hit_ratio: f64,
    /// Gets.
    pub gets: u64,
    /// Loads the misses caused (each followed by a set).
    pub loads: u64,
}

/// One release (or two, alternating) reading and writing `objects` objects for `run`, after
/// each has read every object once: a get, and on a miss a load (the object built again) and
/// a set; every tenth round each release also sets the object it read (a write-through).
/// Returns what each release saw.
pub async fn deploy(caches: &[&TestCache], objects: u64, run: Duration) -> Vec<Deploy> {
    let object = |i: u64| TestEntry::new(&format!("org-{i}"), &[&format!("org-{i}.example")]);
    let mut seen = vec![Deploy::default(); caches.len()];
    for cache in caches {
        for i in 0..objects {
            if get(cache, Id, &format!("org-{i}")).await.is_none() {
                set(cache, &object(i)).await;
            }
        }
    }
    let started = Instant::now();
    let mut n = 0u64;
    let mut hits = vec![0u64; caches.len()];
    while started.elapsed() < run {
        for (r, cache) in caches.iter().enumerate() {
            let i = (n.wrapping_mul(7_919)) % objects;
            seen[r].gets += 1;
            if get(cache, Id, &format!("org-{i}")).await.is_some() {
                hits[r] += 1;
                if n % 10 == 0 {
                    set(cache, &object(i)).await;
                }
            } else {
                seen[r].loads += 1;
                set(cache, &object(i)).await;
            }
        }
        n += 1;
    }
    for (r, s) in seen.iter_mut().enumerate() {
        s.hit_ratio = hits[r] as f64 / s.gets.max(1) as f64;
    }
    seen
}

/// During a rolling deploy both releases hit as often as one release alone (within 1 %):
/// two releases reading and writing the same keys alternately never evict each other.
pub async fn a_rolling_deploy_keeps_both_releases_hitting(f: &dyn Releases) {
    const OBJECTS: u64 = 200;
    const RUN: Duration = Duration::from_secs(2);
    let settings = CacheSettings::default();
    let alone = f
        .cache("v1", &unique_purpose("deploy_alone"), &settings)
        .await;
    let alone = deploy(&[&alone], OBJECTS, RUN).await[0];
    let purpose = unique_purpose("deploy");
    let a = f.cache("v1", &purpose, &settings).await;
    let b = f.cache("v2", &purpose, &settings).await;
    let both = deploy(&[&a, &b], OBJECTS, RUN).await;
    for (release, seen) in ["v1", "v2"].iter().zip(&both) {
        assert!(
            seen.hit_ratio >= alone.hit_ratio - 0.01,
            "release {release} hit {:.1} % of {} gets ({} loads) beside the other release, \
             against {:.1} % alone",
            seen.hit_ratio * 100.0,
            seen.gets,
            seen.loads,
            alone.hit_ratio * 100.0
        );
    }
}

/// Stamps one `#[test]` per release case into a `releases` module. `$make` names an
/// `async fn() -> Option<R>` with `R: Releases`; `None` skips the case.
#[macro_export]
macro_rules! releases_suite {
    ($make:expr) => {
        mod releases {
            #[allow(unused_imports)]
            use super::*;
            $crate::__releases_cases!($make;
                each_release_keeps_its_own_objects,
                changes_reach_every_release,
                a_set_removes_ghosts_in_every_release,
                objects_with_many_keys_cross_releases,
                a_rolling_deploy_keeps_both_releases_hitting,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __releases_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::run(async {
                    let Some(fixture) = ($make)().await else { return };
                    $crate::testkit::releases::$case(&fixture).await;
                });
            }
        )*
    };
}
