//! The model-based test: random operation sequences run against a connector and against a
//! tiny reference model of the contract; the first get whose answers differ fails the test,
//! and proptest shrinks the sequence to a minimal one before reporting it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::testkit::{Fixture, TestCache, TestEntry, TestIndex, unique_purpose};
use crate::{CacheSettings, Expiry, Timestamp};

/// One step of a sequence.
#[derive(Clone)]
pub enum Op {
    /// `set` of an entry (its revision is its position in the sequence).
    Set(TestEntry),
    /// `get` through one key; the answer is compared with the model's.
    Get(TestIndex, String),
    /// `invalidate` of some keys of one index.
    Invalidate(TestIndex, Vec<String>),
    /// `delete` of some keys of one index.
    Delete(TestIndex, Vec<String>),
    /// `truncate`.
    Truncate,
    /// Time passing.
    Advance(Duration),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Set(e) => write!(f, "set({}{:?} rev {})", e.id, e.names, e.revision),
            Op::Get(i, k) => write!(f, "get({i:?}, {k:?})"),
            Op::Invalidate(i, k) => write!(f, "invalidate({i:?}, {k:?})"),
            Op::Delete(i, k) => write!(f, "delete({i:?}, {k:?})"),
            Op::Truncate => write!(f, "truncate"),
            Op::Advance(d) => write!(f, "advance({d:?})"),
        }
    }
}

const IDS: &[&str] = &["a", "b", "c"];
const NAMES: &[&str] = &["x", "y", "z"];

/// MaxAge and LastUsage of the model test under an exact clock.
const MAX_AGE: Duration = Duration::from_secs(10);
const LAST_USAGE: Duration = Duration::from_secs(4);

fn index() -> impl Strategy<Value = TestIndex> {
    prop_oneof![Just(TestIndex::Id), Just(TestIndex::Name)]
}

fn key_of(index: TestIndex) -> BoxedStrategy<String> {
    let pool = if index == TestIndex::Id { IDS } else { NAMES };
    proptest::sample::select(pool)
        .prop_map(str::to_owned)
        .boxed()
}

fn op(with_time: bool) -> BoxedStrategy<Op> {
    let set = (
        proptest::sample::select(IDS),
        proptest::collection::vec(proptest::sample::select(NAMES), 0..=3),
    )
        .prop_map(|(id, names)| Op::Set(TestEntry::new(id, &names)));
    let get = index().prop_flat_map(|i| key_of(i).prop_map(move |k| Op::Get(i, k)));
    let keys = |i| proptest::collection::vec(key_of(i), 0..=2);
    let invalidate =
        index().prop_flat_map(move |i| keys(i).prop_map(move |k| Op::Invalidate(i, k)));
    let delete = index().prop_flat_map(move |i| keys(i).prop_map(move |k| Op::Delete(i, k)));
    let advance = proptest::sample::select(&[1u64, 1_000, 2_999, 3_999, 4_000, 6_000, 10_000][..])
        .prop_map(|ms| Op::Advance(Duration::from_millis(ms)));
    if with_time {
        prop_oneof![
            4 => set,
            6 => get,
            2 => invalidate,
            1 => delete,
            1 => Just(Op::Truncate),
            3 => advance,
        ]
        .boxed()
    } else {
        prop_oneof![
            4 => set,
            6 => get,
            2 => invalidate,
            1 => delete,
            1 => Just(Op::Truncate),
        ]
        .boxed()
    }
}

struct Object {
    entry: TestEntry,
    created: Timestamp,
    last_used: Timestamp,
}

/// The contract in a few lines: objects by number, and a map from (index, key) to object.
struct Model {
    expiry: Expiry,
    now: Timestamp,
    objects: HashMap<u64, Object>,
    keys: HashMap<(TestIndex, String), u64>,
    next: u64,
}

impl Model {
    fn new(expiry: Expiry) -> Self {
        Model {
            expiry,
            now: Timestamp::from_micros(1_000_000_000_000),
            objects: HashMap::new(),
            keys: HashMap::new(),
            next: 0,
        }
    }

    fn remove_object(&mut self, number: u64) {
        self.objects.remove(&number);
        self.keys.retain(|_, n| *n != number);
    }

    fn set(&mut self, entry: TestEntry) {
        let keys: Vec<(TestIndex, String)> = TestIndex::BUILT
            .iter()
            .flat_map(|&i| entry.keys(i).into_iter().map(move |k| (i, k)))
            .collect();
        for key in &keys {
            if let Some(older) = self.keys.get(key).copied() {
                self.remove_object(older);
            }
        }
        let number = self.next;
        self.next += 1;
        for key in keys {
            self.keys.insert(key, number);
        }
        let now = self.now;
        self.objects.insert(
            number,
            Object {
                entry,
                created: now,
                last_used: now,
            },
        );
    }

    fn get(&mut self, index: TestIndex, key: &str) -> Option<TestEntry> {
        let number = *self.keys.get(&(index, key.to_owned()))?;
        let (expiry, now) = (self.expiry, self.now);
        let object = self.objects.get_mut(&number)?;
        if expiry.is_expired(object.created, object.last_used, now) {
            return None;
        }
        object.last_used = now;
        Some(object.entry.clone())
    }

