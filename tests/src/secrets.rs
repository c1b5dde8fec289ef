//! Secrets and injection on every backend and database: no rendering of anything built from a URL shows its password, and no configuration value reaches SQL or a startup option unescaped.
//!
//! [`nothing_shows_the_password`] builds every public type a URL flows into (the URL, the
//! configuration, the manager, its topology's connectors, sessions, direct connections,
//! info and health, connect errors against a dead port and the real server's refusal)
//! around a password no other test uses, and formats each with `{:?}`, `{:#?}` and, where
//! there is one, `{}`. [`hostile_settings_never_run`] sends hostile values through every
//! way a setting reaches the server and checks that a canary table survives.
//! `secrets_suite!` instantiates both per backend and database.

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicU32, Ordering};

use ucm_kernel::backend::BackendConnector;
use ucm_kernel::{
    Connection, ConnectionManagerProtocol, ConnectionMode, DatabaseKind, DatabaseUrl, Error,
    ErrorKind, Manager, ManagerConfig, ManagerMode, PoolConfiguration, SqlExecutor,
};

use crate::{Backend, Target, unique_table};

/// A password no other test, run or process uses, so finding it anywhere is a leak.
fn unique_password() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("s3cr3t-UNIQUE-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Every rendering made during a test, by what it renders.
#[derive(Default)]
struct Renderings(Vec<(String, String)>);

impl Renderings {
    fn debug(&mut self, what: &str, value: &(impl Debug + ?Sized)) {
        self.0.push((format!("{what} {{:?}}"), format!("{value:?}")));
        self.0.push((format!("{what} {{:#?}}"), format!("{value:#?}")));
    }

    fn both(&mut self, what: &str, value: &(impl Debug + Display + ?Sized)) {
        self.debug(what, value);
        self.0.push((format!("{what} {{}}"), value.to_string()));
    }

    /// An error: `Display`, `Debug` and each of its sources in both.
    fn error(&mut self, what: &str, error: &Error) {
        self.both(what, error);
        let mut source = std::error::Error::source(error);
        let mut depth = 1;
        while let Some(cause) = source {
            self.both(&format!("{what} source {depth}"), cause);
            source = cause.source();
            depth += 1;
        }
    }

    fn assert_none_contains(&self, secret: &str) {
        assert!(self.0.len() > 10, "too few renderings to prove anything");
        for (what, text) in &self.0 {
            assert!(!text.contains(secret), "{what} shows the password:\n{text}");
        }
    }
}

/// `target`'s server with `user` and `password` (and `port` instead of the target's).
fn server_url(target: &Target, user: &str, password: &str, port: Option<u16>) -> String {
    let url = DatabaseUrl::parse(&target.url).unwrap();
    let scheme = if url.kind() == DatabaseKind::Postgres { "postgres" } else { "mysql" };
    let host = url.host().unwrap_or("127.0.0.1");
    let port = port.or(url.port()).unwrap_or(5432);
    let database = url.database().unwrap_or("test");
    if host.starts_with('/') {
        format!("{scheme}://{user}:{password}@localhost:{port}/{database}?host={host}")
    } else if host.contains(':') {
        format!("{scheme}://{user}:{password}@[{host}]:{port}/{database}")
    } else {
        format!("{scheme}://{user}:{password}@{host}:{port}/{database}")
    }
}

/// A manager on `target`'s own URL, for setting up and checking.
async fn admin<B: Backend>(target: &Target) -> Manager<B::Core> {
    let config = target.config(ManagerMode::Admin, pool("ucm_t_secrets_admin"));
    Manager::<B::Core>::connect(config).await.unwrap()
}

fn pool(app: &str) -> PoolConfiguration {
    PoolConfiguration::builder(ManagerMode::Admin)
        .pool_size(1)
        .max_overflow(1)
        .application_name(app)
        .build()
        .unwrap()
}

/// A MySQL user whose password is `password`, allowed to read the target's database, so a
/// manager can connect with a password at all (the target's root has none).
async fn mysql_user<B: Backend>(target: &Target, password: &str) -> String {
    // MySQL 8 takes user names of up to 32 characters.
    let user: String = unique_table("s").chars().take(32).collect();
    let user = user.as_str();
    let database = DatabaseUrl::parse(&target.url).unwrap().database().unwrap_or("test").to_owned();
    let m = admin::<B>(target).await;
    for sql in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
        format!("GRANT SELECT ON `{database}`.* TO '{user}'@'%'"),
    ] {
        m.execute(ConnectionMode::ReadWrite, &sql, &[]).await.unwrap();
    }
    m.close().await.unwrap();
    user.to_owned()
}

