//! The pipelined lane on real PostgreSQL: many tasks' statements on a few shared connections with each reply reaching its caller, SQL errors and deadlines confined to their statement, a killed connection replaced (reads retried), the drain not held up; where the driver cannot pipeline, the pooled path instead.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, ErrorKind, Manager, ManagerMode,
    PoolConfiguration, Result, Value,
};

use crate::{Backend, Outcome, Target, unique_table};

const RO: ConnectionMode = ConnectionMode::ReadOnly;
const RW: ConnectionMode = ConnectionMode::ReadWrite;

/// Tasks sending statements at once.
const TASKS: i64 = 64;

/// A manager whose pool (8) is wider than its lane (2 per mode), so that the number of
/// server sessions tells the lane from the pooled path.
async fn manager<B: Backend>(
    t: &Target,
    statement_timeout: Option<Duration>,
) -> Result<Arc<Manager<B::Core>>> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(8)
        .max_overflow(0)
        .application_name("ucm_t_pipeline")
        .statement_timeout(statement_timeout)
        .build()?;
    let manager = Manager::<B::Core>::connect(t.config(ManagerMode::AsyncModern, pool)).await?;
    Ok(Arc::new(manager.with_pipelining(2)))
}

/// 64 tasks each read their own number and the server session that answered, through the
/// lane: every task gets its own number back, and the statements were served by at most
/// two sessions per mode when the driver pipelines (by up to the pool's eight otherwise).
///
/// A shared connection is routed again every second (given back to its pool and checked
/// out anew, perhaps as another session), so a round that straddles that moment may see a
/// third or fourth session: the bound must hold on one round of three, which a lane that
/// used the pool's eight sessions never does.
pub async fn replies_reach_their_callers_over_few_connections<B: Backend>(
    t: &Target,
    pipelines: bool,
) -> Outcome {
    assert_eq!(t.kind, DatabaseKind::Postgres, "the lane pipelines on PostgreSQL");
    let m = manager::<B>(t, None).await?;
    for mode in [RO, RW] {
        let mut counts = Vec::new();
        for _round in 0..3 {
            counts.push(sessions_serving::<B>(&m, mode).await?.len());
            if !pipelines || counts.last().is_some_and(|&n| n <= 2) {
                break;
            }
        }
        if pipelines {
            assert!(
                counts.iter().any(|&n| n <= 2),
                "{mode}: {counts:?} server sessions served the lane in each round, wanted at most 2"
            );
        } else {
            assert!(
                counts[0] > 2,
                "{mode}: only {} sessions: the pooled path should use the pool",
                counts[0]
            );
        }
    }
    let shared = m.pipelined_connections();
    if pipelines {
        assert!((1..=4).contains(&shared), "{shared} shared connections for two modes");
    } else {
        assert_eq!(shared, 0, "a driver that cannot pipeline shares nothing");
    }
    // The drain gives the shared connections back rather than waiting for them.
    m.close().await?;
    assert_eq!(m.pipelined_connections(), 0);
    Ok(())
}

/// The server sessions that answered [`TASKS`] tasks reading 20 numbers each through
/// `m`'s lane in `mode`; every reply checked to be its caller's.
async fn sessions_serving<B: Backend>(
    m: &Arc<Manager<B::Core>>,
    mode: ConnectionMode,
) -> Result<BTreeSet<i64>> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..TASKS {
        let m = Arc::clone(m);
        tasks.spawn(async move {
            let mut pids = Vec::new();
            for round in 0..20 {
                let wanted = n * 1000 + round;
                let rows = m
                    .fetch_all(
                        mode,
                        "SELECT $1::bigint AS n, pg_backend_pid()::bigint AS pid",
                        &[Value::Int(wanted)],
                    )
                    .await?;
                let got: i64 = rows[0].try_get("n")?;
                assert_eq!(got, wanted, "a reply reached the wrong caller ({mode})");
                pids.push(rows[0].try_get::<i64>("pid")?);
            }
            Ok::<_, ucm_kernel::Error>(pids)
        });
    }
    let mut sessions = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        sessions.extend(joined.map_err(|e| ucm_kernel::Error::other(e.to_string()))??);
    }
    Ok(sessions)
}

