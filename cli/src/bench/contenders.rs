//! The contenders: raw sqlx `PgPool`, raw deadpool-postgres, raw diesel-async over deadpool, ucm-sqlx and ucm-diesel (pooled and pipelined), one shared tokio-postgres connection, each running the same two reads (a prepared `SELECT 1`, and a small indexed read) with values decoded; pgbench as the C baseline.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::tokio_postgres;
use deadpool_postgres::{ManagerConfig as DeadpoolConfig, RecyclingMethod};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::AsyncPgConnection;
use sqlx::postgres::PgPoolOptions;
use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseUrl, Manager, ManagerConfig, ManagerMode,
    PoolConfiguration, SslMode, Value,
};
use ucm_diesel::{Diesel, DieselConnection};
use ucm_kernel::backend::Backend;
use ucm_sqlx::{Sqlx, SqlxConnection, SqlxManager};

use super::load::Op;

/// Every contender's pool holds at most this many connections.
pub(crate) const POOL_MAX: usize = 20;

/// Shared connections per mode of the pipelined contender's lane: one, like the shared
/// tokio-postgres reference (on two cores, one server process per connection serves more
/// than two splitting them; the manager's default is two).
pub(crate) const PIPELINE_WIDTH: usize = 1;

/// Rows in the indexed-read table.
const ITEMS: i64 = 10_000;

/// The indexed read every contender runs, on [`items_table`]'s table.
fn indexed_sql(table: &str) -> String {
    format!("SELECT name, price FROM {table} WHERE id = $1")
}

/// A pool under test and its two operations.
pub(crate) struct Contender {
    pub(crate) name: &'static str,
    /// A prepared `SELECT 1`.
    pub(crate) select1: Op,
    /// A primary-key lookup in a table of [`ITEMS`] rows, at a random key.
    pub(crate) indexed: Op,
    close: Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>,
}

impl Contender {
    pub(crate) async fn close(self) {
        (self.close)().await;
    }
}

/// How the contenders built on tokio-postgres (deadpool-postgres, diesel-async, the shared
/// connections) reach the server: the URL's settings, and for TLS the rustls configuration
/// ucm-diesel would use for it, so they share the transport of sqlx, ucm and pgbench.
#[derive(Clone)]
struct PgTransport {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl PgTransport {
    fn new(url: &str) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(url)?;
        let mut config = tokio_postgres::Config::new();
        config.host(url.host().unwrap_or("localhost")).port(url.port().unwrap_or(5432));
        if let Some(user) = url.user() {
            config.user(user);
        }
        if let Some(password) = url.password() {
            config.password(password.expose());
        }
        if let Some(database) = url.database() {
            config.dbname(database);
        }
        // tokio-postgres knows three modes; what is checked of the certificate is the
        // rustls configuration's.
        config.ssl_mode(match url.ssl_mode() {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let tls = ucm_diesel::postgres_tls_config(&url)?
            .map(tokio_postgres_rustls::MakeRustlsConnect::new);
        Ok(Self { config, tls })
    }

    /// A tokio-postgres client, its connection driven by a task of its own.
    async fn client(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(connection);
                Ok(client)
            }
            None => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    }

