//! [`Flights`]: one load at a time per key (single flight), for `ObjectCache::get_or_load`.
//!
//! The first read-through miss of a key starts a flight: its load runs as a task of its own,
//! so it finishes even if every caller waiting for it gives up (a dropped caller never leaves
//! the others hanging, and never wastes the load it started). Every concurrent miss of the same
//! key joins the flight and gets its result — the object, or the load's error — which is
//! never cached as an absence.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// What a flight ends with: the object (or none), or the load's error (an `Arc<E>`).
pub(crate) type Landed<V> = Result<Option<Arc<V>>, Arc<dyn Any + Send + Sync>>;

/// Where a flight's result arrives (`None` until it lands).
pub(crate) type Arrivals<V> = watch::Receiver<Option<Landed<V>>>;

/// The flights of one object cache, by index, key and error type (callers whose loads fail
/// with different types never share a flight, so each gets its own type back).
pub(crate) struct Flights<I, V> {
    running: Mutex<HashMap<(I, String, TypeId), Arrivals<V>>>,
}

impl<I, V> Default for Flights<I, V> {
    fn default() -> Self {
        Flights {
            running: Mutex::new(HashMap::new()),
        }
    }
}

/// Joined or started: how a caller takes part in a flight.
pub(crate) enum Seat<V> {
    /// A flight of this key runs: wait for it.
    Joined(watch::Receiver<Option<Landed<V>>>),
    /// This caller starts the flight: run the load, then [`Flights::land`] with the sender.
    Started(
        watch::Sender<Option<Landed<V>>>,
        watch::Receiver<Option<Landed<V>>>,
    ),
}

impl<I: Hash + Eq + Copy, V> Flights<I, V> {
    /// Joins the flight of `(index, key)` for errors of type `E`, or starts one.
    pub(crate) fn seat<E: 'static>(&self, index: I, key: &str) -> Seat<V> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (index, key.to_owned(), TypeId::of::<E>());
        if let Some(receiver) = running.get(&id) {
            return Seat::Joined(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        running.insert(id, receiver.clone());
        Seat::Started(sender, receiver)
    }

    /// Whether a flight of `(index, key)` runs (for errors of type `E`).
    pub(crate) fn is_running<E: 'static>(&self, index: I, key: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.contains_key(&(index, key.to_owned(), TypeId::of::<E>()))
    }

    /// Ends the flight of `(index, key)` with `landed`: every caller waiting gets it, and the
    /// next miss starts a new flight.
    pub(crate) fn land<E: 'static>(
        &self,
        index: I,
        key: &str,
        sender: watch::Sender<Option<Landed<V>>>,
        landed: Landed<V>,
    ) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(index, key.to_owned(), TypeId::of::<E>()));
        let _ = sender.send(Some(landed));
    }
}

/// Waits for the flight `receiver` belongs to and returns its result, with the error as the
/// caller's type. A flight whose task ended without landing (its runtime shut down) reads as
/// no object.
pub(crate) async fn wait<V, E: Send + Sync + 'static>(
    mut receiver: Arrivals<V>,
) -> Result<Option<Arc<V>>, Arc<E>> {
    let landed = match receiver.wait_for(Option::is_some).await {
        Ok(landed) => landed.clone(),
        Err(_) => return Ok(None),
    };
    match landed {
        Some(Ok(found)) => Ok(found),
        Some(Err(error)) => Err(error
            .downcast::<E>()
            .expect("flights are keyed by their error type")),
        None => Ok(None),
    }
}
