//! The store conformance suite: the same assertions, through the `Store` trait, against SQLite
//! and against PostgreSQL (a fresh database per test). What one backend does, the other does:
//! numbering, resends, sync pages, read receipts, retention, groups, and a failed commit.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{Backend, config_for};
use natter::store::{self, Appended, Group, Role, Store, Stream};
use natter_protocol::{Msg, msg_type};

on_both_stores!(
    a_batch_of_both_users_leaves_each_read_at_their_own_last_entry,
    revocations_keep_the_latest_time_and_forget_expired_tokens,
    seq_and_send_seq_are_dense_per_user_across_batches,
    a_resend_is_the_original_in_a_later_batch_or_the_same_one,
    pages_of_both_streams_are_in_order_and_complete,
    a_read_receipt_marks_both_sides_up_to_its_message,
    retention_deletes_old_messages_and_numbering_goes_on,
    group_membership_and_the_groups_seq,
    a_failed_commit_stores_nothing_and_takes_no_number,
    pages_are_bounded_in_bytes_and_still_cover_the_stream,
);

async fn open(backend: Backend) -> (Arc<dyn Store>, natter::Config) {
    let config = config_for(backend).await;
    let store = store::open(&config.storage)
        .await
        .expect("open the store")
        .expect("storage is on");
    (store, config)
}

/// Messages are stamped as the server does: a server_id ordered by `n`, and a send_time.
fn msg(n: u32, from: &str, to: &str, local_id: &str) -> Msg {
    Msg {
        server_id: format!("0199c3f2-0000-7000-8000-{n:012x}"),
        send_id: from.into(),
        receiver_id: to.into(),
        local_id: local_id.into(),
        content: format!("m{n}"),
        create_time: 1_764_000_000_000 + i64::from(n),
        send_time: natter::clock::now_millis(),
        ..Msg::default()
    }
}

fn numbers(outcomes: &[Appended]) -> Vec<(i64, i64)> {
    outcomes
        .iter()
        .map(|o| match o {
            Appended::New { seq, send_seq, .. } => (*seq, *send_seq),
            Appended::Duplicate(m) => panic!("unexpected duplicate {m:?}"),
        })
        .collect()
}

/// Moves whatever the store keeps aside into its tables without deleting anything (SQLite:
/// the log into natter.db), so the next reads cross both places.
async fn settle(store: &dyn Store) {
    store.prune(0).await.unwrap();
}

async fn contents(store: &dyn Store, user: &str, stream: Stream, after: i64) -> Vec<String> {
    let page = store.after(user, stream, after, 1000).await.unwrap();
    page.into_iter().map(|m| m.content).collect()
}

