//! Helpers of the group tests: the group API as a user, group messages, reading past notices.

use natter_protocol::msg_type;
use serde_json::{Value, json};

use super::{Client, TestServer};

pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

pub async fn api(
    server: &TestServer,
    method: &str,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, text) = server
        .request(method, &format!("{path}{sep}user_id={user}"), body)
        .await;
    let value = if text.is_empty() {
        Value::Null
    } else {
        json_of(&text)
    };
    (status, value)
}

pub async fn create_group(server: &TestServer, owner: &str, members: &[&str]) -> String {
    let (status, body) = api(
        server,
        "POST",
        "/api/v1/groups",
        owner,
        Some(json!({"name": "team", "members": members})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["group"]["group_id"].as_str().unwrap().to_string()
}

/// Reads frames until a group message (msg_type 1) arrives; skips notifications.
pub async fn next_group_msg(c: &mut Client) -> natter_protocol::Msg {
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::GROUP {
            return m;
        }
    }
}

/// Reads frames until the ack for `local_id`.
pub async fn next_ack(c: &mut Client, local_id: &str) -> natter_protocol::Msg {
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::REC_RESP && m.local_id == local_id {
            return m;
        }
    }
}

pub fn group_msg(group: &str, local_id: &str, content: &str) -> String {
    json!({"msg_type": 1, "receiver_id": group, "local_id": local_id, "content": content})
        .to_string()
}
