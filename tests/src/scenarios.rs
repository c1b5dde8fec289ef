//! The conformance scenarios, written once against `ConnectionManagerProtocol` and run for every backend and database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime};
use tokio::sync::Notify;
use ucm_kernel::{
    ConnectFailure, ConnectionManagerProtocol, ConnectionMode, DatabaseKind, Error, ErrorKind,
    HealthStatus, ManagerConfig, ManagerMode, PoolConfiguration, ProtocolExt, Result, SqlExecutor,
    TransactionalConnection, Value,
};

use crate::{Backend, Outcome, Target, unique_table};

/// A small pool with its own application name, so tests can find their own sessions.
fn small_pool(size: usize, app: &str) -> PoolConfiguration {
    PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(size)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(2))
        .application_name(app)
        .build()
        .unwrap()
}

async fn connect<B: Backend>(target: &Target, size: usize, app: &str) -> B::Manager {
    let config = target.config(ManagerMode::AsyncModern, small_pool(size, app));
    B::connect(config)
        .await
        .unwrap_or_else(|e| panic!("{} could not connect to {}: {e}", B::NAME, target.kind))
}

async fn create_counter_table<M: ConnectionManagerProtocol>(m: &M, table: &str) -> Outcome {
    let sql = format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)");
    m.execute(ConnectionMode::ReadWrite, &sql, &[]).await?;
    Ok(())
}

async fn drop_table<M: ConnectionManagerProtocol>(m: &M, table: &str) -> Outcome {
    m.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE IF EXISTS {table}"), &[]).await?;
    Ok(())
}

async fn count<M: ConnectionManagerProtocol>(m: &M, table: &str) -> Result<i64> {
    let rows = m
        .fetch_all(ConnectionMode::ReadOnly, &format!("SELECT COUNT(*) AS c FROM {table}"), &[])
        .await?;
    rows[0].try_get("c")
}

/// Every protocol method, end to end.
pub async fn protocol_methods<B: Backend>(t: &Target) -> Outcome {
    let m = connect::<B>(t, 2, "ucm_t_protocol").await;
    let table = unique_table("proto");
    create_counter_table(&m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n, note) VALUES ({})", t.placeholders(3));
    assert_eq!(
        m.execute(ConnectionMode::ReadWrite, &insert, &[1.into(), 10.into(), "one".into()]).await?,
        1
    );
    assert_eq!(
        m.execute(ConnectionMode::Batch, &insert, &[2.into(), 20.into(), Value::Null]).await?,
        1
    );
    let rows = m
        .fetch_all(
            ConnectionMode::ReadOnly,
            &format!("SELECT id, n, note FROM {table} ORDER BY id"),
            &[],
        )
        .await?;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].try_get::<i64>("n")?, 10);
    assert_eq!(rows[0].try_get::<String>("note")?, "one");
    assert_eq!(rows[1].try_get::<Option<String>>("note")?, None);
    let select = format!("SELECT n FROM {table} ORDER BY id");
    let update = format!("UPDATE {table} SET n = n + 1");
    let total: i64 = m
        .transaction(ConnectionMode::Transactional, |tx| {
            let (update, select) = (update.clone(), select.clone());
            Box::pin(async move {
                assert_eq!(tx.execute(&update, &[]).await?, 2);
                let rows = tx.fetch_all(&select, &[]).await?;
                rows.iter().map(|r| r.try_get::<i64>("n")).sum()
            })
        })
        .await?;
    assert_eq!(total, 32);
    let report = m.health_check().await;
    assert_eq!(report.status, HealthStatus::Healthy, "{report:?}");
    assert_eq!(report.components.len(), 1);
    assert!(report.components[0].latency.is_some());
    assert!(m.is_healthy());
    let info = m.connection_info();
    let primary = info.primary().unwrap();
    assert_eq!(primary.status.pool_size, 2);
    assert!(primary.metrics.acquires >= 5, "{:?}", primary.metrics);
    assert!(primary.metrics.connections_created >= 1);
    assert!(
        primary.metrics.operations.count >= 5,
        "statements are timed: {:?}",
        primary.metrics.operations
    );
    drop_table(&m, &table).await?;
    m.close().await?;
    assert!(!m.is_healthy());
    let err = m.execute(ConnectionMode::ReadWrite, "SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    Ok(())
}

