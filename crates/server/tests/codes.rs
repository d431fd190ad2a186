//! Every code natter-protocol defines is produced by the real server: each error reason of an
//! error reply, each HTTP error, each close code. The tables come from natter-protocol, and each
//! code is provoked by a `match` without a catch-all, so a new code without a way to provoke it
//! does not compile, and one the server no longer produces fails here.

#[macro_use]
mod common;

use std::time::Duration;

use common::{
    Backend, Client, TestServer, connect_with, http_request_with, mint, secret_config, start,
    test_config,
};
use futures_util::SinkExt;
use natter::{Config, config::StorageBackend};
use natter_protocol::{CloseCode, ErrorReason, HttpError, content_type, msg_type};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode as WsCloseCode},
};

const SECRET: &str = "codes-test-secret-of-32-bytes!!!";
const HOUR: Duration = Duration::from_secs(3600);

/// The reason of the error reply the connection gets next (acks and deliveries skipped).
async fn next_error(c: &mut Client) -> ErrorReason {
    loop {
        let m = c.recv().await;
        if m.msg_type == msg_type::REC_RESP && m.content_type == content_type::ERROR {
            let word = m.content.split(':').next().unwrap_or("");
            return ErrorReason::ALL
                .into_iter()
                .find(|r| r.as_str() == word)
                .unwrap_or_else(|| panic!("unknown reason in {}", m.content));
        }
    }
}

