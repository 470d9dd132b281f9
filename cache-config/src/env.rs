//! The environment layer: `<PREFIX>_CACHES_...` variables as a figment provider.
//!
//! Two things figment's own `Env` cannot know: which path segments are one key although
//! they contain `_` (the application's purposes, e.g. `user_profile`), and which keys are
//! text (a password `0123` must stay `0123`, not become the number 123).

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use crate::layer::CONNECTORS;
use crate::model::BUILT_IN;

/// Keys whose values are text: taken exactly as written, never parsed as numbers or
/// booleans.
const TEXT_KEYS: &[&str] = &[
    "url",
    "addr",
    "network",
    "username",
    "user",
    "password",
    "host",
    "database",
    "sslmode",
    "schema",
    "clientname",
    "identitysuffix",
    "mastername",
    "cafile",
    "certfile",
    "keyfile",
    "connector",
];

/// The keys of one object cache (`Caches.<Purpose>.<Key>`, lower case): where the name of a
/// purpose that was not declared ends in a variable name.
const SETTINGS: &[&str] = &[
    "connector",
    "maxage",
    "lastusage",
    "lastuseage",
    "maxstale",
    "refreshahead",
    "log",
    "near",
    "channel",
    "lease",
];

/// The variables `<prefix>_CACHES_...`, keys split at `_` except inside purposes.
pub(crate) struct EnvVars {
    prefix: String,
    /// Declared purposes (lower case) that contain `_`, longest first.
    purposes: Vec<String>,
}

impl EnvVars {
    pub(crate) fn new(prefix: &str, purposes: &[String]) -> Self {
        let mut purposes: Vec<String> = purposes
            .iter()
            .filter(|p| p.contains('_'))
            .cloned()
            .collect();
        purposes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        EnvVars {
            prefix: format!("{}_", prefix.to_ascii_lowercase()),
            purposes,
        }
    }

    /// The key path of a variable name (lower-cased, prefix removed), or `None` when the
    /// variable is not ours.
    fn path(&self, name: &str) -> Option<Vec<String>> {
        let name = name.to_ascii_lowercase();
        let rest = name.strip_prefix(&self.prefix)?;
        let mut path = Vec::new();
        let mut rest = rest;
        while !rest.is_empty() {
            // Right below `caches`, a declared purpose is one segment whatever it contains.
            let purpose = (path.len() == 1 && path[0] == "caches")
                .then(|| {
                    self.purposes.iter().find(|p| {
                        rest.strip_prefix(p.as_str())
                            .is_some_and(|after| after.is_empty() || after.starts_with('_'))
                    })
                })
                .flatten();
            let (segment, after) = match purpose {
                Some(p) => {
                    let after = &rest[p.len()..];
                    (p.as_str(), after.strip_prefix('_').unwrap_or(after))
                }
                None if path.len() == 1 && path[0] == "caches" => below_caches(rest),
                None => rest.split_once('_').unwrap_or((rest, "")),
            };
            if segment.is_empty() {
                return None;
            }
            path.push(segment.to_owned());
            rest = after;
        }
        (path.first().map(String::as_str) == Some("caches")).then_some(path)
    }
}

