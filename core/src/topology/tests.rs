//! Routing, fallback, health caching and drain of a topology of in-memory endpoints.

use std::collections::HashMap;

use super::*;
use crate::connector::ReplicationStatus;
use crate::error::ErrorKind;
use crate::health::EndpointState;
use crate::mode::ManagerMode;
use crate::pool::testing::MemoryConnector;

/// A topology of a primary and `replicas` replicas, each host its own memory connector.
async fn topology(
    replicas: usize,
) -> (Result<Topology<MemoryConnector>>, HashMap<String, MemoryConnector>) {
    let hosts: Vec<String> = std::iter::once("primary".to_owned())
        .chain((1..=replicas).map(|i| format!("replica{i}")))
        .collect();
    let connectors: HashMap<String, MemoryConnector> =
        hosts.iter().map(|h| (h.clone(), MemoryConnector::new())).collect();
    let pool = PoolConfiguration::builder(ManagerMode::HighAvailability)
        .pool_size(2)
        .max_overflow(1)
        .build()
        .unwrap();
    let config = ManagerConfig::builder(ManagerMode::HighAvailability)
        .primary("postgres://app@primary/app")
        .replicas(hosts[1..].iter().map(|h| format!("postgres://app@{h}/app")))
        .pool(pool)
        .build()
        .unwrap();
    let lookup = connectors.clone();
    let topology =
        Topology::connect(config, move |url, _| Ok(lookup[url.host().unwrap()].clone())).await;
    (topology, connectors)
}

#[tokio::test(start_paused = true)]
async fn writes_go_to_the_primary_and_reads_spread_over_the_replicas() {
    let (topology, c) = topology(2).await;
    let topology = topology.unwrap();
    for mode in [ConnectionMode::ReadWrite, ConnectionMode::Batch, ConnectionMode::Transactional] {
        let conn = topology.acquire(mode).await.unwrap();
        assert!(!conn.is_read_only(), "{mode}");
    }
    assert_eq!(c["primary"].read_only_changes(), 1, "only the primary served writes");
    for _ in 0..4 {
        assert!(topology.acquire(ConnectionMode::ReadOnly).await.unwrap().is_read_only());
    }
    assert_eq!(c["replica1"].read_only_changes(), 1);
    assert_eq!(c["replica2"].read_only_changes(), 1);
    assert_eq!(c["primary"].read_only_changes(), 1, "no read reached the primary");
}

