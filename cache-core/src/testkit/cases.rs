//! The conformance cases: one `async fn` per rule of the cache contract (SPEC section 2).
//!
//! Every case builds its caches under a purpose of its own ([`unique_purpose`]), so cases can
//! share a server. Assertion messages name the rule and the operation that broke it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::ObjectCache;
use crate::testkit::{Fixture, FragileEntry, TestCache, TestEntry, TestIndex, unique_purpose};
use crate::{CacheSettings, ErrorKind};

use TestIndex::{Id, Name, Unused};

/// Settings with MaxAge and LastUsage off: objects live until removed.
fn forever() -> CacheSettings {
    CacheSettings {
        max_age: Duration::ZERO,
        last_usage: Duration::ZERO,
        ..CacheSettings::default()
    }
}

fn expiring(max_age: Duration, last_usage: Duration) -> CacheSettings {
    CacheSettings {
        max_age,
        last_usage,
        ..CacheSettings::default()
    }
}

async fn cache(f: &dyn Fixture, case: &str, settings: &CacheSettings) -> TestCache {
    f.cache(&unique_purpose(case), TestIndex::BUILT, settings)
        .await
}

async fn set(cache: &TestCache, entry: &TestEntry) {
    if let Err(e) = cache.set(Arc::new(entry.clone())).await {
        panic!("set({entry:?}) failed: {e}");
    }
}

async fn get(cache: &TestCache, index: TestIndex, key: &str) -> Option<Arc<TestEntry>> {
    match cache.get(index, key).await {
        Ok(found) => found,
        Err(e) => panic!("get({index:?}, {key:?}) failed: {e}"),
    }
}

async fn invalidate(cache: &TestCache, index: TestIndex, keys: &[&str]) {
    if let Err(e) = cache.invalidate(index, keys).await {
        panic!("invalidate({index:?}, {keys:?}) failed: {e}");
    }
}

async fn delete(cache: &TestCache, index: TestIndex, keys: &[&str]) {
    if let Err(e) = cache.delete(index, keys).await {
        panic!("delete({index:?}, {keys:?}) failed: {e}");
    }
}

#[track_caller]
fn assert_found(found: Option<Arc<TestEntry>>, expected: &TestEntry, rule: &str, after: &str) {
    match found {
        Some(found) => assert_eq!(
            *found, *expected,
            "{rule}: after {after} the hit must be the object that was set"
        ),
        None => panic!("{rule}: after {after} expected a hit on {expected:?}, got a miss"),
    }
}

#[track_caller]
fn assert_missing(found: Option<Arc<TestEntry>>, rule: &str, after: &str) {
    if let Some(found) = found {
        panic!("{rule}: after {after} expected a miss, got {found:?}");
    }
}

/// Rule: a set object is found through every key of every index, and equals what was set.
pub async fn set_then_get_through_every_index(f: &dyn Fixture) {
    const RULE: &str = "set then get through every index";
    let c = cache(f, "set_get", &forever()).await;
    let entry = TestEntry::new("a", &["x", "y", "z"]).revision(3);
    set(&c, &entry).await;
    assert_found(get(&c, Id, "a").await, &entry, RULE, "set, get(Id, \"a\")");
    for name in ["x", "y", "z"] {
        assert_found(
            get(&c, Name, name).await,
            &entry,
            RULE,
            &format!("set, get(Name, {name:?})"),
        );
    }
}

/// Rule: a key nothing was stored under misses (and is not an error), in an empty cache and
/// next to stored objects; a key of one index is not a key of another.
pub async fn unknown_key_misses(f: &dyn Fixture) {
    const RULE: &str = "miss on unknown key";
    let c = cache(f, "unknown_key", &forever()).await;
    assert_missing(get(&c, Id, "a").await, RULE, "nothing, get(Id, \"a\")");
    set(&c, &TestEntry::new("a", &["x"])).await;
    assert_missing(get(&c, Id, "b").await, RULE, "set a, get(Id, \"b\")");
    assert_missing(
        get(&c, Name, "a").await,
        RULE,
        "set a, get(Name, \"a\") (an Id key)",
    );
    assert_missing(
        get(&c, Id, "x").await,
        RULE,
        "set a, get(Id, \"x\") (a Name key)",
    );
}

/// Rule: invalidating an object through one key of one index hides it through all indices.
pub async fn invalidate_hides_through_every_index(f: &dyn Fixture) {
    const RULE: &str = "invalidate through one index hides the object through all";
    let c = cache(f, "invalidate_all", &forever()).await;
    let a = TestEntry::new("a", &["x", "y"]);
    let b = TestEntry::new("b", &["z"]);
    set(&c, &a).await;
    set(&c, &b).await;
    invalidate(&c, Name, &["y"]).await;
    let after = "invalidate(Name, [\"y\"])";
    assert_missing(get(&c, Name, "y").await, RULE, after);
    assert_missing(get(&c, Name, "x").await, RULE, after);
    assert_missing(get(&c, Id, "a").await, RULE, after);
    assert_found(get(&c, Id, "b").await, &b, RULE, after);

    set(&c, &a).await;
    invalidate(&c, Id, &["a"]).await;
    let after = "set a again, invalidate(Id, [\"a\"])";
    assert_missing(get(&c, Name, "x").await, RULE, after);
    assert_missing(get(&c, Name, "y").await, RULE, after);
    assert_found(get(&c, Name, "z").await, &b, RULE, after);
}

