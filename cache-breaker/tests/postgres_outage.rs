//! The PostgreSQL side of issue 26's delivery bound: an invalidation kept while the database
//! did not answer reaches it within about `RETRY_MAX` of it answering again — also from a
//! process that stays idle with its breaker open — so another process stops reading the
//! invalidated object. `redis_outage.rs` measures the same on Redis (a killed server).
//!
//! The outage is made on the shared test server without disturbing other tests: a
//! transaction of the test's own locks this purpose's rows of `keys` (`FOR UPDATE`), so the
//! invalidation's `DELETE` of them waits until the statement timeout cancels it, while reads
//! (plain `SELECT`s, never blocked by row locks) go on and other purposes are untouched.
//! Ending that transaction is the instant the database answers again.
//!
//! No assertion times a call; the bound on the stale window is [`generous`], and the figure
//! is printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_breaker::{Breaker, BreakerCache, BreakerState};
use cache_core::testkit::{TestEntry, TestIndex, unique_purpose};
use cache_core::{BreakerSettings, Cache, CacheSettings, ErrorKind, ObjectCache};
use cache_postgres::{PostgresConfig, PostgresConnector};

use TestIndex::{Id, Name};

/// A bound for a loaded machine on what takes `figure` when nothing else runs: 5x it, and at
/// least 2 s beyond it (issue 26: a test asserts no wall-clock duration a busy CI machine can
/// miss).
fn generous(figure: Duration) -> Duration {
    (figure * 5).max(figure + Duration::from_secs(2))
}

/// How long after the database answers again another process may still read an object
/// invalidated meanwhile by a process that stays idle with its breaker open: the delivery
/// task's longest backoff (`RETRY_MAX`, 80 ms; the goal is 100 ms), made [`generous`]
/// — far below the breaker's 60 s Timeout, which is when the kept invalidation went out
/// before.
fn idle_delivery_bound() -> Duration {
    generous(cache_breaker::RETRY_MAX)
}

/// The statements' bound: a blocked invalidation fails after this.
const STATEMENT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the database does not answer the invalidation.
const OUTAGE: Duration = Duration::from_secs(3);

/// One process's handle: its own pool, its own breaker.
struct Process {
    cache: ObjectCache<TestIndex, TestEntry>,
    breaker: Arc<Breaker>,
    connector: PostgresConnector,
}

