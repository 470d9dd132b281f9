//! The tables and the setup step that creates them.
//!
//! **Unlogged** tables in one schema (no WAL: fast writes; emptied after a server crash,
//! which a cache can afford). No partitioning, so PostgreSQL 18, which refuses unlogged
//! partitioned parents, runs the same DDL as 15. Purposes share the tables and are told apart
//! by a `purpose` column: purposes are bound as query parameters and never become identifiers,
//! so no configuration can inject SQL through them. The only identifier taken from
//! configuration is the schema name, which is checked ([`Schema::new`]) and quoted.
//!
//! - `keys (purpose, index_name, key, version, object_id, created_at, last_used_at, digest,
//!   payload)` — one row per key of a stored object and release (SPEC 8: each release reads
//!   and writes its own rows, so releases side by side never evict each other). The rows of
//!   one object share its `object_id` (from the `object_ids` sequence). An ordinary object's
//!   rows each carry its payload, so a read is one primary-key lookup; an object whose copies
//!   would take more than [`INLINE_BUDGET`](cache_core::keys::INLINE_BUDGET) is stored once in
//!   `bodies` and its rows carry no payload (a read then joins its body, still one
//!   statement). The index is stored by name, so any index works (reference defect 8), and
//!   duplicate keys in one entry collapse to one row (defect 9). The primary key leads with
//!   (purpose, index_name, key), so a change of a key reaches the rows of every release
//!   (defect 14). `digest` is the object's key-set digest: a set keeps another release's copy
//!   of the same object and removes objects it makes ghosts of.
//! - `bodies (object_id, purpose, version, created_at, last_used_at, payload)` — objects
//!   stored once; their times are the object's (their key rows' are not read).
//!
//! Every write is a PL/pgSQL function, one atomic round trip: `put_object` serialises writers
//! of the same keys with transaction-scoped advisory locks (on at most 256 key buckets, taken
//! in a fixed order), removes every older object sharing a key (reference defect 1), and
//! stores the new one (or, as a read-through's fill, only if nothing overtook its lease);
//! `take_lease`, `invalidate_keys`, `delete_keys`, `truncate_purpose` and `renew_objects` do
//! what their names say.
//!
//! - `leases (purpose, index_name, key, version, token, taken_at, expires_at)` — read-throughs'
//!   leases; `changes (purpose, index_name, key, changed_at, expires_at)` — keys lately
//!   invalidated or deleted, so a fill whose lease is older is refused.
//!
//! Releases before this layout kept their rows in `entries` (function `set_entries`), and
//! before that in `objects` / `object_keys` (`set_object`); setup leaves them to the processes
//! of those releases still running (their objects are misses here, and a truncate empties
//! this purpose's rows of `entries` too). Drop them once none is left.

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
    /// The `LISTEN`/`NOTIFY` channel of this schema's caches: one per schema, so separate
    /// deployments in one database stay apart (a channel name holds at most 63 bytes).
    pub(crate) fn channel(&self) -> String {
        let mut name = format!("oc_{}", self.0);
        name.truncate(63);
        name
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
const SCHEMA_MARK: &str = "object-cache schema 13";

/// The setup script: idempotent and serialised by a transaction-scoped advisory lock, so any
/// number of processes may run it at once. When the schema is already this release's (the
/// mark on `put_object`), it takes no table lock at all, so running it while other processes
/// use the cache cannot deadlock with them. Run it inside one transaction.
pub(crate) fn setup_sql(s: &Schema) -> String {
    let name = &s.0;
    let channel = s.channel();
    format!(
        r#"
SELECT pg_advisory_xact_lock({LOCK_CLASS}, 0);
DO $setup$
BEGIN
IF obj_description(
       to_regprocedure('{name}.put_object(text, text, bytea, text[], text[], text, boolean, text, text[], text, text, text)'),
       'pg_proc')
   IS NOT DISTINCT FROM '{SCHEMA_MARK}' THEN
    RETURN;
END IF;
CREATE SCHEMA IF NOT EXISTS {s};
CREATE SEQUENCE IF NOT EXISTS {s}.object_ids;
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.keys (
    purpose      text        NOT NULL,
    index_name   text        NOT NULL,
    key          text        NOT NULL,
    version      text        NOT NULL,
    object_id    bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    digest       text        NOT NULL,
    payload      bytea,
    PRIMARY KEY (purpose, index_name, key, version)
);
CREATE INDEX IF NOT EXISTS keys_object ON {s}.keys (object_id);
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.bodies (
    object_id    bigint      PRIMARY KEY,
    purpose      text        NOT NULL,
    version      text        NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    payload      bytea       NOT NULL
);
CREATE INDEX IF NOT EXISTS bodies_purpose ON {s}.bodies (purpose);
-- Read-throughs' leases (one per key and release), and when keys were last changed by an
-- invalidation or delete (for a lease's length: a fill whose lease is older is refused).
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.leases (
    purpose    text        NOT NULL,
    index_name text        NOT NULL,
    key        text        NOT NULL,
    version    text        NOT NULL,
    token      text        NOT NULL,
    taken_at   timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (purpose, index_name, key, version)
);
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.changes (
    purpose    text        NOT NULL,
    index_name text        NOT NULL,
    key        text        NOT NULL,
    changed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (purpose, index_name, key)
);

-- Their plans must not depend on the tables' statistics (they may be empty when first
-- planned): every statement below is an index lookup.
-- p_lease_index / p_lease_key / p_token: a fill by the holder of that lease, stored only if
-- the lease is still this one and no key of the object changed since it was taken (returns
-- 'refused' then); NULL: a plain set. Returns 'stored' otherwise.
CREATE OR REPLACE FUNCTION {s}.put_object(
    p_purpose text, p_version text, p_payload bytea, p_indices text[], p_keys text[],
    p_digest text, p_inline boolean, p_channel text, p_messages text[],
    p_lease_index text, p_lease_key text, p_token text
) RETURNS text LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_lock  integer;
    v_old   bigint[];
    v_id    bigint;
    v_taken timestamptz;
BEGIN
    -- Our own change: the triggers that report changes made by hand stay quiet; the change
    -- announces itself (p_messages, built by the connector) in this transaction.
    PERFORM set_config('oc.quiet', 'on', true);
    -- Writers of the same key wait for each other; a fixed order rules out deadlocks. Keys
    -- fall in 256 buckets, so a set of any number of keys takes at most 256 locks.
    FOR v_lock IN
        SELECT DISTINCT hashtext(p_purpose || chr(31) || t.idx || chr(31) || t.ky) & 255
        FROM unnest(p_indices, p_keys) AS t(idx, ky)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock({LOCK_CLASS}, v_lock + 1);
    END LOOP;

    IF p_token IS NOT NULL THEN
        SELECT taken_at INTO v_taken FROM {s}.leases
        WHERE purpose = p_purpose AND index_name = p_lease_index AND key = p_lease_key
          AND version = p_version AND token = p_token AND expires_at > now();
        IF v_taken IS NULL OR EXISTS (
            SELECT 1 FROM unnest(p_indices, p_keys) AS t(idx, ky)
            CROSS JOIN LATERAL (
                SELECT 1 FROM {s}.changes
                WHERE purpose = p_purpose AND index_name = t.idx AND key = t.ky
                  AND changed_at >= v_taken
                OFFSET 0
            ) c
        ) OR EXISTS (
            SELECT 1 FROM unnest(p_indices, p_keys) AS t(idx, ky)
            CROSS JOIN LATERAL (
                SELECT 1 FROM {s}.keys
                WHERE purpose = p_purpose AND index_name = t.idx AND key = t.ky
                  AND version = p_version AND created_at >= v_taken
                OFFSET 0
            ) k
        ) THEN
            -- The lease, if still this one's, ends: the next miss loads again at once
            -- instead of waiting for it to expire.
            DELETE FROM {s}.leases
            WHERE purpose = p_purpose AND index_name = p_lease_index AND key = p_lease_key
              AND version = p_version AND token = p_token;
            RETURN 'refused';
        END IF;
    END IF;

    -- Every older object holding one of the keys goes entirely, with all its keys: of this
    -- release whatever it is, of other releases when its key set differs (another release's
    -- copy of the same object stays). One primary-key range lookup per key.
    v_old := ARRAY(
        SELECT DISTINCT k.object_id
        FROM unnest(p_indices, p_keys) AS t(idx, ky)
        CROSS JOIN LATERAL (
            SELECT object_id, version, digest FROM {s}.keys
            WHERE purpose = p_purpose AND index_name = t.idx AND key = t.ky
            OFFSET 0 -- a fence: one index lookup per key, never a join over the purpose
        ) k
        WHERE k.version = p_version OR k.digest <> p_digest
    );
    IF cardinality(v_old) > 0 THEN
        DELETE FROM {s}.keys WHERE object_id = ANY(v_old);
        DELETE FROM {s}.bodies WHERE object_id = ANY(v_old);
    END IF;

    v_id := nextval('{s}.object_ids');
    IF NOT p_inline THEN
        INSERT INTO {s}.bodies (object_id, purpose, version, created_at, last_used_at, payload)
        VALUES (v_id, p_purpose, p_version, now(), now(), p_payload);
    END IF;
    INSERT INTO {s}.keys
        (purpose, index_name, key, version, object_id, created_at, last_used_at, digest, payload)
    SELECT p_purpose, t.idx, t.ky, p_version, v_id, now(), now(), p_digest,
           CASE WHEN p_inline THEN p_payload END
    FROM (SELECT DISTINCT idx, ky FROM unnest(p_indices, p_keys) AS u(idx, ky)) t
    ON CONFLICT (purpose, index_name, key, version) DO UPDATE SET
        object_id = EXCLUDED.object_id, created_at = EXCLUDED.created_at,
        last_used_at = EXCLUDED.last_used_at, digest = EXCLUDED.digest,
        payload = EXCLUDED.payload;
    -- A set ends the leases of its keys (this release's).
    DELETE FROM {s}.leases l
    USING unnest(p_indices, p_keys) AS t(idx, ky)
    WHERE l.purpose = p_purpose AND l.index_name = t.idx AND l.key = t.ky
      AND l.version = p_version;
    PERFORM pg_notify(p_channel, m) FROM unnest(p_messages) AS m;
    RETURN 'stored';
END
$fn$;

-- A read-through missed the key: the live object after all (as the read finds it, with
-- 'hit'), or its lease — 'granted' to this token, or 'held' by another for ms_left.
CREATE OR REPLACE FUNCTION {s}.take_lease(
    p_purpose text, p_index text, p_key text, p_version text, p_lease_ms bigint,
    p_token text, p_max_age bigint, p_last_usage bigint,
    OUT status text, OUT payload bytea, OUT age_ms bigint, OUT ms_left bigint
) LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_expires timestamptz;
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    -- Looks at the key; when nothing live is there, leases it — and looks once more: the
    -- lease may have been inserted just after a fill committed (and ended the lease it
    -- filled), which the first look, an earlier snapshot, did not see. Then the fill is the
    -- answer and this lease goes again.
    FOR v_round IN 1..2 LOOP
        SELECT coalesce(e.payload, b.payload),
               (extract(epoch FROM now() - coalesce(b.created_at, e.created_at)) * 1000)::int8
        INTO payload, age_ms
        FROM {s}.keys e
        LEFT JOIN LATERAL (
            SELECT x.payload, x.created_at, x.last_used_at FROM {s}.bodies x
            WHERE x.object_id = e.object_id AND e.payload IS NULL
            LIMIT 1
        ) b ON true
        WHERE e.purpose = p_purpose AND e.index_name = p_index AND e.key = p_key
          AND e.version = p_version
          AND (e.payload IS NOT NULL OR b.payload IS NOT NULL)
          AND (p_max_age = 0
               OR coalesce(b.created_at, e.created_at)
                  > now() - p_max_age * interval '1 millisecond')
          AND (p_last_usage = 0
               OR coalesce(b.last_used_at, e.last_used_at)
                  > now() - p_last_usage * interval '1 millisecond');
        IF payload IS NOT NULL THEN
            IF v_round = 2 THEN
                DELETE FROM {s}.leases
                WHERE purpose = p_purpose AND index_name = p_index AND key = p_key
                  AND version = p_version AND token = p_token;
            END IF;
            status := 'hit';
            RETURN;
        END IF;
        EXIT WHEN v_round = 2;
        INSERT INTO {s}.leases AS l (purpose, index_name, key, version, token, taken_at,
                                     expires_at)
        VALUES (p_purpose, p_index, p_key, p_version, p_token, clock_timestamp(),
                clock_timestamp() + p_lease_ms * interval '1 millisecond')
        ON CONFLICT (purpose, index_name, key, version) DO UPDATE
            SET token = EXCLUDED.token, taken_at = EXCLUDED.taken_at,
                expires_at = EXCLUDED.expires_at
            WHERE l.expires_at <= now()
        RETURNING l.expires_at INTO v_expires;
        IF v_expires IS NULL THEN
            SELECT (extract(epoch FROM l.expires_at - now()) * 1000)::int8 INTO ms_left
            FROM {s}.leases l
            WHERE l.purpose = p_purpose AND l.index_name = p_index AND l.key = p_key
              AND l.version = p_version;
            status := 'held';
            RETURN;
        END IF;
    END LOOP;
    status := 'granted';
END
$fn$;

-- An invalidation or delete of the keys, as a fill whose lease is older sees it: their leases
-- end, and (leases on: p_lease_ms > 0) the change is noted for that long.
CREATE OR REPLACE FUNCTION {s}.note_changes(
    p_purpose text, p_index text, p_keys text[], p_lease_ms bigint
) RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_key text;
BEGIN
    FOREACH v_key IN ARRAY p_keys LOOP
        DELETE FROM {s}.leases
        WHERE purpose = p_purpose AND index_name = p_index AND key = v_key;
        IF p_lease_ms > 0 THEN
            INSERT INTO {s}.changes (purpose, index_name, key, changed_at, expires_at)
            VALUES (p_purpose, p_index, v_key, clock_timestamp(),
                    clock_timestamp() + p_lease_ms * interval '1 millisecond')
            ON CONFLICT (purpose, index_name, key) DO UPDATE
                SET changed_at = EXCLUDED.changed_at, expires_at = EXCLUDED.expires_at;
        END IF;
    END LOOP;
END
$fn$;

-- The objects behind the keys, of every release (or of release p_version only, for what it
-- cannot decode), with all their keys; and the keys' rows themselves. Returns how many
-- objects went.
CREATE OR REPLACE FUNCTION {s}.invalidate_keys(
    p_purpose text, p_index text, p_keys text[], p_version text, p_channel text,
    p_messages text[], p_lease_ms bigint
) RETURNS bigint LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_old bigint[];
    v_key text;
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    v_old := ARRAY(
        SELECT DISTINCT k.object_id FROM unnest(p_keys) AS u(key)
        CROSS JOIN LATERAL (
            SELECT object_id FROM {s}.keys
            WHERE purpose = p_purpose AND index_name = p_index AND key = u.key
              AND (p_version IS NULL OR version = p_version)
            OFFSET 0 -- a fence: one index lookup per key, never a join over the purpose
        ) k
    );
    DELETE FROM {s}.keys WHERE object_id = ANY(v_old);
    DELETE FROM {s}.bodies WHERE object_id = ANY(v_old);
    -- The keys' own rows whatever they hold, one primary-key lookup each.
    FOREACH v_key IN ARRAY p_keys LOOP
        DELETE FROM {s}.keys
        WHERE purpose = p_purpose AND index_name = p_index AND key = v_key
          AND (p_version IS NULL OR version = p_version);
    END LOOP;
    PERFORM {s}.note_changes(p_purpose, p_index, p_keys, p_lease_ms);
    PERFORM pg_notify(p_channel, m) FROM unnest(p_messages) AS m;
    RETURN cardinality(v_old);
END
$fn$;

-- These key rows only, of every release; their objects stay reachable otherwise.
CREATE OR REPLACE FUNCTION {s}.delete_keys(
    p_purpose text, p_index text, p_keys text[], p_channel text, p_messages text[],
    p_lease_ms bigint
) RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_key text;
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    -- One primary-key lookup per key (`key = ANY(...)` may be planned as a scan of the
    -- whole index).
    FOREACH v_key IN ARRAY p_keys LOOP
        DELETE FROM {s}.keys
        WHERE purpose = p_purpose AND index_name = p_index AND key = v_key;
    END LOOP;
    PERFORM {s}.note_changes(p_purpose, p_index, p_keys, p_lease_ms);
    PERFORM pg_notify(p_channel, m) FROM unnest(p_messages) AS m;
END
$fn$;

-- Everything of the purpose, every release (and what the layout before this one left).
CREATE OR REPLACE FUNCTION {s}.truncate_purpose(
    p_purpose text, p_channel text, p_messages text[]
) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    DELETE FROM {s}.keys WHERE purpose = p_purpose;
    DELETE FROM {s}.bodies WHERE purpose = p_purpose;
    DELETE FROM {s}.leases WHERE purpose = p_purpose;
    IF to_regclass('{name}.entries') IS NOT NULL THEN
        EXECUTE 'DELETE FROM {s}.entries WHERE purpose = $1' USING p_purpose;
    END IF;
    PERFORM pg_notify(p_channel, m) FROM unnest(p_messages) AS m;
END
$fn$;

-- One batch of a truncate: up to p_batch key rows of the purpose (every release) after the
-- given key in the primary key's order — each batch starts where the last one ended, so none
-- walks over the index entries its predecessors removed — and the last key removed (none
-- when nothing was left). The truncate's last statement (truncate_purpose) removes what sets
-- added meanwhile and announces it: no statement of a truncate holds its rows, or runs, for
-- long, however large the object cache.
CREATE OR REPLACE FUNCTION {s}.truncate_keys(
    p_purpose text, p_batch bigint, p_index text, p_key text, p_version text
) RETURNS TABLE(removed bigint, last_index text, last_key text, last_version text)
LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    RETURN QUERY
    WITH batch AS MATERIALIZED (
        SELECT k.index_name, k.key, k.version FROM {s}.keys k
        WHERE k.purpose = p_purpose
          AND (k.index_name, k.key, k.version) > (p_index, p_key, p_version)
        ORDER BY k.index_name, k.key, k.version
        LIMIT p_batch
    ), gone AS (
        DELETE FROM {s}.keys k USING batch b
        WHERE k.purpose = p_purpose AND k.index_name = b.index_name AND k.key = b.key
          AND k.version = b.version
        RETURNING 1
    ), last AS (
        SELECT b.index_name, b.key, b.version FROM batch b
        ORDER BY b.index_name DESC, b.key DESC, b.version DESC
        LIMIT 1
    )
    SELECT (SELECT count(*) FROM gone), l.index_name, l.key, l.version
    FROM (SELECT 1) AS one LEFT JOIN last l ON true;
END
$fn$;

-- The same for the purpose's bodies, by object id after p_after: the rows removed and the
-- last id (NULL when nothing was left).
CREATE OR REPLACE FUNCTION {s}.truncate_bodies(p_purpose text, p_batch bigint, p_after bigint)
RETURNS TABLE(removed bigint, last_id bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    RETURN QUERY
    WITH batch AS MATERIALIZED (
        SELECT o.object_id FROM {s}.bodies o
        WHERE o.object_id > p_after AND o.purpose = p_purpose
        ORDER BY o.object_id
        LIMIT p_batch
    ), gone AS (
        DELETE FROM {s}.bodies o USING batch b WHERE o.object_id = b.object_id RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone), (SELECT max(object_id) FROM batch);
END
$fn$;

-- LastUsage of the objects, as of now, unless another hit just did (p_after ms), and only
-- while they are alive (p_max_age, p_last_usage ms; 0 = off): a renewal never revives what
-- expired since the hit (and may be half pruned already). Returns the rows written.
CREATE OR REPLACE FUNCTION {s}.renew_objects(
    p_ids bigint[], p_after bigint, p_max_age bigint, p_last_usage bigint
) RETURNS bigint LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_rows bigint;
    v_bodies bigint;
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    UPDATE {s}.keys SET last_used_at = now()
    WHERE object_id = ANY(p_ids) AND payload IS NOT NULL
      AND last_used_at <= now() - p_after * interval '1 millisecond'
      AND (p_max_age = 0 OR created_at > now() - p_max_age * interval '1 millisecond')
      AND (p_last_usage = 0 OR last_used_at > now() - p_last_usage * interval '1 millisecond');
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    UPDATE {s}.bodies SET last_used_at = now()
    WHERE object_id = ANY(p_ids)
      AND last_used_at <= now() - p_after * interval '1 millisecond'
      AND (p_max_age = 0 OR created_at > now() - p_max_age * interval '1 millisecond')
      AND (p_last_usage = 0 OR last_used_at > now() - p_last_usage * interval '1 millisecond');
    GET DIAGNOSTICS v_bodies = ROW_COUNT;
    RETURN v_rows + v_bodies;
END
$fn$;
-- One batch of prune (see the connector's statements): quiet, expiry is no change to
-- announce (memory levels expire their copies by the same rules).
CREATE OR REPLACE FUNCTION {s}.prune_keys(
    p_purpose text, p_max_age bigint, p_last_usage bigint, p_batch bigint
) RETURNS bigint LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_rows bigint;
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    DELETE FROM {s}.keys e
    WHERE e.ctid = ANY(ARRAY(
        SELECT x.ctid FROM {s}.keys x
        WHERE x.purpose = p_purpose AND (
            (x.payload IS NOT NULL AND (
                   (p_max_age > 0 AND x.created_at <= now() - p_max_age * interval '1 millisecond')
                OR (p_last_usage > 0
                    AND x.last_used_at <= now() - p_last_usage * interval '1 millisecond')))
            OR (x.payload IS NULL AND NOT EXISTS (
                SELECT 1 FROM {s}.bodies b WHERE b.object_id = x.object_id)))
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ));
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    -- Leases and noted changes past their time (few: one per recent miss or change).
    DELETE FROM {s}.leases WHERE purpose = p_purpose AND expires_at <= now();
    DELETE FROM {s}.changes WHERE purpose = p_purpose AND expires_at <= now();
    RETURN v_rows;
END
$fn$;

CREATE OR REPLACE FUNCTION {s}.prune_bodies(
    p_purpose text, p_max_age bigint, p_last_usage bigint, p_batch bigint,
    OUT bodies bigint, OUT key_rows bigint
) LANGUAGE plpgsql SET enable_seqscan = off AS $fn$
DECLARE
    v_gone bigint[];
BEGIN
    PERFORM set_config('oc.quiet', 'on', true);
    WITH gone AS (
        DELETE FROM {s}.bodies b
        WHERE b.object_id = ANY(ARRAY(
            SELECT x.object_id FROM {s}.bodies x
            WHERE x.purpose = p_purpose AND (
                   (p_max_age > 0 AND x.created_at <= now() - p_max_age * interval '1 millisecond')
                OR (p_last_usage > 0
                    AND x.last_used_at <= now() - p_last_usage * interval '1 millisecond'))
            LIMIT p_batch
            FOR UPDATE SKIP LOCKED
        ))
        RETURNING b.object_id
    )
    SELECT array_agg(object_id) INTO v_gone FROM gone;
    bodies := coalesce(cardinality(v_gone), 0);
    DELETE FROM {s}.keys WHERE object_id = ANY(coalesce(v_gone, '{{}}'));
    GET DIAGNOSTICS key_rows = ROW_COUNT;
END
$fn$;

-- Changes made behind the library's back — rows updated or deleted by hand, tables truncated
-- — are announced too (the library's own functions set oc.quiet: they announce themselves).
-- A key stored as a digest cannot be named: its object cache is announced truncated.
CREATE OR REPLACE FUNCTION {s}.announce_key() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF left(OLD.key, 1) = chr(1) THEN
        PERFORM pg_notify('{channel}',
            json_build_object('o', 0, 'p', OLD.purpose, 'k', 't')::text);
    ELSE
        PERFORM pg_notify('{channel}',
            json_build_object('o', 0, 'p', OLD.purpose, 'k', 'i', 'x', OLD.index_name,
                              's', json_build_array(OLD.key))::text);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION {s}.announce_body() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{channel}',
        CASE WHEN left(k.key, 1) = chr(1)
             THEN json_build_object('o', 0, 'p', k.purpose, 'k', 't')::text
             ELSE json_build_object('o', 0, 'p', k.purpose, 'k', 'i', 'x', k.index_name,
                                    's', json_build_array(k.key))::text
        END)
    FROM (SELECT purpose, index_name, key FROM {s}.keys
          WHERE object_id = OLD.object_id LIMIT 1) k;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION {s}.announce_flush() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{channel}', '{{"o":0,"k":"f"}}');
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE TRIGGER keys_changed AFTER UPDATE OR DELETE ON {s}.keys FOR EACH ROW
    WHEN (current_setting('oc.quiet', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {s}.announce_key();
CREATE OR REPLACE TRIGGER bodies_changed AFTER UPDATE OR DELETE ON {s}.bodies FOR EACH ROW
    WHEN (current_setting('oc.quiet', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {s}.announce_body();
CREATE OR REPLACE TRIGGER keys_truncated AFTER TRUNCATE ON {s}.keys
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.announce_flush();
CREATE OR REPLACE TRIGGER bodies_truncated AFTER TRUNCATE ON {s}.bodies
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.announce_flush();

COMMENT ON FUNCTION
    {s}.put_object(text, text, bytea, text[], text[], text, boolean, text, text[], text, text, text)
    IS '{SCHEMA_MARK}';
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