/// Rule: unknown keys in an invalidation are ignored and never stop the known ones from
/// being invalidated, wherever they stand in the list; invalidation is idempotent.
pub async fn invalidate_skips_unknown_keys(f: &dyn Fixture) {
    const RULE: &str = "invalidate with unknown and known keys invalidates all known ones";
    let c = cache(f, "invalidate_mixed", &forever()).await;
    let entries = [
        TestEntry::new("a", &["x"]),
        TestEntry::new("b", &["y"]),
        TestEntry::new("c", &["z"]),
        TestEntry::new("d", &["w"]),
    ];
    for e in &entries {
        set(&c, e).await;
    }
    let keys = ["nope", "a", "missing", "b", "", "c", "gone"];
    invalidate(&c, Id, &keys).await;
    let after = format!("invalidate(Id, {keys:?})");
    for id in ["a", "b", "c"] {
        assert_missing(get(&c, Id, id).await, RULE, &after);
    }
    for name in ["x", "y", "z"] {
        assert_missing(get(&c, Name, name).await, RULE, &after);
    }
    assert_found(get(&c, Id, "d").await, &entries[3], RULE, &after);
    invalidate(&c, Id, &keys).await;
    invalidate(&c, Name, &["x", "w-not"]).await;
    invalidate(&c, Id, &[]).await;
    assert_found(
        get(&c, Name, "w").await,
        &entries[3],
        RULE,
        "repeating the invalidation (idempotent) and an empty key list",
    );
}

/// Rule: delete removes only the given mappings of one index; the object stays reachable
/// through its other keys. Idempotent.
pub async fn delete_removes_one_mapping_only(f: &dyn Fixture) {
    const RULE: &str = "delete removes one mapping only";
    let c = cache(f, "delete_one", &forever()).await;
    let a = TestEntry::new("a", &["x", "y"]);
    set(&c, &a).await;
    delete(&c, Name, &["x", "unknown"]).await;
    let after = "delete(Name, [\"x\", \"unknown\"])";
    assert_missing(get(&c, Name, "x").await, RULE, after);
    assert_found(get(&c, Name, "y").await, &a, RULE, after);
    assert_found(get(&c, Id, "a").await, &a, RULE, after);
    delete(&c, Name, &["x"]).await;
    assert_found(
        get(&c, Id, "a").await,
        &a,
        RULE,
        "deleting again (idempotent)",
    );
    delete(&c, Id, &["a"]).await;
    assert_missing(get(&c, Id, "a").await, RULE, "delete(Id, [\"a\"])");
    assert_found(get(&c, Name, "y").await, &a, RULE, "delete(Id, [\"a\"])");
}

/// Rule: a set whose keys include a key of an older object invalidates that older object
/// entirely: no "ghost" stays reachable through keys the new object does not have.
pub async fn set_invalidates_older_objects_sharing_a_key(f: &dyn Fixture) {
    const RULE: &str = "a set that re-uses a key of an older object invalidates it entirely";
    let c = cache(f, "ghosts", &forever()).await;
    let a = TestEntry::new("a", &["x", "y"]);
    let b = TestEntry::new("b", &["y"]);
    set(&c, &a).await;
    set(&c, &b).await;
    let after = "set a{x,y} then b{y}";
    assert_found(get(&c, Name, "y").await, &b, RULE, after);
    assert_missing(get(&c, Name, "x").await, RULE, after);
    assert_missing(get(&c, Id, "a").await, RULE, after);
    assert_found(get(&c, Id, "b").await, &b, RULE, after);

    // Two older objects at once, through different indices.
    let p = TestEntry::new("p", &["m"]);
    let q = TestEntry::new("q", &["n"]);
    set(&c, &p).await;
    set(&c, &q).await;
    let r = TestEntry::new("p", &["n"]);
    set(&c, &r).await;
    let after = "set p{m}, q{n}, then p{n}";
    assert_found(get(&c, Id, "p").await, &r, RULE, after);
    assert_found(get(&c, Name, "n").await, &r, RULE, after);
    assert_missing(get(&c, Name, "m").await, RULE, after);
    assert_missing(get(&c, Id, "q").await, RULE, after);
}