async fn provoke_reason(reason: ErrorReason) -> ErrorReason {
    let mut config = test_config();
    if reason == ErrorReason::RateLimited {
        config.limits.rate.per_second = 1.0;
        config.limits.rate.burst = 1;
        config.limits.rate.close_after = 100;
    }
    let server = start(config.clone()).await;
    let mut c = server.connect("alice", "p").await;
    match reason {
        ErrorReason::InvalidJson => c.send_text("not json").await,
        ErrorReason::InvalidMsg => c.send_text(r#"{"receiver_id": 5}"#).await,
        ErrorReason::MissingReceiver => c.send_text(r#"{"content": "to nobody"}"#).await,
        ErrorReason::BinaryNotSupported => {
            c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap()
        }
        ErrorReason::UnsupportedMsgType => {
            c.send_text(r#"{"receiver_id": "bob", "msg_type": 24}"#)
                .await
        }
        ErrorReason::SenderMismatch => {
            c.send_text(r#"{"receiver_id": "bob", "send_id": "mallory"}"#)
                .await
        }
        ErrorReason::RateLimited => {
            c.send_msg("bob", "1", "first").await;
            c.send_msg("bob", "2", "over the rate").await;
        }
        ErrorReason::StoreUnavailable => {
            let log = format!("{}/natter-log.db", config.storage.path);
            common::sql(
                Backend::Sqlite,
                &log,
                "ALTER TABLE log_batches RENAME TO away",
            )
            .await;
            c.send_msg("bob", "1", "not stored").await;
        }
        ErrorReason::NotAMember => {
            c.send_text(r#"{"receiver_id": "g_nobody", "msg_type": 1}"#)
                .await
        }
    }
    next_error(&mut c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_reason_is_produced() {
    for reason in ErrorReason::ALL {
        assert_eq!(provoke_reason(reason).await, reason);
    }
}

/// An HTTP request; returns the status and the `error` of the JSON body.
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String) {
    let (status, body) = http_request_with(server.addr, method, path, headers, body).await;
    let error = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, error)
}

/// A WebSocket upgrade; returns the refusal's status and `error`, or 101.
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    match connect_with(url, headers).await {
        Ok(_) => (101, String::new()),
        Err((status, body)) => {
            let error = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (status, error)
        }
    }
}

fn token_config() -> Config {
    secret_config(SECRET)
}

/// A token of a server configured like `config` but with `change` applied (another issuer,
/// audience or secret).
fn token_of(change: impl FnOnce(&mut Config), user: &str, ttl: Duration) -> String {
    let mut other = token_config();
    change(&mut other);
    mint(&other, user, None, ttl)
}

/// Creates a group of `owner` with `members`; returns its id.
async fn group(server: &TestServer, owner: &str, members: &[&str]) -> String {
    let (status, body) = http_request_with(
        server.addr,
        "POST",
        &format!("/api/v1/groups?user_id={owner}"),
        &[],
        Some(json!({ "name": "g", "members": members })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["group"]["group_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn provoke_http(error: HttpError) -> (u16, String) {
    match error {
        HttpError::InvalidId => {
            let server = start(test_config()).await;
            upgrade(&server.url("g_user", "p"), &[]).await
        }
        HttpError::InvalidQuery => {
            let server = start(test_config()).await;
            call(
                &server,
                "GET",
                "/api/v1/messages?user_id=a&limit=0",
                &[],
                None,
            )
            .await
        }
        HttpError::InvalidRequest => {
            let server = start(test_config()).await;
            let body = Some(json!({ "name": 5 }));
            call(&server, "POST", "/api/v1/groups?user_id=a", &[], body).await
        }
        HttpError::TokenMissing => {
            let server = start(token_config()).await;
            upgrade(&server.url("alice", "p"), &[]).await
        }
        HttpError::TokenMalformed => {
            let server = start(token_config()).await;
            upgrade(&format!("{}?token=abc", server.url("alice", "p")), &[]).await
        }
        HttpError::TokenExpired => {
            let server = start(token_config()).await;
            let expired = token_of(|_| {}, "alice", Duration::ZERO);
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let mut config = token_config();
            config.auth.leeway = Duration::ZERO;
            drop(server);
            let server = start(config).await;
            upgrade(
                &format!("{}?token={expired}", server.url("alice", "p")),
                &[],
            )
            .await
        }
        HttpError::TokenBadSignature => {
            let server = start(token_config()).await;
            let forged = token_of(|c| c.auth.secret = "x".repeat(32), "alice", HOUR);
            upgrade(&format!("{}?token={forged}", server.url("alice", "p")), &[]).await
        }
        HttpError::TokenBadIssuer => {
            let mut config = token_config();
            config.auth.issuer = "our-backend".into();
            let server = start(config).await;
            let theirs = token_of(|c| c.auth.issuer = "elsewhere".into(), "alice", HOUR);
            upgrade(&format!("{}?token={theirs}", server.url("alice", "p")), &[]).await
        }
        HttpError::TokenBadAudience => {
            let mut config = token_config();
            config.auth.audience = "natter".into();
            let server = start(config).await;
            let theirs = token_of(|c| c.auth.audience = "another-app".into(), "alice", HOUR);
            upgrade(&format!("{}?token={theirs}", server.url("alice", "p")), &[]).await
        }
        HttpError::TokenUserMismatch => {
            let server = start(token_config()).await;
            let bobs = token_of(|_| {}, "bob", HOUR);
            upgrade(&format!("{}?token={bobs}", server.url("alice", "p")), &[]).await
        }
        HttpError::TokenPlatformMismatch => {
            let config = token_config();
            let bound = mint(&config, "alice", Some("phone"), HOUR);
            let server = start(config).await;
            upgrade(
                &format!("{}?token={bound}", server.url("alice", "desk")),
                &[],
            )
            .await
        }
        HttpError::OriginForbidden => {
            let server = start(test_config()).await;
            let origin = [("origin", "https://evil.example")];
            upgrade(&server.url("alice", "p"), &origin).await
        }
        HttpError::NotAMember => {
            let server = start(test_config()).await;
            let g = group(&server, "alice", &[]).await;
            call(
                &server,
                "GET",
                &format!("/api/v1/groups/{g}?user_id=eve"),
                &[],
                None,
            )
            .await
        }
        HttpError::Forbidden => {
            let server = start(test_config()).await;
            let g = group(&server, "alice", &["bob"]).await;
            let body = Some(json!({ "name": "mine now" }));
            call(
                &server,
                "PATCH",
                &format!("/api/v1/groups/{g}?user_id=bob"),
                &[],
                body,
            )
            .await
        }
        HttpError::GroupNotFound => {
            let server = start(test_config()).await;
            call(
                &server,
                "DELETE",
                "/api/v1/groups/g_gone?user_id=a",
                &[],
                None,
            )
            .await
        }
        HttpError::StorageDisabled => {
            let mut config = test_config();
            config.storage.backend = StorageBackend::None;
            let server = start(config).await;
            call(&server, "GET", "/api/v1/seq?user_id=a", &[], None).await
        }
        HttpError::GroupFull => {
            let mut config = test_config();
            config.groups.max_members = 2;
            let server = start(config).await;
            let body = Some(json!({ "name": "big", "members": ["b", "c"] }));
            call(&server, "POST", "/api/v1/groups?user_id=a", &[], body).await
        }
        HttpError::TooManyGroups => {
            let mut config = test_config();
            config.groups.max_groups_per_user = 1;
            let server = start(config).await;
            group(&server, "a", &[]).await;
            let body = Some(json!({ "name": "second", "members": [] }));
            call(&server, "POST", "/api/v1/groups?user_id=a", &[], body).await
        }
        HttpError::UserConnectionLimit => {
            let mut config = test_config();
            config.limits.max_connections_per_user = 1;
            let server = start(config).await;
            let _first = server.connect("alice", "phone").await;
            upgrade(&server.url("alice", "desk"), &[]).await
        }
        HttpError::NodeConnectionLimit => {
            let mut config = test_config();
            config.limits.max_connections = 1;
            let server = start(config).await;
            let _first = server.connect("alice", "phone").await;
            upgrade(&server.url("bob", "phone"), &[]).await
        }
        HttpError::ServerShuttingDown => server_shutting_down().await,
        HttpError::StoreUnavailable => {
            let config = test_config();
            let server = start(config.clone()).await;
            let archive = format!("{}/natter.db", config.storage.path);
            common::sql(
                Backend::Sqlite,
                &archive,
                "ALTER TABLE user_seq RENAME TO away",
            )
            .await;
            call(&server, "GET", "/api/v1/seq?user_id=nobody", &[], None).await
        }
        HttpError::PresenceUnavailable => presence_unavailable().await,
    }
}

/// An upgrade whose request arrives while the node is stopping: the connection was accepted
/// before, its request head completes after.
async fn server_shutting_down() -> (u16, String) {
    let mut server = start(test_config()).await;
    // A session keeps the node in its shutdown for a while (it is asked to close).
    let held = server.connect("held", "p").await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /ws/late/conn/p HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tcp.write_all(
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    drop(held);
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let error = serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, error)
}

/// A cluster node asked for presence after its Redis went away.
async fn presence_unavailable() -> (u16, String) {
    let pg = common::fresh_pg_database().await;
    let port = common::free_port();
    let mut redis = common::own_redis(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let server = start(common::cluster_node_config(
        &pg,
        &common::redis_prefix("codes"),
        &url,
    ))
    .await;
    redis.kill().await.unwrap();
    call(
        &server,
        "GET",
        "/api/v1/users/bob/online?user_id=a",
        &[],
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_error_is_produced_with_its_status() {
    for error in HttpError::ALL {
        let (status, got) = provoke_http(error).await;
        assert_eq!(
            (status, got.as_str()),
            (error.status(), error.as_str()),
            "{error:?}"
        );
    }
}

/// The close code the server sends a connection made to provoke `code`.
async fn provoke_close(code: CloseCode) -> Option<u16> {
    let mut config = test_config();
    match code {
        CloseCode::Normal => {
            let server = start(config).await;
            let mut c = server.connect("a", "p").await;
            let bye = CloseFrame {
                code: WsCloseCode::Normal,
                reason: "bye".into(),
            };
            c.ws.close(Some(bye)).await.unwrap();
            c.closed().await
        }
        CloseCode::GoingAway => {
            let mut server = start(config).await;
            let mut c = server.connect("a", "p").await;
            server.shutdown();
            c.closed().await
        }
        CloseCode::TooBig => {
            config.limits.max_message_size = 1024;
            let server = start(config).await;
            let mut c = server.connect("a", "p").await;
            let big = format!(r#"{{"receiver_id":"b","content":"{}"}}"#, "x".repeat(2048));
            let _ = c.ws.send(Message::text(big)).await;
            c.closed().await
        }
        CloseCode::Internal => {
            let server = start(config.clone()).await;
            let mut a = server.connect("a", "p").await;
            a.send_msg("b", "1", "stored").await;
            a.recv().await;
            // Move the log into natter.db, then take natter.db's inbox away: the replay fails.
            let archive = format!("{}/natter.db", config.storage.path);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while server.metric("natter_store_log_messages").await > 0.0 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the log was not moved"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            common::sql(
                Backend::Sqlite,
                &archive,
                "ALTER TABLE inbox_chunks RENAME TO away",
            )
            .await;
            let url = format!("{}?since_seq=0", server.url("b", "p"));
            let (mut b, _) = connect_with(&url, &[]).await.unwrap();
            b.closed().await
        }
        CloseCode::Replaced => {
            let server = start(config).await;
            let mut first = server.connect("a", "p").await;
            let _second = server.connect("a", "p").await;
            first.closed().await
        }
        CloseCode::BadToken => {
            let mut config = token_config();
            config.auth.leeway = Duration::ZERO;
            let token = mint(&config, "a", None, Duration::from_secs(1));
            let server = start(config).await;
            let url = format!("{}?token={token}", server.url("a", "p"));
            let (mut c, _) = connect_with(&url, &[]).await.unwrap();
            c.closed().await
        }
        CloseCode::SlowConsumer => {
            config.limits.outbound_queue = 4;
            config.storage.backend = StorageBackend::None;
            let server = start(config).await;
            let mut sink = common::raw_silent_client(server.addr, "sink", "p").await;
            let mut flooder = server.connect("f", "p").await;
            // Far more than the socket buffers hold: the sink's queue overflows.
            let big = "y".repeat(60 * 1024);
            let series = "natter_slow_consumer_disconnects_total";
            for i in 0..400 {
                flooder.send_msg("sink", &i.to_string(), &big).await;
                flooder.recv().await;
                if server.metric_if_rendered(series).await == Some(1.0) {
                    break;
                }
            }
            assert_eq!(server.metric(series).await, 1.0);
            // Now the sink reads: the write the server was blocked in completes, then the close.
            read_close_code(&mut sink).await
        }
        CloseCode::HeartbeatTimeout => {
            config.heartbeat.interval = Duration::from_millis(100);
            config.heartbeat.timeout = Duration::from_millis(300);
            let server = start(config).await;
            let mut silent = common::raw_silent_client(server.addr, "quiet", "p").await;
            read_close_code(&mut silent).await
        }
        CloseCode::RateLimited => {
            config.limits.rate.per_second = 1.0;
            config.limits.rate.burst = 1;
            config.limits.rate.close_after = 3;
            let server = start(config).await;
            let mut c = server.connect("a", "p").await;
            for i in 0..10 {
                c.send_msg("b", &i.to_string(), "fast").await;
            }
            c.closed().await
        }
    }
}

/// The close code on a raw socket, or None when it ends without one (a slow consumer's socket
/// may be too full to take the close frame).
async fn read_close_code(stream: &mut tokio::net::TcpStream) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(10), common::raw_read_close_code(stream))
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_close_code_is_produced() {
    for code in CloseCode::ALL {
        assert_eq!(provoke_close(code).await, Some(code.code()), "{code:?}");
    }
}
