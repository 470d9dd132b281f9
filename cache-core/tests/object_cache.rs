//! The failure policy and read-through of `ObjectCache`, over two tiny in-test caches: one
//! that keeps objects in a map (one index), one whose backend always fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cache_core::{Cache, Entry, Error, ErrorKind, Index, ObjectCache, Result, async_trait};

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

#[derive(Default)]
struct MapCache(Mutex<HashMap<String, Arc<User>>>);

#[async_trait]
impl Cache<ById, User> for MapCache {
    fn connector(&self) -> &'static str {
        "map"
    }
    fn indices(&self) -> &[ById] {
        &[ById]
    }
    async fn get(&self, _: ById, key: &str) -> Result<Option<Arc<User>>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    async fn set(&self, value: Arc<User>) -> Result<()> {
        self.0.lock().unwrap().insert(value.id.clone(), value);
        Ok(())
    }
    async fn invalidate(&self, _: ById, keys: &[&str]) -> Result<()> {
        let mut map = self.0.lock().unwrap();
        for key in keys {
            map.remove(*key);
        }
        Ok(())
    }
    async fn delete(&self, index: ById, keys: &[&str]) -> Result<()> {
        self.invalidate(index, keys).await
    }
    async fn truncate(&self) -> Result<()> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

struct DownCache;

fn down() -> Error {
    Error::unavailable("connection refused")
}

#[async_trait]
impl Cache<ById, User> for DownCache {
    fn connector(&self) -> &'static str {
        "down"
    }
    fn indices(&self) -> &[ById] {
        &[ById]
    }
    async fn get(&self, _: ById, _: &str) -> Result<Option<Arc<User>>> {
        Err(down())
    }
    async fn set(&self, _: Arc<User>) -> Result<()> {
        Err(down())
    }
    async fn invalidate(&self, _: ById, _: &[&str]) -> Result<()> {
        Err(down())
    }
    async fn delete(&self, _: ById, _: &[&str]) -> Result<()> {
        Err(down())
    }
    async fn truncate(&self) -> Result<()> {
        Err(down())
    }
}

fn user(revision: u32) -> User {
    User {
        id: "7".into(),
        revision,
    }
}

#[tokio::test]
async fn get_and_set_never_fail_the_caller_and_are_counted() {
    let users: ObjectCache<ById, User> = ObjectCache::new("user", Arc::new(DownCache));
    users.set(user(1)).await;
    assert_eq!(users.get(ById, "7").await, None, "a failed get is a miss");
    // The set, the invalidation of its keys that a failed set makes (after the set returned:
    // the backend is down), and the get.
    for _ in 0..1_000 {
        if users.stats().errors == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let stats = users.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 1, 3));
}

#[tokio::test]
async fn invalidate_delete_truncate_report_backend_errors() {
    let users: ObjectCache<ById, User> = ObjectCache::new("user", Arc::new(DownCache));
    let err = users.invalidate(ById, &["7"]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_temporary());
    assert!(users.delete(ById, &["7"]).await.is_err());
    assert!(users.truncate().await.is_err());
    assert_eq!(users.stats().errors, 3);
}

#[tokio::test]
async fn get_or_load_loads_once_then_hits() {
    let users: ObjectCache<ById, User> = ObjectCache::new("user", Arc::new(MapCache::default()));
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let loads = Arc::clone(&loads);
        let got = users
            .get_or_load(ById, "7", move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(Some(user(1)))
            })
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(&user(1)));
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "the first call loads, the others hit"
    );
    let stats = users.stats();
    assert_eq!((stats.hits, stats.misses), (2, 1));
}

#[tokio::test]
async fn get_or_load_passes_load_errors_and_caches_no_absence() {
    let users: ObjectCache<ById, User> = ObjectCache::new("user", Arc::new(MapCache::default()));
    let err = users
        .get_or_load(ById, "7", || async { Err::<Option<User>, _>("db down") })
        .await
        .unwrap_err();
    assert_eq!(*err, "db down");
    let none = users
        .get_or_load(ById, "7", || async { Ok::<_, Error>(None) })
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(users.get(ById, "7").await.is_none());
}