/// Every neutral value type goes in as a parameter and comes back as the same value (or,
/// where the database has no such type, as its documented stand-in).
pub async fn values_round_trip<B: Backend>(t: &Target) -> Outcome {
    let m = connect::<B>(t, 1, "ucm_t_values").await;
    let table = unique_table("values");
    let ddl = match t.kind {
        DatabaseKind::Postgres => {
            "v_bool BOOLEAN, v_small SMALLINT, v_int INTEGER, v_big BIGINT, v_float DOUBLE PRECISION, v_text TEXT, v_bytes BYTEA, v_ts TIMESTAMP, v_tz TIMESTAMPTZ, v_date DATE, v_time TIME, v_uuid UUID, v_json JSONB, v_money NUMERIC(14,4)"
        }
        DatabaseKind::MySql => {
            "v_bool BOOLEAN, v_small SMALLINT, v_int INT, v_big BIGINT, v_float DOUBLE, v_text TEXT, v_bytes BLOB, v_ts DATETIME(6), v_tz TIMESTAMP(6) NULL, v_date DATE, v_time TIME(6), v_uuid BINARY(16), v_json JSON, v_money DECIMAL(14,4)"
        }
        DatabaseKind::Sqlite => {
            "v_bool BOOLEAN, v_small INTEGER, v_int INTEGER, v_big INTEGER, v_float REAL, v_text TEXT, v_bytes BLOB, v_ts DATETIME, v_tz DATETIME, v_date DATE, v_time TIME, v_uuid BLOB, v_json TEXT, v_money NUMERIC"
        }
    };
    m.execute(
        ConnectionMode::ReadWrite,
        &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, {ddl})"),
        &[],
    )
    .await?;
    let date = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let time = NaiveTime::from_hms_micro_opt(7, 30, 1, 123_456).unwrap();
    let ts = date.and_time(time);
    let uuid = uuid::Uuid::from_u128(0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8);
    let json = serde_json::json!({"k": [1, 2], "s": "é"});
    let values = vec![
        Value::Int(1),
        Value::Bool(true),
        Value::Int(-7),
        Value::Int(2_000_000_000),
        Value::Int(9_000_000_000_000),
        Value::Float(2.5),
        Value::Text("héllo, 'quoted' \"text\"".into()),
        Value::Bytes(vec![0, 1, 127, 255]),
        Value::Timestamp(ts),
        Value::TimestampTz(ts.and_utc()),
        Value::Date(date),
        Value::Time(time),
        Value::Uuid(uuid),
        Value::Json(json.clone()),
        // Exact decimals go in as text (cast where the server is strict) and come back as
        // their exact text.
        Value::Text("12345678.9012".into()),
    ];
    let columns = [
        "id", "v_bool", "v_small", "v_int", "v_big", "v_float", "v_text", "v_bytes", "v_ts",
        "v_tz", "v_date", "v_time", "v_uuid", "v_json", "v_money",
    ];
    let mut placeholders = t.placeholders(values.len());
    if t.kind == DatabaseKind::Postgres {
        // PostgreSQL does not cast a text parameter to NUMERIC on its own.
        let last = format!("${}", values.len());
        placeholders = placeholders.replace(&last, &format!("{last}::numeric"));
    }
    let list = columns.join(", ");
    let insert = format!("INSERT INTO {table} ({list}) VALUES ({placeholders})");
    m.execute(ConnectionMode::ReadWrite, &insert, &values).await?;
    // A row of NULLs: an untyped NULL must be accepted by every column type.
    let nulls: Vec<Value> =
        std::iter::once(Value::Int(2)).chain((1..values.len()).map(|_| Value::Null)).collect();
    m.execute(ConnectionMode::ReadWrite, &insert, &nulls).await?;

    let rows = m
        .fetch_all(
            ConnectionMode::ReadOnly,
            &format!("SELECT {list} FROM {table} ORDER BY id"),
            &[],
        )
        .await?;
    assert_eq!(rows[0].columns(), columns, "columns come back in the order selected");
    // What each column should give back, by name.
    let mut expected: Vec<(&str, Value)> = columns.into_iter().zip(values).collect();
    let mut expect = |column: &str, value: Value| {
        let slot = expected.iter_mut().find(|(c, _)| *c == column);
        slot.unwrap_or_else(|| panic!("no column {column}")).1 = value;
    };
    // Where a database lacks a type, the stand-in it stores is what comes back; JSON
    // stored as text (SQLite) or binary-collated text (MariaDB) still reads as the document.
    assert_eq!(rows[0].try_get::<serde_json::Value>("v_json")?, json, "{}", t.kind);
    let as_stored = |column: &str| rows[0].get(column).cloned().unwrap_or(Value::Null);
    match t.kind {
        DatabaseKind::MySql => {
            expect("v_uuid", Value::Bytes(uuid.as_bytes().to_vec()));
            expect("v_json", as_stored("v_json"));
        }
        DatabaseKind::Sqlite => {
            expect("v_tz", Value::Timestamp(ts));
            expect("v_uuid", Value::Bytes(uuid.as_bytes().to_vec()));
            expect("v_json", as_stored("v_json"));
            // SQLite has no exact decimal: NUMERIC affinity stores the number as REAL.
            expect("v_money", Value::Float(12_345_678.901_2));
        }
        DatabaseKind::Postgres => {}
    }
    if !<B::Core as ucm_kernel::backend::Backend>::reads_declared_types(t.kind) {
        // The backend reads each value by the type the driver reports for it, not the
        // column's declared one: MySQL's BOOLEAN is the TINYINT it is, and SQLite values
        // come by storage class.
        expect("v_bool", Value::Int(1));
        if t.kind == DatabaseKind::Sqlite {
            let timestamp = Value::Text(ts.format("%Y-%m-%d %H:%M:%S%.f").to_string());
            expect("v_ts", timestamp.clone());
            expect("v_tz", timestamp);
            expect("v_date", Value::Text(date.to_string()));
            expect("v_time", Value::Text(time.format("%H:%M:%S%.f").to_string()));
        }
    }
    for (column, value) in &expected {
        assert_eq!(rows[0].get(column), Some(value), "{} column {column} ({})", t.kind, B::NAME);
    }
    // Whatever a database stores them as, typed reads give the values written.
    let r = &rows[0];
    assert!(r.try_get::<bool>("v_bool")?);
    assert_eq!(r.try_get::<chrono::NaiveDateTime>("v_ts")?, ts);
    assert_eq!(r.try_get::<chrono::DateTime<chrono::Utc>>("v_tz")?, ts.and_utc());
    assert_eq!(r.try_get::<NaiveDate>("v_date")?, date);
    assert_eq!(r.try_get::<NaiveTime>("v_time")?, time);
    assert_eq!(r.try_get::<uuid::Uuid>("v_uuid")?, uuid);
    assert!(rows[1].values()[1..].iter().all(Value::is_null), "{:?}", rows[1]);
    drop_table(&m, &table).await?;
    Ok(())
}

