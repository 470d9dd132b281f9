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

/// The key of a read-through's lease on the key with `suffix` (`lua/lease.lua`).
pub(crate) fn lease_key(version_prefix: &str, suffix: &str) -> String {
    format!("{version_prefix}l:{suffix}")
}

/// The key holding the body of an object stored once (its keys hold pointers to it).
pub(crate) fn body_key(version_prefix: &str, id: &str) -> String {
    format!("{version_prefix}o:{id}")
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

/// What a key of this layout is, as the channel reads the names the server reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    /// An index key of some release: its index, and its key as stored (itself, or its
    /// digest: [`cache_core::keys::storable`]).
    Index { index: String, key: String },
    /// The body of an object stored once.
    Body,
    /// A read-through's lease on a key.
    Lease,
    /// The cache's registry of releases.
    Registry,
}

/// The purpose and [`Name`] of a key of this layout; `None` for any other key.
pub(crate) fn parse_key(name: &str) -> Option<(String, Name)> {
    let rest = name.strip_prefix(LAYOUT)?.strip_prefix('{')?;
    let (encoded, rest) = rest.split_once('}')?;
    let rest = rest.strip_prefix(':')?;
    let purpose = decode_purpose(encoded)?;
    if rest == "v" {
        return Some((purpose, Name::Registry));
    }
    let (tag, rest) = rest.split_at_checked(12)?;
    let rest = rest.strip_prefix(':')?;
    if !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if rest.starts_with("o:") {
        return Some((purpose, Name::Body));
    }
    if rest.starts_with("l:") {
        return Some((purpose, Name::Lease));
    }
    let (index, key) = parse_suffix(rest)?;
    Some((
        purpose,
        Name::Index {
            index: index.to_owned(),
            key: key.to_owned(),
        },
    ))
}

/// The index and stored key of a [`suffix`].
pub(crate) fn parse_suffix(suffix: &str) -> Option<(&str, &str)> {
    let (length, rest) = suffix.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let (index, rest) = rest.split_at_checked(length)?;
    Some((index, rest.strip_prefix(':')?))
}

/// The purpose [`prefix`] encoded.
fn decode_purpose(encoded: &str) -> Option<String> {
    if encoded == "%" {
        return Some(String::new());
    }
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3)?;
        out.push(char::from(u8::from_str_radix(hex, 16).ok()?));
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
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
        assert_eq!(
            parse_key(&body_key(&p, "0123456789abcdef")).map(|(_, n)| n),
            Some(Name::Body)
        );
    }

    #[test]
    fn releases_have_keys_of_their_own() {
        let (a, b) = (version_tag("v1"), version_tag("v2"));
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert_eq!(a, version_tag("v1"));
    }

    #[test]
    fn names_read_back() {
        for purpose in ["org", "", "a}b{c%", "%"] {
            let prefix = prefix(purpose);
            let release = version_prefix(&prefix, &version_tag("v1"));
            assert_eq!(
                parse_key(&index_key(&release, "id:x", "a:b")),
                Some((
                    purpose.to_owned(),
                    Name::Index {
                        index: "id:x".into(),
                        key: "a:b".into()
                    }
                )),
                "{purpose:?}"
            );
            assert_eq!(
                parse_key(&body_key(&release, "0123456789abcdef")),
                Some((purpose.to_owned(), Name::Body))
            );
            assert_eq!(
                parse_key(&format!("{prefix}v")),
                Some((purpose.to_owned(), Name::Registry))
            );
            assert_eq!(
                parse_key(&lease_key(&release, &suffix("id", "1"))),
                Some((purpose.to_owned(), Name::Lease))
            );
        }
        let release = version_prefix(&prefix("p"), &version_tag("v1"));
        let digested = index_key(&release, "id", "a\0b");
        let Some((_, Name::Index { key, .. })) = parse_key(&digested) else {
            panic!("an index key")
        };
        assert!(key.starts_with(cache_core::keys::DIGEST_MARK));
        for other in ["oc2{p}:x", "oc3{p}:zzzzzzzzzzzz:2:id:a", "oc3{p", "other"] {
            assert_eq!(parse_key(other), None, "{other}");
        }
        assert_eq!(parse_suffix(&suffix("name", "k:1")), Some(("name", "k:1")));
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(scan_pattern("oc3{a*[b]}:"), "oc3{a\\*\\[b\\]}:*");
    }
}
