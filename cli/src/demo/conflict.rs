//! The demo's deliberate conflict: two transfers over the same two accounts in opposite orders, overlapped, to show a conflict aborted by the database and re-run by ucm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use ucm::{ConnectionMode, DatabaseKind, Error, Manager, ProtocolExt};
use ucm_kernel::backend::Backend;

use super::schema::Schema;

/// Two transfers that touch the same two accounts in opposite orders, started so that
/// they overlap. PostgreSQL and MariaDB abort one (serialization failure or deadlock) and
/// ucm re-runs it; SQLite serializes writers, so the second simply waits its turn.
pub(super) async fn run<B: Backend>(m: &Manager<B>, s: &Schema) -> anyhow::Result<()> {
    println!("\n== a deliberate conflict ==");
    let statements = s.statements();
    let (debit, credit) = (statements.debit_five, statements.credit_five);
    let holds = [Arc::new(Notify::new()), Arc::new(Notify::new())];
    let attempts = Arc::new(AtomicU64::new(0));
    let run = |from: i64, to: i64, me: usize| {
        let (debit, credit, attempts) = (debit.clone(), credit.clone(), Arc::clone(&attempts));
        let (mine, theirs) = (Arc::clone(&holds[me]), Arc::clone(&holds[1 - me]));
        let mut first = true;
        m.transaction(ConnectionMode::Transactional, move |tx| {
            attempts.fetch_add(1, Ordering::SeqCst);
            let wait = std::mem::take(&mut first);
            let (debit, credit, mine, theirs) =
                (debit.clone(), credit.clone(), Arc::clone(&mine), Arc::clone(&theirs));
            Box::pin(async move {
                tx.execute(&debit, &[from.into()]).await?;
                if wait {
                    // Hold the first row until the other side holds its own, so that the
                    // two overlap; bounded, because on SQLite the other side cannot get
                    // its row before this one commits.
                    mine.notify_one();
                    let _ = tokio::time::timeout(Duration::from_secs(1), theirs.notified()).await;
                }
                tx.execute(&credit, &[to.into()]).await?;
                Ok(())
            })
        })
    };
    let (first, second) = tokio::join!(run(1, 2, 0), run(2, 1, 1));
    let outcome = |r: Result<(), Error>| {
        r.map_or_else(|e| format!("failed: {e}"), |()| "committed".to_owned())
    };
    let attempts = attempts.load(Ordering::SeqCst);
    println!("  transfer 1 -> 2: {}", outcome(first));
    println!("  transfer 2 -> 1: {}", outcome(second));
    println!(
        "  attempts: {attempts} for 2 transfers ({})",
        match (s.kind, attempts) {
            (DatabaseKind::Sqlite, _) => "SQLite takes the write lock at BEGIN IMMEDIATE, so the second waited instead of conflicting".to_owned(),
            (_, n) if n > 2 => format!("the database aborted one with a conflict and ucm re-ran it {} time(s)", n - 2),
            _ => "the database resolved the overlap without aborting either".to_owned(),
        }
    );
    Ok(())
}
