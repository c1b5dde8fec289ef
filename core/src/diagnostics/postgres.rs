//! The PostgreSQL checks of the deep diagnostics, each one query over the statistics views (`pg_stat_statements`, `pg_stat_database`, `pg_stat_user_indexes`, `pg_index`, `pg_constraint`, `pg_stat_user_tables`, `pg_stat_activity`, `pg_replication_slots`, `pg_stat_replication`).

use super::{DeepOptions, Runner, Severity, number, size, text};
use crate::protocol::ConnectionManagerProtocol;

/// Runs every PostgreSQL check.
pub(super) async fn diagnose<M: ConnectionManagerProtocol + ?Sized>(
    run: &mut Runner<'_, M>,
    options: DeepOptions,
) {
    statements(run).await;
    cache(run).await;
    unused_indexes(run).await;
    redundant_indexes(run).await;
    unindexed_foreign_keys(run).await;
    vacuum(run, options).await;
    locks(run).await;
    sessions(run, options).await;
    connections(run).await;
    replication(run).await;
}

/// The costliest and the most frequent statements, from `pg_stat_statements` when it is
/// installed; how to install it otherwise.
async fn statements<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let installed =
        "SELECT count(*)::bigint AS n FROM pg_extension WHERE extname = 'pg_stat_statements'";
    let Some(rows) = run.rows("statements", installed).await else { return };
    if rows.first().is_none_or(|r| number(r, "n") == 0.0) {
        run.find(
            Severity::Info,
            "statements",
            "pg_stat_statements",
            "not installed: statement statistics are unavailable",
            "add pg_stat_statements to shared_preload_libraries, restart, then CREATE EXTENSION pg_stat_statements",
        );
        return;
    }
    let sql = "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 120) AS query, calls::bigint AS calls, \
               total_exec_time::float8 AS total_ms, mean_exec_time::float8 AS mean_ms \
               FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               ORDER BY total_exec_time DESC LIMIT 5";
    let Some(rows) = run.rows("statements", sql).await else { return };
    for row in rows {
        let mean = number(&row, "mean_ms");
        let severity = if mean > 100.0 { Severity::Warning } else { Severity::Info };
        run.find(
            severity,
            "statements",
            text(&row, "query"),
            format!(
                "{:.0} calls, {:.1} ms in all, {mean:.2} ms each",
                number(&row, "calls"),
                number(&row, "total_ms")
            ),
            if mean > 100.0 {
                "slow on average: EXPLAIN (ANALYZE, BUFFERS) it and index what it filters on"
            } else {
                "among the costliest in total: worth caching or batching if it is frequent"
            },
        );
    }
}

/// The share of block reads served from shared buffers.
async fn cache<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT (blks_hit + blks_read)::float8 AS requests, blks_read::float8 AS disk \
               FROM pg_stat_database WHERE datname = current_database()";
    let advice = "raise shared_buffers (or memory), or find the scans reading from disk";
    run.cache(sql, "shared buffers", advice).await;
}

/// Indexes never scanned since statistics were reset (unique and primary keys excepted:
/// they enforce something).
async fn unused_indexes<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT s.schemaname::text AS schema, s.relname::text AS table_name, \
               s.indexrelname::text AS index_name, pg_relation_size(s.indexrelid)::float8 AS bytes \
               FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
               WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary \
               ORDER BY pg_relation_size(s.indexrelid) DESC";
    let Some(rows) = run.rows("indexes", sql).await else { return };
    for row in rows {
        let index = format!("{}.{}", text(&row, "schema"), text(&row, "index_name"));
        run.find(
            Severity::Warning,
            "indexes",
            index.clone(),
            format!(
                "never scanned since statistics were reset; {} on {}, written on every change",
                size(number(&row, "bytes")),
                text(&row, "table_name")
            ),
            format!("if no query needs it (check replicas too): DROP INDEX CONCURRENTLY {index}"),
        );
    }
}

