//! History is read in pages bounded in bytes as well as in count, on both stores: an HTTP page
//! holds about 1 MiB whatever `limit` asks, and a replay fetches its history a bounded page at
//! a time; either way every message arrives, in order, once.

#[macro_use]
mod common;

use common::{Backend, Client, config_for, start};
use natter_protocol::msg_type;

on_both_stores!(large_histories_come_in_bounded_pages);

async fn large_histories_come_in_bounded_pages(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "p").await;
    let big = "h".repeat(60 * 1024);
    for i in 0..40 {
        alice
            .send_msg("bob", &format!("l{i}"), &format!("{i:02}{big}"))
            .await;
        while alice.recv().await.msg_type != msg_type::REC_RESP {}
    }

    // Over HTTP: pages of about 1 MiB, has_more until the end, no gap.
    let mut after = 0;
    let mut pages = 0;
    loop {
        let (status, body) = server
            .get(&format!(
                "/api/v1/messages?user_id=bob&after_seq={after}&limit=1000"
            ))
            .await;
        assert_eq!(status, 200);
        assert!(body.len() < 1200 * 1024, "a page of {} bytes", body.len());
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let messages = page["messages"].as_array().unwrap();
        for m in messages {
            assert_eq!(m["seq"].as_i64().unwrap(), after + 1);
            after += 1;
        }
        pages += 1;
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        assert!(pages < 20, "no end");
    }
    assert_eq!(after, 40);
    assert!(pages >= 3, "{pages} pages for 2.4 MB");

    // By replay: everything, in order, once.
    let url = format!("{}?since_seq=0", server.url("bob", "p"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut bob = Client { ws };
    for i in 0..40 {
        let m = bob.recv().await;
        assert_eq!(
            (m.seq, &m.content[..2]),
            (i + 1, format!("{i:02}").as_str())
        );
    }
    bob.assert_silent(std::time::Duration::from_millis(200))
        .await;
}

/// Scenario c) of the fair-share issue: readers of one user's history that never read their
/// responses. At most `limits.reads_per_user` (4) pages are held for them (the user's
/// other reads get 429 meanwhile), and a response nobody reads is dropped after
/// `limits.http.write_timeout` without progress, after which the user reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_history_readers_hold_few_pages_and_are_cut_off() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
    let mut config = common::test_config();
    config.limits.http.write_timeout = WRITE_TIMEOUT;
    let server = start(config).await;
    let mut alice = server.connect("alice", "p").await;
    let big = "h".repeat(60 * 1024);
    for i in 0..40 {
        alice.send_msg("bob", &format!("l{i}"), &big).await;
        while alice.recv().await.msg_type != msg_type::REC_RESP {}
    }

    let started = std::time::Instant::now();
    let mut readers = Vec::new();
    let request = "GET /api/v1/messages?user_id=bob&limit=1000 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for _ in 0..4 {
        // Eight pages of 1 MiB asked at once, never read: more than the kernel's buffers take,
        // so the server's writes to this connection soon wait, each holding one of bob's reads.
        let mut tcp = tiny_window(server.addr).await;
        tcp.write_all(request.repeat(8).as_bytes()).await.unwrap();
        readers.push(tcp);
    }
    // Bob is at his limit while those pages wait...
    tokio::time::sleep(Duration::from_millis(500)).await;
    while started.elapsed() < WRITE_TIMEOUT - Duration::from_millis(500) {
        let (status, body) = server.get("/api/v1/messages?user_id=bob&limit=1").await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("rate_limited"), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and reads again once they have been dropped, 3 s after they stopped progressing.
    let again = loop {
        let (status, body) = server.get("/api/v1/messages?user_id=bob&limit=1").await;
        match status {
            429 => {}
            200 => break started.elapsed(),
            other => panic!("{other}: {body}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(again >= WRITE_TIMEOUT, "read again after {again:?}");
    // The stuck connections were closed by the server, their answers cut short: once they all
    // stalled (within the first half second) and a write timeout passed, reading them reaches
    // their end, short of the eight pages asked for.
    tokio::time::sleep(
        (started + WRITE_TIMEOUT + Duration::from_secs(1))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    for mut tcp in readers {
        let mut got = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
        assert!(end.is_ok(), "a stuck reader's connection is still open");
        assert!(
            got.len() < 7 * 1024 * 1024,
            "{} bytes: about every page arrived",
            got.len()
        );
    }
}

/// Scenario b) of the fair-share issue: devices of one user that ask for a large history
/// (`since_seq=0`) and never read it. Their replays take turns at the store
/// (`limits.reads_per_user`), hold a page each, and are dropped once a page waits
/// `heartbeat.timeout`; meanwhile another pair chats as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_nobody_reads_are_dropped_and_others_chat_meanwhile() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = common::test_config();
    config.heartbeat.interval = Duration::from_secs(1);
    config.heartbeat.timeout = Duration::from_secs(2);
    // The inbox is filled as fast as the store takes it.
    config.limits.rate.bytes_per_second = 0;
    let server = start(config).await;
    let mut alice = server.connect("alice", "p").await;
    let big = "h".repeat(60 * 1024);
    for i in 0..120 {
        alice.send_msg("bob", &format!("l{i}"), &big).await;
        while alice.recv().await.msg_type != msg_type::REC_RESP {}
    }
    let mut carol = server.connect("carol", "p").await;
    let mut dave = server.connect("dave", "p").await;
    let mut before = Vec::new();
    for i in 0..20 {
        before.push(round_trip(&mut carol, &mut dave, format!("b{i}")).await);
    }

    let mut replays = Vec::new();
    for n in 0..10 {
        // 7 MB of history into a tiny receive window, never read.
        let mut tcp = tiny_window(server.addr).await;
        let request = format!(
            "GET /ws/bob/conn/d{n}?since_seq=0 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        replays.push(tcp);
    }
    // Once the replays have filled what the kernel takes (a burst of some 40 MB of writes on a
    // machine of two cores, shared with this test's clients), the pair chats as before.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut during = Vec::new();
    for i in 0..20 {
        during.push(round_trip(&mut carol, &mut dave, format!("d{i}")).await);
    }
    before.sort();
    during.sort();
    assert!(
        during[10] <= before[10] * 10 + Duration::from_millis(20),
        "median round trip {:?} beside the replays, {:?} before",
        during[10],
        before[10]
    );
    // Each replay stalls at once (its window is full) and is dropped 2 s later.
    let started = std::time::Instant::now();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while server
        .metric_if_rendered("natter_disconnects_total{reason=\"slow_consumer\"}")
        .await
        .unwrap_or(0.0)
        < 10.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replays are still open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    for mut tcp in replays {
        let mut got = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
        assert!(end.is_ok(), "a dropped replay's connection is still open");
        assert!(
            got.len() < 7_000_000,
            "{} bytes: the whole history arrived",
            got.len()
        );
    }
}

/// The time from `c` sending to `d` (user "dave") until `d` has it.
async fn round_trip(c: &mut Client, d: &mut Client, tag: String) -> std::time::Duration {
    let t = std::time::Instant::now();
    c.send_msg("dave", &tag, "hi").await;
    assert_eq!(d.recv().await.local_id, tag);
    t.elapsed()
}

/// A connection to `addr` with a receive window of a few KB, for a client that never reads.
async fn tiny_window(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}