/// The lane keeps its statements prepared on the shared connection (one round trip each
/// instead of two), at most `bound` distinct texts per server session: after 150 distinct
/// statements from one task (which the lane sends to one connection), that session has
/// more than half the bound prepared and never more than the bound (and the count's own).
pub async fn statements_kept_prepared_stay_bounded<B: Backend>(t: &Target, bound: i64) -> Outcome {
    let m = manager::<B>(t, None).await?;
    let count = "SELECT count(*)::bigint AS n FROM pg_prepared_statements";
    let mut seen = Vec::new();
    // A shared connection is routed again every second, so an attempt may straddle two
    // sessions: the bound must hold on every attempt, the keeping on one.
    for _attempt in 0..3 {
        for n in 0..150 {
            let sql = format!("SELECT $1::bigint + {n} AS n");
            let rows = m.fetch_all(RO, &sql, &[Value::Int(1)]).await?;
            assert_eq!(rows[0].try_get::<i64>("n")?, 1 + n, "{sql}");
        }
        // The count itself is prepared while it runs (kept or not): one over the bound.
        let prepared: i64 = m.fetch_all(RO, count, &[]).await?[0].try_get("n")?;
        assert!(
            prepared <= bound + 1,
            "{prepared} statements prepared on one session, bound {bound} (+1: the count)"
        );
        seen.push(prepared);
        if prepared > bound / 2 {
            break;
        }
    }
    assert!(
        seen.iter().any(|&n| n > bound / 2),
        "the lane kept too few statements prepared: {seen:?} (bound {bound})"
    );
    m.close().await?;
    Ok(())
}

/// A table altered under a kept statement (a column added, so `SELECT *` returns another
/// shape): PostgreSQL refuses the kept plan, and ucm-diesel sends the statement again
/// unkept, so the caller gets the new columns, not an error, both on a pooled connection
/// (a pool of one, so the statement is kept on the connection the `ALTER` ran on) and on
/// the lane; the next run keeps it anew.
pub async fn a_table_altered_under_a_kept_statement_is_read_anew<B: Backend>(
    t: &Target,
) -> Outcome {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(1)
        .max_overflow(0)
        .build()?;
    let pooled =
        Manager::<B::Core>::connect(t.config(ManagerMode::AsyncModern, pool.clone())).await?;
    let lane = Manager::<B::Core>::connect(t.config(ManagerMode::AsyncModern, pool))
        .await?
        .with_pipelining(1);
    for (path, m) in [("pooled", &pooled), ("lane", &lane)] {
        let table = unique_table("kept");
        m.execute(RW, &format!("CREATE TABLE {table} (a bigint)"), &[]).await?;
        m.execute(RW, &format!("INSERT INTO {table} VALUES (1)"), &[]).await?;
        let select = format!("SELECT * FROM {table}");
        for _ in 0..3 {
            let rows = m.fetch_all(RW, &select, &[]).await?;
            assert_eq!(rows[0].try_get::<i64>("a")?, 1, "{path}");
        }
        m.execute(RW, &format!("ALTER TABLE {table} ADD COLUMN b bigint DEFAULT 2"), &[]).await?;
        for round in 0..3 {
            let rows = m.fetch_all(RW, &select, &[]).await.map_err(|e| {
                ucm_kernel::Error::other(format!("{path}, read {round} after the ALTER: {e}"))
            })?;
            assert_eq!(rows[0].try_get::<i64>("b")?, 2, "{path}: the new column, read {round}");
        }
        m.execute(RW, &format!("DROP TABLE {table}"), &[]).await?;
    }
    pooled.close().await?;
    lane.close().await?;
    Ok(())
}

