//! Tests of the breaker's state machine on paused time, and a concurrency smoke test.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const ENDPOINT: &str = "db:5432/app";
const TRIPS: ErrorKind = ErrorKind::ConnectFailed;
const SECOND: Duration = Duration::from_secs(1);

const ALL_KINDS: [ErrorKind; 14] = [
    ErrorKind::PoolExhausted,
    ErrorKind::ConnectFailed,
    ErrorKind::CircuitOpen,
    ErrorKind::Closed,
    ErrorKind::ReadOnlyViolation,
    ErrorKind::SerializationFailure,
    ErrorKind::Deadlock,
    ErrorKind::Constraint,
    ErrorKind::ConnectionLost,
    ErrorKind::AmbiguousCommit,
    ErrorKind::Timeout,
    ErrorKind::Configuration,
    ErrorKind::Query,
    ErrorKind::Other,
];

/// The state machine is tested with a 60 s recovery timeout, so that each step of it is
/// far from the next; the 1 s default is checked in `config.rs`.
fn breaker() -> CircuitBreaker {
    CircuitBreaker::new(
        ENDPOINT,
        CircuitBreakerConfig { recovery_timeout: Duration::from_secs(60), ..Default::default() },
    )
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().unwrap().failure(TRIPS);
}

fn succeed(b: &CircuitBreaker) {
    b.try_acquire().unwrap().success();
}

