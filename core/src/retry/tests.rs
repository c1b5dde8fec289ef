//! Tests of `RetryPolicy`: what is retried, how often, how long apart, and the budget's say, on paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::error::{ConnectFailure, Error, ErrorKind};

const ENDPOINT: &str = "db:5432/app";

/// An error of `kind`, built the way the pool and backends build it, naming `attempt`.
fn error(kind: ErrorKind, attempt: u32) -> Error {
    let message = format!("attempt {attempt}");
    match kind {
        ErrorKind::ConnectFailed => connect_error(ConnectFailure::Refused, attempt),
        ErrorKind::PoolExhausted => Error::PoolExhausted {
            endpoint: ENDPOINT.into(),
            in_use: 1,
            max: 1,
            waiting: 0,
            waited: Duration::from_millis(attempt.into()),
        },
        ErrorKind::CircuitOpen => Error::CircuitOpen {
            endpoint: ENDPOINT.into(),
            retry_after: Duration::from_secs(attempt.into()),
        },
        ErrorKind::Closed => Error::Closed { what: message },
        ErrorKind::Timeout => Error::Timeout { what: message, after: Duration::from_secs(1) },
        ErrorKind::Configuration => Error::config("pool.pool_size", message),
        ErrorKind::Other => Error::other(message),
        kind => Error::database(kind, ENDPOINT, None, message),
    }
}

fn connect_error(reason: ConnectFailure, attempt: u32) -> Error {
    Error::ConnectFailed {
        endpoint: ENDPOINT.into(),
        reason,
        attempts: 1,
        message: format!("attempt {attempt}"),
        source: None,
    }
}

/// A policy whose budget never runs out within a test, so only attempts and kinds decide.
fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        budget: Arc::new(RetryBudget::new(Duration::from_secs(10), 1_000, 0.0).unwrap()),
        ..RetryPolicy::default()
    }
}

/// Runs `policy` over an operation failing with `make(attempt)` on the first `failures`
/// attempts; returns the result and the attempt numbers `op` saw.
async fn run_failing(
    policy: &RetryPolicy,
    idempotent: bool,
    failures: u32,
    make: impl Fn(u32) -> Error,
) -> (Result<&'static str, Error>, Vec<u32>) {
    let mut seen = Vec::new();
    let result = policy
        .run(idempotent, |attempt| {
            seen.push(attempt);
            let outcome = if attempt <= failures { Err(make(attempt)) } else { Ok("done") };
            async move { outcome }
        })
        .await;
    (result, seen)
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_up_to_max_attempts() {
    let transient = [
        ErrorKind::ConnectFailed,
        ErrorKind::ConnectionLost,
        ErrorKind::SerializationFailure,
        ErrorKind::Deadlock,
    ];
    for kind in transient {
        // (max_attempts, failures before success) -> attempts made, success?
        let table = [(3, 0, 1, true), (3, 2, 3, true), (3, 3, 3, false), (3, 10, 3, false)];
        for (max_attempts, failures, attempts, ok) in table {
            let case = format!("{kind}, max {max_attempts}, {failures} failures");
            let (result, seen) =
                run_failing(&policy(max_attempts), false, failures, |n| error(kind, n)).await;
            assert_eq!(seen, (1..=attempts).collect::<Vec<_>>(), "{case}");
            match result {
                Ok(value) => assert!(ok, "{case}: {value}"),
                Err(err) => {
                    assert!(!ok, "{case}: {err}");
                    assert_eq!(err.kind(), kind, "{case}");
                    // The error returned is the last attempt's.
                    assert!(err.to_string().contains(&format!("attempt {attempts}")), "{err}");
                }
            }
        }
        let (result, seen) = run_failing(&RetryPolicy::none(), false, 5, |n| error(kind, n)).await;
        assert_eq!((result.is_err(), seen), (true, vec![1]), "{kind} under none()");
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_never_retried() {
    let permanent = [
        error(ErrorKind::Constraint, 1),
        error(ErrorKind::Query, 1),
        error(ErrorKind::PoolExhausted, 1),
        error(ErrorKind::CircuitOpen, 1),
        error(ErrorKind::Closed, 1),
        error(ErrorKind::ReadOnlyViolation, 1),
        error(ErrorKind::Timeout, 1),
        error(ErrorKind::Configuration, 1),
        error(ErrorKind::Other, 1),
        error(ErrorKind::AmbiguousCommit, 1),
        connect_error(ConnectFailure::Authentication, 1),
        connect_error(ConnectFailure::DatabaseMissing, 1),
        connect_error(ConnectFailure::Tls, 1),
    ];
    for template in permanent {
        let kind = template.kind();
        let started = Instant::now();
        let (result, seen) = run_failing(&policy(5), false, 5, |_| match &template {
            Error::ConnectFailed { reason, .. } => connect_error(*reason, 1),
            other => error(other.kind(), 1),
        })
        .await;
        assert_eq!(seen, vec![1], "{template}");
        assert_eq!(result.unwrap_err().kind(), kind);
        assert_eq!(started.elapsed(), Duration::ZERO, "{template}: no backoff sleep");
    }
}

#[tokio::test(start_paused = true)]
async fn ambiguous_commits_are_retried_only_for_idempotent_work() {
    let ambiguous = |n| error(ErrorKind::AmbiguousCommit, n);
    let (result, seen) = run_failing(&policy(3), false, 1, ambiguous).await;
    assert_eq!(seen, vec![1]);
    assert_eq!(result.unwrap_err().kind(), ErrorKind::AmbiguousCommit);

    let (result, seen) = run_failing(&policy(3), true, 1, ambiguous).await;
    assert_eq!((result.unwrap(), seen), ("done", vec![1, 2]));

    let (result, seen) = run_failing(&policy(3), true, 9, ambiguous).await;
    assert_eq!((result.is_err(), seen), (true, vec![1, 2, 3]));
}

#[tokio::test(start_paused = true)]
async fn retries_wait_within_the_backoff_ceilings() {
    let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_millis(250) };
    let policy = RetryPolicy { backoff, ..policy(5) };
    let mut started = Vec::new();
    let _ = policy
        .run(false, |_| {
            started.push(Instant::now());
            async { Err::<(), _>(error(ErrorKind::Deadlock, 0)) }
        })
        .await;
    assert_eq!(started.len(), 5);
    // The gap before retry n (0-based) is within [0, min(250 ms, 100 ms * 2^n)].
    for (retry, pair) in started.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let ceiling = backoff.ceiling(u32::try_from(retry).unwrap());
        assert!(gap <= ceiling, "retry {retry}: waited {gap:?}, ceiling {ceiling:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_retries_and_recovers_as_the_window_slides() {
    // Two retries per second-long window, none earned by traffic; delays of at most 1 ms.
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(1), 2, 0.0).unwrap());
    let policy = RetryPolicy {
        max_attempts: 10,
        backoff: Backoff { base: Duration::from_millis(1), max: Duration::from_millis(1) },
        budget: Arc::clone(&budget),
    };
    let lost = |n| error(ErrorKind::ConnectionLost, n);
    // (advance before the run in ms, attempts made)
    let table = [(0, 3), (0, 1), (500, 1), (550, 1), (100, 3), (0, 1)];
    for (step, (advance_ms, attempts)) in table.into_iter().enumerate() {
        tokio::time::advance(Duration::from_millis(advance_ms)).await;
        let (result, seen) = run_failing(&policy, false, 100, lost).await;
        assert_eq!(seen.len(), attempts, "step {step}");
        assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionLost);
    }
    assert!(!budget.withdraw());
}

