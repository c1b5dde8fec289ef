//! The chaos scenarios: faults injected by a [`FaultProxy`] between a real manager and a real PostgreSQL, each call's outcome checked against what the server really committed.
//!
//! They run on PostgreSQL only, because the proxy finds a write's reply by reading
//! PostgreSQL's wire protocol. The ledger scenario needs no proxy: it kills the pool's backends and
//! restarts the server itself, so it runs on the HA pair's primary under
//! [`crate::ha::HaCluster::lock`]. Each prints its figures (`chaos figure: ...`); run with
//! `--nocapture` to see them.

mod ledger;

pub use ledger::ledger_survives_killed_backends_and_a_restart;

use std::collections::HashMap;
use std::time::Duration;

use ucm_kernel::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, ErrorKind, ManagerMode,
    PoolConfiguration,
};

use crate::fault_proxy::{FaultProxy, url_target};
use crate::{Backend, Target, unique_table};

/// The database the chaos scenarios run against: PostgreSQL, when its URL is set.
pub fn target() -> Option<Target> {
    Target::find(DatabaseKind::Postgres)
}

/// Calls per phase (plain `execute`, then `INSERT ... RETURNING` through `fetch_all`).
const CALLS: usize = 300;
/// One write reply in this many is lost: rare enough that the breaker (five connection
/// failures in a row) never opens, frequent enough for a dozen losses per phase.
const CUT_EVERY: u32 = 25;

/// What one call returned, as the semantics under test sort it.
#[derive(Debug)]
enum Outcome {
    /// The call returned its result.
    Ok,
    /// `AmbiguousCommit`: the connection was lost after the statement was sent.
    Ambiguous,
    /// `ConnectionLost`: the statement certainly did not apply.
    Lost,
    /// Anything else, with the error's text.
    Other(String),
}

/// A pool of `size` with its own application name.
fn small_pool(size: usize, app: &str) -> PoolConfiguration {
    PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(size)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(2))
        .application_name(app)
        .build()
        .unwrap()
}

fn outcome<T>(
    result: ucm_kernel::Result<T>,
    check: impl FnOnce(T) -> Result<(), String>,
) -> Outcome {
    match result {
        Ok(value) => match check(value) {
            Ok(()) => Outcome::Ok,
            Err(why) => Outcome::Other(why),
        },
        Err(e) => match e.kind() {
            ErrorKind::AmbiguousCommit => Outcome::Ambiguous,
            ErrorKind::ConnectionLost => Outcome::Lost,
            kind => Outcome::Other(format!("{kind}: {e}")),
        },
    }
}

