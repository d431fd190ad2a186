//! The server API, for the app's backend, on both stores: authenticated by `service.key` only;
//! a message sent as a user is stored, numbered, delivered to the receiver and the sender's
//! devices and acked like one sent on a WebSocket (a resend gets the original's ack); a refused
//! one says why; the user routes answer on behalf of a user; a user's devices are listed and
//! disconnected (4006).

#[macro_use]
mod common;

use common::{Backend, config_for, groups::json_of, http_request_with, start};
use natter_protocol::msg_type;
use serde_json::json;

const KEY: &str = "service-test-key-of-at-least-32-bytes";

on_both_stores!(the_backend_sends_as_a_user_lists_and_disconnects_devices);

async fn the_backend_sends_as_a_user_lists_and_disconnects_devices(backend: Backend) {
    let mut config = config_for(backend).await;
    config.service.key = KEY.into();
    let server = start(config).await;
    let key = [("X-Api-Key", KEY)];
    let mut bob = server.connect("bob", "phone").await;
    let mut alice = server.connect("alice", "desk").await;

    // A user's token is not the key: refused.
    let msg = json!({"send_id": "alice", "receiver_id": "bob", "local_id": "w1",
                     "create_time": 1764590000000i64, "content": "from the backend"});
    let (status, body) = http_request_with(
        server.addr,
        "POST",
        "/api/v1/messages?user_id=alice",
        &[],
        Some(msg.clone()),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (401, Some("service_key_invalid"))
    );

    // Sent as alice: stored and numbered, acked, delivered to bob and to alice's device.
    let (status, body) = http_request_with(
        server.addr,
        "POST",
        "/api/v1/messages",
        &key,
        Some(msg.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ack = json_of(&body);
    assert_eq!(ack["msg_type"], msg_type::REC_RESP);
    assert_eq!(
        (ack["seq"].as_i64(), ack["conv_seq"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(ack["conv_id"], "d:alice:bob");
    let got = bob.recv().await;
    assert_eq!(
        (got.send_id.as_str(), got.content.as_str(), got.seq),
        ("alice", "from the backend", 1)
    );
    assert_eq!(alice.recv().await.content, "from the backend");
    // The same message again: the original's ack, nothing delivered twice.
    let (status, body) =
        http_request_with(server.addr, "POST", "/api/v1/messages", &key, Some(msg)).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["server_id"], ack["server_id"]);
    bob.assert_silent(std::time::Duration::from_millis(200))
        .await;

    // Refused messages say why.
    for (bad, why) in [
        (
            json!({"receiver_id": "bob", "content": "no sender"}),
            "invalid_request",
        ),
        (
            json!({"send_id": "alice", "receiver_id": "g_none", "msg_type": 1}),
            "message_refused",
        ),
        (
            json!({"send_id": "alice", "receiver_id": "bob", "msg_type": 2}),
            "message_refused",
        ),
    ] {
        let (status, body) =
            http_request_with(server.addr, "POST", "/api/v1/messages", &key, Some(bad)).await;
        assert_eq!(
            (status, json_of(&body)["error"].as_str()),
            (400, Some(why)),
            "{body}"
        );
    }

    // Not JSON at all: a bad request, as on every route.
    let (status, body) = common::http_request_text(
        server.addr,
        "POST",
        "/api/v1/messages",
        &key,
        r#"{"send_id": "alice", "#,
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // Groups (and every user route) on behalf of a user.
    let as_alice = [("X-Api-Key", KEY), ("X-As-User", "alice")];
    let group = json!({"name": "support", "members": ["bob"]});
    let (status, body) = http_request_with(
        server.addr,
        "POST",
        "/api/v1/groups",
        &as_alice,
        Some(group.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json_of(&body)["group"]["owner"], "alice");
    assert_eq!(bob.recv().await.msg_type, msg_type::GROUP_CREATED);
    let (status, body) =
        http_request_with(server.addr, "GET", "/api/v1/conversations", &as_alice, None).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["conversations"].as_array().unwrap().len(), 2);
    let nobody = [("X-Api-Key", KEY)];
    let (status, body) = http_request_with(
        server.addr,
        "POST",
        "/api/v1/groups",
        &nobody,
        Some(group.clone()),
    )
    .await;
    assert_eq!(
        (status, json_of(&body)["error"].as_str()),
        (400, Some("invalid_id"))
    );
    let wrong = [("X-Api-Key", "not-the-key"), ("X-As-User", "alice")];
    let (status, _) =
        http_request_with(server.addr, "POST", "/api/v1/groups", &wrong, Some(group)).await;
    assert_eq!(status, 401);
    while alice.recv().await.msg_type != msg_type::GROUP_CREATED {}

    // Devices, then disconnected.
    let _tablet = server.connect("bob", "tablet").await;
    // The new connection registers as its session starts, just after the handshake.
    let mut platforms: Vec<String> = Vec::new();
    for _ in 0..100 {
        let (status, body) =
            http_request_with(server.addr, "GET", "/api/v1/users/bob/devices", &key, None).await;
        assert_eq!(status, 200);
        platforms = serde_json::from_value(json_of(&body)["platforms"].clone()).unwrap();
        platforms.sort();
        if platforms.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(platforms, ["phone", "tablet"]);
    let (status, _) = http_request_with(
        server.addr,
        "POST",
        "/api/v1/users/bob/disconnect",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(bob.closed().await, Some(4006));
    alice
        .assert_silent(std::time::Duration::from_millis(100))
        .await;
}
