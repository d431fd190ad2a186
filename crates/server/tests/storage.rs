//! Durable messages, end to end, against both stores: every case runs on SQLite and on a real
//! PostgreSQL (a fresh database per test).

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Client, TestServer, config_for, start};
use natter_protocol::{Msg, content_type, msg_type};

on_both_stores!(
    acks_carry_seq_and_offline_receiver_syncs_everything_in_order,
    seq_increases_by_one_per_inbox_message_across_senders,
    resend_with_same_local_id_is_not_stored_or_delivered_twice,
    replay_then_live_has_no_gap_and_no_duplicate,
    senders_other_devices_sync_what_was_sent,
    read_receipts_are_stored_and_reach_both_sides,
    http_api_serves_history_and_cursors,
    retention_deletes_old_messages_but_keeps_seq_counting,
    commit_failure_is_an_error_reply_and_the_node_recovers,
);

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn send_acked(c: &mut Client, to: &str, local_id: &str, content: &str) -> Msg {
    c.send_msg(to, local_id, content).await;
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::REC_RESP && m.local_id == local_id {
            assert_eq!(m.content_type, content_type::DEFAULT, "{}", m.content);
            return m;
        }
    }
}

async fn connect_since(server: &TestServer, user: &str, platform: &str, query: &str) -> Client {
    let url = format!("{}?{query}", server.url(user, platform));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    Client { ws }
}

async fn acks_carry_seq_and_offline_receiver_syncs_everything_in_order(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "phone").await;
    let mut acks = Vec::new();
    for i in 0..30 {
        acks.push(send_acked(&mut alice, "bob", &format!("l{i}"), &format!("m{i}")).await);
    }
    let seqs: Vec<i64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>(), "bob's inbox seq");
    let send_seqs: Vec<i64> = acks.iter().map(|a| a.send_seq).collect();
    assert_eq!(send_seqs, (1..=30).collect::<Vec<_>>(), "alice's send_seq");

    // Bob was offline; he connects asking for everything after seq 0.
    let mut bob = connect_since(&server, "bob", "phone", "since_seq=0").await;
    for i in 0..30 {
        let m = bob.recv().await;
        assert_eq!(
            (m.seq, m.content.as_str()),
            (i + 1, format!("m{i}").as_str())
        );
        assert_eq!(m.server_id, acks[i as usize].server_id);
    }
    bob.assert_silent(Duration::from_millis(200)).await;

    // From a cursor in the middle: only what came after.
    let mut bob2 = connect_since(&server, "bob", "tablet", "since_seq=25").await;
    for i in 26..=30 {
        assert_eq!(bob2.recv().await.seq, i);
    }
    bob2.assert_silent(Duration::from_millis(200)).await;
}

