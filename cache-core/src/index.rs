//! How an object cache finds its objects: indices and the entries that name their keys.

use std::fmt::Debug;
use std::hash::Hash;

/// One way to look an object up, e.g. `id` or `host` for the instance cache.
///
/// Usually a small fieldless enum. The [`name`](Index::name) is used in storage keys, SQL
/// rows and logs, so it must be unique among the indices of one object cache and stable across
/// releases.
///
/// ```
/// use cache_core::Index;
///
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// enum InstanceIndex { Id, Host }
///
/// impl Index for InstanceIndex {
///     fn name(self) -> &'static str {
///         match self {
///             InstanceIndex::Id => "id",
///             InstanceIndex::Host => "host",
///         }
///     }
/// }
/// assert_eq!(InstanceIndex::Host.name(), "host");
/// ```
pub trait Index: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// The stable, unique name of this index.
    fn name(self) -> &'static str;
}

/// A value stored in an object cache. It tells the cache under which keys it can be found.
///
/// An object may have any number of keys per index (an instance has many domains), and the
/// same key may be returned twice. An empty list means the object is not reachable through
/// that index.
pub trait Entry<I: Index>: Send + Sync + 'static {
    /// The keys of this object under `index`.
    fn keys(&self, index: I) -> Vec<String>;
}

/// `indices` without repeats, in their order: what a connector builds an object cache with.
pub fn unique_indices<I: Index>(indices: &[I]) -> Vec<I> {
    let mut unique: Vec<I> = Vec::with_capacity(indices.len());
    for index in indices {
        if !unique.contains(index) {
            unique.push(*index);
        }
    }
    unique
}

/// Every key of `value` under `indices`, as (position in `indices`, key), without repeats:
/// what a connector stores an object under.
///
/// ```
/// # use cache_core::{Entry, Index, entry_keys};
/// # #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)] enum Idx { Id, Name }
/// # impl Index for Idx { fn name(self) -> &'static str { match self { Idx::Id => "id", Idx::Name => "name" } } }
/// struct Org { id: String, names: Vec<String> }
/// impl Entry<Idx> for Org {
///     fn keys(&self, index: Idx) -> Vec<String> {
///         match index { Idx::Id => vec![self.id.clone()], Idx::Name => self.names.clone() }
///     }
/// }
/// let org = Org { id: "1".into(), names: vec!["a".into(), "a".into(), "1".into()] };
/// assert_eq!(
///     entry_keys(&org, &[Idx::Id, Idx::Name]),
///     [(0, "1".to_owned()), (1, "a".to_owned()), (1, "1".to_owned())]
/// );
/// ```
pub fn entry_keys<I: Index, V: Entry<I> + ?Sized>(
    value: &V,
    indices: &[I],
) -> Vec<(usize, String)> {
    let mut keys: Vec<(usize, String)> = Vec::new();
    for (position, index) in indices.iter().enumerate() {
        for key in value.keys(*index) {
            if !keys.iter().any(|(p, k)| *p == position && *k == key) {
                keys.push((position, key));
            }
        }
    }
    keys
}
