//! The SQLite store's two files (store/sqlite.rs): messages are committed to the log, and the
//! compactor moves them into natter.db's chunks. Every read, resend and counter must give the same
//! answer whichever file a message is in, and across a restart. `prune(0)` deletes nothing but
//! compacts first, so it moves the log on demand.

#[macro_use]
mod common;

use natter::store::{Appended, SqliteStore, Store, Stream, Tuning};
use natter_protocol::{Msg, msg_type};

/// A store whose compactor moves the log only when told (`prune(0)`), for tests that count
/// chunks.
async fn open_quiet(path: &str, log_limit: Option<i64>) -> SqliteStore {
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
fn fresh_dir(name: &str) -> (std::path::PathBuf, String) {
    let dir = common::temp_dir(name);
    let path = dir.to_string_lossy().into_owned();
    (dir, path)
}

/// A stamped message as the gateway hands it to the store; `n` orders the server ids.
fn msg(n: u32, from: &str, to: &str, local_id: &str) -> Msg {
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

fn seqs(outcomes: &[Appended]) -> Vec<(i64, bool)> {
    outcomes
        .iter()
        .map(|o| match o {
            Appended::New { seq, .. } => (*seq, true),
            Appended::Duplicate(m) => (m.seq, false),
        })
        .collect()
}

async fn inbox(store: &SqliteStore, user: &str, after: i64) -> Vec<(i64, String, bool)> {
    store
        .after(user, Stream::Inbox, after, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.content, m.is_read))
        .collect()
}

#[tokio::test]
async fn answers_are_the_same_in_the_log_and_in_the_indexed_table_and_after_a_restart() {
    let (dir, path) = fresh_dir("sqlite-log");
    let store = SqliteStore::open(&path).await.unwrap();

    // l1..l3 are moved to natter.db; l4, l5 stay in the log.
    let first = [
        msg(1, "a", "b", "l1"),
        msg(2, "a", "b", "l2"),
        msg(3, "a", "b", "l3"),
        msg(4, "b", "a", "k1"),
    ];
    assert_eq!(
        seqs(&store.append(&first).await.unwrap()),
        [(1, true), (2, true), (3, true), (1, true)]
    );
    assert_eq!(store.prune(0).await.unwrap(), 0);
    let second = [
        msg(5, "a", "b", "l4"),
        msg(6, "a", "b", "l2"),
        msg(7, "a", "b", "l5"),
    ];
    assert_eq!(
        seqs(&store.append(&second).await.unwrap()),
        [(4, true), (2, false), (5, true)],
        "a resend of a moved message returns its original"
    );
    let outcome = store.append(&[msg(8, "a", "b", "l4")]).await.unwrap();
    match &outcome[0] {
        Appended::Duplicate(original) => {
            assert_eq!((original.seq, original.content.as_str()), (4, "m5"))
        }
        other => panic!("a resend of a logged message was stored again: {other:?}"),
    }

    let all: Vec<i64> = inbox(&store, "b", 0).await.iter().map(|m| m.0).collect();
    assert_eq!(all, [1, 2, 3, 4, 5], "both files, in order, once");
    assert_eq!(inbox(&store, "b", 3).await.len(), 2);
    let page = store.after("b", Stream::Inbox, 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
    let sent: Vec<i64> = store
        .after("a", Stream::Sent, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.send_seq)
        .collect();
    assert_eq!(sent, [1, 2, 3, 4, 5]);
    assert_eq!(store.cursors("b").await.unwrap(), (5, 1));
    assert_eq!(store.cursors("a").await.unwrap(), (1, 5));

    // b has read up to the fourth message (in the log); the mark covers natter.db's rows too.
    let mut receipt = msg(9, "b", "a", "r1");
    receipt.msg_type = msg_type::READ;
    receipt.content = msg(5, "", "", "").server_id;
    store.append(&[receipt]).await.unwrap();
    let read: Vec<bool> = inbox(&store, "b", 0).await.iter().map(|m| m.2).collect();
    assert_eq!(read, [true, true, true, true, false]);
    let read_by_b: Vec<bool> = store
        .after("a", Stream::Sent, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.is_read)
        .collect();
    assert_eq!(read_by_b, [true, true, true, true, false]);
    assert_eq!(
        store.cursors("a").await.unwrap(),
        (2, 5),
        "the receipt is in a's inbox"
    );

    // A restart moves the log; nothing changes for the reader, and numbering goes on.
    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    let again = inbox(&store, "b", 0).await;
    assert_eq!(
        again.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(again.iter().filter(|m| m.2).count(), 4);
    assert_eq!(
        store.cursors("b").await.unwrap(),
        (5, 2),
        "b sent k1 and the receipt"
    );
    assert_eq!(
        seqs(
            &store
                .append(&[msg(10, "a", "b", "l5"), msg(11, "a", "b", "l6")])
                .await
                .unwrap()
        ),
        [(5, false), (6, true)]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_second_store_on_the_same_directory_waits_for_the_first() {
    let (dir, path) = fresh_dir("sqlite-lock");
    let first = SqliteStore::open(&path).await.unwrap();
    first.append(&[msg(1, "a", "b", "l1")]).await.unwrap();

    let second = SqliteStore::open(&path);
    tokio::pin!(second);
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut second).await;
    assert!(early.is_err(), "opened while another store holds the files");

    drop(first);
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), second)
        .await
        .expect("the lock is released when the first store is dropped")
        .unwrap();
    assert_eq!(second.cursors("b").await.unwrap(), (1, 0));
    let _ = std::fs::remove_dir_all(dir);
}

/// A resend is the same `(send_id, create_time, local_id)`. A message created after everything
/// its sender has stored skips the lookup; an older one (a resend, or a device with a slow
/// clock) is looked up in whichever file holds the sender's messages, also after a restart.
#[tokio::test]
async fn resends_are_recognised_by_create_time_and_local_id_in_either_file() {
    let (dir, path) = fresh_dir("sqlite-created");
    let at = |n: u32, local_id: &str, create_time: i64| Msg {
        create_time,
        ..msg(n, "a", "b", local_id)
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let first = [at(1, "x1", 100), at(2, "x2", 200)];
    assert_eq!(
        seqs(&store.append(&first).await.unwrap()),
        [(1, true), (2, true)]
    );
    assert_eq!(store.prune(0).await.unwrap(), 0, "x1, x2 move to natter.db");
    assert_eq!(
        seqs(&store.append(&[at(3, "x3", 300)]).await.unwrap()),
        [(3, true)]
    );
    assert_eq!(
        seqs(&store.append(&[at(4, "x1", 100)]).await.unwrap()),
        [(1, false)],
        "a resend of a moved message, created before the sender's newest"
    );
    assert_eq!(
        seqs(
            &store
                .append(&[at(5, "y", 150), at(6, "x2", 201)])
                .await
                .unwrap()
        ),
        [(4, true), (5, true)],
        "an older new message is stored; the same local_id created at another time is another message"
    );

    drop(store);
    let store = SqliteStore::open(&path).await.unwrap();
    let again = [
        at(7, "x3", 300),
        at(8, "y", 150),
        at(9, "z", 50),
        at(10, "x2", 201),
    ];
    assert_eq!(
        seqs(&store.append(&again).await.unwrap()),
        [(3, false), (4, false), (6, true), (5, false)],
        "after a restart the sender's newest create_time comes from natter.db"
    );
    let contents: Vec<String> = inbox(&store, "b", 0)
        .await
        .into_iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(contents, ["m1", "m2", "m3", "m5", "m6", "m9"]);
    let _ = std::fs::remove_dir_all(dir);
}

/// A connection of the test's own to one of the store's files.
async fn file(dir: &std::path::Path, name: &str) -> sqlx::SqliteConnection {
    let path = dir.join(name).to_string_lossy().into_owned();
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{path}"))
        .await
        .unwrap()
}

async fn count(conn: &mut sqlx::SqliteConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn stream(store: &SqliteStore, user: &str, s: Stream, after: i64, limit: u32) -> Vec<i64> {
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

/// Messages moved in several moves are in several chunks per stream: every page, from any
/// cursor, is the same as if they were one list; retention deletes whole chunks, oldest first.
#[tokio::test]
async fn pages_cross_chunk_boundaries_and_retention_takes_whole_chunks() {
    let (dir, path) = fresh_dir("sqlite-chunks");
    let store = open_quiet(&path, None).await;
    // Five moves of ten, then five in the log.
    for start in (1..=55u32).step_by(5) {
        let batch: Vec<Msg> = (start..start + 5)
            .map(|n| msg(n, "a", "b", &format!("l{n}")))
            .collect();
        store.append(&batch).await.unwrap();
        if start % 10 == 6 && start < 50 {
            assert_eq!(store.prune(0).await.unwrap(), 0);
        }
    }
    let mut log = file(&dir, "natter-log.db").await;
    assert_eq!(count(&mut log, "log_batches").await, 1, "the last five");
    let mut archive = file(&dir, "natter.db").await;
    assert_eq!(count(&mut archive, "inbox_chunks").await, 5);
    assert_eq!(count(&mut archive, "sent_chunks").await, 5);

    for after in 0..=56 {
        for limit in [1, 7, 100] {
            let want: Vec<i64> = (after + 1..=55).take(limit as usize).collect();
            assert_eq!(
                stream(&store, "b", Stream::Inbox, after, limit).await,
                want,
                "inbox after {after}, limit {limit}"
            );
            assert_eq!(
                stream(&store, "a", Stream::Sent, after, limit).await,
                want,
                "sent after {after}, limit {limit}"
            );
        }
    }
    assert_eq!(
        seqs(&store.append(&[msg(99, "a", "b", "l12")]).await.unwrap()),
        [(12, false)],
        "a resend of a message in the second chunk"
    );

    // Messages 1..=20 (two chunks) were sent before `21`'s send_time.
    let cutoff = msg(21, "", "", "").send_time;
    assert_eq!(store.prune(cutoff).await.unwrap(), 20);
    assert_eq!(stream(&store, "b", Stream::Inbox, 0, 100).await[0], 21);
    assert_eq!(stream(&store, "a", Stream::Sent, 0, 100).await[0], 21);
    assert_eq!(count(&mut log, "log_batches").await, 0, "the log was moved");
    assert_eq!(store.cursors("b").await.unwrap(), (55, 0));
    let _ = std::fs::remove_dir_all(dir);
}

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

/// Messages and several read receipts in one batch: each receipt marks what its reader read from
/// its peer, and nothing else.
#[tokio::test]
async fn a_batch_with_several_receipts_stores_each_of_them() {
    let (dir, path) = fresh_dir("sqlite-receipts");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .append(&[
            msg(1, "a", "c", "a1"),
            msg(2, "a", "c", "a2"),
            msg(3, "b", "c", "b1"),
            msg(4, "b", "c", "b2"),
        ])
        .await
        .unwrap();
    let receipt = |n: u32, peer: &str, upto: u32| Msg {
        msg_type: msg_type::READ,
        content: msg(upto, "", "", "").server_id,
        ..msg(n, "c", peer, &format!("r{n}"))
    };
    let outcomes = store
        .append(&[
            receipt(5, "a", 1),
            msg(6, "a", "c", "a3"),
            receipt(7, "b", 4),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&outcomes), [(1, true), (5, true), (1, true)]);
    let read: Vec<(String, bool)> = inbox(&store, "c", 0)
        .await
        .into_iter()
        .map(|m| (m.1, m.2))
        .collect();
    assert_eq!(
        read,
        [
            ("m1".into(), true),
            ("m2".into(), false),
            ("m3".into(), true),
            ("m4".into(), true),
            ("m6".into(), false)
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
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
    let store = SqliteStore::open(&path).await.unwrap();
    let body = "x".repeat(1000);
    let started = std::time::Instant::now();
    let mut appended = 0u64;
    let mut n = 0u32;
    // Many of the compactor's ticks (50 ms), back-to-back appends all along. Without restarts the
    // WAL holds about twice what was appended (a frame per page, the batches overflow theirs).
    while started.elapsed() < std::time::Duration::from_millis(2500) {
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
        appended += 10 * body.len() as u64;
    }
    let wal = std::fs::metadata(dir.join("natter-log.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal < appended,
        "the WAL holds {wal} bytes after {appended} bytes of messages were appended"
    );
    assert_eq!(
        stream(&store, "b", Stream::Inbox, 0, 100).await.len(),
        100,
        "the messages are all there"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A client that leaves create_time at 0 (as the tutorial's example JSON does), and one whose
/// clock went back: their resends are still recognised once the originals are in natter.db,
/// through `sent_keys`, and the sent chunks' create_time ranges never overlap, so a lookup reads
/// at most one chunk instead of all of the sender's (which stalled every commit behind it). A
/// create_time of 0 is no time: such messages are all keyed, none is in a range (a range of 0
/// to 0 had every later lookup of that sender read its chunk).
#[tokio::test]
async fn resends_of_messages_created_out_of_order_are_found_by_key() {
    let (dir, path) = fresh_dir("sqlite-keys");
    let store = SqliteStore::open(&path).await.unwrap();
    let at = |n: u32, from: &str, create_time: i64| Msg {
        create_time,
        ..msg(n, from, "r", &format!("{from}{n}"))
    };
    // z: create_time 0 always, in three moves; y: 100, 200, 150 (clock back), 300.
    let mut n = 0;
    for _ in 0..3 {
        let batch: Vec<Msg> = (0..10)
            .map(|_| {
                n += 1;
                at(n, "z", 0)
            })
            .collect();
        store.append(&batch).await.unwrap();
        assert_eq!(store.prune(0).await.unwrap(), 0);
    }
    for (i, t) in [100, 200, 150, 300].into_iter().enumerate() {
        store.append(&[at(31 + i as u32, "y", t)]).await.unwrap();
        assert_eq!(store.prune(0).await.unwrap(), 0);
    }

    let mut archive = file(&dir, "natter.db").await;
    let candidates = |user: &'static str, t: i64| {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sent_chunks \
             WHERE user_id = ?1 AND created_upto >= ?2 AND created_from <= ?2",
        )
        .bind(user)
        .bind(t)
    };
    assert_eq!(
        candidates("z", 0).fetch_one(&mut archive).await.unwrap(),
        0,
        "none of z's messages is in a create_time range"
    );
    for t in [100, 150, 200, 300] {
        assert!(candidates("y", t).fetch_one(&mut archive).await.unwrap() <= 1);
    }
    let keys: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT user_id, create_time, local_id FROM sent_keys ORDER BY user_id, local_id",
    )
    .fetch_all(&mut archive)
    .await
    .unwrap();
    assert_eq!(keys.len(), 31, "{keys:?}");
    assert_eq!(keys[0], ("y".into(), 150, "y33".into()));
    assert!(keys[1..].iter().all(|k| k.0 == "z" && k.1 == 0));

    // Resends of each kind, all from natter.db, and two new messages.
    let again = |local_id: &str, n: u32, from: &str, create_time: i64| Msg {
        local_id: local_id.into(),
        ..at(n, from, create_time)
    };
    let resent = store
        .append(&[
            at(40, "z", 0),
            at(41, "z", 0),
            at(42, "y", 150),
            at(43, "y", 200),
            again("z1", 44, "z", 0),
            again("z17", 45, "z", 0),
            again("z30", 46, "z", 0),
            again("y33", 47, "y", 150),
            again("y32", 48, "y", 200),
        ])
        .await
        .unwrap();
    let sends: Vec<(i64, bool)> = resent
        .iter()
        .map(|o| match o {
            Appended::New { send_seq, .. } => (*send_seq, true),
            Appended::Duplicate(m) => (m.send_seq, false),
        })
        .collect();
    assert_eq!(
        sends,
        [
            (31, true),
            (32, true),
            (5, true),
            (6, true),
            (1, false),
            (17, false),
            (30, false),
            (3, false),
            (2, false)
        ]
    );

    // Retention takes the keys with their chunks.
    store.prune(i64::MAX).await.unwrap();
    assert_eq!(count(&mut archive, "sent_keys").await, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// Many keys in the log at once (the key table grows, and finds its entries again through the
/// logged messages): every resend gets its own original back, whichever batch it was in.
#[tokio::test]
async fn resends_are_found_among_many_logged_keys() {
    let (dir, path) = fresh_dir("sqlite-many-keys");
    let store = SqliteStore::open(&path).await.unwrap();
    let at = |n: u32| Msg {
        create_time: i64::from(n % 7),
        ..msg(n, &format!("s{}", n % 3), "r", &format!("k{n}"))
    };
    for first in [1, 501, 1001] {
        let batch: Vec<Msg> = (first..first + 500).map(at).collect();
        store.append(&batch).await.unwrap();
    }
    let again: Vec<Msg> = (1..1500).step_by(37).map(at).collect();
    let outcomes = store.append(&again).await.unwrap();
    for (m, outcome) in again.iter().zip(&outcomes) {
        match outcome {
            Appended::Duplicate(original) => {
                // The receiver's seq of message n is n.
                let n: i64 = m.local_id[1..].parse().unwrap();
                assert_eq!((&original.local_id, original.seq), (&m.local_id, n));
            }
            Appended::New { .. } => panic!("{} was stored twice", m.local_id),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A batch's lookups in natter.db take a statement per 128 of them: a batch of 400 messages
/// from clients that leave create_time at 0 or repeat it, resends of messages moved in several
/// moves mixed with new ones, gets every original back and numbers only the new ones.
#[tokio::test]
async fn many_resends_in_one_batch_find_their_moved_originals() {
    let (dir, path) = fresh_dir("sqlite-many-moved-keys");
    let store = SqliteStore::open(&path).await.unwrap();
    // Senders s0..s3; s0 and s1 leave create_time at 0, s2 and s3 repeat few values.
    let at = |n: u32| {
        let sender = n % 4;
        Msg {
            create_time: if sender < 2 { 0 } else { i64::from(n % 5) + 1 },
            ..msg(n, &format!("s{sender}"), "r", &format!("k{n}"))
        }
    };
    for first in [1, 301, 601] {
        let batch: Vec<Msg> = (first..first + 300).map(at).collect();
        store.append(&batch).await.unwrap();
        assert_eq!(store.prune(0).await.unwrap(), 0);
    }
    // Every third moved message again and 100 new ones, in a mixed order.
    let mut numbers: Vec<u32> = (1..901).step_by(3).chain(901..1001).collect();
    numbers.sort_by_key(|n| n * 7919 % 1009);
    let again: Vec<Msg> = numbers.into_iter().map(at).collect();
    assert!(again.len() > 3 * 128);
    let outcomes = store.append(&again).await.unwrap();
    let mut fresh = Vec::new();
    for (m, outcome) in again.iter().zip(&outcomes) {
        let n: i64 = m.local_id[1..].parse().unwrap();
        match outcome {
            Appended::Duplicate(original) => {
                assert!(n <= 900, "{} is new", m.local_id);
                // The receiver's seq of message n is n.
                assert_eq!((&original.local_id, original.seq), (&m.local_id, n));
                assert_eq!(original.content, m.content);
            }
            Appended::New { seq, .. } => {
                assert!(n > 900, "{} was stored twice", m.local_id);
                fresh.push(*seq);
            }
        }
    }
    fresh.sort();
    assert_eq!(fresh, (901..1001).collect::<Vec<i64>>());
    let _ = std::fs::remove_dir_all(dir);
}

/// Sent chunks hold references into the inboxes, not a second copy of each message: the sent
/// stream (across pages of chunks, to several receivers, to oneself and to a group) gives back
/// the messages exactly as their receivers' inboxes hold them, and so does a resend of a moved
/// message; the sent chunks take a fraction of the inbox chunks' bytes.
#[tokio::test]
async fn sent_chunks_point_into_the_inboxes() {
    let (dir, path) = fresh_dir("sqlite-refs");
    let store = open_quiet(&path, None).await;
    let receivers = ["b", "c", "a", "g1"];
    let mut n = 0;
    // Twelve moves (more chunks than a read takes per statement), then a batch left in the log.
    for round in 0..13 {
        let batch: Vec<Msg> = (0..8)
            .map(|i| {
                n += 1;
                Msg {
                    content: format!("{n}:{}", "long text ".repeat(40)),
                    msg_type: if receivers[i % 4] == "g1" { 1 } else { 0 },
                    content_type: i as i32 % 3,
                    create_time: i64::from(n),
                    ..msg(n, "a", receivers[i % 4], &format!("l{n}"))
                }
            })
            .collect();
        store.append(&batch).await.unwrap();
        if round < 12 {
            assert_eq!(store.prune(0).await.unwrap(), 0);
        }
    }
    let mut archive = file(&dir, "natter.db").await;
    assert_eq!(count(&mut archive, "sent_chunks").await, 12);
    let bytes = |table: &str| format!("SELECT SUM(LENGTH(body)) FROM {table}");
    let inbox_bytes: i64 = sqlx::query_scalar(&bytes("inbox_chunks"))
        .fetch_one(&mut archive)
        .await
        .unwrap();
    let sent_bytes: i64 = sqlx::query_scalar(&bytes("sent_chunks"))
        .fetch_one(&mut archive)
        .await
        .unwrap();
    assert!(
        sent_bytes * 10 < inbox_bytes,
        "sent chunks {sent_bytes} bytes, inbox chunks {inbox_bytes}"
    );

    // What each receiver's inbox holds, by server id.
    let mut held = std::collections::HashMap::new();
    for user in receivers {
        for m in store.after(user, Stream::Inbox, 0, 1000).await.unwrap() {
            if m.send_id == "a" {
                held.insert(m.server_id.clone(), m);
            }
        }
    }
    assert_eq!(held.len(), 104);
    for after in [0, 1, 7, 40, 95, 103, 104] {
        for limit in [1, 5, 9, 1000] {
            let sent = store.after("a", Stream::Sent, after, limit).await.unwrap();
            let want: Vec<i64> = (after + 1..=104).take(limit as usize).collect();
            let got: Vec<i64> = sent.iter().map(|m| m.send_seq).collect();
            assert_eq!(got, want, "sent after {after}, limit {limit}");
            for m in &sent {
                assert_eq!(Some(m), held.get(&m.server_id), "send_seq {}", m.send_seq);
            }
        }
    }

    // A resend of a moved message gets its original, whole.
    let again = Msg {
        create_time: 30,
        ..msg(500, "a", "a", "l30")
    };
    match &store.append(&[again]).await.unwrap()[0] {
        Appended::Duplicate(original) => {
            assert!(original.content.starts_with("30:"));
            assert_eq!(Some(original), held.get(&original.server_id));
        }
        other => panic!("a resend of a moved message was stored again: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}
