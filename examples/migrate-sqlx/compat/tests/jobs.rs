//! The jobs service's own tests: each creates a fresh database, starts the real server on 127.0.0.1:0 and sends it real HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use migrate_sqlx_compat::{connect, migrate, serve, spawn_worker};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres};
use tokio::task::JoinHandle;
use ucm_compat::ucm::ConnectionManagerProtocol;
use ucm_sqlx::SqlxPool;

/// The PostgreSQL server to test against: `PG_DATABASE_URL`, else a PostgreSQL
/// `DATABASE_URL`. Missing, the test is skipped with the reason printed, or fails under `CI`.
fn admin_url() -> Option<String> {
    let from_var = std::env::var("PG_DATABASE_URL").ok().filter(|v| !v.is_empty());
    let fallback = std::env::var("DATABASE_URL").ok().filter(|v| v.starts_with("postgres"));
    match from_var.or(fallback) {
        Some(url) => Some(url),
        None => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !ci,
                "PG_DATABASE_URL is not set and CI is: run the tests through `cargo xtask test`"
            );
            eprintln!(
                "skipped: PG_DATABASE_URL is not set (run `cargo xtask test`, which finds or starts PostgreSQL)"
            );
            None
        }
    }
}

/// `url` with its database replaced by `database` (the query string is kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A database name no other test, run or state of the example uses.
fn unique_database() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("ucm_ex_{}_{n}_{nanos}", std::process::id())
}

/// The running service, as a test sees it.
struct App {
    base: String,
    /// The service's database URL.
    url: String,
    client: reqwest::Client,
    pool: SqlxPool<Postgres>,
    worker: Option<JoinHandle<()>>,
}

