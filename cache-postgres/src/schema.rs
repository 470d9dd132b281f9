//! The table and the setup step that creates it.
//!
//! One **unlogged** table in one schema (no WAL: fast writes; emptied after a server crash,
//! which a cache can afford). No partitioning, so PostgreSQL 18, which refuses unlogged
//! partitioned parents, runs the same DDL as 15. Purposes share the table and are told apart
//! by a `purpose` column: purposes are bound as query parameters and never become identifiers,
//! so no configuration can inject SQL through them. The only identifier taken from
//! configuration is the schema name, which is checked ([`Schema::new`]) and quoted.
//!
//! - `entries (purpose, index_name, key, object_id, version, created_at, last_used_at,
//!   payload)` — one row per key of a stored object, each carrying the whole object, so a read
//!   is one primary-key lookup. The rows of one object share its `object_id` (from the
//!   `object_ids` sequence); the index is stored by name, so any index works (reference defect
//!   8), and duplicate keys in one entry collapse to one row (defect 9). Keys are
//!   version-independent, so invalidating a key reaches the object whichever release stored
//!   it (defect 14); `version` scopes decoding to the release that wrote it (SPEC 8).
//!
//! `set_entries` is a PL/pgSQL function so that a set is one atomic round trip: it serialises
//! writers of the same keys with transaction-scoped advisory locks (taken in a fixed order),
//! removes every older object sharing a key (reference defect 1), and stores the new one.
//!
//! Releases before this layout kept objects and keys in two tables (`objects`,
//! `object_keys`) and a function `set_object`; setup leaves them to the processes of those
//! releases still running. Drop them once none is left.

use std::fmt;

/// The advisory lock class of this crate: `pg_advisory_xact_lock(LOCK_CLASS, hash)` takes
/// two-key locks, which never collide with an application's single-key advisory locks.
const LOCK_CLASS: i32 = 0x0CAC_4E00;

/// A checked schema name, shown quoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schema(String);

impl Schema {
    /// Accepts a plain lower-case identifier of at most 63 bytes: `[a-z_][a-z0-9_]*`.
    pub(crate) fn new(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let plain = matches!(chars.next(), Some('a'..='z' | '_'))
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'));
        if plain && name.len() <= 63 {
            Ok(Schema(name.to_owned()))
        } else {
            Err(format!(
                "{name:?} is not a plain schema name; write lower-case letters, digits and \
                 underscores, not starting with a digit, at most 63 characters (default cache)"
            ))
        }
    }
}

impl Schema {
    /// The name, unquoted.
    pub(crate) fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Schema {
    /// The quoted identifier, ready for SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Marks a schema whose objects are this release's: setup finds it and changes nothing. Bump
/// it with every change to the DDL below.
const SCHEMA_MARK: &str = "object-cache schema 5";

/// The setup script: idempotent and serialised by a transaction-scoped advisory lock, so any
/// number of processes may run it at once. When the schema is already this release's (the
/// mark on `set_entries`), it takes no table lock at all, so running it while other processes
/// use the cache cannot deadlock with them. Run it inside one transaction.
pub(crate) fn setup_sql(s: &Schema) -> String {
    let name = &s.0;
    format!(
        r#"
SELECT pg_advisory_xact_lock({LOCK_CLASS}, 0);
DO $setup$
BEGIN
IF obj_description(
       to_regprocedure('{name}.set_entries(text, text, bytea, text[], text[])'), 'pg_proc')
   IS NOT DISTINCT FROM '{SCHEMA_MARK}' THEN
    RETURN;
END IF;
CREATE SCHEMA IF NOT EXISTS {s};
CREATE SEQUENCE IF NOT EXISTS {s}.object_ids;
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.entries (
    purpose      text        NOT NULL,
    index_name   text        NOT NULL,
    key          text        NOT NULL,
    object_id    bigint      NOT NULL,
    version      text        NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    payload      bytea       NOT NULL,
    PRIMARY KEY (purpose, index_name, key)
);
CREATE INDEX IF NOT EXISTS entries_object ON {s}.entries (object_id);

CREATE OR REPLACE FUNCTION {s}.set_entries(
    p_purpose text, p_version text, p_payload bytea, p_indices text[], p_keys text[]
) RETURNS void LANGUAGE plpgsql
-- Its plans must not depend on the table's statistics (it may be empty when first planned):
-- every statement below is an index lookup.
SET enable_seqscan = off
AS $fn$
DECLARE
    v_lock integer;
    v_id   bigint;
BEGIN
    -- Writers of the same key wait for each other; a fixed order rules out deadlocks.
    FOR v_lock IN
        SELECT DISTINCT hashtext(p_purpose || chr(31) || t.idx || chr(31) || t.ky)
        FROM unnest(p_indices, p_keys) AS t(idx, ky)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock({LOCK_CLASS}, v_lock);
    END LOOP;

    -- Every older object sharing one of the keys goes entirely, with all its keys.
    -- One primary-key lookup per key (LIMIT 1 keeps the lateral from becoming a scan).
    DELETE FROM {s}.entries e
    WHERE e.object_id = ANY(ARRAY(
        SELECT DISTINCT k.object_id
        FROM unnest(p_indices, p_keys) AS t(idx, ky)
        CROSS JOIN LATERAL (
            SELECT object_id FROM {s}.entries
            WHERE purpose = p_purpose AND index_name = t.idx AND key = t.ky LIMIT 1
        ) k
    ));

    v_id := nextval('{s}.object_ids');
    INSERT INTO {s}.entries
        (purpose, index_name, key, object_id, version, created_at, last_used_at, payload)
    SELECT p_purpose, t.idx, t.ky, v_id, p_version, now(), now(), p_payload
    FROM (SELECT DISTINCT idx, ky FROM unnest(p_indices, p_keys) AS u(idx, ky)) t
    ON CONFLICT (purpose, index_name, key) DO UPDATE SET
        object_id = EXCLUDED.object_id, version = EXCLUDED.version,
        created_at = EXCLUDED.created_at, last_used_at = EXCLUDED.last_used_at,
        payload = EXCLUDED.payload;
END
$fn$;
COMMENT ON FUNCTION {s}.set_entries(text, text, bytea, text[], text[]) IS '{SCHEMA_MARK}';
END
$setup$;
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert_eq!(Schema::new("cache").unwrap().to_string(), "\"cache\"");
        assert!(Schema::new("_c4che_2").is_ok());
        for bad in [
            "",
            "Cache",
            "4cache",
            "cache\"; DROP TABLE users; --",
            "ca che",
            "cäche",
            &"c".repeat(64),
        ] {
            assert!(Schema::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
