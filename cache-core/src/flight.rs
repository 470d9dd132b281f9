//! [`Flights`]: one load at a time per key (single flight), for `ObjectCache::get_or_load`.
//!
//! The first read-through miss of a key starts a flight: its load runs as a task of its own,
//! so it finishes even if every caller waiting for it gives up (a dropped caller never leaves
//! the others hanging, and never wastes the load it started). Every concurrent miss of the same
//! key joins the flight and gets its result — the object, or the load's error — which is
//! never cached as an absence. A miss after a change (an invalidation in this process, or one
//! another process announced) never joins a flight begun before it: that load may have read
//! what the change replaced.
//!
//! [`Gate`] keeps the sets of loaded objects apart from changes, so an object loaded before a
//! change never lands in the cache after the change returned.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, watch};

/// What a flight ends with: the object (or none), or the load's error (an `Arc<E>`).
pub(crate) type Landed<V> = Result<Option<Arc<V>>, Arc<dyn Any + Send + Sync>>;

/// Where a flight's result arrives (`None` until it lands).
pub(crate) type Arrivals<V> = watch::Receiver<Option<Landed<V>>>;

/// What a flight was begun after: the object cache's change count and its backend's change
/// token (see `Cache::change_token`). Only misses that saw the same may join it.
pub(crate) type Generation = (u64, u64);

/// The flights of one object cache, by index, key and error type (callers whose loads fail
/// with different types never share a flight, so each gets its own type back).
pub(crate) struct Flights<I, V> {
    running: Mutex<HashMap<FlightId<I>, Running<V>>>,
}

/// A flight's index, key and error type.
type FlightId<I> = (I, String, TypeId);

/// A running flight: where its result arrives, and the generation it began in.
type Running<V> = (Arrivals<V>, Generation);

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
    /// Joins the flight of `(index, key)` for errors of type `E` begun in `generation`, or
    /// starts one (which replaces a flight of an older generation as the one to join).
    pub(crate) fn seat<E: 'static>(&self, index: I, key: &str, generation: Generation) -> Seat<V> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (index, key.to_owned(), TypeId::of::<E>());
        if let Some((receiver, begun)) = running.get(&id)
            && *begun == generation
        {
            return Seat::Joined(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        running.insert(id, (receiver.clone(), generation));
        Seat::Started(sender, receiver)
    }

    /// Forgets the flight of `(index, key)` begun in `generation` (a newer flight of the key
    /// runs on): the next miss starts a new one. A flight forgotten without landing (its task
    /// ended early: the load panicked, or the runtime shut down) is
    /// [abandoned](Outcome::Abandoned) for its waiters.
    fn forget<E: 'static>(&self, index: I, key: &str, generation: Generation) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (index, key.to_owned(), TypeId::of::<E>());
        if running
            .get(&id)
            .is_some_and(|(_, begun)| *begun == generation)
        {
            running.remove(&id);
        }
    }

    /// A guard for a started flight's task: unless [`disarm`](Crew::disarm)ed (the flight is
    /// about to land), dropping it abandons the flight — so a load that panics never leaves
    /// its key answering "absent" to every later miss.
    pub(crate) fn crew<E: 'static>(
        &self,
        index: I,
        key: &str,
        generation: Generation,
    ) -> Crew<'_, I, V, E> {
        Crew {
            flights: self,
            index,
            key: key.to_owned(),
            generation,
            armed: true,
            error: std::marker::PhantomData,
        }
    }

    /// Whether a flight of `(index, key)` runs (for errors of type `E`).
    pub(crate) fn is_running<E: 'static>(&self, index: I, key: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.contains_key(&(index, key.to_owned(), TypeId::of::<E>()))
    }

    /// Ends the flight of `(index, key)` begun in `generation` with `landed`: every caller
    /// waiting gets it, and the next miss starts a new flight (a newer flight of the key runs
    /// on).
    pub(crate) fn land<E: 'static>(
        &self,
        index: I,
        key: &str,
        generation: Generation,
        sender: watch::Sender<Option<Landed<V>>>,
        landed: Landed<V>,
    ) {
        self.forget::<E>(index, key, generation);
        let _ = sender.send(Some(landed));
    }
}