#[tokio::test]
async fn a_load_that_raced_with_an_invalidation_is_not_cached() {
    let users: ObjectCache<ById, User> = ObjectCache::new("user", Arc::new(MapCache::default()));
    // The loader reads revision 1 from the source of truth; meanwhile the service writes
    // revision 2 and invalidates. The revision-1 object must not stay in the cache.
    let same = users.clone();
    let got = users
        .get_or_load(ById, "7", move || async move {
            let stale = user(1);
            same.invalidate(ById, &["7"]).await.unwrap();
            Ok::<_, Error>(Some(stale))
        })
        .await
        .unwrap();
    assert_eq!(
        got.as_deref(),
        Some(&user(1)),
        "the caller still gets what it loaded"
    );
    assert!(
        users.get(ById, "7").await.is_none(),
        "an object loaded before an invalidation finished must not be cached"
    );
}

#[tokio::test]
async fn replace_switches_backend_for_later_calls() {
    let users: ObjectCache<ById, User> = ObjectCache::noop("user");
    assert_eq!(users.connector(), "none");
    users.set(user(1)).await;
    assert!(users.get(ById, "7").await.is_none());
    let old = users.replace(Arc::new(MapCache::default()));
    assert_eq!(old.connector(), "none");
    users.set(user(2)).await;
    assert_eq!(users.get(ById, "7").await.as_deref(), Some(&user(2)));
}

#[tokio::test]
async fn stats_purpose_and_connector_tell_what_the_cache_is_and_did() {
    let users: ObjectCache<ById, User> = ObjectCache::new("user", Arc::new(MapCache::default()));
    assert_eq!(users.purpose(), "user");
    assert_eq!(users.connector(), "map");
    assert_eq!(users.stats().hit_ratio(), 0.0, "no gets yet");
    users.set(user(1)).await;
    for _ in 0..3 {
        assert!(users.get(ById, "7").await.is_some());
    }
    assert!(users.get(ById, "8").await.is_none());
    let stats = users.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (3, 1, 0));
    assert_eq!(stats.hit_ratio(), 0.75);
    assert_eq!(
        format!("{users:?}"),
        r#"ObjectCache { purpose: "user", connector: "map" }"#
    );
}

/// A map cache whose next set waits, once it started, until the test lets it land: the window
/// in which an invalidation can run before the set of an older load lands.
#[derive(Default)]
struct GatedSet {
    map: MapCache,
    gate: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

#[async_trait]
impl Cache<ById, User> for GatedSet {
    fn connector(&self) -> &'static str {
        "gated"
    }
    fn indices(&self) -> &[ById] {
        &[ById]
    }
    async fn get(&self, index: ById, key: &str) -> Result<Option<Arc<User>>> {
        self.map.get(index, key).await
    }
    async fn set(&self, value: Arc<User>) -> Result<()> {
        let gate = self.gate.lock().unwrap().take();
        if let Some((started, land)) = gate {
            let _ = started.send(());
            let _ = land.await;
        }
        self.map.set(value).await
    }
    async fn invalidate(&self, index: ById, keys: &[&str]) -> Result<()> {
        self.map.invalidate(index, keys).await
    }
    async fn delete(&self, index: ById, keys: &[&str]) -> Result<()> {
        self.map.delete(index, keys).await
    }
    async fn truncate(&self) -> Result<()> {
        self.map.truncate().await
    }
}

#[tokio::test]
async fn an_invalidation_waits_for_a_loaded_object_on_its_way_and_removes_it() {
    let backend = Arc::new(GatedSet::default());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (land_tx, land_rx) = tokio::sync::oneshot::channel();
    *backend.gate.lock().unwrap() = Some((started_tx, land_rx));
    let users: ObjectCache<ById, User> = ObjectCache::new("user", backend);
    let loading = {
        let users = users.clone();
        tokio::spawn(async move {
            users
                .get_or_load(ById, "7", || async { Ok::<_, Error>(Some(user(1))) })
                .await
        })
    };
    // The load is done and its set has started when the object changes and is invalidated:
    // the invalidation waits for the set to land, then removes what it wrote.
    started_rx.await.unwrap();
    let invalidating = {
        let users = users.clone();
        tokio::spawn(async move { users.invalidate(ById, &["7"]).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !invalidating.is_finished(),
        "it waits for the set on its way"
    );
    land_tx.send(()).unwrap();
    invalidating.await.unwrap().unwrap();
    let loaded = loading.await.unwrap().unwrap();
    assert_eq!(
        loaded.map(|u| u.revision),
        Some(1),
        "the caller gets what it loaded"
    );
    assert_eq!(
        users.get(ById, "7").await,
        None,
        "the possibly outdated load is not left in the cache"
    );
}
