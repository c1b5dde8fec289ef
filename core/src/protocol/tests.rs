//! The protocol's shared transaction and retry logic, run through a test manager over the in-memory pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::ErrorKind;
use crate::config::PoolConfiguration;
use crate::health::{EndpointRole, HealthReport, probe};
use crate::info::{ConnectionInfo, EndpointInfo};
use crate::mode::ManagerMode;
use crate::pool::testing::MemoryConnector;
use crate::pool::{Pool, PooledConnection};

/// A manager whose connections log every statement; a statement `FAIL <kind>` fails with
/// that error kind, and `FAIL_COMMIT <kind>` makes the next commit fail with it.
struct TestManager {
    pool: Pool<MemoryConnector>,
    policy: RetryPolicy,
    log: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct TestConnection {
    inner: PooledConnection<MemoryConnector>,
    log: Arc<Mutex<Vec<String>>>,
    fail_commit: Option<ErrorKind>,
}

fn kind_named(name: &str) -> ErrorKind {
    ErrorKind::ALL.into_iter().find(|k| k.as_str() == name).unwrap()
}

impl TestConnection {
    fn record(&self, sql: &str) {
        self.log.lock().unwrap().push(sql.to_owned());
    }
}

#[async_trait]
impl SqlExecutor for TestConnection {
    async fn execute(&mut self, sql: &str, _params: &[Value]) -> Result<u64> {
        self.record(sql);
        self.inner.query().await?;
        if let Some(kind) = sql.strip_prefix("FAIL_COMMIT ") {
            self.fail_commit = Some(kind_named(kind));
        } else if let Some(kind) = sql.strip_prefix("FAIL ") {
            return Err(Error::database(kind_named(kind), "memory", None, "scripted failure"));
        }
        Ok(1)
    }

    async fn fetch_all(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.execute(sql, params).await?;
        let columns: Arc<[String]> = Arc::from(vec!["connection".to_owned()]);
        Ok(vec![Row::new(columns, vec![Value::Int(self.inner.id() as i64)])?])
    }
}

#[async_trait]
impl TransactionalConnection for TestConnection {
    async fn begin(&mut self, _mode: ConnectionMode) -> Result<()> {
        self.inner.mark_transaction_open();
        self.record("BEGIN");
        self.inner.begin().await
    }
    async fn commit(&mut self) -> Result<()> {
        self.record("COMMIT");
        if let Some(kind) = self.fail_commit.take() {
            return Err(Error::database(kind, "memory", None, "scripted commit failure"));
        }
        self.inner.commit().await?;
        self.inner.mark_transaction_closed();
        Ok(())
    }
    async fn rollback(&mut self) -> Result<()> {
        self.record("ROLLBACK");
        self.inner.mark_transaction_closed();
        Ok(())
    }
}

#[async_trait]
impl ConnectionManagerProtocol for TestManager {
    type Connection = TestConnection;

    async fn get_connection(&self, _mode: ConnectionMode) -> Result<TestConnection> {
        Ok(TestConnection {
            inner: self.pool.acquire().await?,
            log: Arc::clone(&self.log),
            fail_commit: None,
        })
    }
    async fn health_check(&self) -> HealthReport {
        HealthReport::from_components(vec![probe(&self.pool, EndpointRole::Primary).await])
    }
    fn connection_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            mode: ManagerMode::Admin,
            backend: "memory",
            pool: self.pool.config().clone(),
            endpoints: vec![EndpointInfo::from_pool(&self.pool, EndpointRole::Primary)],
            health: None,
            failovers: 0,
            last_failover: None,
            sla: crate::SlaSummary {
                target: self.pool.config().sla_target(),
                operations: 0,
                within_target: 0,
            },
        }
    }
    fn is_healthy(&self) -> bool {
        !self.pool.is_closed()
    }
    async fn close(&self) -> Result<()> {
        self.pool.close(Duration::from_secs(1)).await
    }
    fn retry_policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

