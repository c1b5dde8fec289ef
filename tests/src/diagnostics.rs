//! The deep diagnostics against real servers with problems seeded: on PostgreSQL an unused index, dead tuples from updates, a session idle in its transaction and a session blocked by it; on MariaDB/MySQL a redundant index, a long transaction and a lock wait; each must be found, with its severity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DeepOptions, DeepReport, ManagerMode,
    PoolConfiguration, Result, Severity, SqlExecutor, TransactionalConnection, deep_health,
};

use crate::{Backend, Outcome, Target, unique_table};

/// How long the seeded problems may take to show in the statistics views (PostgreSQL
/// publishes a backend's counters within about a second).
const SETTLE: Duration = Duration::from_secs(15);

const RW: ConnectionMode = ConnectionMode::ReadWrite;

/// A finding a test waits for: its check and severity, and text its subject or detail
/// must hold (this test's table, since other tests' sessions share the server).
struct Expected {
    what: String,
    check: &'static str,
    severity: Severity,
    needles: Vec<String>,
}

impl Expected {
    fn new(
        what: impl Into<String>,
        check: &'static str,
        severity: Severity,
        needles: &[&str],
    ) -> Self {
        let needles = needles.iter().map(|n| (*n).to_owned()).collect();
        Self { what: what.into(), check, severity, needles }
    }
}

/// Seeds the four problems on `t` (PostgreSQL) and waits until a deep report finds all of
/// them; fails naming what is still missing.
pub async fn seeded_problems_are_found<B: Backend>(t: &Target) -> Outcome {
    assert_eq!(t.kind, DatabaseKind::Postgres, "the seeded problems are PostgreSQL's");
    let m = patient_manager::<B>(t).await?;
    let table = unique_table("diag");
    // Autovacuum off for the table, so the dead tuples stay until the report reads them.
    let create = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, note TEXT) \
         WITH (autovacuum_enabled = false)"
    );
    m.execute(RW, &create, &[]).await?;
    let unused = format!("{table}_note_unused");
    m.execute(RW, &format!("CREATE INDEX {unused} ON {table} (note)"), &[]).await?;
    // The writes on a connection of their own: a backend publishes its statistics only
    // outside a transaction, so the one left idle in its transaction below must not be it.
    let mut seeder = m.get_connection(RW).await?;
    let fill =
        format!("INSERT INTO {table} SELECT g, 0, 'row ' || g FROM generate_series(1, 5000) g");
    seeder.execute(&fill, &[]).await?;
    for _ in 0..2 {
        seeder.execute(&format!("UPDATE {table} SET n = n + 1"), &[]).await?;
    }
    // PostgreSQL 15+ publishes them at once then, not up to 10 s later.
    let _ = seeder.fetch_all("SELECT pg_stat_force_next_flush()", &[]).await;
    let (holder, blocked) = hold_and_block(&m, &table, "n").await?;
    drop(seeder);
    let expected = [
        Expected::new(
            format!("unused index {unused}"),
            "indexes",
            Severity::Warning,
            &[&unused, "never scanned"],
        ),
        Expected::new(
            format!("dead tuples in {table}"),
            "vacuum",
            Severity::Warning,
            &[&table, "dead tuples"],
        ),
        Expected::new(
            "a session idle in transaction",
            "sessions",
            Severity::Warning,
            &["idle in transaction", &table],
        ),
        Expected::new(
            "a session blocked by a lock",
            "locks",
            Severity::Critical,
            &["waiting", &table],
        ),
    ];
    let missing = wait_for(&*m, DatabaseKind::Postgres, &expected).await?;
    release(&*m, holder, blocked, &table, &missing).await
}

