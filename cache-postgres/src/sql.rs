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
    /// `(purpose, index, key, version, renew_after_ms, max_age_ms, last_usage_ms)`:
    /// [`Renew`](Stmt::Renew) of the object behind a key.
    RenewKey,
    /// `(purpose, version, payload, indices[], keys[], digest, inline, channel, messages[],
    /// lease index?, lease key?, token?) -> 'stored' | 'refused'`: the `put_object` function;
    /// it notifies `messages` on `channel` with the change.
    Set,
    /// `(purpose, index, key, version, lease_ms, token, max_age_ms, last_usage_ms) -> (status,
    /// payload, age_ms, ms_left)`: the `take_lease` function.
    Lease,
    /// `(purpose, index, key, version, token)`: the lease ended, when it is still this one.
    Release,
    /// `(purpose, index, keys[], version?, channel, messages[], lease_ms) -> removed objects`:
    /// every object behind the keys, of every release (or of `version` only), with all its
    /// keys; their leases end and (leases on) the change is noted.
    Invalidate,
    /// `(purpose, index, keys[], channel, messages[], lease_ms)`: these key rows only, of every
    /// release; their leases end and (leases on) the change is noted.
    Delete,
    /// `(purpose, channel, messages[])`: every key and object of the purpose left, and the
    /// announcement of the truncate (the last statement of a truncate).
    Truncate,
    /// `(purpose, batch, index, key, version) -> (removed, last index, key, version)`: one batch
    /// of a truncate's key rows, after the given key.
    TruncateKeys,
    /// `(purpose, batch, after) -> (removed, last id)`: one batch of a truncate's bodies, by
    /// object id after `after`.
    TruncateBodies,
    /// `(purpose, max_age_ms, last_usage_ms, batch) -> removed rows`: one batch of the key
    /// rows of expired objects stored under each key, and of rows whose body is gone.
    PruneKeys,
    /// `(purpose, max_age_ms, last_usage_ms, batch) -> (removed bodies, removed rows)`: one
    /// batch of expired bodies, with their key rows.
    PruneBodies,
    /// `(channel, payload)`: a notification to every session listening on the channel.
    Notify,
}

impl Stmt {
    /// Every statement, in the order of [`Stmt::position`].
    pub(crate) const ALL: [Stmt; 15] = [
        Stmt::Get,
        Stmt::GetMany,
        Stmt::Renew,
        Stmt::RenewKey,
        Stmt::Set,
        Stmt::Lease,
        Stmt::Release,
        Stmt::Invalidate,
        Stmt::Delete,
        Stmt::Truncate,
        Stmt::TruncateKeys,
        Stmt::TruncateBodies,
        Stmt::PruneKeys,
        Stmt::PruneBodies,
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
            Stmt::RenewKey => &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::INT8,
            ],
            Stmt::Set => &[
                Type::TEXT,
                Type::TEXT,
                Type::BYTEA,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT,
                Type::BOOL,
                Type::TEXT,
                Type::TEXT_ARRAY,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
            ],
            Stmt::Lease => &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
            ],
            Stmt::Release => &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT],
            Stmt::Invalidate => &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT_ARRAY,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT_ARRAY,
                Type::INT8,
            ],
            Stmt::Delete => &[
                Type::TEXT,
                Type::TEXT,
                Type::TEXT_ARRAY,
                Type::TEXT,
                Type::TEXT_ARRAY,
                Type::INT8,
            ],
            Stmt::Truncate => &[Type::TEXT, Type::TEXT, Type::TEXT_ARRAY],
            Stmt::TruncateKeys => &[Type::TEXT, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT],
            Stmt::TruncateBodies => &[Type::TEXT, Type::INT8, Type::INT8],
            Stmt::PruneKeys | Stmt::PruneBodies => {
                &[Type::TEXT, Type::INT8, Type::INT8, Type::INT8]
            }
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
    // The row of a key of this release, joined with its body when it has no copy of the
    // object (the join runs only then: its condition on the outer row gates the lookup),
    // alive on the server's clock, and whether LastUsage needs writing.
    let get = |rows: &str, key_match: &str| {
        let created = "coalesce(b.created_at, e.created_at)";
        let used = "coalesce(b.last_used_at, e.last_used_at)";
        format!(
            "SELECT e.key, coalesce(e.payload, b.payload), e.object_id,
                    ($7 > 0 AND {used} <= now() - $7 * {MS}) AS renew,
                    (extract(epoch FROM now() - {created}) * 1000)::int8 AS age_ms
             FROM {rows}
             LEFT JOIN LATERAL (
                SELECT payload, created_at, last_used_at FROM {s}.bodies
                WHERE object_id = e.object_id AND e.payload IS NULL
                LIMIT 1 -- keeps the lookup a gated, parameterized index scan (not a join)
             ) b ON true
             WHERE {key_match} e.version = $4
               AND (e.payload IS NOT NULL OR b.payload IS NOT NULL)
               AND ($5 = 0 OR {created} > now() - $5 * {MS})
               AND ($6 = 0 OR {used} > now() - $6 * {MS})"
        )
    };
    match stmt {
        Stmt::Get => get(
            &format!("{s}.keys e"),
            "e.purpose = $1 AND e.index_name = $2 AND e.key = $3 AND",
        ),
        // One primary-key lookup per key, whatever the table's statistics say (`LIMIT 1`
        // keeps the planner from flattening the lateral subquery into a join that scans
        // every key of the purpose: its generic plan did).
        Stmt::GetMany => get(
            &format!(
                "unnest($3::text[]) AS u(key) CROSS JOIN LATERAL (
                    SELECT * FROM {s}.keys
                    WHERE purpose = $1 AND index_name = $2 AND key = u.key AND version = $4
                    LIMIT 1
                 ) e"
            ),
            "",
        ),
        Stmt::Renew => format!("SELECT {s}.renew_objects($1, $2, $3, $4)"),
        Stmt::RenewKey => format!(
            "SELECT {s}.renew_objects(ARRAY(
                SELECT object_id FROM {s}.keys
                WHERE purpose = $1 AND index_name = $2 AND key = $3 AND version = $4
             ), $5, $6, $7)"
        ),
        Stmt::Set => {
            format!("SELECT {s}.put_object($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
        }
        Stmt::Lease => format!("SELECT * FROM {s}.take_lease($1, $2, $3, $4, $5, $6, $7, $8)"),
        Stmt::Release => format!(
            "DELETE FROM {s}.leases
             WHERE purpose = $1 AND index_name = $2 AND key = $3 AND version = $4 AND token = $5"
        ),
        Stmt::Notify => "SELECT pg_notify($1, $2)".to_owned(),
        Stmt::Invalidate => format!("SELECT {s}.invalidate_keys($1, $2, $3, $4, $5, $6, $7)"),
        Stmt::Delete => format!("SELECT {s}.delete_keys($1, $2, $3, $4, $5, $6)"),
        Stmt::Truncate => format!("SELECT {s}.truncate_purpose($1, $2, $3)"),
        Stmt::TruncateKeys => format!("SELECT * FROM {s}.truncate_keys($1, $2, $3, $4, $5)"),
        Stmt::TruncateBodies => format!("SELECT * FROM {s}.truncate_bodies($1, $2, $3)"),
        Stmt::PruneKeys => format!("SELECT {s}.prune_keys($1, $2, $3, $4)"),
        Stmt::PruneBodies => format!("SELECT * FROM {s}.prune_bodies($1, $2, $3, $4)"),
    }
}
