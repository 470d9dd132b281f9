//! Keys as a backend with limits stores them: any Rust string, made storable.
//!
//! Keys are arbitrary strings (SPEC 2), but backends have limits: PostgreSQL `text` cannot
//! hold a NUL byte and a btree index entry holds at most about 2.7 kB. [`storable`] keeps a key
//! as it is when the backend can store it, and otherwise replaces it by a digest, so a key is
//! never refused and one hostile key never stops the others.
//!
//! The shared backends also agree here on how an object is laid out ([`inline_copies`]) and on
//! the digest that tells whether two stored objects have the same keys ([`key_set_digest`]).

use std::borrow::Cow;
use std::fmt::Write;

use sha2::{Digest, Sha256};

/// The first character of a digest key. A key that starts with it is always stored as a
/// digest, so a stored plain key can never equal a digest key.
pub const DIGEST_MARK: char = '\u{1}';

/// `key` as a backend stores it: the key itself when it holds no NUL, does not start with
/// [`DIGEST_MARK`] and is at most `max_plain` bytes long; otherwise [`DIGEST_MARK`] followed
/// by the 64 hex digits of its SHA-256 (65 bytes). Distinct keys stay distinct (up to SHA-256
/// collisions), and the same key always maps to the same stored key.
///
/// ```
/// use cache_core::keys::storable;
///
/// assert_eq!(storable("acme.example.com", 512), "acme.example.com");
/// let nul = storable("bad\0key", 512);
/// assert!(nul.starts_with('\u{1}') && nul.len() == 65 && !nul.contains('\0'));
/// assert_eq!(storable(&"k".repeat(1 << 20), 512).len(), 65);
/// ```
pub fn storable(key: &str, max_plain: usize) -> Cow<'_, str> {
    if key.len() <= max_plain && !key.starts_with(DIGEST_MARK) && !key.contains('\0') {
        return Cow::Borrowed(key);
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(1 + 2 * digest.len());
    out.push(DIGEST_MARK);
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    Cow::Owned(out)
}

/// The most bytes the extra copies of one object may take in a shared backend: an object
/// stored under K keys with B bytes per copy is copied under every key (a hit is one read)
/// while `(K - 1) × B` stays within this; past it, it is stored once and its keys point at it
/// (a hit through a key costs a second read). So an ordinary object (a few keys, a few KB)
/// keeps its one-read hit, and space grows linearly with an object's keys and payload.
pub const INLINE_BUDGET: usize = 4 * 1024;

/// Whether an object with `keys` keys whose copy takes `copy_bytes` bytes is stored under
/// every key (see [`INLINE_BUDGET`]).
///
/// ```
/// use cache_core::keys::inline_copies;
///
/// assert!(inline_copies(3, 2_000)); // 4 000 extra bytes
/// assert!(!inline_copies(10, 500)); // 4 500 extra bytes: stored once
/// assert!(inline_copies(1, usize::MAX)); // one key: one copy anyway
/// ```
pub fn inline_copies(keys: usize, copy_bytes: usize) -> bool {
    keys <= 1 || (keys - 1).saturating_mul(copy_bytes) <= INLINE_BUDGET
}

/// A digest of an object's key set: its (index name, key) pairs in any order, duplicates
/// ignored — 16 hex digits of a SHA-256 over the sorted, length-prefixed pairs. Equal for
/// the same key set whichever release computes it, so a release can tell another release's
/// copy of the same object (same keys) from an object a set makes a ghost of.
///
/// ```
/// use cache_core::keys::key_set_digest;
///
/// let a = key_set_digest([("id", "1"), ("host", "a.example"), ("id", "1")]);
/// assert_eq!(a, key_set_digest([("host", "a.example"), ("id", "1")]));
/// assert_ne!(a, key_set_digest([("id", "1")]));
/// assert_eq!(a.len(), 16);
/// ```
pub fn key_set_digest<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut hasher = Sha256::new();
    for (index, key) in pairs {
        for part in [index, key] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(16);
    for byte in &digest[..8] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_set_digests_cannot_be_fooled_by_separators() {
        assert_ne!(
            key_set_digest([("a", "bc")]),
            key_set_digest([("ab", "c")]),
            "pairs are length-prefixed"
        );
        assert_ne!(
            key_set_digest([("a", "b"), ("c", "d")]),
            key_set_digest([("a", "bc"), ("", "d")])
        );
    }

    #[test]
    fn plain_keys_stay_and_others_become_distinct_digests() {
        assert!(matches!(storable("", 8), Cow::Borrowed("")));
        assert!(matches!(storable("12345678", 8), Cow::Borrowed(_)));
        let long = storable("123456789", 8);
        assert!(long.starts_with(DIGEST_MARK));
        assert_eq!(
            long,
            storable("123456789", 8),
            "the same key maps the same way"
        );
        assert_ne!(storable("a\0", 8), storable("a\0\0", 8));
        // A key that looks like a digest is itself digested: no plain key equals a digest.
        let forged = long.clone().into_owned();
        assert_ne!(storable(&forged, 100), long);
        assert!(!storable("\u{1}", 8).contains('\0'));
    }
}
