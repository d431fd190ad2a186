//! The SQLite store's two files (store/sqlite.rs): messages are committed to the log, and the
//! compactor moves them into the indexed table. Every read, resend and counter must give the same
//! answer whichever file a message is in, and across a restart. `prune(0)` deletes nothing but
//! compacts first, so it moves the log on demand.

#[macro_use]
mod common;

use natter::store::{Appended, SqliteStore, Store, Stream};
use natter_protocol::{Msg, msg_type};

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
    let dir = common::temp_dir("sqlite-log");
    let path = dir.to_string_lossy().into_owned();
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
    let dir = common::temp_dir("sqlite-lock");
    let path = dir.to_string_lossy().into_owned();
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
    let dir = common::temp_dir("sqlite-created");
    let path = dir.to_string_lossy().into_owned();
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

/// A move of more rows than one delete statement takes (the log is emptied in slices, so an
/// append never waits for all of it) leaves the log empty and every message readable once.
#[tokio::test]
async fn a_large_move_empties_the_log_slice_by_slice() {
    let dir = common::temp_dir("sqlite-slices");
    let path = dir.to_string_lossy().into_owned();
    let store = SqliteStore::open(&path).await.unwrap();
    let total = 3000u32;
    for start in (1..=total).step_by(500) {
        let batch: Vec<Msg> = (start..start + 500)
            .map(|n| msg(n, "a", "b", &format!("l{n}")))
            .collect();
        store.append(&batch).await.unwrap();
    }
    assert_eq!(store.prune(0).await.unwrap(), 0);

    let log = dir.join("natter-log.db").to_string_lossy().into_owned();
    let mut conn =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{log}"))
            .await
            .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM message_log")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "every moved row left the log");

    let mut inbox_seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store.after("b", Stream::Inbox, after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        inbox_seqs.extend(page.iter().map(|m| m.seq));
    }
    assert_eq!(inbox_seqs, (1..=i64::from(total)).collect::<Vec<_>>());
    assert_eq!(
        seqs(&store.append(&[msg(9999, "a", "b", "l1")]).await.unwrap()),
        [(1, false)],
        "a resend of a moved message is still recognised"
    );
    let _ = std::fs::remove_dir_all(dir);
}
