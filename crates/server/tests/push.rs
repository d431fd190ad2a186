//! The offline push webhook, on both stores, against a receiver of the test's own: a stored
//! message for a user with no device connected is POSTed, signed, with a preview; not for a user
//! who is connected or muted the conversation; a batch the receiver refuses is sent again; a
//! group message notifies each offline member.

#[macro_use]
mod common;

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{Backend, config_for, groups::*, start};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const SECRET: &str = "push-test-secret-of-at-least-32-bytes";

/// A webhook receiver: records each request's headers and body, answers the next status of
/// `answers` (then 200).
#[derive(Clone)]
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/push", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (record, next) = (seen.clone(), answers.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break (String::new(), String::new());
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(str::to_owned)
                            })
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                };
                let status = next.lock().unwrap().pop_front().unwrap_or(200);
                record.lock().unwrap().push((head, body));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        Receiver { url, seen, answers }
    }

    /// The next request is answered with `status`.
    fn answer_next(&self, status: u16) {
        self.answers.lock().unwrap().push_back(status);
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Waits for request number `n` (from 1) and returns its notifications, checking its
    /// signature.
    async fn request(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            if let Some((head, body)) = self.seen.lock().unwrap().get(n - 1).cloned() {
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                        .unwrap_or_default()
                };
                let timestamp: u64 = header("X-Natter-Timestamp").parse().unwrap();
                assert_eq!(
                    header("X-Natter-Signature"),
                    natter::webhook::signature(SECRET, timestamp, &body)
                );
                let body: Value = serde_json::from_str(&body).unwrap();
                return body["notifications"].as_array().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no request {n}");
    }
}

on_both_stores!(offline_receivers_are_pushed_once_signed_unless_online_or_muted);

async fn offline_receivers_are_pushed_once_signed_unless_online_or_muted(backend: Backend) {
    let hook = Receiver::start().await;
    let mut config = config_for(backend).await;
    config.webhooks.push.url = hook.url.clone();
    config.webhooks.push.secret = SECRET.into();
    config.webhooks.push.preview_bytes = 5;
    let server = start(config).await;
    let mut alice = server.connect("alice", "phone").await;

    alice.send_msg("bob", "1", "hello there").await;
    next_ack(&mut alice, "1").await;
    let sent = hook.request(1).await;
    assert_eq!(sent.len(), 1);
    let n = &sent[0];
    assert_eq!(
        (n["receiver"].as_str(), n["sender"].as_str()),
        (Some("bob"), Some("alice"))
    );
    assert_eq!(
        (n["conv_id"].as_str(), n["conv_seq"].as_i64()),
        (Some("d:alice:bob"), Some(1))
    );
    assert_eq!(n["preview"], "hello");

    // Bob is connected: nothing to push.
    let mut bob = server.connect("bob", "phone").await;
    // Registered once it answers (its session starts just after the handshake).
    bob.send_msg("bob", "b1", "a note to self").await;
    next_ack(&mut bob, "b1").await;
    alice.send_msg("bob", "2", "you are here").await;
    next_ack(&mut alice, "2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.count(), 1);
    bob.close().await;

    // Bob muted the conversation: nothing either.
    let (status, _) = api(
        &server,
        "PATCH",
        "/api/v1/conversations/d:alice:bob",
        "bob",
        Some(json!({"muted": true})),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice.send_msg("bob", "3", "muted").await;
    next_ack(&mut alice, "3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.count(), 1);

    // A group message (and the group's notices): each offline member that did not mute the
    // group (bob muted only the one-to-one conversation).
    let g = create_group(&server, "alice", &["bob", "carol"]).await;
    alice.send_text(&group_msg(&g, "g1", "to the team")).await;
    next_ack(&mut alice, "g1").await;
    let mut receivers: Vec<String> = Vec::new();
    let mut n = 2;
    while receivers.len() < 2 {
        for note in hook.request(n).await {
            if note["msg_type"] == 1 {
                receivers.push(note["receiver"].as_str().unwrap().to_owned());
            }
        }
        n += 1;
    }
    receivers.sort();
    assert_eq!(receivers, ["bob", "carol"]);

    // The receiver refuses a POST (500): the same batch comes again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    n = hook.count() + 1;
    hook.answer_next(500);
    alice.send_msg("dave", "4", "retried").await;
    next_ack(&mut alice, "4").await;
    let first = loop {
        let batch = hook.request(n).await;
        n += 1;
        if batch.iter().any(|b| b["receiver"] == "dave") {
            break batch;
        }
    };
    let again = hook.request(n).await;
    assert_eq!(first, again);
    assert!(server.metric("natter_push_sent_total").await >= 4.0);
}

/// Three nodes, one receiver: the node that stored a message pushes it, once, and only for a
/// user connected to no node (bob is connected to another node than the sender's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_node_pushes_for_users_connected_nowhere() {
    let receiver = Receiver::start().await;
    let pg = common::fresh_pg_database().await;
    let prefix = common::redis_prefix("push");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let mut config = common::cluster_node_config(&pg, &prefix, &common::redis_url());
        config.webhooks.push.url = receiver.url.clone();
        config.webhooks.push.secret = SECRET.into();
        nodes.push(start(config).await);
    }
    for node in &nodes {
        common::cluster::channels_reach(node, 1.0).await;
    }
    let _bob = common::cluster::connect(&nodes[1], "bob", "phone").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = nodes[0].get("/api/v1/users/bob/online?user_id=x").await;
        if json_of(&body)["online"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob never online");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut alice = common::cluster::connect(&nodes[0], "alice", "desk").await;
    for (id, to) in [("1", "bob"), ("2", "carol")] {
        alice.send_msg(to, id, &format!("to {to}")).await;
        common::cluster::ack(&mut alice, id).await;
    }
    let first = receiver.request(1).await;
    // Time for a wrong second push (from another node, or for bob) to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pushed: Vec<Value> = first;
    for n in 2..=receiver.count() {
        pushed.extend(receiver.request(n).await);
    }
    let who: Vec<(&str, &str)> = pushed
        .iter()
        .map(|n| {
            (
                n["receiver"].as_str().unwrap(),
                n["preview"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(who, [("carol", "to carol")]);
}
