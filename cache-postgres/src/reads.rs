//! [`Reads`]: the gets of one object cache and index, with at most a set number of read
//! statements running at once; gets that arrive while that many run wait and are answered
//! together by the next statement, one lookup for all their keys.
//!
//! Without load nothing waits: a get that finds a free turn runs its statement at once, alone.
//! Under load the server runs one statement for many gets instead of one each — a statement's
//! fixed cost (bind, snapshot, locks, executor start, the round trip) dominates a key lookup,
//! so this is what keeps a busy database fast.
//!
//! Turns pass from get to get: a get that finished its statement hands its turn, with every
//! get that queued meanwhile, to the first of them, and returns. So each get runs at most one
//! statement, and queued gets are served in arrival order. A get dropped at any point (its
//! caller gave up) passes on whatever turn it holds, so no turn is ever lost.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cache_core::{Error, FailureEvent, Result};
use tokio::sync::oneshot;

/// Most keys one statement looks up; a longer queue is served by the following turns.
pub(crate) const MAX_KEYS: usize = 512;

/// The reads of one object cache and index. `T` is what a found key yields.
#[derive(Debug)]
pub(crate) struct Reads<T> {
    /// Read statements allowed at once.
    turns: usize,
    /// Longest a queued get waits for its answer.
    wait: Duration,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// Turns taken (statements running or about to).
    taken: usize,
    /// Gets waiting for a turn, oldest first.
    queue: Vec<Waiter<T>>,
}

/// A queued get.
#[derive(Debug)]
struct Waiter<T> {
    key: String,
    reply: oneshot::Sender<Message<T>>,
}

/// What a queued get receives.
#[derive(Debug)]
enum Message<T> {
    /// Its key's lookup, done by another get.
    Answer(Result<Option<T>>),
    /// The turn: run the statement for its own key and for these gets.
    Turn(Vec<Waiter<T>>),
}

impl<T: Clone> Reads<T> {
    /// Reads allowing `turns` statements at once (at least 1), where a queued get gives up
    /// after `wait`.
    pub(crate) fn new(turns: usize, wait: Duration) -> Self {
        Reads {
            turns: turns.max(1),
            wait,
            state: Mutex::new(State {
                taken: 0,
                queue: Vec::new(),
            }),
        }
    }

    /// What `key` yields, looked up by `lookup` — for this key alone, or for it and the keys of
    /// the gets that queued meanwhile. `lookup` gets distinct keys and returns what it found
    /// for each; a key it did not find is a miss.
    pub(crate) async fn get<F, Fut>(&self, key: &str, lookup: F) -> Result<Option<T>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>>>,
    {
        let queued = {
            let mut state = self.lock();
            if state.taken < self.turns {
                state.taken += 1;
                None
            } else {
                let (reply, answer) = oneshot::channel();
                state.queue.push(Waiter {
                    key: key.to_owned(),
                    reply,
                });
                Some(answer)
            }
        };
        let Some(answer) = queued else {
            return self.run(key, Vec::new(), lookup).await;
        };
        let mut answer = Pending {
            reads: self,
            answer,
        };
        match tokio::time::timeout(self.wait, &mut answer.answer).await {
            Ok(Ok(Message::Answer(result))) => result,
            Ok(Ok(Message::Turn(others))) => self.run(key, others, lookup).await,
            // Every turn ends by answering its gets (see `Turn::drop`): not expected.
            Ok(Err(_)) => Err(Error::backend(
                "postgres: a read was dropped without an answer; please report this",
            )),
            Err(_) => Err(Error::timeout(
                "postgres: no answer within Caches.Connectors.Postgres.StatementTimeout \
                 (plus PoolTimeout) while waiting for a read statement; the database is slow \
                 or the pool too small",
            )),
        }
    }

    /// Runs one statement for `key` and the keys of `others` on a turn this get holds, answers
    /// `others`, then passes the turn on.
    async fn run<F, Fut>(&self, key: &str, others: Vec<Waiter<T>>, lookup: F) -> Result<Option<T>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, T>>>,
    {
        let mut turn = Turn {
            reads: self,
            others,
        };
        let mut keys = vec![key.to_owned()];
        if !turn.others.is_empty() {
            let mut seen = HashSet::with_capacity(turn.others.len() + 1);
            seen.insert(key);
            for other in &turn.others {
                if seen.insert(&other.key) {
                    keys.push(other.key.clone());
                }
            }
        }
        let mut result = lookup(keys).await;
        if let Err(e) = &mut result
            && e.event().is_none()
            && !turn.others.is_empty()
        {
            // One statement failed for all these gets: one failure for the breaker.
            *e = mem::replace(e, Error::backend("")).with_event(FailureEvent::new());
        }
        for other in mem::take(&mut turn.others) {
            let answer = match &result {
                Ok(found) => Ok(found.get(&other.key).cloned()),
                Err(e) => Err(copy(e)),
            };
            // A get that gave up no longer listens: nothing to do.
            let _ = other.reply.send(Message::Answer(answer));
        }
        drop(turn);
        result.map(|mut found| found.remove(key))
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A taken turn. Dropping it — after its statement, or when its get is dropped midway —
/// passes it to the first queued get still listening (with the rest of the queue, or the
/// gets it was to answer), or gives it back when nobody waits.
struct Turn<'r, T> {
    reads: &'r Reads<T>,
    /// Gets this turn still has to answer (only left when its get was dropped midway).
    others: Vec<Waiter<T>>,
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        let mut next = mem::take(&mut self.others);
        loop {
            if next.is_empty() {
                let mut state = self
                    .reads
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if state.queue.is_empty() {
                    state.taken -= 1;
                    return;
                }
                let take = state.queue.len().min(MAX_KEYS);
                next = state.queue.drain(..take).collect();
            }
            let first = next.remove(0);
            match first.reply.send(Message::Turn(next)) {
                Ok(()) => return,
                // That get gave up: the next one takes the turn.
                Err(Message::Turn(rest)) => next = rest,
                Err(Message::Answer(_)) => unreachable!("a turn was sent"),
            }
        }
    }
}

