//! Leases (SPEC 12) on a shared connector: what [`Cache::lease`](crate::Cache::lease) and
//! [`Cache::fill`](crate::Cache::fill) must do, case by case. A shared connector (and every
//! decorator over one) stamps them with [`leases_suite!`](crate::leases_suite) over the same
//! [`Fixture`] as the conformance suite.

use std::sync::Arc;
use std::time::Duration;

use crate::testkit::{Fixture, TestCache, TestEntry, TestIndex, unique_purpose};
use crate::{CacheSettings, Filled, Lease, LeaseSettings, LeaseToken};

use TestIndex::{Id, Name};

/// A cache of `f` with leases of `time`, objects kept until removed.
async fn cache(f: &dyn Fixture, case: &str, time: Duration) -> TestCache {
    let settings = CacheSettings {
        max_age: Duration::ZERO,
        last_usage: Duration::ZERO,
        lease: LeaseSettings {
            enabled: true,
            time,
        },
        ..CacheSettings::default()
    };
    f.cache(&unique_purpose(case), TestIndex::BUILT, &settings)
        .await
}

fn object(revision: u64) -> Arc<TestEntry> {
    Arc::new(TestEntry::new("1", &["one", "uno"]).revision(revision))
}

async fn lease(cache: &TestCache, index: TestIndex, key: &str) -> Lease<TestEntry> {
    cache
        .lease(index, key)
        .await
        .unwrap_or_else(|e| panic!("lease({index:?}, {key:?}) failed: {e}"))
}

async fn granted(cache: &TestCache, index: TestIndex, key: &str) -> LeaseToken {
    match lease(cache, index, key).await {
        Lease::Granted(token) => token,
        other => panic!("a miss of {key:?} must be leased, got {other:?}"),
    }
}

async fn fill(cache: &TestCache, value: Arc<TestEntry>, token: &LeaseToken) -> Filled {
    cache
        .fill(value, token)
        .await
        .unwrap_or_else(|e| panic!("fill failed: {e}"))
}

/// A miss leases the key; a second ask finds it held; the holder's fill is stored, and the
/// next ask is a hit.
pub async fn a_miss_is_leased_once_and_the_fill_is_stored(f: &dyn Fixture) {
    let c = cache(f, "lease_once", Duration::from_secs(5)).await;
    let token = granted(&c, Id, "1").await;
    match lease(&c, Id, "1").await {
        Lease::Held(left) => assert!(
            left > Duration::ZERO && left <= Duration::from_secs(5),
            "held for {left:?}"
        ),
        other => panic!("a second ask must find the lease held, got {other:?}"),
    }
    assert_eq!(fill(&c, object(1), &token).await, Filled::Stored);
    assert_eq!(c.get(Name, "uno").await.unwrap(), Some(object(1)));
    match lease(&c, Name, "one").await {
        Lease::Hit(hit) => assert_eq!(hit.value, object(1)),
        other => panic!("a filled key is a hit, got {other:?}"),
    }
}

/// Every change of any key of the object between the lease and the fill refuses the fill:
/// an invalidation through the leased key or another of the object's keys, a delete, a set,
/// a truncate. The caller's fill arrives late (as a fill that timed out on the client would).
pub async fn a_change_after_the_lease_refuses_the_fill(f: &dyn Fixture) {
    let c = cache(f, "lease_overtaken", Duration::from_secs(5)).await;
    type Change = fn(&TestCache) -> Boxed<'_>;
    let changes: [(&str, Change); 5] = [
        ("invalidate through the leased key", |c| {
            Box::pin(async move { c.invalidate(Id, &["1"]).await.unwrap() })
        }),
        ("invalidate through another key of the object", |c| {
            Box::pin(async move { c.invalidate(Name, &["uno"]).await.unwrap() })
        }),
        ("delete of another key of the object", |c| {
            Box::pin(async move { c.delete(Name, &["one"]).await.unwrap() })
        }),
        ("a set of the object", |c| {
            Box::pin(async move { c.set(object(7)).await.unwrap() })
        }),
        ("a truncate", |c| {
            Box::pin(async move { c.truncate().await.unwrap() })
        }),
    ];
    for (what, change) in changes {
        c.truncate().await.unwrap();
        let token = granted(&c, Id, "1").await;
        change(&c).await;
        assert_eq!(
            fill(&c, object(2), &token).await,
            Filled::Refused,
            "a fill after {what} must be refused"
        );
        if let Some(found) = c.get(Id, "1").await.unwrap() {
            assert_ne!(
                found.revision, 2,
                "after {what}, the refused fill is served"
            );
        }
    }
}

