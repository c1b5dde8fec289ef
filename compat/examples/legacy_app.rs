//! A small legacy program, unchanged under both feature states: `cargo run -p ucm-compat --example legacy_app` (private pools) or `--features unified-v2` (the unified manager).

use std::time::Duration;

use ucm_compat::{DatabaseManager, DatabaseSessionManager};

fn main() -> ucm::Result<()> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        format!("sqlite://{}/ucm-legacy-app.db", std::env::temp_dir().display())
    });
    let postgres = url.starts_with("postgres");
    let p = |n: usize| if postgres { format!("${n}") } else { "?".to_owned() };
    let table = format!("legacy_orders_{}", std::process::id());

    // The sync half of the legacy application.
    let db = DatabaseManager::new(&url, false)?;
    db.session_scope(|session| {
        session
            .execute(&format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, total BIGINT)"), &[])?;
        session.execute(
            &format!("INSERT INTO {table} VALUES ({}, {})", p(1), p(2)),
            &[1.into(), 250.into()],
        )
    })?;
    let inserted = db.with_retry(
        || {
            db.execute_insert(
                &format!("INSERT INTO {table} VALUES ({}, {})", p(1), p(2)),
                &[2.into(), 100.into()],
            )
        },
        3,
        Duration::from_millis(50),
    )?;
    let rows = db.execute_query(&format!("SELECT sum(total) AS total FROM {table}"), &[])?;
    let total: i64 = rows[0].try_get::<Option<i64>>("total")?.unwrap_or_default();
    println!("sync: inserted {inserted}, total {total}, healthy {}", db.health_check());

    // The async half, on the application's own runtime.
    let runtime = tokio::runtime::Runtime::new().map_err(|e| ucm::Error::other(e.to_string()))?;
    runtime.block_on(async {
        let sessions = DatabaseSessionManager::new(&url, false)?;
        let updated = sessions
            .session_scope(|session| {
                let sql = format!("UPDATE {table} SET total = total + 1");
                Box::pin(async move { session.execute(&sql, &[]).await })
            })
            .await?;
        println!("async: updated {updated} rows");
        sessions.close().await
    })?;

    db.execute_update(&format!("DROP TABLE {table}"), &[])?;
    db.close()?;
    println!(
        "pools: {}",
        if ucm_compat::UNIFIED_V2 {
            "the unified manager (unified-v2)"
        } else {
            "one private pool per manager"
        }
    );
    Ok(())
}
