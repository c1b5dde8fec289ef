//! Pool behaviour on paused time with the in-memory connector: sizing, overflow reaping, lifetime, validation, timeouts, cancel safety, reset, breaker, drain.

use std::time::Duration;

use tokio::time::{advance, sleep, timeout};

use super::testing::MemoryConnector;
use super::*;
use crate::circuit_breaker::{BreakerState, CircuitBreakerConfig};
use crate::error::{ConnectFailure, ErrorKind};
use crate::mode::{ConnectionMode, ManagerMode};

pub(super) fn config(pool_size: usize, max_overflow: usize) -> PoolConfiguration {
    PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(pool_size)
        .max_overflow(max_overflow)
        .acquire_timeout(Duration::from_secs(1))
        .validation_timeout(Duration::from_millis(100))
        .overflow_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub(super) fn pool(
    connector: &MemoryConnector,
    config: PoolConfiguration,
) -> Pool<MemoryConnector> {
    Pool::new("memory:test", connector.clone(), config, None).unwrap()
}

/// Lets spawned tasks (resets, the reaper) run on the paused clock.
pub(super) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn prefill_opens_the_pool_size_and_no_more() {
    for mode in ManagerMode::ALL {
        let connector = MemoryConnector::new();
        let pool = pool(&connector, PoolConfiguration::for_mode(mode));
        assert_eq!(pool.prefill().await.unwrap(), pool.config().pool_size(), "{mode}");
        let status = pool.status();
        assert_eq!(status.size, pool.config().pool_size(), "{mode}");
        assert_eq!(status.idle, status.size, "{mode}");
        assert_eq!(status.in_use, 0, "{mode}");
        assert_eq!(status.max_size, pool.config().max_size(), "{mode}");
        assert_eq!(connector.opened(), pool.config().pool_size() as u64, "{mode}");
        // A second prefill finds the pool full and opens nothing.
        pool.prefill().await.unwrap();
        assert_eq!(connector.opened(), pool.config().pool_size() as u64, "{mode}");
    }
}

#[tokio::test(start_paused = true)]
async fn prefill_reports_a_dead_server() {
    let connector = MemoryConnector::new();
    connector.refuse_connections(true);
    let err = pool(&connector, config(3, 0)).prefill().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectFailed);
    // The first connection of an empty pool is opened alone: one refused connect, not three.
    assert_eq!(connector.connect_attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn pool_plus_overflow_is_the_limit_then_exhaustion_explains_itself() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(2, 3));
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(pool.acquire().await.unwrap());
    }
    assert_eq!(pool.status().in_use, 5);
    let started = tokio::time::Instant::now();
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted);
    assert!(started.elapsed() >= Duration::from_secs(1));
    match err {
        Error::PoolExhausted { in_use, max, waited, .. } => {
            assert_eq!((in_use, max), (5, 5));
            assert!(waited >= Duration::from_secs(1));
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert_eq!(pool.metrics().snapshot().acquire_timeouts, 1);
    // A slot freed during the wait is handed to the waiter.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire().await.map(|c| c.id()) })
    };
    sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.status().waiting, 1);
    let released = held.pop().unwrap().id();
    assert_eq!(waiter.await.unwrap().unwrap(), released);
}

#[tokio::test(start_paused = true)]
async fn overflow_connections_close_after_idle_and_the_pool_size_stays() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(2, 3));
    let held: Vec<_> = hold(&pool, 5).await;
    drop(held);
    assert_eq!(pool.status().size, 5);
    // Not yet idle long enough.
    advance(Duration::from_secs(20)).await;
    settle().await;
    pool.reap_now();
    assert_eq!(pool.status().size, 5);
    // Past the overflow idle timeout, and a reaper tick later: back to the pool size.
    advance(Duration::from_secs(20)).await;
    settle().await;
    assert_eq!(pool.status().size, 2);
    assert_eq!(pool.metrics().closed(CloseReason::OverflowIdle), 3);
    assert_eq!(connector.live(), 2);
    // Reaping never touches the kept connections, however long they idle.
    advance(Duration::from_secs(600)).await;
    settle().await;
    assert_eq!(pool.status().size, 2);
}