/// Rule: setting a new version of an object replaces the old one through every key; names
/// only the old version had miss.
pub async fn set_replaces_the_previous_version(f: &dyn Fixture) {
    const RULE: &str = "a re-set replaces the previous version";
    let c = cache(f, "reset", &forever()).await;
    set(&c, &TestEntry::new("a", &["old", "kept"]).revision(1)).await;
    let v2 = TestEntry::new("a", &["kept", "new"]).revision(2);
    set(&c, &v2).await;
    let after = "set a rev 1 {old,kept} then rev 2 {kept,new}";
    assert_found(get(&c, Id, "a").await, &v2, RULE, after);
    assert_found(get(&c, Name, "kept").await, &v2, RULE, after);
    assert_found(get(&c, Name, "new").await, &v2, RULE, after);
    assert_missing(get(&c, Name, "old").await, RULE, after);
}

/// Rule: an entry may name the same key several times; set, get and invalidate work.
pub async fn duplicate_keys_in_one_entry(f: &dyn Fixture) {
    const RULE: &str = "duplicate keys in one entry are fine";
    let c = cache(f, "duplicates", &forever()).await;
    let a = TestEntry::new("a", &["x", "x", "y", "x"]);
    set(&c, &a).await;
    assert_found(get(&c, Name, "x").await, &a, RULE, "set a{x,x,y,x}");
    assert_found(get(&c, Name, "y").await, &a, RULE, "set a{x,x,y,x}");
    set(&c, &a).await;
    assert_found(get(&c, Id, "a").await, &a, RULE, "setting it twice");
    invalidate(&c, Name, &["x", "x"]).await;
    assert_missing(
        get(&c, Id, "a").await,
        RULE,
        "invalidate(Name, [\"x\", \"x\"])",
    );
    assert_missing(
        get(&c, Name, "y").await,
        RULE,
        "invalidate(Name, [\"x\", \"x\"])",
    );
}

/// Rule: an object is gone once it is MaxAge old (counted from its set, not renewed by hits);
/// with an exact clock, to the millisecond: it expires the moment its age reaches MaxAge.
pub async fn max_age_expires(f: &dyn Fixture) {
    const RULE: &str = "MaxAge expiry";
    let a = TestEntry::new("a", &["x"]);
    if f.exact_time() {
        let c = cache(f, "max_age", &expiring(secs(10), Duration::ZERO)).await;
        set(&c, &a).await;
        f.advance(millis(5_000)).await;
        assert_found(get(&c, Id, "a").await, &a, RULE, "5 s of MaxAge 10 s");
        f.advance(millis(4_999)).await;
        assert_found(get(&c, Name, "x").await, &a, RULE, "9.999 s of MaxAge 10 s");
        f.advance(millis(1)).await;
        let after = "10 s of MaxAge 10 s (hits must not extend MaxAge)";
        assert_missing(get(&c, Id, "a").await, RULE, after);
        assert_missing(get(&c, Name, "x").await, RULE, after);
    } else {
        let c = cache(f, "max_age", &expiring(millis(900), Duration::ZERO)).await;
        set(&c, &a).await;
        f.advance(millis(150)).await;
        assert_found(get(&c, Id, "a").await, &a, RULE, "150 ms of MaxAge 900 ms");
        f.advance(millis(450)).await;
        assert_found(
            get(&c, Name, "x").await,
            &a,
            RULE,
            "600 ms of MaxAge 900 ms",
        );
        f.advance(millis(700)).await;
        let after = "1.3 s of MaxAge 900 ms (hits must not extend MaxAge)";
        assert_missing(get(&c, Id, "a").await, RULE, after);
        assert_missing(get(&c, Name, "x").await, RULE, after);
    }
}

/// Rule: an object not read for LastUsage is gone; every hit, through any key, renews it.
pub async fn last_usage_expires_and_hits_renew_it(f: &dyn Fixture) {
    const RULE: &str = "LastUsage expiry and renewal on hit";
    let a = TestEntry::new("a", &["x"]);
    let (limit, step, exact) = if f.exact_time() {
        (secs(4), secs(3), true)
    } else {
        (millis(700), millis(400), false)
    };
    let c = cache(f, "last_usage", &expiring(Duration::ZERO, limit)).await;
    set(&c, &a).await;
    f.advance(step).await;
    assert_found(get(&c, Id, "a").await, &a, RULE, "one step (< LastUsage)");
    f.advance(step).await;
    assert_found(
        get(&c, Name, "x").await,
        &a,
        RULE,
        "two steps (> LastUsage since set, < since the hit through another index)",
    );
    if exact {
        f.advance(limit - millis(1)).await;
        assert_found(get(&c, Id, "a").await, &a, RULE, "LastUsage - 1 ms idle");
        f.advance(limit).await;
    } else {
        // On a real clock, with room for a loaded machine: the hit's renewal runs in the
        // background, and the server's and this machine's clocks are read at different
        // moments. The paused-clock fixtures check the exact bound.
        f.advance(limit + step).await;
    }
    let after = "LastUsage idle";
    assert_missing(get(&c, Id, "a").await, RULE, after);
    assert_missing(get(&c, Name, "x").await, RULE, after);
}