async fn drop_mysql_user<B: Backend>(target: &Target, user: &str) {
    let m = admin::<B>(target).await;
    m.execute(ConnectionMode::ReadWrite, &format!("DROP USER IF EXISTS '{user}'@'%'"), &[])
        .await
        .unwrap();
    m.close().await.unwrap();
}

/// Renders a connector of `C` built straight from `url`, as a backend author would.
fn connector<C: BackendConnector>(out: &mut Renderings, url: &DatabaseUrl) {
    let config = PoolConfiguration::for_mode(ManagerMode::AsyncModern);
    match C::new(url, &config) {
        Ok(connector) => out.debug("BackendConnector::new", &connector),
        Err(e) => out.error("BackendConnector::new error", &e),
    }
}

/// Formats every public type built from a URL that carries a password no other test uses:
/// connected (PostgreSQL here admits any password; MariaDB gets a user of its own with
/// it), refused at a dead port, and refused by the server for a wrong password (on
/// PostgreSQL with trust authentication, for a role that does not exist). None may show it.
pub async fn nothing_shows_the_password<B: Backend>(t: &Target) {
    let password = unique_password();
    let mut out = Renderings::default();
    let mysql_user = match t.kind {
        DatabaseKind::MySql => Some(mysql_user::<B>(t, &password).await),
        _ => None,
    };
    let (connected, dead, refused) = match t.kind {
        DatabaseKind::Postgres => {
            let user = DatabaseUrl::parse(&t.url).unwrap().user().unwrap_or("postgres").to_owned();
            (
                server_url(t, &user, &password, None),
                server_url(t, &user, &password, Some(1)),
                Some(server_url(t, "ucm_no_such_role", &password, None)),
            )
        }
        DatabaseKind::MySql => {
            let user = mysql_user.as_deref().unwrap();
            (
                server_url(t, user, &password, None),
                server_url(t, user, &password, Some(1)),
                Some(server_url(t, user, &format!("{password}-wrong"), None)),
            )
        }
        // SQLite has no credentials: the URL's sensitive parameter stands in, and the
        // connected case checks that the same renderings work at all.
        DatabaseKind::Sqlite => (
            t.url.clone(),
            format!("sqlite:///nonexistent-ucm-dir/sub/db.sqlite?token={password}"),
            None,
        ),
    };

    // The URL and the configuration.
    let url = DatabaseUrl::parse(&connected).unwrap();
    out.both("DatabaseUrl", &url);
    out.0.push(("DatabaseUrl::label".into(), url.label()));
    let mut config = ManagerConfig::builder(ManagerMode::Admin).primary(&connected);
    if t.kind != DatabaseKind::Sqlite {
        config = config.replica(&dead);
    }
    let config = config.pool(pool("ucm_t_secrets")).build().unwrap();
    out.both("ManagerConfig", &config);

    // Connectors built directly, for every database (a URL of another kind is refused
    // with a configuration error, which is rendered instead).
    for text in [&connected, &dead] {
        let url = DatabaseUrl::parse(text).unwrap();
        connector::<<B::Core as ucm_kernel::backend::Backend>::Postgres>(&mut out, &url);
        connector::<<B::Core as ucm_kernel::backend::Backend>::MySql>(&mut out, &url);
        connector::<<B::Core as ucm_kernel::backend::Backend>::Sqlite>(&mut out, &url);
    }

    // The manager and everything reachable from it; the replica at the dead port starts
    // down, so its error text is in the info and the health report too.
    match Manager::<B::Core>::connect(config).await {
        Ok(manager) => {
            out.debug("Manager", &manager);
            out.debug("Manager::config", manager.config());
            let mut connection = manager.get_connection(ConnectionMode::ReadWrite).await.unwrap();
            out.debug("Connection", &connection);
            let pooled = match &connection {
                Connection::Postgres(s) => s.pooled().with_connector(|c| format!("{c:?} {c:#?}")),
                Connection::MySql(s) => s.pooled().with_connector(|c| format!("{c:?} {c:#?}")),
                Connection::Sqlite(s) => s.pooled().with_connector(|c| format!("{c:?} {c:#?}")),
                _ => None,
            };
            let pooled = pooled.expect("the session's pool is alive");
            assert!(pooled.contains("Connector"), "{pooled}");
            out.0.push(("the session's pool's connector".into(), pooled));
            let failed = connection.fetch_all("SELECT no_such_column_ucm", &[]).await.unwrap_err();
            out.error("statement error", &failed);
            drop(connection);
            let direct = manager.direct_connection().await.unwrap();
            out.debug("DirectConnection", &direct);
            out.debug("ConnectionInfo", &manager.connection_info());
            out.debug("HealthReport", &manager.health_check().await);
            out.debug("ConnectionInfo after a health check", &manager.connection_info());
            manager.close().await.unwrap();
            out.debug("Manager after close", &manager);
        }
        Err(e) => {
            assert!(t.kind != DatabaseKind::MySql, "the MySQL user could not connect: {e}");
            out.error("connect error", &e);
        }
    }

    // A dead port, and the server's refusal.
    let dead_config = ManagerConfig::builder(ManagerMode::Admin).primary(&dead).build().unwrap();
    let e = Manager::<B::Core>::connect(dead_config).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::ConnectFailed | ErrorKind::Configuration),
        "{}: {e}",
        B::NAME
    );
    out.error("dead port error", &e);
    if let Some(refused) = refused {
        let refused = ManagerConfig::builder(ManagerMode::Admin).primary(&refused).build().unwrap();
        let e = Manager::<B::Core>::connect(refused).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectFailed, "{e}");
        out.error("refused credentials error", &e);
    }

    if let Some(user) = mysql_user {
        drop_mysql_user::<B>(t, &user).await;
    }
    out.assert_none_contains(&password);
}

