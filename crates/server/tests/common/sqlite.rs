//! Helpers of the SQLite store's own tests: stores with a quiet compactor, stamped messages,
//! and reads of the files beside the store.

use natter::store::{Appended, SqliteStore, Store, Stream, Tuning};
use natter_protocol::Msg;

/// A store whose compactor moves the log only when told (`prune(0)`), for tests that count
/// chunks.
pub async fn open_quiet(path: &str, log_limit: Option<i64>) -> SqliteStore {
    let mut tuning = Tuning {
        compact_every: std::time::Duration::from_secs(3600),
        ..Tuning::default()
    };
    if let Some(limit) = log_limit {
        tuning.log_limit = limit;
    }
    SqliteStore::open_tuned(path, tuning).await.unwrap()
}

/// A new directory for a store: the directory, and its path as `SqliteStore::open` takes it.
pub fn fresh_dir(name: &str) -> (std::path::PathBuf, String) {
    let dir = super::temp_dir(name);
    let path = dir.to_string_lossy().into_owned();
    (dir, path)
}

/// A stamped message as the gateway hands it to the store; `n` orders the server ids.
pub fn msg(n: u32, from: &str, to: &str, local_id: &str) -> Msg {
    Msg {
        send_id: from.into(),
        receiver_id: to.into(),
        local_id: local_id.into(),
        server_id: format!("0190f000-0000-7000-8000-{n:012}"),
        send_time: 1_700_000_000_000 + i64::from(n),
        content: format!("m{n}"),
        ..Msg::default()
    }
}

pub fn seqs(outcomes: &[Appended]) -> Vec<(i64, bool)> {
    outcomes
        .iter()
        .map(|o| match o {
            Appended::New { seq, .. } => (*seq, true),
            Appended::Duplicate(m) => (m.seq, false),
        })
        .collect()
}

pub async fn inbox(store: &SqliteStore, user: &str, after: i64) -> Vec<(i64, String, bool)> {
    store
        .after(user, Stream::Inbox, after, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.content, m.is_read))
        .collect()
}

/// A connection of the test's own to one of the store's files.
pub async fn file(dir: &std::path::Path, name: &str) -> sqlx::SqliteConnection {
    let path = dir.join(name).to_string_lossy().into_owned();
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{path}"))
        .await
        .unwrap()
}

pub async fn count(conn: &mut sqlx::SqliteConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

pub async fn stream(
    store: &SqliteStore,
    user: &str,
    s: Stream,
    after: i64,
    limit: u32,
) -> Vec<i64> {
    store
        .after(user, s, after, limit)
        .await
        .unwrap()
        .iter()
        .map(|m| match s {
            Stream::Inbox => m.seq,
            Stream::Sent => m.send_seq,
        })
        .collect()
}
