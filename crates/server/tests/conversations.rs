//! Conversations on both stores: conversation ids and per-conversation numbers, the chat list
//! (last entry, unread, read positions, settings), history per conversation in both
//! directions, read positions across devices and to the peer, group read counts, recall, edit
//! and delete for me.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Client, TestServer, config_for, groups::*, start};
use natter_protocol::{Msg, msg_type};
use serde_json::{Value, json};

on_both_stores!(
    one_to_one_entries_share_one_order_and_the_list_counts_unread,
    history_pages_back_and_forth_in_the_conversations_order,
    groups_number_entries_by_the_group_and_count_unread_per_member,
    settings_and_delete_for_me_reach_every_device,
    recall_and_edit_change_the_entry_for_everyone,
    chat_list_pages_cover_every_conversation_once_in_order,
);

/// Reads frames until one of `msg_type`.
async fn next_of(c: &mut Client, t: i32) -> Msg {
    loop {
        let m = c.recv().await;
        if m.msg_type == t {
            return m;
        }
    }
}

async fn send(c: &mut Client, to: &str, local_id: &str, content: &str) -> Msg {
    c.send_msg(to, local_id, content).await;
    next_ack(c, local_id).await
}

async fn list(server: &TestServer, user: &str) -> Vec<Value> {
    let (status, body) = api(server, "GET", "/api/v1/conversations", user, None).await;
    assert_eq!(status, 200, "{body}");
    body["conversations"].as_array().unwrap().clone()
}

async fn history(server: &TestServer, user: &str, conv: &str, query: &str) -> (Vec<i64>, bool) {
    let path = format!("/api/v1/conversations/{conv}/messages?{query}");
    let (status, body) = api(server, "GET", &path, user, None).await;
    assert_eq!(status, 200, "{body}");
    let seqs = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["conv_seq"].as_i64().unwrap())
        .collect();
    (seqs, body["has_more"].as_bool().unwrap())
}

async fn one_to_one_entries_share_one_order_and_the_list_counts_unread(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut bob = server.connect("bob", "phone").await;
    let mut bob_desk = server.connect("bob", "desk").await;

    // Both directions take numbers from one counter: 1, 2, 3 from alice, 4 from bob.
    for i in 1..=3 {
        let ack = send(&mut alice, "bob", &format!("a{i}"), &format!("hi {i}")).await;
        assert_eq!((ack.conv_id.as_str(), ack.conv_seq), ("d:alice:bob", i));
        let got = bob.recv().await;
        assert_eq!((got.conv_id.as_str(), got.conv_seq), ("d:alice:bob", i));
    }
    let list_of_bob = list(&server, "bob").await;
    assert_eq!(list_of_bob.len(), 1);
    let c = &list_of_bob[0];
    assert_eq!(
        (c["kind"].as_str(), c["peer"].as_str(), c["unread"].as_i64()),
        (Some("direct"), Some("alice"), Some(3))
    );
    assert_eq!(c["last"]["preview"], "hi 3");
    assert_eq!(c["last"]["send_id"], "alice");
    assert_eq!(list(&server, "alice").await[0]["unread"], 0);

    // Bob reads up to 2 on his phone: his desk is told, alice's phone gets a receipt, and the
    // list shows it everywhere.
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/conversations/d:alice:bob/read",
        "bob",
        Some(json!({"conv_seq": 2})),
    )
    .await;
    assert_eq!((status, &body["read_seq"]), (200, &json!(2)), "{body}");
    let told = next_of(&mut bob_desk, msg_type::CONVERSATION_UPDATED).await;
    assert_eq!(told.conv_id, "d:alice:bob");
    assert_eq!(json_of(&told.content), json!({"read_seq": 2}));
    let receipt = next_of(&mut alice, msg_type::READ).await;
    assert_eq!((receipt.send_id.as_str(), receipt.conv_seq), ("bob", 2));
    assert_eq!(list(&server, "bob").await[0]["unread"], 1);
    assert_eq!(list(&server, "alice").await[0]["peer_read_seq"], 2);
    // A read position never moves back, and never past the last entry.
    let (_, body) = api(
        &server,
        "POST",
        "/api/v1/conversations/d:alice:bob/read",
        "bob",
        Some(json!({"conv_seq": 99})),
    )
    .await;
    assert_eq!(body["read_seq"], 3);
    let ack = send(&mut alice, "bob", "a4", "after").await;
    assert_eq!(ack.conv_seq, 4);
    assert_eq!(list(&server, "bob").await[0]["unread"], 1);

    // Bob's own entry moves his read position: nothing unread for him.
    let ack = send(&mut bob, "alice", "b1", "hello").await;
    assert_eq!(ack.conv_seq, 5);
    let mine = &list(&server, "bob").await[0];
    assert_eq!(
        (mine["unread"].as_i64(), mine["read_seq"].as_i64()),
        (Some(0), Some(5))
    );
    assert_eq!(list(&server, "alice").await[0]["unread"], 1);

    // A receipt over the WebSocket with a conv_seq moves the position too.
    alice
        .send_text(
            &json!({"receiver_id": "bob", "msg_type": 23, "conv_seq": 5, "local_id": "r"})
                .to_string(),
        )
        .await;
    next_ack(&mut alice, "r").await;
    assert_eq!(list(&server, "alice").await[0]["unread"], 0);

    // Somebody else's conversation, or an id that names none: 404.
    for (user, id) in [
        ("carol", "d:alice:bob"),
        ("bob", "d:bob:alice"),
        ("bob", "nope"),
    ] {
        let path = format!("/api/v1/conversations/{id}/messages");
        let (status, body) = api(&server, "GET", &path, user, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("conversation_not_found"))
        );
    }
}

