//! How shared backends (postgres, redis) turn values into bytes and back: JSON.
//!
//! One place, so every shared backend stores the same bytes and classifies codec failures the
//! same way: an undecodable stored value is a [`Codec`](crate::ErrorKind::Codec) error, which
//! connectors answer as a miss and remove.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Encodes a value for storage.
pub fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::codec("the value could not be encoded as JSON; check its Serialize implementation")
            .with_source(e)
    })
}

/// Decodes a stored value; fails on bytes written for another shape of the type.
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::codec("a stored value could not be decoded (written by another release?); it is treated as a miss")
            .with_source(e)
    })
}

/// A stored value read by a get: the value, or `None` — after logging at warn, with the
/// cache's purpose and connector — when it does not decode. The connector then removes it,
/// so a value written by another shape of the type costs one miss.
pub fn decode_hit<V: DeserializeOwned>(
    bytes: &[u8],
    purpose: &str,
    connector: &'static str,
) -> Option<std::sync::Arc<V>> {
    match decode::<V>(bytes) {
        Ok(value) => Some(std::sync::Arc::new(value)),
        Err(error) => {
            tracing::warn!(purpose, connector, %error, "undecodable cached object removed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let bytes = encode(&vec!["a".to_owned(), "b".to_owned()]).unwrap();
        assert_eq!(decode::<Vec<String>>(&bytes).unwrap(), vec!["a", "b"]);
        let err = decode::<Vec<String>>(b"{not json").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Codec);
        assert!(!err.is_temporary());
        assert_eq!(
            decode_hit::<Vec<String>>(&bytes, "p", "c").as_deref(),
            Some(&vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(decode_hit::<Vec<String>>(b"{not json", "p", "c").is_none());
    }
}