/// A queued get's receiver. When the get stops listening (it timed out or was dropped), a
/// turn already sent to it is passed on, not lost.
struct Pending<'r, T> {
    reads: &'r Reads<T>,
    answer: oneshot::Receiver<Message<T>>,
}

impl<T> Drop for Pending<'_, T> {
    fn drop(&mut self) {
        self.answer.close();
        if let Ok(Message::Turn(others)) = self.answer.try_recv() {
            drop(Turn {
                reads: self.reads,
                others,
            });
        }
    }
}

/// The same error for another get (the source stays with the get that ran the statement).
fn copy(e: &Error) -> Error {
    let copy = Error::new(e.kind(), e.message()).set_temporary(e.is_temporary());
    match e.event() {
        Some(event) => copy.with_event(event),
        None => copy,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cache_core::ErrorKind;
    use tokio::sync::Notify;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// What a test lookup returns.
    type Found = std::pin::Pin<Box<dyn Future<Output = Result<HashMap<String, usize>>> + Send>>;

    /// A lookup that records its keys, waits for `gate` when given, and finds every key
    /// except "missing", yielding the key's length.
    fn lookup(
        calls: &Arc<Mutex<Vec<Vec<String>>>>,
        gate: Option<Arc<Notify>>,
    ) -> impl FnOnce(Vec<String>) -> Found + use<> {
        let calls = Arc::clone(calls);
        move |keys| {
            Box::pin(async move {
                calls.lock().unwrap().push(keys.clone());
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                Ok(keys
                    .into_iter()
                    .filter(|k| k != "missing")
                    .map(|k| (k.clone(), k.len()))
                    .collect())
            })
        }
    }

    fn taken<T: Clone>(reads: &Reads<T>) -> (usize, usize) {
        let state = reads.lock();
        (state.taken, state.queue.len())
    }

    async fn until(mut condition: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition not reached within 1 s");
    }

    #[tokio::test]
    async fn without_load_each_get_runs_alone() {
        let reads = Reads::new(2, WAIT);
        let calls = Arc::new(Mutex::new(Vec::new()));
        assert_eq!(
            reads.get("abc", lookup(&calls, None)).await.unwrap(),
            Some(3)
        );
        assert_eq!(
            reads.get("missing", lookup(&calls, None)).await.unwrap(),
            None
        );
        assert_eq!(*calls.lock().unwrap(), [vec!["abc"], vec!["missing"]]);
        assert_eq!(taken(&reads), (0, 0));
    }

    #[tokio::test]
    async fn gets_queued_behind_busy_turns_share_one_statement() {
        let reads = Arc::new(Reads::new(1, WAIT));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let first = tokio::spawn({
            let (reads, calls, gate) = (reads.clone(), calls.clone(), gate.clone());
            async move { reads.get("a", lookup(&calls, Some(gate))).await }
        });
        until(|| calls.lock().unwrap().len() == 1).await;
        let mut queued = Vec::new();
        for key in ["bb", "ccc", "bb", "missing"] {
            let (reads, calls) = (reads.clone(), calls.clone());
            queued.push(tokio::spawn(async move {
                reads.get(key, lookup(&calls, None)).await
            }));
        }
        until(|| taken(&reads) == (1, 4)).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), Some(1));
        let mut answers = Vec::new();
        for get in queued {
            answers.push(get.await.unwrap().unwrap());
        }
        assert_eq!(answers, [Some(2), Some(3), Some(2), None]);
        // One statement for the queue, each key once.
        assert_eq!(
            *calls.lock().unwrap(),
            [vec!["a"], vec!["bb", "ccc", "missing"]]
        );
        assert_eq!(taken(&reads), (0, 0));
    }

    #[tokio::test]
    async fn one_failed_statement_is_one_failure_event_for_all_its_gets() {
        let reads = Arc::new(Reads::<usize>::new(1, WAIT));
        let gate = Arc::new(Notify::new());
        let first = tokio::spawn({
            let (reads, gate) = (reads.clone(), gate.clone());
            async move {
                reads
                    .get("a", move |_keys| async move {
                        gate.notified().await;
                        Ok(HashMap::new())
                    })
                    .await
            }
        });
        until(|| taken(&reads) == (1, 0)).await;
        let failing = |_keys: Vec<String>| async move {
            Err::<HashMap<String, usize>, _>(Error::timeout("slow"))
        };
        let second = tokio::spawn({
            let reads = reads.clone();
            async move { reads.get("b", failing).await }
        });
        until(|| taken(&reads) == (1, 1)).await;
        let third = tokio::spawn({
            let reads = reads.clone();
            async move { reads.get("c", failing).await }
        });
        until(|| taken(&reads) == (1, 2)).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), None);
        let (second, third) = (
            second.await.unwrap().unwrap_err(),
            third.await.unwrap().unwrap_err(),
        );
        assert_eq!(second.kind(), ErrorKind::Timeout);
        assert!(
            second.event().is_some(),
            "the statement's failure is an event"
        );
        assert_eq!(second.event(), third.event(), "one event for both gets");
    }

    #[tokio::test]
    async fn an_error_reaches_every_queued_get() {
        let reads = Arc::new(Reads::<usize>::new(1, WAIT));
        let gate = Arc::new(Notify::new());
        let failing = |gate: Option<Arc<Notify>>| {
            move |_keys: Vec<String>| async move {
                if let Some(gate) = gate {
                    gate.notified().await;
                }
                Err::<HashMap<String, usize>, _>(Error::unavailable("down"))
            }
        };
        let first = tokio::spawn({
            let (reads, gate) = (reads.clone(), gate.clone());
            async move { reads.get("a", failing(Some(gate))).await }
        });
        until(|| taken(&reads) == (1, 0)).await;
        let second = tokio::spawn({
            let reads = reads.clone();
            async move { reads.get("b", failing(None)).await }
        });
        until(|| taken(&reads) == (1, 1)).await;
        gate.notify_one();
        let second = second.await.unwrap().unwrap_err();
        assert_eq!(
            first.await.unwrap().unwrap_err().kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(second.kind(), ErrorKind::Unavailable);
        assert!(second.is_temporary());
        assert_eq!(taken(&reads), (0, 0));
    }

    #[tokio::test]
    async fn a_get_dropped_while_holding_a_turn_passes_it_on() {
        let reads = Arc::new(Reads::new(1, WAIT));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let never = Arc::new(Notify::new());
        let first = tokio::spawn({
            let (reads, calls, never) = (reads.clone(), calls.clone(), never.clone());
            async move { reads.get("a", lookup(&calls, Some(never))).await }
        });
        until(|| taken(&reads) == (1, 0)).await;
        let second = tokio::spawn({
            let (reads, calls) = (reads.clone(), calls.clone());
            async move { reads.get("bb", lookup(&calls, None)).await }
        });
        until(|| taken(&reads) == (1, 1)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(second.await.unwrap().unwrap(), Some(2));
        assert_eq!(taken(&reads), (0, 0));
    }

    #[tokio::test]
    async fn queued_gets_that_gave_up_are_skipped_and_lose_no_turn() {
        let reads = Arc::new(Reads::new(1, Duration::from_millis(50)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Notify::new());
        let first = tokio::spawn({
            let (reads, calls, gate) = (reads.clone(), calls.clone(), gate.clone());
            async move { reads.get("a", lookup(&calls, Some(gate))).await }
        });
        until(|| taken(&reads) == (1, 0)).await;
        // Gives up after 50 ms; another is dropped by its caller.
        let impatient = reads.get("bb", lookup(&calls, None)).await.unwrap_err();
        assert_eq!(impatient.kind(), ErrorKind::Timeout);
        let dropped = tokio::spawn({
            let (reads, calls) = (reads.clone(), calls.clone());
            async move { reads.get("ccc", lookup(&calls, None)).await }
        });
        until(|| taken(&reads).1 == 2).await;
        dropped.abort();
        let _ = dropped.await;
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), Some(1));
        assert_eq!(taken(&reads), (0, 0));
        assert_eq!(*calls.lock().unwrap(), [vec!["a"]]);
        // The turn is free again.
        assert_eq!(
            reads.get("dddd", lookup(&calls, None)).await.unwrap(),
            Some(4)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_gets_all_get_their_answer() {
        let reads = Arc::new(Reads::new(2, WAIT));
        let statements = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for task in 0..32 {
            let (reads, statements) = (reads.clone(), statements.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..200 {
                    let key = format!("{task}-{n}");
                    let statements = statements.clone();
                    let found = reads
                        .get(&key, |keys| async move {
                            statements.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            Ok(keys.into_iter().map(|k| (k.clone(), k)).collect())
                        })
                        .await
                        .unwrap();
                    assert_eq!(found, Some(key));
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(taken(&reads), (0, 0));
        let statements = statements.load(Ordering::Relaxed);
        assert!(
            statements < 32 * 200,
            "{statements} statements for 6400 gets: none shared"
        );
    }
}
