//! [`Pending`]: the invalidations one object cache could not deliver, kept until the backend
//! is reachable again, within a memory budget.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cache_core::Index;

/// Keys held per object cache by default before the pending invalidations are replaced by
/// one truncate of the cache.
pub const DEFAULT_PENDING_KEYS: usize = 10_000;

/// One undelivered change (a truncate also when the budget overflowed).
pub(crate) type Op<I> = cache_core::Change<I>;

/// The queue of undelivered changes. `dirty` lets the hot path skip the lock.
#[derive(Debug)]
pub(crate) struct Pending<I> {
    dirty: AtomicBool,
    limit: usize,
    queue: Mutex<Queue<I>>,
}

#[derive(Debug)]
struct Queue<I> {
    ops: VecDeque<(u64, Op<I>)>,
    next: u64,
    keys: usize,
    /// Each key a queued invalidation holds, and the change that holds it: an invalidation
    /// of a key already queued behind the front adds nothing (all are delivered together,
    /// after every one of them was made), so an outage under load keeps each key once.
    invalidated: HashMap<(I, String), u64>,
}

impl<I: Index> Queue<I> {
    /// Forgets the keys of `op`, change `seq`, leaving the queue.
    fn forget(&mut self, seq: u64, op: &Op<I>) {
        self.keys -= op.keys();
        if let Op::Invalidate(index, keys) = op {
            for key in keys {
                let entry = (*index, key.clone());
                if self.invalidated.get(&entry) == Some(&seq) {
                    self.invalidated.remove(&entry);
                }
            }
        }
    }

    /// Remembers the keys of `op`, change `seq`, entering the queue.
    fn remember(&mut self, seq: u64, op: &Op<I>) {
        self.keys += op.keys();
        if let Op::Invalidate(index, keys) = op {
            for key in keys {
                self.invalidated.insert((*index, key.clone()), seq);
            }
        }
    }

    /// `op` without the keys a queued invalidation behind the front already holds (the front
    /// may be on its way to the backend already); `None` when nothing is left.
    fn news(&self, op: Op<I>) -> Option<Op<I>> {
        let Op::Invalidate(index, keys) = op else {
            return Some(op);
        };
        let front = self.ops.front().map(|(seq, _)| *seq);
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|key| match self.invalidated.get(&(index, key.clone())) {
                Some(seq) => Some(*seq) == front,
                None => true,
            })
            .collect();
        (!keys.is_empty()).then_some(Op::Invalidate(index, keys))
    }
}

impl<I: Index> Pending<I> {
    pub(crate) fn new(limit: usize) -> Self {
        Pending {
            dirty: AtomicBool::new(false),
            limit,
            queue: Mutex::new(Queue {
                ops: VecDeque::new(),
                next: 0,
                keys: 0,
                invalidated: HashMap::new(),
            }),
        }
    }

    /// Whether anything waits to be delivered.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Keys waiting to be delivered (a pending truncate counts as none).
    pub(crate) fn keys(&self) -> usize {
        self.lock().keys
    }