/// The key right below `caches` at the start of `rest` (no declared purpose), and what
/// follows it. A key the configuration knows there (`connectors`, a built-in object cache, a
/// connector's shorthand) ends at the first `_`; anything else is a purpose that was not
/// declared, named whole up to the first key of an object cache (`not_declared_maxage` →
/// `not_declared`), so that the error about it names it as written.
fn below_caches(rest: &str) -> (&str, &str) {
    let (first, after) = rest.split_once('_').unwrap_or((rest, ""));
    let known = first == "connectors" || BUILT_IN.contains(&first) || CONNECTORS.contains(&first);
    if known || after.is_empty() {
        return (first, after);
    }
    let mut end = first.len();
    for part in after.split('_') {
        if SETTINGS.contains(&part) {
            return (&rest[..end], &rest[end + 1..]);
        }
        end += 1 + part.len();
    }
    (rest, "")
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!(
            "environment variables {}*",
            self.prefix.to_ascii_uppercase()
        ))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        for (name, raw) in std::env::vars_os() {
            let (Some(name), Some(raw)) = (name.to_str(), raw.to_str()) else {
                continue;
            };
            let Some(path) = self.path(name) else {
                continue;
            };
            let key = path.last().map(String::as_str).unwrap_or_default();
            let value = if TEXT_KEYS.contains(&key) {
                Value::from(raw.to_owned())
            } else {
                raw.parse()
                    .unwrap_or_else(|e: std::convert::Infallible| match e {})
            };
            insert(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Puts `value` at `path` below `dict`, making the maps on the way.
fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = dict;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, inner) = entry else {
            unreachable!("made a map just above")
        };
        current = inner;
    }
    current.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(env: &EnvVars, name: &str) -> Option<String> {
        env.path(name).map(|p| p.join("."))
    }

    #[test]
    fn declared_purposes_with_underscores_stay_one_key() {
        let env = EnvVars::new("APP", &["user_profile".into(), "user".into()]);
        assert_eq!(
            path(&env, "APP_CACHES_USER_PROFILE_MAXAGE").as_deref(),
            Some("caches.user_profile.maxage")
        );
        assert_eq!(
            path(&env, "APP_CACHES_USER_MAXAGE").as_deref(),
            Some("caches.user.maxage")
        );
        assert_eq!(
            path(&env, "APP_CACHES_CONNECTORS_REDIS_PASSWORD").as_deref(),
            Some("caches.connectors.redis.password")
        );
        assert_eq!(path(&env, "OTHER_CACHES_INSTANCE_MAXAGE"), None);
        assert_eq!(path(&env, "APP_CACHES__MAXAGE"), None);
    }

    #[test]
    fn undeclared_purposes_with_underscores_stay_one_key() {
        let env = EnvVars::new("APP", &["user_profile".into()]);
        for (name, expected) in [
            (
                "APP_CACHES_NOT_DECLARED_MAXAGE",
                "caches.not_declared.maxage",
            ),
            (
                "APP_CACHES_NOT_DECLARED_NEAR_ENABLED",
                "caches.not_declared.near.enabled",
            ),
            ("APP_CACHES_NOT_DECLARED", "caches.not_declared"),
            ("APP_CACHES_A_B_C_LOG_LEVEL", "caches.a_b_c.log.level"),
            ("APP_CACHES_SESSIONS_MAXAGE", "caches.sessions.maxage"),
            (
                "APP_CACHES_USER_PROFILES_MAXAGE",
                "caches.user_profiles.maxage",
            ),
            // Keys the configuration knows still end at the first `_`.
            ("APP_CACHES_INSTANCE_MAXAGE", "caches.instance.maxage"),
            (
                "APP_CACHES_CONNECTORS_MEMORY_AUTOPRUNE_INTERVAL",
                "caches.connectors.memory.autoprune.interval",
            ),
            ("APP_CACHES_REDIS_POOLSIZE", "caches.redis.poolsize"),
        ] {
            assert_eq!(path(&env, name).as_deref(), Some(expected), "{name}");
        }
    }

    /// [`SETTINGS`] lists exactly the keys of [`cache_core::CacheSettings`].
    #[test]
    fn settings_are_the_keys_of_an_object_cache() {
        let error =
            figment::Figment::from(figment::providers::Serialized::defaults(Dict::from([(
                "unknown".to_owned(),
                Value::from(1),
            )])))
            .extract::<cache_core::CacheSettings>()
            .expect_err("an unknown key");
        let figment::error::Kind::UnknownField(_, allowed) = error.kind else {
            panic!("not an unknown key: {error}");
        };
        let mut allowed: Vec<&str> = allowed.to_vec(); // aliases included
        allowed.sort_unstable();
        let mut settings = SETTINGS.to_vec();
        settings.sort_unstable();
        assert_eq!(allowed, settings);
    }
}
