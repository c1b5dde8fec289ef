//! `ucm::web` over real HTTP on PostgreSQL: a handler's request session, 409 for a constraint, 503 with `Retry-After` once the database is unavailable, readiness and liveness, and no SQL or server message in any body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use reqwest::StatusCode;
use serde_json::Value;
use ucm::testing::TestDatabase;
use ucm::web::{HttpError, RequestSession, health_routes};
use ucm::{ConnectionManagerProtocol, ConnectionMode, UnifiedManager};

async fn create(session: RequestSession, Path(id): Path<i64>) -> Result<StatusCode, HttpError> {
    session
        .execute(ConnectionMode::ReadWrite, "INSERT INTO web_items (id) VALUES ($1)", &[id.into()])
        .await?;
    Ok(StatusCode::CREATED)
}

async fn count(session: RequestSession) -> Result<String, HttpError> {
    let rows = session
        .fetch_all(ConnectionMode::ReadOnly, "SELECT count(*) AS n FROM web_items", &[])
        .await?;
    Ok(rows[0].try_get::<i64>("n")?.to_string())
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), json(response).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_with_the_right_statuses_and_bodies() {
    let Some(admin) = common::url("PG_DATABASE_URL") else { return };
    let db = TestDatabase::create(&admin).await.unwrap();
    let manager: Arc<UnifiedManager> = Arc::clone(db.manager());
    manager
        .execute(ConnectionMode::ReadWrite, "CREATE TABLE web_items (id INT8 PRIMARY KEY)", &[])
        .await
        .unwrap();
    manager.health_check().await;
    let app = Router::new()
        .route("/items/{id}", post(create))
        .route("/items", get(count))
        .merge(health_routes())
        .with_state(Arc::clone(&manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::new();

    let (status, body) = get_json(&client, &format!("{base}/health/live")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("alive")));
    let (status, body) = get_json(&client, &format!("{base}/health/ready")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["endpoints"][0]["role"], "primary", "{body}");

    let created = client.post(format!("{base}/items/1")).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let count = client.get(format!("{base}/items")).send().await.unwrap();
    assert_eq!(count.text().await.unwrap(), "1");

    // The same id again: a constraint violation, 409, with a fixed message.
    let conflict = client.post(format!("{base}/items/1")).send().await.unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert!(conflict.headers().get("retry-after").is_none());
    let body = json(conflict).await;
    assert_eq!(body["error"], "constraint", "{body}");
    let text = body.to_string();
    for secret in ["web_items", "INSERT", "duplicate", "127.0.0.1", "23505"] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }

    // The database goes away for the service: 503 with Retry-After, and not ready.
    manager.close().await.unwrap();
    let unavailable = client.post(format!("{base}/items/2")).send().await.unwrap();
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.headers()["retry-after"], "1");
    let body = json(unavailable).await;
    assert_eq!(body["error"], "closed", "{body}");
    assert!(!body.to_string().contains("web_items"), "{body}");
    let (status, body) = get_json(&client, &format!("{base}/health/ready")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("closed"))
    );
    let (status, _) = get_json(&client, &format!("{base}/health/live")).await;
    assert_eq!(status, StatusCode::OK, "liveness does not depend on the database");

    server.abort();
    db.close().await.unwrap();
}

/// A query error that is neither a conflict nor an outage is a 500 that says nothing of the
/// database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_are_500_without_details() {
    let Some(admin) = common::url("PG_DATABASE_URL") else { return };
    let db = TestDatabase::create(&admin).await.unwrap();
    let app = Router::new().route("/items", get(count)).with_state(Arc::clone(db.manager()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // No table yet: the database rejects the query.
    let response = reqwest::get(format!("{base}/items")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json(response).await;
    assert_eq!(body["message"], "internal error", "{body}");
    assert!(!body.to_string().contains("web_items"), "{body}");
    server.abort();
    db.close().await.unwrap();
}
