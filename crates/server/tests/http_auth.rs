//! The HTTP API's authentication, on every route, with tokens of each supported algorithm
//! (HS256 with a secret, RS256 and ES256 with a public key file): no token, `?user_id=` (ignored
//! once tokens are required), a forged token, an expired one, a malformed one, another user's,
//! and a platform-bound one. A refused request changes nothing.

#[macro_use]
mod common;

use common::{TestServer, connect_with, http_request_with, start, test_config};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use natter::{Config, clock::now_secs, config::TokenAlgorithm};
use serde_json::{Value, json};

const SECRET: &str = "http-auth-test-secret-32-bytes!!";

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug, Clone, Copy)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    fn config(self) -> Config {
        let mut config = test_config();
        match self {
            Alg::Hs256 => config.auth.secret = SECRET.into(),
            Alg::Rs256 => {
                config.auth.algorithm = TokenAlgorithm::RS256;
                config.auth.public_key_file = key_path("rs256.pub.pem");
            }
            Alg::Es256 => {
                config.auth.algorithm = TokenAlgorithm::ES256;
                config.auth.public_key_file = key_path("es256.pub.pem");
            }
        }
        config
    }

    /// A token with these claims, signed with the server's key, or with another (`forged`).
    fn sign(self, claims: &Value, forged: bool) -> String {
        let pem = |name: &str| std::fs::read(key_path(name)).unwrap();
        let (algorithm, key) = match (self, forged) {
            (Alg::Hs256, false) => (
                Algorithm::HS256,
                EncodingKey::from_secret(SECRET.as_bytes()),
            ),
            (Alg::Hs256, true) => (
                Algorithm::HS256,
                EncodingKey::from_secret(b"another secret"),
            ),
            (Alg::Rs256, f) => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&pem(if f { "other-rs256.pem" } else { "rs256.pem" }))
                    .unwrap(),
            ),
            (Alg::Es256, f) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&pem(if f { "other-es256.pem" } else { "es256.pem" }))
                    .unwrap(),
            ),
        };
        jsonwebtoken::encode(&Header::new(algorithm), claims, &key).unwrap()
    }

    fn token(self, user: &str) -> String {
        self.sign(&json!({ "sub": user, "exp": now_secs() + 3600 }), false)
    }
}

