//! The deep diagnostics against real servers with problems seeded: on PostgreSQL an unused index, dead tuples from updates, a session idle in its transaction and a session blocked by it; on MariaDB/MySQL a redundant index, a long transaction and a lock wait; each must be found, with its severity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DeepOptions, DeepReport, ManagerMode,
    PoolConfiguration, Severity, SqlExecutor, TransactionalConnection, deep_health,
};

use crate::{Backend, Outcome, Target, unique_table};

/// How long the seeded problems may take to show in the statistics views (PostgreSQL
/// publishes a backend's counters within about a second).
const SETTLE: Duration = Duration::from_secs(15);

/// Seeds the four problems on `t` (PostgreSQL) and waits until a deep report finds all of
/// them; fails naming what is still missing.
pub async fn seeded_problems_are_found<B: Backend>(t: &Target) -> Outcome {
    assert_eq!(t.kind, DatabaseKind::Postgres, "the seeded problems are PostgreSQL's");
    // Deadlines long enough that the blocked and the idle sessions outlive the polling.
    let long = Some(Duration::from_secs(60));
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(4)
        .max_overflow(0)
        .application_name("ucm_t_diagnostics")
        .statement_timeout(long)
        .lock_timeout(long)
        .idle_in_transaction_timeout(long)
        .build()?;
    let m = Arc::new(B::connect(t.config(ManagerMode::Admin, pool)).await?);
    let table = unique_table("diag");
    let rw = ConnectionMode::ReadWrite;
    // Autovacuum off for the table, so the dead tuples stay until the report reads them.
    let create = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, note TEXT) \
         WITH (autovacuum_enabled = false)"
    );
    m.execute(rw, &create, &[]).await?;
    let unused = format!("{table}_note_unused");
    m.execute(rw, &format!("CREATE INDEX {unused} ON {table} (note)"), &[]).await?;
    // The writes on a connection of their own: a backend publishes its statistics only
    // outside a transaction, so the one left idle in its transaction below must not be it.
    let mut seeder = m.get_connection(rw).await?;
    let fill =
        format!("INSERT INTO {table} SELECT g, 0, 'row ' || g FROM generate_series(1, 5000) g");
    seeder.execute(&fill, &[]).await?;
    for _ in 0..2 {
        seeder.execute(&format!("UPDATE {table} SET n = n + 1"), &[]).await?;
    }
    // PostgreSQL 15+ publishes them at once then, not up to 10 s later.
    let _ = seeder.fetch_all("SELECT pg_stat_force_next_flush()", &[]).await;
    // A transaction left open after a write: idle in transaction, holding row 1's lock.
    let mut holder = m.get_connection(rw).await?;
    drop(seeder);
    holder.begin(rw).await?;
    holder.execute(&format!("UPDATE {table} SET n = n + 1 WHERE id = 1"), &[]).await?;
    // Another session wants row 1: blocked by the holder.
    let blocked = {
        let (m, sql) = (Arc::clone(&m), format!("UPDATE {table} SET n = n + 10 WHERE id = 1"));
        tokio::spawn(async move { m.execute(ConnectionMode::ReadWrite, &sql, &[]).await })
    };
    let options = DeepOptions::default().long_after(Duration::from_millis(500));
    let started = Instant::now();
    let missing = loop {
        let report = deep_health(&*m, DatabaseKind::Postgres, options).await?;
        let missing = missing(&report, &table, &unused);
        if missing.is_empty() || started.elapsed() > SETTLE {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    holder.rollback().await?;
    drop(holder);
    let updated = blocked.await.expect("the blocked update's task ran");
    m.execute(rw, &format!("DROP TABLE {table}"), &[]).await?;
    m.close().await?;
    assert!(missing.is_empty(), "not found within {SETTLE:?}: {missing:#?}");
    assert_eq!(updated?, 1, "the blocked update ran once the holder rolled back");
    Ok(())
}

/// What the report does not show yet of the seeded problems.
fn missing(report: &DeepReport, table: &str, unused: &str) -> Vec<String> {
    // Every needle in the finding's subject or detail: other tests' sessions share the
    // server, so each finding is recognised by this test's table.
    let has = |check: &str, severity: Severity, needles: &[&str]| {
        report.findings.iter().any(|f| {
            let text = format!("{} {}", f.subject, f.detail);
            f.check == check && f.severity == severity && needles.iter().all(|n| text.contains(n))
        })
    };
    let mut missing = Vec::new();
    if !has("indexes", Severity::Warning, &[unused, "never scanned"]) {
        missing.push(format!("unused index {unused}"));
    }
    if !has("vacuum", Severity::Warning, &[table, "dead tuples"]) {
        missing.push(format!("dead tuples in {table}"));
    }
    if !has("sessions", Severity::Warning, &["idle in transaction", table]) {
        missing.push("a session idle in transaction".to_owned());
    }
    if !has("locks", Severity::Critical, &["waiting", table]) {
        missing.push("a session blocked by a lock".to_owned());
    }
    if !missing.is_empty() {
        missing.push(format!("report: {:#?}", report.findings));
    }
    missing
}

/// Seeds a redundant index, a transaction left open and an update blocked by it on `t`
/// (MariaDB or MySQL) and waits until a deep report finds all three.
pub async fn mysql_seeded_problems_are_found<B: Backend>(t: &Target) -> Outcome {
    assert_eq!(t.kind, DatabaseKind::MySql, "the seeded problems are MySQL's");
    let long = Some(Duration::from_secs(60));
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(4)
        .max_overflow(0)
        .application_name("ucm_t_diagnostics")
        .statement_timeout(long)
        .lock_timeout(long)
        .idle_in_transaction_timeout(long)
        .build()?;
    let m = Arc::new(B::connect(t.config(ManagerMode::Admin, pool)).await?);
    let table = unique_table("diag");
    let rw = ConnectionMode::ReadWrite;
    let create = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, a BIGINT, b BIGINT, \
         KEY {table}_a (a), KEY {table}_ab (a, b)) ENGINE = InnoDB"
    );
    m.execute(rw, &create, &[]).await?;
    m.execute(rw, &format!("INSERT INTO {table} VALUES (1, 1, 1), (2, 2, 2)"), &[]).await?;
    let mut holder = m.get_connection(rw).await?;
    holder.begin(rw).await?;
    holder.execute(&format!("UPDATE {table} SET b = b + 1 WHERE id = 1"), &[]).await?;
    let blocked = {
        let (m, sql) = (Arc::clone(&m), format!("UPDATE {table} SET b = b + 10 WHERE id = 1"));
        tokio::spawn(async move { m.execute(ConnectionMode::ReadWrite, &sql, &[]).await })
    };
    let options = DeepOptions::default().long_after(Duration::from_millis(500));
    let started = Instant::now();
    let missing = loop {
        let report = deep_health(&*m, DatabaseKind::MySql, options).await?;
        let has = |check: &str, severity: Severity, needles: &[&str]| {
            report.findings.iter().any(|f| {
                let text = format!("{} {}", f.subject, f.detail);
                f.check == check
                    && f.severity == severity
                    && needles.iter().all(|n| text.contains(n))
            })
        };
        let mut missing = Vec::new();
        if !has(
            "indexes",
            Severity::Warning,
            &[&format!("{table}.{table}_a"), "serves the same lookups"],
        ) {
            missing.push(format!("redundant index {table}_a"));
        }
        if !has("sessions", Severity::Warning, &["transaction", "idle"]) {
            missing.push("a transaction left open".to_owned());
        }
        if !has("locks", Severity::Critical, &["waiting", table.as_str()]) {
            missing.push("an update blocked by a lock".to_owned());
        }
        if missing.is_empty() || started.elapsed() > SETTLE {
            if !missing.is_empty() {
                missing.push(format!("report: {report:#?}"));
            }
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    holder.rollback().await?;
    drop(holder);
    let updated = blocked.await.expect("the blocked update's task ran");
    m.execute(rw, &format!("DROP TABLE {table}"), &[]).await?;
    m.close().await?;
    assert!(missing.is_empty(), "not found within {SETTLE:?}: {missing:#?}");
    assert_eq!(updated?, 1, "the blocked update ran once the holder rolled back");
    Ok(())
}
