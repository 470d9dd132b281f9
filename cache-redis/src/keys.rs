//! The key layout: see the crate docs (`keys.md`).

use std::fmt::Write;

/// Longest key (in bytes) used in a Redis key name as it is; longer ones are replaced by their
/// digest ([`cache_core::keys::storable`]), which bounds every key name (and the object
/// record listing them) whatever the application's keys are.
pub(crate) const MAX_PLAIN_KEY: usize = 512;

/// The prefix of every key of the object cache `purpose`: `oc2{<purpose>}:`. `{`, `}` and `%`
/// are percent-encoded (a brace would end the hash tag early) and the empty purpose is `%`,
/// so the hash tag is never empty: every key of one cache shares one Cluster hash slot.
pub(crate) fn prefix(purpose: &str) -> String {
    let mut out = String::from("oc2{");
    if purpose.is_empty() {
        out.push('%');
    }
    for c in purpose.chars() {
        match c {
            '{' | '}' | '%' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push_str("}:");
    out
}

/// The key of one index entry, which holds the whole stored object (see [`crate::value`]).
pub(crate) fn index_key(prefix: &str, index: &str, key: &str) -> String {
    let key = cache_core::keys::storable(key, MAX_PLAIN_KEY);
    let mut out = String::with_capacity(prefix.len() + index.len() + key.len() + 8);
    let _ = write!(out, "{prefix}i:{}:{index}:{key}", index.len());
    out
}

/// The key of the record of object `id`: the set of its index keys.
pub(crate) fn record_key(prefix: &str, id: &str) -> String {
    format!("{prefix}o:{id}")
}

/// A new object id: 128 random bits as 32 hex digits.
pub(crate) fn new_object_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A `SCAN MATCH` pattern for every key of the cache with this prefix.
pub(crate) fn scan_pattern(prefix: &str) -> String {
    let mut out = String::new();
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_cannot_break_or_empty_the_hash_tag() {
        assert_eq!(prefix("instance"), "oc2{instance}:");
        assert_eq!(prefix("a}b{c%"), "oc2{a%7Db%7Bc%25}:");
        assert_eq!(prefix(""), "oc2{%}:");
        assert_ne!(
            prefix(""),
            prefix("%"),
            "a lone % is only the empty purpose"
        );
    }

    #[test]
    fn index_and_key_never_collide() {
        let p = prefix("x");
        assert_ne!(index_key(&p, "id", "a:b"), index_key(&p, "id:a", "b"));
        assert_ne!(index_key(&p, "id", ""), index_key(&p, "i", "d:"));
        let long = "k".repeat(10_000);
        assert!(index_key(&p, "id", &long).len() < 100);
        assert_ne!(index_key(&p, "id", &long), index_key(&p, "id", &long[1..]));
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(scan_pattern("oc2{a*[b]}:"), "oc2{a\\*\\[b\\]}:*");
    }
}