async fn seq_and_send_seq_are_dense_per_user_across_batches(backend: Backend) {
    let (store, _) = open(backend).await;
    let first = store
        .append(&[
            msg(1, "a", "b", "1"),
            msg(2, "c", "b", "2"),
            msg(3, "a", "c", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(numbers(&first), [(1, 1), (2, 1), (1, 2)]);
    settle(&*store).await;
    let second = store
        .append(&[
            msg(4, "b", "a", ""),
            msg(5, "a", "b", ""),
            msg(6, "a", "a", ""),
        ])
        .await
        .unwrap();
    // b's inbox goes on at 3, a's sent stream at 3; a message to oneself takes one of each.
    assert_eq!(numbers(&second), [(1, 1), (3, 3), (2, 4)]);
    assert_eq!(store.cursors("a").await.unwrap(), (2, 4));
    assert_eq!(store.cursors("b").await.unwrap(), (3, 1));
    assert_eq!(store.cursors("nobody").await.unwrap(), (0, 0));
}

async fn a_resend_is_the_original_in_a_later_batch_or_the_same_one(backend: Backend) {
    let (store, _) = open(backend).await;
    let original = msg(1, "a", "b", "x");
    store.append(std::slice::from_ref(&original)).await.unwrap();
    for moved in [false, true] {
        if moved {
            settle(&*store).await;
        }
        let again = Msg {
            server_id: "another".into(),
            content: "changed".into(),
            ..original.clone()
        };
        let outcomes = store
            .append(&[again.clone(), msg(2, "a", "b", "y"), again])
            .await
            .unwrap();
        for dup in [&outcomes[0], &outcomes[2]] {
            let Appended::Duplicate(m) = dup else {
                panic!("not a duplicate: {dup:?}")
            };
            assert_eq!((m.seq, m.content.as_str()), (1, "m1"), "moved: {moved}");
            assert_eq!(m.server_id, original.server_id);
        }
        // `y` is new the first time, and a resend of that first time the second.
        match (&outcomes[1], moved) {
            (Appended::New { seq, send_seq, .. }, false) => assert_eq!((*seq, *send_seq), (2, 2)),
            (Appended::Duplicate(m), true) => assert_eq!((m.seq, m.local_id.as_str()), (2, "y")),
            (other, _) => panic!("moved: {moved}, y: {other:?}"),
        }
    }
    // The same local_id created at another time is another message; no local_id never repeats.
    let later = Msg {
        create_time: original.create_time + 1,
        ..original.clone()
    };
    let outcomes = store
        .append(&[later, msg(3, "a", "b", ""), msg(3, "a", "b", "")])
        .await
        .unwrap();
    assert_eq!(numbers(&outcomes), [(3, 3), (4, 4), (5, 5)]);
    assert_eq!(
        contents(&*store, "b", Stream::Inbox, 0).await,
        ["m1", "m2", "m1", "m3", "m3"]
    );
}

async fn pages_of_both_streams_are_in_order_and_complete(backend: Backend) {
    let (store, _) = open(backend).await;
    let mut n = 0;
    for batch in 0..6 {
        let msgs: Vec<Msg> = (0..7)
            .map(|_| {
                n += 1;
                msg(n, "a", "b", &format!("l{n}"))
            })
            .collect();
        store.append(&msgs).await.unwrap();
        if batch % 2 == 0 {
            settle(&*store).await;
        }
    }
    for stream in [Stream::Inbox, Stream::Sent] {
        let owner = match stream {
            Stream::Inbox => "b",
            Stream::Sent => "a",
        };
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = store.after(owner, stream, after, 5).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 5);
            for m in &page {
                let cursor = match stream {
                    Stream::Inbox => m.seq,
                    Stream::Sent => m.send_seq,
                };
                assert_eq!(cursor, after + 1, "{stream:?} has no gap and no repeat");
                after = cursor;
                seen.push(m.content.clone());
            }
        }
        let expected: Vec<String> = (1..=42).map(|i| format!("m{i}")).collect();
        assert_eq!(seen, expected, "{stream:?}");
    }
    assert!(
        store
            .after("b", Stream::Inbox, 42, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_read_receipt_marks_both_sides_up_to_its_message(backend: Backend) {
    let (store, _) = open(backend).await;
    let sent: Vec<Msg> = (1..=4)
        .map(|i| msg(i, "a", "b", &format!("l{i}")))
        .collect();
    store.append(&sent).await.unwrap();
    settle(&*store).await;
    let receipt = Msg {
        msg_type: msg_type::READ,
        content: sent[2].server_id.clone(),
        ..msg(10, "b", "a", "r")
    };
    store.append(&[receipt]).await.unwrap();
    let read = |page: Vec<Msg>| -> Vec<bool> {
        page.iter()
            .filter(|m| m.msg_type != msg_type::READ)
            .map(|m| m.is_read)
            .collect()
    };
    let inbox = store.after("b", Stream::Inbox, 0, 100).await.unwrap();
    assert_eq!(read(inbox), [true, true, true, false], "the reader's inbox");
    let sent_stream = store.after("a", Stream::Sent, 0, 100).await.unwrap();
    assert_eq!(
        read(sent_stream),
        [true, true, true, false],
        "the sender's sent stream"
    );
    // The receipt is a message of its own in a's inbox.
    let a_inbox = store.after("a", Stream::Inbox, 0, 100).await.unwrap();
    assert_eq!(a_inbox.len(), 1);
    assert_eq!(a_inbox[0].msg_type, msg_type::READ);
}

async fn retention_deletes_old_messages_and_numbering_goes_on(backend: Backend) {
    let (store, _) = open(backend).await;
    let old: Vec<Msg> = (1..=3)
        .map(|i| Msg {
            send_time: 1_000,
            ..msg(i, "a", "b", &format!("o{i}"))
        })
        .collect();
    store.append(&old).await.unwrap();
    settle(&*store).await;
    store.append(&[msg(4, "a", "b", "new")]).await.unwrap();
    let pruned = store.prune(2_000).await.unwrap();
    assert_eq!(pruned, 3);
    assert_eq!(contents(&*store, "b", Stream::Inbox, 0).await, ["m4"]);
    assert_eq!(contents(&*store, "a", Stream::Sent, 0).await, ["m4"]);
    let next = store.append(&[msg(5, "a", "b", "")]).await.unwrap();
    assert_eq!(
        numbers(&next),
        [(5, 5)],
        "numbering goes on after retention"
    );
}

async fn group_membership_and_the_groups_seq(backend: Backend) {
    let (store, _) = open(backend).await;
    let group = Group {
        group_id: "g_team".into(),
        name: "team".into(),
        owner: "o".into(),
        created_at: 1,
    };
    let first = [
        ("o".to_string(), Role::Owner),
        ("m".to_string(), Role::Member),
    ];
    store.create_group(&group, &first).await.unwrap();
    assert_eq!(store.group("g_team").await.unwrap(), Some(group.clone()));
    assert_eq!(store.group("g_none").await.unwrap(), None);

    // Two messages in the group's stream: a member added now joins at seq 2.
    let to_group = |n| Msg {
        msg_type: msg_type::GROUP,
        ..msg(n, "o", "g_team", "")
    };
    store.append(&[to_group(1), to_group(2)]).await.unwrap();
    let added = store
        .add_members("g_team", &["m".to_string(), "n".to_string()], true)
        .await
        .unwrap();
    assert_eq!(added, ["n"], "m was a member already");
    let members = store.members("g_team").await.unwrap();
    let joined: Vec<(&str, Role, i64)> = members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role, m.joined_seq))
        .collect();
    assert_eq!(
        joined,
        [
            ("m", Role::Member, 0),
            ("n", Role::Member, 2),
            ("o", Role::Owner, 0)
        ]
    );

    assert!(store.set_role("g_team", "m", Role::Admin).await.unwrap());
    assert!(!store.set_role("g_team", "x", Role::Admin).await.unwrap());
    assert!(store.rename_group("g_team", "crew").await.unwrap());
    assert!(!store.rename_group("g_none", "crew").await.unwrap());
    let mine = store.groups_of("m").await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].group.name.as_str(), mine[0].role, mine[0].seq),
        ("crew", Role::Admin, 2)
    );
    // Only chosen memberships count: the owner's and n's (added as having chosen it), not m's
    // (a first member the owner named).
    let counts = store
        .group_counts(&[
            "m".to_string(),
            "n".to_string(),
            "o".to_string(),
            "z".to_string(),
        ])
        .await
        .unwrap();
    assert_eq!(
        (
            counts.get("m"),
            counts.get("n"),
            counts.get("o"),
            counts.get("z")
        ),
        (None, Some(&1), Some(&1), None)
    );

    // Invitations: one per user and group; a user keeps the newest `keep`.
    let (i1, i2) = ("i1".to_string(), "i2".to_string());
    let invited = store
        .invite("g_team", &[i1.clone(), i2.clone()], "o", 10, 1)
        .await
        .unwrap();
    assert_eq!(invited, [i1.clone(), i2.clone()]);
    let again = store
        .invite("g_team", std::slice::from_ref(&i1), "o", 11, 1)
        .await
        .unwrap();
    assert!(again.is_empty(), "invited already");
    let other = Group {
        group_id: "g_other".into(),
        name: "other".into(),
        owner: "o".into(),
        created_at: 2,
    };
    store
        .create_group(&other, &[("o".to_string(), Role::Owner)])
        .await
        .unwrap();
    store
        .invite("g_other", std::slice::from_ref(&i1), "o", 20, 1)
        .await
        .unwrap();
    let kept = store.invites_of("i1").await.unwrap();
    assert_eq!(kept.len(), 1, "only the newest is kept: {kept:?}");
    assert_eq!(
        (
            kept[0].group_id.as_str(),
            kept[0].name.as_str(),
            kept[0].inviter.as_str()
        ),
        ("g_other", "other", "o")
    );
    assert!(store.take_invite("g_other", "i1").await.unwrap());
    assert!(!store.take_invite("g_other", "i1").await.unwrap());

    assert!(store.remove_member("g_team", "n").await.unwrap());
    assert!(!store.remove_member("g_team", "n").await.unwrap());
    assert!(store.dissolve_group("g_team").await.unwrap());
    assert!(!store.dissolve_group("g_team").await.unwrap());
    assert!(store.members("g_team").await.unwrap().is_empty());
    assert!(
        store.invites_of("i2").await.unwrap().is_empty(),
        "dissolved with its group"
    );
    assert!(store.groups_of("m").await.unwrap().is_empty());
    // The group's messages stay (until retention).
    assert_eq!(
        contents(&*store, "g_team", Stream::Inbox, 0).await,
        ["m1", "m2"]
    );
}

