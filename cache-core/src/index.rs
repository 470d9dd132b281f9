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
