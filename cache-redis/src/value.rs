//! What a key of the layout holds (see `keys.md`): an object (a copy under each of its keys, or
//! its body stored once), a pointer to a body, or a lease.
//!
//! ```text
//! OC3|I|<id>|<created>|<renewed>|<digest>|<n>|<len>:<suffix>...<payload>   an object's copy
//! OC3|B|<id>|<created>|<renewed>|<digest>|<n>|<len>:<suffix>...<payload>   a body stored once
//! OC3|D|...                                                                a body removed
//! OC3|P|<id>                                                               a pointer to body <id>
//! OC3|T|<ms>                                                               a tombstone
//! ```
//!
//! The id (16 hex digits), both times (13 digits, ms since the epoch, the server's clock) and
//! the key-set digest (16 hex digits) sit at fixed offsets, so the scripts read them without
//! the payload and renew LastUsage with `SETRANGE` (see `lua/common.lua`). An object lists
//! its keys (the suffixes of their names, see [`crate::keys::suffix`]) so that a change
//! through one key finds the others. A tombstone marks a key invalidated or deleted at that
//! time (for a lease's length), so that a fill whose load began before is refused; a lease
//! itself lives in a key of its own (`<release prefix>l:<suffix>`, holding `<token>|<ms>`).

/// The first bytes of every stored value.
pub(crate) const MAGIC: &[u8] = b"OC3|";
/// Where the renewal time starts (0-based), for `SETRANGE` (`lua/renew.lua`).
#[cfg(test)]
const RENEWED_AT: usize = 37;
/// Length of an object's fixed header: magic, kind, id, two times, digest, separators.
const FIXED: usize = 68;

/// A stored value as read from a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored<'a> {
    /// An object: a copy under one of its keys, or its body.
    Object(Object<'a>),
    /// A body that was removed (its pointers are being cleaned up): no object.
    Dead,
    /// A pointer to the body of object `id`.
    Pointer(&'a str),
    /// The key was invalidated or deleted lately: no object.
    Tombstone,
}

/// An object as read from a copy or a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Object<'a> {
    /// Whether this is the body of an object stored once (`B`) rather than a copy (`I`).
    pub(crate) body: bool,
    /// The object's id (unique within its release).
    pub(crate) id: &'a str,
    /// When it was set (server time, ms since the epoch).
    pub(crate) created_ms: u64,
    /// When its LastUsage was last renewed (server time, ms since the epoch).
    pub(crate) renewed_ms: u64,
    /// How many keys it has.
    pub(crate) keys: usize,
    /// The encoded value.
    pub(crate) payload: &'a [u8],
}

/// The part of an object's value after the digest, as the set scripts store it: `<n>|` and
/// each key's suffix as `<len>:<suffix>`.
pub(crate) fn key_list<'a>(suffixes: impl ExactSizeIterator<Item = &'a str>) -> String {
    let mut out = format!("{}|", suffixes.len());
    for suffix in suffixes {
        out.push_str(&suffix.len().to_string());
        out.push(':');
        out.push_str(suffix);
    }
    out
}

/// How many bytes an object's copy takes: header, key list and payload.
pub(crate) fn copy_len(key_list: &str, payload: &[u8]) -> usize {
    FIXED + key_list.len() + payload.len()
}

/// Reads a stored value; `None` when the bytes are not one (garbage written by someone else,
/// or another layout).
pub(crate) fn parse(bytes: &[u8]) -> Option<Stored<'_>> {
    if bytes.len() < 6 || !bytes.starts_with(MAGIC) || bytes[5] != b'|' {
        return None;
    }
    let rest = &bytes[6..];
    match bytes[4] {
        b'I' | b'B' => parse_object(bytes).map(Stored::Object),
        b'D' => Some(Stored::Dead),
        b'P' if rest.len() == 16 && rest.iter().all(u8::is_ascii_hexdigit) => {
            Some(Stored::Pointer(std::str::from_utf8(rest).ok()?))
        }
        b'T' => Some(Stored::Tombstone),
        _ => None,
    }
}