async fn history_pages_back_and_forth_in_the_conversations_order(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut bob = server.connect("bob", "phone").await;
    // Entries from both sides, with other conversations between them.
    for i in 1..=60 {
        let (from, to) = if i % 3 == 0 {
            (&mut bob, "alice")
        } else {
            (&mut alice, "bob")
        };
        send(from, to, &format!("m{i}"), &format!("{i}")).await;
        send(&mut alice, "carol", &format!("c{i}"), "elsewhere").await;
    }
    let conv = "d:alice:bob";
    let (last, more) = history(&server, "bob", conv, "").await;
    assert_eq!(last, (11..=60).collect::<Vec<_>>());
    assert!(more);
    let (older, _) = history(&server, "bob", conv, "before=11").await;
    assert_eq!(older, (1..=10).collect::<Vec<_>>());
    let (newer, more) = history(&server, "alice", conv, "after=55&limit=3").await;
    assert_eq!((newer, more), (vec![56, 57, 58], true));
    let (rest, more) = history(&server, "alice", conv, "after=58").await;
    assert_eq!((rest, more), (vec![59, 60], false));
    // The content is the entry's, in order.
    let (_, body) = api(
        &server,
        "GET",
        &format!("/api/v1/conversations/{conv}/messages?before=4"),
        "alice",
        None,
    )
    .await;
    let contents: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["1", "2", "3"]);
    let (status, _) = api(
        &server,
        "GET",
        &format!("/api/v1/conversations/{conv}/messages?before=3&after=1"),
        "alice",
        None,
    )
    .await;
    assert_eq!(status, 400);
    // Alice's list: two conversations, carol's the newest.
    tokio::time::sleep(Duration::from_millis(5)).await;
    send(&mut alice, "carol", "c61", "the last").await;
    let mine = list(&server, "alice").await;
    let ids: Vec<&str> = mine
        .iter()
        .map(|c| c["conv_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d:alice:carol", "d:alice:bob"]);
    // A page of one conversation at a time, with its cursor.
    let (_, page) = api(
        &server,
        "GET",
        "/api/v1/conversations?limit=1",
        "alice",
        None,
    )
    .await;
    assert_eq!(page["conversations"][0]["conv_id"], "d:alice:carol");
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page) = api(
        &server,
        "GET",
        &format!("/api/v1/conversations?limit=1&cursor={next}"),
        "alice",
        None,
    )
    .await;
    assert_eq!(page["conversations"][0]["conv_id"], "d:alice:bob");
    assert_eq!(page["next"], Value::Null);
}