fn manager() -> (TestManager, MemoryConnector) {
    let connector = MemoryConnector::new();
    let config = PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(2)
        .max_overflow(0)
        .build()
        .unwrap();
    let pool = Pool::new("memory:protocol", connector.clone(), config, None).unwrap();
    let manager = TestManager { pool, policy: RetryPolicy::default(), log: Arc::default() };
    (manager, connector)
}

fn log(manager: &TestManager) -> Vec<String> {
    std::mem::take(&mut *manager.log.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_transaction_commits_on_ok_and_returns_the_value() {
    let (m, _) = manager();
    let value = m
        .transaction(ConnectionMode::Transactional, |tx| {
            Box::pin(async move {
                tx.execute("INSERT 1", &[]).await?;
                Ok(42)
            })
        })
        .await
        .unwrap();
    assert_eq!(value, 42);
    assert_eq!(log(&m), ["BEGIN", "INSERT 1", "COMMIT"]);
}

#[tokio::test(start_paused = true)]
async fn an_error_rolls_back_and_is_not_retried_unless_transient() {
    let (m, _) = manager();
    let mut runs = 0;
    let err = m
        .transaction(ConnectionMode::Transactional, |tx| {
            runs += 1;
            Box::pin(async move { tx.execute("FAIL constraint", &[]).await.map(|_| ()) })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint);
    assert_eq!(runs, 1);
    assert_eq!(log(&m), ["BEGIN", "FAIL constraint", "ROLLBACK"]);
}

#[tokio::test(start_paused = true)]
async fn serialization_failures_rerun_the_whole_unit_from_the_start() {
    let (m, _) = manager();
    let mut runs = 0;
    let value = m
        .transaction(ConnectionMode::Transactional, |tx| {
            runs += 1;
            let fail = runs < 3;
            Box::pin(async move {
                tx.execute("UPDATE", &[]).await?;
                if fail {
                    tx.execute("FAIL serialization_failure", &[]).await?;
                }
                Ok(runs)
            })
        })
        .await
        .unwrap();
    assert_eq!(value, 3);
    let statements = log(&m);
    assert_eq!(statements.iter().filter(|s| *s == "BEGIN").count(), 3);
    assert_eq!(statements.iter().filter(|s| *s == "ROLLBACK").count(), 2);
    assert_eq!(statements.last().map(String::as_str), Some("COMMIT"));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_max_attempts_with_the_last_error() {
    let (m, _) = manager();
    let mut runs = 0;
    let err = m
        .transaction(ConnectionMode::Transactional, |tx| {
            runs += 1;
            Box::pin(async move { tx.execute("FAIL deadlock", &[]).await.map(|_| ()) })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Deadlock);
    assert_eq!(runs, m.policy.max_attempts);
}

#[tokio::test(start_paused = true)]
async fn an_ambiguous_commit_is_rerun_only_when_idempotent() {
    let (m, _) = manager();
    let mut runs = 0;
    let err = m
        .transaction(ConnectionMode::Transactional, |tx| {
            runs += 1;
            Box::pin(
                async move { tx.execute("FAIL_COMMIT ambiguous_commit", &[]).await.map(|_| ()) },
            )
        })
        .await
        .unwrap_err();
    assert_eq!((err.kind(), runs), (ErrorKind::AmbiguousCommit, 1));

    let mut runs = 0;
    let options = TransactionOptions { idempotent: true };
    m.transaction_with(ConnectionMode::Transactional, options, |tx| {
        runs += 1;
        let sql = if runs == 1 { "FAIL_COMMIT ambiguous_commit" } else { "UPSERT" };
        Box::pin(async move { tx.execute(sql, &[]).await.map(|_| ()) })
    })
    .await
    .unwrap();
    assert_eq!(runs, 2);
}

#[tokio::test(start_paused = true)]
async fn a_panic_inside_the_work_rolls_back_before_reuse() {
    let (m, connector) = manager();
    let m = Arc::new(m);
    let task = {
        let m = Arc::clone(&m);
        tokio::spawn(async move {
            m.transaction(ConnectionMode::Transactional, |tx| {
                Box::pin(async move {
                    tx.execute("INSERT", &[]).await?;
                    panic!("application bug");
                    #[allow(unreachable_code)]
                    Ok(())
                })
            })
            .await
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    tokio::task::yield_now().await;
    assert_eq!(connector.resets(), 1, "the open transaction was rolled back by the pool");
    let status = m.pool.status();
    assert_eq!((status.in_use, status.idle), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_transaction_future_rolls_back_before_reuse() {
    let (m, connector) = manager();
    connector.set_latency(Duration::from_millis(100));
    let unit = m.transaction(ConnectionMode::Transactional, |tx| {
        Box::pin(async move { tx.execute("SLOW", &[]).await.map(|_| ()) })
    });
    assert!(tokio::time::timeout(Duration::from_millis(150), unit).await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connector.resets(), 1);
    assert_eq!(m.pool.status().in_use, 0);
}

#[tokio::test(start_paused = true)]
async fn single_statements_retry_reads_but_never_writes_after_a_lost_connection() {
    let (m, _) = manager();
    let err = m.execute(ConnectionMode::ReadWrite, "FAIL connection_lost", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost);
    assert_eq!(log(&m).len(), 1, "a write is not repeated");
    let err = m.execute(ConnectionMode::ReadOnly, "FAIL connection_lost", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost);
    assert_eq!(log(&m).len(), m.policy.max_attempts as usize, "a read is retried");
    let rows = m.fetch_all(ConnectionMode::ReadOnly, "SELECT", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn connect_failures_are_retried_then_reported() {
    let (m, connector) = manager();
    connector.refuse_connections(true);
    let err = m.fetch_all(ConnectionMode::ReadOnly, "SELECT", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectFailed);
    assert_eq!(connector.connect_attempts(), u64::from(m.policy.max_attempts));
}

#[tokio::test(start_paused = true)]
async fn the_protocol_is_object_safe() {
    let (m, _) = manager();
    let shared: Arc<dyn ConnectionManagerProtocol<Connection = TestConnection>> = Arc::new(m);
    assert_eq!(shared.execute(ConnectionMode::ReadWrite, "INSERT", &[]).await.unwrap(), 1);
    assert!(shared.health_check().await.status.is_serving());
    assert_eq!(shared.connection_info().primary().unwrap().status.size, 1);
    let value: i64 = shared
        .transaction(ConnectionMode::Transactional, |tx| {
            Box::pin(async move { tx.execute("X", &[]).await.map(|n| n as i64) })
        })
        .await
        .unwrap();
    assert_eq!(value, 1);
    shared.close().await.unwrap();
    assert_eq!(
        shared.execute(ConnectionMode::ReadWrite, "X", &[]).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn one_shot_statements_are_resent_only_when_read_only() {
    let (m, connector) = manager();
    // Outside ReadOnly, a statement whose connection was lost is not sent again: it may
    // have been applied (the backends report such a loss as AmbiguousCommit).
    for mode in [ConnectionMode::ReadWrite, ConnectionMode::Batch, ConnectionMode::Transactional] {
        let err = m.fetch_all(mode, "FAIL connection_lost", &[]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionLost);
        assert_eq!(log(&m), ["FAIL connection_lost"], "fetch_all in {mode:?} sent it once");
        let err = m.execute(mode, "FAIL connection_lost", &[]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionLost);
        assert_eq!(log(&m), ["FAIL connection_lost"], "execute in {mode:?} sent it once");
    }
    // A read-only session cannot have applied anything: the whole read is retried.
    let err = m.fetch_all(ConnectionMode::ReadOnly, "FAIL connection_lost", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionLost);
    assert_eq!(log(&m).len(), 3, "retried up to max_attempts");
    // Getting the connection is retried in every mode: nothing was sent yet.
    connector.refuse_connections(true);
    connector.break_existing_connections();
    let err = m.execute(ConnectionMode::ReadWrite, "UPDATE", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectFailed);
    assert!(connector.connect_attempts() >= 3, "the acquire was retried");
    assert!(log(&m).is_empty());
}