/// Every route of the HTTP API: method, path (`{g}` is a group of alice's), body.
fn routes(g: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", "/api/v1/messages".into(), None),
        ("GET", "/api/v1/seq".into(), None),
        ("GET", "/api/v1/users/bob/online".into(), None),
        ("GET", "/api/v1/groups".into(), None),
        (
            "POST",
            "/api/v1/groups".into(),
            Some(json!({ "name": "x", "members": [] })),
        ),
        ("GET", format!("/api/v1/groups/{g}"), None),
        (
            "PATCH",
            format!("/api/v1/groups/{g}"),
            Some(json!({ "name": "renamed" })),
        ),
        (
            "POST",
            format!("/api/v1/groups/{g}/members"),
            Some(json!({ "members": ["dave"] })),
        ),
        (
            "PUT",
            format!("/api/v1/groups/{g}/members/carol/role"),
            Some(json!({ "role": "admin" })),
        ),
        ("DELETE", format!("/api/v1/groups/{g}/members/carol"), None),
        ("GET", format!("/api/v1/groups/{g}/messages"), None),
        ("DELETE", format!("/api/v1/groups/{g}"), None),
    ]
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (status, body) = http_request_with(server.addr, method, path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn with_query(path: &str, query: &str) -> String {
    format!("{path}?{query}")
}

async fn every_route_refuses_bad_credentials_and_accepts_good_ones(alg: Alg) {
    let server = start(alg.config()).await;
    let alice = alg.token("alice");
    let bob = alg.token("bob");

    // alice sends bob a message over WebSocket, and owns a group with carol in it.
    let url = format!("{}?token={alice}", server.url("alice", "phone"));
    let (mut ws, _) = connect_with(&url, &[]).await.unwrap();
    ws.send_msg("bob", "l1", "hello").await;
    assert_eq!(ws.recv().await.seq, 1, "acked");
    let (status, created) = call(
        &server,
        "POST",
        "/api/v1/groups",
        Some(&alice),
        Some(json!({ "name": "team", "members": ["carol"] })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let g = created["group"]["group_id"].as_str().unwrap().to_owned();

    let expired = alg.sign(&json!({ "sub": "alice", "exp": now_secs() - 3600 }), false);
    let forged = alg.sign(&json!({ "sub": "alice", "exp": now_secs() + 3600 }), true);
    let bad: [(&str, Option<&str>, &str, &str); 6] = [
        ("no token", None, "", "token_missing"),
        ("?user_id= only", None, "user_id=alice", "token_missing"),
        ("forged", Some(&forged), "", "token_bad_signature"),
        ("expired", Some(&expired), "", "token_expired"),
        ("malformed", Some("abc.def"), "", "token_malformed"),
        ("forged in ?token=", None, "", "token_bad_signature"),
    ];
    for (method, path, body) in routes(&g) {
        for (what, bearer, query, error) in bad {
            let path = match (what, query) {
                ("forged in ?token=", _) => with_query(&path, &format!("token={forged}")),
                (_, "") => path.clone(),
                (_, q) => with_query(&path, q),
            };
            let (status, reply) = call(&server, method, &path, bearer, body.clone()).await;
            assert_eq!(
                (status, reply["error"].as_str()),
                (401, Some(error)),
                "{alg:?} {method} {path} with {what}: {reply}"
            );
        }
    }
    // Nothing the refused requests asked for happened.
    let (status, group) = call(
        &server,
        "GET",
        &format!("/api/v1/groups/{g}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["group"]["name"], "team");
    let members: Vec<&str> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["alice", "carol"]);

    // Another user's token answers for that user, whatever ?user_id= says.
    let (status, seq) = call(
        &server,
        "GET",
        "/api/v1/seq?user_id=alice",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!((status, &seq), (200, &json!({ "seq": 1, "send_seq": 0 })));
    // alice sent the message and the group's "created" notice.
    let (status, seq) = call(&server, "GET", "/api/v1/seq", Some(&alice), None).await;
    assert_eq!((status, &seq), (200, &json!({ "seq": 0, "send_seq": 2 })));
    let (status, reply) = call(
        &server,
        "GET",
        &format!("/api/v1/groups/{g}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (403, Some("not_a_member"))
    );
    let (status, inbox) = call(
        &server,
        "GET",
        &format!("/api/v1/messages?token={bob}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        inbox["messages"][0]["content"], "hello",
        "?token= works too"
    );

    // A token bound to a platform is good on the API (which has no platform).
    let bound = alg.sign(
        &json!({ "sub": "bob", "exp": now_secs() + 3600, "platform": "phone" }),
        false,
    );
    let (status, _) = call(&server, "GET", "/api/v1/seq", Some(&bound), None).await;
    assert_eq!(status, 200);
    // Every route answers a good token (alice's, last the dissolve).
    for (method, path, body) in routes(&g) {
        let (status, reply) = call(&server, method, &path, Some(&alice), body).await;
        assert!(
            (200..300).contains(&status),
            "{alg:?} {method} {path}: {status} {reply}"
        );
    }
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256() {
    every_route_refuses_bad_credentials_and_accepts_good_ones(Alg::Hs256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256() {
    every_route_refuses_bad_credentials_and_accepts_good_ones(Alg::Rs256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256() {
    every_route_refuses_bad_credentials_and_accepts_good_ones(Alg::Es256).await;
}

/// The WebSocket upgrade checks the same tokens, and a platform-bound one binds there.
#[tokio::test]
async fn the_upgrade_takes_rs256_and_es256_tokens_and_their_platform_binding() {
    for alg in [Alg::Rs256, Alg::Es256] {
        let server = start(alg.config()).await;
        let bound = alg.sign(
            &json!({ "sub": "bob", "exp": now_secs() + 3600, "platform": "phone" }),
            false,
        );
        let on = |platform: &str| format!("{}?token={bound}", server.url("bob", platform));
        assert!(connect_with(&on("phone"), &[]).await.is_ok(), "{alg:?}");
        let (status, body) = connect_with(&on("desk"), &[]).await.err().unwrap();
        assert_eq!(status, 401);
        assert!(body.contains("token_platform_mismatch"), "{body}");
        let forged = alg.sign(&json!({ "sub": "bob", "exp": now_secs() + 60 }), true);
        let url = format!("{}?token={forged}", server.url("bob", "phone"));
        let (status, body) = connect_with(&url, &[]).await.err().unwrap();
        assert_eq!(status, 401);
        assert!(body.contains("token_bad_signature"), "{body}");
    }
}