async fn groups_number_entries_by_the_group_and_count_unread_per_member(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut bob = server.connect("bob", "phone").await;
    let g = create_group(&server, "alice", &["bob"]).await;
    alice.send_text(&group_msg(&g, "g1", "one")).await;
    let ack = next_ack(&mut alice, "g1").await;
    assert_eq!((ack.conv_id.as_str(), ack.conv_seq), (g.as_str(), ack.seq));
    alice.send_text(&group_msg(&g, "g2", "two")).await;
    let two = next_ack(&mut alice, "g2").await;
    let got = next_group_msg(&mut bob).await;
    assert_eq!(got.conv_seq, got.seq);

    let entry = |l: Vec<Value>| l.into_iter().find(|c| c["conv_id"] == g.as_str()).unwrap();
    let of_bob = entry(list(&server, "bob").await);
    assert_eq!(of_bob["kind"], "group");
    assert_eq!(of_bob["name"], "team");
    // The creation notice and both messages.
    assert_eq!(of_bob["unread"], 3);
    assert_eq!(of_bob["last"]["preview"], "two");
    assert_eq!(entry(list(&server, "alice").await)["unread"], 0);

    // Carol joins later: her history and unread start at her join (the notice of it first).
    let (status, _) = api(
        &server,
        "POST",
        &format!("/api/v1/groups/{g}/members"),
        "alice",
        Some(json!({"members": ["carol"]})),
    )
    .await;
    assert_eq!(status, 200);
    alice.send_text(&group_msg(&g, "g3", "three")).await;
    let three = next_ack(&mut alice, "g3").await;
    let (seqs, _) = history(&server, "carol", &g, "").await;
    assert_eq!(seqs, vec![three.conv_seq - 1, three.conv_seq]);
    assert_eq!(entry(list(&server, "carol").await)["unread"], 2);

    // Bob reads up to "two" over the WebSocket: his position, not a message in the group.
    bob.send_text(
        &json!({"receiver_id": g, "msg_type": 23, "conv_seq": two.conv_seq, "local_id": "r"})
            .to_string(),
    )
    .await;
    let ack = next_ack(&mut bob, "r").await;
    assert_eq!(ack.conv_seq, two.conv_seq);
    assert_eq!(entry(list(&server, "bob").await)["unread"], 2);
    let (_, reads) = api(
        &server,
        "GET",
        &format!("/api/v1/conversations/{g}/reads?conv_seq={}", two.conv_seq),
        "alice",
        None,
    )
    .await;
    assert_eq!(
        (reads["read"].as_i64(), reads["of"].as_i64()),
        (Some(1), Some(2))
    );
    // Nobody else was sent anything for it.
    let (seqs, _) = history(&server, "alice", &g, "").await;
    assert_eq!(*seqs.last().unwrap(), three.conv_seq);
    // A non-member reads nothing.
    let (status, _) = api(
        &server,
        "GET",
        &format!("/api/v1/conversations/{g}/messages"),
        "dave",
        None,
    )
    .await;
    assert_eq!(status, 403);
}

