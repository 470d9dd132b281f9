//! The key layout: see the crate docs (`keys.md`).

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// Longest key (in bytes) used in a Redis key name as it is; longer ones are replaced by their
/// digest ([`cache_core::keys::storable`]), which bounds every key name (and the key lists
/// stored with an object) whatever the application's keys are.
pub(crate) const MAX_PLAIN_KEY: usize = 512;

/// The layout's mark at the start of every key name; the layout before this one used `oc2`.
pub(crate) const LAYOUT: &str = "oc3";

/// The prefix of every key of the object cache `purpose` in layout `layout`:
/// `<layout>{<purpose>}:`. `{`, `}` and `%` are percent-encoded (a brace would end the hash
/// tag early) and the empty purpose is `%`, so the hash tag is never empty: every key of one
/// cache shares one Cluster hash slot.
pub(crate) fn prefix_in(layout: &str, purpose: &str) -> String {
    let mut out = format!("{layout}{{");
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

/// The prefix of every key of the object cache `purpose` in this layout.
pub(crate) fn prefix(purpose: &str) -> String {
    prefix_in(LAYOUT, purpose)
}

/// The tag of a release in key names: 12 hex digits of the SHA-256 of its version string, so
/// every release has keys of its own whatever its version looks like.
pub(crate) fn version_tag(version: &str) -> String {
    let digest = Sha256::digest(version.as_bytes());
    let mut out = String::with_capacity(12);
    for byte in &digest[..6] {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The prefix of the keys one release writes: `<prefix><version tag>:`.
pub(crate) fn version_prefix(prefix: &str, tag: &str) -> String {
    format!("{prefix}{tag}:")
}

/// What follows a release's prefix in the name of an index key: `<len>:<index>:<key>` (the
/// index name length-prefixed, the key last, as it is or as its digest), so no two (index,
/// key) pairs share a name. Stored objects list their keys by this suffix.
pub(crate) fn suffix(index: &str, key: &str) -> String {
    let key = cache_core::keys::storable(key, MAX_PLAIN_KEY);
    let mut out = String::with_capacity(index.len() + key.len() + 8);
    let _ = write!(out, "{}:{index}:{key}", index.len());
    out
}

/// The key of one index entry of the release with `version_prefix`.
pub(crate) fn index_key(version_prefix: &str, index: &str, key: &str) -> String {
    format!("{version_prefix}{}", suffix(index, key))
}

/// The key holding the body of an object stored once (its keys hold pointers to it).
pub(crate) fn body_key(version_prefix: &str, id: &str) -> String {
    format!("{version_prefix}o:{id}")
}

/// The key of the cache's version registry: a hash of the releases that stored objects, each
/// with when its objects expire (0: never), so changes reach the objects of every release.
pub(crate) fn registry_key(prefix: &str) -> String {
    format!("{prefix}v")
}

/// A new object id: 64 random bits as 16 hex digits (unique within a release's objects).
pub(crate) fn new_object_id() -> String {
    format!("{:016x}", rand::random::<u64>())
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

/// The index and key an index key of this cache names, when `name` is one (of any release)
/// and its key is stored as it is: `(version tag, index, key)`. Digested keys, bodies and the
/// registry are `None`.
pub(crate) fn parse_index_key<'a>(
    prefix: &str,
    name: &'a str,
) -> Option<(&'a str, &'a str, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    let (tag, rest) = rest.split_at_checked(12)?;
    let rest = rest.strip_prefix(':')?;
    if !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (length, rest) = rest.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let (index, rest) = rest.split_at_checked(length)?;
    let key = rest.strip_prefix(':')?;
    if key.starts_with(cache_core::keys::DIGEST_MARK) {
        return None;
    }
    Some((tag, index, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_cannot_break_or_empty_the_hash_tag() {
        assert_eq!(prefix("instance"), "oc3{instance}:");
        assert_eq!(prefix("a}b{c%"), "oc3{a%7Db%7Bc%25}:");
        assert_eq!(prefix(""), "oc3{%}:");
        assert_ne!(
            prefix(""),
            prefix("%"),
            "a lone % is only the empty purpose"
        );
    }

    #[test]
    fn index_and_key_never_collide() {
        let p = version_prefix(&prefix("x"), &version_tag("v1"));
        assert_ne!(index_key(&p, "id", "a:b"), index_key(&p, "id:a", "b"));
        assert_ne!(index_key(&p, "id", ""), index_key(&p, "i", "d:"));
        let long = "k".repeat(10_000);
        assert!(index_key(&p, "id", &long).len() < 120);
        assert_ne!(index_key(&p, "id", &long), index_key(&p, "id", &long[1..]));
        // Bodies and the registry never look like index keys.
        assert!(parse_index_key(&prefix("x"), &body_key(&p, "0123456789abcdef")).is_none());
        assert!(parse_index_key(&prefix("x"), &registry_key(&prefix("x"))).is_none());
    }

    #[test]
    fn releases_have_keys_of_their_own() {
        let (a, b) = (version_tag("v1"), version_tag("v2"));
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert_eq!(a, version_tag("v1"));
    }

    #[test]
    fn index_keys_read_back() {
        let prefix = prefix("org");
        let tag = version_tag("v1");
        let name = index_key(&version_prefix(&prefix, &tag), "id:x", "a:b");
        assert_eq!(
            parse_index_key(&prefix, &name),
            Some((tag.as_str(), "id:x", "a:b"))
        );
        let digested = index_key(&version_prefix(&prefix, &tag), "id", "a\0b");
        assert_eq!(parse_index_key(&prefix, &digested), None);
        assert_eq!(parse_index_key(&prefix, "oc3{other}:x"), None);
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(scan_pattern("oc3{a*[b]}:"), "oc3{a\\*\\[b\\]}:*");
    }
}
