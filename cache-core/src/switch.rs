//! [`Switch`]: a value replaced at runtime (an object cache's backend) that a hot path reads
//! without an atomic read-modify-write.
//!
//! An `ArcSwap` load costs two locked instructions (~12 ns here, a third of a memory hit).
//! A `Switch` keeps, per thread, the `Arc` it last loaded and the generation it was loaded
//! at; a read compares that generation with the current one (a plain load of a line that
//! only changes on a switch) and reloads only when it moved (~2 ns measured).
//!
//! The price: a replaced value stays alive until every thread that read it reads again or the
//! `Switch` is dropped. Nothing reads it meanwhile: a read that starts after
//! [`swap`](Switch::swap) returned sees the new value.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use thread_local::ThreadLocal;

/// What one thread last read. Aligned so that each thread's copy (whose borrow flag a read
/// writes) has cache lines of its own: `ThreadLocal` keeps the threads' entries side by side.
#[repr(align(128))]
struct Seen<T> {
    generation: u64,
    value: Arc<T>,
}

/// A value replaced at runtime, read per thread (see the [module docs](self)).
pub(crate) struct Switch<T: Send + Sync> {
    current: ArcSwap<T>,
    /// Bumped after every store, so a thread's copy is stale when its generation differs.
    generation: AtomicU64,
    seen: ThreadLocal<RefCell<Seen<T>>>,
}

impl<T: Send + Sync> Switch<T> {
    pub(crate) fn new(value: T) -> Self {
        Switch {
            current: ArcSwap::from_pointee(value),
            generation: AtomicU64::new(0),
            seen: ThreadLocal::new(),
        }
    }

    /// The current value, as an `Arc` the caller may keep (e.g. across an `await`).
    pub(crate) fn load_full(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Runs `read` on the current value, through this thread's copy.
    #[inline]
    pub(crate) fn read<R>(&self, read: impl FnOnce(&T) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        let cell = self.seen.get_or(|| {
            RefCell::new(Seen {
                generation,
                value: self.current.load_full(),
            })
        });
        if let Ok(seen) = cell.try_borrow()
            && seen.generation == generation
        {
            return read(&seen.value);
        }
        self.reload(cell, generation, read)
    }

    /// The slow path of [`read`](Self::read): this thread's copy is outdated (or in use by a
    /// read further up this thread's stack, which a `read` inside `read` would find).
    #[cold]
    fn reload<R>(&self, cell: &RefCell<Seen<T>>, generation: u64, read: impl FnOnce(&T) -> R) -> R {
        // Loaded after the generation: a store bumps the generation after the value, so this
        // is the value of `generation` or a newer one (then the next read reloads again).
        let value = self.current.load_full();
        if let Ok(mut seen) = cell.try_borrow_mut() {
            *seen = Seen {
                generation,
                value: Arc::clone(&value),
            };
        }
        read(&value)
    }

    /// Replaces the value; returns the previous one.
    pub(crate) fn swap(&self, value: Arc<T>) -> Arc<T> {
        let previous = self.current.swap(value);
        self.generation.fetch_add(1, Ordering::Release);
        previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_reads_the_value_stored_before_its_read() {
        let switch = Switch::new(0u32);
        assert_eq!(switch.read(|v| *v), 0);
        for n in 1..=3u32 {
            assert_eq!(*switch.swap(Arc::new(n)), n - 1);
            assert_eq!(switch.read(|v| *v), n, "this thread's copy is renewed");
            std::thread::scope(|s| {
                s.spawn(|| assert_eq!(switch.read(|v| *v), n))
                    .join()
                    .unwrap();
            });
        }
    }

    #[test]
    fn a_read_inside_a_read_sees_the_same_or_a_newer_value() {
        let switch = Switch::new(1u32);
        switch.read(|outer| {
            assert_eq!(*outer, 1);
            switch.swap(Arc::new(2));
            // This thread's copy is borrowed by the outer read: the inner read goes around it.
            assert_eq!(switch.read(|inner| *inner), 2);
        });
        assert_eq!(switch.read(|v| *v), 2);
    }

    #[test]
    fn a_replaced_value_is_released_when_its_threads_read_again() {
        let first = Arc::new(1u32);
        let switch = Switch::new(0u32);
        switch.swap(Arc::clone(&first));
        assert_eq!(switch.read(|v| *v), 1);
        switch.swap(Arc::new(2));
        assert_eq!(
            Arc::strong_count(&first),
            2,
            "this thread's copy still holds it"
        );
        assert_eq!(switch.read(|v| *v), 2);
        assert_eq!(Arc::strong_count(&first), 1, "released by the next read");
    }
}