/// See [`Flights::crew`].
pub(crate) struct Crew<'a, I: Hash + Eq + Copy, V, E: 'static> {
    flights: &'a Flights<I, V>,
    index: I,
    key: String,
    generation: Generation,
    armed: bool,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<I: Hash + Eq + Copy, V, E: 'static> Crew<'_, I, V, E> {
    /// The flight lands normally: nothing to abandon.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl<I: Hash + Eq + Copy, V, E: 'static> Drop for Crew<'_, I, V, E> {
    fn drop(&mut self) {
        if self.armed {
            self.flights
                .forget::<E>(self.index, &self.key, self.generation);
        }
    }
}

/// How a flight ended for a caller waiting on it.
pub(crate) enum Outcome<V, E> {
    /// Its result: the object (or none), or the load's error.
    Landed(Result<Option<Arc<V>>, Arc<E>>),
    /// Its task ended without a result (the load panicked, or the runtime shut down).
    Abandoned,
}

/// Waits for the flight `receiver` belongs to and returns how it ended, with the error as
/// the caller's type.
pub(crate) async fn wait<V, E: Send + Sync + 'static>(mut receiver: Arrivals<V>) -> Outcome<V, E> {
    let landed = match receiver.wait_for(Option::is_some).await {
        Ok(landed) => landed.clone(),
        Err(_) => return Outcome::Abandoned,
    };
    match landed {
        Some(Ok(found)) => Outcome::Landed(Ok(found)),
        Some(Err(error)) => Outcome::Landed(Err(error
            .downcast::<E>()
            .expect("flights are keyed by their error type"))),
        None => Outcome::Abandoned,
    }
}

/// Keeps the sets of loaded objects and the changes (invalidate, delete, truncate) of one
/// object cache apart: any number of either at once, never both. A change waits for the
/// loaded objects being set to land (its own backend call then removes them); a loaded object
/// that would be set while a change runs is not cached at all (it may predate the change).
#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    drained: Notify,
}

#[derive(Default)]
struct GateState {
    loads: usize,
    changes: usize,
}

/// A loaded object's leave to be set; see [`Gate::try_load`].
pub(crate) struct LoadPass<'a>(&'a Gate);

/// A change's leave to run; see [`Gate::change`].
pub(crate) struct ChangePass<'a>(&'a Gate);

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leave to set a loaded object, or `None` while a change runs or waits.
    pub(crate) fn try_load(&self) -> Option<LoadPass<'_>> {
        let mut state = self.state();
        if state.changes > 0 {
            return None;
        }
        state.loads += 1;
        Some(LoadPass(self))
    }

    /// Leave to run a change, once the loaded objects being set have landed. From the call
    /// on, no new loaded object is set until the pass is dropped.
    pub(crate) async fn change(&self) -> ChangePass<'_> {
        self.state().changes += 1;
        let pass = ChangePass(self);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.state().loads == 0 {
                return pass;
            }
            drained.await;
        }
    }
}

impl Drop for LoadPass<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.loads -= 1;
        if state.loads == 0 {
            self.0.drained.notify_waiters();
        }
    }
}

impl Drop for ChangePass<'_> {
    fn drop(&mut self) {
        self.0.state().changes -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_is_refused_leave_while_a_change_runs_and_given_it_after() {
        let gate = Gate::default();
        {
            let _change = gate.change().await;
            assert!(gate.try_load().is_none(), "a change runs: no load is set");
        }
        let pass = gate.try_load();
        assert!(pass.is_some(), "no change runs: a load may be set");
        // Two loads at once are fine; a change waits for both.
        let second = gate.try_load();
        assert!(second.is_some());
        drop((pass, second));
        let _change = gate.change().await;
    }

    #[tokio::test]
    async fn a_change_waits_for_the_loads_being_set() {
        let gate = Arc::new(Gate::default());
        let pass = gate.try_load();
        assert!(pass.is_some());
        let waiting = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _change = gate.change().await;
            })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "the change must wait for the load");
        assert!(
            gate.try_load().is_none(),
            "a waiting change stops new loads"
        );
        drop(pass);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the change ran once the load landed")
            .unwrap();
    }
}