#[tokio::test(start_paused = true)]
async fn first_attempts_earn_retries() {
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap());
    let policy = RetryPolicy { budget: Arc::clone(&budget), ..policy(3) };
    for _ in 0..4 {
        let (result, seen) =
            run_failing(&policy, false, 0, |n| error(ErrorKind::Deadlock, n)).await;
        assert_eq!((result.unwrap(), seen), ("done", vec![1]));
    }
    assert_eq!(budget.available(), 2);
    // Two retries earned by four calls, plus a half from this call's own deposit.
    let (_, seen) = run_failing(&policy, false, 9, |n| error(ErrorKind::Deadlock, n)).await;
    assert_eq!(seen, vec![1, 2, 3]);
    assert_eq!(budget.available(), 0);
}

#[test]
fn should_retry_weighs_kind_attempts_and_budget() {
    let serialization = error(ErrorKind::SerializationFailure, 1);
    let ambiguous = error(ErrorKind::AmbiguousCommit, 1);
    let query = error(ErrorKind::Query, 1);
    // (error, attempt, idempotent, max_attempts) -> retry?
    let table = [
        (&serialization, 1, false, 3, true),
        (&serialization, 2, false, 3, true),
        (&serialization, 3, false, 3, false),
        (&serialization, 7, false, 3, false),
        (&serialization, 1, false, 1, false),
        (&ambiguous, 1, false, 3, false),
        (&ambiguous, 1, true, 3, true),
        (&query, 1, true, 3, false),
    ];
    for (err, attempt, idempotent, max_attempts, expected) in table {
        let policy = policy(max_attempts);
        assert_eq!(
            policy.should_retry(err, attempt, idempotent),
            expected,
            "{err} attempt {attempt}/{max_attempts} idempotent {idempotent}"
        );
    }
    let broke = RetryPolicy {
        budget: Arc::new(RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap()),
        ..RetryPolicy::default()
    };
    assert!(!broke.should_retry(&serialization, 1, false));
}

#[test]
fn only_retries_that_happen_cost_budget() {
    let policy = RetryPolicy {
        budget: Arc::new(RetryBudget::new(Duration::from_secs(1), 1, 0.0).unwrap()),
        ..RetryPolicy::default()
    };
    assert!(!policy.should_retry(&error(ErrorKind::Query, 1), 1, false));
    assert!(!policy.should_retry(&error(ErrorKind::Deadlock, 3), 3, false));
    assert_eq!(policy.budget.available(), 1);
    assert!(policy.should_retry(&error(ErrorKind::Deadlock, 1), 1, false));
    assert_eq!(policy.budget.available(), 0);
}

#[test]
fn defaults_and_validation() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(
        policy.backoff,
        Backoff { base: Duration::from_millis(50), max: Duration::from_secs(2) }
    );
    policy.validate().unwrap();
    assert_eq!(RetryPolicy::none().max_attempts, 1);
    RetryPolicy::none().validate().unwrap();

    let table = [
        (RetryPolicy { max_attempts: 0, ..RetryPolicy::default() }, "retry.max_attempts"),
        (
            RetryPolicy {
                backoff: Backoff { base: Duration::from_secs(3), max: Duration::from_secs(2) },
                ..RetryPolicy::default()
            },
            "retry.backoff.max",
        ),
    ];
    for (policy, field) in table {
        let err = policy.validate().unwrap_err();
        assert!(matches!(&err, Error::Configuration { field: f, .. } if f == field), "{err}");
    }
}

#[test]
fn the_run_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let policy = RetryPolicy::default();
    let calls = AtomicU32::new(0);
    let future = policy.run(false, |_| {
        calls.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, Error>(()) }
    });
    assert_send(&future);
}

#[test]
fn clones_share_the_budget() {
    let policy = RetryPolicy::default();
    let clone = policy.clone();
    assert!(Arc::ptr_eq(&policy.budget, &clone.budget));
}