/// Autocommit writes whose replies a proxy drops after the server committed them (one in
/// `CUT_EVERY`): each such call must fail with `AmbiguousCommit` and never be re-sent,
/// so no key is written twice; every `Ok` call's row is there once; a `ConnectionLost`
/// call's row is not there at all.
pub async fn reply_lost_after_commit_is_ambiguous<B: Backend>(t: &Target) {
    let direct = B::connect(t.config(ManagerMode::AsyncModern, small_pool(1, "ucm_t_chaos_check")))
        .await
        .unwrap_or_else(|e| panic!("{} could not connect to {}: {e}", B::NAME, t.kind));
    let table = unique_table("chaos_reply");
    // `k` is deliberately not unique: a re-sent insert must show up as a second row, not
    // hide behind a constraint error.
    let ddl = format!("CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, k TEXT NOT NULL)");
    direct.execute(ConnectionMode::ReadWrite, &ddl, &[]).await.unwrap();

    let proxy = FaultProxy::start(url_target(&t.url).await.unwrap()).await.unwrap();
    proxy.cut_after_commit_every(CUT_EVERY);
    let via = Target { kind: t.kind, url: proxy.url_through(&t.url) };
    let m = B::connect(via.config(ManagerMode::AsyncModern, small_pool(4, "ucm_t_chaos")))
        .await
        .unwrap_or_else(|e| panic!("{} could not connect through the proxy: {e}", B::NAME));

    let mut calls: Vec<(String, Outcome)> = Vec::with_capacity(2 * CALLS);
    let insert = format!("INSERT INTO {table} (k) VALUES ($1)");
    for i in 0..CALLS {
        let key = format!("execute-{i}");
        let result = m.execute(ConnectionMode::ReadWrite, &insert, &[key.clone().into()]).await;
        let outcome = outcome(result, |n| match n {
            1 => Ok(()),
            n => Err(format!("execute reported {n} rows for one insert")),
        });
        calls.push((key, outcome));
    }
    let returning = format!("INSERT INTO {table} (k) VALUES ($1) RETURNING id");
    for i in 0..CALLS {
        let key = format!("fetch_all-{i}");
        let result =
            m.fetch_all(ConnectionMode::ReadWrite, &returning, &[key.clone().into()]).await;
        let outcome = outcome(result, |rows| match rows.len() {
            1 => Ok(()),
            n => Err(format!("fetch_all returned {n} rows for one insert")),
        });
        calls.push((key, outcome));
    }
    let _ = m.close().await;
    let stats = proxy.stats();
    drop(proxy);

    let rows = direct
        .fetch_all(
            ConnectionMode::ReadWrite,
            &format!("SELECT k, COUNT(*) AS n FROM {table} GROUP BY k"),
            &[],
        )
        .await
        .unwrap();
    let written: HashMap<String, i64> =
        rows.iter().map(|r| (r.try_get("k").unwrap(), r.try_get("n").unwrap())).collect();
    direct.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await.unwrap();
    let _ = direct.close().await;

    let times = |key: &str| written.get(key).copied().unwrap_or(0);
    let duplicates: Vec<&String> =
        written.iter().filter(|(_, n)| **n > 1).map(|(k, _)| k).collect();
    let ok: Vec<&str> =
        calls.iter().filter(|(_, o)| matches!(o, Outcome::Ok)).map(|(k, _)| k.as_str()).collect();
    let ambiguous: Vec<&str> = calls
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Ambiguous))
        .map(|(k, _)| k.as_str())
        .collect();
    let lost: Vec<&str> =
        calls.iter().filter(|(_, o)| matches!(o, Outcome::Lost)).map(|(k, _)| k.as_str()).collect();
    let other: Vec<(&str, &str)> = calls
        .iter()
        .filter_map(|(k, o)| match o {
            Outcome::Other(why) => Some((k.as_str(), why.as_str())),
            _ => None,
        })
        .collect();
    let ambiguous_present = ambiguous.iter().filter(|k| times(k) > 0).count();
    let lost_present = lost.iter().filter(|k| times(k) > 0).count();
    eprintln!(
        "chaos figure: {} reply lost after commit (1 in {CUT_EVERY}): calls {}, ok {}, ambiguous {}, \
         connection lost {} (rows present {lost_present}), other errors {}, proxy cuts {}, \
         duplicates {}, rows present for ambiguous calls {ambiguous_present}/{}",
        B::NAME,
        calls.len(),
        ok.len(),
        ambiguous.len(),
        lost.len(),
        other.len(),
        stats.cuts,
        duplicates.len(),
        ambiguous.len(),
    );

    assert!(other.is_empty(), "{}: calls failed with another kind: {other:#?}", B::NAME);
    assert!(duplicates.is_empty(), "{}: keys written more than once: {duplicates:?}", B::NAME);
    let not_once: Vec<_> = ok.iter().filter(|k| times(k) != 1).map(|k| (k, times(k))).collect();
    assert!(not_once.is_empty(), "{}: Ok calls not written exactly once: {not_once:?}", B::NAME);
    let applied: Vec<_> = lost.iter().filter(|k| times(k) > 0).collect();
    assert!(
        applied.is_empty(),
        "{}: ConnectionLost calls whose statement applied (should have been AmbiguousCommit): {applied:?}",
        B::NAME
    );
    assert_eq!(
        ambiguous.len() as u64,
        stats.cuts,
        "{}: every reply the proxy cut is one AmbiguousCommit ({stats:?})",
        B::NAME
    );
    let expected = 2 * CALLS / CUT_EVERY as usize;
    assert_eq!(ambiguous.len(), expected, "{}: one ambiguous call per {CUT_EVERY}", B::NAME);
}
