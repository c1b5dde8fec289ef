//! Resize and suspend on paused time with the in-memory connector: growing opens, shrinking closes idle connections first and never takes one in use, suspended checkouts wait for resume or their acquire timeout.

use std::time::Duration;

use tokio::time::{advance, timeout};

use super::testing::MemoryConnector;
use super::tests::settle;
use super::*;
use crate::error::ErrorKind;

fn pool(connector: &MemoryConnector, size: usize, overflow: usize) -> Pool<MemoryConnector> {
    super::tests::pool(connector, super::tests::config(size, overflow))
}

#[tokio::test(start_paused = true)]
async fn growing_opens_and_shrinking_closes_idle_connections_first() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, 2, 0);
    pool.prefill().await.unwrap();
    let held = pool.acquire().await.unwrap();
    pool.resize(5, 1).await.unwrap();
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.pool_size, status.max_size), (5, 1, 5, 6));
    assert_eq!(connector.opened(), 5);
    // Down to one: the four idle ones close at once, the one in use stays with its holder.
    pool.resize(1, 0).await.unwrap();
    let status = pool.status();
    assert_eq!((status.size, status.in_use, status.max_size), (1, 1, 1));
    assert_eq!(connector.opened(), 5, "shrinking opened nothing");
    drop(held);
    settle().await;
    assert_eq!(pool.status().size, 1);
    // The new maximum holds at once: the slots never opened under the old one were taken
    // back with it, so a second checkout gives up rather than opening one more.
    let a = pool.acquire().await.unwrap();
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted, "{err}");
    assert_eq!(connector.opened(), 5, "nothing opened beyond the new maximum");
    drop(a);
}

/// A shrink below the connections in use is owed until they come back (each closes as it
/// does), and a grow in the meantime pays what is owed before it frees a slot: the pool
/// never holds more than its maximum, and never opens a connection to get there.
#[tokio::test(start_paused = true)]
async fn a_shrink_owed_by_connections_in_use_is_paid_as_they_return() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, 3, 0);
    pool.prefill().await.unwrap();
    let (a, b, c) = (
        pool.acquire().await.unwrap(),
        pool.acquire().await.unwrap(),
        pool.acquire().await.unwrap(),
    );
    pool.resize(1, 0).await.unwrap();
    pool.resize(2, 0).await.unwrap();
    assert_eq!(pool.status().in_use, 3, "nothing taken from its holder");
    drop(a);
    settle().await;
    let status = pool.status();
    assert_eq!((status.size, status.idle), (2, 0), "the first back is closed: one over two");
    drop(b);
    settle().await;
    let status = pool.status();
    assert_eq!((status.size, status.idle), (2, 1), "the second back is kept");
    let b = pool.acquire().await.unwrap();
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted, "two out of two: {err}");
    drop((b, c));
    settle().await;
    assert_eq!(pool.status().idle, 2);
    assert_eq!(connector.opened(), 3, "no connection opened after the prefill");
}

#[tokio::test(start_paused = true)]
async fn connections_in_use_beyond_a_new_maximum_close_when_returned() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, 3, 0);
    pool.prefill().await.unwrap();
    let held: Vec<_> = [(); 3].iter().map(|()| pool.acquire()).collect::<Vec<_>>();
    let mut connections = Vec::new();
    for checkout in held {
        connections.push(checkout.await.unwrap());
    }
    pool.resize(1, 0).await.unwrap();
    assert_eq!(pool.status().in_use, 3, "nothing taken from its holder");
    connections.clear();
    settle().await;
    assert_eq!(pool.status().size, 1);
    assert!(pool.resize(0, 3).await.unwrap_err().to_string().contains("pool_size"));
}

#[tokio::test(start_paused = true)]
async fn suspended_checkouts_wait_for_resume_while_held_work_finishes() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, 2, 0);
    pool.prefill().await.unwrap();
    let held = pool.acquire().await.unwrap();
    pool.suspend();
    assert!(pool.is_suspended());
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire().await.map(drop).is_ok() }
    });
    let drained = tokio::spawn({
        let pool = pool.clone();
        async move { pool.drained(Duration::from_secs(5)).await }
    });
    advance(Duration::from_millis(500)).await;
    settle().await;
    assert!(!waiting.is_finished(), "a checkout went through a suspended pool");
    assert!(!drained.is_finished(), "drained with a connection still held");
    drop(held);
    advance(Duration::from_millis(20)).await;
    settle().await;
    assert!(timeout(Duration::from_secs(1), drained).await.unwrap().unwrap().is_ok());
    pool.resume();
    assert!(waiting.await.unwrap(), "the waiting checkout goes on after resume");
}

#[tokio::test(start_paused = true)]
async fn a_checkout_suspended_past_its_acquire_timeout_says_so() {
    let connector = MemoryConnector::new();
    let pool = pool(&connector, 1, 0);
    pool.prefill().await.unwrap();
    pool.suspend();
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted);
    let text = err.to_string();
    assert!(text.contains("suspended") && text.contains("resume"), "{text}");
    let held = pool.acquire_for(crate::mode::ConnectionMode::ReadWrite);
    pool.resume();
    assert!(held.await.is_ok());
    // A drain that times out names what is still out.
    pool.suspend();
    let _out = {
        pool.resume();
        let c = pool.acquire().await.unwrap();
        pool.suspend();
        c
    };
    let err = pool.drained(Duration::from_millis(100)).await.unwrap_err();
    assert!(err.to_string().contains("1 connection(s) were still checked out"), "{err}");
}

/// Checkouts cancelled at pseudo-random points (waiting for a slot, connecting, pinging an
/// idle connection, holding one) while the pool is resized up and down: once they settle,
/// the pool serves exactly its last maximum, no slot lost and none gained, and every
/// connection it opened is either pooled or closed.
#[tokio::test(start_paused = true)]
async fn random_cancellations_and_resizes_leave_the_slots_whole() {
    let connector = MemoryConnector::new();
    connector.set_connect_delay(Duration::from_millis(30));
    let pool = pool(&connector, 4, 0);
    let tasks: Vec<_> = (0..24_u64)
        .map(|task| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut seed = task.wrapping_mul(7919).wrapping_add(1);
                for _ in 0..40 {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let cancel_after = Duration::from_millis((seed >> 33) % 80);
                    let hold_for = Duration::from_millis((seed >> 45) % 20);
                    if let Ok(Ok(connection)) = timeout(cancel_after, pool.acquire()).await {
                        tokio::time::sleep(hold_for).await;
                        drop(connection);
                    }
                }
            })
        })
        .collect();
    for size in [2, 6, 1, 5, 3] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        pool.resize(size, 0).await.unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    settle().await;
    let status = pool.status();
    assert_eq!((status.in_use, status.waiting), (0, 0), "{status:?}");
    assert!(status.size <= 3, "{status:?}");
    assert_eq!(connector.live(), status.size as u64, "every connection pooled or closed");
    let held = [pool.acquire().await, pool.acquire().await, pool.acquire().await];
    assert!(held.iter().all(Result::is_ok), "the three slots of the last maximum");
    let err = pool.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted, "and no fourth: {err}");
    drop(held);
    settle().await;
    assert_eq!(pool.status().idle, 3);
}
