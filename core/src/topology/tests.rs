//! Routing, fallback, health caching and drain of a topology of in-memory endpoints.

use std::collections::HashMap;

use super::*;
use crate::error::ErrorKind;
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
    // After five failed connects the replica's breaker is open and reads skip it at once.
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
