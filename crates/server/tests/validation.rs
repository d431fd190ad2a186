//! Input is checked in one place (natter_protocol::ids and the frame decoder) and a bad message
//! is refused alone: on both stores, a sender of unstorable or reserved values gets error
//! replies while a bystander's messages, committed in the same batches, are all stored.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Client, config_for, start};
use natter_protocol::{content_type, msg_type};
use serde_json::json;

on_both_stores!(
    bad_fields_are_refused_alone_and_bystanders_are_unaffected,
    a_message_the_store_refuses_fails_alone
);

/// Every reply of `c` up to and including the ack or error for `local_id`s, keyed by local_id.
async fn replies(c: &mut Client, n: usize) -> Vec<natter_protocol::Msg> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c.recv().await;
        if m.msg_type == msg_type::REC_RESP {
            out.push(m);
        }
    }
    out
}

async fn bad_fields_are_refused_alone_and_bystanders_are_unaffected(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut bad = server.connect("mallory", "p").await;
    let mut good = server.connect("alice", "p").await;
    let mut bob = server.connect("bob", "p").await;

    let long_id = "r".repeat(8 * 1024);
    let frames = [
        (
            json!({"receiver_id": "bob", "local_id": "nul", "content": "a\u{0}b"}),
            "invalid_msg",
        ),
        (
            json!({"receiver_id": long_id, "local_id": "long"}),
            "invalid_msg",
        ),
        (
            json!({"receiver_id": "bo\u{7}b", "local_id": "ctl"}),
            "invalid_msg",
        ),
        (
            json!({"receiver_id": "bob", "local_id": "l".repeat(200)}),
            "invalid_msg",
        ),
        (
            json!({"receiver_id": "bob", "local_id": "ct2", "content_type": 2}),
            "invalid_msg",
        ),
        (
            json!({"receiver_id": "bob", "local_id": "notice", "msg_type": 3}),
            "unsupported_msg_type",
        ),
        (
            json!({"receiver_id": "bob", "local_id": "ack", "msg_type": 24}),
            "unsupported_msg_type",
        ),
    ];
    // The bystander's messages and the bad ones, interleaved, so they share commit batches.
    for (i, (frame, _)) in frames.iter().enumerate() {
        bad.send_text(&frame.to_string()).await;
        for j in 0..5 {
            good.send_msg("bob", &format!("g{i}-{j}"), "fine").await;
        }
    }
    let errors = replies(&mut bad, frames.len()).await;
    for (reply, (frame, reason)) in errors.iter().zip(&frames) {
        assert_eq!(reply.content_type, content_type::ERROR, "{frame}");
        assert!(
            reply.content.starts_with(reason),
            "{frame}: {}",
            reply.content
        );
    }
    let acks = replies(&mut good, frames.len() * 5).await;
    let seqs: Vec<i64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(
        seqs,
        (1..=35).collect::<Vec<_>>(),
        "every bystander message stored"
    );
    for seq in 1..=35 {
        let m = bob.recv().await;
        assert_eq!((m.seq, m.send_id.as_str()), (seq, "alice"));
    }
    // Nothing of mallory's was stored: bob's inbox holds alice's messages only.
    let (_, body) = server.get("/api/v1/seq?user_id=mallory").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["send_seq"],
        0
    );
}

/// The HTTP API checks the ids it is given by the same rules.
#[tokio::test]
async fn the_http_api_refuses_invalid_ids() {
    let server = start(common::test_config()).await;
    let long = "u".repeat(200);
    for path in [
        format!("/api/v1/users/{long}/online?user_id=a"),
        "/api/v1/users/g_team/online?user_id=a".to_string(),
        "/api/v1/seq?user_id=g_team".to_string(),
        format!("/api/v1/seq?user_id={long}"),
        format!("/api/v1/groups/{long}?user_id=a"),
    ] {
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid_id"), "{path}: {body}");
    }
}

