//! The MySQL and MariaDB checks of the deep diagnostics: buffer pool hit ratio, unused (with performance_schema) and redundant indexes, free space left in tables, connections by user and state, long transactions, and lock waits where the server has the view for them.

use super::{DeepOptions, Runner, Severity, number, size, text};
use crate::protocol::ConnectionManagerProtocol;

/// Runs every MySQL/MariaDB check.
pub(super) async fn diagnose<M: ConnectionManagerProtocol + ?Sized>(
    run: &mut Runner<'_, M>,
    options: DeepOptions,
) {
    cache(run).await;
    unused_indexes(run).await;
    redundant_indexes(run).await;
    free_space(run).await;
    connections(run).await;
    transactions(run, options).await;
    lock_waits(run).await;
}

/// The share of InnoDB page reads served from the buffer pool.
async fn cache<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT CAST(SUM(CASE WHEN VARIABLE_NAME = 'INNODB_BUFFER_POOL_READ_REQUESTS' THEN VARIABLE_VALUE END) AS DOUBLE) AS requests, \
               CAST(SUM(CASE WHEN VARIABLE_NAME = 'INNODB_BUFFER_POOL_READS' THEN VARIABLE_VALUE END) AS DOUBLE) AS disk \
               FROM information_schema.GLOBAL_STATUS \
               WHERE VARIABLE_NAME IN ('INNODB_BUFFER_POOL_READ_REQUESTS', 'INNODB_BUFFER_POOL_READS')";
    let advice = "raise innodb_buffer_pool_size, or find the scans reading from disk";
    run.cache(sql, "InnoDB buffer pool", advice).await;
}

/// Indexes not used since the server started, from `sys.schema_unused_indexes`, which
/// reads performance_schema: without it the view is silently empty, so that is said.
async fn unused_indexes<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let Some(rows) =
        run.rows("indexes", "SELECT CAST(@@performance_schema AS SIGNED) AS on_").await
    else {
        return;
    };
    if rows.first().is_none_or(|r| number(r, "on_") == 0.0) {
        run.report.skipped.push(
            "indexes (unused): performance_schema is off, so index use is not recorded; set \
             performance_schema=ON in the server's configuration and restart"
                .to_owned(),
        );
        return;
    }
    let sql = "SELECT object_schema AS db, object_name AS table_name, index_name AS index_name \
               FROM sys.schema_unused_indexes WHERE object_schema = DATABASE()";
    let Some(rows) = run.rows("indexes", sql).await else { return };
    for row in rows {
        let (table, index) = (text(&row, "table_name"), text(&row, "index_name"));
        run.find(
            Severity::Warning,
            "indexes",
            format!("{table}.{index}"),
            "not used since the server started, written on every change".to_owned(),
            format!(
                "if no query needs it (check replicas too): ALTER TABLE {table} DROP INDEX {index}"
            ),
        );
    }
}

/// Indexes another index of the same table makes redundant, from
/// `sys.schema_redundant_indexes` (information_schema underneath).
async fn redundant_indexes<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT table_name AS table_name, redundant_index_name AS redundant, \
               dominant_index_name AS covered_by, sql_drop_index AS fix \
               FROM sys.schema_redundant_indexes WHERE table_schema = DATABASE()";
    let Some(rows) = run.rows("indexes", sql).await else { return };
    for row in rows {
        run.find(
            Severity::Warning,
            "indexes",
            format!("{}.{}", text(&row, "table_name"), text(&row, "redundant")),
            format!("{} serves the same lookups", text(&row, "covered_by")),
            text(&row, "fix"),
        );
    }
}

/// Space InnoDB holds free inside a table's files after deletes and updates: the
/// equivalent of bloat.
async fn free_space<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT TABLE_NAME AS table_name, CAST(DATA_FREE AS DOUBLE) AS free, \
               CAST(DATA_LENGTH + INDEX_LENGTH AS DOUBLE) AS used \
               FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND ENGINE = 'InnoDB' \
               AND DATA_FREE > 10485760 AND DATA_FREE > 0.2 * (DATA_LENGTH + INDEX_LENGTH)";
    let Some(rows) = run.rows("vacuum", sql).await else { return };
    for row in rows {
        let table = text(&row, "table_name");
        run.find(
            Severity::Warning,
            "vacuum",
            table.clone(),
            format!(
                "{} free inside its files beside {} in use",
                size(number(&row, "free")),
                size(number(&row, "used"))
            ),
            format!("OPTIMIZE TABLE {table} (rebuilds it online on InnoDB)"),
        );
    }
}