/// Rule: with MaxStale, an expired object is kept that much longer for stale reads
/// (`get_stale`, what stale-if-error answers with) — never for a plain get — and an
/// invalidated object is never kept.
pub async fn max_stale_keeps_expired_objects_for_stale_reads_only(f: &dyn Fixture) {
    const RULE: &str = "MaxStale keeps expired objects for stale reads only";
    let (max_age, stale, margin) = if f.exact_time() {
        (secs(10), secs(30), secs(1))
    } else {
        (millis(500), millis(2_000), millis(300))
    };
    let settings = CacheSettings {
        max_stale: stale,
        ..expiring(max_age, Duration::ZERO)
    };
    let c = cache(f, "max_stale", &settings).await;
    let (a, b) = (TestEntry::new("a", &["x"]), TestEntry::new("b", &["y"]));
    set(&c, &a).await;
    set(&c, &b).await;
    let stale_get = |index, key: &'static str| {
        let c = Arc::clone(&c);
        async move {
            match c.get_stale(index, key).await {
                Ok(found) => found.map(|hit| hit.value),
                Err(e) => panic!("get_stale({index:?}, {key:?}) failed: {e}"),
            }
        }
    };
    assert_found(
        stale_get(Id, "a").await,
        &a,
        RULE,
        "set, get_stale before MaxAge",
    );
    f.advance(max_age + margin).await;
    assert_missing(get(&c, Id, "a").await, RULE, "MaxAge passed, plain get");
    assert_missing(
        get(&c, Name, "x").await,
        RULE,
        "MaxAge passed, plain get by name",
    );
    assert_found(
        stale_get(Name, "x").await,
        &a,
        RULE,
        "MaxAge passed, get_stale",
    );
    invalidate(&c, Id, &["b"]).await;
    assert_missing(stale_get(Id, "b").await, RULE, "invalidated, get_stale");
    f.advance(stale).await;
    assert_missing(
        stale_get(Id, "a").await,
        RULE,
        "MaxAge + MaxStale passed, get_stale",
    );
}

/// Rule: a stale read (stale-if-error) does not renew LastUsage: an object that expired by
/// LastUsage stays expired for plain gets after `get_stale` found it.
pub async fn a_stale_read_never_renews_last_usage(f: &dyn Fixture) {
    const RULE: &str = "a stale read never makes an expired object fresh";
    let (last_usage, stale, margin) = if f.exact_time() {
        (secs(10), secs(30), secs(1))
    } else {
        (millis(500), millis(2_000), millis(300))
    };
    let settings = CacheSettings {
        max_stale: stale,
        ..expiring(Duration::ZERO, last_usage)
    };
    let c = cache(f, "stale_no_renew", &settings).await;
    let a = TestEntry::new("a", &["x"]);
    set(&c, &a).await;
    f.advance(last_usage + margin).await;
    assert_missing(get(&c, Id, "a").await, RULE, "LastUsage passed, plain get");
    match c.get_stale(Name, "x").await {
        Ok(found) => assert_found(
            found.map(|hit| hit.value),
            &a,
            RULE,
            "LastUsage passed, get_stale",
        ),
        Err(e) => panic!("get_stale(Name, \"x\") failed: {e}"),
    }
    // Time for a renewal a connector might run in the background.
    f.advance(margin).await;
    assert_missing(
        get(&c, Id, "a").await,
        RULE,
        "get_stale found it, then a plain get",
    );
    assert_missing(
        get(&c, Name, "x").await,
        RULE,
        "get_stale found it, then a plain get by name",
    );
}

/// Rule: MaxAge 0 and LastUsage 0 disable expiry.
pub async fn zero_durations_disable_expiry(f: &dyn Fixture) {
    const RULE: &str = "MaxAge 0 / LastUsage 0 disable expiry";
    let c = cache(f, "no_expiry", &forever()).await;
    let a = TestEntry::new("a", &["x"]);
    set(&c, &a).await;
    let wait = if f.exact_time() {
        secs(365 * 24 * 3600)
    } else {
        millis(300)
    };
    f.advance(wait).await;
    assert_found(get(&c, Id, "a").await, &a, RULE, "a long wait");
}

