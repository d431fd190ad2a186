//! The messaging core, end to end: real server, real WebSocket clients.

mod common;

use std::time::Duration;

use common::{Event, start, test_config};
use natter_protocol::{TUTORIAL_EXAMPLE, content_type, msg_type};

#[tokio::test]
async fn tutorial_example_is_delivered_and_acked() {
    let server = start(test_config()).await;
    let mut alice = server.connect("123", "321").await;
    let mut bob = server.connect("124", "321").await;

    alice.send_text(TUTORIAL_EXAMPLE).await;

    let got = bob.recv().await;
    assert_eq!(got.send_id, "123");
    assert_eq!(got.receiver_id, "124");
    assert_eq!(got.content, "hello world");
    assert_eq!(got.msg_type, msg_type::SINGLE);
    let id = uuid::Uuid::parse_str(&got.server_id).expect("server_id is a UUID");
    assert_eq!(id.get_version_num(), 7);
    let now = natter::clock::now_millis();
    assert!(
        (now - got.send_time).abs() < 10_000,
        "send_time is now in ms"
    );

    let ack = alice.recv().await;
    assert_eq!(ack.msg_type, msg_type::REC_RESP);
    assert_eq!(ack.server_id, got.server_id);
    assert_eq!(ack.send_time, got.send_time);
    assert_eq!(ack.content_type, content_type::DEFAULT);
}