    /// Keeps `op` for later. Past the budget, everything pending becomes one truncate; once a
    /// truncate is pending, nothing else needs keeping.
    pub(crate) fn push(&self, op: Op<I>) {
        let mut queue = self.lock();
        let truncating = matches!(queue.ops.front(), Some((_, Op::Truncate)));
        if !truncating && let Some(op) = queue.news(op) {
            let keys = op.keys();
            if op == Op::Truncate || queue.keys + keys > self.limit {
                if op != Op::Truncate {
                    tracing::warn!(
                        pending_keys = queue.keys + keys,
                        limit = self.limit,
                        "too many undelivered invalidations to keep: the cache will be \
                         truncated when its backend is reachable again"
                    );
                }
                queue.ops.clear();
                queue.keys = 0;
                queue.invalidated.clear();
                let seq = queue.next;
                queue.ops.push_back((seq, Op::Truncate));
            } else {
                let seq = queue.next;
                queue.remember(seq, &op);
                queue.ops.push_back((seq, op));
            }
            queue.next += 1;
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// The oldest pending change and its sequence number.
    pub(crate) fn front(&self) -> Option<(u64, Op<I>)> {
        self.lock().ops.front().cloned()
    }

    /// Removes the change `seq` after it was delivered (unless it was replaced meanwhile).
    pub(crate) fn delivered(&self, seq: u64) {
        let mut queue = self.lock();
        if queue.ops.front().is_some_and(|(s, _)| *s == seq)
            && let Some((_, op)) = queue.ops.pop_front()
        {
            queue.forget(seq, &op);
        }
        if queue.ops.is_empty() {
            self.dirty.store(false, Ordering::Release);
        }
    }

    /// Replaces the change `seq` (unless it was replaced meanwhile) by `op`, or drops it when
    /// `op` is `None`: for a change the backend refuses for good.
    pub(crate) fn replace_front(&self, seq: u64, op: Option<Op<I>>) {
        match op {
            None => self.delivered(seq),
            Some(op) => {
                let mut queue = self.lock();
                if queue.ops.front().is_some_and(|(front, _)| *front == seq) {
                    let old = std::mem::replace(&mut queue.ops[0].1, op.clone());
                    queue.forget(seq, &old);
                    queue.remember(seq, &op);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue<I>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use cache_core::testkit::TestIndex::{self, Id, Name};

    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    /// Delivers the change at the front of the queue.
    fn deliver_front(p: &Pending<TestIndex>) {
        let (seq, _) = p.front().expect("a change is queued");
        p.delivered(seq);
    }

    #[test]
    fn keeps_changes_in_order_and_forgets_delivered_ones() {
        let p = Pending::new(10);
        assert!(!p.is_dirty());
        p.push(Op::Invalidate(Id, keys(2)));
        p.push(Op::Delete(Name, keys(3)));
        assert!(p.is_dirty());
        assert_eq!(p.keys(), 5);
        let (seq, op) = p.front().unwrap();
        assert_eq!(op, Op::Invalidate(Id, keys(2)));
        p.delivered(seq);
        assert_eq!(p.keys(), 3);
        p.delivered(seq); // twice is harmless
        deliver_front(&p);
        assert!(!p.is_dirty());
        assert!(p.front().is_none());
    }

    #[test]
    fn overflow_and_truncate_collapse_into_one_truncate() {
        let p = Pending::new(4);
        p.push(Op::Invalidate(Id, keys(3)));
        p.push(Op::Invalidate(Id, keys(2))); // 5 > 4
        assert_eq!(p.front().map(|(_, op)| op), Some(Op::Truncate));
        p.push(Op::Invalidate(Name, keys(1))); // covered by the truncate
        deliver_front(&p);
        assert!(!p.is_dirty());

        p.push(Op::Invalidate(Id, keys(1)));
        p.push(Op::Truncate);
        assert_eq!(p.front().map(|(_, op)| op), Some(Op::Truncate));
        assert_eq!(p.keys(), 0);
    }

    #[test]
    fn an_invalidation_already_queued_behind_the_front_is_kept_once() {
        let p = Pending::new(10);
        p.push(Op::Delete(Name, keys(1)));
        for _ in 0..1_000 {
            p.push(Op::Invalidate(Id, keys(2)));
        }
        assert_eq!(
            p.keys(),
            3,
            "each key once, however often it was invalidated"
        );
        p.push(Op::Invalidate(Id, keys(3)));
        assert_eq!(p.keys(), 4, "only the new key is added");
        assert_eq!(
            p.front().map(|(_, op)| op),
            Some(Op::Delete(Name, keys(1))),
            "order kept"
        );
        // Delivering the front (the delete) keeps the queued invalidations.
        deliver_front(&p);
        let (seq, front) = p.front().unwrap();
        assert_eq!(front, Op::Invalidate(Id, keys(2)));
        // The front may be on its way: an invalidation made now is kept again.
        p.push(Op::Invalidate(Id, keys(1)));
        p.delivered(seq);
        assert_eq!(
            p.front().map(|(_, op)| op),
            Some(Op::Invalidate(Id, vec!["2".into()]))
        );
        deliver_front(&p);
        assert_eq!(
            p.front().map(|(_, op)| op),
            Some(Op::Invalidate(Id, keys(1))),
            "the one made while the front was delivered is still there"
        );
        deliver_front(&p);
        assert!(!p.is_dirty());
        // Delivered keys are forgotten: invalidating them again keeps them again.
        p.push(Op::Invalidate(Id, keys(2)));
        assert_eq!(p.keys(), 2);
    }
}
