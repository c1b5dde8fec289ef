//! The quick start as a program: `DATABASE_URL` (or, with the `sqlite` feature, a throwaway SQLite file), a table, a write, a transaction, a read, health, shutdown; run by `cargo xtask test` with the default features and with `diesel` + `postgres`.

use ucm::{
    ConnectionManagerProtocol, ConnectionMode, DatabaseKind, ManagerConfig, ManagerMode,
    ProtocolExt, Value,
};

#[tokio::main]
async fn main() -> ucm::Result<()> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if cfg!(feature = "sqlite") => {
            format!("sqlite://{}/ucm-quickstart.db", std::env::temp_dir().display())
        }
        _ => {
            return Err(ucm::Error::config(
                "DATABASE_URL",
                "set DATABASE_URL (e.g. postgres://user@localhost/db), or run with \
                 `--features sqlite` for a throwaway SQLite file",
            ));
        }
    };
    let config = ManagerConfig::builder(ManagerMode::AsyncModern).primary(&url).build()?;
    let p = |n: usize| {
        if config.kind() == DatabaseKind::Postgres { format!("${n}") } else { "?".into() }
    };
    let manager = ucm::unified_manager_for(config.clone()).await?;
    println!("ucm quick start on {} ({} backend)", config.primary(), manager.backend());

    let table = format!("ucm_quickstart_{}", std::process::id());
    manager
        .execute(
            ConnectionMode::ReadWrite,
            &format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, body TEXT NOT NULL)"),
            &[],
        )
        .await?;
    let insert = format!("INSERT INTO {table} (id, body) VALUES ({}, {})", p(1), p(2));
    manager.execute(ConnectionMode::ReadWrite, &insert, &[1.into(), "hello".into()]).await?;
    let count: i64 = manager
        .transaction(ConnectionMode::Transactional, |tx| {
            let (insert, table) = (insert.clone(), table.clone());
            Box::pin(async move {
                tx.execute(&insert, &[2.into(), "world".into()]).await?;
                let row =
                    tx.fetch_optional(&format!("SELECT count(*) AS n FROM {table}"), &[]).await?;
                row.ok_or_else(|| ucm::Error::other("no count"))?.try_get("n")
            })
        })
        .await?;
    let rows = manager
        .fetch_all(
            ConnectionMode::ReadOnly,
            &format!("SELECT body FROM {table} WHERE id = {}", p(1)),
            &[Value::Int(2)],
        )
        .await?;
    let body: String = rows.first().ok_or_else(|| ucm::Error::other("no row"))?.try_get("body")?;
    println!("{count} rows; row 2 says {body:?}; health {}", manager.health_check().await.status);
    manager.execute(ConnectionMode::ReadWrite, &format!("DROP TABLE {table}"), &[]).await?;
    ucm::shutdown_all().await?;
    if count != 2 || body != "world" {
        return Err(ucm::Error::other(format!("unexpected result: {count} rows, body {body:?}")));
    }
    Ok(())
}
