//! Every HTTP error natter-protocol defines is produced by the real server, with its status
//! (error reasons and close codes: codes.rs). The tables come from natter-protocol, and each
//! code is provoked by a `match` without a catch-all, so a new code without a way to provoke it
//! does not compile, and one the server no longer produces fails here.

mod common;

use std::time::Duration;

use common::{
    Backend, TestServer, connect_with, groups::create_group, http_request_with, mint,
    secret_config, start, test_config,
};
use natter::{Config, clock::now_secs, config::StorageBackend};
use natter_protocol::HttpError;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "codes-test-secret-of-32-bytes!!!";
const HOUR: Duration = Duration::from_secs(3600);

/// An HTTP request; returns the status and the `error` of the JSON body.
const KEY: &str = "codes-http-service-key-of-32-bytes";

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
        HttpError::BodyTooLarge => {
            let server = start(test_config()).await;
            // A head declaring a body larger than the route takes: refused before it is sent.
            raw_request(
                &server,
                b"PATCH /api/v1/groups/g_x?user_id=a HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Length: 20000\r\n\r\n",
            )
            .await
        }
        HttpError::BodyTimeout => {
            let mut config = test_config();
            config.limits.http.body_timeout = Duration::from_millis(200);
            let server = start(config).await;
            // Half a body, then nothing.
            raw_request(
                &server,
                b"PATCH /api/v1/groups/g_x?user_id=a HTTP/1.1\r\nHost: localhost\r\n\
                  Content-Length: 100\r\n\r\n{\"name\": \"",
            )
            .await
        }
        HttpError::RateLimited => {
            let mut config = test_config();
            config.limits.http.per_second = 1.0;
            config.limits.http.burst = 2;
            let server = start(config).await;
            for _ in 0..2 {
                let (status, _) = call(&server, "GET", "/api/v1/seq?user_id=a", &[], None).await;
                assert_eq!(status, 200);
            }
            call(&server, "GET", "/api/v1/seq?user_id=a", &[], None).await
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
        HttpError::TokenNotYetValid => {
            let server = start(token_config()).await;
            let claims =
                json!({"sub": "alice", "exp": now_secs() + 7200, "nbf": now_secs() + 3600});
            let early = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            upgrade(&format!("{}?token={early}", server.url("alice", "p")), &[]).await
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
        HttpError::TokenRevoked => {
            let mut config = token_config();
            config.service.key = KEY.into();
            let token = mint(&config, "alice", None, HOUR);
            let server = start(config).await;
            let headers = [("X-Api-Key", KEY)];
            // Issued in this second: revoked by a revocation of the next one.
            let before = serde_json::json!({"before": now_secs() + 1});
            let path = "/api/v1/users/alice/revoke";
            call(&server, "POST", path, &headers, Some(before)).await;
            upgrade(&format!("{}?token={token}", server.url("alice", "p")), &[]).await
        }
        HttpError::OriginForbidden => {
            let server = start(test_config()).await;
            let origin = [("origin", "https://evil.example")];
            upgrade(&server.url("alice", "p"), &origin).await
        }
        HttpError::DevelopmentBehindProxy => {
            let server = start(test_config()).await;
            let proxied = [("x-forwarded-for", "203.0.113.7")];
            upgrade(&server.url("alice", "p"), &proxied).await
        }
        HttpError::NotAMember => {
            let server = start(test_config()).await;
            let g = create_group(&server, "alice", &[]).await;
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
            let g = create_group(&server, "alice", &["bob"]).await;
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
        HttpError::NotInvited => {
            let server = start(test_config()).await;
            let g = create_group(&server, "a", &[]).await;
            let path = format!("/api/v1/invites/{g}/accept?user_id=b");
            call(&server, "POST", &path, &[], None).await
        }
        HttpError::ServiceKeyInvalid => {
            let mut config = test_config();
            config.service.key = KEY.into();
            let server = start(config).await;
            let headers = [("X-Api-Key", "not-the-key")];
            call(&server, "GET", "/api/v1/users/a/devices", &headers, None).await
        }
        HttpError::ServiceDisabled => {
            let server = start(test_config()).await;
            call(
                &server,
                "GET",
                "/api/v1/users/a/devices",
                &[("X-Api-Key", KEY)],
                None,
            )
            .await
        }
        HttpError::MessageRefused => {
            let mut config = test_config();
            config.service.key = KEY.into();
            let server = start(config).await;
            let body = Some(json!({"send_id": "a", "receiver_id": "b", "msg_type": 24}));
            call(
                &server,
                "POST",
                "/api/v1/messages",
                &[("X-Api-Key", KEY)],
                body,
            )
            .await
        }
        HttpError::ConversationNotFound => {
            let server = start(test_config()).await;
            let path = "/api/v1/conversations/d:b:c/messages?user_id=a";
            call(&server, "GET", path, &[], None).await
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
            create_group(&server, "a", &[]).await;
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

/// Sends `request` as it is, and reads the answer until the server closes or 5 s pass; returns
/// its status and `error`.
async fn raw_request(server: &TestServer, request: &[u8]) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    read_answer(&mut tcp).await
}

async fn read_answer(tcp: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let error = serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, error)
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
    let answer = read_answer(&mut tcp).await;
    drop(held);
    answer
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