/// Rule: prune removes invalidated and expired objects, keeps live ones, and never counts
/// as a use: it must not renew LastUsage. A connector whose backend expires objects itself
/// (not [`Fixture::prunable`]) must offer no prune at all, so no pruner is started for it.
pub async fn prune_never_renews_last_usage(f: &dyn Fixture) {
    const RULE: &str = "prune removes dead objects without renewing LastUsage";
    let (limit, step) = if f.exact_time() {
        (secs(10), secs(6))
    } else {
        (millis(1_000), millis(600))
    };
    let c = cache(f, "prune", &expiring(Duration::ZERO, limit)).await;
    if !f.prunable() {
        assert!(
            Arc::clone(&c).into_prune().is_none(),
            "{RULE}: a connector that expires objects itself must not ask for a pruner"
        );
        return;
    }
    let prune = Arc::clone(&c)
        .into_prune()
        .unwrap_or_else(|| panic!("{RULE}: a prunable connector's cache must offer prune"));
    let a = TestEntry::new("a", &["x"]);
    let b = TestEntry::new("b", &["y"]);
    let gone = TestEntry::new("gone", &["g"]);
    set(&c, &a).await;
    set(&c, &gone).await;
    invalidate(&c, Id, &["gone"]).await;
    f.advance(step).await;
    set(&c, &b).await;
    prune.prune().await.expect("prune");
    assert_missing(get(&c, Name, "g").await, RULE, "invalidate then prune");
    f.advance(step).await;
    prune.prune().await.expect("prune");
    assert_missing(
        get(&c, Id, "a").await,
        RULE,
        "idle > LastUsage with a prune in between (a renewing prune would keep it)",
    );
    assert_found(
        get(&c, Name, "y").await,
        &b,
        RULE,
        "prune with a live object (idle < LastUsage)",
    );
}

/// Rule: truncate empties this object cache through every index, leaves another object
/// cache on the same connector untouched, and the cache works afterwards.
pub async fn truncate_empties_only_this_cache(f: &dyn Fixture) {
    const RULE: &str = "truncate empties this cache only";
    let mine = cache(f, "truncate_mine", &forever()).await;
    let other = cache(f, "truncate_other", &forever()).await;
    let a = TestEntry::new("a", &["x"]);
    let b = TestEntry::new("b", &["y"]);
    set(&mine, &a).await;
    set(&mine, &b).await;
    set(&other, &a).await;
    mine.truncate().await.expect("truncate");
    for (index, key) in [(Id, "a"), (Id, "b"), (Name, "x"), (Name, "y")] {
        assert_missing(
            get(&mine, index, key).await,
            RULE,
            &format!("truncate, get({index:?}, {key:?})"),
        );
    }
    assert_found(
        get(&other, Name, "x").await,
        &a,
        RULE,
        "truncating another cache with the same keys",
    );
    set(&mine, &b).await;
    assert_found(get(&mine, Id, "b").await, &b, RULE, "truncate then set");
}

/// Rule: an index the cache was not built with is a programming error: get misses (or
/// reports `UnknownIndex`), invalidate and delete fail with `UnknownIndex` naming the index.
pub async fn unknown_index_is_an_error(f: &dyn Fixture) {
    const RULE: &str = "unknown index";
    let c = cache(f, "unknown_index", &forever()).await;
    set(&c, &TestEntry::new("a", &["x"])).await;
    match c.get(Unused, "a").await {
        Ok(None) => {}
        Ok(Some(found)) => panic!("{RULE}: get(Unused, \"a\") returned {found:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::UnknownIndex, "{RULE}: get: {e}"),
    }
    for (operation, outcome) in [
        ("invalidate", c.invalidate(Unused, &["a"]).await),
        ("delete", c.delete(Unused, &["a"]).await),
    ] {
        let e = outcome.expect_err(&format!("{RULE}: {operation}(Unused, ..) must fail"));
        assert_eq!(
            e.kind(),
            ErrorKind::UnknownIndex,
            "{RULE}: {operation}: {e}"
        );
        assert!(
            e.to_string().contains("unused"),
            "{RULE}: the {operation} error must name the index \"unused\": {e}"
        );
    }
}

/// Keys that look like separators, patterns, escapes or nothing at all.
const AWKWARD_KEYS: &[&str] = &[
    "", " ", ":", "::", "-", "a:b", "a-b", "a b", "a:", ":b", "id", "name", "id:a", "name:a", "*",
    "?", "[a]", "{a}", "%s", "\\", "\\:", "'", "\"", "größe", "日本", "🦀", "a\tb",
];

/// Rule: keys with `:` `-` spaces, pattern characters, unicode and the empty string are
/// plain keys: a key under one index never collides with the same string under another,
/// and invalidating one never hides the other.
pub async fn awkward_keys_never_collide(f: &dyn Fixture) {
    const RULE: &str = "awkward keys never collide across indices";
    let c = cache(f, "awkward", &forever()).await;
    let by_id: Vec<TestEntry> = AWKWARD_KEYS
        .iter()
        .map(|k| TestEntry::new(k, &[]).revision(1))
        .collect();
    let by_name: Vec<TestEntry> = AWKWARD_KEYS
        .iter()
        .enumerate()
        .map(|(i, k)| TestEntry::new(&format!("named-{i}"), &[k]).revision(2))
        .collect();
    for e in by_id.iter().chain(&by_name) {
        set(&c, e).await;
    }
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        let after = format!("setting {key:?} as an Id and as a Name");
        assert_found(get(&c, Id, key).await, &by_id[i], RULE, &after);
        assert_found(get(&c, Name, key).await, &by_name[i], RULE, &after);
    }
    let names: Vec<&str> = AWKWARD_KEYS.iter().step_by(2).copied().collect();
    invalidate(&c, Name, &names).await;
    for (i, key) in AWKWARD_KEYS.iter().enumerate() {
        let after = format!("invalidating every other key under Name, get {key:?}");
        assert_found(get(&c, Id, key).await, &by_id[i], RULE, &after);
        if i % 2 == 0 {
            assert_missing(get(&c, Name, key).await, RULE, &after);
        } else {
            assert_found(get(&c, Name, key).await, &by_name[i], RULE, &after);
        }
    }
}