/// Each mode's preset reaches the pool: prefilled to the pool size, the max and the
/// session settings (application name, UTC) as the preset says.
pub async fn presets_reach_the_pool<B: Backend>(t: &Target) -> Outcome {
    for mode in ManagerMode::ALL {
        let preset = PoolConfiguration::for_mode(mode);
        let config = ManagerConfig::builder(mode).primary(&t.url).pool(preset.clone()).build()?;
        let m = B::connect(config).await?;
        let info = m.connection_info();
        assert_eq!(info.mode, mode);
        let status = info.primary().unwrap().status;
        assert_eq!(status.size, preset.pool_size(), "{mode}: prefilled");
        assert_eq!(status.max_size, preset.max_size(), "{mode}");
        assert_eq!(info.primary().unwrap().breaker.is_some(), preset.circuit_breaker(), "{mode}");
        match t.kind {
            DatabaseKind::Postgres => {
                let rows = m
                    .fetch_all(
                        ConnectionMode::ReadOnly,
                        "SELECT current_setting('application_name') AS app, current_setting('TimeZone') AS tz",
                        &[],
                    )
                    .await?;
                assert_eq!(rows[0].try_get::<String>("app")?, preset.application_name());
                assert_eq!(rows[0].try_get::<String>("tz")?, "UTC");
                let rows = m
                    .fetch_all(
                        ConnectionMode::ReadOnly,
                        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = $1",
                        &[preset.application_name().into()],
                    )
                    .await?;
                // Behind a transaction pooler the server sees the pooler's connections,
                // not the manager's.
                let open: i64 = rows[0].try_get("n")?;
                let pooled = t.url.contains("pooler=transaction");
                assert!(pooled || open >= preset.pool_size() as i64, "{mode}: {open} sessions");
            }
            DatabaseKind::MySql => {
                let rows = m
                    .fetch_all(ConnectionMode::ReadOnly, "SELECT @@session.time_zone AS tz", &[])
                    .await?;
                assert_eq!(rows[0].try_get::<String>("tz")?, "+00:00");
            }
            _ => {}
        }
        m.close().await?;
    }
    Ok(())
}