async fn a_failed_commit_stores_nothing_and_takes_no_number(backend: Backend) {
    let (store, config) = open(backend).await;
    store.append(&[msg(1, "a", "b", "1")]).await.unwrap();
    // Where each backend commits an append (SQLite: the log file first).
    let (target, table) = match backend {
        Backend::Sqlite => (
            format!("{}/natter-log.db", config.storage.path),
            "log_batches",
        ),
        Backend::Postgres => (config.storage.url.clone(), "messages"),
    };
    common::sql(
        backend,
        &target,
        &format!("ALTER TABLE {table} RENAME TO away"),
    )
    .await;
    let failed = store
        .append(&[msg(2, "a", "b", "2"), msg(3, "c", "b", "3")])
        .await;
    assert!(failed.is_err(), "{failed:?}");
    common::sql(
        backend,
        &target,
        &format!("ALTER TABLE away RENAME TO {table}"),
    )
    .await;

    assert_eq!(store.cursors("b").await.unwrap(), (1, 0));
    let next = store.append(&[msg(3, "c", "b", "3")]).await.unwrap();
    assert_eq!(numbers(&next), [(2, 1)], "the failed batch took no number");
    assert_eq!(contents(&*store, "b", Stream::Inbox, 0).await, ["m1", "m3"]);
}

