//! The services tests run on: a store (SQLite, or a PostgreSQL database of the test's own) and
//! Redis (a key prefix of the test's own, or a redis-server of its own).

use std::time::Duration;

use natter::Config;

use super::{test_config, unique};

/// Which store a behavioural test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests use (a database of their own is created on it per test).
pub fn pg_admin_url() -> String {
    std::env::var("NATTER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty PostgreSQL database for one test; returns its URL.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = pg_admin_url();
    // scripts/test names this run's databases with a prefix of its own, and drops them after.
    let prefix = std::env::var("NATTER_TEST_DB_PREFIX").unwrap_or_else(|_| "natter_test_".into());
    let name = format!("{prefix}{}", unique());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL for tests (set NATTER_TEST_PG_URL; scripts/test starts one)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

/// Runs one statement on the test's database, from outside the server.
pub async fn sql(backend: Backend, target: &str, statement: &str) {
    use sqlx::{Connection, PgConnection, SqliteConnection, sqlite::SqliteConnectOptions};
    match backend {
        Backend::Sqlite => {
            let options = SqliteConnectOptions::new().filename(target);
            let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = PgConnection::connect(target).await.unwrap();
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    }
}

/// A test config on the given backend, each with storage of its own.
pub async fn config_for(backend: Backend) -> Config {
    let mut config = test_config();
    if let Backend::Postgres = backend {
        config.storage.backend = natter::config::StorageBackend::Postgres;
        config.storage.url = fresh_pg_database().await;
        config.storage.pool_size = 4;
    }
    config
}

/// The server API's key on every node of a test cluster.
pub const CLUSTER_SERVICE_KEY: &str = "cluster-test-service-key-of-32-bytes";

/// A config for one node of a test cluster: a shared PostgreSQL database and Redis key prefix.
pub fn cluster_node_config(pg_url: &str, prefix: &str, redis_url: &str) -> Config {
    let mut config = test_config();
    config.storage.backend = natter::config::StorageBackend::Postgres;
    config.storage.url = pg_url.to_string();
    config.storage.pool_size = 4;
    config.cluster.enabled = true;
    config.cluster.redis_url = redis_url.to_string();
    config.cluster.key_prefix = prefix.to_string();
    config.cluster.presence_ttl = Duration::from_millis(900);
    config.service.key = CLUSTER_SERVICE_KEY.into();
    config
}

/// A Redis key prefix of this test's own.
pub fn redis_prefix(tag: &str) -> String {
    format!("natter-test-{tag}-{}", unique())
}

pub fn redis_url() -> String {
    std::env::var("NATTER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis server of this test's own, on a free port, so it can be stopped and started.
pub async fn own_redis(port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (scripts/test installs it)");
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