    fn invalidate(&mut self, index: TestIndex, keys: &[String]) {
        for key in keys {
            if let Some(number) = self.keys.get(&(index, key.clone())).copied() {
                self.remove_object(number);
            }
        }
    }

    fn delete(&mut self, index: TestIndex, keys: &[String]) {
        for key in keys {
            self.keys.remove(&(index, key.clone()));
        }
    }
}

use crate::Entry as _;

async fn run_sequence(
    fixture: &dyn Fixture,
    settings: &CacheSettings,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let cache: TestCache = fixture
        .cache(&unique_purpose("model"), TestIndex::BUILT, settings)
        .await;
    let mut model = Model::new(settings.expiry());
    for (step, op) in ops.into_iter().enumerate() {
        let failed = |what: &str, e: crate::Error| {
            TestCaseError::fail(format!("step {step}: {what} failed: {e}"))
        };
        match op {
            Op::Set(entry) => {
                let entry = entry.revision(step as u64);
                cache
                    .set(Arc::new(entry.clone()))
                    .await
                    .map_err(|e| failed("set", e))?;
                model.set(entry);
            }
            Op::Get(index, key) => {
                let got = cache
                    .get(index, &key)
                    .await
                    .map_err(|e| failed("get", e))?
                    .map(|e| (*e).clone());
                let expected = model.get(index, &key);
                prop_assert_eq!(
                    got,
                    expected,
                    "step {}: get({:?}, {:?}): connector (left) and model (right) differ",
                    step,
                    index,
                    key
                );
            }
            Op::Invalidate(index, keys) => {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                cache
                    .invalidate(index, &refs)
                    .await
                    .map_err(|e| failed("invalidate", e))?;
                model.invalidate(index, &keys);
            }
            Op::Delete(index, keys) => {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                cache
                    .delete(index, &refs)
                    .await
                    .map_err(|e| failed("delete", e))?;
                model.delete(index, &keys);
            }
            Op::Truncate => {
                cache.truncate().await.map_err(|e| failed("truncate", e))?;
                model.objects.clear();
                model.keys.clear();
            }
            Op::Advance(d) => {
                fixture.advance(d).await;
                model.now = model.now.saturating_add(d);
            }
        }
    }
    Ok(())
}

/// Runs the model test against the fixture `make` builds (inside the test's runtime);
/// `None` from `make` skips the test (the fixture printed why). Panics with the shrunk
/// sequence on the first divergence.
///
/// 64 sequences of up to 40 operations by default; `PROPTEST_CASES` overrides the count.
pub fn check<F, Fut>(make: impl FnOnce() -> Fut)
where
    F: Fixture,
    Fut: Future<Output = Option<F>>,
{
    let runtime = super::runtime();
    let Some(fixture) = runtime.block_on(make()) else {
        return;
    };
    let with_time = fixture.exact_time();
    let settings = if with_time {
        CacheSettings {
            max_age: MAX_AGE,
            last_usage: LAST_USAGE,
            ..CacheSettings::default()
        }
    } else {
        CacheSettings {
            max_age: Duration::ZERO,
            last_usage: Duration::ZERO,
            ..CacheSettings::default()
        }
    };
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        Config::default().cases
    } else {
        64
    };
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = proptest::collection::vec(op(with_time), 1..40);
    let outcome = runner.run(&strategy, |ops| {
        runtime.block_on(run_sequence(&fixture, &settings, ops))
    });
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "the connector diverged from the model: {reason}\nminimal sequence ({} ops):\n{}",
            ops.len(),
            ops.iter()
                .enumerate()
                .map(|(i, op)| format!("  {i:>2}: {op:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(TestError::Abort(reason)) => panic!("the model test was aborted: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, names: &[&str]) -> TestEntry {
        TestEntry::new(id, names)
    }

    #[test]
    fn model_set_removes_older_objects_entirely() {
        let mut m = Model::new(Expiry::default());
        m.set(entry("a", &["x", "y"]));
        m.set(entry("b", &["y"]));
        assert!(m.get(TestIndex::Name, "x").is_none(), "no ghost through x");
        assert!(m.get(TestIndex::Id, "a").is_none());
        assert_eq!(m.get(TestIndex::Name, "y").map(|e| e.id), Some("b".into()));
    }

    #[test]
    fn model_delete_keeps_other_keys_and_hits_renew() {
        let mut m = Model::new(Expiry {
            max_age: Duration::ZERO,
            last_usage: Duration::from_secs(4),
        });
        m.set(entry("a", &["x"]));
        m.delete(TestIndex::Name, &["x".into()]);
        assert!(m.get(TestIndex::Name, "x").is_none());
        m.now = m.now.saturating_add(Duration::from_secs(3));
        assert!(m.get(TestIndex::Id, "a").is_some());
        m.now = m.now.saturating_add(Duration::from_secs(3));
        assert!(m.get(TestIndex::Id, "a").is_some(), "the hit renewed it");
        m.now = m.now.saturating_add(Duration::from_secs(4));
        assert!(m.get(TestIndex::Id, "a").is_none());
    }
}