/// Keys no backend stores as they are: NUL, line breaks, Redis/glob/format characters,
/// unicode, the empty string, and (built in [`hostile_keys`]) one of a megabyte.
const HOSTILE_KEYS: &[&str] = &[
    "bad\0key",
    "\0",
    "\0\0trailing",
    "line\r\nbreak",
    "\n",
    "a:b:c",
    "{tag}",
    "}{",
    "{",
    "%00",
    "%s%n",
    "*",
    "\\x00",
    "💥\u{200b}\u{feff}",
    "",
    "\u{1}escaped",
    "\u{1}",
];

/// Rule: every Rust string is a key on every connector — NUL, CR/LF, `:`, braces, `%`, `*`,
/// unicode, empty, a megabyte long — and one key never stops the others: a set, get,
/// invalidate or delete naming hostile keys works for every key it names.
pub async fn hostile_keys(f: &dyn Fixture) {
    const RULE: &str = "hostile keys are keys like any other";
    let c = cache(f, "hostile", &forever()).await;
    let huge = format!("{}\0end", "k".repeat(1 << 20));
    // A key that differs from `huge` only in its last byte must not collide with it.
    let huge_twin = format!("{}\0enD", "k".repeat(1 << 20));
    let mut keys: Vec<&str> = HOSTILE_KEYS.to_vec();
    keys.push(&huge);
    keys.push(&huge_twin);
    let entries: Vec<TestEntry> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| TestEntry::new(&format!("hostile-{i}"), &[k]).revision(i as u64 + 1))
        .collect();
    // One object reachable through a hostile id and a plain name.
    let by_id = TestEntry::new("id\0with nul", &["plain"]).revision(99);
    for e in entries.iter().chain([&by_id]) {
        set(&c, e).await;
    }
    for (i, key) in keys.iter().enumerate() {
        let shown = shorten(key);
        assert_found(
            get(&c, Name, key).await,
            &entries[i],
            RULE,
            &format!("set under {shown:?}, get(Name, {shown:?})"),
        );
    }
    assert_found(
        get(&c, Id, "id\0with nul").await,
        &by_id,
        RULE,
        "set with a NUL in its id, get(Id)",
    );
    assert_missing(
        get(&c, Id, "id").await,
        RULE,
        "set with \"id\\0with nul\", get(Id, \"id\") (a NUL never truncates a key)",
    );
    // One invalidation naming every hostile key and a plain unknown one: all of them go.
    let mut all: Vec<&str> = keys.clone();
    all.insert(1, "unknown-plain-key");
    let even: Vec<&str> = all.iter().step_by(2).copied().collect();
    invalidate(&c, Name, &even).await;
    for (i, key) in keys.iter().enumerate() {
        let position = all
            .iter()
            .position(|k| k == key)
            .expect("every key is listed");
        let after = format!(
            "invalidating every other hostile key, get {:?}",
            shorten(key)
        );
        if position % 2 == 0 {
            assert_missing(get(&c, Name, key).await, RULE, &after);
            assert_missing(
                get(&c, Id, &entries[i].id).await,
                RULE,
                &format!("{after} through its id"),
            );
        } else {
            assert_found(get(&c, Name, key).await, &entries[i], RULE, &after);
        }
    }
    // Delete through hostile keys removes exactly those mappings.
    delete(&c, Id, &["id\0with nul", "\0"]).await;
    assert_missing(
        get(&c, Id, "id\0with nul").await,
        RULE,
        "delete(Id, NUL key)",
    );
    assert_found(
        get(&c, Name, "plain").await,
        &by_id,
        RULE,
        "delete(Id, NUL key), get through its other key",
    );
    invalidate(&c, Name, &all).await;
    for key in &keys {
        let after = format!("invalidating all hostile keys, get {:?}", shorten(key));
        assert_missing(get(&c, Name, key).await, RULE, &after);
    }
}

/// A key as shown in an assertion message: at most 40 characters of it.
fn shorten(key: &str) -> String {
    if key.len() <= 40 {
        key.to_owned()
    } else {
        let cut: String = key.chars().take(20).collect();
        format!("{cut}… ({} bytes)", key.len())
    }
}

