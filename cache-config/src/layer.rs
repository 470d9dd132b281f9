//! One configuration layer as the loader merges it: keys folded to lower case (so `MaxAge`
//! in a file and `MAXAGE` in the environment are the same key) and the `Caches.<Connector>`
//! shorthand moved to `Caches.Connectors.<Connector>`.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

/// The connectors that may be written directly under `Caches` (the reference's examples do).
pub(crate) const CONNECTORS: &[&str] = &["memory", "postgres", "redis"];

/// Wraps a figment provider (a YAML file, the environment) as one normalised layer.
pub(crate) struct Layer<P>(pub(crate) P);

impl<P: Provider> Provider for Layer<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            *dict = lower_case(std::mem::take(dict));
            if let Some(Value::Dict(_, caches)) = dict.get_mut("caches") {
                move_shorthand(caches)?;
            }
        }
        Ok(data)
    }
}

/// Folds every key to lower case, merging maps whose keys differ only in case.
fn lower_case(dict: Dict) -> Dict {
    let mut folded = Dict::new();
    for (key, value) in dict {
        let value = match value {
            Value::Dict(tag, inner) => Value::Dict(tag, lower_case(inner)),
            other => other,
        };
        insert_merged(&mut folded, canonical(&key), value);
    }
    folded
}

/// The lower-cased key, with the reference's other spellings mapped to one name so that a
/// layer using one spelling overrides a layer using the other.
fn canonical(key: &str) -> String {
    let key = key.to_ascii_lowercase();
    match key.as_str() {
        "lastuseage" => "lastusage".to_owned(),
        _ => key,
    }
}

fn insert_merged(dict: &mut Dict, key: String, value: Value) {
    match (dict.get_mut(&key), value) {
        (Some(Value::Dict(_, existing)), Value::Dict(_, incoming)) => {
            for (k, v) in incoming {
                insert_merged(existing, k, v);
            }
        }
        (_, value) => {
            dict.insert(key, value);
        }
    }
}

/// Moves `caches.<connector>` to `caches.connectors.<connector>`; a layer that sets one
/// connector both ways is an error (which one it meant is a guess).
#[allow(clippy::result_large_err)] // figment's own error type, as `Provider::data` returns it
fn move_shorthand(caches: &mut Dict) -> Result<(), Error> {
    for name in CONNECTORS {
        let Some(block) = caches.remove(*name) else {
            continue;
        };
        let connectors = caches
            .entry("connectors".to_owned())
            .or_insert_with(|| Value::from(Dict::new()));
        let Value::Dict(_, connectors) = connectors else {
            // `Connectors` is not a map: deserialization reports it with its path.
            continue;
        };
        if connectors.contains_key(*name) {
            let connector = crate::keys::documented(name);
            let mut error = Error::from(format!(
                "the {connector} connector is set both as Caches.{connector} and as \
                 Caches.Connectors.{connector} in the same layer; keep one of them"
            ));
            error.path = vec!["caches".into(), (*name).into()];
            return Err(error);
        }
        connectors.insert((*name).to_owned(), block);
    }
    Ok(())
}