/// A page holds no more than its byte budget (at least one message), and pages taken from the
/// last cursor cover the stream with no gap, wherever the messages are kept.
async fn pages_are_bounded_in_bytes_and_still_cover_the_stream(backend: Backend) {
    let (store, _) = open(backend).await;
    let body = "b".repeat(1000);
    for n in 1..=12u32 {
        let m = Msg {
            content: format!("{n:02}{body}"),
            ..msg(n, "a", "b", &format!("l{n}"))
        };
        store.append(&[m]).await.unwrap();
        if n == 6 {
            settle(&*store).await;
        }
    }
    let weight = natter::store::page_bytes(&Msg {
        content: format!("01{body}"),
        ..Msg::default()
    });
    for stream in [Stream::Inbox, Stream::Sent] {
        let owner = if matches!(stream, Stream::Inbox) {
            "b"
        } else {
            "a"
        };
        // Three fit in three messages' weight; one in a budget smaller than one.
        let page = store.page(owner, stream, 0, 100, 3 * weight).await.unwrap();
        assert_eq!(page.len(), 3, "{stream:?}");
        assert_eq!(
            store.page(owner, stream, 0, 100, 10).await.unwrap().len(),
            1
        );
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = store
                .page(owner, stream, after, 100, 5 * weight)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 5, "{stream:?}: {}", page.len());
            for m in page {
                let cursor = if matches!(stream, Stream::Inbox) {
                    m.seq
                } else {
                    m.send_seq
                };
                assert_eq!(cursor, after + 1, "{stream:?}: no gap");
                after = cursor;
                seen.push(m.content[..2].to_string());
            }
        }
        let want: Vec<String> = (1..=12).map(|n| format!("{n:02}")).collect();
        assert_eq!(seen, want, "{stream:?}");
    }
}

