//! Cluster mode: three nodes (in this process, each a full server on its own port) on one real
//! PostgreSQL database and one real Redis, under a key prefix of the test's own.

mod common;

use std::time::Duration;

use common::{
    Client, TestServer, cluster_node_config, free_port, fresh_pg_database, own_redis, redis_prefix,
    redis_url, start,
};
use natter_protocol::msg_type;
use serde_json::json;

async fn three_nodes(tag: &str) -> Vec<TestServer> {
    let pg = fresh_pg_database().await;
    let prefix = redis_prefix(tag);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(cluster_node_config(&pg, &prefix, &redis_url())).await);
    }
    // Let every node's subscriber connect before clients arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    nodes
}

/// Connects and waits until the node has taken the user's channel.
async fn connect(node: &TestServer, user: &str, platform: &str) -> Client {
    let c = node.connect(user, platform).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c
}

async fn ack(c: &mut Client, local_id: &str) -> natter_protocol::Msg {
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::REC_RESP && m.local_id == local_id {
            return m;
        }
    }
}

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
                seqs
            }));
        }
    }
    let mut acked: Vec<i64> = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_presence_and_the_others_keep_serving() {
    let mut nodes = three_nodes("down").await;
    let _carol = connect(&nodes[2], "carol", "tablet").await;
    expect_online(&nodes[0], "carol", true, Duration::from_secs(2)).await;
    nodes[2].shutdown();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect_online(&nodes[0], "carol", false, Duration::from_millis(300)).await;
    let mut a = connect(&nodes[0], "a", "p").await;
    let mut b = connect(&nodes[1], "b", "p").await;
    a.send_msg("b", "1", "still here").await;
    assert_eq!(b.recv().await.content, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_no_acknowledged_message() {
    let port = free_port();
    let mut redis = own_redis(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let pg = fresh_pg_database().await;
    let prefix = redis_prefix("restart");
    let n0 = start(cluster_node_config(&pg, &prefix, &url)).await;
    let n1 = start(cluster_node_config(&pg, &prefix, &url)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut alice = connect(&n0, "alice", "p").await;
    let mut bob = connect(&n1, "bob", "p").await;
    alice.send_msg("bob", "1", "before").await;
    assert_eq!(bob.recv().await.content, "before");

    // Redis goes away; alice keeps sending. Her messages are stored and acknowledged.
    redis.kill().await.unwrap();
    let _ = redis.wait().await;
    for i in 2..=4 {
        alice.send_msg("bob", &i.to_string(), "during").await;
        assert_eq!(ack(&mut alice, &i.to_string()).await.seq, i);
    }

    // Redis comes back; the nodes reconnect and resubscribe by themselves.
    let _redis = own_redis(port).await;
    let mut delivered = false;
    for i in 5..40 {
        alice.send_msg("bob", &i.to_string(), "after").await;
        ack(&mut alice, &i.to_string()).await;
        // (A publish queued while Redis was away may still get through once it is back.)
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), bob.recv()).await {
            assert!(
                m.content == "after" || m.content == "during",
                "{}",
                m.content
            );
            delivered = true;
            break;
        }
    }
    assert!(delivered, "live delivery resumed after Redis came back");

    // Nothing acknowledged was lost: bob's device syncs what the outage kept from it.
    let url = format!("{}?since_seq=1", n1.url("bob", "tablet"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut tablet = Client { ws };
    for seq in 2..=4 {
        let m = tablet.recv().await;
        assert_eq!((m.seq, m.content.as_str()), (seq, "during"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_vanishes_from_presence_within_the_ttl() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let pg = fresh_pg_database().await;
    let prefix = redis_prefix("kill");
    let survivor = start(cluster_node_config(&pg, &prefix, &redis_url())).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("NATTER__STORAGE__BACKEND", "postgres")
        .env("NATTER__STORAGE__URL", &pg)
        .env("NATTER__CLUSTER__ENABLED", "true")
        .env("NATTER__CLUSTER__REDIS_URL", redis_url())
        .env("NATTER__CLUSTER__KEY_PREFIX", &prefix)
        .env("NATTER__CLUSTER__PRESENCE_TTL", "900ms")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the node logs its address");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let (_dave, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/dave/conn/phone"))
        .await
        .unwrap();
    expect_online(&survivor, "dave", true, Duration::from_secs(2)).await;
    child.kill().await.unwrap();
    // Gone within the presence TTL (900 ms), give or take a refresh.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_online(&survivor, "dave", false, Duration::from_millis(300)).await;
}

/// Asks `node` whether `user` is online until the answer is `want`, for up to `within`; a
/// lookup that failed (503 `presence_unavailable`: Redis did not answer in time) is asked again.
async fn expect_online(node: &TestServer, user: &str, want: bool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = node
            .get(&format!("/api/v1/users/{user}/online?user_id=x"))
            .await;
        let online = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["online"].as_bool());
        if online == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} online: want {want}, the last answer was {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
