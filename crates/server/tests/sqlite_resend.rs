//! Resends on the SQLite store: a message sent again with the same (send_id, create_time,
//! local_id) is recognised wherever its original is (the in-memory tail, natter.db's chunks or
//! its sent_keys), however the client sets create_time, and costs no lookup per message.

#[macro_use]
mod common;

use common::sqlite::*;
use natter::store::{Appended, SqliteStore, Store};
use natter_protocol::Msg;

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
