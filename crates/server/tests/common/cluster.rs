//! Helpers of the cluster tests: three nodes on one database and Redis prefix, and waits that
//! are round trips to Redis, not sleeps.

use std::time::Duration;

use super::{
    Client, TestServer, cluster_node_config, fresh_pg_database, redis_prefix, redis_url, start,
};
use natter_protocol::msg_type;

pub async fn three_nodes(tag: &str) -> Vec<TestServer> {
    let pg = fresh_pg_database().await;
    let prefix = redis_prefix(tag);
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(cluster_node_config(&pg, &prefix, &redis_url())).await);
    }
    // Every node's subscriber listens (Redis confirmed its groups channel) before clients come.
    for node in &nodes {
        channels_reach(node, 1.0).await;
    }
    nodes
}

/// Waits until Redis has confirmed `want` channels of `node`'s subscriber
/// (`natter_cluster_channels`): a round trip to Redis, not a guess at how long it takes.
pub async fn channels_reach(node: &TestServer, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = node.metric("natter_cluster_channels").await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node listens to {now} channels, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Connects a user who has no other device on `node`, and waits until the node's subscription
/// to the user's channel is confirmed.
pub async fn connect(node: &TestServer, user: &str, platform: &str) -> Client {
    let before = node.metric("natter_cluster_channels").await;
    let c = node.connect(user, platform).await;
    channels_reach(node, before + 1.0).await;
    c
}

pub async fn ack(c: &mut Client, local_id: &str) -> natter_protocol::Msg {
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::REC_RESP && m.local_id == local_id {
            return m;
        }
    }
}
