//! The key layout: see the crate docs (`keys.md`).

use std::fmt::Write;

/// The prefix of every key of the object cache `purpose`.
pub(crate) fn prefix(purpose: &str) -> String {
    let mut out = String::from("oc{");
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

/// The key of one index entry.
pub(crate) fn index_key(prefix: &str, index: &str, key: &str) -> String {
    format!("{prefix}i:{}:{index}:{key}", index.len())
}

/// The key of a new object: a random 128-bit id.
pub(crate) fn new_object_key(prefix: &str) -> String {
    format!("{prefix}o:{:032x}", rand::random::<u128>())
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
    fn purposes_cannot_break_the_hash_tag() {
        assert_eq!(prefix("instance"), "oc{instance}:");
        assert_eq!(prefix("a}b{c%"), "oc{a%7Db%7Bc%25}:");
    }

    #[test]
    fn index_and_key_never_collide() {
        let p = prefix("x");
        assert_ne!(index_key(&p, "id", "a:b"), index_key(&p, "id:a", "b"));
        assert_ne!(index_key(&p, "id", ""), index_key(&p, "i", "d:"));
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(scan_pattern("oc{a*[b]}:"), "oc{a\\*\\[b\\]}:*");
    }
}