#[tokio::test(start_paused = true)]
async fn connections_in_use_are_never_reaped() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 2));
    let held: Vec<_> = hold(&pool, 3).await;
    advance(Duration::from_secs(120)).await;
    settle().await;
    pool.reap_now();
    assert_eq!(pool.status().size, 3);
    assert_eq!(connector.live(), 3);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn lifetimes_are_jittered_and_expired_connections_replaced() {
    let connector = MemoryConnector::new();
    let config = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(20)
        .max_overflow(0)
        .max_lifetime(Duration::from_secs(60))
        .lifetime_jitter(Duration::from_secs(10))
        .overflow_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let pool = pool(&connector, config);
    pool.prefill().await.unwrap();
    advance(Duration::from_millis(49_900)).await;
    settle().await;
    assert_eq!(pool.metrics().closed(CloseReason::Lifetime), 0, "none expires before max - jitter");
    // Step through the jitter window: closes spread over several steps, all done by 60 s.
    let mut steps_with_closes = 0;
    let mut last = 0;
    for _ in 0..11 {
        advance(Duration::from_secs(1)).await;
        settle().await;
        pool.reap_now();
        let now = pool.metrics().closed(CloseReason::Lifetime);
        if now > last {
            steps_with_closes += 1;
        }
        last = now;
    }
    assert_eq!(last, 20, "every connection expired by max_lifetime");
    assert!(
        steps_with_closes >= 3,
        "expiries spread over the jitter window, got {steps_with_closes} steps"
    );
    // The reaper's background refill opened replacements: the pool is back at its size,
    // and a checkout takes one of them rather than connecting inline.
    advance(Duration::from_secs(8)).await;
    settle().await;
    assert_eq!(pool.status().size, 20, "the background refill restored the pool size");
    let opened = connector.opened();
    let conn = pool.acquire().await.unwrap();
    assert!(conn.id() >= 20, "a fresh connection");
    assert_eq!(connector.opened(), opened, "no connect on the caller's checkout");
}

#[tokio::test(start_paused = true)]
async fn an_expired_connection_is_replaced_at_checkout() {
    let connector = MemoryConnector::new();
    let config = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(1)
        .max_overflow(0)
        .max_lifetime(Duration::from_secs(60))
        .lifetime_jitter(Duration::ZERO)
        .overflow_idle_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let pool = pool(&connector, config);
    let first = pool.acquire().await.unwrap().id();
    advance(Duration::from_secs(61)).await;
    let second = pool.acquire().await.unwrap().id();
    assert_ne!(first, second);
    assert_eq!(pool.metrics().closed(CloseReason::Lifetime), 1);
}

