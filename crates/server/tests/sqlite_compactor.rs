//! The SQLite store's compactor: a move is applied once, the moved batches leave the log, the
//! log refuses appends at its limit when moves keep failing, and its WAL stays small.

#[macro_use]
mod common;

use common::sqlite::*;
use natter::store::{SqliteStore, Store, Stream};
use natter_protocol::Msg;

/// A crash between a move's commit in natter.db and the deletion of the moved batches from the
/// log leaves them in both files: the next start must not store them twice.
#[tokio::test]
async fn a_move_is_applied_once_even_if_the_log_kept_its_batches() {
    let (dir, path) = fresh_dir("sqlite-replay");
    let store = SqliteStore::open(&path).await.unwrap();
    let batch = [msg(1, "a", "b", "l1"), msg(2, "a", "b", "l2")];
    store.append(&batch).await.unwrap();
    let mut log = file(&dir, "natter-log.db").await;
    let kept: (i64, i64, Vec<u8>) = sqlx::query_as("SELECT first_id, count, body FROM log_batches")
        .fetch_one(&mut log)
        .await
        .unwrap();
    assert_eq!(store.prune(0).await.unwrap(), 0);
    drop(store);
    sqlx::query("INSERT INTO log_batches (first_id, count, body) VALUES (?, ?, ?)")
        .bind(kept.0)
        .bind(kept.1)
        .bind(kept.2)
        .execute(&mut log)
        .await
        .unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(stream(&store, "b", Stream::Inbox, 0, 100).await, [1, 2]);
    assert_eq!(stream(&store, "a", Stream::Sent, 0, 100).await, [1, 2]);
    assert_eq!(count(&mut log, "log_batches").await, 0);
    assert_eq!(
        seqs(&store.append(&[msg(3, "a", "b", "l3")]).await.unwrap()),
        [(3, true)]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The compactor moves the log in the background; the moved batches leave the log in the next
/// append's transaction.
#[tokio::test]
async fn the_next_append_deletes_what_the_compactor_moved() {
    let (dir, path) = fresh_dir("sqlite-clear");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append(&[msg(1, "a", "b", "l1"), msg(2, "a", "b", "l2")])
        .await
        .unwrap();
    let mut archive = file(&dir, "natter.db").await;
    let mut log = file(&dir, "natter-log.db").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count(&mut archive, "inbox_chunks").await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the compactor never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&mut log, "log_batches").await,
        1,
        "moved, not yet deleted"
    );
    // The compactor tells the tail right after its commit: an append that races it may find
    // nothing to delete yet, the next one does.
    let mut n = 3;
    loop {
        store
            .append(&[msg(n, "a", "b", &format!("l{n}"))])
            .await
            .unwrap();
        let firsts: Vec<i64> = sqlx::query_scalar("SELECT first_id FROM log_batches")
            .fetch_all(&mut log)
            .await
            .unwrap();
        if firsts == [i64::from(n)] {
            break;
        }
        assert!(n < 6, "moved batches are still in the log: {firsts:?}");
        n += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        stream(&store, "b", Stream::Inbox, 0, 100).await,
        (1..=i64::from(n)).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The log is bounded in bytes too: with large messages that cannot be moved, appends are
/// refused once the log holds `log_bytes` of them, whatever their number.
#[tokio::test]
async fn a_log_that_cannot_be_moved_refuses_appends_at_its_size() {
    let (dir, path) = fresh_dir("sqlite-backlog-bytes");
    let tuning = natter::store::Tuning {
        compact_every: std::time::Duration::from_secs(3600),
        log_bytes: 1500,
        ..natter::store::Tuning::default()
    };
    let store = natter::store::SqliteStore::open_tuned(&path, tuning)
        .await
        .unwrap();
    let mut archive = file(&dir, "natter.db").await;
    sqlx::query("ALTER TABLE moved RENAME TO away")
        .execute(&mut archive)
        .await
        .unwrap();
    let big = |n: u32| natter_protocol::Msg {
        content: "x".repeat(900),
        ..msg(n, "a", "b", &format!("l{n}"))
    };
    store.append(&[big(1), big(2)]).await.unwrap();
    assert!(store.prune(0).await.is_err(), "the move fails");
    match store.append(&[big(3)]).await {
        Err(natter::store::StoreError::Backlog(2)) => {}
        other => panic!("a log over its bytes took a message: {other:?}"),
    }
}

/// When moves to natter.db keep failing, the log takes messages up to its limit, then appends
/// are refused (the senders get an error, nothing is acknowledged); once moves work again the
/// log drains and appends are taken again, numbered on.
#[tokio::test]
async fn a_log_that_cannot_be_moved_refuses_appends_at_its_limit() {
    let (dir, path) = fresh_dir("sqlite-backlog");
    let store = open_quiet(&path, Some(4)).await;
    let mut archive = file(&dir, "natter.db").await;
    sqlx::query("ALTER TABLE moved RENAME TO away")
        .execute(&mut archive)
        .await
        .unwrap();
    store
        .append(&[msg(1, "a", "b", "l1"), msg(2, "a", "b", "l2")])
        .await
        .unwrap();
    assert!(store.prune(0).await.is_err(), "the move fails");
    store
        .append(&[msg(3, "a", "b", "l3"), msg(4, "a", "b", "l4")])
        .await
        .unwrap();
    match store.append(&[msg(5, "a", "b", "l5")]).await {
        Err(natter::store::StoreError::Backlog(4)) => {}
        other => panic!("a full log took a message: {other:?}"),
    }
    assert_eq!(
        stream(&store, "b", Stream::Inbox, 0, 100).await,
        [1, 2, 3, 4]
    );

    sqlx::query("ALTER TABLE away RENAME TO moved")
        .execute(&mut archive)
        .await
        .unwrap();
    assert_eq!(store.prune(0).await.unwrap(), 0, "the move succeeds");
    assert_eq!(
        seqs(&store.append(&[msg(5, "a", "b", "l5")]).await.unwrap()),
        [(5, true)]
    );
    assert_eq!(count(&mut archive, "inbox_chunks").await, 1);
    assert_eq!(
        stream(&store, "b", Stream::Inbox, 0, 100).await,
        [1, 2, 3, 4, 5]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The log's WAL starts over after each move even when appends never pause: under steady load
/// an append is nearly always in flight while the compactor checkpoints, and a WAL that is never
/// fully checkpointed before an append begins grows for as long as the load lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_wal_stays_small_under_steady_appends() {
    let (dir, path) = fresh_dir("sqlite-wal");
    let store = open_quiet(&path, None).await;
    let body = "x".repeat(1000);
    // 24 MB of back-to-back appends, and moves (with their checkpoints) back to back beside
    // them, so that appends are in flight during checkpoints whatever this machine's speed.
    // Without restarts the WAL would hold about twice what was appended (a frame per page, the
    // batches overflow theirs); it starts over at 1024 pages (4 MiB).
    let appends = 2400u32;
    let appended = u64::from(appends) * 10 * body.len() as u64;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = tokio::spawn({
        let (store, done) = (store.clone(), done.clone());
        async move {
            let mut moves = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                store.prune(0).await.unwrap();
                moves += 1;
            }
            moves
        }
    });
    let mut n = 0u32;
    for _ in 0..appends {
        let batch: Vec<Msg> = (0..10)
            .map(|_| {
                n += 1;
                Msg {
                    content: body.clone(),
                    create_time: i64::from(n),
                    ..msg(n, "a", "b", &format!("l{n}"))
                }
            })
            .collect();
        store.append(&batch).await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    assert!(mover.await.unwrap() > 1, "moves ran beside the appends");
    let wal = std::fs::metadata(dir.join("natter-log.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal < appended / 2,
        "the WAL holds {wal} bytes after {appended} bytes of messages were appended"
    );
    assert_eq!(
        stream(&store, "b", Stream::Inbox, 0, 100).await.len(),
        100,
        "the messages are all there"
    );
    let _ = std::fs::remove_dir_all(dir);
}
