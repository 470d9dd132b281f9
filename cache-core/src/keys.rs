//! Keys as a backend with limits stores them: any Rust string, made storable.
//!
//! Keys are arbitrary strings (SPEC 2), but backends have limits: PostgreSQL `text` cannot
//! hold a NUL byte and a btree index entry holds at most about 2.7 kB. [`storable`] keeps a key
//! as it is when the backend can store it, and otherwise replaces it by a digest, so a key is
//! never refused and one hostile key never stops the others.

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

#[cfg(test)]
mod tests {
    use super::*;

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