#[tokio::test(start_paused = true)]
async fn validation_only_after_idle_and_dead_connections_never_handed_out() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    drop(pool.acquire().await.unwrap());
    // Used a moment ago: no ping.
    drop(pool.acquire().await.unwrap());
    assert_eq!(connector.validations(), 0);
    // Idle past the threshold: pinged once.
    advance(Duration::from_secs(1)).await;
    drop(pool.acquire().await.unwrap());
    assert_eq!(connector.validations(), 1);
    // The server restarted meanwhile: the broken connection is replaced, not handed out.
    connector.break_existing_connections();
    advance(Duration::from_secs(1)).await;
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(conn.id(), 1);
    conn.query().await.unwrap();
    drop(conn);
    // A failing ping also discards the connection and opens another.
    connector.fail_validation(true);
    advance(Duration::from_secs(1)).await;
    let conn = pool.acquire().await.unwrap();
    assert_eq!(conn.id(), 2);
    assert_eq!(pool.metrics().closed(CloseReason::ValidationFailed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_ping_is_bounded_by_the_validation_timeout() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    drop(pool.acquire().await.unwrap());
    advance(Duration::from_secs(1)).await;
    connector.set_latency(Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let conn = pool.acquire().await.unwrap();
    assert_eq!(conn.id(), 1, "the hung connection was replaced");
    assert_eq!(started.elapsed(), Duration::from_millis(100), "one validation timeout");
}

#[tokio::test(start_paused = true)]
async fn a_slow_connect_fails_at_the_acquire_timeout_with_its_reason() {
    let connector = MemoryConnector::new();
    connector.set_connect_delay(Duration::from_secs(60));
    let pool = pool(&connector, config(1, 0));
    let started = tokio::time::Instant::now();
    let err = pool.acquire().await.unwrap_err();
    // The acquire timeout (1 s) bounds the whole checkout, the connect included, although
    // the connect timeout is 10 s.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    match &err {
        Error::ConnectFailed { reason, message, .. } => {
            assert_eq!(*reason, ConnectFailure::Timeout);
            assert!(message.contains("opening a new connection"), "{message}");
            assert!(message.contains("acquire timeout of 1s"), "{message}");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    // The background refill, which nobody waits on, has the whole connect timeout.
    assert_eq!(pool.prefill().await.unwrap_err().kind(), ErrorKind::ConnectFailed);
    assert_eq!(started.elapsed(), Duration::from_secs(11));
    assert_eq!(pool.status().size, 0);
    assert_eq!(pool.metrics().snapshot().connect_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_acquire_futures_at_any_point_leaks_nothing() {
    let connector = MemoryConnector::new();
    connector.set_connect_delay(Duration::from_millis(300));
    let pool = pool(&connector, config(2, 0));
    // Cancelled while connecting, at many different points of the connect.
    for cancel_after_ms in (0..400).step_by(25) {
        let result = timeout(Duration::from_millis(cancel_after_ms), pool.acquire()).await;
        drop(result);
    }
    // Cancelled while waiting for an exhausted pool.
    let held: Vec<_> = hold(&pool, 2).await;
    for _ in 0..20 {
        assert!(timeout(Duration::from_millis(50), pool.acquire()).await.is_err());
    }
    assert_eq!(pool.status().waiting, 0);
    drop(held);
    // The pool is whole: both slots usable, no phantom connections or waiters.
    let status = pool.status();
    assert_eq!((status.in_use, status.waiting), (0, 0));
    assert!(status.size <= 2);
    let again: Vec<_> = hold(&pool, 2).await;
    assert_eq!(again.len(), 2);
    assert_eq!(connector.live(), pool.status().size as u64);
}

/// A checkout dropped while it pings an idle connection closes that connection and gives
/// its slot back: neither is lost, and the next checkout opens a fresh one.
#[tokio::test(start_paused = true)]
async fn a_checkout_dropped_during_its_ping_gives_its_slot_back() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    drop(pool.acquire().await.unwrap());
    advance(Duration::from_secs(1)).await;
    connector.set_latency(Duration::from_secs(30));
    assert!(timeout(Duration::from_millis(50), pool.acquire()).await.is_err());
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.waiting), (0, 0, 0));
    assert_eq!(connector.live(), 0, "the connection whose ping was cut short is closed");
    connector.set_latency(Duration::ZERO);
    let again = pool.acquire().await.unwrap();
    assert_eq!(again.id(), 1, "a new connection in the freed slot");
}

#[tokio::test(start_paused = true)]
async fn a_connection_returned_mid_transaction_is_rolled_back_before_reuse() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    let mut conn = pool.acquire().await.unwrap();
    conn.mark_transaction_open();
    conn.begin().await.unwrap();
    let id = conn.id();
    drop(conn);
    settle().await;
    assert_eq!(connector.resets(), 1);
    let conn = pool.acquire().await.unwrap();
    assert_eq!(conn.id(), id, "the rolled-back connection is reused");
    assert!(!conn.in_transaction());
    assert_eq!(pool.metrics().snapshot().resets, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_rollback_closes_the_connection() {
    let connector = MemoryConnector::new();
    connector.fail_reset(true);
    let pool = pool(&connector, config(1, 0));
    let mut conn = pool.acquire().await.unwrap();
    conn.mark_transaction_open();
    drop(conn);
    settle().await;
    assert_eq!(pool.status().size, 0);
    assert_eq!(connector.live(), 0);
    assert_eq!(pool.metrics().closed(CloseReason::ResetFailed), 1);
    // Its slot is free again.
    assert_eq!(pool.acquire().await.unwrap().id(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_marked_broken_is_closed_not_pooled() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    let mut conn = pool.acquire().await.unwrap();
    conn.mark_broken();
    drop(conn);
    assert_eq!((pool.status().size, connector.live()), (0, 0));
    assert_eq!(pool.metrics().closed(CloseReason::Broken), 1);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_on_connect_failures_but_never_on_exhaustion() {
    let connector = MemoryConnector::new();
    let pool = Pool::new(
        "memory:test",
        connector.clone(),
        config(1, 0),
        Some(CircuitBreakerConfig::default()),
    )
    .unwrap();
    // Exhaustion, many times over: the breaker stays closed.
    let held = pool.acquire().await.unwrap();
    for _ in 0..10 {
        assert_eq!(pool.acquire().await.unwrap_err().kind(), ErrorKind::PoolExhausted);
    }
    assert_eq!(pool.breaker().unwrap().state(), BreakerState::Closed);
    drop(held);
    // Connect failures: five open it, and then it fails fast without connecting.
    connector.refuse_connections(true);
    connector.break_existing_connections();
    for _ in 0..5 {
        assert_eq!(pool.acquire().await.unwrap_err().kind(), ErrorKind::ConnectFailed);
    }
    assert_eq!(pool.breaker().unwrap().state(), BreakerState::Open);
    let attempts = connector.connect_attempts();
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(connector.connect_attempts(), attempts, "an open circuit does no I/O");
    // The server comes back; after the recovery timeout probes close it again, each one
    // proven by a ping, not by an idle connection handed out without I/O.
    connector.refuse_connections(false);
    advance(Duration::from_secs(61)).await;
    let round_trips = connector.validations() + connector.opened();
    for _ in 0..3 {
        drop(pool.acquire().await.unwrap());
    }
    assert_eq!(pool.breaker().unwrap().state(), BreakerState::Closed);
    assert!(
        connector.validations() + connector.opened() >= round_trips + 3,
        "each probe did a round trip (a ping or a connect)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_on_a_dead_idle_connection_reopens_the_breaker() {
    let connector = MemoryConnector::new();
    // Idle validation off for this test (threshold beyond the wait), so only the probe's
    // own ping can notice that the idle connection is dead.
    let config = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(1)
        .max_overflow(0)
        .validate_after_idle(Duration::from_secs(600))
        .build()
        .unwrap();
    let breaker = CircuitBreakerConfig { failure_threshold: 1, ..CircuitBreakerConfig::default() };
    let pool = Pool::new("memory:test", connector.clone(), config, Some(breaker)).unwrap();
    drop(pool.acquire().await.unwrap());
    pool.breaker().unwrap().record_failure(ErrorKind::ConnectionLost);
    assert_eq!(pool.breaker().unwrap().state(), BreakerState::Open);
    connector.fail_validation(true);
    advance(Duration::from_secs(61)).await;
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost);
    assert_eq!(pool.breaker().unwrap().state(), BreakerState::Open, "a failed probe re-opens");
    assert_eq!(pool.status().size, 0, "the connection that failed the probe was closed");
}

#[tokio::test(start_paused = true)]
async fn read_only_is_set_at_the_database_only_when_the_mode_changes() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    let conn = pool.acquire_for(ConnectionMode::ReadWrite).await.unwrap();
    assert!(!conn.is_read_only());
    drop(conn);
    assert_eq!(
        connector.read_only_changes(),
        1,
        "a new connection's setting is unknown, so it is set"
    );
    for _ in 0..5 {
        assert!(!pool.acquire_for(ConnectionMode::Batch).await.unwrap().is_read_only());
    }
    assert_eq!(connector.read_only_changes(), 1, "same mode, no round trip");
    assert!(pool.acquire_for(ConnectionMode::ReadOnly).await.unwrap().is_read_only());
    assert!(pool.acquire_for(ConnectionMode::ReadOnly).await.unwrap().is_read_only());
    assert_eq!(connector.read_only_changes(), 2);
    assert!(!pool.acquire_for(ConnectionMode::Transactional).await.unwrap().is_read_only());
    assert_eq!(connector.read_only_changes(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_mode_change_is_redone_at_the_next_checkout() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    drop(pool.acquire_for(ConnectionMode::ReadWrite).await.unwrap());
    connector.set_latency(Duration::from_millis(100));
    assert!(
        timeout(Duration::from_millis(50), pool.acquire_for(ConnectionMode::ReadOnly))
            .await
            .is_err()
    );
    connector.set_latency(Duration::ZERO);
    let conn = pool.acquire_for(ConnectionMode::ReadWrite).await.unwrap();
    assert!(!conn.is_read_only());
    assert_eq!(connector.read_only_changes(), 3, "the unknown setting was set again");
}

#[tokio::test(start_paused = true)]
async fn close_drains_waits_for_holders_and_refuses_new_work() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(3, 0));
    pool.prefill().await.unwrap();
    let held = pool.acquire().await.unwrap();
    let holder = tokio::spawn(async move {
        sleep(Duration::from_millis(300)).await;
        drop(held);
    });
    pool.close(Duration::from_secs(1)).await.unwrap();
    holder.await.unwrap();
    assert_eq!(pool.status().size, 0);
    assert_eq!(connector.live(), 0);
    assert_eq!(pool.acquire().await.unwrap_err().kind(), ErrorKind::Closed);
    // Closing again is harmless.
    pool.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_reports_connections_still_out_at_the_deadline() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(2, 0));
    let held = pool.acquire().await.unwrap();
    let err = pool.close(Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("1 connection(s) still checked out"), "{err}");
    drop(held);
    assert_eq!(connector.live(), 0, "a late return is closed, not pooled");
}

#[tokio::test(start_paused = true)]
async fn pools_need_a_runtime_and_say_so() {
    let connector = MemoryConnector::new();
    let err =
        std::thread::spawn(move || Pool::new("x", connector, config(1, 0), None).unwrap_err())
            .join()
            .unwrap();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

/// Acquires `n` connections one after another and holds them.
async fn hold(pool: &Pool<MemoryConnector>, n: usize) -> Vec<PooledConnection<MemoryConnector>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(pool.acquire().await.unwrap());
    }
    held
}

fn guarded_pool(connector: &MemoryConnector) -> Pool<MemoryConnector> {
    Pool::new("memory:test", connector.clone(), config(1, 0), Some(CircuitBreakerConfig::default()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn only_checkouts_that_did_io_and_completed_statements_count_as_breaker_successes() {
    let connector = MemoryConnector::new();
    let pool = guarded_pool(&connector);
    drop(pool.acquire().await.unwrap()); // Opened: a connect, so a success.
    let breaker = pool.breaker().unwrap();
    for _ in 0..4 {
        breaker.record_failure(ErrorKind::ConnectFailed);
    }
    // An idle connection handed out at once, without a round trip, proves nothing.
    let mut connection = pool.acquire().await.unwrap();
    assert_eq!(breaker.snapshot().consecutive_failures, 4, "no I/O, no success");
    // A statement whose connection is lost under it counts as a failure: the fifth opens it.
    let _ = connection.statement_started();
    connection.mark_lost();
    drop(connection);
    assert_eq!(breaker.state(), BreakerState::Open);
    // While open, after the recovery timeout, a completed statement counts toward closing.
    advance(Duration::from_secs(2)).await;
    let mut probe = pool.acquire().await.unwrap();
    let _ = probe.statement_started();
    probe.query().await.unwrap();
    probe.statement_finished(true);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(connector.closed(), 1, "the lost connection was closed, not pooled");
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_statement_was_dropped_is_closed_not_reused() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, config(1, 0));
    let mut connection = pool.acquire().await.unwrap();
    let first = connection.id();
    connector.set_latency(Duration::from_secs(5));
    let _ = connection.statement_started();
    // The statement's future is dropped mid-flight (a caller's timeout, a cancelled task).
    let statement = timeout(Duration::from_millis(10), connection.query()).await;
    assert!(statement.is_err());
    drop(connection);
    connector.set_latency(Duration::ZERO);
    let next = pool.acquire().await.unwrap();
    assert_ne!(next.id(), first, "the interrupted connection was not handed out again");
    assert_eq!(pool.metrics().closed(CloseReason::Broken), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connect_in_flight_at_close_is_closed_never_handed_out() {
    let connector = MemoryConnector::new();
    connector.set_connect_delay(Duration::from_millis(500));
    let pool = pool(&connector, config(1, 0));
    let acquiring = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await }
    });
    advance(Duration::from_millis(100)).await;
    settle().await;
    let closing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.close(Duration::from_secs(5)).await }
    });
    advance(Duration::from_millis(600)).await;
    settle().await;
    let got = acquiring.await.unwrap();
    assert_eq!(got.unwrap_err().kind(), ErrorKind::Closed);
    closing.await.unwrap().unwrap();
    assert_eq!(pool.status().size, 0);
    assert_eq!(connector.live(), 0, "the late connection was closed");
}

#[tokio::test(start_paused = true)]
async fn long_holds_are_reported_with_where_they_were_acquired() {
    let connector = MemoryConnector::new();
    let config = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(2)
        .leak_detection_threshold(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    let pool = pool(&connector, config);
    let held = pool.acquire().await.unwrap();
    drop(pool.acquire().await.unwrap());
    assert!(pool.long_holds().is_empty());
    for _ in 0..6 {
        advance(Duration::from_millis(500)).await;
        settle().await;
    }
    let long = pool.long_holds();
    assert_eq!(long.len(), 1, "only the connection still out: {long:?}");
    assert!(long[0].held_for >= Duration::from_secs(3));
    assert!(long[0].acquired_at.contains("pool/tests.rs"), "{long:?}");
    assert_eq!(pool.long_holds_reported(), 1, "reported by the reaper, once");
    advance(Duration::from_secs(3)).await;
    settle().await;
    assert_eq!(pool.long_holds_reported(), 1, "not twice");
    drop(held);
    assert!(pool.long_holds().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lazy_pool_opens_nothing_up_front_and_keeps_nothing_idle() {
    let connector = MemoryConnector::new();
    connector.refuse_connections(true);
    let lazy = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(4)
        .min_idle(0)
        .overflow_idle_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let pool = pool(&connector, lazy);
    // No connect at start, so an unreachable server does not fail construction.
    assert_eq!(pool.prefill().await.unwrap(), 0);
    assert_eq!(connector.connect_attempts(), 0);
    connector.refuse_connections(false);
    let (a, b) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    drop((a, b));
    settle().await;
    assert_eq!(pool.status().size, 2, "opened on demand");
    // The reaper neither refills it nor keeps its idle connections past the idle timeout.
    advance(Duration::from_secs(45)).await;
    settle().await;
    assert_eq!(pool.status().size, 0, "idle connections closed");
    advance(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(connector.opened(), 2, "nothing refilled");
}

#[test]
fn min_idle_above_the_pool_size_is_refused_by_name() {
    let err = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(2)
        .min_idle(3)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("min_idle"), "{err}");
}

/// Every layer of a checkout moves its child's future whole, so its size is a copy paid
/// per checkout: it must stay small (the rare branches are boxed, the step cell wraps no
/// future). It was 5.6 KB before that, and 2.3 KB around deadpool's 1.2 KB future; around
/// the queue's (144 bytes) it is 640.
#[tokio::test]
async fn the_checkout_future_stays_small() {
    let pool = pool(&MemoryConnector::new(), config(2, 0));
    let ours = std::mem::size_of_val(&pool.acquire_for(ConnectionMode::ReadWrite));
    let queue = std::mem::size_of_val(&pool.inner.pool.get(true));
    assert!(queue <= 256, "the queue's checkout future is {queue} bytes");
    assert!(ours <= 1024, "the checkout future is {ours} bytes");
}

/// A pooled connection moves as one pointer whatever the driver's connection weighs (a
/// diesel-async or sqlx connection is hundreds of bytes): the idle queue, each checkout's
/// result and each guard pass the slot's box, not the connection. Copying it whole at
/// every layer was a third of a checkout's instructions.
#[test]
fn a_slot_moves_as_one_pointer() {
    type PoolSlot = super::queue::BoxedSlot<MemoryConnector>;
    assert_eq!(std::mem::size_of::<PoolSlot>(), std::mem::size_of::<usize>());
    // The guard is returned by value through every layer of a checkout: the lent slot (its
    // box and the queue's reference) and the checkout's instant, the rest of the
    // checkout's state being in the slot. Past 128 bytes each move is a `memcpy` call.
    let guard = std::mem::size_of::<PooledConnection<MemoryConnector>>();
    assert!(guard <= 40, "a guard is {guard} bytes");
}
