//! [`Pending`]: the invalidations one object cache could not deliver, kept until the backend
//! is reachable again, within a memory budget.

use std::collections::VecDeque;
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
        if !truncating {
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
                let seq = queue.next;
                queue.ops.push_back((seq, Op::Truncate));
            } else {
                let seq = queue.next;
                queue.ops.push_back((seq, op));
                queue.keys += keys;
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
            queue.keys -= op.keys();
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
                if let Some((front, kept)) = queue.ops.front_mut()
                    && *front == seq
                {
                    let keys = kept.keys();
                    *kept = op;
                    queue.keys -= keys;
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
    use cache_core::testkit::TestIndex::{Id, Name};

    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
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
        let (seq, _) = p.front().unwrap();
        p.delivered(seq);
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
        let (seq, _) = p.front().unwrap();
        p.delivered(seq);
        assert!(!p.is_dirty());

        p.push(Op::Invalidate(Id, keys(1)));
        p.push(Op::Truncate);
        assert_eq!(p.front().map(|(_, op)| op), Some(Op::Truncate));
        assert_eq!(p.keys(), 0);
    }
}
