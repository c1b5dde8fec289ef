//! Operations against real servers: a role's password rotated under load through a password file (PostgreSQL's TLS server, which checks that role's password, and MariaDB), a pool resized and suspended under load, and the permission self-test against roles with the right, too many and too few grants; `operations_suite!` instantiates them per backend and database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ucm_kernel::{
    ConnectFailure, ConnectionManagerProtocol, ConnectionMode, CredentialSource, DatabaseKind,
    Error, ManagerConfig, ManagerMode, PoolConfiguration, Value,
};

use crate::{Backend, Outcome, unique_table};

/// A server that checks one role's password, a superuser URL to manage that role, and the
/// role's URL without a password.
#[derive(Debug, Clone)]
pub struct RoleTarget {
    /// Which database.
    pub kind: DatabaseKind,
    /// A superuser on the server.
    pub admin_url: String,
    /// The role's name.
    pub role: String,
    /// The role's URL, without a password (the credential source gives it).
    pub role_url: String,
}

impl RoleTarget {
    /// PostgreSQL: the TLS server (`TLS_DATABASE_URL`, which checks `PASSWORD_ROLE`'s
    /// password and trusts everyone else); MySQL: `MYSQL_DATABASE_URL` (MariaDB checks
    /// every password). `None` (the test passes vacuously) when unset, a failure under `CI`.
    pub fn find(kind: DatabaseKind) -> Option<Self> {
        let get = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let (admin_var, role) = match kind {
            DatabaseKind::Postgres => {
                let Some(role) = get("PASSWORD_ROLE") else {
                    return crate::skip_unless_ci("PASSWORD_ROLE");
                };
                ("TLS_DATABASE_URL", role)
            }
            _ => ("MYSQL_DATABASE_URL", "ucm_rotating".to_owned()),
        };
        let Some(admin_url) = get(admin_var) else { return crate::skip_unless_ci(admin_var) };
        let parsed = ucm_kernel::DatabaseUrl::parse(&admin_url).ok()?;
        let scheme = if kind == DatabaseKind::Postgres { "postgres" } else { "mysql" };
        let role_url = format!(
            "{scheme}://{role}@{}:{}/{}",
            parsed.host()?,
            parsed.port()?,
            parsed.database()?
        );
        Some(Self { kind, admin_url, role, role_url })
    }

    /// The statements that give the role `password` (creating it if needed).
    fn set_password(&self, password: &str) -> Vec<String> {
        let role = &self.role;
        match self.kind {
            DatabaseKind::Postgres => vec![
                format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
                 CREATE ROLE {role} LOGIN; END IF; END $$"
                ),
                format!("ALTER ROLE {role} LOGIN PASSWORD '{password}'"),
            ],
            _ => MYSQL_HOSTS
                .iter()
                .flat_map(|host| {
                    [
                        format!(
                            "CREATE USER IF NOT EXISTS '{role}'@{host} IDENTIFIED BY '{password}'"
                        ),
                        format!("ALTER USER '{role}'@{host} IDENTIFIED BY '{password}'"),
                    ]
                })
                .collect(),
        }
    }

    /// The statements that let the role read and insert into `table`.
    fn grant(&self, table: &str) -> Vec<String> {
        let role = &self.role;
        match self.kind {
            DatabaseKind::Postgres => vec![format!("GRANT SELECT, INSERT ON {table} TO {role}")],
            _ => MYSQL_HOSTS
                .iter()
                .map(|host| format!("GRANT SELECT, INSERT ON {table} TO '{role}'@{host}"))
                .collect(),
        }
    }
}

async fn run_all<M: ConnectionManagerProtocol>(m: &M, statements: &[String]) -> Outcome {
    for sql in statements {
        m.execute(ConnectionMode::Transactional, sql, &[]).await?;
    }
    Ok(())
}

fn admin_config(url: &str) -> ManagerConfig {
    let pool = PoolConfiguration::builder(ManagerMode::Admin).pool_size(1).build().unwrap();
    ManagerConfig::builder(ManagerMode::Admin).primary(url).pool(pool).build().unwrap()
}

