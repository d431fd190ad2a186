//! Cluster mode when something fails: a node stops or is killed, Redis restarts. Nothing
//! acknowledged is lost, presence follows, the other nodes keep serving.

mod common;

use std::time::Duration;

use common::{
    Client, TestServer, cluster::*, cluster_node_config, free_port, fresh_pg_database, own_redis,
    redis_prefix, redis_url, start,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_presence_and_the_others_keep_serving() {
    let mut nodes = three_nodes("down").await;
    let _carol = connect(&nodes[2], "carol", "tablet").await;
    expect_online(&nodes[0], "carol", true, Duration::from_secs(2)).await;
    nodes[2].shutdown();
    // A stopping node takes its devices out of presence as they close.
    expect_online(&nodes[0], "carol", false, Duration::from_secs(10)).await;
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
    channels_reach(&n0, 1.0).await;
    channels_reach(&n1, 1.0).await;
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
    // Nobody takes a killed node's devices out of presence: the entries expire (900 ms TTL).
    expect_online(&survivor, "dave", false, Duration::from_secs(10)).await;
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
