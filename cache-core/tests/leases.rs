//! How `ObjectCache::get_or_load` uses a shared level's leases (SPEC 12), over an in-test cache
//! whose first answers to `lease` each test scripts (then it answers as a shared level would:
//! a hit once filled, held until the other process's lease ends, then granted): another
//! process's fill waited for instead of a load, an expired lease taken over, a lease a change
//! ended taken at once, a refused fill counted (and its value still returned), a lease error
//! never failing the caller, the lease of a load that found nothing or failed released. (The connectors' own leases are tested on real
//! servers: the lease cases of the conformance suite and `cache-near/tests/leases.rs`.)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{
    Cache, Entry, Error, ErrorKind, Filled, Index, Lease, LeaseToken, ObjectCache, Result,
    async_trait,
};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct ById;

impl Index for ById {
    fn name(self) -> &'static str {
        "id"
    }
}

#[derive(Debug, PartialEq)]
struct User {
    id: String,
    revision: u32,
}

impl Entry<ById> for User {
    fn keys(&self, _: ById) -> Vec<String> {
        vec![self.id.clone()]
    }
}

/// What the double's `lease` answers next.
enum Answer {
    Granted,
    /// Another process holds the lease for this long (from then on the double answers as
    /// that lease dictates).
    Held(Duration),
    Hit(u32),
    Fails,
}

/// A shared level that keeps objects in a map and answers `lease` as scripted.
#[derive(Default)]
struct Leasing {
    objects: Mutex<HashMap<String, Arc<User>>>,
    answers: Mutex<VecDeque<Answer>>,
    /// What `fill` answers (`None`: stores).
    refuse: Mutex<bool>,
    sets: AtomicUsize,
    fills: AtomicUsize,
    /// The leases released (their keys).
    released: Mutex<Vec<String>>,
    /// How long an invalidation takes.
    change_time: Mutex<Duration>,
    /// How fills and releases fail, when they do.
    fails: Mutex<Option<ErrorKind>>,
    /// Until when another process holds the lease (Tokio time).
    held_until: Mutex<Option<tokio::time::Instant>>,
}

#[async_trait]
impl Cache<ById, User> for Leasing {
    fn connector(&self) -> &'static str {
        "leasing"
    }
    fn indices(&self) -> &[ById] {
        &[ById]
    }
    async fn get(&self, _: ById, key: &str) -> Result<Option<Arc<User>>> {
        Ok(self.objects.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, value: Arc<User>) -> Result<()> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        self.objects.lock().unwrap().insert(value.id.clone(), value);
        Ok(())
    }
    async fn lease(&self, index: ById, key: &str) -> Result<Lease<User>> {
        let granted = || {
            Lease::Granted(LeaseToken {
                index: index.name(),
                key: key.to_owned(),
                token: "t".to_owned(),
            })
        };
        let answer = self.answers.lock().unwrap().pop_front();
        let now = tokio::time::Instant::now();
        match answer {
            Some(Answer::Granted) => Ok(granted()),
            Some(Answer::Held(left)) => {
                *self.held_until.lock().unwrap() = Some(now + left);
                Ok(Lease::Held(left))
            }
            Some(Answer::Hit(revision)) => Ok(Lease::Hit(cache_core::Hit {
                value: Arc::new(User {
                    id: key.to_owned(),
                    revision,
                }),
                age: None,
            })),
            Some(Answer::Fails) => Err(Error::unavailable("down")),
            // As a shared level: the fill, else the other process's lease until it ends.
            None => {
                if let Some(found) = self.objects.lock().unwrap().get(key) {
                    return Ok(Lease::Hit(cache_core::Hit {
                        value: Arc::clone(found),
                        age: None,
                    }));
                }
                let mut held = self.held_until.lock().unwrap();
                match *held {
                    Some(until) if now < until => Ok(Lease::Held(until - now)),
                    Some(_) => {
                        *held = None;
                        Ok(granted())
                    }
                    None => Ok(Lease::None),
                }
            }
        }
    }
    async fn fill(&self, value: Arc<User>, lease: &LeaseToken) -> Result<Filled> {
        assert_eq!(lease.token, "t");
        self.fills.fetch_add(1, Ordering::SeqCst);
        if let Some(kind) = *self.fails.lock().unwrap() {
            return Err(Error::new(kind, "the fill failed"));
        }
        if *self.refuse.lock().unwrap() {
            return Ok(Filled::Refused);
        }
        self.objects.lock().unwrap().insert(value.id.clone(), value);
        Ok(Filled::Stored)
    }
    async fn release(&self, lease: &LeaseToken) -> Result<()> {
        assert_eq!(lease.token, "t");
        self.released.lock().unwrap().push(lease.key.clone());
        match *self.fails.lock().unwrap() {
            Some(kind) => Err(Error::new(kind, "the release failed")),
            None => Ok(()),
        }
    }
    async fn invalidate(&self, _: ById, keys: &[&str]) -> Result<()> {
        let time = *self.change_time.lock().unwrap();
        if !time.is_zero() {
            tokio::time::sleep(time).await;
        }
        let mut map = self.objects.lock().unwrap();
        for key in keys {
            map.remove(*key);
        }
        Ok(())
    }
    async fn delete(&self, index: ById, keys: &[&str]) -> Result<()> {
        self.invalidate(index, keys).await
    }
    async fn truncate(&self) -> Result<()> {
        self.objects.lock().unwrap().clear();
        Ok(())
    }
}