/// Rule: object caches of different purposes on one connector never see each other's
/// objects, even under the same keys.
pub async fn purposes_are_isolated(f: &dyn Fixture) {
    const RULE: &str = "caches of different purposes are isolated";
    let one = cache(f, "isolated_one", &forever()).await;
    let two = cache(f, "isolated_two", &forever()).await;
    let a1 = TestEntry::new("a", &["x"]).revision(1);
    let a2 = TestEntry::new("a", &["x"]).revision(2);
    set(&one, &a1).await;
    assert_missing(get(&two, Id, "a").await, RULE, "set in another cache");
    set(&two, &a2).await;
    assert_found(
        get(&one, Id, "a").await,
        &a1,
        RULE,
        "set of the same keys elsewhere",
    );
    invalidate(&two, Name, &["x"]).await;
    assert_found(
        get(&one, Name, "x").await,
        &a1,
        RULE,
        "invalidate elsewhere",
    );
}

/// Rule: values round-trip whole, however many keys they have.
pub async fn large_values_round_trip(f: &dyn Fixture) {
    const RULE: &str = "large values round-trip";
    let c = cache(f, "large", &forever()).await;
    let names: Vec<String> = (0..200)
        .map(|i| format!("{i:03}-a-rather-long-domain-name.tenant.example.com"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = TestEntry::new("big", &names).revision(u64::MAX);
    set(&c, &big).await;
    assert_found(
        get(&c, Name, names[199]).await,
        &big,
        RULE,
        "set of 200 names",
    );
    invalidate(&c, Name, &[names[0]]).await;
    assert_missing(
        get(&c, Name, names[100]).await,
        RULE,
        "invalidating one of 200 names",
    );
}

/// Rule: an object with thousands of keys (one a shared backend stores once, its keys
/// pointing at it) behaves like a small one: found through every key, gone through all of them
/// after an invalidation through one, keys deleted one by one, replaced entirely by a set of
/// another object taking one of its keys, and emptied by truncate.
pub async fn objects_with_many_keys_behave_like_small_ones(f: &dyn Fixture) {
    const RULE: &str = "objects with many keys";
    const KEYS: usize = 3_000;
    let c = cache(f, "many_keys", &forever()).await;
    let names: Vec<String> = (0..KEYS)
        .map(|i| format!("tenant-{i:05}.customer.example.com"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let big = TestEntry::new("big", &names);
    set(&c, &big).await;
    for key in [names[0], names[KEYS / 2], names[KEYS - 1]] {
        assert_found(get(&c, Name, key).await, &big, RULE, "set");
    }
    assert_found(get(&c, Id, "big").await, &big, RULE, "set");
    invalidate(&c, Name, &[names[7]]).await;
    for key in [names[0], names[7], names[KEYS - 1]] {
        assert_missing(
            get(&c, Name, key).await,
            RULE,
            "invalidating one of its keys",
        );
    }
    assert_missing(
        get(&c, Id, "big").await,
        RULE,
        "invalidating one of its keys",
    );

    // Deleting keys: only those mappings go.
    let big = big.revision(2);
    set(&c, &big).await;
    delete(&c, Name, &names[..10]).await;
    assert_missing(
        get(&c, Name, names[3]).await,
        RULE,
        "deleting 10 of its keys",
    );
    assert_found(
        get(&c, Name, names[10]).await,
        &big,
        RULE,
        "deleting 10 of its keys",
    );
    assert_found(
        get(&c, Id, "big").await,
        &big,
        RULE,
        "deleting 10 of its keys",
    );

    // Another object taking one of its keys replaces it entirely: no ghost stays reachable.
    let small = TestEntry::new("small", &[names[20]]);
    set(&c, &small).await;
    assert_found(
        get(&c, Name, names[20]).await,
        &small,
        RULE,
        "a set taking one key",
    );
    for key in [names[19], names[21], names[KEYS - 1]] {
        assert_missing(
            get(&c, Name, key).await,
            RULE,
            "a set taking one of its keys",
        );
    }
    assert_missing(
        get(&c, Id, "big").await,
        RULE,
        "a set taking one of its keys",
    );

    // A big object replacing a big one, then truncate.
    let other: Vec<String> = names[..KEYS / 2].iter().map(|n| format!("x.{n}")).collect();
    let other: Vec<&str> = other.iter().map(String::as_str).collect();
    let mut both = other.clone();
    both.push(names[KEYS - 1]);
    let first = TestEntry::new("first", &names[KEYS / 2..]);
    set(&c, &first).await;
    let second = TestEntry::new("second", &both);
    set(&c, &second).await;
    assert_missing(
        get(&c, Name, names[KEYS / 2]).await,
        RULE,
        "a big set replacing a big one",
    );
    assert_found(
        get(&c, Name, names[KEYS - 1]).await,
        &second,
        RULE,
        "a big set",
    );
    if let Err(e) = c.truncate().await {
        panic!("truncate failed: {e}");
    }
    assert_missing(get(&c, Name, other[0]).await, RULE, "truncate");
    assert_missing(get(&c, Name, names[20]).await, RULE, "truncate");
}

/// Rule: a set that fails (here: its value cannot be encoded) still invalidates every object
/// the value's keys pointed at — the caller set it because they are outdated — so the get
/// that follows misses instead of returning the older object. Run on an [`ObjectCache`]
/// (which applies the rule) over the connector under test.
pub async fn failed_set_leaves_no_older_object(cache: ObjectCache<TestIndex, FragileEntry>) {
    const RULE: &str = "a failed set leaves no older object";
    let v1 = TestEntry::new("a", &["x", "y"]).revision(1);
    cache
        .set(FragileEntry {
            entry: v1.clone(),
            encodable: true,
        })
        .await;
    let found = cache.get(Name, "y").await.map(|f| f.entry.clone());
    assert_eq!(found.as_ref(), Some(&v1), "{RULE}: v1 is stored first");
    // v2 shares only "x" with v1, and cannot be stored.
    cache
        .set(FragileEntry {
            entry: TestEntry::new("b", &["x"]).revision(2),
            encodable: false,
        })
        .await;
    for (index, key) in [(Id, "a"), (Name, "x"), (Name, "y"), (Id, "b")] {
        assert!(
            cache.get(index, key).await.is_none(),
            "{RULE}: after a failed set of v2, get({index:?}, {key:?}) still found an object"
        );
    }
    assert!(
        cache.stats().errors >= 1,
        "{RULE}: the failed set is counted"
    );
}

/// A small deterministic generator, so concurrent cases are repeatable per task.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Rule: sets, gets and invalidations from many tasks at once neither fail nor corrupt the
/// cache: every hit is an object that was set under that key, and once every object is
/// invalidated, every key misses.
pub async fn concurrent_operations_stay_consistent(f: &dyn Fixture) {
    const RULE: &str = "concurrent set/get/invalidate";
    const TASKS: u64 = 16;
    const OPS: u64 = 200;
    const IDS: u64 = 8;
    let c = cache(f, "concurrent", &forever()).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let mut rng = Lcg(t);
                for op in 0..OPS {
                    let id = rng.below(IDS);
                    let key = format!("o{id}");
                    let name = format!("n{id}");
                    match rng.below(4) {
                        0 => {
                            let e = TestEntry::new(&key, &[&name]).revision(t * OPS + op);
                            c.set(Arc::new(e)).await.expect("set");
                        }
                        1 => c.invalidate(Name, &[&name]).await.expect("invalidate"),
                        _ => {
                            let index = if rng.below(2) == 0 { Id } else { Name };
                            let k = if index == Id { &key } else { &name };
                            if let Some(found) = c.get(index, k).await.expect("get") {
                                assert_eq!(found.id, key, "{RULE}: get({index:?}, {k:?})");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a task panicked");
    }
    let ids: Vec<String> = (0..IDS).map(|i| format!("o{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    invalidate(&c, Id, &ids).await;
    for i in 0..IDS {
        let after = "all tasks ended and every id was invalidated";
        assert_missing(get(&c, Id, &format!("o{i}")).await, RULE, after);
        assert_missing(get(&c, Name, &format!("n{i}")).await, RULE, after);
    }
}

/// Rule: once an invalidation has returned, no get that starts afterwards sees the
/// invalidated version (checked with readers running concurrently with a writer).
pub async fn no_stale_read_after_invalidate(f: &dyn Fixture) {
    const RULE: &str = "no stale read after invalidate";
    const REVISIONS: u64 = 60;
    const READERS: u64 = 4;
    let c = cache(f, "stale", &forever()).await;
    // The revision whose invalidation has returned; readers must only see newer ones.
    let invalidated = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (c, invalidated, done) = (Arc::clone(&c), Arc::clone(&invalidated), done.clone());
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                let mut reads = 0u64;
                loop {
                    let floor = invalidated.load(Ordering::SeqCst);
                    if let Some(found) = c.get(Name, "x").await.expect("get") {
                        assert!(
                            found.revision > floor,
                            "{RULE}: saw revision {} after revision {floor} was invalidated",
                            found.revision
                        );
                    }
                    reads += 1;
                    if reads == 1 {
                        running.fetch_add(1, Ordering::SeqCst);
                    }
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                reads
            })
        })
        .collect();
    // Start writing once every reader reads, so the reads overlap the writes.
    while running.load(Ordering::SeqCst) < READERS {
        tokio::task::yield_now().await;
    }
    for revision in 1..=REVISIONS {
        set(&c, &TestEntry::new("a", &["x"]).revision(revision)).await;
        tokio::task::yield_now().await;
        invalidate(&c, Id, &["a"]).await;
        invalidated.store(revision, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.await.expect("a reader panicked");
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
