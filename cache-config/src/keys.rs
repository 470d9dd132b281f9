//! Key spelling: the documented (PascalCase) name of each lower-cased key, and suggestions
//! for misspelt ones.

/// Every key of the `Caches` tree as the reference documentation spells it.
const DOCUMENTED: &[&str] = &[
    "Caches",
    "Connectors",
    "Memory",
    "Postgres",
    "Redis",
    "Enabled",
    "Capacity",
    "AutoPrune",
    "Interval",
    "Timeout",
    "CircuitBreaker",
    "Cluster",
    "Sentinel",
    "Addrs",
    "MasterName",
    "MaxConsecutiveFailures",
    "MaxFailureRatio",
    "MaxRetryRequests",
    "MinRequests",
    "Instance",
    "Milestones",
    "Organization",
    "Connector",
    "Channel",
    "Near",
    "Lease",
    "Time",
    "MaxAge",
    "LastUsage",
    "LastUseAge",
    "MaxStale",
    "RefreshAhead",
    "Log",
    "Level",
    "AddSource",
    "Formatter",
    "Format",
    "URL",
    "Addr",
    "Network",
    "Username",
    "User",
    "Host",
    "Port",
    "Database",
    "SSLMode",
    "Schema",
    "ConnectTimeout",
    "StatementTimeout",
    "Password",
    "DB",
    "EnableTLS",
    "TLS",
    "CAFile",
    "CertFile",
    "KeyFile",
    "InsecureSkipVerify",
    "PoolSize",
    "MaxConcurrentReads",
    "MaxObjectSize",
    "MaxActiveConns",
    "MinIdleConns",
    "MaxIdleConns",
    "ConnMaxIdleTime",
    "ConnMaxLifetime",
    "PoolTimeout",
    "PoolFIFO",
    "DialTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "ClientName",
    "DBOffset",
    "MaxRetries",
    "MinRetryBackoff",
    "MaxRetryBackoff",
    "DisableIndentity",
    "IdentitySuffix",
];

/// The documented spelling of a lower-cased key; unknown keys are returned as they are.
pub(crate) fn documented(key: &str) -> String {
    DOCUMENTED
        .iter()
        .find(|d| d.eq_ignore_ascii_case(key))
        .map(|d| (*d).to_owned())
        .unwrap_or_else(|| key.to_owned())
}

/// A key path in its documented spelling: `caches.instance.maxage` → `Caches.Instance.MaxAge`.
pub(crate) fn path<S: AsRef<str>>(segments: &[S]) -> String {
    segments
        .iter()
        .map(|s| documented(s.as_ref()))
        .collect::<Vec<_>>()
        .join(".")
}

/// The candidate closest to `word` (case-insensitive edit distance), if it is close enough
/// to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_use_the_documented_spelling() {
        assert_eq!(
            path(&["caches", "connectors", "memory", "autoprune", "interval"]),
            "Caches.Connectors.Memory.AutoPrune.Interval"
        );
        assert_eq!(path(&["caches", "sessions"]), "Caches.sessions");
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(
            did_you_mean("maxag", &["MaxAge", "LastUsage"]),
            Some("MaxAge")
        );
        assert_eq!(
            did_you_mean("lastusag", &["MaxAge", "LastUsage"]),
            Some("LastUsage")
        );
        assert_eq!(did_you_mean("colour", &["MaxAge", "LastUsage"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
