//! The before-send hook against a backend of the test's own: it allows, refuses (the sender gets
//! `refused_by_backend` and the reason; nothing is stored or delivered) or rewrites a message
//! (stored and delivered rewritten); signed; a hook that does not answer gets `on_failure`.

mod common;

use std::time::Duration;

use common::{groups::next_ack, start, test_config};
use natter::config::HookFailure;
use natter_protocol::content_type;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const SECRET: &str = "before-send-secret-of-at-least-32-bytes";

/// A backend that refuses "spam", replaces "darn" and allows the rest, checking signatures.
async fn backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/before-send",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let (head, body) = loop {
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if body.len() >= length || n == 0 {
                            break (head.to_owned(), body.to_owned());
                        }
                    }
                };
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                        .unwrap_or_default()
                };
                let timestamp: u64 = header("X-Natter-Timestamp").parse().unwrap();
                let signed = header("X-Natter-Signature")
                    == natter::webhook::signature(SECRET, timestamp, &body);
                let msg: Value = serde_json::from_str(&body).unwrap();
                let content = msg["message"]["content"].as_str().unwrap_or_default();
                // The deadline to answer by: ahead, within the configured timeout.
                let deadline = msg["deadline"].as_i64().unwrap_or(0) - natter::clock::now_millis();
                let answer = if !signed {
                    r#"{"action":"refuse","reason":"bad signature"}"#.to_owned()
                } else if !(1..=10_000).contains(&deadline) {
                    r#"{"action":"refuse","reason":"bad deadline"}"#.to_owned()
                } else if content.contains("spam") {
                    r#"{"action":"refuse","reason":"looks like spam"}"#.to_owned()
                } else if content.contains("darn") {
                    serde_json::json!({"action": "replace", "content": content.replace("darn", "d**n")}).to_string()
                } else {
                    r#"{"action":"allow"}"#.to_owned()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_allows_refuses_and_rewrites_before_anything_is_stored() {
    let mut config = test_config();
    config.webhooks.before_send.url = backend().await;
    config.webhooks.before_send.secret = SECRET.into();
    let server = start(config).await;
    let mut alice = server.connect("alice", "p").await;
    let mut bob = server.connect("bob", "p").await;

    alice.send_msg("bob", "1", "hello").await;
    assert_eq!(next_ack(&mut alice, "1").await.seq, 1);
    assert_eq!(bob.recv().await.content, "hello");

    alice.send_msg("bob", "2", "buy spam now").await;
    let refused = next_ack(&mut alice, "2").await;
    assert_eq!(refused.content_type, content_type::ERROR);
    assert_eq!(refused.content, "refused_by_backend: looks like spam");

    alice.send_msg("bob", "3", "darn it").await;
    let ack = next_ack(&mut alice, "3").await;
    assert_eq!((ack.seq, ack.content.as_str()), (2, "d**n it"));
    assert_eq!(bob.recv().await.content, "d**n it");
    bob.assert_silent(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_does_not_answer_gets_the_failure_policy() {
    for (policy, stored) in [(HookFailure::Allow, true), (HookFailure::Refuse, false)] {
        let mut config = test_config();
        let hook = &mut config.webhooks.before_send;
        hook.url = "http://127.0.0.1:9/hook".into();
        hook.secret = SECRET.into();
        hook.timeout = Duration::from_millis(200);
        hook.on_failure = policy;
        let server = start(config).await;
        let mut alice = server.connect("alice", "p").await;
        alice.send_msg("bob", "1", "anyone there?").await;
        let reply = next_ack(&mut alice, "1").await;
        assert_eq!(
            reply.content_type != content_type::ERROR,
            stored,
            "{policy:?}: {}",
            reply.content
        );
    }
}