/// Connections by user and command, against `max_connections`.
async fn connections<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let sql = "SELECT USER AS who, COMMAND AS what, CAST(COUNT(*) AS SIGNED) AS n, \
               CAST(@@global.max_connections AS SIGNED) AS max \
               FROM information_schema.PROCESSLIST GROUP BY USER, COMMAND ORDER BY n DESC";
    run.connections(sql, "pool harder before raising it").await;
}

/// InnoDB transactions open longer than `long_after`.
async fn transactions<M: ConnectionManagerProtocol + ?Sized>(
    run: &mut Runner<'_, M>,
    options: DeepOptions,
) {
    let sql = format!(
        "SELECT CAST(t.trx_mysql_thread_id AS SIGNED) AS id, t.trx_state AS state, \
         CAST(TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1000000 AS DOUBLE) AS open_s, \
         COALESCE(p.COMMAND, '') AS command, COALESCE(p.USER, '') AS usr, LEFT(COALESCE(t.trx_query, ''), 120) AS query \
         FROM information_schema.INNODB_TRX t LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
         WHERE t.trx_started < NOW(6) - INTERVAL {} MICROSECOND",
        options.long_after.as_micros()
    );
    let Some(rows) = run.rows("sessions", &sql).await else { return };
    for row in rows {
        let idle = text(&row, "command") == "Sleep";
        run.find(
            Severity::Warning,
            "sessions",
            format!("thread {:.0} (user {})", number(&row, "id"), text(&row, "usr")),
            format!(
                "transaction {} for {:.1} s{}",
                text(&row, "state"),
                number(&row, "open_s"),
                if idle { ", the session idle".to_owned() } else { format!(": {}", text(&row, "query")) }
            ),
            if idle {
                "idle in a transaction: it holds its locks and undo; commit or roll back where the application opens it"
            } else {
                "a long transaction holds locks and undo: split it, or set max_statement_time"
            },
        );
    }
}

/// Lock waits: `information_schema.INNODB_LOCK_WAITS` (MariaDB, MySQL 5.7), else
/// `performance_schema.data_lock_waits` (MySQL 8).
async fn lock_waits<M: ConnectionManagerProtocol + ?Sized>(run: &mut Runner<'_, M>) {
    let mariadb = "SELECT CAST(r.trx_mysql_thread_id AS SIGNED) AS waiting, CAST(b.trx_mysql_thread_id AS SIGNED) AS blocking, \
                   LEFT(COALESCE(r.trx_query, ''), 120) AS query \
                   FROM information_schema.INNODB_LOCK_WAITS w \
                   JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
                   JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id";
    let rows = match run
        .manager
        .fetch_all(crate::mode::ConnectionMode::ReadWrite, mariadb, &[])
        .await
    {
        Ok(rows) => Some(rows),
        Err(_) => {
            let mysql8 = "SELECT CAST(r.THREAD_ID AS SIGNED) AS waiting, CAST(b.THREAD_ID AS SIGNED) AS blocking, '' AS query \
                          FROM performance_schema.data_lock_waits w \
                          JOIN performance_schema.data_locks r ON r.ENGINE_LOCK_ID = w.REQUESTING_ENGINE_LOCK_ID \
                          JOIN performance_schema.data_locks b ON b.ENGINE_LOCK_ID = w.BLOCKING_ENGINE_LOCK_ID";
            run.rows("locks", mysql8).await
        }
    };
    for row in rows.unwrap_or_default() {
        let blocking = number(&row, "blocking");
        run.find(
            Severity::Critical,
            "locks",
            format!("thread {:.0}", number(&row, "waiting")),
            format!("waiting for a lock held by thread {blocking:.0}: {}", text(&row, "query")),
            format!("end what thread {blocking:.0} holds open (commit it, or KILL it); keep transactions short"),
        );
    }
}
