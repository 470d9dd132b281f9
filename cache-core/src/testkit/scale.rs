//! Objects whose payload lists their keys — an instance listing its domains, an organization
//! its verified domains — at a chosen key count, and what a shared backend stores for them.
//! Space and work must grow linearly with the keys (SPEC 13): the connectors' scaling tests
//! and the benchmark's scaling cells measure through this module.

use std::future::Future;
use std::sync::Arc;

use crate::testkit::{TestCache, TestEntry};

/// The key counts measured: 1 to 10 000 keys per object.
pub const KEY_COUNTS: [usize; 5] = [1, 10, 100, 1_000, 10_000];

/// Object `n` with `keys` keys: an id, and `keys - 1` domain names of about 40 bytes.
pub fn object(n: u64, keys: usize) -> TestEntry {
    let names: Vec<String> = (1..keys)
        .map(|i| format!("t{n:06}-{i:05}.customer-domain.example.com"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    TestEntry::new(&format!("{n:018}"), &names)
}

/// What an object is worth: its payload (JSON, which lists its keys) plus its keys' own bytes.
pub fn logical_bytes(entry: &TestEntry) -> u64 {
    let payload = serde_json::to_vec(entry).map_or(0, |p| p.len());
    (payload + entry.id.len() + entry.names.iter().map(String::len).sum::<usize>()) as u64
}

/// How many objects a measurement at `keys` keys stores: about 5 000 keys in all (at least 2
/// objects), so that the backend's growth is well above its noise.
pub fn objects_for(keys: usize) -> u64 {
    (5_000 / keys as u64).max(2)
}

/// Bytes stored per object at one key count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stored {
    /// Keys per object.
    pub keys: usize,
    /// The backend's growth per object.
    pub bytes: f64,
    /// Payload plus the keys' own bytes, per object.
    pub logical: f64,
}

impl Stored {
    /// Bytes stored per byte the object is worth.
    pub fn ratio(&self) -> f64 {
        self.bytes / self.logical
    }

    /// Bytes stored per key.
    pub fn per_key(&self) -> f64 {
        self.bytes / self.keys as f64
    }
}

/// Stores [`objects_for`]`(keys)` objects of `keys` keys in `cache` and measures the backend's
/// growth with `size` (e.g. Redis `used_memory`, a table's size), which is read before and
/// after.
pub async fn measure<F, Fut>(cache: &TestCache, keys: usize, mut size: F) -> Stored
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    let objects = objects_for(keys);
    let before = size().await;
    let mut logical = 0;
    for n in 0..objects {
        let entry = object(n, keys);
        logical += logical_bytes(&entry);
        cache
            .set(Arc::new(entry))
            .await
            .unwrap_or_else(|e| panic!("set of an object with {keys} keys failed: {e}"));
    }
    let after = size().await;
    Stored {
        keys,
        bytes: after.saturating_sub(before) as f64 / objects as f64,
        logical: logical as f64 / objects as f64,
    }
}

/// Checks what [`measure`] found at every key count: within `bound` times what the objects
/// are worth, and linear — the bytes per key at 10 000 keys at most 1.5 times those at 100.
#[track_caller]
pub fn assert_linear(connector: &str, points: &[Stored], bound: f64) {
    for point in points {
        assert!(
            point.ratio() <= bound,
            "{connector}: {} keys per object store {:.0} bytes per object, {:.2}x the {:.0} \
             bytes it is worth (bound {bound}x): {points:?}",
            point.keys,
            point.bytes,
            point.ratio(),
            point.logical
        );
    }
    let per_key = |keys: usize| points.iter().find(|p| p.keys == keys).map(Stored::per_key);
    if let (Some(hundred), Some(ten_thousand)) = (per_key(100), per_key(10_000)) {
        assert!(
            ten_thousand <= 1.5 * hundred,
            "{connector}: {ten_thousand:.0} bytes per key at 10 000 keys against {hundred:.0} \
             at 100: space grows faster than the keys"
        );
    }
}