/// A refused fill ends its lease: the next miss is leased at once (and loads the object
/// again), not told to wait for a fill that will never come until the lease expires.
pub async fn a_refused_fill_ends_its_lease(f: &dyn Fixture) {
    let c = cache(f, "lease_refused", Duration::from_secs(5)).await;
    let token = granted(&c, Id, "1").await;
    // A change of another key of the object: it ends that key's lease only.
    c.invalidate(Name, &["uno"]).await.unwrap();
    assert_eq!(fill(&c, object(1), &token).await, Filled::Refused);
    match lease(&c, Id, "1").await {
        Lease::Granted(next) => assert_ne!(next.token, token.token),
        other => panic!("after a refused fill the key must be leased again, got {other:?}"),
    }
}

/// A lease whose load found nothing or failed is released: the next miss leases the key at
/// once. A release with another token (a lease since taken over, or never this one's) ends
/// nothing.
pub async fn a_released_lease_is_leased_again_at_once(f: &dyn Fixture) {
    let c = cache(f, "lease_release", Duration::from_secs(5)).await;
    let first = granted(&c, Id, "1").await;
    let stranger = LeaseToken {
        token: "00000000deadbeef".to_owned(),
        ..first.clone()
    };
    c.release(&stranger).await.unwrap();
    assert!(
        matches!(lease(&c, Id, "1").await, Lease::Held(_)),
        "a release with another token must end nothing"
    );
    c.release(&first).await.unwrap();
    let second = granted(&c, Id, "1").await;
    assert_ne!(second.token, first.token);
    // The first holder's release once more (a retry): the new lease stays.
    c.release(&first).await.unwrap();
    assert!(
        matches!(lease(&c, Id, "1").await, Lease::Held(_)),
        "a late release must not end the lease that followed"
    );
    assert_eq!(fill(&c, object(1), &second).await, Filled::Stored);
    assert_eq!(c.get(Name, "one").await.unwrap(), Some(object(1)));
}

/// A lease expires: another ask takes it over, and the first holder's late fill is refused.
pub async fn an_expired_lease_is_taken_over_and_its_late_fill_refused(f: &dyn Fixture) {
    let time = Duration::from_millis(300);
    let c = cache(f, "lease_expiry", time).await;
    let first = granted(&c, Id, "1").await;
    tokio::time::sleep(time + Duration::from_millis(200)).await;
    let second = granted(&c, Id, "1").await;
    assert_ne!(first.token, second.token);
    assert_eq!(
        fill(&c, object(1), &first).await,
        Filled::Refused,
        "the late fill of a lease taken over"
    );
    assert_eq!(fill(&c, object(2), &second).await, Filled::Stored);
    assert_eq!(c.get(Id, "1").await.unwrap(), Some(object(2)));
}

/// A plain set stores whatever leases there are, and ends them.
pub async fn a_plain_set_stores_and_ends_the_leases(f: &dyn Fixture) {
    let c = cache(f, "lease_set", Duration::from_secs(5)).await;
    let token = granted(&c, Name, "one").await;
    c.set(object(3)).await.unwrap();
    assert_eq!(c.get(Name, "one").await.unwrap(), Some(object(3)));
    assert_eq!(fill(&c, object(4), &token).await, Filled::Refused);
    assert_eq!(c.get(Id, "1").await.unwrap(), Some(object(3)));
}

/// With leases off, a miss takes none.
pub async fn without_leases_a_miss_takes_none(f: &dyn Fixture) {
    let settings = CacheSettings {
        lease: LeaseSettings {
            enabled: false,
            ..LeaseSettings::default()
        },
        ..CacheSettings::default()
    };
    let c = f
        .cache(&unique_purpose("lease_off"), TestIndex::BUILT, &settings)
        .await;
    assert!(matches!(lease(&c, Id, "1").await, Lease::None));
}

/// A boxed future, for the table of changes.
type Boxed<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Stamps one `#[test]` per lease case into a `leases` module, over the same fixture builder
/// as [`conformance_suite!`](crate::conformance_suite).
#[macro_export]
macro_rules! leases_suite {
    ($make:expr) => {
        mod leases {
            #[allow(unused_imports)]
            use super::*;
            $crate::__leases_cases!($make;
                a_miss_is_leased_once_and_the_fill_is_stored,
                a_change_after_the_lease_refuses_the_fill,
                a_refused_fill_ends_its_lease,
                a_released_lease_is_leased_again_at_once,
                an_expired_lease_is_taken_over_and_its_late_fill_refused,
                a_plain_set_stores_and_ends_the_leases,
                without_leases_a_miss_takes_none,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __leases_cases {
    ($make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testkit::run(async {
                    let Some(fixture) = ($make)().await else { return };
                    $crate::testkit::leases::$case(&fixture).await;
                });
            }
        )*
    };
}
