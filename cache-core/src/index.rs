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

/// Declares an index enum and its [`Index`] implementation in one go: each variant with the
/// name it has in storage keys, SQL rows and logs.
///
/// ```
/// cache_core::index! {
///     /// How an organization is found.
///     pub enum OrgIndex {
///         Id => "id",
///         PrimaryDomain => "primary_domain",
///     }
/// }
/// use cache_core::Index;
/// assert_eq!(OrgIndex::PrimaryDomain.name(), "primary_domain");
/// ```
#[macro_export]
macro_rules! index {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::Index for $name {
            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
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
        keys.extend(value.keys(*index).into_iter().map(|key| (position, key)));
    }
    // Few keys (the usual case): a scan is cheaper than hashing. Many: a set, so that an
    // object with tens of thousands of keys costs linear time, not quadratic.
    const SCAN_UP_TO: usize = 16;
    if keys.len() <= SCAN_UP_TO {
        let mut unique: Vec<(usize, String)> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        return unique;
    }
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    let first: Vec<bool> = keys
        .iter()
        .map(|(position, key)| seen.insert((*position, key.as_str())))
        .collect();
    drop(seen);
    keys.into_iter()
        .zip(first)
        .filter_map(|(key, first)| first.then_some(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    enum Idx {
        A,
        B,
    }

    impl Index for Idx {
        fn name(self) -> &'static str {
            match self {
                Idx::A => "a",
                Idx::B => "b",
            }
        }
    }

    struct Many(usize);

    impl Entry<Idx> for Many {
        fn keys(&self, index: Idx) -> Vec<String> {
            // Every key twice, and the same strings under both indices.
            let _ = index;
            (0..self.0)
                .chain(0..self.0)
                .map(|i| i.to_string())
                .collect()
        }
    }

    #[test]
    fn entry_keys_drops_repeats_in_order_for_few_and_many_keys() {
        for n in [1, 3, 8, 9, 1000] {
            let keys = entry_keys(&Many(n), &[Idx::A, Idx::B]);
            let expected: Vec<(usize, String)> = (0..2)
                .flat_map(|p| (0..n).map(move |i| (p, i.to_string())))
                .collect();
            assert_eq!(keys, expected, "{n} keys per index");
        }
    }

    #[test]
    fn unique_indices_keeps_the_first_of_each_in_order() {
        assert_eq!(
            unique_indices(&[Idx::B, Idx::A, Idx::B, Idx::A]),
            [Idx::B, Idx::A]
        );
        assert_eq!(unique_indices(&[Idx::A]), [Idx::A]);
        assert!(unique_indices::<Idx>(&[]).is_empty());
    }

    #[test]
    fn entry_keys_is_not_quadratic() {
        // An algorithmic bound, not a performance figure: quadratic deduplication of 100 000
        // keys (each twice) makes ~10^10 comparisons (minutes, even in release: 30 000 took
        // 1.5 s), linear work takes milliseconds; 10 s separates the two by orders of
        // magnitude on any machine.
        let started = std::time::Instant::now();
        let keys = entry_keys(&Many(100_000), &[Idx::A]);
        assert_eq!(keys.len(), 100_000);
        assert_eq!(keys[99_999], (0, "99999".to_owned()));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "100 000 keys took {:?}",
            started.elapsed()
        );
    }
}
