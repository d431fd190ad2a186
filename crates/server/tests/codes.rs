//! Every code natter-protocol defines is produced by the real server: each error reason of an
//! error reply, each HTTP error, each close code. The tables come from natter-protocol, and each
//! code is provoked by a `match` without a catch-all, so a new code without a way to provoke it
//! does not compile, and one the server no longer produces fails here.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Client, connect_with, mint, secret_config, start, test_config};
use futures_util::SinkExt;
use natter::config::StorageBackend;
use natter_protocol::{CloseCode, ErrorReason, content_type, msg_type};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode as WsCloseCode},
};

const SECRET: &str = "codes-test-secret-of-32-bytes!!!";
const KEY: &str = "codes-test-service-key-of-32-bytes";

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
    if reason == ErrorReason::BadToken {
        config = secret_config(SECRET);
    }
    if reason == ErrorReason::RefusedByBackend {
        // A hook nobody answers, with the policy that refuses then.
        let hook = &mut config.webhooks.before_send;
        hook.url = "http://127.0.0.1:9/hook".into();
        hook.secret = SECRET.into();
        hook.on_failure = natter::config::HookFailure::Refuse;
    }
    let server = start(config.clone()).await;
    let mut c = if reason == ErrorReason::BadToken {
        let token = mint(&config, "alice", None, Duration::from_secs(60));
        let url = format!("{}?token={token}", server.url("alice", "p"));
        connect_with(&url, &[]).await.unwrap().0
    } else {
        server.connect("alice", "p").await
    };
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
        ErrorReason::BadToken => {
            // A token for somebody else.
            let token = mint(&config, "mallory", None, Duration::from_secs(60));
            let refresh =
                serde_json::json!({"receiver_id": "alice", "msg_type": 13, "content": token});
            c.send_text(&refresh.to_string()).await
        }
        ErrorReason::RefusedByBackend => c.send_msg("bob", "1", "asked first").await,
        ErrorReason::NotEditable => {
            let recall =
                r#"{"receiver_id": "bob", "msg_type": 25, "content": "{\"conv_seq\": 1}"}"#;
            c.send_text(recall).await
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

/// The close code the server sends a connection made to provoke `code`.
async fn provoke_close(code: CloseCode) -> Option<u16> {
    let mut config = test_config();
    match code {
        CloseCode::Disconnected => {
            config.service.key = KEY.into();
            let server = start(config).await;
            let mut c = server.connect("a", "p").await;
            // Registered once it answers: a message's ack.
            c.send_msg("b", "1", "hi").await;
            c.recv().await;
            let path = "/api/v1/users/a/disconnect";
            let (status, _) =
                common::http_request_with(server.addr, "POST", path, &[("X-Api-Key", KEY)], None)
                    .await;
            assert_eq!(status, 204);
            c.closed().await
        }
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
            // Registered once it answers (else the second could register first, and be the
            // one replaced).
            first.send_msg("b", "1", "hi").await;
            first.recv().await;
            let _second = server.connect("a", "p").await;
            first.closed().await
        }
        CloseCode::BadToken => {
            let mut config = secret_config(SECRET);
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