async fn seq_increases_by_one_per_inbox_message_across_senders(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut target = server.connect("target", "p").await;
    let mut senders = Vec::new();
    for s in 0..5 {
        senders.push(server.connect(&format!("s{s}"), "p").await);
    }
    let mut tasks = Vec::new();
    for (s, mut c) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                c.send_msg("target", &format!("{s}-{i}"), "x").await;
            }
            let mut acks = 0;
            while acks < 40 {
                if c.recv().await.msg_type == msg_type::REC_RESP {
                    acks += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Delivered live in seq order, no duplicate, no gap.
    for expected in 1..=200 {
        assert_eq!(target.recv().await.seq, expected);
    }
}

async fn resend_with_same_local_id_is_not_stored_or_delivered_twice(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut a = server.connect("a", "p").await;
    let mut b = server.connect("b", "p").await;
    let first = send_acked(&mut a, "b", "same", "once").await;
    assert_eq!(b.recv().await.content, "once");
    // The client did not see the ack and sends again: same ids back, nothing delivered.
    let again = send_acked(&mut a, "b", "same", "once").await;
    assert_eq!(
        (again.server_id, again.seq, again.send_seq),
        (first.server_id, first.seq, first.send_seq)
    );
    // Twice in one burst as well.
    a.send_msg("b", "burst", "one").await;
    a.send_msg("b", "burst", "one").await;
    let (x, y) = (a.recv().await, a.recv().await);
    assert_eq!(x.server_id, y.server_id);
    assert_eq!(b.recv().await.seq, 2);
    b.assert_silent(Duration::from_millis(200)).await;
    let (status, body) = server.get("/api/v1/messages?user_id=b&after_seq=0").await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
}

async fn replay_then_live_has_no_gap_and_no_duplicate(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut a = server.connect("a", "p").await;
    for i in 0..20 {
        send_acked(&mut a, "r", &format!("h{i}"), "history").await;
    }
    // Keep sending while r connects with since_seq=0: messages land before, during and after
    // the replay.
    let sender = tokio::spawn(async move {
        for i in 0..200 {
            a.send_msg("r", &format!("live{i}"), "live").await;
        }
        let mut acks = 0;
        while acks < 200 {
            if a.recv().await.msg_type == msg_type::REC_RESP {
                acks += 1;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut r = connect_since(&server, "r", "p", "since_seq=0").await;
    sender.await.unwrap();
    for expected in 1..=220 {
        assert_eq!(r.recv().await.seq, expected);
    }
    r.assert_silent(Duration::from_millis(200)).await;
}

async fn senders_other_devices_sync_what_was_sent(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut phone = server.connect("a", "phone").await;
    for i in 0..5 {
        send_acked(
            &mut phone,
            &format!("friend{i}"),
            &format!("s{i}"),
            &format!("to {i}"),
        )
        .await;
    }
    let mut laptop = connect_since(&server, "a", "laptop", "since_send_seq=2").await;
    for expected in 3..=5 {
        let m = laptop.recv().await;
        assert_eq!((m.send_seq, m.send_id.as_str()), (expected, "a"));
    }
    laptop.assert_silent(Duration::from_millis(200)).await;
    let (_, body) = server.get("/api/v1/seq?user_id=a").await;
    assert_eq!(json(&body), serde_json::json!({"seq": 0, "send_seq": 5}));
}

async fn read_receipts_are_stored_and_reach_both_sides(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut a = server.connect("a", "p").await;
    let mut b_phone = server.connect("b", "phone").await;
    let mut b_desk = server.connect("b", "desk").await;
    let m1 = send_acked(&mut a, "b", "1", "first").await;
    let m2 = send_acked(&mut a, "b", "2", "second").await;
    let _m3 = send_acked(&mut a, "b", "3", "third").await;
    for _ in 0..3 {
        b_phone.recv().await;
        b_desk.recv().await;
    }
    // b read up to the second message.
    let receipt = format!(
        r#"{{"msg_type":23,"receiver_id":"a","local_id":"r1","content":"{}"}}"#,
        m2.server_id
    );
    b_phone.send_text(&receipt).await;
    assert_eq!(b_phone.recv().await.msg_type, msg_type::REC_RESP);
    let at_a = a.recv().await;
    assert_eq!(
        (at_a.msg_type, at_a.content.as_str()),
        (msg_type::READ, m2.server_id.as_str())
    );
    assert_eq!(b_desk.recv().await.msg_type, msg_type::READ);

    let (_, body) = server.get("/api/v1/messages?user_id=b&after_seq=0").await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let read: Vec<(String, bool)> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["content"].as_str().unwrap().to_string(),
                m["is_read"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        read,
        vec![
            ("first".into(), true),
            ("second".into(), true),
            ("third".into(), false)
        ]
    );
    assert!(m1.server_id < m2.server_id);
    // A receipt with no content is refused.
    b_phone
        .send_text(r#"{"msg_type":23,"receiver_id":"a","local_id":"bad"}"#)
        .await;
    let reply = b_phone.recv().await;
    assert_eq!(reply.content_type, content_type::ERROR);
}

async fn http_api_serves_history_and_cursors(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut a = server.connect("a", "p").await;
    for i in 0..7 {
        send_acked(&mut a, "b", &format!("{i}"), &format!("c{i}")).await;
    }
    let (status, body) = server
        .get("/api/v1/messages?user_id=b&after_seq=2&limit=3")
        .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<i64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(body["has_more"], true);
    let (_, body) = server
        .get("/api/v1/messages?user_id=a&after_send_seq=5")
        .await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);
    let (_, body) = server.get("/api/v1/seq?user_id=b").await;
    assert_eq!(json(&body), serde_json::json!({"seq": 7, "send_seq": 0}));
    // Errors are JSON with a status.
    let (status, body) = server.get("/api/v1/messages?user_id=b&limit=0").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/api/v1/seq").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token_missing"));
}

async fn retention_deletes_old_messages_but_keeps_seq_counting(backend: Backend) {
    let mut config = config_for(backend).await;
    config.storage.retention = Duration::from_secs(2);
    let server = start(config).await;
    let mut a = server.connect("a", "p").await;
    send_acked(&mut a, "b", "old1", "old").await;
    send_acked(&mut a, "b", "old2", "old").await;
    let inbox = || async {
        let (_, body) = server.get("/api/v1/messages?user_id=b&after_seq=0").await;
        json(&body)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_i64().unwrap())
            .collect::<Vec<i64>>()
    };
    // Retention passes run in the background: wait until they have taken the old messages,
    // however long this machine takes (the test's own deadline is the bound).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !inbox().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "old messages kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = send_acked(&mut a, "b", "new", "new").await;
    assert_eq!(
        fresh.seq, 3,
        "seq keeps counting after old messages are deleted"
    );
    // The client asked for seq > 0 and got 3 first: it can tell 1..2 are gone.
    assert_eq!(inbox().await, vec![3]);
}

async fn commit_failure_is_an_error_reply_and_the_node_recovers(backend: Backend) {
    let config = config_for(backend).await;
    // SQLite commits accepted messages to the log file first (store/sqlite/append.rs).
    let (admin, table) = match backend {
        Backend::Sqlite => (
            format!("{}/natter-log.db", config.storage.path),
            "log_batches",
        ),
        Backend::Postgres => (config.storage.url.clone(), "messages"),
    };
    let break_it = &format!("ALTER TABLE {table} RENAME TO away");
    let mend_it = &format!("ALTER TABLE away RENAME TO {table}");
    let server = start(config).await;
    let mut a = server.connect("a", "p").await;
    let mut b = server.connect("b", "p").await;
    send_acked(&mut a, "b", "before", "ok").await;
    assert_eq!(b.recv().await.content, "ok");

    common::sql(backend, &admin, break_it).await;
    a.send_msg("b", "during", "lost?").await;
    let reply = a.recv().await;
    assert_eq!(reply.content_type, content_type::ERROR);
    assert!(
        reply.content.starts_with("store_unavailable"),
        "{}",
        reply.content
    );
    assert_eq!(reply.local_id, "during");
    b.assert_silent(Duration::from_millis(200)).await;

    common::sql(backend, &admin, mend_it).await;
    let ack = send_acked(&mut a, "b", "during", "lost?").await;
    assert_eq!(ack.seq, 2, "the refused message took no seq");
    assert_eq!(b.recv().await.content, "lost?");

    // Operators see it in /metrics: two batches committed, one failed, every commit timed.
    for (series, value) in [
        ("natter_store_commits_total", 2.0),
        ("natter_store_messages_committed_total", 2.0),
        ("natter_store_commit_failures_total", 1.0),
        ("natter_store_commit_seconds_count", 3.0),
    ] {
        assert_eq!(server.metric(series).await, value, "{series}");
    }
}

/// SQLite's compactor shows in /metrics: every move timed, and the messages still waiting in
/// the log (none once the move after the last append has run).
#[tokio::test]
async fn sqlite_moves_are_timed_in_metrics() {
    let server = start(config_for(Backend::Sqlite).await).await;
    let mut a = server.connect("a", "p").await;
    for i in 0..5 {
        send_acked(&mut a, "b", &format!("m{i}"), "hello").await;
    }
    // The compactor moves the log every 50 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let moves = server.metric("natter_store_move_seconds_count").await;
        let waiting = server.metric("natter_store_log_messages").await;
        if moves >= 1.0 && waiting == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "moves {moves}, messages waiting {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.metric("natter_store_move_seconds_sum").await > 0.0);
    let (_, body) = server.get("/metrics").await;
    assert!(
        body.contains("# TYPE natter_store_log_messages gauge"),
        "{body}"
    );
    assert!(body.contains("natter_store_move_seconds_bucket{le=\"+Inf\"}"));
}