/// Seeds a redundant index, a transaction left open and an update blocked by it on `t`
/// (MariaDB or MySQL) and waits until a deep report finds all three.
pub async fn mysql_seeded_problems_are_found<B: Backend>(t: &Target) -> Outcome {
    assert_eq!(t.kind, DatabaseKind::MySql, "the seeded problems are MySQL's");
    let m = patient_manager::<B>(t).await?;
    let table = unique_table("diag");
    let create = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, a BIGINT, b BIGINT, \
         KEY {table}_a (a), KEY {table}_ab (a, b)) ENGINE = InnoDB"
    );
    m.execute(RW, &create, &[]).await?;
    m.execute(RW, &format!("INSERT INTO {table} VALUES (1, 1, 1), (2, 2, 2)"), &[]).await?;
    let (holder, blocked) = hold_and_block(&m, &table, "b").await?;
    let redundant = format!("{table}.{table}_a");
    let expected = [
        Expected::new(
            format!("redundant index {table}_a"),
            "indexes",
            Severity::Warning,
            &[&redundant, "serves the same lookups"],
        ),
        Expected::new(
            "a transaction left open",
            "sessions",
            Severity::Warning,
            &["transaction", "idle"],
        ),
        Expected::new(
            "an update blocked by a lock",
            "locks",
            Severity::Critical,
            &["waiting", &table],
        ),
    ];
    let missing = wait_for(&*m, DatabaseKind::MySql, &expected).await?;
    release(&*m, holder, blocked, &table, &missing).await
}

/// A manager whose deadlines outlive the polling, so the blocked and the idle sessions
/// stay as seeded.
async fn patient_manager<B: Backend>(t: &Target) -> Result<Arc<B::Manager>> {
    let long = Some(Duration::from_secs(60));
    let pool = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(4)
        .max_overflow(0)
        .application_name("ucm_t_diagnostics")
        .statement_timeout(long)
        .lock_timeout(long)
        .idle_in_transaction_timeout(long)
        .build()?;
    Ok(Arc::new(B::connect(t.config(ManagerMode::Admin, pool)).await?))
}

/// A transaction left open after updating row 1's `column` (idle in transaction, holding
/// its lock), and another session's update of the same row, blocked by it.
async fn hold_and_block<M: ConnectionManagerProtocol + 'static>(
    m: &Arc<M>,
    table: &str,
    column: &str,
) -> Result<(M::Connection, JoinHandle<Result<u64>>)> {
    let mut holder = m.get_connection(RW).await?;
    holder.begin(RW).await?;
    holder
        .execute(&format!("UPDATE {table} SET {column} = {column} + 1 WHERE id = 1"), &[])
        .await?;
    let (m, sql) =
        (Arc::clone(m), format!("UPDATE {table} SET {column} = {column} + 10 WHERE id = 1"));
    let blocked = tokio::spawn(async move { m.execute(RW, &sql, &[]).await });
    Ok((holder, blocked))
}

/// Runs deep reports until every expected finding is in one, or [`SETTLE`] passes; what is
/// still missing then, with the last report.
async fn wait_for<M: ConnectionManagerProtocol + ?Sized>(
    m: &M,
    kind: DatabaseKind,
    expected: &[Expected],
) -> Result<Vec<String>> {
    let options = DeepOptions::default().long_after(Duration::from_millis(500));
    let started = Instant::now();
    loop {
        let report = deep_health(m, kind, options).await?;
        let mut missing: Vec<String> =
            expected.iter().filter(|e| !found(&report, e)).map(|e| e.what.clone()).collect();
        if missing.is_empty() || started.elapsed() > SETTLE {
            if !missing.is_empty() {
                missing.push(format!("report: {:#?}", report.findings));
            }
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether `report` holds the finding `expected` describes.
fn found(report: &DeepReport, expected: &Expected) -> bool {
    report.findings.iter().any(|f| {
        let text = format!("{} {}", f.subject, f.detail);
        f.check == expected.check
            && f.severity == expected.severity
            && expected.needles.iter().all(|n| text.contains(n.as_str()))
    })
}

/// Ends the seeded transaction, lets the blocked update through, drops the table, and
/// fails on anything `missing` or an update that did not run once.
async fn release<M: ConnectionManagerProtocol>(
    m: &M,
    mut holder: M::Connection,
    blocked: JoinHandle<Result<u64>>,
    table: &str,
    missing: &[String],
) -> Outcome {
    holder.rollback().await?;
    drop(holder);
    let updated = blocked.await.expect("the blocked update's task ran");
    m.execute(RW, &format!("DROP TABLE {table}"), &[]).await?;
    m.close().await?;
    assert!(missing.is_empty(), "not found within {SETTLE:?}: {missing:#?}");
    assert_eq!(updated?, 1, "the blocked update ran once the holder rolled back");
    Ok(())
}