async fn settings_and_delete_for_me_reach_every_device(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut alice_desk = server.connect("alice", "desk").await;
    send(&mut alice, "bob", "1", "to bob").await;
    send(&mut alice, "carol", "2", "to carol").await;
    send(&mut alice, "bob", "3", "again").await;
    // Pinning carol's puts it first, on every device.
    let (status, body) = api(
        &server,
        "PATCH",
        "/api/v1/conversations/d:alice:carol",
        "alice",
        Some(json!({"pinned": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let told = next_of(&mut alice_desk, msg_type::CONVERSATION_UPDATED).await;
    assert_eq!(
        json_of(&told.content),
        json!({"pinned": true, "muted": false})
    );
    let mine = list(&server, "alice").await;
    assert_eq!(mine[0]["conv_id"], "d:alice:carol");
    assert_eq!(mine[0]["pinned"], true);
    let (_, body) = api(
        &server,
        "PATCH",
        "/api/v1/conversations/d:alice:bob",
        "alice",
        Some(json!({"muted": true})),
    )
    .await;
    assert_eq!(
        (body["muted"].as_bool(), body["pinned"].as_bool()),
        (Some(true), Some(false))
    );
    next_of(&mut alice_desk, msg_type::CONVERSATION_UPDATED).await;

    // Delete for me: gone from alice's history, not from bob's.
    let (status, _) = api(
        &server,
        "POST",
        "/api/v1/conversations/d:alice:bob/hide",
        "alice",
        Some(json!({"conv_seqs": [1]})),
    )
    .await;
    assert_eq!(status, 200);
    let told = next_of(&mut alice_desk, msg_type::CONVERSATION_UPDATED).await;
    assert_eq!(json_of(&told.content), json!({"hidden": [1]}));
    assert_eq!(
        history(&server, "alice", "d:alice:bob", "").await.0,
        vec![2]
    );
    assert_eq!(
        history(&server, "bob", "d:alice:bob", "").await.0,
        vec![1, 2]
    );
}

async fn recall_and_edit_change_the_entry_for_everyone(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut bob = server.connect("bob", "phone").await;
    let secret = send(&mut alice, "bob", "s", "the secret").await;
    let typo = send(&mut alice, "bob", "t", "helo").await;
    bob.recv().await;
    bob.recv().await;
    let change = |t: i32, local: &str, content: Value| {
        json!({"receiver_id": "bob", "msg_type": t, "local_id": local, "content": content.to_string()})
            .to_string()
    };
    // Bob cannot recall alice's entry.
    bob.send_text(
        &json!({"receiver_id": "alice", "msg_type": 25, "local_id": "x",
                "content": json!({"conv_seq": secret.conv_seq}).to_string()})
        .to_string(),
    )
    .await;
    let refused = next_ack(&mut bob, "x").await;
    assert!(
        refused.content.starts_with("not_editable"),
        "{}",
        refused.content
    );

    alice
        .send_text(&change(25, "r", json!({"conv_seq": secret.conv_seq})))
        .await;
    let recall = next_ack(&mut alice, "r").await;
    assert_eq!(recall.conv_seq, 3);
    let got = bob.recv().await;
    assert_eq!(got.msg_type, msg_type::RECALL);
    alice
        .send_text(&change(
            26,
            "e",
            json!({"conv_seq": typo.conv_seq, "content": "hello"}),
        ))
        .await;
    next_ack(&mut alice, "e").await;
    let got = bob.recv().await;
    assert_eq!(got.msg_type, msg_type::EDIT);
    // A recalled entry cannot be edited.
    alice
        .send_text(&change(
            26,
            "e2",
            json!({"conv_seq": secret.conv_seq, "content": "x"}),
        ))
        .await;
    assert!(
        next_ack(&mut alice, "e2")
            .await
            .content
            .starts_with("not_editable")
    );

    // History, the list and a new device's replay show the change, now and once the store
    // has moved it (SQLite moves its log every 50 ms).
    for _ in 0..2 {
        let (_, body) = api(
            &server,
            "GET",
            "/api/v1/conversations/d:alice:bob/messages",
            "bob",
            None,
        )
        .await;
        let page = body["messages"].as_array().unwrap();
        assert_eq!(
            (page[0]["msg_type"].as_i64(), page[0]["content"].as_str()),
            (Some(25), Some(""))
        );
        assert_eq!(page[1]["content"], "hello");
        assert!(!body.to_string().contains("the secret"));
        let url = format!("{}?since_seq=0", server.url("bob", "tablet"));
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut tablet = Client { ws };
        let first = tablet.recv().await;
        assert_eq!((first.msg_type, first.content.as_str()), (25, ""));
        assert_eq!(tablet.recv().await.content, "hello");
        tablet.close().await;
        let last = &list(&server, "bob").await[0]["last"];
        assert_eq!(
            (last["msg_type"].as_i64(), last["preview"].as_str()),
            (Some(26), Some("hello"))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn chat_list_pages_cover_every_conversation_once_in_order(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    for i in 0..120 {
        send(&mut alice, &format!("u{i:03}"), &format!("m{i}"), "hi").await;
    }
    let (status, _) = api(
        &server,
        "PATCH",
        "/api/v1/conversations/d:alice:u007",
        "alice",
        Some(json!({"pinned": true})),
    )
    .await;
    assert_eq!(status, 200);
    // One more entry in an old conversation moves it to the top (on SQLite, from its log).
    send(&mut alice, "u003", "again", "hi again").await;
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/conversations?limit=50{cursor}");
        let (status, page) = api(&server, "GET", &path, "alice", None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["conversations"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            // As a client sends it: percent-encoded.
            Some(next) => {
                cursor = format!("&cursor={}", next.replace('%', "%25").replace(':', "%3A"))
            }
            None => break,
        }
    }
    let ids: Vec<&str> = seen
        .iter()
        .map(|c| c["conv_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 120, "{ids:?}");
    let unique: std::collections::HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), 120);
    assert_eq!(&ids[..2], ["d:alice:u007", "d:alice:u003"]);
    let key = |c: &Value| {
        (
            c["activity"].as_i64().unwrap(),
            c["conv_id"].as_str().unwrap().to_owned(),
        )
    };
    for w in seen[1..].windows(2) {
        let (a, b) = (key(&w[0]), key(&w[1]));
        assert!(a.0 > b.0 || (a.0 == b.0 && a.1 < b.1), "{a:?} then {b:?}");
    }
}