fn parse_object(bytes: &[u8]) -> Option<Object<'_>> {
    if bytes.len() < FIXED
        || [22, 36, 50, 67].iter().any(|at| bytes[*at] != b'|')
        || !bytes[6..22].iter().all(u8::is_ascii_hexdigit)
        || !bytes[51..67].iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let id = std::str::from_utf8(&bytes[6..22]).ok()?;
    let created_ms = digits(&bytes[23..36])?;
    let renewed_ms = digits(&bytes[37..50])?;
    let rest = &bytes[FIXED..];
    let bar = rest.iter().position(|b| *b == b'|')?;
    let keys: usize = std::str::from_utf8(&rest[..bar]).ok()?.parse().ok()?;
    let mut at = bar + 1;
    for _ in 0..keys {
        let colon = at + rest.get(at..)?.iter().position(|b| *b == b':')?;
        let length: usize = std::str::from_utf8(&rest[at..colon]).ok()?.parse().ok()?;
        at = colon.checked_add(1)?.checked_add(length)?;
        if at > rest.len() {
            return None;
        }
    }
    Some(Object {
        body: bytes[4] == b'B',
        id,
        created_ms,
        renewed_ms,
        keys,
        payload: &rest[at..],
    })
}

fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef";
    const DIGEST: &str = "fedcba9876543210";

    fn object(kind: char, created: &str, renewed: &str, list: &str, payload: &str) -> Vec<u8> {
        format!("OC3|{kind}|{ID}|{created}|{renewed}|{DIGEST}|{list}{payload}").into_bytes()
    }

    #[test]
    fn reads_what_the_set_scripts_write() {
        let list = key_list(["2:id:42", "4:host:a:b|c"].into_iter());
        assert_eq!(list, "2|7:2:id:4212:4:host:a:b|c");
        let bytes = object('I', "1764460800000", "1764460800123", &list, "{\"a\":1}");
        assert_eq!(copy_len(&list, b"{\"a\":1}"), bytes.len());
        let Some(Stored::Object(o)) = parse(&bytes) else {
            panic!("an object")
        };
        assert_eq!((o.body, o.id, o.keys), (false, ID, 2));
        assert_eq!(o.created_ms, 1_764_460_800_000);
        assert_eq!(o.renewed_ms, 1_764_460_800_123);
        assert_eq!(o.payload, b"{\"a\":1}");
        assert_eq!(&bytes[RENEWED_AT..RENEWED_AT + 13], b"1764460800123");
        let body = object('B', "0000000000000", "0000000000000", "0|", "");
        assert!(matches!(parse(&body), Some(Stored::Object(o)) if o.body && o.payload.is_empty()));
        assert_eq!(parse(b"OC3|P|0123456789abcdef"), Some(Stored::Pointer(ID)));
        assert_eq!(parse(b"OC3|T|1764460800000"), Some(Stored::Tombstone));
        assert_eq!(parse(b"OC3|D|whatever"), Some(Stored::Dead));
    }

    #[test]
    fn garbage_is_not_a_stored_value() {
        for bad in [
            b"".to_vec(),
            b"garbage".to_vec(),
            b"OC2|0123456789abcdef0123456789abcdef|1764460800000|".to_vec(),
            b"OC3|P|short".to_vec(),
            b"OC3|P|0123456789abcdeg".to_vec(),
            b"OC3|L|77".to_vec(),
            b"OC3|X|0123456789abcdef".to_vec(),
            object('I', "17644608000x0", "1764460800000", "0|", "{}"),
            object('I', "1764460800000", "-764460800000", "0|", "{}"),
            object('I', "1764460800000", "1764460800000", "x|", "{}"),
            object('I', "1764460800000", "1764460800000", "2|3:abc", "{}"),
            object('I', "1764460800000", "1764460800000", "1|99:abc", ""),
            object(
                'I',
                "1764460800000",
                "1764460800000",
                "1|99999999999999999999999:a",
                "",
            ),
            format!("OC3|I|{ID}|1764460800000|1764460800000|{DIGEST}").into_bytes(),
        ] {
            assert_eq!(parse(&bad), None, "{:?}", String::from_utf8_lossy(&bad));
        }
    }
}