/// Scenario a) of the fair-share issue: member lists longer than a group may be, sent by two
/// callers at once with the default limits, are refused before any work on them (their first
/// id, invalid, is never looked at) and in little time, while the node keeps answering; a body
/// larger than the longest list can be is refused unread. A notice names a bounded number of
/// users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_sizes_are_checked_first_and_notices_stay_small() {
    let server = start(common::test_config()).await;
    let mut ids: Vec<String> = vec!["g_not_a_user".into()];
    ids.extend((0..150_000).map(|i| format!("u{i}")));
    let huge = json!({"name": "huge", "members": ids});
    let started = std::time::Instant::now();
    let create = |user: &'static str| {
        let (addr, body) = (server.addr, huge.clone());
        tokio::spawn(async move {
            let path = format!("/api/v1/groups?user_id={user}");
            common::http_request(addr, "POST", &path, Some(body)).await
        })
    };
    let (first, second) = (create("o1"), create("o2"));
    let health = std::time::Instant::now();
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let health = health.elapsed();
    for answer in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!(answer.0, 409, "{}", answer.1);
        assert!(answer.1.contains("group_full"), "{}", answer.1);
    }
    // Debug build, two cores shared with the test client: generous bounds, far below the
    // seconds a quadratic check took.
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals took {:?}",
        started.elapsed()
    );

    let mut config = common::test_config();
    config.groups.max_members = 1000;
    let server = start(config).await;
    // The head alone, declaring the huge body: the answer comes before any of it is sent.
    let length = huge.to_string().len();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/groups?user_id=o HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut tcp, head.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer),
    )
    .await
    .expect("answered without the body")
    .unwrap();
    let body = String::from_utf8_lossy(&answer);
    assert!(body.starts_with("HTTP/1.1 413"), "{body}");
    assert!(body.contains("body_too_large"), "{body}");

    // 999 members (and the owner): the "created" notice names the first 100 and counts all.
    let members: Vec<String> = (0..999).map(|i| format!("m{i}")).collect();
    let mut owner = server.connect("o", "p").await;
    let (status, body) = server
        .request(
            "POST",
            "/api/v1/groups?user_id=o",
            Some(json!({"name": "big", "members": members})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let notice = loop {
        let m = owner.recv().await;
        if m.msg_type == msg_type::GROUP_CREATED {
            break m;
        }
    };
    let content: serde_json::Value = serde_json::from_str(&notice.content).unwrap();
    assert_eq!(content["count"], 1000);
    assert_eq!(content["users"].as_array().unwrap().len(), 100);
    assert!(
        notice.content.len() < 4096,
        "{} bytes",
        notice.content.len()
    );
}

/// Scenario d) of the fair-share issue, for what the decoder cannot see: a message the store
/// itself refuses (here a constraint the test adds, matching the content "poison") fails alone.
/// Its batch is committed in halves down to it, so its sender gets `store_unavailable` for it
/// and every other message, the sender's and a bystander's sharing its batches, is stored, in
/// order, with dense seqs.
async fn a_message_the_store_refuses_fails_alone(backend: Backend) {
    let config = config_for(backend).await;
    let server = start(config.clone()).await;
    match backend {
        Backend::Sqlite => {
            let log = format!("{}/natter-log.db", config.storage.path);
            common::sql(
                backend,
                &log,
                "CREATE TRIGGER poison BEFORE INSERT ON log_batches \
                 WHEN instr(NEW.body, CAST('poison' AS BLOB)) > 0 \
                 BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
            )
            .await;
        }
        Backend::Postgres => {
            common::sql(
                backend,
                &config.storage.url,
                "ALTER TABLE messages ADD CONSTRAINT poison CHECK (content NOT LIKE '%poison%')",
            )
            .await;
        }
    }
    let mut mallory = server.connect("mallory", "p").await;
    let mut alice = server.connect("alice", "p").await;
    let mut bob = server.connect("bob", "p").await;
    for i in 0..20 {
        let content = if i % 5 == 2 { "poison" } else { "fine" };
        mallory.send_msg("bob", &format!("m{i}"), content).await;
        for j in 0..5 {
            alice.send_msg("bob", &format!("a{i}-{j}"), "fine").await;
        }
    }
    for reply in replies(&mut mallory, 20).await {
        let i: usize = reply.local_id[1..].parse().unwrap();
        if i % 5 == 2 {
            assert_eq!(
                reply.content_type,
                content_type::ERROR,
                "{}",
                reply.local_id
            );
            assert!(
                reply.content.starts_with("store_unavailable"),
                "{}",
                reply.content
            );
        } else {
            assert_eq!(
                reply.content_type,
                content_type::DEFAULT,
                "{}",
                reply.content
            );
        }
    }
    for reply in replies(&mut alice, 100).await {
        assert_eq!(
            reply.content_type,
            content_type::DEFAULT,
            "{}",
            reply.content
        );
    }
    // Bob gets the 116 others, with dense seqs, each sender's in the order sent.
    let mut last = std::collections::HashMap::new();
    for seq in 1..=116 {
        let m = bob.recv().await;
        assert_eq!(m.seq, seq);
        assert_eq!(m.content, "fine");
        let order: (usize, usize) = match m.local_id.split_once('-') {
            Some((i, j)) => (i[1..].parse().unwrap(), j.parse().unwrap()),
            None => (m.local_id[1..].parse().unwrap(), 0),
        };
        if let Some(before) = last.insert(m.send_id.clone(), order) {
            assert!(
                before < order,
                "{before:?} then {order:?} from {}",
                m.send_id
            );
        }
    }
    bob.assert_silent(Duration::from_millis(200)).await;
}
