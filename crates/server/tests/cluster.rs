//! Cluster mode: three nodes (in this process, each a full server on its own port) on one real
//! PostgreSQL database and one real Redis, under a key prefix of the test's own.

mod common;

use common::{Client, cluster::*, groups::*};
use natter_protocol::msg_type;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_and_multi_device_across_nodes() {
    let nodes = three_nodes("1to1").await;
    let mut alice_phone = connect(&nodes[0], "alice", "phone").await;
    let mut alice_desk = connect(&nodes[2], "alice", "desk").await;
    let mut bob_phone = connect(&nodes[1], "bob", "phone").await;
    let mut bob_web = connect(&nodes[2], "bob", "web").await;

    alice_phone
        .send_msg("bob", "x1", "across the cluster")
        .await;
    let a = ack(&mut alice_phone, "x1").await;
    assert_eq!(a.seq, 1);
    for dev in [&mut bob_phone, &mut bob_web, &mut alice_desk] {
        let m = dev.recv().await;
        assert_eq!(
            (m.content.as_str(), m.server_id.as_str()),
            ("across the cluster", a.server_id.as_str())
        );
    }
    // Presence, asked on any node, covers every node.
    let (_, body) = nodes[0].get("/api/v1/users/bob/online?user_id=alice").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["platforms"], json!(["phone", "web"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relogin_on_another_node_kicks_the_old_connection() {
    let nodes = three_nodes("kick").await;
    let mut old = connect(&nodes[0], "bob", "phone").await;
    let mut new = connect(&nodes[1], "bob", "phone").await;
    assert_eq!(old.closed().await, Some(4001));
    let mut alice = connect(&nodes[2], "alice", "p").await;
    alice.send_msg("bob", "k", "to the new one").await;
    assert_eq!(new.recv().await.content, "to the new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_disconnects_a_user_on_every_node() {
    let nodes = three_nodes("disconnect").await;
    let mut phone = connect(&nodes[0], "bob", "phone").await;
    let mut desk = connect(&nodes[1], "bob", "desk").await;
    let key = [("X-Api-Key", common::CLUSTER_SERVICE_KEY)];
    let (status, _) = common::http_request_with(
        nodes[2].addr,
        "POST",
        "/api/v1/users/bob/disconnect",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(phone.closed().await, Some(4006));
    assert_eq!(desk.closed().await, Some(4006));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_deliver_across_nodes() {
    let nodes = three_nodes("groups").await;
    let (status, body) = nodes[0]
        .request(
            "POST",
            "/api/v1/groups?user_id=a",
            Some(json!({"name": "x", "members": ["b", "c"]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let group = serde_json::from_str::<serde_json::Value>(&body).unwrap()["group"]["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut a = connect(&nodes[0], "a", "p").await;
    let mut b = connect(&nodes[1], "b", "p").await;
    let mut c = connect(&nodes[2], "c", "p").await;
    a.send_text(
        &json!({"msg_type": 1, "receiver_id": group, "local_id": "g", "content": "hi all"})
            .to_string(),
    )
    .await;
    for member in [&mut b, &mut c] {
        loop {
            let m = member.recv().await;
            if m.msg_type == msg_type::GROUP {
                assert_eq!(m.content, "hi all");
                break;
            }
        }
    }
    ack(&mut a, "g").await;

    // Dissolving it reaches the members on the other nodes, though the group is gone.
    let (status, _) = nodes[0]
        .request("DELETE", &format!("/api/v1/groups/{group}?user_id=a"), None)
        .await;
    assert_eq!(status, 204);
    for member in [&mut b, &mut c] {
        while member.recv().await.msg_type != 5 {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_three_nodes_never_duplicate_or_skip_a_seq() {
    let nodes = three_nodes("seq").await;
    let mut target = connect(&nodes[0], "target", "p").await;
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for s in 0..2 {
            let mut c = connect(node, &format!("s{n}-{s}"), "p").await;
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    c.send_msg("target", &format!("{i}"), "x").await;
                }
                let mut seqs = Vec::new();
                while seqs.len() < 25 {
                    let m = c.recv().await;
                    if m.msg_type == msg_type::REC_RESP {
                        seqs.push(m.seq);
                    }
                }
                // The client stays connected until every sender is: `connect` counts the
                // node's channels, which a departure would lower meanwhile.
                (seqs, c)
            }));
        }
    }
    let mut acked: Vec<i64> = Vec::new();
    let mut senders = Vec::new();
    for t in tasks {
        let (seqs, c) = t.await.unwrap();
        acked.extend(seqs);
        senders.push(c);
    }
    acked.sort();
    assert_eq!(acked, (1..=150).collect::<Vec<_>>(), "every seq once");
    // Live pushes from different nodes may interleave; each arrives once.
    let mut live: Vec<i64> = Vec::new();
    for _ in 0..150 {
        live.push(target.recv().await.seq);
    }
    live.sort();
    assert_eq!(live, (1..=150).collect::<Vec<_>>());
}

/// The next group message or direct message `c` receives (notices skipped), as (kind, content).
async fn next_content(c: &mut Client) -> (i32, String) {
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::GROUP || m.msg_type == msg_type::SINGLE {
            return (m.msg_type, m.content);
        }
    }
}

/// The reason of the next error reply `c` gets.
async fn next_error(c: &mut Client) -> String {
    loop {
        let m = c.recv().await;
        if m.content_type == natter_protocol::content_type::ERROR {
            return m.content;
        }
    }
}

/// Every node fans a group message out to its own members from its cache of the group. A
/// membership change made through one node reaches the others' caches: a removed member on
/// another node neither receives nor sends any more, an added one does both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_reach_the_caches_of_the_other_nodes() {
    let nodes = three_nodes("members").await;
    let group = create_group(&nodes[0], "a", &["b", "c"]).await;
    let mut a = connect(&nodes[0], "a", "p").await;
    let mut b = connect(&nodes[1], "b", "p").await;
    let mut c = connect(&nodes[2], "c", "p").await;
    let mut d = connect(&nodes[2], "d", "p").await;

    // Nodes 1 and 2 cache the members as they deliver.
    a.send_text(&group_msg(&group, "1", "before")).await;
    for m in [&mut b, &mut c] {
        assert_eq!(next_content(m).await, (msg_type::GROUP, "before".into()));
    }

    // Through node 0: c out, d in.
    let (status, _) = nodes[0]
        .request(
            "DELETE",
            &format!("/api/v1/groups/{group}/members/c?user_id=a"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = nodes[0]
        .request(
            "POST",
            &format!("/api/v1/groups/{group}/members?user_id=a"),
            Some(json!({"members": ["d"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    a.send_text(&group_msg(&group, "2", "after")).await;
    // Then a direct message to c through the same publisher: node 2 takes its Redis messages
    // in order, so c gets the marker first only if the group message did not come to it.
    a.send_msg("c", "marker", "marker").await;
    assert_eq!(
        next_content(&mut b).await,
        (msg_type::GROUP, "after".into())
    );
    assert_eq!(
        next_content(&mut d).await,
        (msg_type::GROUP, "after".into())
    );
    assert_eq!(
        next_content(&mut c).await,
        (msg_type::SINGLE, "marker".into())
    );

    // c may no longer send to the group; d may.
    c.send_text(&group_msg(&group, "c1", "let me in")).await;
    assert!(next_error(&mut c).await.starts_with("not_a_member"));
    d.send_text(&group_msg(&group, "d1", "hello")).await;
    for m in [&mut a, &mut b] {
        assert_eq!(next_content(m).await, (msg_type::GROUP, "hello".into()));
    }
}

/// Two users on two nodes send to each other at once, with read receipts both ways: every
/// commit locks both users' counters (in one sorted order on every node), so none fails and
/// every `seq` and `send_seq` is dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_sends_and_receipts_on_two_nodes_keep_every_sequence_dense() {
    let nodes = three_nodes("cross").await;
    let x = connect(&nodes[0], "x", "p").await;
    let y = connect(&nodes[1], "y", "p").await;
    let run = |mut me: Client, peer: &'static str| {
        tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut last_received = String::new();
            for i in 0..40 {
                if i % 4 == 3 && !last_received.is_empty() {
                    me.send_text(
                        &json!({"msg_type": 23, "receiver_id": peer, "local_id": format!("r{i}"),
                                "content": last_received})
                        .to_string(),
                    )
                    .await;
                } else {
                    me.send_msg(peer, &format!("m{i}"), "crossing").await;
                }
                // Read until this frame's ack, keeping what the peer sent meanwhile.
                loop {
                    let m = me.recv().await;
                    assert_ne!(
                        m.content_type,
                        natter_protocol::content_type::ERROR,
                        "{m:?}"
                    );
                    if m.msg_type == msg_type::REC_RESP {
                        acks.push(m);
                        break;
                    }
                    if m.msg_type == msg_type::SINGLE {
                        last_received = m.server_id;
                    }
                }
            }
            acks
        })
    };
    let (x_acks, y_acks) = (run(x, "y"), run(y, "x"));
    let (x_acks, y_acks) = (x_acks.await.unwrap(), y_acks.await.unwrap());
    for (who, acks) in [("x", &x_acks), ("y", &y_acks)] {
        let send_seqs: Vec<i64> = acks.iter().map(|m| m.send_seq).collect();
        assert_eq!(send_seqs, (1..=40).collect::<Vec<_>>(), "{who}'s send_seq");
        let mut seqs: Vec<i64> = acks.iter().map(|m| m.seq).collect();
        seqs.sort();
        assert_eq!(
            seqs,
            (1..=40).collect::<Vec<_>>(),
            "the peer's inbox seq, from {who}"
        );
    }
}

/// Both users of a pair and two members of a group send from devices on all three nodes at once:
/// every entry gets one `conv_seq`, with no gap, and the chat list's unread counts are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_stay_dense_and_unread_exact_with_senders_on_three_nodes() {
    let nodes = three_nodes("conv").await;
    let mut devices = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for user in ["alice", "bob"] {
            devices.push((user, connect(node, user, &format!("p{n}")).await));
        }
    }
    let g = create_group(&nodes[0], "alice", &["bob", "carol"]).await;
    // Sends `count` messages to `to` (a group when it starts with g_) and returns the acks'
    // conv_seqs; frames from the others are skipped.
    let run = |(user, mut c): (&'static str, Client), to: String, count: usize, tag: usize| {
        tokio::spawn(async move {
            let peer = if user == "alice" { "bob" } else { "alice" };
            let to = if to.is_empty() { peer.to_owned() } else { to };
            let t = if to.starts_with("g_") { 1 } else { 0 };
            for i in 0..count {
                let frame = json!({"receiver_id": to, "msg_type": t, "local_id": format!("{to}-{tag}-{i}"),
                                   "content": "x"});
                c.send_text(&frame.to_string()).await;
            }
            let mut seqs = Vec::new();
            while seqs.len() < count {
                let m = c.recv().await;
                assert_ne!(
                    m.content_type,
                    natter_protocol::content_type::ERROR,
                    "{m:?}"
                );
                if m.msg_type == msg_type::REC_RESP {
                    seqs.push(m.conv_seq);
                }
            }
            (user, c, seqs)
        })
    };
    let mut last_of = std::collections::HashMap::new();
    for (to, count, expected) in [(String::new(), 15, 1..=90), (g.clone(), 10, 2..=61)] {
        let tasks: Vec<_> = devices
            .drain(..)
            .enumerate()
            .map(|(tag, d)| run(d, to.clone(), count, tag))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let (user, c, seqs) = t.await.unwrap();
            let last = last_of.entry((to.clone(), user)).or_insert(0);
            *last = seqs.iter().copied().max().unwrap().max(*last);
            all.extend(seqs);
            devices.push((user, c));
        }
        all.sort();
        assert_eq!(all, expected.collect::<Vec<_>>(), "conv_seqs of {to:?}");
    }
    // Unread: entries after each user's own last one; carol read nothing of the 61.
    for (n, user) in ["alice", "bob", "carol"].into_iter().enumerate() {
        let (status, body) = api(&nodes[n], "GET", "/api/v1/conversations", user, None).await;
        assert_eq!(status, 200);
        for c in body["conversations"].as_array().unwrap() {
            let key = if c["kind"] == "group" {
                g.clone()
            } else {
                String::new()
            };
            let last_seq = if key.is_empty() { 90 } else { 61 };
            let own = last_of.get(&(key, user)).copied().unwrap_or(0);
            assert_eq!(c["last_seq"], last_seq, "{user}: {c}");
            assert_eq!(c["unread"], last_seq - own, "{user}: {c}");
        }
    }
}