/// Eight tasks insert and read for about three seconds through a manager whose pool
/// replaces its connections every few hundred milliseconds (so new connections open all
/// along), each asking a password file; one second in, the role's password is changed at
/// the server, and the file rewritten 200 ms later (connects refused in between are tried
/// again). No operation fails, every acknowledged insert is in the table, connections
/// were opened after the rotation, and the old password is refused (so the server does
/// check it, and the rotation took effect).
pub async fn a_rotated_password_loses_no_operation<B: Backend>(t: &RoleTarget) -> Outcome {
    let admin = B::connect(admin_config(&t.admin_url)).await?;
    let table = unique_table("rotate");
    let suffix = std::process::id();
    let (old, new) = (format!("Old-pw-{suffix}"), format!("New-pw-{suffix}"));
    run_all(&admin, &t.set_password(&old)).await?;
    admin
        .execute(ConnectionMode::Transactional, &format!("CREATE TABLE {table} (n INT)"), &[])
        .await?;
    run_all(&admin, &t.grant(&table)).await?;

    let file = std::env::temp_dir().join(format!("ucm-rotate-{suffix}-{table}"));
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(3)
        .max_overflow(0)
        .max_lifetime(Duration::from_millis(300))
        .lifetime_jitter(Duration::from_millis(100))
        .build()?;
    let config = ManagerConfig::builder(ManagerMode::AsyncModern)
        .primary(&t.role_url)
        .pool(pool)
        .credentials(CredentialSource::password_file(&file, None))
        .build()?;
    let manager = Arc::new(B::connect(config).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (manager, stop, acknowledged) = (manager.clone(), stop.clone(), acknowledged.clone());
        let (insert, read) = (
            format!("INSERT INTO {table} (n) VALUES ({})", placeholder(t.kind)),
            format!("SELECT COUNT(*) AS c FROM {table}"),
        );
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0_i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                match manager
                    .execute(
                        ConnectionMode::ReadWrite,
                        &insert,
                        &[Value::Int(task * 1_000_000 + i)],
                    )
                    .await
                {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                if let Err(e) = manager.fetch_all(ConnectionMode::ReadOnly, &read, &[]).await {
                    failures.push(e.to_string());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened_before = opened(&*manager);
    run_all(&admin, &t.set_password(&new)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&file, format!("{new}\n")).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    let opened_after = opened(&*manager);
    let rows = admin
        .fetch_all(ConnectionMode::ReadOnly, &format!("SELECT COUNT(*) AS c FROM {table}"), &[])
        .await?;
    let in_table: i64 = rows[0].try_get("c")?;
    manager.close().await?;

    // The old password is refused now: the server checks it, and it was rotated.
    let stale = ManagerConfig::builder(ManagerMode::AsyncModern)
        .primary(&t.role_url.replacen(
            &format!("://{}@", t.role),
            &format!("://{}:{old}@", t.role),
            1,
        ))
        .build()?;
    let refused = B::connect(stale).await.err();
    let _ = std::fs::remove_file(&file);
    admin.execute(ConnectionMode::Transactional, &format!("DROP TABLE {table}"), &[]).await?;
    admin.close().await?;

    assert!(
        failures.is_empty(),
        "{} operations failed, the first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(in_table, i64::try_from(acknowledged.load(Ordering::Relaxed)).unwrap());
    assert!(in_table > 50, "only {in_table} inserts in three seconds");
    assert!(
        opened_after > opened_before + 3,
        "connections opened: {opened_before} before the rotation, {opened_after} after"
    );
    assert!(
        matches!(
            refused,
            Some(Error::ConnectFailed { reason: ConnectFailure::Authentication, .. })
        ),
        "the old password was not refused: {refused:?}"
    );
    Ok(())
}

/// Sixteen tasks run statements through a pool of two while it is grown to eight (the
/// pool opens them), shrunk back to two (idle connections close at once: at most two
/// sessions remain, counted at the server on PostgreSQL), then suspended (in-flight work
/// finishes, no statement completes while suspended) and resumed (work goes on). No
/// operation fails.
pub async fn a_resize_and_a_suspend_under_load_lose_nothing<B: Backend>(
    t: &crate::Target,
) -> Outcome {
    let app = unique_table("resize");
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(2)
        .max_overflow(0)
        .application_name(app.clone())
        .build()?;
    let manager = Arc::new(B::connect(t.config(ManagerMode::AsyncModern, pool)).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (manager, stop, done) = (manager.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match manager.fetch_all(ConnectionMode::ReadWrite, "SELECT 1 AS one", &[]).await {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        }));
    }
    let size = |m: &B::Manager| m.connection_info().endpoints[0].status.size;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(size(&manager), 2);
    B::kernel(&manager).resize(8, 0).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = size(&manager);
    B::kernel(&manager).resize(2, 0).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shrunk = size(&manager);
    let sessions = server_sessions::<B>(t, &app).await?;

    B::kernel(&manager).suspend(Duration::from_secs(5)).await?;
    assert!(B::kernel(&manager).is_suspended());
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = done.load(Ordering::Relaxed) - before;
    B::kernel(&manager).resume();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = done.load(Ordering::Relaxed) - before - during;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap());
    }
    manager.close().await?;

    assert!(
        failures.is_empty(),
        "{} operations failed, the first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(grown, 8, "the pool did not grow to 8 under load");
    assert!(shrunk <= 2, "{shrunk} connections after shrinking to 2");
    if let Some(sessions) = sessions {
        assert!(sessions <= 2, "{sessions} server sessions after shrinking to 2");
    }
    assert_eq!(during, 0, "statements completed while suspended");
    assert!(after > 0, "nothing ran after resume");
    Ok(())
}

/// The server sessions named `app` (PostgreSQL's `pg_stat_activity`); `None` elsewhere.
async fn server_sessions<B: Backend>(
    t: &crate::Target,
    app: &str,
) -> ucm_kernel::Result<Option<i64>> {
    if t.kind != DatabaseKind::Postgres {
        return Ok(None);
    }
    let admin = B::connect(admin_config(&t.url)).await?;
    let rows = admin
        .fetch_all(
            ConnectionMode::ReadOnly,
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = $1",
            &[Value::Text(app.to_owned())],
        )
        .await?;
    admin.close().await?;
    Ok(Some(rows[0].try_get("n")?))
}

/// Three roles made here against one policy (read `rules` and `feedback`, write
/// `feedback`, never write `rules`, no schema changes): the right grants pass; a role with
/// too many (everything on both tables, and CREATE) fails on exactly "write rules" and
/// "change the schema"; a role with too few (read `rules` only) fails on exactly "read
/// feedback" and "write feedback", each with the server's refusal.
pub async fn the_permission_self_test_catches_too_many_and_too_few_grants<B: Backend>(
    t: &crate::Target,
) -> Outcome {
    let admin = B::connect(admin_config(&t.url)).await?;
    let (rules, feedback) = (unique_table("rules"), unique_table("feedback"));
    for table in [&rules, &feedback] {
        admin
            .execute(ConnectionMode::Transactional, &format!("CREATE TABLE {table} (n INT)"), &[])
            .await?;
    }
    let grants: [(&str, Vec<String>); 3] = [
        (
            "ucm_perm_right",
            vec![format!("SELECT ON {rules}"), format!("SELECT, INSERT ON {feedback}")],
        ),
        (
            "ucm_perm_many",
            vec![format!("ALL PRIVILEGES ON {rules}"), format!("ALL PRIVILEGES ON {feedback}")],
        ),
        ("ucm_perm_few", vec![format!("SELECT ON {rules}")]),
    ];
    let parsed = ucm_kernel::DatabaseUrl::parse(&t.url)?;
    let database = parsed.database().unwrap_or("test");
    for (role, privileges) in &grants {
        run_all(&admin, &make_role(t.kind, role)).await?;
        for privilege in privileges {
            run_all(&admin, &grant(t.kind, role, privilege)).await?;
        }
    }
    let create = match t.kind {
        DatabaseKind::Postgres => "CREATE ON SCHEMA public".to_owned(),
        _ => format!("CREATE ON {database}.*"),
    };
    run_all(&admin, &grant(t.kind, "ucm_perm_many", &create)).await?;

    let policy = ucm_kernel::PermissionPolicy {
        read: vec![rules.clone(), feedback.clone()],
        write: vec![feedback.clone()],
        deny_write: vec![rules.clone()],
        ..ucm_kernel::PermissionPolicy::for_mode(ManagerMode::McpServer)
    };
    let mut failed = Vec::new();
    for (role, _) in &grants {
        let scheme = if t.kind == DatabaseKind::Postgres { "postgres" } else { "mysql" };
        let url = format!(
            "{scheme}://{role}@{}:{}/{database}",
            parsed.host().unwrap_or("127.0.0.1"),
            parsed.port().unwrap_or(0)
        );
        let config = ManagerConfig::builder(ManagerMode::McpServer)
            .primary(&url)
            .pool(
                PoolConfiguration::builder(ManagerMode::McpServer)
                    .pool_size(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .build()?,
            )
            .permissions(policy.clone())
            .build()?;
        let manager = B::connect(config).await?;
        let report = B::kernel(&manager).check_permissions().await;
        manager.close().await?;
        let report = report?;
        let mut wrong: Vec<(String, bool)> = report
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| (c.capability.clone(), c.granted))
            .collect();
        wrong.sort();
        assert!(
            report.checks.iter().filter(|c| !c.granted).all(|c| c
                .refusal
                .as_deref()
                .is_some_and(|r| r.contains("denied"))
                || c.capability.starts_with("change")),
            "{report:?}"
        );
        failed.push((role.to_owned(), wrong, report.to_string()));
    }
    for table in [&rules, &feedback] {
        admin.execute(ConnectionMode::Transactional, &format!("DROP TABLE {table}"), &[]).await?;
    }
    admin.close().await?;
    let schema = "change the schema (create objects)".to_owned();
    assert_eq!(failed[0].1, vec![], "{}", failed[0].2);
    assert_eq!(
        failed[1].1,
        vec![(schema, true), (format!("write {rules}"), true)],
        "{}",
        failed[1].2
    );
    assert_eq!(
        failed[2].1,
        vec![(format!("read {feedback}"), false), (format!("write {feedback}"), false)],
        "{}",
        failed[2].2
    );
    assert!(failed[1].2.contains("too many grants") && failed[2].2.contains("too few grants"));
    Ok(())
}

/// The statements that make `role` afresh (no password; the servers under test trust it
/// or check an empty one).
fn make_role(kind: DatabaseKind, role: &str) -> Vec<String> {
    match kind {
        DatabaseKind::Postgres => vec![format!(
            "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
             EXECUTE 'DROP OWNED BY {role}'; EXECUTE 'DROP ROLE {role}'; END IF; \
             CREATE ROLE {role} LOGIN; END $$"
        )],
        _ => MYSQL_HOSTS
            .iter()
            .flat_map(|host| {
                [
                    format!("DROP USER IF EXISTS '{role}'@{host}"),
                    format!("CREATE USER '{role}'@{host}"),
                ]
            })
            .collect(),
    }
}

/// The statements that grant `privilege` (`SELECT ON t`) to `role`.
fn grant(kind: DatabaseKind, role: &str, privilege: &str) -> Vec<String> {
    match kind {
        DatabaseKind::Postgres => vec![format!("GRANT {privilege} TO {role}")],
        _ => {
            MYSQL_HOSTS.iter().map(|host| format!("GRANT {privilege} TO '{role}'@{host}")).collect()
        }
    }
}

/// The hosts a MySQL test user is made for, so that no anonymous user shadows it.
const MYSQL_HOSTS: [&str; 3] = ["'%'", "'localhost'", "'127.0.0.1'"];

/// The first parameter's placeholder.
fn placeholder(kind: DatabaseKind) -> &'static str {
    if kind == DatabaseKind::Postgres { "$1" } else { "?" }
}

/// Connections the manager's primary pool has opened so far.
fn opened<M: ConnectionManagerProtocol>(m: &M) -> u64 {
    m.connection_info().endpoints[0].metrics.connections_created
}

/// Instantiates the operations scenarios for one backend and database.
#[macro_export]
macro_rules! operations_suite {
    ($module:ident, $backend:ty, $kind:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_resize_and_a_suspend_under_load_lose_nothing() -> $crate::Outcome {
                match $crate::Target::find($kind) {
                    Some(t) => $crate::operations::a_resize_and_a_suspend_under_load_lose_nothing::<$backend>(&t).await,
                    None => Ok(()),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_permission_self_test_catches_too_many_and_too_few_grants() -> $crate::Outcome {
                match $crate::Target::find($kind) {
                    Some(t) => $crate::operations::the_permission_self_test_catches_too_many_and_too_few_grants::<$backend>(&t).await,
                    None => Ok(()),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rotated_password_loses_no_operation() -> $crate::Outcome {
                match $crate::operations::RoleTarget::find($kind) {
                    Some(t) => {
                        $crate::operations::a_rotated_password_loses_no_operation::<$backend>(&t)
                            .await
                    }
                    None => Ok(()),
                }
            }
        }
    };
}