/// Indexes whose columns are the leading columns of another index on the same table.
async fn redundant_indexes<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT a.indexrelid::regclass::text AS redundant, b.indexrelid::regclass::text AS covered_by, \
               a.indrelid::regclass::text AS table_name \
               FROM pg_index a JOIN pg_index b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid \
               JOIN pg_class c ON c.oid = a.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               AND NOT a.indisunique AND a.indpred IS NULL AND b.indpred IS NULL \
               AND a.indexprs IS NULL AND b.indexprs IS NULL \
               AND ((b.indkey::text = a.indkey::text AND a.indexrelid > b.indexrelid) \
                    OR b.indkey::text LIKE a.indkey::text || ' %')";
    let Some(rows) = run.rows("indexes", sql).await else { return };
    for row in rows {
        let redundant = text(&row, "redundant");
        run.find(
            Severity::Warning,
            "indexes",
            redundant.clone(),
            format!(
                "its columns lead {} on {}, which serves the same lookups",
                text(&row, "covered_by"),
                text(&row, "table_name")
            ),
            format!("DROP INDEX CONCURRENTLY {redundant}"),
        );
    }
}

/// Foreign keys with no index leading with their columns: every delete or key update on the
/// referenced table scans the referencing one.
async fn unindexed_foreign_keys<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT c.conrelid::regclass::text AS table_name, c.conname::text AS constraint_name, \
               (SELECT string_agg(a.attname::text, ', ' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) \
                JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS columns \
               FROM pg_constraint c WHERE c.contype = 'f' AND NOT EXISTS ( \
                 SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid \
                 AND (string_to_array(i.indkey::text, ' ')::int2[])[1:array_length(c.conkey, 1)] = c.conkey)";
    let Some(rows) = run.rows("foreign_keys", sql).await else { return };
    for row in rows {
        let (table, columns) = (text(&row, "table_name"), text(&row, "columns"));
        run.find(
            Severity::Warning,
            "foreign_keys",
            format!("{table}.{}", text(&row, "constraint_name")),
            format!("no index leads with ({columns}): each delete or key change on the referenced table scans {table}"),
            format!("CREATE INDEX CONCURRENTLY ON {table} ({columns})"),
        );
    }
}

/// Dead tuples (the bloat updates and deletes leave until vacuum) and stale statistics.
async fn vacuum<M: ConnectionManagerProtocol + ?Sized>(
    run: &mut Runner<'_, M>,
    options: DeepOptions,
) {
    let sql = "SELECT schemaname::text AS schema, relname::text AS table_name, n_live_tup::float8 AS live, \
               n_dead_tup::float8 AS dead, n_mod_since_analyze::float8 AS modified, \
               pg_total_relation_size(relid)::float8 AS bytes, \
               coalesce(greatest(last_vacuum, last_autovacuum)::text, 'never') AS vacuumed \
               FROM pg_stat_user_tables";
    let Some(rows) = run.rows("vacuum", sql).await else { return };
    for row in rows {
        let table = format!("{}.{}", text(&row, "schema"), text(&row, "table_name"));
        let (live, dead) = (number(&row, "live"), number(&row, "dead"));
        if dead > 1000.0 && dead > options.dead_tuple_share * live.max(1.0) {
            let share = dead / (live + dead).max(1.0);
            run.find(
                Severity::Warning,
                "vacuum",
                table.clone(),
                format!(
                    "{dead:.0} dead tuples ({:.0}% of its rows, ~{} of its {} estimated bloat); last vacuumed {}",
                    share * 100.0,
                    size(number(&row, "bytes") * share),
                    size(number(&row, "bytes")),
                    text(&row, "vacuumed")
                ),
                format!("VACUUM (ANALYZE) {table}; if it recurs, lower its autovacuum_vacuum_scale_factor"),
            );
        } else if number(&row, "modified") > 0.2 * live + 1000.0 {
            run.find(
                Severity::Info,
                "vacuum",
                table.clone(),
                format!("{:.0} rows changed since its last ANALYZE", number(&row, "modified")),
                format!("ANALYZE {table}"),
            );
        }
    }
}

/// Sessions waiting for a lock another session holds, with who blocks them.
async fn locks<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT pid::bigint AS pid, array_to_string(pg_blocking_pids(pid), ', ') AS blocked_by, \
               coalesce(application_name, '') AS app, \
               extract(epoch FROM now() - coalesce(query_start, now()))::float8 AS waited, \
               left(regexp_replace(query, '\\s+', ' ', 'g'), 120) AS query \
               FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0";
    let Some(rows) = run.rows("locks", sql).await else { return };
    for row in rows {
        let blocked_by = text(&row, "blocked_by");
        run.find(
            Severity::Critical,
            "locks",
            format!("pid {:.0} ({})", number(&row, "pid"), text(&row, "app")),
            format!(
                "waiting {:.1} s for a lock held by pid {blocked_by}: {}",
                number(&row, "waited"),
                text(&row, "query")
            ),
            format!("end what pid {blocked_by} holds open (commit it, or pg_terminate_backend); keep transactions short"),
        );
    }
}