#[tokio::test(start_paused = true)]
async fn a_dead_replica_costs_latency_not_an_error() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["replica1"].refuse_connections(true);
    c["replica1"].break_existing_connections();
    for _ in 0..10 {
        let conn = topology.acquire(ConnectionMode::ReadOnly).await.unwrap();
        assert!(conn.is_read_only(), "the fallback to the primary is read-only too");
    }
    assert!(c["primary"].read_only_changes() >= 1);
    // The first failed read marked the replica down: reads skip it without a connect.
    let attempts = c["replica1"].connect_attempts();
    drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    assert_eq!(c["replica1"].connect_attempts(), attempts);
    let report = topology.health_check().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert!(topology.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_primary_fails_construction_an_unreachable_replica_does_not() {
    let (topology, c) = topology(0).await;
    drop(topology);
    drop(c);
    // Build again with the primary refusing from the start.
    let connector = MemoryConnector::new();
    connector.refuse_connections(true);
    let config = ManagerConfig::builder(ManagerMode::Admin)
        .primary("postgres://app@primary/app")
        .build()
        .unwrap();
    let err = Topology::connect(config, |_, _| Ok(connector.clone())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectFailed);

    let primary = MemoryConnector::new();
    let replica = MemoryConnector::new();
    replica.refuse_connections(true);
    let config = ManagerConfig::builder(ManagerMode::Admin)
        .primary("postgres://app@primary/app")
        .replica("postgres://app@replica/app")
        .build()
        .unwrap();
    let topology = Topology::connect(config, |url, _| {
        Ok(if url.host() == Some("primary") { primary.clone() } else { replica.clone() })
    })
    .await
    .unwrap();
    assert!(topology.acquire(ConnectionMode::ReadOnly).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn health_is_cached_and_close_refuses_new_work() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    assert_eq!(topology.health_check().await.status, HealthStatus::Healthy);
    let info = topology.info("memory");
    assert_eq!(info.endpoints.len(), 2);
    assert_eq!(info.primary().unwrap().status.size, 2);
    assert_eq!(info.health, Some(HealthStatus::Healthy));
    c["primary"].refuse_connections(true);
    c["primary"].break_existing_connections();
    assert_eq!(topology.health_check().await.status, HealthStatus::Unhealthy);
    assert!(!topology.is_healthy());
    topology.close(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        topology.acquire(ConnectionMode::ReadWrite).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(c["replica1"].live(), 0);
}

fn status(in_recovery: bool, lag_ms: u64) -> Option<ReplicationStatus> {
    Some(ReplicationStatus {
        in_recovery,
        lag: Some(Duration::from_millis(lag_ms)),
        position: None,
    })
}

/// Which endpoint served a checkout: the connector whose read-only changes grew.
fn served_by(c: &HashMap<String, MemoryConnector>, before: &HashMap<String, u64>) -> Vec<String> {
    let mut hosts: Vec<String> = c
        .iter()
        .filter(|(h, conn)| conn.opened() + conn.read_only_changes() > before[*h])
        .map(|(h, _)| h.clone())
        .collect();
    hosts.sort();
    hosts
}

fn counts(c: &HashMap<String, MemoryConnector>) -> HashMap<String, u64> {
    c.iter().map(|(h, conn)| (h.clone(), conn.opened() + conn.read_only_changes())).collect()
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_dies_is_marked_down_at_once_and_let_back_after_two_good_probes() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["primary"].set_replication(status(false, 0));
    c["replica1"].set_replication(status(true, 0));
    c["replica1"].refuse_connections(true);
    c["replica1"].break_existing_connections();
    // The read that finds the replica dead is served by the primary, and the replica is
    // marked down by that read: the next reads do not try it at all.
    assert!(topology.acquire(ConnectionMode::ReadOnly).await.unwrap().is_read_only());
    let attempts = c["replica1"].connect_attempts();
    drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    assert_eq!(c["replica1"].connect_attempts(), attempts, "a down replica is skipped");
    let info = topology.info("memory");
    let replica = &info.endpoints[1];
    assert_eq!((replica.role, replica.state), (EndpointRole::Replica, EndpointState::Down));
    assert!(replica.state_reason.as_deref().unwrap().contains("refuse"), "{replica:?}");

    // Let the loop run its first round and the one the failed read woke it for (both
    // still fail), so that the probes below are the only good ones.
    tokio::time::sleep(Duration::from_millis(10)).await;
    // It comes back: two good probes in a row before reads return to it.
    c["replica1"].refuse_connections(false);
    topology.health_check().await;
    let replica = topology.info("memory").endpoints[1].clone();
    assert_eq!(replica.state, EndpointState::Down, "one probe is not enough");
    assert!(replica.state_reason.as_deref().unwrap().contains("1 of 2"), "{replica:?}");
    topology.health_check().await;
    let info = topology.info("memory");
    assert_eq!(info.endpoints[1].state, EndpointState::Healthy, "{:?}", info.endpoints[1]);
    assert_eq!(info.endpoints[1].bans, 1);
    let before = counts(&c);
    drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    assert_eq!(served_by(&c, &before), vec!["replica1".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_lagging_replica_is_skipped_for_reads_until_it_catches_up() {
    let (topology, c) = topology(2).await;
    let topology = topology.unwrap();
    c["primary"].set_replication(status(false, 0));
    c["replica1"].set_replication(status(true, 0));
    c["replica2"].set_replication(status(true, 45_000)); // over the 30 s default bound
    topology.health_check().await; // A first reading over the bound is not yet a ban.
    assert_eq!(topology.info("memory").endpoints[2].state, EndpointState::Healthy);
    let report = topology.health_check().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    let lagging = report.components.iter().find(|c| c.name.contains("replica2")).unwrap();
    assert_eq!(
        (lagging.state, lagging.lag),
        (EndpointState::Banned, Some(Duration::from_secs(45)))
    );
    assert!(lagging.message.as_deref().unwrap().contains("lag"), "{lagging:?}");
    for _ in 0..6 {
        let before = counts(&c);
        drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
        let served = served_by(&c, &before);
        assert!(!served.contains(&"replica2".to_owned()), "{served:?}");
    }
    c["replica2"].set_replication(status(true, 100));
    topology.health_check().await;
    assert_eq!(topology.health_check().await.status, HealthStatus::Healthy);
}

#[tokio::test(start_paused = true)]
async fn the_manager_follows_a_promotion_and_counts_the_failover() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["primary"].set_replication(status(false, 0));
    c["replica1"].set_replication(status(true, 0));
    assert_eq!(topology.health_check().await.status, HealthStatus::Healthy);
    // The primary dies; until a standby is promoted, writes keep failing on it.
    c["primary"].refuse_connections(true);
    c["primary"].break_existing_connections();
    assert_eq!(topology.health_check().await.status, HealthStatus::Unhealthy);
    assert!(topology.acquire(ConnectionMode::ReadWrite).await.is_err());
    assert_eq!(topology.failovers(), 0, "a dead primary alone is no failover");
    // The replica is promoted (by an operator or a tool, never by ucm): the health loop
    // notices within a recheck interval and writes go there.
    c["replica1"].set_replication(status(false, 0));
    tokio::time::sleep(RECHECK_INTERVAL + Duration::from_millis(10)).await;
    assert_eq!(topology.failovers(), 1);
    let connection = topology.acquire(ConnectionMode::ReadWrite).await.unwrap();
    assert!(!connection.is_read_only());
    drop(connection);
    let info = topology.info("memory");
    assert_eq!(info.failovers, 1);
    assert!(info.last_failover.is_some());
    let primary = info.primary().unwrap();
    assert!(primary.label.contains("replica1"), "{primary:?}");
    assert_eq!(primary.state, EndpointState::Healthy);
    // The old primary comes back as a primary: split brain, banned from reads.
    c["primary"].refuse_connections(false);
    let report = topology.health_check().await;
    let old = report.components.iter().find(|c| c.role == EndpointRole::Replica).unwrap();
    assert_eq!(old.state, EndpointState::Banned, "{old:?}");
    let before = counts(&c);
    drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    assert_eq!(served_by(&c, &before), vec!["replica1".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn modes_without_high_availability_never_move_the_primary() {
    let connectors: HashMap<&str, MemoryConnector> =
        [("primary", MemoryConnector::new()), ("replica", MemoryConnector::new())].into();
    let config = ManagerConfig::builder(ManagerMode::AsyncModern)
        .primary("postgres://app@primary/app")
        .replica("postgres://app@replica/app")
        .build()
        .unwrap();
    let lookup = connectors.clone();
    let topology = Topology::connect(config, move |url, _| Ok(lookup[url.host().unwrap()].clone()))
        .await
        .unwrap();
    connectors["replica"].set_replication(status(true, 0));
    topology.health_check().await;
    connectors["primary"].refuse_connections(true);
    connectors["primary"].break_existing_connections();
    connectors["replica"].set_replication(status(false, 0));
    topology.health_check().await;
    assert_eq!(topology.failovers(), 0);
    assert!(topology.primary().label().contains("primary"));
}

#[tokio::test(start_paused = true)]
async fn the_health_loop_stops_when_the_topology_is_dropped() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    // Without a replication role the probe pings: count the pings.
    let before = c["replica1"].validations();
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(c["replica1"].validations() >= before + 2, "the loop probed every 10 s");
    drop(topology);
    let seen = c["replica1"].validations();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(c["replica1"].validations(), seen, "no probe after the drop");
    assert_eq!(c["replica1"].live(), 0, "every connection closed with the pools");
}

#[tokio::test(start_paused = true)]
async fn close_drains_every_pool_at_once_against_one_deadline() {
    let (topology, _connectors) = topology(1).await;
    let topology = topology.unwrap();
    // One connection held on each endpoint past the deadline: with one deadline per pool,
    // drained one after the other, close would take twice the deadline.
    let held_primary = topology.acquire(ConnectionMode::ReadWrite).await.unwrap();
    let held_replica = topology.acquire(ConnectionMode::ReadOnly).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = topology.close(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2), "one deadline for the manager");
    drop((held_primary, held_replica));
}

/// A standby promoted while the primary still answers is a detached clone (split brain):
/// banned, and never a failover target afterwards, so a blip of the real primary leaves
/// the writes on it.
#[tokio::test(start_paused = true)]
async fn a_split_brain_clone_is_never_followed() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["primary"].set_replication(status(false, 0));
    c["replica1"].set_replication(status(true, 0));
    topology.health_check().await;
    c["replica1"].set_replication(status(false, 0)); // promoted while the primary answers
    topology.health_check().await;
    assert_eq!(topology.info("memory").endpoints[1].state, EndpointState::Banned);
    // One failed probe of the primary (a blip), the clone still claiming to be a primary.
    c["primary"].refuse_connections(true);
    c["primary"].break_existing_connections();
    topology.health_check().await;
    assert_eq!(topology.failovers(), 0, "the split-brain clone was followed");
    c["primary"].refuse_connections(false);
    topology.health_check().await;
    let connection = topology.acquire(ConnectionMode::ReadWrite).await.unwrap();
    assert!(!connection.is_read_only());
    drop(connection);
    let info = topology.info("memory");
    assert!(info.primary().unwrap().label.contains("primary"), "{info:?}");
    // Rebuilt as a standby, it is a candidate again.
    c["replica1"].set_replication(status(true, 0));
    topology.health_check().await;
    c["primary"].refuse_connections(true);
    c["primary"].break_existing_connections();
    c["replica1"].set_replication(status(false, 0));
    topology.health_check().await;
    assert_eq!(topology.failovers(), 1, "a standby promoted after the primary went is followed");
}

/// A caller's failed checkout on the primary wakes the health loop: the primary is seen
/// down at once, not at the next interval.
#[tokio::test(start_paused = true)]
async fn a_failed_write_checkout_wakes_the_health_loop() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["primary"].set_replication(status(false, 0));
    c["replica1"].set_replication(status(true, 0));
    // The loop's round at start, then a quiet spell: the next round is 10 s away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    topology.health_check().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c["primary"].refuse_connections(true);
    c["primary"].break_existing_connections();
    assert!(topology.acquire(ConnectionMode::ReadWrite).await.is_err());
    let probed = topology.info("memory").endpoints[0].last_probe;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let primary = &topology.info("memory").endpoints[0];
    assert_ne!(primary.last_probe, probed, "no probe round after the failed checkout");
    assert_eq!(primary.state, EndpointState::Down);
}

/// An open breaker moves to half-open after two good probes in a row, not one: a flapping
/// endpoint still meets the breaker's backoff.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_half_opens_after_two_good_probes() {
    use crate::circuit_breaker::BreakerState;
    let (topology, _c) = topology(1).await;
    let topology = topology.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // the loop's round at start
    let breaker = topology.shared.endpoints[1].pool.breaker().unwrap();
    for _ in 0..breaker.config().failure_threshold {
        breaker.record_failure(ErrorKind::ConnectFailed);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    // The earlier probes' streak does not count: the failures above are news to the
    // breaker only, so mark the endpoint down as a failed read would.
    topology.shared.endpoints[1].update(|r| r.fail("test".to_owned()));
    topology.health_check().await;
    assert_eq!(breaker.state(), BreakerState::Open, "one good probe is not a recovery");
    topology.health_check().await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
}

/// A saturated replica costs a read nothing: with every replica connection in use, the read
/// goes to the primary at once instead of waiting out the acquire timeout.
#[tokio::test(start_paused = true)]
async fn a_saturated_replica_passes_reads_to_the_primary_without_waiting() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    let max = topology.shared.endpoints[1].pool.status().max_size;
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    }
    assert_eq!(topology.shared.endpoints[1].pool.status().in_use, max, "the replica is full");
    let before = c["primary"].read_only_changes();
    let started = tokio::time::Instant::now();
    let read = topology.acquire(ConnectionMode::ReadOnly).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO, "the read waited for the replica");
    assert!(read.is_read_only());
    assert_eq!(c["primary"].read_only_changes(), before + 1, "the primary served it");
    assert_eq!(topology.info("memory").endpoints[1].state, EndpointState::Healthy);
    drop((held, read));
}

#[tokio::test(start_paused = true)]
async fn a_slow_replica_is_read_from_only_when_no_faster_endpoint_can_serve() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["replica1"].set_latency(Duration::from_millis(200));
    topology.health_check().await;
    let replica = &topology.info("memory").endpoints[1];
    assert_eq!(replica.state, EndpointState::Degraded, "{replica:?}");
    assert!(replica.state_reason.as_deref().unwrap_or_default().contains("slow"), "{replica:?}");
    let before = (c["primary"].read_only_changes(), c["replica1"].read_only_changes());
    drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    assert_eq!(c["primary"].read_only_changes(), before.0 + 1, "the primary served the read");
    assert_eq!(c["replica1"].read_only_changes(), before.1, "the slow replica did not");
    // With the primary gone, the slow replica serves rather than nobody.
    c["primary"].refuse_connections(true);
    c["primary"].break_existing_connections();
    let read = topology.acquire(ConnectionMode::ReadOnly).await.unwrap();
    assert_eq!(c["replica1"].read_only_changes(), before.1 + 1, "the slow replica served it");
    drop(read);
    c["primary"].refuse_connections(false);
    // Fast again: the smoothed latency falls back under the bound within a few probes.
    c["replica1"].set_latency(Duration::ZERO);
    let mut probes = 0;
    while topology.info("memory").endpoints[1].state != EndpointState::Healthy {
        topology.health_check().await;
        probes += 1;
        assert!(probes <= 4, "still slow after {probes} fast probes");
    }
    let before = c["replica1"].read_only_changes();
    drop(topology.acquire(ConnectionMode::ReadOnly).await.unwrap());
    assert_eq!(c["replica1"].read_only_changes(), before + 1, "reads are back on the replica");
}