async fn revocations_keep_the_latest_time_and_forget_expired_tokens(backend: Backend) {
    use store::Revocation;
    let (store, _config) = open(backend).await;
    let user = |before| Revocation::User {
        user: "u".into(),
        before,
    };
    let token = |jti: &str, expires_at| Revocation::Token {
        jti: jti.into(),
        expires_at,
    };
    for r in [
        user(100),
        user(50),
        token("a", 20),
        token("a", 10),
        token("b", 5),
    ] {
        store.revoke(&r).await.unwrap();
    }
    let mut now = store.revocations(6).await.unwrap();
    now.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(now, [token("a", 20), user(100)]);
    // Gone for good once expired, even for a later reader.
    assert_eq!(store.revocations(21).await.unwrap(), [user(100)]);
    assert_eq!(store.revocations(0).await.unwrap(), [user(100)]);
}

/// One batch with entries of both users of a pair (and a receipt), then another: the row's last
/// entry is the batch's last, and each user has read up to their own last entry (or the
/// position a receipt gave), in the same commit.
async fn a_batch_of_both_users_leaves_each_read_at_their_own_last_entry(backend: Backend) {
    use natter::store::conv::ListScope;
    let (store, _config) = open(backend).await;
    let row = |user: &'static str| {
        let store = store.clone();
        async move {
            let parts = store
                .chat_list(user, ListScope::One("d:a:b"))
                .await
                .unwrap();
            let r = parts.rows.get("d:a:b").unwrap().clone();
            let read = if user == "a" { r.read_a } else { r.read_b };
            (r.last.conv_seq, r.last.preview.clone(), read)
        }
    };
    store
        .append(&[
            msg(1, "a", "b", "1"),
            msg(2, "b", "a", "2"),
            msg(3, "a", "b", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(row("a").await, (3, "m3".to_string(), 3));
    assert_eq!(row("b").await, (3, "m3".to_string(), 2));
    // The next batch: b answers twice and reads up to 3 by a receipt, a reads nothing new.
    let mut receipt = msg(6, "b", "a", "r");
    receipt.msg_type = msg_type::READ;
    receipt.conv_seq = 3;
    receipt.content = String::new();
    store
        .append(&[msg(4, "b", "a", "4"), receipt, msg(5, "b", "a", "5")])
        .await
        .unwrap();
    assert_eq!(row("a").await, (5, "m5".to_string(), 3));
    assert_eq!(row("b").await, (5, "m5".to_string(), 5));
    // And a batch of a alone, on a row that exists.
    store.append(&[msg(7, "a", "b", "7")]).await.unwrap();
    assert_eq!(row("a").await, (6, "m7".to_string(), 6));
    assert_eq!(row("b").await, (6, "m7".to_string(), 5));
}
