//! Identity and abuse limits: tokens, origins, per-user and per-node limits, rate limits,
//! slow-loris. Real server, real sockets.

mod common;

use std::time::Duration;

use common::{connect_with, mint, secret_config, start, test_config};
use natter_protocol::{content_type, msg_type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "auth-test-secret-of-thirty-two-b";
const HOUR: Duration = Duration::from_secs(3600);

fn refused(result: Result<impl Sized, (u16, String)>) -> (u16, String) {
    match result {
        Ok(_) => panic!("connection was accepted"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn tokens_in_query_header_or_subprotocol_are_accepted() {
    let config = secret_config(SECRET);
    let token = mint(&config, "alice", None, HOUR);
    let server = start(config).await;

    let url = format!("{}?token={token}", server.url("alice", "q"));
    let (mut by_query, _) = connect_with(&url, &[]).await.unwrap();

    let bearer = format!("Bearer {token}");
    let (mut by_header, _) = connect_with(&server.url("alice", "h"), &[("authorization", &bearer)])
        .await
        .unwrap();

    let protocols = format!("natter, bearer.{token}");
    let (mut by_protocol, resp) = connect_with(
        &server.url("alice", "p"),
        &[("sec-websocket-protocol", &protocols)],
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "natter");

    by_query.send_msg("alice", "1", "to my devices").await;
    assert_eq!(by_header.recv().await.content, "to my devices");
    assert_eq!(by_protocol.recv().await.content, "to my devices");
    assert_eq!(by_query.recv().await.msg_type, msg_type::REC_RESP);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_a_reason() {
    let config = secret_config(SECRET);
    let good_for_alice = mint(&config, "alice", Some("phone"), HOUR);
    let forged = mint(
        &secret_config("another-secret-of-thirty-two-byt"),
        "alice",
        None,
        HOUR,
    );
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": natter::clock::now_secs() - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let server = start(config).await;
    let with = |user: &str, platform: &str, token: &str| {
        format!("{}?token={token}", server.url(user, platform))
    };

    let cases = [
        (server.url("alice", "phone"), "token_missing"),
        (with("alice", "phone", "not-a-jwt"), "token_malformed"),
        (with("alice", "phone", &forged), "token_bad_signature"),
        (with("alice", "phone", &expired), "token_expired"),
        // A's token on B's path.
        (with("bob", "phone", &good_for_alice), "token_user_mismatch"),
        (
            with("alice", "web", &good_for_alice),
            "token_platform_mismatch",
        ),
    ];
    for (url, reason) in cases {
        let (status, body) = refused(connect_with(&url, &[]).await);
        assert_eq!(status, 401, "{url}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], reason, "{url}");
    }
    assert!(
        connect_with(&with("alice", "phone", &good_for_alice), &[])
            .await
            .is_ok()
    );
    assert_eq!(
        server
            .metric(r#"natter_upgrades_refused_total{reason="token_expired"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let mut config = secret_config(SECRET);
    config.auth.issuer = "my-backend".into();
    config.auth.audience = "natter".into();
    let good = mint(&config, "u", None, HOUR);
    let mut other = config.clone();
    other.auth.issuer = "someone-else".into();
    let bad_iss = mint(&other, "u", None, HOUR);
    let mut other = config.clone();
    other.auth.audience = "other-service".into();
    let bad_aud = mint(&other, "u", None, HOUR);
    let server = start(config).await;
    let url = |t: &str| format!("{}?token={t}", server.url("u", "p"));
    assert!(connect_with(&url(&good), &[]).await.is_ok());
    let (_, body) = refused(connect_with(&url(&bad_iss), &[]).await);
    assert!(body.contains("token_bad_issuer"), "{body}");
    let (_, body) = refused(connect_with(&url(&bad_aud), &[]).await);
    assert!(body.contains("token_bad_audience"), "{body}");
}

#[tokio::test]
async fn spoofed_send_id_is_refused_and_not_delivered() {
    let config = secret_config(SECRET);
    let (ta, tb) = (
        mint(&config, "a", None, HOUR),
        mint(&config, "b", None, HOUR),
    );
    let server = start(config).await;
    let (mut a, _) = connect_with(&format!("{}?token={ta}", server.url("a", "p")), &[])
        .await
        .unwrap();
    let (mut b, _) = connect_with(&format!("{}?token={tb}", server.url("b", "p")), &[])
        .await
        .unwrap();
    a.send_text(r#"{"send_id":"b","receiver_id":"b","local_id":"spoof","content":"I am b"}"#)
        .await;
    let reply = a.recv().await;
    assert_eq!(reply.content_type, content_type::ERROR);
    assert!(reply.content.starts_with("sender_mismatch"));
    assert_eq!(reply.local_id, "spoof");
    b.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test(start_paused = true)]
async fn connection_is_closed_with_4002_when_its_token_expires() {
    let mut config = secret_config(SECRET);
    // Paused time and a database pool's timeouts do not mix; this test is about the timer.
    config.storage.backend = natter::config::StorageBackend::None;
    config.auth.leeway = Duration::ZERO;
    let token = mint(&config, "u", None, Duration::from_secs(120));
    let server = start(config).await;
    let (mut c, _) = connect_with(&format!("{}?token={token}", server.url("u", "p")), &[])
        .await
        .unwrap();
    // Keep the connection alive past the heartbeat: the close must come from the expiry.
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        if started.elapsed() > Duration::from_secs(200) {
            panic!("not closed at expiry");
        }
        use futures_util::SinkExt;
        if c.ws
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                Default::default(),
            ))
            .await
            .is_err()
        {
            break;
        }
        if started.elapsed() >= Duration::from_secs(120) {
            break;
        }
    }
    assert_eq!(c.closed().await, Some(4002));
}

/// A client renews its token on its open connection: nothing is closed or replayed, and the
/// connection lasts until the new token expires. A token that is not its own changes nothing.
#[tokio::test]
async fn a_token_refreshed_on_the_connection_extends_it() {
    let mut config = secret_config(SECRET);
    config.storage.backend = natter::config::StorageBackend::None;
    config.auth.leeway = Duration::ZERO;
    let token = mint(&config, "u", None, Duration::from_secs(120));
    let server = start(config.clone()).await;
    let (mut c, _) = connect_with(&format!("{}?token={token}", server.url("u", "p")), &[])
        .await
        .unwrap();
    let refresh = |token: &str, local_id: &str| {
        serde_json::json!({"receiver_id": "u", "msg_type": 13, "content": token, "local_id": local_id})
            .to_string()
    };
    let other = mint(&config, "mallory", None, Duration::from_secs(600));
    c.send_text(&refresh(&other, "bad")).await;
    let reply = c.recv().await;
    assert_eq!(reply.local_id, "bad");
    assert_eq!(reply.content, "bad_token: token_user_mismatch");
    let fresh = mint(&config, "u", None, Duration::from_secs(600));
    c.send_text(&refresh(&fresh, "good")).await;
    let ack = c.recv().await;
    assert_eq!((ack.msg_type, ack.local_id.as_str()), (24, "good"));
    assert_ne!(ack.content_type, content_type::ERROR, "{}", ack.content);
    // Past the first token's expiry (heartbeats keep it alive), open; then closed at the new
    // one's. Time is paused from here: the timers run without the test waiting for them.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let mut closed_at = None;
    while closed_at.is_none() {
        tokio::time::sleep(Duration::from_secs(20)).await;
        use futures_util::SinkExt;
        let ping = tokio_tungstenite::tungstenite::Message::Ping(Default::default());
        if c.ws.send(ping).await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        if started.elapsed() < Duration::from_secs(560) {
            c.assert_silent(Duration::from_millis(10)).await;
        } else if started.elapsed() >= Duration::from_secs(600) {
            break;
        }
    }
    assert_eq!(c.closed().await, Some(4002));
    assert!(
        started.elapsed() >= Duration::from_secs(560),
        "{closed_at:?}"
    );
}

#[tokio::test]
async fn foreign_origins_are_refused_with_403() {
    let mut config = test_config();
    config.auth.allowed_origins = vec!["https://app.example".into()];
    let server = start(config).await;
    let url = server.url("u", "p");
    let (status, body) = refused(connect_with(&url, &[("origin", "https://evil.example")]).await);
    assert_eq!(status, 403);
    assert!(body.contains("origin_forbidden"));
    // Listed origin, same origin, and no Origin (native apps) are fine.
    assert!(
        connect_with(&url, &[("origin", "https://app.example")])
            .await
            .is_ok()
    );
    let own = format!("http://{}", server.addr);
    assert!(
        connect_with(&server.url("u", "p2"), &[("origin", &own)])
            .await
            .is_ok()
    );
    assert!(connect_with(&server.url("u", "p3"), &[]).await.is_ok());
}

#[tokio::test]
async fn per_user_connection_limit_refuses_with_429_but_relogin_still_replaces() {
    let mut config = test_config();
    config.limits.max_connections_per_user = 2;
    let server = start(config).await;
    let mut first = server.connect("u", "a").await;
    let mut second = server.connect("u", "b").await;
    // Both registered (each answers a message) before the third comes.
    for c in [&mut first, &mut second] {
        c.send_msg("x", "r", "hi").await;
        c.recv().await;
    }
    let (status, body) = refused(connect_with(&server.url("u", "c"), &[]).await);
    assert_eq!(status, 429);
    assert!(body.contains("user_connection_limit"));
    // The same platform again replaces rather than adds.
    let _again = server.connect("u", "a").await;
    assert_eq!(first.closed().await, Some(4001));
}

#[tokio::test]
async fn flooding_client_is_limited_then_closed_and_others_keep_normal_latency() {
    let mut config = test_config();
    config.limits.rate.per_second = 50.0;
    config.limits.rate.burst = 100;
    config.limits.rate.close_after = 200;
    let server = start(config).await;
    let mut flooder = server.connect("flood", "p").await;
    let mut victim = server.connect("victim", "p").await;
    let mut friend = server.connect("friend", "p").await;
    // The friend's round trips before the flood: the baseline on this machine, now.
    let before = round_trips(&mut friend, "before").await;

    let started = std::time::Instant::now();
    let flood = tokio::spawn(async move {
        let mut limited = 0;
        let mut acked = 0;
        for i in 0..2000 {
            use futures_util::SinkExt;
            let frame = format!(r#"{{"receiver_id":"victim","local_id":"f{i}","content":"spam"}}"#);
            if flooder
                .ws
                .send(tokio_tungstenite::tungstenite::Message::text(frame))
                .await
                .is_err()
            {
                break;
            }
        }
        let code = loop {
            match flooder.next_event().await {
                common::Event::Msg(m) if m.content.starts_with("rate_limited") => limited += 1,
                common::Event::Msg(m) if m.msg_type == msg_type::REC_RESP => acked += 1,
                common::Event::Msg(_) => {}
                common::Event::Closed(code) => break code,
            }
        };
        (limited, acked, code)
    });
    // Meanwhile a normal conversation keeps its latency: its median round trip stays within a
    // small multiple of the baseline.
    let during = round_trips(&mut friend, "during").await;
    let (limited, acked, code) = flood.await.unwrap();
    let flood_time = started.elapsed();
    assert_eq!(code, Some(4005));
    assert!(limited >= 100, "{limited} rate_limited replies");
    assert!(
        during <= before * 10 + Duration::from_millis(5),
        "median round trip {during:?} during the flood, {before:?} before"
    );
    // The victim got only what was accepted: the burst, then at most the refill rate for as
    // long as the flood lasted. (Acks of accepted messages may be lost with the closed
    // connection; a resend would be deduplicated.)
    let mut got = 0;
    while let Ok(common::Event::Msg(_)) =
        tokio::time::timeout(Duration::from_millis(500), victim.next_event()).await
    {
        got += 1;
    }
    let most = 100 + (50.0 * flood_time.as_secs_f64()).ceil() as usize + 1;
    assert!(
        (100..=most).contains(&got),
        "burst of 100 then 50/s for {flood_time:?}: {got} delivered"
    );
    assert!(acked <= got);
}

/// The median of 30 round trips of a message to oneself (send to ack).
async fn round_trips(c: &mut common::Client, tag: &str) -> Duration {
    let mut times = Vec::new();
    for i in 0..30 {
        let t = std::time::Instant::now();
        c.send_msg("friend", &format!("{tag}{i}"), "ping").await;
        while c.recv().await.msg_type != msg_type::REC_RESP {}
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn ten_thousand_upgrades_past_the_node_limit_are_refused_and_the_node_keeps_serving() {
    let mut config = test_config();
    config.limits.max_connections = 20;
    let server = start(config).await;
    let mut held = Vec::new();
    for i in 0..20 {
        held.push(server.connect(&format!("u{i}"), "p").await);
    }
    let addr = server.addr;
    let attempts: Vec<_> = (0..50)
        .map(|worker| {
            tokio::spawn(async move {
                let mut refused = 0;
                for i in 0..200 {
                    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let req = format!(
                        "GET /ws/x{worker}-{i}/conn/p HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                         Sec-WebSocket-Version: 13\r\n\r\n"
                    );
                    tcp.write_all(req.as_bytes()).await.unwrap();
                    let mut head = [0u8; 12];
                    tcp.read_exact(&mut head).await.unwrap();
                    if &head[9..12] == b"503" {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for a in attempts {
        refused += a.await.unwrap();
    }
    assert_eq!(refused, 10_000);
    // Still serving the connections it has.
    held[0].send_msg("u1", "after", "still alive").await;
    assert_eq!(held[1].recv().await.content, "still alive");
    assert_eq!(server.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn slow_loris_is_cut_off_after_the_handshake_timeout() {
    let mut config = test_config();
    config.limits.handshake_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /ws/u/conn/p HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent request open");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A well-behaved client is unaffected.
    let _ok = server.connect("u", "p").await;
}

/// Safe defaults: a short HS256 secret is refused at start, naming the key; a non-ASCII Origin
/// matches nothing; a token's `aud` may be an array.
#[tokio::test]
async fn short_secrets_unreadable_origins_and_audience_arrays() {
    let mut short = test_config();
    short.auth.secret = "x".repeat(31);
    let err = natter::Server::bind(short.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("auth.secret"), "{err}");
    assert!(
        short
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.secret")
    );

    let mut config = secret_config(SECRET);
    config.auth.audience = "natter".into();
    config.auth.allowed_origins = vec!["https://app.example".into()];
    let server = start(config).await;
    let claims = serde_json::json!({
        "sub": "alice", "exp": natter::clock::now_secs() + 600, "aud": ["billing", "natter"],
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let url = format!("{}?token={token}", server.url("alice", "p"));
    assert!(connect_with(&url, &[]).await.is_ok(), "aud array naming us");
    let (status, body) = refused(connect_with(&url, &[("origin", "https://äpp.example")]).await);
    assert_eq!(status, 403);
    assert!(body.contains("origin_forbidden"), "{body}");
}