/// `ReadOnly` is enforced by the database, and the same pool serves writes afterwards.
pub async fn read_only_is_enforced<B: Backend>(t: &Target) -> Outcome {
    let m = connect::<B>(t, 1, "ucm_t_readonly").await;
    let table = unique_table("ro");
    create_counter_table(&m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES ({})", t.placeholders(2));
    let err =
        m.execute(ConnectionMode::ReadOnly, &insert, &[1.into(), 1.into()]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnlyViolation, "{err}");
    let err = m
        .transaction(ConnectionMode::ReadOnly, |tx| {
            let insert = insert.clone();
            Box::pin(async move { tx.execute(&insert, &[2.into(), 2.into()]).await })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnlyViolation, "{err}");
    assert_eq!(count(&m, &table).await?, 0);
    // The one connection switches back for writes.
    m.execute(ConnectionMode::ReadWrite, &insert, &[3.into(), 3.into()]).await?;
    assert_eq!(count(&m, &table).await?, 1);
    drop_table(&m, &table).await?;
    Ok(())
}

/// Commit on `Ok`, roll back on `Err`.
pub async fn transactions_commit_and_roll_back<B: Backend>(t: &Target) -> Outcome {
    let m = connect::<B>(t, 2, "ucm_t_tx").await;
    let table = unique_table("tx");
    create_counter_table(&m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES ({})", t.placeholders(2));
    let sql = insert.clone();
    m.transaction(ConnectionMode::Transactional, |tx| {
        let sql = sql.clone();
        Box::pin(async move {
            tx.execute(&sql, &[1.into(), 1.into()]).await?;
            tx.execute(&sql, &[2.into(), 2.into()]).await
        })
    })
    .await?;
    assert_eq!(count(&m, &table).await?, 2);
    let sql = insert.clone();
    let err = m
        .transaction(ConnectionMode::Transactional, |tx| {
            let sql = sql.clone();
            Box::pin(async move {
                tx.execute(&sql, &[3.into(), 3.into()]).await?;
                Err::<(), _>(Error::other("the application changed its mind"))
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
    assert_eq!(count(&m, &table).await?, 2, "rolled back");
    // A constraint violation inside is reported as such and rolls back the whole unit.
    let err = m
        .transaction(ConnectionMode::Transactional, |tx| {
            let sql = insert.clone();
            Box::pin(async move {
                tx.execute(&sql, &[4.into(), 4.into()]).await?;
                tx.execute(&sql, &[1.into(), 1.into()]).await
            })
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Constraint, "{err}");
    assert_eq!(count(&m, &table).await?, 2);
    drop_table(&m, &table).await?;
    Ok(())
}

/// A panic inside a transaction rolls it back before the connection is reused.
pub async fn a_panic_rolls_back<B: Backend>(t: &Target) -> Outcome {
    let m = Arc::new(connect::<B>(t, 1, "ucm_t_panic").await);
    let table = unique_table("panic");
    create_counter_table(&*m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES ({})", t.placeholders(2));
    let task = {
        let m = Arc::clone(&m);
        tokio::spawn(async move {
            m.transaction(ConnectionMode::Transactional, |tx| {
                let insert = insert.clone();
                Box::pin(async move {
                    tx.execute(&insert, &[1.into(), 1.into()]).await?;
                    panic!("application bug inside a transaction");
                    #[allow(unreachable_code)]
                    Ok(())
                })
            })
            .await
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    // The rollback runs on a spawned task; the pool's only connection must come back clean.
    let mut connection = m.get_connection(ConnectionMode::ReadWrite).await?;
    assert_no_open_transaction::<B, _>(t, "ucm_t_panic", &mut connection).await?;
    drop(connection);
    assert_eq!(count(&*m, &table).await?, 0, "the insert was rolled back");
    drop_table(&*m, &table).await?;
    Ok(())
}

/// Two real conflicting transactions: the loser fails with a serialization failure (or,
/// on MySQL, a deadlock, SQLSTATE 40001 too) and is re-run from the start; both commit.
/// SQLite is exempt: its writers take the lock at `BEGIN IMMEDIATE` and queue, so they
/// never conflict this way.
pub async fn serialization_failures_are_retried<B: Backend>(t: &Target) -> Outcome {
    if t.kind == DatabaseKind::Sqlite {
        return Ok(());
    }
    let m = Arc::new(connect::<B>(t, 3, "ucm_t_conflict").await);
    let table = unique_table("conflict");
    create_counter_table(&*m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES ({})", t.placeholders(2));
    m.execute(ConnectionMode::ReadWrite, &insert, &[1.into(), 0.into()]).await?;
    m.execute(ConnectionMode::ReadWrite, &insert, &[2.into(), 0.into()]).await?;
    let attempts = Arc::new(AtomicU32::new(0));
    let first_locked = Arc::new(Notify::new());
    let second_locked = Arc::new(Notify::new());
    let kind = t.kind;
    let bump = {
        let table = table.clone();
        move |id: i64| format!("UPDATE {table} SET n = n + 1 WHERE id = {id}")
    };
    // T1: on PostgreSQL, a REPEATABLE READ snapshot taken before T2's commit; on MySQL,
    // row 1 locked, then row 2 wanted while T2 holds it and wants row 1.
    let t1 = {
        let (m, attempts, first_locked, second_locked) = (
            Arc::clone(&m),
            Arc::clone(&attempts),
            Arc::clone(&first_locked),
            Arc::clone(&second_locked),
        );
        let bump = bump.clone();
        tokio::spawn(async move {
            m.transaction(ConnectionMode::Transactional, |tx| {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let (first_locked, second_locked, bump) =
                    (Arc::clone(&first_locked), Arc::clone(&second_locked), bump.clone());
                Box::pin(async move {
                    if kind == DatabaseKind::Postgres {
                        tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", &[]).await?;
                    }
                    tx.execute(&bump(1), &[]).await?;
                    if attempt == 1 {
                        first_locked.notify_one();
                        second_locked.notified().await;
                    }
                    tx.execute(&bump(2), &[]).await?;
                    Ok(attempt)
                })
            })
            .await
        })
    };
    // T2: waits for T1's first step, then updates row 2 and (on MySQL) row 1.
    let t2 = {
        let (m, attempts) = (Arc::clone(&m), Arc::clone(&attempts));
        tokio::spawn(async move {
            first_locked.notified().await;
            m.transaction(ConnectionMode::Transactional, |tx| {
                attempts.fetch_add(1, Ordering::SeqCst);
                let (second_locked, bump) = (Arc::clone(&second_locked), bump.clone());
                Box::pin(async move {
                    tx.execute(&bump(2), &[]).await?;
                    second_locked.notify_one();
                    if kind != DatabaseKind::Postgres {
                        tx.execute(&bump(1), &[]).await?;
                    }
                    Ok(())
                })
            })
            .await
        })
    };
    let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
    r1.unwrap_or_else(|e| panic!("T1 should have been retried to success: {e}"));
    r2.unwrap_or_else(|e| panic!("T2 should have been retried to success: {e}"));
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "exactly one transaction was re-run");
    let rows = m
        .fetch_all(ConnectionMode::ReadOnly, &format!("SELECT id, n FROM {table} ORDER BY id"), &[])
        .await?;
    let counts: Vec<i64> = rows.iter().map(|r| r.try_get("n")).collect::<Result<_>>()?;
    let expected = if kind == DatabaseKind::Postgres { vec![1, 2] } else { vec![2, 2] };
    assert_eq!(counts, expected, "both transactions' effects, once each");
    drop_table(&*m, &table).await?;
    Ok(())
}

/// Exhaustion is `PoolExhausted` with the numbers, distinct from a connect failure.
pub async fn pool_exhaustion_is_its_own_error<B: Backend>(t: &Target) -> Outcome {
    let pool = PoolConfiguration::builder(ManagerMode::McpServer)
        .pool_size(1)
        .max_overflow(0)
        .application_name("ucm_t_exhaust")
        .build()?;
    let m = B::connect(t.config(ManagerMode::McpServer, pool)).await?;
    let held = m.get_connection(ConnectionMode::ReadWrite).await?;
    let err = m.get_connection(ConnectionMode::ReadWrite).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolExhausted, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("1 of 1 connections in use") && text.contains("gave up after 2"),
        "{text}"
    );
    drop(held);
    m.get_connection(ConnectionMode::ReadWrite).await?;
    Ok(())
}

/// A closed port and an unknown host fail at construction with the reason.
pub async fn connect_failures_say_why<B: Backend>(t: &Target) -> Outcome {
    let cases: Vec<(String, ConnectFailure)> = match t.kind {
        DatabaseKind::Postgres => vec![
            ("postgres://postgres@127.0.0.1:1/test".into(), ConnectFailure::Refused),
            ("postgres://postgres@no-such-host.invalid/test".into(), ConnectFailure::Dns),
        ],
        DatabaseKind::MySql => vec![
            ("mysql://root@127.0.0.1:1/test".into(), ConnectFailure::Refused),
            ("mysql://root@no-such-host.invalid/test".into(), ConnectFailure::Dns),
        ],
        _ => vec![("sqlite:///nonexistent-ucm-dir/sub/db.sqlite".into(), ConnectFailure::Other)],
    };
    for (url, expected) in cases {
        let config = ManagerConfig::builder(ManagerMode::Admin).primary(&url).build()?;
        match B::connect(config).await {
            Err(Error::ConnectFailed { reason, message, .. }) => {
                assert_eq!(reason, expected, "{url}: {message}")
            }
            Err(other) => panic!("{url}: expected ConnectFailed, got {other}"),
            Ok(_) => panic!("{url}: connected?"),
        }
    }
    Ok(())
}

/// Wrong credentials are an authentication failure, and the password appears nowhere.
/// On MariaDB a real user with a password is made, and both the right password (connects)
/// and a wrong one (authentication failed) are tried. PostgreSQL here uses trust
/// authentication, which admits any password, so a role that does not exist stands in.
/// SQLite has no credentials.
pub async fn bad_credentials_say_so<B: Backend>(t: &Target) -> Outcome {
    let url = match t.kind {
        DatabaseKind::Postgres => replace_host_port(
            "postgres://ucm_no_such_role:Sup3r%40Secret@127.0.0.1:5432/test",
            &t.url,
        ),
        DatabaseKind::MySql => {
            let m = connect::<B>(t, 1, "ucm_t_credentials").await;
            let database =
                ucm_kernel::DatabaseUrl::parse(&t.url)?.database().unwrap_or("test").to_owned();
            for sql in [
                "CREATE USER IF NOT EXISTS 'ucm_pw_user'@'%' IDENTIFIED BY 'Right%Pass'".to_owned(),
                "ALTER USER 'ucm_pw_user'@'%' IDENTIFIED BY 'Right%Pass'".to_owned(),
                format!("GRANT SELECT ON `{database}`.* TO 'ucm_pw_user'@'%'"),
            ] {
                m.execute(ConnectionMode::ReadWrite, &sql, &[]).await?;
            }
            m.close().await?;
            let right =
                replace_host_port("mysql://ucm_pw_user:Right%25Pass@127.0.0.1:3306/", &t.url)
                    + &database;
            let config = ManagerConfig::builder(ManagerMode::Admin).primary(&right).build()?;
            B::connect(config).await.map(|_| ()).expect("the right password connects");
            replace_host_port("mysql://ucm_pw_user:Sup3r%40Secret@127.0.0.1:3306/", &t.url)
                + &database
        }
        _ => return Ok(()),
    };
    let config = ManagerConfig::builder(ManagerMode::Admin).primary(&url).build()?;
    let err = B::connect(config).await.map(|_| ()).unwrap_err();
    let text = err.to_string();
    match &err {
        Error::ConnectFailed { reason, .. } => {
            assert_eq!(*reason, ConnectFailure::Authentication, "{text}")
        }
        other => panic!("expected an authentication failure, got {other}"),
    }
    assert!(!text.contains("Sup3r") && !format!("{err:?}").contains("Sup3r"), "{text}");
    assert!(text.contains("check the user name and password"), "{text}");
    Ok(())
}

/// Uses the target's host and port in a URL written for the defaults.
fn replace_host_port(url: &str, target: &str) -> String {
    let target = ucm_kernel::DatabaseUrl::parse(target).expect("a valid URL");
    let (Some(host), Some(port)) = (target.host(), target.port()) else { return url.to_owned() };
    let default = if url.starts_with("postgres") { "127.0.0.1:5432" } else { "127.0.0.1:3306" };
    url.replace(default, &format!("{host}:{port}"))
}

/// Dropping acquire and transaction futures at many points leaves the pool whole and no
/// transaction open on the server.
pub async fn dropped_futures_leak_nothing<B: Backend>(t: &Target) -> Outcome {
    let m = connect::<B>(t, 3, "ucm_t_cancel").await;
    let table = unique_table("cancel");
    create_counter_table(&m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES ({})", t.placeholders(2));
    let pause = match t.kind {
        DatabaseKind::Postgres => "SELECT pg_sleep(0.005)",
        DatabaseKind::MySql => "SELECT SLEEP(0.005)",
        _ => "SELECT 1",
    };
    for i in 0..40_i64 {
        let sql = insert.clone();
        let unit = m.transaction(ConnectionMode::Transactional, move |tx| {
            let sql = sql.clone();
            Box::pin(async move {
                tx.execute(pause, &[]).await?;
                tx.execute(&sql, &[i.into(), i.into()]).await?;
                tx.execute(pause, &[]).await
            })
        });
        let cut = Duration::from_micros(500 * (i as u64 % 20));
        let _ = tokio::time::timeout(cut, unit).await;
        let _ = tokio::time::timeout(cut, m.get_connection(ConnectionMode::ReadWrite)).await;
    }
    // Rollbacks of abandoned transactions run on spawned tasks; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = m.connection_info().primary().unwrap().status;
    assert_eq!((status.in_use, status.waiting), (0, 0), "{status:?}");
    assert!(status.size <= 3);
    // Hold every connection of the pool and check each is clean.
    let mut all = Vec::new();
    for _ in 0..3 {
        all.push(m.get_connection(ConnectionMode::ReadWrite).await?);
    }
    for connection in &mut all {
        assert_no_open_transaction::<B, _>(t, "ucm_t_cancel", connection).await?;
    }
    drop(all);
    drop_table(&m, &table).await?;
    Ok(())
}

/// Asserts that no transaction is open on `connection` (of a pool whose sessions carry
/// `app` as their application name), the database's own way.
async fn assert_no_open_transaction<B: Backend, C: TransactionalConnection>(
    t: &Target,
    app: &str,
    connection: &mut C,
) -> Outcome {
    match t.kind {
        DatabaseKind::Postgres => {
            // Asked from outside: the server's own view of every session of that pool.
            let observer = connect::<B>(t, 1, "ucm_t_observer").await;
            let rows = observer
                .fetch_all(
                    ConnectionMode::ReadOnly,
                    "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
                    &[app.into()],
                )
                .await?;
            assert_eq!(rows[0].try_get::<i64>("n")?, 0, "a transaction was left open");
            observer.close().await?;
        }
        DatabaseKind::MySql => {
            let rows = connection.fetch_all("SELECT @@in_transaction AS t", &[]).await?;
            assert_eq!(rows[0].try_get::<i64>("t")?, 0, "a transaction was left open");
        }
        _ => {
            // BEGIN fails inside an open transaction on SQLite.
            connection.begin(ConnectionMode::ReadWrite).await.expect("a transaction was left open");
            connection.rollback().await?;
        }
    }
    Ok(())
}

/// `close()` waits for checked-out connections, then refuses new work.
pub async fn close_drains<B: Backend>(t: &Target) -> Outcome {
    let m = Arc::new(connect::<B>(t, 2, "ucm_t_close").await);
    let held = m.get_connection(ConnectionMode::ReadWrite).await?;
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let released = Arc::clone(&released);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            released.store(true, Ordering::SeqCst);
            drop(held);
        })
    };
    m.close().await?;
    // close() may return only once the checked-out connection has come back and been closed.
    assert!(
        released.load(Ordering::SeqCst),
        "close returned while a connection was still checked out"
    );
    assert_eq!(m.connection_info().primary().unwrap().status.size, 0);
    holder.await.expect("the holding task ran to its end");
    let err = m.get_connection(ConnectionMode::ReadOnly).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    Ok(())
}

/// `McpServer`'s statement timeout (150 ms) is enforced by the server: a 3 s statement is
/// cancelled, the error names the limit and how to raise it, and the session stays usable.
pub async fn statement_timeouts_are_enforced<B: Backend>(t: &Target) -> Outcome {
    let sleep = match t.kind {
        DatabaseKind::Postgres => "SELECT 1 FROM pg_sleep(3)",
        DatabaseKind::MySql => "SELECT SLEEP(3)",
        DatabaseKind::Sqlite => return Ok(()), // No server to cancel a statement.
    };
    let pool = PoolConfiguration::builder(ManagerMode::McpServer)
        .pool_size(1)
        .max_overflow(0)
        .application_name("ucm_t_deadline")
        .build()?;
    let m = B::connect(t.config(ManagerMode::McpServer, pool)).await?;
    for mode in [ConnectionMode::ReadOnly, ConnectionMode::ReadWrite] {
        let started = std::time::Instant::now();
        let err = m.fetch_all(mode, sleep, &[]).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        match &err {
            Error::StatementTimeout { limit, server_cancelled, .. } => {
                assert_eq!(*limit, Duration::from_millis(150));
                assert!(*server_cancelled, "the server itself cancelled it: {err}");
            }
            other => panic!("expected a statement timeout, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("150ms") && text.contains("UCM_STATEMENT_TIMEOUT"), "{text}");
        assert!(took < Duration::from_secs(2), "cut short, not run for 3 s ({took:?})");
        eprintln!("statement timeout figure: {} {} {mode}: answered in {took:?}", B::NAME, t.kind);
    }
    // A server-side cancel ends the statement, not the session.
    m.fetch_all(ConnectionMode::ReadOnly, "SELECT 1", &[]).await?;
    let closed = m.connection_info().primary().unwrap().metrics.connections_closed.clone();
    assert!(!closed.iter().any(|(reason, _)| *reason == "broken"), "{closed:?}");
    m.close().await?;
    Ok(())
}

/// A statement whose future is dropped mid-flight (a caller's timeout, a cancelled task)
/// never leaves its connection, still running it, to the next borrower.
pub async fn a_cancelled_statement_is_not_inherited<B: Backend>(t: &Target) -> Outcome {
    let (pid, sleep) = match t.kind {
        DatabaseKind::Postgres => ("SELECT pg_backend_pid() AS pid", "SELECT pg_sleep(2)"),
        DatabaseKind::MySql => ("SELECT CONNECTION_ID() AS pid", "SELECT SLEEP(2)"),
        DatabaseKind::Sqlite => return Ok(()), // In-process: no session to tell apart.
    };
    let m = connect::<B>(t, 1, "ucm_t_dropped").await;
    let mut first = m.get_connection(ConnectionMode::ReadWrite).await?;
    let first_pid = first.fetch_all(pid, &[]).await?[0].values().to_vec();
    let cut = tokio::time::timeout(Duration::from_millis(50), first.execute(sleep, &[])).await;
    assert!(cut.is_err(), "the statement was cut off by the caller's timeout");
    drop(first);
    let started = std::time::Instant::now();
    let mut next = m.get_connection(ConnectionMode::ReadWrite).await?;
    let next_pid = next.fetch_all(pid, &[]).await?[0].values().to_vec();
    let url = ucm_kernel::DatabaseUrl::parse(&t.url)?;
    if small_pool(1, "ucm_t_dropped").pooler().is_transaction_pooled(&url) {
        // Through a transaction pooler the server session is the pooler's to hand out: once
        // the cancelled statement has ended there, it may serve the next client. What must
        // hold is that ucm closed its own connection, the one still running the statement.
        let closed = m.connection_info().primary().unwrap().metrics.connections_closed.clone();
        assert!(
            closed.iter().any(|(reason, n)| *reason == "broken" && *n >= 1),
            "the connection still running the cancelled statement was not closed: {closed:?}"
        );
    } else {
        assert_ne!(
            next_pid, first_pid,
            "the session still running the cancelled statement was reused"
        );
    }
    eprintln!(
        "cancelled statement figure: {} {}: next checkout and query in {:?}",
        B::NAME,
        t.kind,
        started.elapsed()
    );
    drop(next);
    m.close().await?;
    Ok(())
}

/// A server that stops answering (every packet blackholed, sockets open: a frozen server or
/// a partition) is given up on at the client's statement deadline: the connection is
/// discarded; a read fails with a statement timeout, a write outside a transaction with
/// `AmbiguousCommit` (it may have been applied). Once the path heals, work resumes.
pub async fn a_silent_server_meets_the_client_deadline<B: Backend>(t: &Target) -> Outcome {
    if t.kind == DatabaseKind::Sqlite {
        return Ok(());
    }
    let proxy = crate::fault_proxy::FaultProxy::start(
        crate::fault_proxy::url_target(&t.url).await.expect("the server's address resolves"),
    )
    .await
    .expect("the fault proxy starts");
    let through = Target { kind: t.kind, url: proxy.url_through(&t.url) };
    let pool = PoolConfiguration::builder(ManagerMode::McpServer)
        .pool_size(2)
        .max_overflow(0)
        .application_name("ucm_t_silent")
        .build()?;
    let m = B::connect(through.config(ManagerMode::McpServer, pool)).await?;
    let table = unique_table("silent");
    create_counter_table(&m, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES (1, 1)");
    let mut reader = m.get_connection(ConnectionMode::ReadOnly).await?;
    let mut writer = m.get_connection(ConnectionMode::ReadWrite).await?;
    proxy.blackhole(true);
    let started = std::time::Instant::now();
    let read = reader.fetch_all("SELECT 1", &[]).await.unwrap_err();
    let read_took = started.elapsed();
    match &read {
        Error::StatementTimeout { server_cancelled: false, outcome_unknown: false, .. } => {}
        other => panic!("expected the client's deadline, got {other:?}"),
    }
    assert_eq!(read.kind(), ErrorKind::Timeout);
    let write = writer.execute(&insert, &[]).await.unwrap_err();
    if t.url.contains("pooler=transaction") {
        // Behind a transaction pooler the write runs in a transaction of ucm's own, whose
        // BEGIN got no answer: nothing can have been committed.
        assert_eq!(write.kind(), ErrorKind::Timeout, "{write}");
    } else {
        assert_eq!(write.kind(), ErrorKind::AmbiguousCommit, "{write}");
        assert!(write.to_string().contains("unknown"), "{write}");
    }
    drop((reader, writer));
    let closed = m.connection_info().primary().unwrap().metrics.connections_closed.clone();
    assert!(
        closed.iter().any(|(reason, n)| *reason == "broken" && *n >= 2),
        "both silent connections were discarded, not pooled: {closed:?}"
    );
    eprintln!("silent server figure: {} {}: read given up after {read_took:?}", B::NAME, t.kind);
    proxy.blackhole(false);
    // New connections through the healed path work; the ambiguous insert was not re-sent.
    assert!(count(&m, &table).await? <= 1);
    drop_table(&m, &table).await?;
    m.close().await?;
    Ok(())
}

/// A configured time zone other than UTC reaches every session, although the drivers set
/// UTC themselves after connecting; an offset keeps its sign on PostgreSQL.
pub async fn a_configured_time_zone_reaches_the_session<B: Backend>(t: &Target) -> Outcome {
    let (sql, expected): (&str, Value) = match t.kind {
        DatabaseKind::Postgres => {
            ("SELECT EXTRACT(TIMEZONE FROM now())::bigint AS tz", Value::Int(19_800))
        }
        DatabaseKind::MySql => ("SELECT @@session.time_zone AS tz", Value::Text("+05:30".into())),
        DatabaseKind::Sqlite => return Ok(()), // No session time zone.
    };
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(1)
        .max_overflow(0)
        .time_zone("+05:30")
        .build()?;
    let m = B::connect(t.config(ManagerMode::AsyncModern, pool)).await?;
    for mode in [ConnectionMode::ReadOnly, ConnectionMode::ReadWrite] {
        let rows = m.fetch_all(mode, sql, &[]).await?;
        assert_eq!(rows[0].get("tz"), Some(&expected), "{mode}");
    }
    m.close().await?;
    Ok(())
}

/// Nothing one manager sets on its session reaches another client: a reader (read-only
/// checkouts) and a writer alternate statements with parameters, each through its own
/// connections; on a transaction pooler, which hands one server connection to both in
/// turn, a read-only setting made for the session would make the writer's inserts fail.
pub async fn no_session_state_reaches_another_client<B: Backend>(t: &Target) -> Outcome {
    let reader = connect::<B>(t, 2, "ucm_t_state_reader").await;
    let writer = connect::<B>(t, 2, "ucm_t_state_writer").await;
    let table = unique_table("state");
    create_counter_table(&writer, &table).await?;
    let insert = format!("INSERT INTO {table} (id, n) VALUES ({}, {})", t.p(1), t.p(2));
    let read = format!("SELECT COUNT(*) AS n FROM {table} WHERE n >= {}", t.p(1));
    // What the writer's server session defaults to, whatever its transaction says: a
    // read-only setting left on a shared server connection (a pooler's) shows here. Read on
    // PostgreSQL, the database poolers serve; elsewhere the inserts alone tell.
    let session_default = match t.kind {
        DatabaseKind::Postgres => "SELECT current_setting('default_transaction_read_only') AS v",
        DatabaseKind::MySql | DatabaseKind::Sqlite => "SELECT 'off' AS v",
    };
    for i in 0..40_i64 {
        let rows = reader.fetch_all(ConnectionMode::ReadOnly, &read, &[0_i64.into()]).await?;
        assert_eq!(rows[0].try_get::<i64>("n")?, i, "the reader sees every earlier insert");
        writer
            .execute(ConnectionMode::ReadWrite, &insert, &[i.into(), (i * 10).into()])
            .await
            .unwrap_or_else(|e| panic!("insert {i} after a read-only statement: {e}"));
        let rows = writer.fetch_all(ConnectionMode::ReadWrite, session_default, &[]).await?;
        let default = rows[0].try_get::<String>("v")?;
        assert!(
            matches!(default.as_str(), "off" | "0"),
            "the writer's session defaults to read-only ({default}) after read {i}"
        );
        let params = [(1000 + i).into(), 0_i64.into()];
        let in_transaction = writer.transaction(ConnectionMode::ReadWrite, |tx| {
            let (insert, params) = (insert.clone(), params.clone());
            Box::pin(async move { tx.execute(&insert, &params).await })
        });
        in_transaction.await.unwrap_or_else(|e| panic!("transaction {i}: {e}"));
        writer
            .execute(
                ConnectionMode::ReadWrite,
                &format!("DELETE FROM {table} WHERE id = {}", t.p(1)),
                &[(1000 + i).into()],
            )
            .await?;
    }
    let write =
        reader.execute(ConnectionMode::ReadOnly, &insert, &[99_i64.into(), 0_i64.into()]).await;
    assert_eq!(
        write.map_err(|e| e.kind()).unwrap_err(),
        ErrorKind::ReadOnlyViolation,
        "the reader stays read-only"
    );
    drop_table(&writer, &table).await?;
    reader.close().await?;
    writer.close().await?;
    Ok(())
}