#[tokio::test]
async fn every_device_gets_it_and_only_the_sending_one_gets_the_ack() {
    let server = start(test_config()).await;
    let mut a_phone = server.connect("a", "phone").await;
    let mut a_desk = server.connect("a", "desk").await;
    let mut b_phone = server.connect("b", "phone").await;
    let mut b_web = server.connect("b", "web").await;

    a_phone.send_msg("b", "L1", "hi").await;

    let ack = a_phone.recv().await;
    assert_eq!(
        (ack.msg_type, ack.local_id.as_str()),
        (msg_type::REC_RESP, "L1")
    );
    for device in [&mut b_phone, &mut b_web, &mut a_desk] {
        let m = device.recv().await;
        assert_eq!((m.send_id.as_str(), m.content.as_str()), ("a", "hi"));
        assert_eq!(m.msg_type, msg_type::SINGLE);
        assert_eq!(m.server_id, ack.server_id);
    }
    a_phone.assert_silent(Duration::from_millis(200)).await;
    a_desk.assert_silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn relogin_on_same_platform_closes_the_old_one_with_4001_and_keeps_the_new() {
    let server = start(test_config()).await;
    let mut old = server.connect("u", "phone").await;
    let mut new = server.connect("u", "phone").await;
    assert_eq!(old.closed().await, Some(4001));
    // The old connection's exit has happened; the tutorial's design would now have
    // unregistered the new one. Give it time, then prove the new one still receives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut other = server.connect("v", "web").await;
    other.send_msg("u", "x", "still here?").await;
    assert_eq!(new.recv().await.content, "still here?");
    assert_eq!(other.recv().await.msg_type, msg_type::REC_RESP);
}

#[tokio::test]
async fn messages_to_yourself_reach_your_other_devices() {
    let server = start(test_config()).await;
    let mut a = server.connect("me", "a").await;
    let mut b = server.connect("me", "b").await;
    a.send_msg("me", "n1", "note").await;
    assert_eq!(b.recv().await.content, "note");
    assert_eq!(a.recv().await.msg_type, msg_type::REC_RESP);
    a.assert_silent(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn bad_frames_get_error_replies_and_the_connection_stays_open() {
    let server = start(test_config()).await;
    let mut c = server.connect("c", "web").await;
    let mut d = server.connect("d", "web").await;

    let cases: [(&str, &str, &str); 6] = [
        ("not json at all", "", "invalid_json"),
        (
            r#"{"local_id":"w1","receiver_id":"d","seq":"seven"}"#,
            "w1",
            "invalid_msg",
        ),
        (
            r#"{"local_id":"w2","content":"no receiver"}"#,
            "w2",
            "missing_receiver",
        ),
        (
            r#"{"local_id":"w3","receiver_id":""}"#,
            "w3",
            "missing_receiver",
        ),
        (
            r#"{"local_id":"w4","receiver_id":"d","send_id":"mallory"}"#,
            "w4",
            "sender_mismatch",
        ),
        (
            r#"{"local_id":"w5","receiver_id":"d","msg_type":24}"#,
            "w5",
            "unsupported_msg_type",
        ),
    ];
    for (frame, local_id, reason) in cases {
        c.send_text(frame).await;
        let reply = c.recv().await;
        assert_eq!(reply.msg_type, msg_type::REC_RESP, "{frame}");
        assert_eq!(reply.content_type, content_type::ERROR, "{frame}");
        assert_eq!(reply.local_id, local_id, "{frame}");
        assert!(
            reply.content.starts_with(reason),
            "{frame}: {}",
            reply.content
        );
    }
    use futures_util::SinkExt;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    let reply = c.recv().await;
    assert!(reply.content.starts_with("binary_not_supported"));

    // Still open, still works; nothing bad reached the other user.
    c.send_msg("d", "ok", "fine").await;
    assert_eq!(d.recv().await.content, "fine");
    assert_eq!(
        server
            .metric(r#"natter_frames_rejected_total{reason="missing_receiver"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_others_carry_on() {
    let mut config = test_config();
    config.limits.max_message_size = 4096;
    let server = start(config).await;
    let mut big = server.connect("big", "web").await;
    let mut e = server.connect("e", "web").await;
    let mut f = server.connect("f", "web").await;
    let content = "x".repeat(5000);
    big.send_msg("e", "huge", &content).await;
    assert_eq!(big.closed().await, Some(1009));
    f.send_msg("e", "small", "ok").await;
    assert_eq!(e.recv().await.content, "ok");
}

#[tokio::test]
async fn client_pings_get_pongs() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start(test_config()).await;
    let mut c = server.connect("p", "web").await;
    c.ws.send(Message::Ping(b"abc".to_vec().into()))
        .await
        .unwrap();
    let frame = tokio::time::timeout(common::WAIT, c.ws.next())
        .await
        .unwrap();
    match frame {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"abc"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn silent_connection_is_closed_after_heartbeat_timeout() {
    // Default heartbeat: ping every 30 s, close after 90 s without any frame from the client.
    common::init_logs();
    let mut config = test_config();
    // Paused time and a database pool's timeouts do not mix; this test is about the timer.
    config.storage.backend = natter::config::StorageBackend::None;
    let server = start(config).await;
    let mut silent = common::raw_silent_client(server.addr, "quiet", "web").await;
    let mut chatty = server.connect("busy", "web").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        chatty.send_msg("busy", "self", "tick").await;
    }
    // 120 s have passed: the silent one never answered a ping (it never read), so it is closed.
    assert_eq!(common::raw_read_close_code(&mut silent).await, 4004);
    // The one that spoke is still there.
    chatty.send_msg("busy", "last", "tock").await;
    loop {
        let m = chatty.recv().await;
        if m.local_id == "last" {
            break;
        }
    }
    assert_eq!(
        server
            .metric(r#"natter_disconnects_total{reason="heartbeat_timeout"}"#)
            .await,
        1.0
    );
}

/// A queue bound in frames.
#[tokio::test]
async fn slow_consumer_is_disconnected_and_nobody_else_waits() {
    let mut config = test_config();
    config.limits.outbound_queue = 32;
    slow_consumer_is_disconnected(config).await;
}

/// A queue bound in bytes: 1 MiB, whatever the number of frames.
#[tokio::test]
async fn slow_consumer_of_a_full_queue_in_bytes_is_disconnected() {
    let mut config = test_config();
    config.limits.outbound_queue = 100_000;
    config.limits.outbound_bytes = 1024 * 1024;
    slow_consumer_is_disconnected(config).await;
}

async fn slow_consumer_is_disconnected(mut config: natter::Config) {
    // The flood goes as fast as the acks come back: the byte rate, which would pace it, is not
    // what this test is about.
    config.limits.rate.bytes_per_second = 0;
    let server = start(config).await;
    // `sink` never reads. `fast` does.
    let mut sink = server.connect("sink", "web").await;
    let mut flooder = server.connect("flooder", "web").await;
    let mut fast = server.connect("fast", "web").await;
    let mut friend = server.connect("friend", "web").await;

    // Far more than the kernel's socket buffers hold, so the sink's queue must overflow.
    let big = "y".repeat(60 * 1024);
    let flood = tokio::spawn(async move {
        for i in 0..400 {
            flooder.send_msg("sink", &format!("f{i}"), &big).await;
            assert_eq!(flooder.recv().await.msg_type, msg_type::REC_RESP);
        }
        flooder
    });
    for i in 0..200 {
        friend.send_msg("fast", &format!("m{i}"), "hello").await;
        let m = fast.recv().await;
        assert_eq!(m.local_id, format!("m{i}"));
    }
    let _flooder = flood.await.unwrap();
    // The sink's queue overflowed and the server dropped it. Its socket buffers are full, so
    // the 4003 close frame reaches it only if it has room; otherwise the connection just ends.
    // Well before its writes would time out (heartbeat.timeout, 90 s).
    let code = tokio::time::timeout(Duration::from_secs(20), sink.closed())
        .await
        .expect("dropped for its full queue, not its write deadline");
    assert!(matches!(code, Some(4003) | None), "{code:?}");
    assert_eq!(
        server
            .metric("natter_slow_consumer_disconnects_total")
            .await,
        1.0
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_1001() {
    let mut server = start(test_config()).await;
    let mut a = server.connect("a", "web").await;
    let mut b = server.connect("b", "web").await;
    server.shutdown();
    assert_eq!(a.closed().await, Some(1001));
    assert_eq!(b.closed().await, Some(1001));
    let result = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    result
        .expect("server stopped within the timeout")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn node_connection_limit_refuses_with_503() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let server = start(config).await;
    let _a = server.connect("a", "1").await;
    let _b = server.connect("b", "1").await;
    let err = tokio_tungstenite::connect_async(server.url("c", "1"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 503),
        other => panic!("expected HTTP 503, got {other}"),
    }
    assert_eq!(server.metric("natter_connections_refused_total").await, 1.0);
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let server = start(test_config()).await;
    let mut a = server.connect("a", "1").await;
    let mut b = server.connect("b", "1").await;
    a.send_msg("b", "1", "x").await;
    b.recv().await;
    a.recv().await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"connections\":2"), "{body}");
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for (series, value) in [
        ("natter_connections", 2.0),
        ("natter_messages_received_total", 1.0),
        ("natter_messages_delivered_total", 2.0),
    ] {
        assert_eq!(server.metric(series).await, value, "{series}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("natter_delivery_latency_seconds_bucket{")),
        "{body}"
    );
    let _ = Event::Closed(None);
}

#[tokio::test]
async fn unknown_paths_and_plain_get_on_the_ws_route_are_http_errors() {
    let server = start(test_config()).await;
    assert_eq!(server.get("/nope").await.0, 404);
    // A GET without the upgrade headers is refused by the WebSocket extractor.
    let status = server.get("/ws/1/conn/2").await.0;
    assert!((400..500).contains(&status), "{status}");
    let long = "u".repeat(200);
    let err = tokio_tungstenite::connect_async(server.url(&long, "p"))
        .await
        .unwrap_err();
    assert!(matches!(err, tokio_tungstenite::tungstenite::Error::Http(r) if r.status() == 400));
}

/// `/healthz` answers 503 once the node is stopping: a load balancer takes it out of rotation
/// while its sessions close. (The request was accepted before the stop; its head completes
/// after.)
#[tokio::test]
async fn healthz_answers_503_while_the_node_stops() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = start(test_config()).await;
    let held = server.connect("held", "p").await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200, "serving before the stop");
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains(r#""status":"shutting_down""#), "{text}");
    drop(held);
}

/// A write to a client that stops reading is given `heartbeat.timeout`; past it the server
/// drops that client (reason `slow_consumer`), even though its queue never overflowed, and
/// nobody else waits meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_longer_than_the_heartbeat_timeout_drops_the_client() {
    let mut config = test_config();
    config.storage.backend = natter::config::StorageBackend::None;
    config.heartbeat.timeout = Duration::from_millis(500);
    config.limits.outbound_queue = 100_000;
    let server = start(config).await;
    let _sink = common::raw_silent_client(server.addr, "sink", "p").await;
    let mut flooder = server.connect("flooder", "p").await;
    let mut friend = server.connect("friend", "p").await;
    // Far more than the socket buffers hold, far less than the queue: the write blocks.
    let big = "z".repeat(60 * 1024);
    for i in 0..300 {
        flooder.send_msg("sink", &i.to_string(), &big).await;
        flooder.recv().await;
    }
    let series = r#"natter_disconnects_total{reason="slow_consumer"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.metric(series).await < 1.0 {
        // Meanwhile others are served as usual.
        friend.send_msg("friend", "ping", "ping").await;
        assert_eq!(friend.recv().await.msg_type, msg_type::REC_RESP);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blocked write was never given up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server
            .metric(r#"natter_messages_dropped_total{reason="slow_consumer"}"#)
            .await,
        0.0,
        "dropped for its write, not for a full queue"
    );
}