    /// A diesel-async connection on this transport (diesel-async's own `establish` knows
    /// only plaintext).
    async fn diesel(&self) -> diesel::ConnectionResult<AsyncPgConnection> {
        let client = self
            .client()
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
        AsyncPgConnection::try_from(client).await
    }
}

/// A random key of the items table.
fn key() -> i64 {
    rand::random_range(1..=ITEMS)
}

/// The name of this run's items table.
pub(crate) fn items_table() -> String {
    format!("ucm_bench_items_{}", std::process::id())
}

/// Creates and fills the items table (through ucm: it is also what the benchmark measures).
pub(crate) async fn create_items(url: &str) -> anyhow::Result<()> {
    let manager =
        SqlxManager::connect(ManagerConfig::builder(ManagerMode::Admin).primary(url).build()?)
            .await?;
    let table = items_table();
    manager
        .execute(ConnectionMode::ReadWrite, &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price BIGINT NOT NULL)"), &[])
        .await?;
    manager
        .execute(
            ConnectionMode::ReadWrite,
            &format!("INSERT INTO {table} SELECT g, 'item ' || g, g * 7 % 1000 FROM generate_series(1, {ITEMS}) AS g"),
            &[],
        )
        .await?;
    manager.execute(ConnectionMode::ReadWrite, &format!("ANALYZE {table}"), &[]).await?;
    manager.close().await?;
    Ok(())
}

/// Drops the items table.
pub(crate) async fn drop_items(url: &str) -> anyhow::Result<()> {
    let manager =
        SqlxManager::connect(ManagerConfig::builder(ManagerMode::Admin).primary(url).build()?)
            .await?;
    manager
        .execute(ConnectionMode::ReadWrite, &format!("DROP TABLE IF EXISTS {}", items_table()), &[])
        .await?;
    manager.close().await?;
    Ok(())
}

/// The contenders, in families measured one after the other: each family's pools (at most
/// [`POOL_MAX`] connections each) fit together in PostgreSQL's default `max_connections`
/// of 100, and each ucm contender is measured interleaved with the raw pool it is judged
/// against.
pub(crate) const FAMILIES: usize = 2;

/// Builds family `family` (see [`FAMILIES`]) against `url`.
pub(crate) async fn family(url: &str, family: usize) -> anyhow::Result<Vec<Contender>> {
    Ok(match family {
        0 => vec![
            sqlx_pool(url, true).await?,
            sqlx_pool(url, false).await?,
            deadpool(url)?,
            ucm_neutral::<Sqlx>(url, &[], 0).await?,
            ucm_sqlx_native(url).await?,
        ],
        _ => vec![
            diesel_pool(url)?,
            ucm_neutral::<Diesel>(url, &[], 0).await?,
            ucm_diesel_native(url).await?,
            ucm_neutral::<Diesel>(url, &[], PIPELINE_WIDTH).await?,
            diesel_shared(url).await?,
            tokio_postgres_shared(url).await?,
        ],
    })
}

/// The HA-overhead pair: ucm-sqlx reading through one endpoint, and with one replica
/// configured: a real one when given, else the same server under another name (so it
/// counts as a second endpoint and the comparison isolates the routing cost).
/// With `replica` given (a real streaming replica of `url`'s server), reads go to it.
pub(crate) async fn ha_pair(url: &str, replica: Option<&str>) -> anyhow::Result<[Contender; 2]> {
    let replica = match replica {
        Some(replica) => replica.to_owned(),
        None => url.replacen("127.0.0.1", "localhost", 1),
    };
    anyhow::ensure!(
        replica != url,
        "the HA comparison needs a replica URL (--replica-url) or a URL with host 127.0.0.1 (it reaches the same server as localhost)"
    );
    let mut single = ucm_neutral::<Sqlx>(url, &[], 0).await?;
    single.name = "ucm-sqlx, single endpoint";
    let mut routed = ucm_neutral::<Sqlx>(url, &[replica], 0).await?;
    routed.name = "ucm-sqlx, one replica";
    Ok([single, routed])
}

/// sqlx's own `PgPool`; `ping` is its default `test_before_acquire` (a round trip per checkout).
async fn sqlx_pool(url: &str, ping: bool) -> anyhow::Result<Contender> {
    let pool = PgPoolOptions::new()
        .max_connections(POOL_MAX as u32)
        .min_connections(POOL_MAX as u32)
        .test_before_acquire(ping)
        .connect(url)
        .await?;
    let (p1, p2, table) = (pool.clone(), pool.clone(), Arc::new(indexed_sql(&items_table())));
    Ok(Contender {
        name: if ping { "sqlx PgPool (default)" } else { "sqlx PgPool (no ping)" },
        select1: Arc::new(move || {
            let pool = p1.clone();
            Box::pin(async move {
                let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        indexed: Arc::new(move || {
            let (pool, sql) = (p2.clone(), Arc::clone(&table));
            Box::pin(async move {
                let (_name, _price): (String, i64) =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(key())
                        .fetch_one(&pool)
                        .await?;
                Ok(())
            })
        }),
        close: Box::new(move || Box::pin(async move { pool.close().await })),
    })
}

/// deadpool-postgres with its fast recycling and cached prepared statements.
fn deadpool(url: &str) -> anyhow::Result<Contender> {
    let transport = PgTransport::new(url)?;
    let config = DeadpoolConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match transport.tls {
        Some(tls) => deadpool_postgres::Manager::from_config(transport.config, tls, config),
        None => {
            deadpool_postgres::Manager::from_config(transport.config, tokio_postgres::NoTls, config)
        }
    };
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_MAX)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?;
    let (p1, p2, table) = (pool.clone(), pool.clone(), Arc::new(indexed_sql(&items_table())));
    Ok(Contender {
        name: "deadpool-postgres",
        select1: Arc::new(move || {
            let pool = p1.clone();
            Box::pin(async move {
                let client = pool.get().await?;
                let statement = client.prepare_cached("SELECT 1").await?;
                let one: i32 = client.query_one(&statement, &[]).await?.get(0);
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        indexed: Arc::new(move || {
            let (pool, sql) = (p2.clone(), Arc::clone(&table));
            Box::pin(async move {
                let client = pool.get().await?;
                let statement = client.prepare_cached(&sql).await?;
                let row = client.query_one(&statement, &[&key()]).await?;
                let (_name, _price): (String, i64) = (row.get(0), row.get(1));
                Ok(())
            })
        }),
        close: Box::new(move || Box::pin(async move { pool.close() })),
    })
}

/// The row of the `SELECT 1` as diesel reads it.
#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Integer)]
    one: i32,
}

/// The row of the indexed read as diesel reads it.
#[derive(QueryableByName)]
struct Item {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)] // Decoded, as every contender decodes its values, then dropped.
    name: String,
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)]
    price: i64,
}

/// diesel-async's own deadpool integration with fast recycling (no ping per checkout, as
/// for deadpool-postgres), running `sql_query` with diesel's typed rows.
fn diesel_pool(url: &str) -> anyhow::Result<Contender> {
    use diesel_async::pooled_connection::deadpool::Pool;
    use diesel_async::pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig as DieselConfig, RecyclingMethod as Recycling,
    };
    let transport = PgTransport::new(url)?;
    let mut config = DieselConfig::default();
    config.recycling_method = Recycling::Fast;
    config.custom_setup = Box::new(move |_url| {
        let transport = transport.clone();
        Box::pin(async move { transport.diesel().await })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url, config);
    let pool = Pool::builder(manager).max_size(POOL_MAX).build()?;
    let (p1, p2, table) = (pool.clone(), pool.clone(), Arc::new(indexed_sql(&items_table())));
    Ok(Contender {
        name: "diesel-async deadpool",
        select1: Arc::new(move || {
            let pool = p1.clone();
            Box::pin(async move {
                let mut connection = pool.get().await?;
                diesel_select1(&mut connection).await
            })
        }),
        indexed: Arc::new(move || {
            let (pool, sql) = (p2.clone(), Arc::clone(&table));
            Box::pin(async move {
                let mut connection = pool.get().await?;
                diesel_indexed(&mut connection, &sql).await
            })
        }),
        close: Box::new(move || Box::pin(async move { pool.close() })),
    })
}

async fn diesel_select1(connection: &mut AsyncPgConnection) -> anyhow::Result<()> {
    let row: One =
        diesel_async::RunQueryDsl::get_result(diesel::sql_query("SELECT 1 AS one"), connection)
            .await?;
    anyhow::ensure!(row.one == 1, "SELECT 1 returned {}", row.one);
    Ok(())
}

async fn diesel_indexed(connection: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<()> {
    let query = diesel::sql_query(sql).bind::<BigInt, _>(key());
    let _item: Item = diesel_async::RunQueryDsl::get_result(query, connection).await?;
    Ok(())
}

/// A ucm manager of backend `B` with a pool of [`POOL_MAX`], reads in `ReadOnly` mode;
/// its single statements go through the pipelined lane with `pipeline_width` shared
/// connections per mode (0: the pooled path).
async fn ucm_manager<B: Backend>(
    url: &str,
    replicas: &[String],
    pipeline_width: usize,
) -> anyhow::Result<Arc<Manager<B>>> {
    let pool = PoolConfiguration::builder(ManagerMode::AsyncModern)
        .pool_size(POOL_MAX)
        .max_overflow(0)
        .acquire_timeout(Duration::from_secs(10))
        .application_name("ucm_bench")
        .build()?;
    let config = ManagerConfig::builder(ManagerMode::AsyncModern)
        .primary(url)
        .replicas(replicas)
        .pool(pool)
        .build()?;
    Ok(Arc::new(Manager::<B>::connect(config).await?.with_pipelining(pipeline_width)))
}

/// The contender's `close`: drains the manager.
fn close_manager<B: Backend>(
    manager: Arc<Manager<B>>,
) -> Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send> {
    Box::new(move || {
        Box::pin(async move {
            let _ = manager.close().await;
        })
    })
}

/// ucm on backend `B` through the neutral API: `fetch_all` in `ReadOnly` mode, rows as
/// `Value`s, under the retry policy; through the pipelined lane when `pipeline_width` is
/// not 0.
async fn ucm_neutral<B: Backend>(
    url: &str,
    replicas: &[String],
    pipeline_width: usize,
) -> anyhow::Result<Contender> {
    let manager = ucm_manager::<B>(url, replicas, pipeline_width).await?;
    let sql = Arc::new(indexed_sql(&items_table()));
    let (m1, m2) = (Arc::clone(&manager), Arc::clone(&manager));
    Ok(Contender {
        name: match (B::NAME, pipeline_width) {
            ("diesel", 0) => "ucm-diesel (neutral)",
            ("diesel", _) => "ucm-diesel (pipelined)",
            (_, 0) => "ucm-sqlx (neutral)",
            _ => "ucm-sqlx (pipelined)",
        },
        select1: Arc::new(move || {
            let manager = Arc::clone(&m1);
            Box::pin(async move {
                let rows =
                    manager.fetch_all(ConnectionMode::ReadOnly, "SELECT 1 AS one", &[]).await?;
                let one: i64 =
                    rows.first().map(|r| r.try_get("one")).transpose()?.unwrap_or_default();
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        indexed: Arc::new(move || {
            let (manager, sql) = (Arc::clone(&m2), Arc::clone(&sql));
            Box::pin(async move {
                let rows =
                    manager.fetch_all(ConnectionMode::ReadOnly, &sql, &[Value::Int(key())]).await?;
                anyhow::ensure!(rows.len() == 1, "expected one row, got {}", rows.len());
                Ok(())
            })
        }),
        close: close_manager(manager),
    })
}

/// ucm-sqlx natively: a checkout from ucm's pool, then sqlx's own query on it.
async fn ucm_sqlx_native(url: &str) -> anyhow::Result<Contender> {
    let manager: Arc<SqlxManager> = ucm_manager::<Sqlx>(url, &[], 0).await?;
    let sql = Arc::new(indexed_sql(&items_table()));
    let (m1, m2) = (Arc::clone(&manager), Arc::clone(&manager));
    Ok(Contender {
        name: "ucm-sqlx (native)",
        select1: Arc::new(move || {
            let manager = Arc::clone(&m1);
            Box::pin(async move {
                let mut connection = manager.get_connection(ConnectionMode::ReadOnly).await?;
                let SqlxConnection::Postgres(session) = &mut connection else {
                    anyhow::bail!("not a PostgreSQL connection");
                };
                let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(session.driver()).await?;
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        indexed: Arc::new(move || {
            let (manager, sql) = (Arc::clone(&m2), Arc::clone(&sql));
            Box::pin(async move {
                let mut connection = manager.get_connection(ConnectionMode::ReadOnly).await?;
                let SqlxConnection::Postgres(session) = &mut connection else {
                    anyhow::bail!("not a PostgreSQL connection");
                };
                let (_name, _price): (String, i64) =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(key())
                        .fetch_one(session.driver())
                        .await?;
                Ok(())
            })
        }),
        close: close_manager(manager),
    })
}

/// ucm-diesel natively: a checkout from ucm's pool, then the diesel DSL on it, exactly as
/// the raw diesel-async contender runs it.
async fn ucm_diesel_native(url: &str) -> anyhow::Result<Contender> {
    let manager = ucm_manager::<Diesel>(url, &[], 0).await?;
    let sql = Arc::new(indexed_sql(&items_table()));
    let (m1, m2) = (Arc::clone(&manager), Arc::clone(&manager));
    Ok(Contender {
        name: "ucm-diesel (native)",
        select1: Arc::new(move || {
            let manager = Arc::clone(&m1);
            Box::pin(async move {
                let mut connection = manager.get_connection(ConnectionMode::ReadOnly).await?;
                let DieselConnection::Postgres(session) = &mut connection else {
                    anyhow::bail!("not a PostgreSQL connection");
                };
                diesel_select1(session.driver()).await
            })
        }),
        indexed: Arc::new(move || {
            let (manager, sql) = (Arc::clone(&m2), Arc::clone(&sql));
            Box::pin(async move {
                let mut connection = manager.get_connection(ConnectionMode::ReadOnly).await?;
                let DieselConnection::Postgres(session) = &mut connection else {
                    anyhow::bail!("not a PostgreSQL connection");
                };
                diesel_indexed(session.driver(), &sql).await
            })
        }),
        close: close_manager(manager),
    })
}

/// diesel-async's own pipelining, with nothing of ucm's: one `AsyncPgConnection` shared
/// by every task through `&AsyncPgConnection`, the same `sql_query` as the pooled diesel
/// contender; what the pipelined ucm-diesel lane is built on.
async fn diesel_shared(url: &str) -> anyhow::Result<Contender> {
    let connection = Arc::new(PgTransport::new(url)?.diesel().await?);
    let (c1, c2, table) =
        (Arc::clone(&connection), Arc::clone(&connection), Arc::new(indexed_sql(&items_table())));
    Ok(Contender {
        name: "diesel-async, one shared connection",
        select1: Arc::new(move || {
            let connection = Arc::clone(&c1);
            Box::pin(async move {
                let mut shared: &AsyncPgConnection = &connection;
                let row: One = diesel_async::RunQueryDsl::get_result(
                    diesel::sql_query("SELECT 1 AS one"),
                    &mut shared,
                )
                .await?;
                anyhow::ensure!(row.one == 1, "SELECT 1 returned {}", row.one);
                Ok(())
            })
        }),
        indexed: Arc::new(move || {
            let (connection, sql) = (Arc::clone(&c2), Arc::clone(&table));
            Box::pin(async move {
                let mut shared: &AsyncPgConnection = &connection;
                let query = diesel::sql_query(sql.as_str()).bind::<BigInt, _>(key());
                let _item: Item = diesel_async::RunQueryDsl::get_result(query, &mut shared).await?;
                Ok(())
            })
        }),
        close: Box::new(move || Box::pin(async move { drop(connection) })),
    })
}

/// The pipelining ceiling: one tokio-postgres connection shared by every task (no pool,
/// no routing, no breaker), statements prepared once; what a lane of one connection could
/// reach with nothing of ucm's on the path.
async fn tokio_postgres_shared(url: &str) -> anyhow::Result<Contender> {
    let client = PgTransport::new(url)?.client().await?;
    let select1 = client.prepare("SELECT 1").await?;
    // Prepared on first use: the items table exists only while the benchmark runs.
    let indexed = Arc::new(tokio::sync::OnceCell::new());
    let client = Arc::new(client);
    let (c1, c2) = (Arc::clone(&client), Arc::clone(&client));
    let sql = Arc::new(indexed_sql(&items_table()));
    Ok(Contender {
        name: "tokio-postgres, one shared connection",
        select1: Arc::new(move || {
            let (client, statement) = (Arc::clone(&c1), select1.clone());
            Box::pin(async move {
                let one: i32 = client.query_one(&statement, &[]).await?.get(0);
                anyhow::ensure!(one == 1, "SELECT 1 returned {one}");
                Ok(())
            })
        }),
        indexed: Arc::new(move || {
            let (client, indexed, sql) = (Arc::clone(&c2), Arc::clone(&indexed), Arc::clone(&sql));
            Box::pin(async move {
                let statement = indexed.get_or_try_init(|| client.prepare(&sql)).await?;
                let row = client.query_one(statement, &[&key()]).await?;
                let (_name, _price): (String, i64) = (row.get(0), row.get(1));
                Ok(())
            })
        }),
        // The connection's task ends once the operations, which hold the client too, are
        // dropped with the contender.
        close: Box::new(move || Box::pin(async move { drop(client) })),
    })
}

/// pgbench's transactions per second for a prepared `SELECT 1` at `clients`, or `None`
/// (with the reason printed) when pgbench is not available or fails.
pub(crate) fn pgbench(
    binary: Option<&Path>,
    url: &str,
    clients: usize,
    duration: Duration,
) -> Option<f64> {
    let binary = binary.map(Path::to_path_buf).or_else(find_pgbench)?;
    let script = std::env::temp_dir().join("ucm-bench-select1.sql");
    std::fs::write(&script, "SELECT 1;\n").ok()?;
    // The connection goes through libpq's environment variables rather than a URL argument,
    // which every user of the machine could read in the process list, password included.
    let parsed = DatabaseUrl::parse(url).ok()?;
    let mut command = Command::new(&binary);
    command
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&script)
        .args(["-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .env("PGSSLMODE", parsed.ssl_mode().as_str());
    for (variable, value) in [
        ("PGHOST", parsed.host()),
        ("PGUSER", parsed.user()),
        ("PGPASSWORD", parsed.password().map(|p| p.expose())),
        ("PGDATABASE", parsed.database()),
    ] {
        if let Some(value) = value {
            command.env(variable, value);
        }
    }
    if let Some(port) = parsed.port() {
        command.env("PGPORT", port.to_string());
    }
    let output = command.output().ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok());
    if tps.is_none() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        eprintln!(
            "pgbench at {clients} clients gave no tps: {}",
            parsed.scrub(stderr.lines().last().unwrap_or(""))
        );
    }
    tps
}

fn find_pgbench() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|p| p.is_file());
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin/pgbench")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}