fn rig(answers: Vec<Answer>) -> (ObjectCache<ById, User>, Arc<Leasing>) {
    let leasing = Arc::new(Leasing::default());
    leasing.answers.lock().unwrap().extend(answers);
    let cache = ObjectCache::new("users", Arc::clone(&leasing) as Arc<dyn Cache<_, _>>);
    (cache, leasing)
}

/// `get_or_load` of user 7 with a load counted in `loads` that yields `revision`.
async fn load(
    cache: &ObjectCache<ById, User>,
    loads: &Arc<AtomicUsize>,
    revision: u32,
) -> Option<Arc<User>> {
    let loads = Arc::clone(loads);
    cache
        .get_or_load(ById, "7", move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(Some(User {
                id: "7".into(),
                revision,
            }))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_granted_lease_loads_once_and_fills_instead_of_setting() {
    let (cache, leasing) = rig(vec![Answer::Granted]);
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 1).await.unwrap().revision, 1);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(leasing.fills.load(Ordering::SeqCst), 1);
    assert_eq!(leasing.sets.load(Ordering::SeqCst), 0, "a fill, not a set");
    let stats = cache.stats();
    assert_eq!(
        (stats.leases, stats.lease_waits, stats.refused_fills),
        (1, 0, 0)
    );
    assert_eq!(cache.get(ById, "7").await.unwrap().revision, 1);
}

#[tokio::test]
async fn a_refused_fill_is_counted_and_the_caller_still_gets_its_load() {
    let (cache, leasing) = rig(vec![Answer::Granted]);
    *leasing.refuse.lock().unwrap() = true;
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 1).await.unwrap().revision, 1);
    assert_eq!(cache.stats().refused_fills, 1);
    assert!(
        cache.get(ById, "7").await.is_none(),
        "a refused fill is not cached"
    );
}