/// Hostile values through every way a setting reaches the server. A time zone or
/// application name that could end a SQL literal or a startup option is refused when the
/// configuration is built; values the URL carries to the driver (PostgreSQL's
/// `application_name`, MySQL's `timezone`, `charset`) are sent as data, overridden or
/// refused. A canary table must survive all of it.
pub async fn hostile_settings_never_run<B: Backend>(t: &Target) {
    let canary = unique_table("canary");
    let hostile = format!("UTC'; DROP TABLE {canary}; --");
    let m = admin::<B>(t).await;
    m.execute(ConnectionMode::ReadWrite, &format!("CREATE TABLE {canary} (id INT)"), &[])
        .await
        .unwrap();

    // The configuration refuses the value outright, from code and from the environment.
    let lookup = |name: &str| (name == "UCM_TIME_ZONE").then(|| hostile.clone());
    for built in [
        PoolConfiguration::builder(ManagerMode::Admin).time_zone(hostile.as_str()).build(),
        PoolConfiguration::builder(ManagerMode::Admin)
            .env_overrides(lookup)
            .and_then(ucm_kernel::config::PoolConfigurationBuilder::build),
        PoolConfiguration::builder(ManagerMode::Admin)
            .time_zone("UTC -c default_transaction_read_only=on")
            .build(),
        PoolConfiguration::builder(ManagerMode::Admin)
            .application_name("x\0options\0-c default_transaction_read_only=on")
            .build(),
    ] {
        let e = built.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    }

    // Values the URL carries straight to the driver.
    let encoded = hostile.replace('%', "%25").replace(' ', "%20").replace(';', "%3B");
    let encoded = encoded.replace('\'', "%27").replace('+', "%2B");
    let (with_sep, app) = (if t.url.contains('?') { '&' } else { '?' }, "ucm_t_hostile");
    match t.kind {
        DatabaseKind::Postgres => {
            // A startup parameter, never SQL: it arrives as the literal text.
            let url = format!("{}{with_sep}application_name={encoded}", t.url);
            let config = ManagerConfig::builder(ManagerMode::Admin)
                .primary(&url)
                .pool(pool(app))
                .build()
                .unwrap();
            let hostile_app = Manager::<B::Core>::connect(config).await.unwrap();
            let rows = hostile_app
                .fetch_all(
                    ConnectionMode::ReadWrite,
                    "SELECT current_setting('application_name') AS app",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(rows[0].try_get::<String>("app").unwrap(), hostile);
            hostile_app.close().await.unwrap();
        }
        DatabaseKind::MySql => {
            // sqlx reads `timezone` from the URL and would write it into `SET time_zone`:
            // the configuration's time zone replaces it.
            let url = format!("{}{with_sep}timezone={encoded}", t.url);
            let config = ManagerConfig::builder(ManagerMode::Admin)
                .primary(&url)
                .pool(pool(app))
                .build()
                .unwrap();
            let hostile_tz = Manager::<B::Core>::connect(config).await.unwrap();
            let rows = hostile_tz
                .fetch_all(ConnectionMode::ReadWrite, "SELECT @@session.time_zone AS tz", &[])
                .await
                .unwrap();
            assert_eq!(rows[0].try_get::<String>("tz").unwrap(), "+00:00");
            hostile_tz.close().await.unwrap();
            // sqlx writes `charset` into `SET NAMES`: a value that is not a name is refused
            // (the diesel backend does not read it).
            let url = format!("{}{with_sep}charset=utf8mb4{encoded}", t.url);
            let config = ManagerConfig::builder(ManagerMode::Admin)
                .primary(&url)
                .pool(pool(app))
                .build()
                .unwrap();
            match Manager::<B::Core>::connect(config).await {
                Ok(manager) => {
                    assert_eq!(B::NAME, "diesel", "sqlx took a hostile charset");
                    manager.close().await.unwrap();
                }
                Err(e) => assert_eq!(e.kind(), ErrorKind::Configuration, "{e}"),
            }
        }
        DatabaseKind::Sqlite => {}
    }

    let count = format!("SELECT COUNT(*) AS n FROM {canary}");
    let rows = m.fetch_all(ConnectionMode::ReadWrite, &count, &[]).await.unwrap();
    assert_eq!(rows[0].try_get::<i64>("n").unwrap(), 0, "the canary table is gone");
    m.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {canary}"), &[]).await.unwrap();
    m.close().await.unwrap();
}

/// Generates the secrets and injection tests for `$backend` on every database.
#[macro_export]
macro_rules! secrets_suite {
    ($module:ident, $backend:ty) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::secrets_suite!(@tests $backend;
                (postgres_nothing_shows_the_password, nothing_shows_the_password, ::ucm_kernel::DatabaseKind::Postgres),
                (mysql_nothing_shows_the_password, nothing_shows_the_password, ::ucm_kernel::DatabaseKind::MySql),
                (sqlite_nothing_shows_the_password, nothing_shows_the_password, ::ucm_kernel::DatabaseKind::Sqlite),
                (postgres_hostile_settings_never_run, hostile_settings_never_run, ::ucm_kernel::DatabaseKind::Postgres),
                (mysql_hostile_settings_never_run, hostile_settings_never_run, ::ucm_kernel::DatabaseKind::MySql),
                (sqlite_hostile_settings_never_run, hostile_settings_never_run, ::ucm_kernel::DatabaseKind::Sqlite));
        }
    };
    (@tests $backend:ty; $(($name:ident, $scenario:ident, $kind:expr)),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(target) = $crate::Target::find($kind) {
                    $crate::secrets::$scenario::<$backend>(&target).await;
                }
            }
        )+
    };
}