/// Writes go through the lane too (`ReadWrite`), and a read-only lane refuses them; an SQL
/// error fails only its own statement, and the shared connection keeps serving.
pub async fn errors_stay_with_their_statement<B: Backend>(t: &Target) -> Outcome {
    let m = manager::<B>(t, None).await?;
    let lane = m.pipelined();
    let table = unique_table("pipe");
    lane.execute(RW, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT)"), &[])
        .await?;
    let insert = format!("INSERT INTO {table} VALUES ($1, $2)");
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..TASKS {
        let (m, insert) = (Arc::clone(&m), insert.clone());
        tasks.spawn(async move {
            let lane = m.pipelined();
            let written = lane.execute(RW, &insert, &[Value::Int(id), Value::Int(id * 2)]).await;
            // A duplicate key for every fourth task, sent alongside the others.
            let duplicate = if id % 4 == 0 {
                Some(lane.execute(RW, &insert, &[Value::Int(id), Value::Int(0)]).await)
            } else {
                None
            };
            (written, duplicate)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (written, duplicate) = joined.map_err(|e| ucm_kernel::Error::other(e.to_string()))?;
        assert_eq!(written?, 1);
        if let Some(duplicate) = duplicate {
            let error = duplicate.expect_err("a duplicate key must fail");
            assert_eq!(error.kind(), ErrorKind::Constraint, "{error}");
        }
    }
    let rows =
        lane.fetch_all(RO, &format!("SELECT count(*) AS c, sum(n) AS s FROM {table}"), &[]).await?;
    assert_eq!(rows[0].try_get::<i64>("c")?, TASKS);
    assert_eq!(rows[0].try_get::<i64>("s")?, (0..TASKS).map(|i| i * 2).sum::<i64>());
    let refused = lane.execute(RO, &insert, &[Value::Int(-1), Value::Int(0)]).await;
    let error = refused.expect_err("a read-only lane must refuse a write");
    assert_eq!(error.kind(), ErrorKind::ReadOnlyViolation, "{error}");
    lane.execute(RW, &format!("DROP TABLE {table}"), &[]).await?;
    m.close().await?;
    Ok(())
}

/// A statement past the mode's statement timeout fails with `StatementTimeout` (the server
/// cancelled it), and a statement queued behind it on the same connection still succeeds.
pub async fn a_deadline_fails_only_its_statement<B: Backend>(t: &Target) -> Outcome {
    let m = manager::<B>(t, Some(Duration::from_millis(300))).await?;
    let slow = {
        let m = Arc::clone(&m);
        tokio::spawn(async move { m.pipelined().fetch_all(RW, "SELECT pg_sleep(5)", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quick = m.pipelined().fetch_all(RW, "SELECT 7::bigint AS n", &[]).await?;
    assert_eq!(quick[0].try_get::<i64>("n")?, 7);
    let error = slow
        .await
        .map_err(|e| ucm_kernel::Error::other(e.to_string()))?
        .expect_err("pg_sleep(5) must pass a 300 ms statement timeout");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    m.close().await?;
    Ok(())
}

/// The server ends the lane's session (`pg_terminate_backend`): the next read fails over
/// to a new shared connection within the call (a read is retried), served by another
/// session.
pub async fn a_killed_connection_is_replaced<B: Backend>(t: &Target) -> Outcome {
    let m = manager::<B>(t, None).await?;
    let lane = m.pipelined();
    let pid_sql = "SELECT pg_backend_pid()::bigint AS pid";
    let before: i64 = lane.fetch_all(RO, pid_sql, &[]).await?[0].try_get("pid")?;
    m.execute(RW, "SELECT pg_terminate_backend($1::int)", &[Value::Int(before)]).await?;
    // The lane may hold a second read connection: read until the killed one was tried.
    let mut after = BTreeSet::new();
    for _ in 0..8 {
        let pid: i64 = lane.fetch_all(RO, pid_sql, &[]).await?[0].try_get("pid")?;
        after.insert(pid);
    }
    assert!(!after.contains(&before), "the killed session {before} still answered");
    m.close().await?;
    Ok(())
}