// Paused time: the 4 s below is Tokio's, so a loaded machine cannot miss it.
#[tokio::test(start_paused = true)]
async fn a_held_lease_is_waited_for_and_the_holders_fill_answers() {
    let (cache, leasing) = rig(vec![Answer::Held(Duration::from_secs(5))]);
    let filler = {
        let leasing = Arc::clone(&leasing);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            leasing.objects.lock().unwrap().insert(
                "7".into(),
                Arc::new(User {
                    id: "7".into(),
                    revision: 9,
                }),
            );
        })
    };
    let loads = Arc::new(AtomicUsize::new(0));
    let found = tokio::time::timeout(Duration::from_secs(4), load(&cache, &loads, 1))
        .await
        .expect("the holder's fill ends the wait, long before the lease would");
    filler.await.unwrap();
    assert_eq!(found.unwrap().revision, 9, "the other process's fill");
    assert_eq!(loads.load(Ordering::SeqCst), 0, "no load of its own");
    let stats = cache.stats();
    assert_eq!((stats.lease_waits, stats.loads, stats.leases), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_after_its_time_and_no_later() {
    let lease = Duration::from_millis(500);
    let (cache, leasing) = rig(vec![Answer::Held(lease)]);
    let loads = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    assert_eq!(load(&cache, &loads, 2).await.unwrap().revision, 2);
    let waited = started.elapsed();
    assert!(
        waited >= lease && waited < lease + Duration::from_millis(50),
        "waited {waited:?} for a lease of {lease:?}"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(leasing.fills.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(
        (stats.lease_waits, stats.lease_takeovers, stats.leases),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_a_change_ended_is_taken_at_once() {
    let (cache, leasing) = rig(vec![Answer::Held(Duration::from_secs(5))]);
    let change = {
        let leasing = Arc::clone(&leasing);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Another process's invalidation ends the holder's lease (its fill would be
            // refused): nothing will be filled.
            *leasing.held_until.lock().unwrap() = Some(tokio::time::Instant::now());
        })
    };
    let loads = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    assert_eq!(load(&cache, &loads, 4).await.unwrap().revision, 4);
    let waited = started.elapsed();
    change.await.unwrap();
    assert!(
        waited < Duration::from_millis(100),
        "waited {waited:?}: not for the ended lease's 5 s"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(
        (stats.lease_waits, stats.lease_takeovers, stats.leases),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn an_object_found_when_leasing_is_a_hit_without_a_load() {
    let (cache, leasing) = rig(vec![Answer::Hit(5)]);
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 1).await.unwrap().revision, 5);
    assert_eq!(loads.load(Ordering::SeqCst), 0);
    assert_eq!(leasing.fills.load(Ordering::SeqCst), 0);
    assert_eq!(cache.stats().leases, 0);
}

#[tokio::test]
async fn a_lease_that_fails_never_fails_the_caller_and_the_load_is_set() {
    let (cache, leasing) = rig(vec![Answer::Fails]);
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 3).await.unwrap().revision, 3);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        leasing.sets.load(Ordering::SeqCst),
        1,
        "set without a lease"
    );
    assert_eq!(cache.stats().errors, 1, "the lease's failure is counted");
}

/// Waits (on Tokio's clock) for the background release of `key`'s lease.
async fn released(leasing: &Leasing, key: &str) {
    for _ in 0..1_000 {
        if leasing.released.lock().unwrap().iter().any(|k| k == key) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the lease of {key:?} was never released");
}

#[tokio::test(start_paused = true)]
async fn a_load_that_finds_nothing_releases_its_lease() {
    let (cache, leasing) = rig(vec![Answer::Granted]);
    let found = cache
        .get_or_load(ById, "7", || async {
            Ok::<Option<User>, std::convert::Infallible>(None)
        })
        .await
        .unwrap();
    assert!(found.is_none());
    released(&leasing, "7").await;
    assert_eq!(leasing.fills.load(Ordering::SeqCst), 0, "nothing to fill");
    assert_eq!(leasing.released.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_releases_its_lease_and_fails_the_caller() {
    let (cache, leasing) = rig(vec![Answer::Granted]);
    let failed = cache
        .get_or_load(ById, "7", || async {
            Err::<Option<User>, _>(std::io::Error::other("database down"))
        })
        .await;
    assert_eq!(failed.unwrap_err().to_string(), "database down");
    released(&leasing, "7").await;
    assert_eq!(leasing.fills.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_filled_lease_is_not_released() {
    let (cache, leasing) = rig(vec![Answer::Granted]);
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 1).await.unwrap().revision, 1);
    tokio::task::yield_now().await;
    assert!(leasing.released.lock().unwrap().is_empty());
}

/// A rig whose next lease is granted, with an invalidation of another key running that takes
/// `time` on the shared level (holding its pass all along).
fn during_a_change(
    time: Duration,
) -> (
    ObjectCache<ById, User>,
    Arc<Leasing>,
    tokio::task::JoinHandle<()>,
) {
    let (cache, leasing) = rig(vec![Answer::Granted]);
    *leasing.change_time.lock().unwrap() = time;
    let change = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.invalidate(ById, &["8"]).await.unwrap() })
    };
    (cache, leasing, change)
}

#[tokio::test(start_paused = true)]
async fn a_fill_waits_for_a_change_of_this_process_that_runs_then_lands() {
    let (cache, leasing, change) = during_a_change(Duration::from_millis(30));
    tokio::time::sleep(Duration::from_millis(1)).await; // the change has its pass
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 1).await.unwrap().revision, 1);
    change.await.unwrap();
    assert_eq!(
        leasing.fills.load(Ordering::SeqCst),
        1,
        "the fill waited out the 30 ms change and went"
    );
    assert!(leasing.released.lock().unwrap().is_empty());
    assert_eq!(cache.get(ById, "7").await.unwrap().revision, 1);
}

#[tokio::test(start_paused = true)]
async fn a_fill_kept_out_by_a_long_change_is_given_up_and_its_lease_released() {
    let (cache, leasing, change) = during_a_change(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(1)).await; // the change has its pass
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(load(&cache, &loads, 1).await.unwrap().revision, 1);
    released(&leasing, "7").await;
    change.await.unwrap();
    assert_eq!(
        leasing.fills.load(Ordering::SeqCst),
        0,
        "no fill past 100 ms"
    );
}

/// A failed release or fill is counted (and logged) — unless the breaker refused it: that is
/// counted where the breaker opened, not once more per refused call.
#[tokio::test(start_paused = true)]
async fn a_failed_release_or_fill_is_counted_unless_the_breaker_refused_it() {
    for (kind, counted) in [(ErrorKind::Unavailable, 1), (ErrorKind::BreakerOpen, 0)] {
        for found in [false, true] {
            let (cache, leasing) = rig(vec![Answer::Granted]);
            *leasing.fails.lock().unwrap() = Some(kind);
            let loaded = cache
                .get_or_load(ById, "7", move || async move {
                    Ok::<_, std::convert::Infallible>(found.then(|| User {
                        id: "7".into(),
                        revision: 1,
                    }))
                })
                .await
                .unwrap();
            assert_eq!(loaded.is_some(), found, "the caller never sees the failure");
            if !found {
                released(&leasing, "7").await;
            }
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let what = if found { "fill" } else { "release" };
            assert_eq!(
                cache.stats().errors,
                counted,
                "a {what} failing with {kind:?}"
            );
        }
    }
}
