//! What an index key holds: a small header, then the object's payload, so that a hit is one
//! plain `GET` of that key.
//!
//! ```text
//! OC2|<object id: 32 hex>|<created: 13 digits, ms>|<renewed: 13 digits, ms>|<n>:<version>|<payload>
//! ```
//!
//! The object id, both times and their separators sit at fixed offsets, so the scripts read
//! them with `GETRANGE` (never the payload) and renew with `SETRANGE` (see `lua/common.lua`).
//! Times are the server's (`TIME`) when the object was set and when its LastUsage was last
//! renewed; expiry itself is the keys' TTL, so these only decide when to renew.

/// The first bytes of every stored object.
pub(crate) const MAGIC: &[u8] = b"OC2|";
/// Length of the fixed part: magic, id, two times, four separators.
const FIXED: usize = 4 + 32 + 1 + 13 + 1 + 13 + 1;

/// A stored object as read from an index key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stored<'a> {
    /// The object's id: its record is `<prefix>o:<id>`.
    pub(crate) id: &'a str,
    /// When it was set (server time, ms since the epoch).
    pub(crate) created_ms: u64,
    /// When its LastUsage was last renewed (server time, ms since the epoch).
    pub(crate) renewed_ms: u64,
    /// The version of the application that stored it.
    pub(crate) version: &'a [u8],
    /// The encoded value.
    pub(crate) payload: &'a [u8],
}

/// The part of the header after the times that the set script appends before the payload:
/// `<n>:<version>|`.
pub(crate) fn version_part(version: &str) -> String {
    format!("{}:{version}|", version.len())
}

/// Reads a stored object; `None` when the bytes are not one (garbage written by someone else,
/// or an older layout).
pub(crate) fn parse(bytes: &[u8]) -> Option<Stored<'_>> {
    if bytes.len() < FIXED || !bytes.starts_with(MAGIC) {
        return None;
    }
    let id = std::str::from_utf8(&bytes[4..36]).ok()?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit())
        || bytes[36] != b'|'
        || bytes[50] != b'|'
        || bytes[64] != b'|'
    {
        return None;
    }
    let created_ms = digits(&bytes[37..50])?;
    let renewed_ms = digits(&bytes[51..64])?;
    let rest = &bytes[FIXED..];
    let colon = rest.iter().position(|b| *b == b':')?;
    let length: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let version_end = colon.checked_add(1)?.checked_add(length)?;
    if rest.get(version_end) != Some(&b'|') {
        return None;
    }
    Some(Stored {
        id,
        created_ms,
        renewed_ms,
        version: &rest[colon + 1..version_end],
        payload: &rest[version_end + 1..],
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

    fn stored(id: &str, created: &str, renewed: &str, version: &str, payload: &str) -> Vec<u8> {
        format!(
            "OC2|{id}|{created}|{renewed}|{}{payload}",
            version_part(version)
        )
        .into_bytes()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_what_the_set_script_writes() {
        let bytes = stored(ID, "1764460800000", "1764460800123", "v1|:x", "{\"a\":1}");
        let s = parse(&bytes).expect("a stored object");
        assert_eq!(s.id, ID);
        assert_eq!(s.created_ms, 1_764_460_800_000);
        assert_eq!(s.renewed_ms, 1_764_460_800_123);
        assert_eq!(s.version, b"v1|:x");
        assert_eq!(s.payload, b"{\"a\":1}");
        let empty = stored(ID, "0000000000000", "0000000000000", "", "");
        assert_eq!(parse(&empty).unwrap().payload, b"");
    }

    #[test]
    fn garbage_is_not_a_stored_object() {
        for bad in [
            b"".to_vec(),
            b"garbage".to_vec(),
            b"oc{x}:o:123".to_vec(),
            stored(
                "not-hex-not-hex-not-hex-not-hex-",
                "1764460800000",
                "1764460800000",
                "v",
                "",
            ),
            stored(ID, "17644608000x0", "1764460800000", "v", "{}"),
            stored(ID, "1764460800000", "-764460800000", "v", "{}"),
            format!("OC2|{ID}|1764460800000|1764460800000|9:v|{{}}").into_bytes(),
            format!("OC2|{ID}|1764460800000|1764460800000|x:v|{{}}").into_bytes(),
            format!("OC2|{ID}|1764460800000|1764460800000|99999999999999999999999:v|").into_bytes(),
            format!("OC2|{ID}|1764460800000|1764460800000|").into_bytes(),
        ] {
            assert_eq!(parse(&bad), None, "{:?}", String::from_utf8_lossy(&bad));
        }
    }
}
