//! Ephemeral events (`msg_type` 100 to 199: typing, "recording", call signalling), on both
//! stores: relayed to the online devices of the receiver or the group's members, never stored,
//! numbered, acknowledged or replayed; a non-member cannot send them into a group.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, config_for, groups::*, start};
use natter_protocol::{content_type, msg_type};
use serde_json::json;

on_both_stores!(ephemeral_events_reach_online_devices_and_nothing_else);

async fn ephemeral_events_reach_online_devices_and_nothing_else(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut alice_desk = server.connect("alice", "desk").await;
    let mut bob = server.connect("bob", "phone").await;

    // To a user: bob's device gets it, with seq 0; the sender gets no ack, her other device
    // nothing.
    let typing =
        json!({"receiver_id": "bob", "local_id": "t1", "msg_type": 100, "content": "typing"});
    alice.send_text(&typing.to_string()).await;
    let got = bob.recv().await;
    assert_eq!(
        (got.msg_type, got.seq, got.send_id.as_str()),
        (100, 0, "alice")
    );
    alice.assert_silent(Duration::from_millis(200)).await;
    alice_desk.assert_silent(Duration::from_millis(50)).await;

    // Not stored: nothing to sync, no number taken.
    let (_, seq) = server.get("/api/v1/seq?user_id=bob").await;
    assert_eq!(json_of(&seq), json!({"seq": 0, "send_seq": 0}));
    let (_, seq) = server.get("/api/v1/seq?user_id=alice").await;
    assert_eq!(json_of(&seq), json!({"seq": 0, "send_seq": 0}));
    let url = format!(
        "{}?since_seq=0&since_send_seq=0",
        server.url("bob", "tablet")
    );
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut tablet = common::Client { ws };
    tablet.assert_silent(Duration::from_millis(200)).await;

    // To a group: the other members' devices get it; not the sending connection; no number.
    let g = create_group(&server, "alice", &["bob"]).await;
    while bob.recv().await.msg_type != msg_type::GROUP_CREATED {}
    while alice.recv().await.msg_type != msg_type::GROUP_CREATED {}
    let event = json!({"receiver_id": g, "local_id": "t2", "msg_type": 150, "content": "rec"});
    alice.send_text(&event.to_string()).await;
    let got = bob.recv().await;
    assert_eq!(
        (got.msg_type, got.seq, got.receiver_id.as_str()),
        (150, 0, g.as_str())
    );
    alice.assert_silent(Duration::from_millis(200)).await;
    let (_, page) = api(
        &server,
        "GET",
        &format!("/api/v1/groups/{g}/messages"),
        "bob",
        None,
    )
    .await;
    let kinds: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg_type"].as_i64().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [i64::from(msg_type::GROUP_CREATED)],
        "only the notice is stored"
    );

    // A stranger cannot send one into the group.
    let mut carol = server.connect("carol", "p").await;
    let event = json!({"receiver_id": g, "local_id": "t3", "msg_type": 100});
    carol.send_text(&event.to_string()).await;
    let reply = carol.recv().await;
    assert_eq!(reply.content_type, content_type::ERROR);
    assert!(
        reply.content.starts_with("not_a_member"),
        "{}",
        reply.content
    );
    bob.assert_silent(Duration::from_millis(200)).await;
}
