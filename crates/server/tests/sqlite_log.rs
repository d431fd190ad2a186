//! The SQLite store's two files (store/sqlite/): messages are committed to the log, and the
//! compactor moves them into natter.db's chunks. Every read and counter must give the same
//! answer whichever file a message is in, and across a restart (resends: sqlite_resend.rs).
//! `prune(0)` deletes nothing but compacts first, so it moves the log on demand.

#[macro_use]
mod common;

use common::sqlite::*;
use natter::store::{Appended, SqliteStore, Store, StoreError, Stream, Tuning};
use natter_protocol::{Msg, msg_type};

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

    // While the first holds the files, a second that waits a little is refused as locked.
    let brief = Tuning {
        lock_wait: std::time::Duration::from_millis(100),
        ..Tuning::default()
    };
    match SqliteStore::open_tuned(&path, brief).await {
        Err(StoreError::Locked(p)) => assert_eq!(p, path),
        other => panic!("opened while another store holds the files: {other:?}"),
    }

    // One that waits gets the files as soon as the first is dropped.
    let second = SqliteStore::open(&path);
    tokio::pin!(second);
    drop(first);
    let second = tokio::time::timeout(std::time::Duration::from_secs(5), second)
        .await
        .expect("the lock is released when the first store is dropped")
        .unwrap();
    assert_eq!(second.cursors("b").await.unwrap(), (1, 0));
    let _ = std::fs::remove_dir_all(dir);
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