impl App {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request =
                request.header(header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a job and returns it, checking the answer.
    async fn create(&self, kind: &str) -> Value {
        let (status, job) = self.post("/jobs", json!({ "kind": kind, "payload": "p" })).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        job
    }

    fn start_worker(&mut self, every: Duration, batch: i64) {
        self.worker = Some(spawn_worker(self.pool.clone(), every, batch));
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
    }
}

/// Runs `test` against the service on a database of its own, created here and dropped
/// afterwards, even when the test fails.
async fn with_app<F, Fut>(test: F)
where
    F: FnOnce(App) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin_url) = admin_url() else { return };
    let database = unique_database();
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await
        .unwrap();

    let url = with_database(&admin_url, &database);
    let pool = connect(&url).await.unwrap();
    migrate(&pool).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(serve(listener, pool.clone()));
    let app = App { base, client: reqwest::Client::new(), url, pool, worker: None };

    let outcome = tokio::spawn(test(app)).await;

    server.abort();
    let _ = server.await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn a_job_is_created_with_its_audit_row_and_read_back() {
    with_app(|app| async move {
        let job = app.create("resize").await;
        assert_eq!(job["state"], "queued");
        assert_eq!(job["kind"], "resize");
        let id = job["id"].as_i64().unwrap();

        let (status, read) = app.get(&format!("/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read, job);

        let (status, events) = app.get(&format!("/jobs/{id}/events")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(events, json!([{ "event": "created", "detail": "resize" }]));

        let (status, list) = app.get("/jobs").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list, json!([job]));

        let (_, stats) = app.get("/stats").await;
        assert_eq!(stats, json!({ "queued": 1, "done": 0, "cancelled": 0 }));

        let (status, _) = app.get("/jobs/999999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn a_failed_audit_row_rolls_back_its_job() {
    with_app(|app| async move {
        // The job row accepts any kind, its audit row at most 64 characters: the insert of
        // the audit row fails inside the transaction, and the job must go with it.
        let (status, body) = app.post("/jobs", json!({ "kind": "x".repeat(100) })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

        let (_, list) = app.get("/jobs").await;
        assert_eq!(list, json!([]));
        let (_, stats) = app.get("/stats").await;
        assert_eq!(stats, json!({ "queued": 0, "done": 0, "cancelled": 0 }));
    })
    .await;
}

#[tokio::test]
async fn a_queued_job_is_cancelled_once() {
    with_app(|app| async move {
        let id = app.create("email").await["id"].as_i64().unwrap();

        let (status, job) = app.post(&format!("/jobs/{id}/cancel"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        assert_eq!(job["state"], "cancelled");

        let (status, _) = app.post(&format!("/jobs/{id}/cancel"), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = app.post("/jobs/999999/cancel", json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (_, events) = app.get(&format!("/jobs/{id}/events")).await;
        assert_eq!(
            events,
            json!([
                { "event": "created", "detail": "email" },
                { "event": "cancelled", "detail": "api" },
            ])
        );
    })
    .await;
}

#[tokio::test]
async fn the_worker_finishes_queued_jobs_in_bounded_batches() {
    with_app(|mut app| async move {
        for kind in ["a", "b", "c", "d", "e"] {
            app.create(kind).await;
        }
        app.start_worker(Duration::from_millis(20), 2);

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, stats) = app.get("/stats").await;
            assert_eq!(status, StatusCode::OK);
            if stats["done"] == 5 {
                assert_eq!(stats, json!({ "queued": 0, "done": 5, "cancelled": 0 }));
                break;
            }
            assert!(Instant::now() < deadline, "the worker did not finish the jobs: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let (_, list) = app.get("/jobs").await;
        for job in list.as_array().unwrap() {
            assert_eq!(job["state"], "done");
            let (_, events) = app.get(&format!("/jobs/{}/events", job["id"])).await;
            assert_eq!(events[1], json!({ "event": "done", "detail": "worker" }));
        }
    })
    .await;
}

/// A worker set up apart from the API, with a `connect` of its own (as services often build
/// a pool per component), after real traffic from both: the server holds exactly the
/// connections their pools hold, counted in `pg_stat_activity` on the test's own database.
/// Under ucm-compat with `unified-v2` the two handles are one manager, so one pool's.
#[tokio::test]
async fn a_worker_with_its_own_connect_and_the_api_hold_what_their_pools_hold() {
    with_app(|mut app| async move {
        let worker_pool = connect(&app.url).await.unwrap();
        app.worker = Some(spawn_worker(worker_pool.clone(), Duration::from_millis(10), 3));
        let requests: Vec<_> = (0..12)
            .map(|i| {
                let (client, base) = (app.client.clone(), app.base.clone());
                tokio::spawn(async move {
                    let body = json!({ "kind": format!("k{i}") }).to_string();
                    let response = client
                        .post(format!("{base}/jobs"))
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::CREATED);
                })
            })
            .collect();
        for request in requests {
            request.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while app.get("/stats").await.1["done"] != 12 {
            assert!(Instant::now() < deadline, "the worker did not finish the jobs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.worker.take().unwrap().abort();

        // The pools' own bookkeeping against the server's count, once no connection is
        // being opened or closed between the two readings.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (server, pools) = loop {
            let pools = pools_connections(&app.pool, &worker_pool);
            let server: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let again = pools_connections(&app.pool, &worker_pool);
            if (server == pools && pools == again) || Instant::now() > deadline {
                break (server, pools);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("the API and a separately connected worker hold {server} connections");
        assert_eq!(server, pools, "the server sees exactly the pools' connections");
    })
    .await;
}

/// Connections the API's and the worker's pools hold, after checking that they share one
/// manager exactly when `unified-v2` is on.
fn pools_connections(api: &SqlxPool<Postgres>, worker: &SqlxPool<Postgres>) -> i64 {
    let open = |pool: &SqlxPool<Postgres>| {
        i64::try_from(pool.manager().connection_info().primary().unwrap().status.size).unwrap()
    };
    let shared = Arc::ptr_eq(api.manager(), worker.manager());
    assert_eq!(shared, ucm_compat::UNIFIED_V2, "one manager exactly when unified-v2 is on");
    if shared { open(api) } else { open(api) + open(worker) }
}