fn process(url: &str, purpose: &str) -> Process {
    let config = PostgresConfig {
        statement_timeout: STATEMENT_TIMEOUT,
        pool_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(1),
        ..PostgresConfig::with_url(url)
    };
    let connector = PostgresConnector::new(&config, "v1").unwrap();
    // Opens on the second failure in a row and stays open far longer than the test: a kept
    // change must reach the database as soon as it answers, not when the breaker lets a
    // trial call through.
    let breaker = Arc::new(Breaker::new(
        "postgres",
        BreakerSettings {
            max_consecutive_failures: 1,
            max_failure_ratio: 0.5,
            min_requests: 20,
            timeout: Duration::from_secs(60),
            max_retry_requests: 1,
            interval: Duration::ZERO,
        },
    ));
    let backend: Arc<dyn Cache<TestIndex, TestEntry>> =
        connector.cache(purpose, TestIndex::BUILT, &CacheSettings::default());
    let guarded = BreakerCache::new(purpose, backend, Arc::clone(&breaker));
    Process {
        cache: ObjectCache::new(purpose, Arc::new(guarded)),
        breaker,
        connector,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_delivers_its_kept_invalidation_so_others_stop_reading_it() {
    let Some(url) = cache_core::testkit::server_url("CACHE_TEST_POSTGRES_URL") else {
        return;
    };
    let purpose = unique_purpose("pg-idle");
    // Two processes' handles: A invalidates while the database does not answer it, then
    // stays idle; B only reads.
    let a = process(&url, &purpose);
    let b = process(&url, &purpose);
    a.connector.setup().await.unwrap();
    a.cache.set(TestEntry::new("stale", &["old-name"])).await;
    // Found in the same round as a miss of "stale", it says the miss came from a database
    // that answered (not from a failed call).
    a.cache.set(TestEntry::new("control", &[])).await;
    assert!(b.cache.get(Id, "stale").await.is_some(), "B reads it");
    assert!(b.cache.get(Name, "old-name").await.is_some());
    assert!(b.cache.get(Id, "control").await.is_some());

    // The outage: this purpose's rows locked, so the invalidation's DELETE waits.
    let schema = PostgresConfig::default().schema;
    let (mut raw, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let lock = raw.transaction().await.unwrap();
    let locked = lock
        .query(
            &format!("SELECT object_id FROM \"{schema}\".keys WHERE purpose = $1 FOR UPDATE"),
            &[&purpose],
        )
        .await
        .unwrap()
        .len();
    assert!(locked >= 3, "the purpose's key rows are locked ({locked})");
    let outage = Instant::now();

    let refused = a
        .cache
        .invalidate(Id, &["stale"])
        .await
        .expect_err("the database does not answer the invalidation: the caller is told");
    assert_eq!(
        refused.kind(),
        ErrorKind::Timeout,
        "the invalidation waited for the lock until the statement timeout: {refused}"
    );
    // A second failure opens A's breaker (consecutive failures must exceed 1): this call's,
    // or the delivery task's first attempt, which goes through the breaker while it is
    // closed and is counted.
    let again = a
        .cache
        .invalidate(Id, &["stale"])
        .await
        .expect_err("still no answer");
    assert!(
        matches!(again.kind(), ErrorKind::Timeout | ErrorKind::BreakerOpen),
        "{again}"
    );
    assert_eq!(a.breaker.state(), BreakerState::Open, "A's breaker opened");
    // While open, A's calls are kept away from the database (kept, refused at once).
    let refused_at_once = a.cache.invalidate(Id, &["stale"]).await.unwrap_err();
    assert_eq!(
        refused_at_once.kind(),
        ErrorKind::BreakerOpen,
        "{refused_at_once}"
    );
    assert!(
        a.cache.get(Id, "control").await.is_none(),
        "A misses while open"
    );
    assert_eq!(a.breaker.state(), BreakerState::Open);
    // A makes no call from here on. B still reads the object: the invalidation did not happen.
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    assert!(
        b.cache.get(Id, "stale").await.is_some(),
        "B reads the object while the invalidation waits (reads take no row lock)"
    );
    assert_eq!(
        a.breaker.state(),
        BreakerState::Open,
        "A's breaker is still open"
    );

    // The database answers again.
    let answering = Instant::now();
    lock.rollback().await.unwrap();
    let bound = idle_delivery_bound();
    let mut last_stale = None;
    // B reads until the database answers it without the invalidated object: the control
    // object found, B's breaker closed and no error around the reads of both keys.
    let gone_after = loop {
        let errors = b.cache.stats().errors;
        let closed = b.breaker.state() == BreakerState::Closed;
        let control = b.cache.get(Id, "control").await.is_some();
        let stale = b.cache.get(Id, "stale").await.is_some()
            || b.cache.get(Name, "old-name").await.is_some();
        let answered =
            closed && b.breaker.state() == BreakerState::Closed && b.cache.stats().errors == errors;
        if stale {
            last_stale = Some(answering.elapsed());
        } else if answered && control {
            break answering.elapsed();
        }
        assert!(
            answering.elapsed() < bound,
            "B still read the object invalidated during the outage (last {last_stale:?} after \
             the database answered again), or the database never answered without it, within \
             {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "outage of {:?}; B last read the invalidated object {last_stale:?} after the database \
         answered again, and it answered without it {gone_after:?} after (bound {bound:?}); \
         A's breaker {:?}",
        answering.duration_since(outage),
        a.breaker.state(),
    );
    // Delivered while A's breaker stayed open: by its background task, not a trial call.
    assert_eq!(a.breaker.state(), BreakerState::Open);
    // Gone for good: it never comes back.
    let gone = Instant::now();
    while gone.elapsed() < Duration::from_secs(1) {
        assert!(
            b.cache.get(Id, "stale").await.is_none()
                && b.cache.get(Name, "old-name").await.is_none(),
            "B read the invalidated object again after the database answered without it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        b.cache.get(Id, "control").await.is_some(),
        "what was not invalidated is served"
    );
    assert_eq!(b.cache.stats().errors, 0, "B never failed");
}