#[tokio::test(start_paused = true)]
async fn statements_on_an_endpoint_that_stopped_answering_are_abandoned_after_two_probes() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    let mut held = topology.acquire(ConnectionMode::ReadOnly).await.unwrap();
    // The replica freezes: nothing it is asked is answered, new connections included.
    c["replica1"].set_latency(Duration::from_secs(3600));
    c["replica1"].set_connect_delay(Duration::from_secs(3600));
    let started = tokio::time::Instant::now();
    let expiry = held.statement_started();
    let statement = expiry.bound(held.query());
    let probes = async {
        topology.health_check().await;
        assert_eq!(topology.info("memory").endpoints[1].state, EndpointState::Down);
        topology.health_check().await;
    };
    let (outcome, ()) = tokio::join!(statement, probes);
    assert!(outcome.is_none(), "the statement was answered: {outcome:?}");
    assert!(held.statement_abandoned(), "it ended by abandonment, not by its deadline");
    let deadline = crate::health::probe_deadline(&topology.shared.endpoints[1].pool);
    assert!(started.elapsed() <= 2 * deadline, "abandoned after {:?}", started.elapsed());
    // The primary, which answers, keeps its statements.
    let mut write = topology.acquire(ConnectionMode::ReadWrite).await.unwrap();
    let expiry = write.statement_started();
    assert_eq!(expiry.bound(write.query()).await.map(|r| r.is_ok()), Some(true));
    assert!(!write.statement_abandoned());
}

#[tokio::test(start_paused = true)]
async fn a_health_check_joins_the_round_in_flight_instead_of_queueing_behind_it() {
    let (topology, c) = topology(1).await;
    let topology = topology.unwrap();
    c["replica1"].set_latency(Duration::from_secs(3600));
    c["replica1"].set_connect_delay(Duration::from_secs(3600));
    let deadline = crate::health::probe_deadline(&topology.shared.endpoints[1].pool);
    let first = async {
        let started = tokio::time::Instant::now();
        let report = topology.health_check().await;
        (started.elapsed(), report)
    };
    let second = async {
        tokio::time::sleep(deadline / 2).await;
        let started = tokio::time::Instant::now();
        let report = topology.health_check().await;
        (started.elapsed(), report)
    };
    let ((first_took, first), (second_took, second)) = tokio::join!(first, second);
    assert_eq!(first_took, deadline, "one probe deadline for the blackholed replica");
    assert_eq!(second_took, deadline / 2, "the second call joined the first's round");
    assert_eq!(first, second);
}
