//! Token revocation through the server API, on both stores and across a cluster: a revoked
//! token is refused at the upgrade (401 token_revoked) and on a refresh, the connections holding
//! it close with 4002 while others stay, tokens issued after a user's revocation still work, and
//! the list outlives a restart.

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    Backend, Client, cluster::channels_reach, cluster_node_config, config_for, connect_with,
    fresh_pg_database, groups::json_of, http_request_with, redis_prefix, redis_url, start,
};
use natter::{Config, clock::now_secs};
use natter_protocol::msg_type;
use serde_json::json;

const SECRET: &str = "revoke-test-secret-of-thirty-two";
const KEY: &str = "revoke-test-service-key-of-32-bytes";

/// A token for `user` issued at `iat` with id `jti`.
fn token(user: &str, iat: u64, jti: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "iat": iat, "exp": now_secs() + 3600, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn with_secret(mut config: Config) -> Config {
    config.auth.secret = SECRET.into();
    config.service.key = KEY.into();
    config
}

async fn connect(addr: std::net::SocketAddr, user: &str, platform: &str, token: &str) -> Client {
    let url = format!("ws://{addr}/ws/{user}/conn/{platform}?token={token}");
    let (mut client, _) = connect_with(&url, &[]).await.expect("upgrade");
    registered(&mut client, user).await;
    client
}

/// Waits until the connection is registered: a message to oneself is acked.
async fn registered(client: &mut Client, user: &str) {
    client.send_msg(user, "hello-self", "x").await;
    loop {
        if client.recv().await.msg_type == msg_type::REC_RESP {
            return;
        }
    }
}

/// The refusal of an upgrade with `token`: its status and error.
async fn refusal(addr: std::net::SocketAddr, user: &str, token: &str) -> (u16, String) {
    let url = format!("ws://{addr}/ws/{user}/conn/other?token={token}");
    match connect_with(&url, &[]).await {
        Ok(_) => (101, String::new()),
        Err((status, body)) => (status, json_of(&body)["error"].as_str().unwrap().into()),
    }
}

async fn revoke(
    addr: std::net::SocketAddr,
    key: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let (status, body) =
        http_request_with(addr, "POST", path, &[("X-Api-Key", key)], Some(body)).await;
    (status, json_of(&body))
}

on_both_stores!(revoked_tokens_close_their_connections_and_stay_revoked);

async fn revoked_tokens_close_their_connections_and_stay_revoked(backend: Backend) {
    let config = with_secret(config_for(backend).await);
    let mut server = start(config.clone()).await;
    let old = now_secs() - 60;
    let (phone_token, desk_token) = (
        token("alice", old, "j-phone"),
        token("alice", old, "j-desk"),
    );
    let mut phone = connect(server.addr, "alice", "phone", &phone_token).await;
    let mut desk = connect(server.addr, "alice", "desk", &desk_token).await;
    let mut bob = connect(server.addr, "bob", "phone", &token("bob", old, "j-bob")).await;

    // One token by its jti: its connection closes with 4002, the others stay.
    let expires_at = now_secs() + 3600;
    let (status, body) = revoke(
        server.addr,
        KEY,
        "/api/v1/tokens/revoke",
        json!({"jti": "j-phone", "expires_at": expires_at}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"jti": "j-phone", "expires_at": expires_at}));
    assert_eq!(phone.closed().await, Some(4002));
    registered(&mut desk, "alice").await;
    assert_eq!(
        refusal(server.addr, "alice", &phone_token).await,
        (401, "token_revoked".into())
    );

    // A refresh with a revoked token is refused; the connection keeps its own.
    desk.send_text(
        &json!({"msg_type": msg_type::TOKEN_REFRESH, "receiver_id": "alice", "local_id": "r1", "content": phone_token})
            .to_string(),
    )
    .await;
    let reply = desk.recv().await;
    assert_eq!(
        (reply.local_id.as_str(), reply.content.as_str()),
        ("r1", "bad_token: token_revoked")
    );
    registered(&mut desk, "alice").await;

    // Every token of a user issued before now: desk closes, bob stays; a token issued since
    // works.
    let (status, body) = revoke(server.addr, KEY, "/api/v1/users/alice/revoke", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let before = body["before"].as_u64().unwrap();
    assert!(before >= old + 60, "{body}");
    assert_eq!(desk.closed().await, Some(4002));
    registered(&mut bob, "bob").await;
    assert_eq!(
        refusal(server.addr, "alice", &desk_token).await,
        (401, "token_revoked".into())
    );
    let fresh = token("alice", before, "j-fresh");
    let again = connect(server.addr, "alice", "desk", &fresh).await;

    // Bad requests and callers without the key.
    for (path, body, want) in [
        (
            "/api/v1/tokens/revoke",
            json!({"jti": ""}),
            "invalid_request",
        ),
        (
            "/api/v1/tokens/revoke",
            json!({"jti": "x"}),
            "invalid_request",
        ),
        (
            "/api/v1/users/alice/revoke",
            json!({"before": "soon"}),
            "invalid_request",
        ),
        ("/api/v1/users/g_x/revoke", json!({}), "invalid_id"),
    ] {
        let (status, got) = revoke(server.addr, KEY, path, body).await;
        assert_eq!((status, got["error"].as_str()), (400, Some(want)), "{path}");
    }
    let (status, got) = revoke(
        server.addr,
        "not-the-key",
        "/api/v1/users/bob/revoke",
        json!({}),
    )
    .await;
    assert_eq!(
        (status, got["error"].as_str()),
        (401, Some("service_key_invalid"))
    );
    registered(&mut bob, "bob").await;

    // After a restart on the same store, both revocations hold; the fresh token still works.
    again.close().await;
    server.shutdown();
    server.task.await.unwrap().unwrap();
    let server = start(config).await;
    assert_eq!(
        refusal(server.addr, "alice", &phone_token).await,
        (401, "token_revoked".into())
    );
    assert_eq!(
        refusal(server.addr, "alice", &desk_token).await,
        (401, "token_revoked".into())
    );
    connect(server.addr, "alice", "desk", &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_holds_on_every_node() {
    let pg = fresh_pg_database().await;
    let prefix = redis_prefix("revoke");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let config = with_secret(cluster_node_config(&pg, &prefix, &redis_url()));
        nodes.push(start(config).await);
    }
    for node in &nodes {
        channels_reach(node, 1.0).await;
    }
    let old = now_secs() - 60;
    let phone_token = token("carol", old, "c-phone");
    let mut phone = connect(nodes[0].addr, "carol", "phone", &phone_token).await;
    let mut desk = connect(
        nodes[1].addr,
        "carol",
        "desk",
        &token("carol", old, "c-desk"),
    )
    .await;

    let (status, _) = revoke(
        nodes[2].addr,
        KEY,
        "/api/v1/tokens/revoke",
        json!({"jti": "c-phone", "expires_at": now_secs() + 3600}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(phone.closed().await, Some(4002));
    registered(&mut desk, "carol").await;
    // Every node refuses it: the one that stored it, and those that were told (the message
    // reaches each node in its own time).
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while refusal(node.addr, "carol", &phone_token).await != (401, "token_revoked".into()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} still accepts it",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let (status, _) = revoke(nodes[0].addr, KEY, "/api/v1/users/carol/revoke", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(desk.closed().await, Some(4002));

    // A node started later loads the list from the store.
    let late = start(with_secret(cluster_node_config(&pg, &prefix, &redis_url()))).await;
    assert_eq!(
        refusal(late.addr, "carol", &token("carol", old, "c-other")).await,
        (401, "token_revoked".into())
    );
}