fn open(b: &CircuitBreaker) {
    for _ in 0..b.config().failure_threshold {
        fail(b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

/// The refusal's `retry_after`, failing the test if the call was let through.
fn refused(b: &CircuitBreaker) -> Duration {
    match b.try_acquire() {
        Err(Error::CircuitOpen { endpoint, retry_after }) => {
            assert_eq!(endpoint, ENDPOINT);
            retry_after
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(permit) => panic!("let through: probe={}", permit.is_probe()),
    }
}

/// Opens the breaker, then fails `failed_probes` probes in a row, each once its timeout passed.
async fn reopen(b: &CircuitBreaker, failed_probes: usize) {
    open(b);
    for _ in 0..failed_probes {
        tokio::time::advance(b.snapshot().retry_after.unwrap()).await;
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        probe.failure(ErrorKind::ConnectionLost);
        assert_eq!(b.state(), BreakerState::Open);
    }
}

#[tokio::test(start_paused = true)]
async fn opens_at_exactly_the_threshold_and_not_before() {
    for threshold in [1, 2, 5, 9] {
        let config = CircuitBreakerConfig { failure_threshold: threshold, ..Default::default() };
        let b = CircuitBreaker::new(ENDPOINT, config);
        for n in 1..threshold {
            fail(&b);
            assert_eq!(b.state(), BreakerState::Closed, "threshold {threshold}, failure {n}");
            assert_eq!(b.snapshot().consecutive_failures, n);
        }
        fail(&b);
        let snap = b.snapshot();
        assert_eq!(snap.state, BreakerState::Open, "threshold {threshold}");
        assert_eq!(snap.times_opened, 1);
        assert_eq!(snap.consecutive_failures, threshold);
        assert_eq!(snap.retry_after, Some(SECOND), "the default first recovery timeout");
    }
}

#[tokio::test(start_paused = true)]
async fn only_consecutive_counted_failures_open() {
    // F: counted failure, S: success, N: neutral failure (SQL error), D: permit dropped,
    // R: record_success, X: record_failure with a counted kind.
    let table = [
        ("FFFFF", BreakerState::Open, 5),
        ("FFFFSFFFF", BreakerState::Closed, 4),
        ("FFSFFSFFSFF", BreakerState::Closed, 2),
        ("SSSFFFFF", BreakerState::Open, 5),
        ("FFFFNNNNNNNN", BreakerState::Closed, 4),
        ("FFFFNF", BreakerState::Open, 5),
        ("FFFFDDDDF", BreakerState::Open, 5),
        ("FFFFRF", BreakerState::Closed, 1),
        ("FFXFX", BreakerState::Open, 5),
        ("XXXXRXXXX", BreakerState::Closed, 4),
    ];
    for (sequence, state, failures) in table {
        let b = breaker();
        for step in sequence.chars() {
            match step {
                'F' => fail(&b),
                'S' => succeed(&b),
                'N' => b.try_acquire().unwrap().failure(ErrorKind::Query),
                'D' => drop(b.try_acquire().unwrap()),
                'R' => b.record_success(),
                'X' => b.record_failure(ErrorKind::ConnectionLost),
                other => unreachable!("bad step {other}"),
            }
        }
        let snap = b.snapshot();
        assert_eq!(snap.state, state, "{sequence}");
        assert_eq!(snap.consecutive_failures, failures, "{sequence}");
    }
}

#[tokio::test(start_paused = true)]
async fn neutral_kinds_never_open_nor_count() {
    for kind in ALL_KINDS.into_iter().filter(|k| !k.trips_breaker()) {
        let b = breaker();
        fail(&b);
        for _ in 0..50 {
            b.try_acquire().unwrap().failure(kind);
            b.record_failure(kind);
        }
        let snap = b.snapshot();
        assert_eq!(snap.state, BreakerState::Closed, "{kind}");
        // Neutral: the one counted failure is neither added to nor reset.
        assert_eq!(snap.consecutive_failures, 1, "{kind}");
    }
    for kind in ALL_KINDS.into_iter().filter(|k| k.trips_breaker()) {
        let b = breaker();
        for _ in 0..5 {
            b.try_acquire().unwrap().failure(kind);
        }
        assert_eq!(b.state(), BreakerState::Open, "{kind}");
    }
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_with_a_shrinking_retry_after() {
    let b = breaker();
    open(&b);
    let table = [(0, 60_000), (20_000, 40_000), (39_000, 1_000), (999, 1)];
    for (advance_ms, left_ms) in table {
        tokio::time::advance(Duration::from_millis(advance_ms)).await;
        assert_eq!(refused(&b), Duration::from_millis(left_ms), "after +{advance_ms} ms");
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().retry_after, Some(Duration::from_millis(left_ms)));
    }
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert!(err.to_string().contains(ENDPOINT), "{err}");
}

#[tokio::test(start_paused = true)]
async fn open_moves_to_half_open_once_the_timeout_passed() {
    let b = breaker();
    open(&b);
    tokio::time::advance(Duration::from_secs(60)).await;
    // Time alone does not change the state; the next acquire does.
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.snapshot().retry_after, Some(Duration::ZERO));
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().retry_after, None);
    probe.success();
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_after_three_successes() {
    let b = breaker();
    open(&b);
    tokio::time::advance(Duration::from_secs(60)).await;
    for n in 1..=3 {
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe(), "probe {n}");
        probe.success();
        let expected = if n < 3 { BreakerState::HalfOpen } else { BreakerState::Closed };
        assert_eq!(b.state(), expected, "after {n} successes");
    }
    let snap = b.snapshot();
    assert_eq!(snap.consecutive_failures, 0);
    assert_eq!(snap.times_opened, 1);
    // Closed again: calls are normal calls, not probes.
    assert!(!b.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_with_a_timeout_grown_and_capped() {
    // Failed probes in a row -> recovery timeout in force.
    let table = [(0, 60_000), (1, 90_000), (2, 135_000), (3, 202_500), (4, 300_000), (7, 300_000)];
    for (failed_probes, timeout_ms) in table {
        let b = breaker();
        reopen(&b, failed_probes).await;
        let timeout = Duration::from_millis(timeout_ms);
        let snap = b.snapshot();
        assert_eq!(snap.current_recovery_timeout, timeout, "{failed_probes} failed probes");
        assert_eq!(snap.retry_after, Some(timeout));
        assert_eq!(snap.times_opened, failed_probes as u64 + 1);
        // It stays open for the whole grown timeout, then probes again.
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        assert_eq!(refused(&b), Duration::from_millis(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.try_acquire().unwrap().is_probe());
    }
}

#[tokio::test(start_paused = true)]
async fn any_counted_failure_reopens_a_half_open_breaker() {
    let b = breaker();
    open(&b);
    tokio::time::advance(Duration::from_secs(60)).await;
    succeed(&b);
    succeed(&b);
    // Two successes do not soften the third probe's failure.
    fail(&b);
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!(snap.current_recovery_timeout, Duration::from_secs(90));
    // A neutral outcome in half-open neither closes nor re-opens.
    tokio::time::advance(Duration::from_secs(90)).await;
    for _ in 0..10 {
        b.try_acquire().unwrap().failure(ErrorKind::PoolExhausted);
    }
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_flapping_endpoints_recovery_grows_and_a_quiet_one_starts_over() {
    let b = breaker();
    reopen(&b, 2).await;
    assert_eq!(b.snapshot().current_recovery_timeout, Duration::from_secs(135));
    tokio::time::advance(Duration::from_secs(135)).await;
    for _ in 0..3 {
        succeed(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    // Tripping again right after closing: flapping, the wait grows on.
    assert_eq!(b.snapshot().current_recovery_timeout, Duration::from_millis(202_500));
    open(&b);
    let snap = b.snapshot();
    assert_eq!(snap.retry_after, Some(Duration::from_millis(202_500)));
    assert_eq!(snap.times_opened, 4);
    tokio::time::advance(Duration::from_millis(202_500)).await;
    for _ in 0..3 {
        succeed(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    // Closed for ten recovery timeouts: a later trip starts over from the base.
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(b.snapshot().current_recovery_timeout, Duration::from_secs(60));
    open(&b);
    assert_eq!(b.snapshot().retry_after, Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn probe_slots_are_bounded_and_released_by_any_outcome() {
    let config = CircuitBreakerConfig { half_open_max_probes: 2, ..Default::default() };
    let b = CircuitBreaker::new(ENDPOINT, config);
    open(&b);
    tokio::time::advance(Duration::from_secs(60)).await;
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    assert!(first.is_probe() && second.is_probe());
    assert_eq!(refused(&b), Duration::ZERO);
    drop(first);
    let third = b.try_acquire().unwrap();
    assert_eq!(refused(&b), Duration::ZERO);
    third.failure(ErrorKind::Query);
    second.success();
    // Both slots are free again, and only the one success counted.
    let (a, c) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
    a.success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    c.success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_acquire_frees_its_probe_slot() {
    let b = Arc::new(breaker());
    open(&b);
    tokio::time::advance(Duration::from_secs(60)).await;
    let task = tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            let _probe = b.try_acquire().unwrap();
            // Stands for the connect the probe is waiting on when the caller gives up.
            std::future::pending::<()>().await;
        }
    });
    tokio::task::yield_now().await;
    assert_eq!(refused(&b), Duration::ZERO);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(b.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_in_closed_changes_nothing() {
    let b = breaker();
    for _ in 0..4 {
        fail(&b);
    }
    for _ in 0..100 {
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(b.snapshot().consecutive_failures, 4);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_calls_let_through_before_opening_do_not_decide_half_open() {
    let b = breaker();
    let (early_success, early_failure) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
    open(&b);
    tokio::time::advance(Duration::from_secs(60)).await;
    let probe = b.try_acquire().unwrap();
    early_failure.failure(TRIPS);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    early_success.success();
    probe.success();
    succeed(&b);
    assert_eq!(b.state(), BreakerState::HalfOpen, "the early success must not count");
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn recorded_outcomes_act_like_probes_but_not_while_open() {
    let b = breaker();
    for _ in 0..5 {
        b.record_failure(ErrorKind::ConnectFailed);
    }
    assert_eq!(b.state(), BreakerState::Open);
    // While open, neither kind of observation shortens or extends the wait.
    b.record_success();
    b.record_failure(TRIPS);
    let snap = b.snapshot();
    assert_eq!((snap.state, snap.times_opened), (BreakerState::Open, 1));
    assert_eq!(snap.current_recovery_timeout, Duration::from_secs(60));
    tokio::time::advance(Duration::from_secs(60)).await;
    let probe = b.try_acquire().unwrap();
    b.record_success();
    b.record_success();
    probe.success();
    assert_eq!(b.state(), BreakerState::Closed);

    // Opened again right after closing (flapping): the wait grew to 90 s.
    open(&b);
    tokio::time::advance(Duration::from_secs(90)).await;
    let probe = b.try_acquire().unwrap();
    b.record_failure(ErrorKind::ConnectionLost);
    assert_eq!(b.state(), BreakerState::Open);
    // The probe's slot belonged to the period that ended; settling it is harmless.
    probe.success();
    assert_eq!(b.snapshot().current_recovery_timeout, Duration::from_secs(135));
}

#[tokio::test(start_paused = true)]
async fn an_unvalidated_configuration_still_opens_probes_and_closes() {
    let config = CircuitBreakerConfig {
        failure_threshold: 0,
        recovery_timeout: SECOND,
        backoff_multiplier: f64::NAN,
        max_recovery_timeout: Duration::ZERO,
        half_open_max_probes: 0,
        success_threshold: 0,
    };
    let b = CircuitBreaker::new(ENDPOINT, config);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(SECOND).await;
    fail(&b);
    assert_eq!(b.snapshot().current_recovery_timeout, SECOND);
    tokio::time::advance(SECOND).await;
    succeed(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_keep_the_counts_coherent() {
    const TASKS: u64 = 16;
    const CALLS: u64 = 2_000;
    let config = CircuitBreakerConfig {
        failure_threshold: 3,
        recovery_timeout: Duration::ZERO,
        backoff_multiplier: 1.0,
        max_recovery_timeout: Duration::ZERO,
        half_open_max_probes: 2,
        success_threshold: 2,
    };
    let b = Arc::new(CircuitBreaker::new(ENDPOINT, config));
    // Probes held per half-open period, and the most ever held at once in one period.
    let held: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let most_held = Arc::new(AtomicU32::new(0));
    let refusals = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (b, held, most_held, refusals) =
                (Arc::clone(&b), Arc::clone(&held), Arc::clone(&most_held), Arc::clone(&refusals));
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task);
                for call in 0..CALLS {
                    let permit = match b.try_acquire() {
                        Ok(permit) => permit,
                        Err(err) => {
                            assert_eq!(err.kind(), ErrorKind::CircuitOpen);
                            refusals.fetch_add(1, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            continue;
                        }
                    };
                    let epoch = match permit.role {
                        Role::Probe { epoch } => Some(epoch),
                        _ => None,
                    };
                    if let Some(epoch) = epoch {
                        let mut held = held.lock().unwrap();
                        let count = held.entry(epoch).or_default();
                        *count += 1;
                        most_held.fetch_max(*count, Ordering::Relaxed);
                    }
                    if call % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    // Released from the tally before the breaker frees the slot, so the
                    // tally never counts a slot the breaker already handed out again.
                    if let Some(epoch) = epoch {
                        *held.lock().unwrap().entry(epoch).or_default() -= 1;
                    }
                    // Half of the calls fail, so runs of three failures, openings, probes
                    // and failed probes all happen many times.
                    match rng.random_range(0..10) {
                        0..5 => permit.failure(ErrorKind::ConnectFailed),
                        5..8 => permit.success(),
                        8 => permit.failure(ErrorKind::PoolExhausted),
                        _ => drop(permit),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    assert!(most_held.load(Ordering::Relaxed) <= 2, "more probes than slots in one period");
    let snap = b.snapshot();
    assert!(snap.times_opened > 0, "the mix of outcomes should have opened it");
    {
        let inner = b.lock();
        assert_eq!(inner.probes_in_flight, 0, "a settled permit kept a probe slot");
        assert_eq!(b.state(), inner.state, "the atomic state drifted from the locked one");
    }
    if snap.state == BreakerState::Closed {
        assert!(snap.consecutive_failures < 3);
    }
    // Nothing is stuck: successes alone close it again within a few calls.
    for _ in 0..3 {
        if let Ok(permit) = b.try_acquire() {
            permit.success();
        }
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_open_exactly_once() {
    let b = Arc::new(breaker());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                for _ in 0..500 {
                    if let Ok(permit) = b.try_acquire() {
                        permit.failure(ErrorKind::ConnectionLost);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let snap = b.snapshot();
    // The 60 s recovery timeout cannot pass during the test, so one opening only.
    assert_eq!((snap.state, snap.times_opened), (BreakerState::Open, 1));
}

#[tokio::test(start_paused = true)]
async fn connections_lost_together_count_once_until_the_next_outcome() {
    let b = breaker();
    // A terminate-all round over a busy pool: eight connections lost at once.
    for _ in 0..8 {
        b.record_connection_lost();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 1);
    // The connects that follow decide: refused ones count, and after one of them the next
    // lost connection counts again.
    for _ in 0..3 {
        fail(&b);
    }
    b.record_connection_lost();
    assert_eq!(b.state(), BreakerState::Open, "1 loss + 3 refused connects + 1 loss");
    // After a success, a new loss counts again.
    let b = breaker();
    b.record_connection_lost();
    b.try_acquire().unwrap().success();
    b.record_connection_lost();
    assert_eq!(b.snapshot().consecutive_failures, 1);
}
