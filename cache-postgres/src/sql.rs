//! The statements of the connector: fixed SQL (purposes, keys and times are parameters), so
//! each is prepared once per connection and reused.
//!
//! Times are the server's (`now()`), so every process sharing the database agrees on expiry.
//! Durations travel as whole milliseconds; 0 disables a rule.

use tokio_postgres::types::Type;

use crate::schema::Schema;

/// One statement of the connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stmt {
    /// `(purpose, index, key, version, max_age_ms, last_usage_ms, renew_after_ms) ->
    /// (key, payload, id, renew, age_ms)?`: the object behind a key, if it is alive, whether
    /// its LastUsage was written longer than `renew_after_ms` ago, and its age. Reads only.
    Get,
    /// [`Get`](Stmt::Get) for many keys of one index at once (`keys[]` for `key`): a row per
    /// key found.
    GetMany,
    /// `(ids[], renew_after_ms, max_age_ms, last_usage_ms)`: writes LastUsage of objects still
    /// alive, unless another hit just did.
    Renew,
    /// `(purpose, version, payload, indices[], keys[])`: the `set_entries` function.
    Set,
    /// `(purpose, index, keys[]) -> removed objects`: every object behind the keys, with all
    /// its keys.
    Invalidate,
    /// `(purpose, index, keys[])`: these key rows only.
    Delete,
    /// `(purpose)`: every key and object of the purpose, in one statement.
    Truncate,
    /// `(purpose, max_age_ms, last_usage_ms, batch) -> removed rows`: one batch of the rows
    /// of expired objects.
    Prune,
    /// `(channel, payload)`: a notification to every session listening on the channel.
    Notify,
}

impl Stmt {
    /// Every statement, in the order of [`Stmt::position`].
    pub(crate) const ALL: [Stmt; 9] = [
        Stmt::Get,
        Stmt::GetMany,
        Stmt::Renew,
        Stmt::Set,
        Stmt::Invalidate,
        Stmt::Delete,
        Stmt::Truncate,
        Stmt::Prune,
        Stmt::Notify,
    ];

    /// This statement's slot in per-connection caches.
    pub(crate) fn position(self) -> usize {
        self as usize
    }

    /// The parameter types, declared so that the statement needs no server-side inference
    /// (and so that it can run unprepared, in one round trip, on an application's pool).
    pub(crate) fn types(self) -> &'static [Type] {
        match self {
            Stmt::Get => &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
            ],
            Stmt::GetMany => &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT_ARRAY,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
            ],
            Stmt::Renew => &[Type::INT8_ARRAY, Type::INT8, Type::INT8, Type::INT8],
            Stmt::Set => &[
                Type::TEXT,
                Type::TEXT,
                Type::BYTEA,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
            ],
            Stmt::Invalidate | Stmt::Delete => &[Type::TEXT, Type::TEXT, Type::TEXT_ARRAY],
            Stmt::Truncate => &[Type::TEXT],
            Stmt::Prune => &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8],
            Stmt::Notify => &[Type::TEXT, Type::TEXT],
        }
    }
}

/// The SQL of every statement for one schema.
#[derive(Debug)]
pub(crate) struct Statements {
    sql: Vec<String>,
}

impl Statements {
    pub(crate) fn new(s: &Schema) -> Self {
        Statements {
            sql: Stmt::ALL.iter().map(|stmt| sql(*stmt, s)).collect(),
        }
    }

    pub(crate) fn sql(&self, stmt: Stmt) -> &str {
        &self.sql[stmt.position()]
    }
}

const MS: &str = "interval '1 millisecond'";

fn sql(stmt: Stmt, s: &Schema) -> String {
    // One primary-key lookup per key: `LIMIT 1` keeps the planner from flattening the lateral
    // subquery into a join that scans every key of the purpose (its generic plan did).
    let key_lookup = format!(
        "SELECT key, object_id, ctid FROM {s}.entries
         WHERE purpose = $1 AND index_name = $2 AND key = u.key LIMIT 1"
    );
    let key_lookup = key_lookup.as_str();
    // The row of a key, alive on the server's clock, and whether LastUsage needs writing.
    let get = |rows: &str, key_match: &str| {
        format!(
            "SELECT e.key, e.payload, e.object_id,
                    ($7 > 0 AND e.last_used_at <= now() - $7 * {MS}) AS renew,
                    (extract(epoch FROM now() - e.created_at) * 1000)::int8 AS age_ms
             FROM {rows}
             WHERE {key_match} e.version = $4
               AND ($5 = 0 OR e.created_at > now() - $5 * {MS})
               AND ($6 = 0 OR e.last_used_at > now() - $6 * {MS})"
        )
    };
    match stmt {
        Stmt::Get => get(
            &format!("{s}.entries e"),
            "e.purpose = $1 AND e.index_name = $2 AND e.key = $3 AND",
        ),
        // One primary-key lookup per key, whatever the table's statistics say.
        Stmt::GetMany => get(
            &format!(
                "unnest($3::text[]) AS u(key) CROSS JOIN LATERAL (
                    SELECT * FROM {s}.entries
                    WHERE purpose = $1 AND index_name = $2 AND key = u.key LIMIT 1
                 ) e"
            ),
            "",
        ),
        // Every row of the objects (all their keys), unless another hit just did — and only
        // while the object is alive ($3 MaxAge, $4 LastUsage): a renewal never revives rows
        // of an object that expired since the hit (and may be half pruned already).
        Stmt::Renew => format!(
            "UPDATE {s}.entries SET last_used_at = now()
             WHERE object_id = ANY($1) AND last_used_at <= now() - $2 * {MS}
               AND ($3 = 0 OR created_at > now() - $3 * {MS})
               AND ($4 = 0 OR last_used_at > now() - $4 * {MS})"
        ),
        Stmt::Set => format!("SELECT {s}.set_entries($1, $2, $3, $4, $5)"),
        Stmt::Notify => "SELECT pg_notify($1, $2)".to_owned(),
        // Object ids are unique across purposes: no purpose condition, which would turn the
        // lookup by id into a scan of the purpose's rows.
        Stmt::Invalidate => format!(
            "WITH gone AS (
                DELETE FROM {s}.entries e
                WHERE e.object_id = ANY(ARRAY(
                    SELECT DISTINCT k.object_id FROM unnest($3::text[]) AS u(key)
                    CROSS JOIN LATERAL ({key_lookup}) k
                ))
                RETURNING e.object_id
            )
            SELECT count(DISTINCT object_id) FROM gone"
        ),
        // By primary key, not by the rows' ctids: a row a concurrent renewal just updated has
        // a new ctid, and would be skipped on servers that recheck TID scans.
        Stmt::Delete => format!(
            "DELETE FROM {s}.entries
             WHERE purpose = $1 AND index_name = $2 AND key = ANY($3::text[])"
        ),
        Stmt::Truncate => format!("DELETE FROM {s}.entries WHERE purpose = $1"),
        // The batch is collected into an array first, so the delete is a TID lookup of
        // exactly those rows under a generic plan, not a join over the table.
        Stmt::Prune => format!(
            "WITH gone AS (
                DELETE FROM {s}.entries e
                WHERE e.ctid = ANY(ARRAY(
                    SELECT x.ctid FROM {s}.entries x
                    WHERE x.purpose = $1 AND (
                           ($2 > 0 AND x.created_at <= now() - $2 * {MS})
                        OR ($3 > 0 AND x.last_used_at <= now() - $3 * {MS}))
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED
                ))
                RETURNING 1
            )
            SELECT count(*) FROM gone"
        ),
    }
}
