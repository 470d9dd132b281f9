//! Leases (SPEC 12): across processes, one load per miss of a key of a shared level, and no
//! fill that a change overtook.
//!
//! A read-through miss asks the shared level for a [`Lease`] on the key — atomically with
//! checking it once more. The holder loads and fills with its [`LeaseToken`]; the shared level
//! stores that fill only if nothing changed the key (nor any other key of the object) since the
//! lease was taken: a set, an invalidation, a delete or a truncate in between makes the fill
//! [`Refused`](Filled::Refused) — the caller still gets what it loaded, but it is not cached.
//! Every other process that misses finds the lease [`Held`](Lease::Held) and waits for the
//! fill instead of loading, up to the lease's expiry; then one of them takes the lease over.

use std::time::Duration;

use crate::cache::Hit;

/// What asking for a lease on a missed key found.
#[derive(Debug)]
pub enum Lease<V> {
    /// The object is there after all (filled meanwhile): a hit.
    Hit(Hit<V>),
    /// This caller holds the lease: load, then fill with the token.
    Granted(LeaseToken),
    /// Another process holds the lease, for about this much longer: wait for its fill.
    Held(Duration),
    /// The cache keeps no leases (an in-process cache, or leases switched off): load, then set.
    None,
}

/// The proof of a lease on one key, handed back with the fill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseToken {
    /// The index of the key leased.
    pub index: &'static str,
    /// The key leased.
    pub key: String,
    /// The lease's own token (unique per lease).
    pub token: String,
}

/// What the shared level did with a fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filled {
    /// Stored.
    Stored,
    /// Not stored: a change overtook the load (or the lease expired and was taken over).
    Refused,
}