/// Transactions open, and statements running, longer than `long_after`; idle in
/// transaction above all, since it holds locks and stops vacuum.
async fn sessions<M: ConnectionManagerProtocol + ?Sized>(
    run: &mut Runner<'_, M>,
    options: DeepOptions,
) {
    let sql = format!(
        "SELECT pid::bigint AS pid, coalesce(application_name, '') AS app, coalesce(usename::text, '') AS usr, \
         state AS state, extract(epoch FROM now() - xact_start)::float8 AS in_transaction, \
         extract(epoch FROM now() - query_start)::float8 AS running, \
         left(regexp_replace(query, '\\s+', ' ', 'g'), 120) AS query \
         FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
         AND xact_start IS NOT NULL AND now() - xact_start > interval '{} milliseconds'",
        options.long_after.as_millis()
    );
    let Some(rows) = run.rows("sessions", &sql).await else { return };
    for row in rows {
        let state = text(&row, "state");
        let idle = state.starts_with("idle in transaction");
        run.find(
            Severity::Warning,
            "sessions",
            format!("pid {:.0} ({}, user {})", number(&row, "pid"), text(&row, "app"), text(&row, "usr")),
            format!(
                "{state} for {:.1} s in a transaction open {:.1} s; last statement: {}",
                number(&row, "running"),
                number(&row, "in_transaction"),
                text(&row, "query")
            ),
            if idle {
                "idle in a transaction: it holds its locks and stops vacuum; commit or roll back \
                 where the application opens it, and set idle_in_transaction_session_timeout"
            } else {
                "a long transaction holds locks and stops vacuum: split it, or set statement_timeout"
            },
        );
    }
}

/// Connections by application and state, against `max_connections`.
async fn connections<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT coalesce(nullif(application_name, ''), '(none)') AS who, \
               coalesce(state, '(none)') AS what, count(*)::bigint AS n, \
               current_setting('max_connections')::bigint AS max FROM pg_stat_activity \
               WHERE backend_type = 'client backend' GROUP BY 1, 2 ORDER BY 3 DESC";
    let advice = "pool harder (smaller pools, a transaction pooler) before raising it";
    run.connections(sql, advice).await;
}

/// Replication slots that retain WAL, and each standby's lag (on a primary).
async fn replication<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT slot_name::text AS slot, active AS active, \
               coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::float8 AS retained \
               FROM pg_replication_slots WHERE NOT pg_is_in_recovery()";
    if let Some(rows) = run.rows("replication", sql).await {
        for row in rows {
            let active = row.try_get::<bool>("active").unwrap_or(true);
            let retained = number(&row, "retained");
            let stale = !active && retained > 1e8;
            run.find(
                if stale { Severity::Warning } else { Severity::Info },
                "replication",
                format!("slot {}", text(&row, "slot")),
                format!("{}, retaining {} of WAL", if active { "active" } else { "inactive" }, size(retained)),
                if stale {
                    "an inactive slot keeps WAL forever: drop it (pg_drop_replication_slot) if its consumer is gone"
                } else {
                    "fine"
                },
            );
        }
    }
    let sql = "SELECT coalesce(application_name, '') AS app, coalesce(client_addr::text, 'local') AS addr, \
               state AS state, coalesce(extract(epoch FROM replay_lag), 0)::float8 AS lag \
               FROM pg_stat_replication";
    if let Some(rows) = run.rows("replication", sql).await {
        for row in rows {
            let lag = number(&row, "lag");
            run.find(
                if lag > 30.0 { Severity::Warning } else { Severity::Info },
                "replication",
                format!("standby {} at {}", text(&row, "app"), text(&row, "addr")),
                format!("{}, replay lag {lag:.1} s", text(&row, "state")),
                if lag > 30.0 {
                    "lagging: ucm bans it from reads past UCM_MAX_REPLICA_LAG; check its I/O and network"
                } else {
                    "streaming"
                },
            );
        }
    }
}
