//! [`Change`]: a change of an object cache, as kept, replayed and announced by decorators.

/// A change of one object cache: what an invalidate, delete or truncate did. Decorators keep
/// changes they could not deliver (the circuit breaker) and announce changes to other
/// processes (the near cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<I> {
    /// The objects reachable through these keys of the index are gone, through every index.
    Invalidate(I, Vec<String>),
    /// These key mappings of the index are gone; their objects stay reachable otherwise.
    Delete(I, Vec<String>),
    /// Everything in the object cache is gone.
    Truncate,
}

impl<I> Change<I> {
    /// How many keys the change names (a truncate names none).
    pub fn keys(&self) -> usize {
        match self {
            Change::Invalidate(_, keys) | Change::Delete(_, keys) => keys.len(),
            Change::Truncate => 0,
        }
    }
}

/// Told about changes that reached the backend later than they were made: a circuit breaker
/// delivering what it kept during an outage. The near cache listens, so the other processes
/// hear of such a change once it is in effect.
pub type ChangeListener<I> = std::sync::Arc<dyn Fn(&Change<I>) + Send + Sync>;
