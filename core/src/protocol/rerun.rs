//! `rerun_transaction`: the loop behind the driver-shaped handles' retried transactions (ucm-sqlx's `SqlxPool::transaction`, ucm-diesel's pools), written once.

use std::time::Duration;

use super::RetryPolicy;
use crate::connector::Phase;
use crate::error::Error;
use crate::protocol::{BoxFuture, TransactionOptions};

/// Runs a transaction under `policy` until it succeeds or the policy gives up, and returns
/// its value or its last error, in the caller's own error type `E`.
///
/// `attempt` runs one whole attempt (check out, begin, run the caller's work, commit) on
/// `state` (the caller's work and whatever it lends to each attempt) and, on failure,
/// says in which [`Phase`] the error arose: `Commit` for the `COMMIT` itself, else
/// `Statement`. `read` finds the database error inside `E` and hands ucm's reading of it
/// (by phase) to the callback it is given; it returns `false` when `E` carries no database
/// error, which is the application's decision: returned at once, never re-run.
///
/// A failure is re-run from the start when the policy says so: a serialization failure or
/// deadlock, a connection lost before `COMMIT`, a failed checkout; never an ambiguous
/// `COMMIT` (the outcome is unknown) unless `options.idempotent`. The policy bounds the
/// attempts, spaces them with its backoff and shares its budget with every other retry.
///
/// # Errors
/// The last attempt's error, when it is not re-run or the retries ran out.
pub async fn rerun_transaction<S, T, E>(
    policy: &RetryPolicy,
    options: TransactionOptions,
    state: &mut S,
    mut attempt: impl for<'s> FnMut(&'s mut S) -> BoxFuture<'s, Result<T, (E, Phase)>>,
    read: impl Fn(&E, Phase, &mut dyn FnMut(&Error)) -> bool,
) -> Result<T, E> {
    policy.budget.deposit();
    let mut number = 1;
    loop {
        let (error, phase) = match attempt(state).await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let mut delay: Option<Duration> = None;
        let carries_database_error = read(&error, phase, &mut |reading| {
            delay = policy.retry_delay(reading, number, options.idempotent);
            if let Some(delay) = delay {
                tracing::debug!(
                    attempt = number,
                    error.type = reading.kind().as_str(),
                    ?delay,
                    "re-running a transaction: {reading}"
                );
            }
        });
        match delay {
            Some(delay) if carries_database_error => tokio::time::sleep(delay).await,
            _ => return Err(error),
        }
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::rerun_transaction;
    use crate::connector::Phase;
    use crate::error::{Error, ErrorKind};
    use crate::protocol::TransactionOptions;
    use crate::retry::RetryPolicy;

    /// An application error: either a database error (ucm's reading) or its own.
    #[derive(Debug)]
    enum AppError {
        Database(Error),
        Invalid,
    }

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 3, ..RetryPolicy::default() }
    }

    fn db(kind: ErrorKind) -> AppError {
        AppError::Database(Error::database(kind, "primary", None, "test"))
    }

    /// Runs a transaction whose attempts fail with `failures` in turn (then succeed) and
    /// returns (result, attempts run).
    async fn run(
        failures: Vec<(AppError, Phase)>,
        options: TransactionOptions,
    ) -> (Result<u32, AppError>, usize) {
        let mut state = (failures.into_iter(), 0_usize);
        let result = rerun_transaction(
            &policy(),
            options,
            &mut state,
            |(failures, runs)| {
                Box::pin(async move {
                    *runs += 1;
                    failures.next().map_or(Ok(42), Err)
                })
            },
            |error, phase, decide| match error {
                AppError::Database(error) => {
                    let read = if phase.commits() && error.kind() == ErrorKind::ConnectionLost {
                        Error::database(ErrorKind::AmbiguousCommit, "primary", None, "x")
                    } else {
                        Error::database(error.kind(), "primary", None, "x")
                    };
                    decide(&read);
                    true
                }
                AppError::Invalid => false,
            },
        )
        .await;
        (result, state.1)
    }

    #[tokio::test(start_paused = true)]
    async fn reruns_what_the_policy_retries_and_nothing_else() {
        let plain = TransactionOptions::default();
        let idempotent = TransactionOptions { idempotent: true };
        let serialization = (db(ErrorKind::SerializationFailure), Phase::Statement);
        let (result, runs) = run(vec![serialization], plain).await;
        assert_eq!((result.unwrap(), runs), (42, 2), "a serialization failure is re-run");

        let (result, runs) = run(vec![(AppError::Invalid, Phase::Statement)], plain).await;
        assert!(matches!(result, Err(AppError::Invalid)));
        assert_eq!(runs, 1, "an application error is never re-run");

        let lost_at_commit = || (db(ErrorKind::ConnectionLost), Phase::Commit);
        let (result, runs) = run(vec![lost_at_commit()], plain).await;
        assert!(matches!(result, Err(AppError::Database(_))));
        assert_eq!(runs, 1, "an ambiguous commit is not re-run");
        let (result, runs) = run(vec![lost_at_commit()], idempotent).await;
        assert_eq!((result.unwrap(), runs), (42, 2), "unless the work is idempotent");

        let always = (0..5).map(|_| (db(ErrorKind::Deadlock), Phase::Statement)).collect();
        let (result, runs) = run(always, plain).await;
        assert!(matches!(result, Err(AppError::Database(_))));
        assert_eq!(runs, 3, "attempts stop at max_attempts");
    }
}
