//! The Rust client SDK and `natter chat`, against the real server.

mod common;

use std::{process::Stdio, time::Duration};

use common::{start, test_config};
use natter_client::{Client, Config, Page};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn ws_base(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}")
}

/// `natter chat` as `user` to `to` against `server`, with its stdin and stdout piped.
fn natter_chat(server: &str, user: &str, to: &str, more: &[&str]) -> tokio::process::Child {
    let args = ["chat", "--server", server, "--user", user, "--to", to];
    tokio::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(args.iter().chain(more))
        .env_remove("NATTER_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn next_within(c: &mut Client) -> natter_client::Msg {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a message within 10 s")
        .expect("client still open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_sends_with_acks_and_receives() {
    let server = start(test_config()).await;
    let mut alice = Client::connect(Config::new(&ws_base(server.addr), "alice", "sdk"))
        .await
        .unwrap();
    let mut bob = Client::connect(Config::new(&ws_base(server.addr), "bob", "sdk"))
        .await
        .unwrap();
    for i in 1..=3 {
        let ack = alice.send("bob", &format!("m{i}")).await.unwrap();
        assert_eq!((ack.seq, ack.send_seq), (i, i));
    }
    for i in 1..=3 {
        let m = next_within(&mut bob).await;
        assert_eq!((m.seq, m.content), (i, format!("m{i}")));
    }
    // A refusal comes back as an error.
    let err = alice.send("", "nobody").await.unwrap_err();
    assert!(err.to_string().contains("missing_receiver"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_lists_conversations_pages_history_and_changes_entries() {
    let server = start(test_config()).await;
    let base = ws_base(server.addr);
    let mut alice = Client::connect(Config::new(&base, "alice", "sdk"))
        .await
        .unwrap();
    let mut bob = Client::connect(Config::new(&base, "bob", "sdk"))
        .await
        .unwrap();
    for i in 1..=3 {
        alice.send("bob", &format!("m{i}")).await.unwrap();
    }
    // A later millisecond: the list orders by the last entry's time.
    tokio::time::sleep(Duration::from_millis(5)).await;
    bob.send("carol", "elsewhere").await.unwrap();
    let list = bob.conversations(50, None).await.unwrap();
    let ids: Vec<&str> = list
        .conversations
        .iter()
        .map(|c| c.conv_id.as_str())
        .collect();
    assert_eq!(ids, ["d:bob:carol", "d:alice:bob"]);
    let with_alice = &list.conversations[1];
    assert_eq!(
        (with_alice.unread, with_alice.peer.as_deref()),
        (3, Some("alice"))
    );
    assert_eq!(with_alice.last.as_ref().unwrap().preview, "m3");
    let page = bob.history("d:alice:bob", Page::Latest, 2).await.unwrap();
    let seqs: Vec<i64> = page.messages.iter().map(|m| m.conv_seq).collect();
    assert_eq!((seqs, page.has_more), (vec![2, 3], true));
    let page = bob
        .history("d:alice:bob", Page::Before(2), 2)
        .await
        .unwrap();
    assert_eq!(page.messages[0].content, "m1");
    assert_eq!(bob.mark_read("d:alice:bob", 3).await.unwrap(), 3);
    assert_eq!(
        bob.conversations(1, None)
            .await
            .unwrap()
            .conversations
            .len(),
        1
    );

    for i in 1..=3 {
        assert_eq!(next_within(&mut bob).await.content, format!("m{i}"));
    }
    // The read position reached bob's own device too.
    assert_eq!(next_within(&mut bob).await.msg_type, 12);
    alice.typing("bob").await.unwrap();
    assert_eq!(next_within(&mut bob).await.msg_type, natter_client::TYPING);
    alice.recall("bob", 1).await.unwrap();
    alice.edit("bob", 2, "fixed").await.unwrap();
    assert_eq!(next_within(&mut bob).await.msg_type, 25);
    assert_eq!(next_within(&mut bob).await.msg_type, 26);
    let page = bob.history("d:alice:bob", Page::After(0), 3).await.unwrap();
    let contents: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["", "fixed", "m3"]);
    // Bob cannot recall alice's message.
    let err = bob.recall("alice", 3).await.unwrap_err();
    assert!(err.to_string().contains("not_editable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natter_chat_shows_the_conversation_only_and_changes_in_words() {
    let server = start(test_config()).await;
    let base = ws_base(server.addr);
    let mut alice = Client::connect(Config::new(&base, "alice", "sdk"))
        .await
        .unwrap();
    for i in 1..=4 {
        alice.send("bob", &format!("m{i}")).await.unwrap();
    }
    alice.send("carol", "not for this chat").await.unwrap();
    let mut child = natter_chat(&base, "bob", "alice", &["--history", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("natter chat still running")
    };
    assert_eq!(next_line().await, "(earlier messages: /more)");
    assert_eq!(next_line().await, "#3 alice: m3");
    assert_eq!(next_line().await, "#4 alice: m4");
    stdin.write_all(b"/more\n").await.unwrap();
    // A full page: there may be more.
    assert_eq!(next_line().await, "(earlier messages: /more)");
    assert_eq!(next_line().await, "#1 alice: m1");
    assert_eq!(next_line().await, "#2 alice: m2");
    alice.recall("bob", 4).await.unwrap();
    assert_eq!(next_line().await, "#5 alice recalled #4");
    stdin.write_all(b"hello\n").await.unwrap();
    assert!(next_line().await.starts_with("sent "));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_refreshes_its_token_on_the_open_connection() {
    let config = common::secret_config("client-test-secret-of-32-bytes!!");
    let server = start(config.clone()).await;
    let token = common::mint(&config, "alice", None, Duration::from_secs(60));
    let mut alice =
        Client::connect(Config::new(&ws_base(server.addr), "alice", "sdk").token(token))
            .await
            .unwrap();
    let fresh = common::mint(&config, "alice", None, Duration::from_secs(3600));
    alice.refresh_token(&fresh).await.unwrap();
    let other = common::mint(&config, "bob", None, Duration::from_secs(3600));
    let err = alice.refresh_token(&other).await.unwrap_err();
    assert!(
        err.to_string().contains("bad_token: token_user_mismatch"),
        "{err}"
    );
    // The connection goes on.
    alice.send("alice", "still here").await.unwrap();
}

/// Revoked while connected: the client asks its token source for a new token, reconnects, and
/// what it was sending goes through; the API calls use the new token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_gets_a_new_token_from_its_source_after_a_revocation() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    const KEY: &str = "client-test-service-key-of-32-by";
    let mut config = common::secret_config("client-test-secret-of-32-bytes!!");
    config.service.key = KEY.into();
    let server = start(config.clone()).await;
    let now = natter::clock::now_secs();
    // Issued a minute ago: covered by a revocation of now.
    let old = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "iat": now - 60, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(config.auth.secret.as_bytes()),
    )
    .unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let (counter, minting) = (asked.clone(), config.clone());
    let mut alice = Client::connect(
        Config::new(&ws_base(server.addr), "alice", "sdk")
            .token(old)
            .token_source(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                let token = common::mint(&minting, "alice", None, Duration::from_secs(3600));
                Box::pin(async move { Ok(token) })
            }),
    )
    .await
    .unwrap();
    alice.send("alice", "before").await.unwrap();
    assert_eq!(asked.load(Ordering::Relaxed), 0, "a token was given");

    let (status, body) = common::http_request_with(
        server.addr,
        "POST",
        "/api/v1/users/alice/revoke",
        &[("X-Api-Key", KEY)],
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Closed with 4002: the client asks for a new token.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while asked.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source was never asked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ack = tokio::time::timeout(Duration::from_secs(10), alice.send("alice", "after"))
        .await
        .expect("sent within 10 s")
        .unwrap();
    assert!(ack.seq > 0);
    // The API takes the new token as well.
    let list = alice.conversations(10, None).await.unwrap();
    assert_eq!(list.conversations.len(), 1);
}

/// With a token source, the client renews its token on the open connection before it expires:
/// one connection outlives several two-second tokens. (Real time: the tokens' times are the
/// wall clock's, and a paused clock would run ahead of the frames on their way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_renews_its_token_before_it_expires() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let mut config = common::secret_config("client-test-secret-of-32-bytes!!");
    config.auth.leeway = Duration::ZERO;
    let server = start(config.clone()).await;
    let asked = Arc::new(AtomicUsize::new(0));
    let (counter, minting) = (asked.clone(), config.clone());
    let mut alice = Client::connect(
        Config::new(&ws_base(server.addr), "alice", "sdk").token_source(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            let token = common::mint(&minting, "alice", None, Duration::from_secs(2));
            Box::pin(async move { Ok(token) })
        }),
    )
    .await
    .unwrap();
    // Five seconds: more than two tokens' lives.
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.send("alice", "tick").await.unwrap();
    }
    assert!(
        asked.load(Ordering::Relaxed) >= 3,
        "renewed before each expiry"
    );
    assert_eq!(server.metric("natter_connections_opened_total").await, 1.0);
    assert_eq!(
        server
            .metric(r#"natter_disconnects_total{reason="bad_token"}"#)
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_reconnects_after_a_restart_and_fills_the_gap() {
    let config = test_config();
    let mut server = start(config.clone()).await;
    let addr = server.addr;
    let mut bob = Client::connect(Config::new(&ws_base(addr), "bob", "sdk"))
        .await
        .unwrap();
    let mut alice = Client::connect(Config::new(&ws_base(addr), "alice", "sdk"))
        .await
        .unwrap();
    alice.send("bob", "before").await.unwrap();
    assert_eq!(next_within(&mut bob).await.content, "before");

    // The server goes away (1001) and comes back on the same address and database.
    server.shutdown();
    server.task.await.unwrap().unwrap();
    let mut again = config.clone();
    again.server.listen = addr;
    let _server = start(again).await;

    // Alice's send waits for her reconnection; Bob was offline when it was stored and gets it
    // by resync, once.
    let ack = alice.send("bob", "while you were away").await.unwrap();
    assert_eq!(ack.seq, 2);
    let m = next_within(&mut bob).await;
    assert_eq!((m.seq, m.content.as_str()), (2, "while you were away"));
    alice.send("bob", "after").await.unwrap();
    assert_eq!(next_within(&mut bob).await.content, "after");
    let extra = tokio::time::timeout(Duration::from_millis(300), bob.next()).await;
    assert!(extra.is_err(), "no duplicate: {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natter_chat_once_sends_stdin_lines() {
    let server = start(test_config()).await;
    let mut bob = Client::connect(Config::new(&ws_base(server.addr), "bob", "sdk"))
        .await
        .unwrap();
    let mut child = natter_chat(&ws_base(server.addr), "alice", "bob", &["--once"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hi bob\nsecond line\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let acks: Vec<&str> = stdout.lines().filter(|l| l.starts_with("sent ")).collect();
    assert_eq!(acks.len(), 2, "{stdout}");
    assert!(acks[1].ends_with("seq 2"), "{stdout}");
    assert_eq!(next_within(&mut bob).await.content, "hi bob");
    assert_eq!(next_within(&mut bob).await.content, "second line");
}

/// A TCP relay in front of the server that can swallow the server's replies and cut every
/// connection it carries, as a flaky mobile network does.
struct Relay {
    addr: std::net::SocketAddr,
    /// While set, what the server sends is read and dropped.
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The connections carried so far (their copy tasks).
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(server: std::net::SocketAddr) -> Relay {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let swallow = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (s, l) = (swallow.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(server).await.unwrap();
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = upstream.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
                });
                let swallow = s.clone();
                let down = tokio::spawn(async move {
                    use std::sync::atomic::Ordering;
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = server_rx.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !swallow.load(Ordering::Acquire)
                            && client_tx.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
                let mut links = l.lock().unwrap();
                links.push(up);
                links.push(down);
            }
        });
        Relay {
            addr,
            swallow,
            links,
        }
    }

    fn swallow(&self, on: bool) {
        self.swallow.store(on, std::sync::atomic::Ordering::Release);
    }

    /// Drops every connection carried so far.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

/// A user's inbox `seq` as the server has it.
async fn stored_seq(server: &common::TestServer, user: &str) -> i64 {
    let (_, body) = server.get(&format!("/api/v1/seq?user_id={user}")).await;
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["seq"]
        .as_i64()
        .unwrap()
}

/// The receiver is offline until the sender's ack; the sender's connection is cut after the
/// server stored its message and before the ack reached it. The SDK resends with the same
/// local_id on its new connection, gets the original's ack, and the receiver, connecting later,
/// gets every message once, by resync alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_lost_with_its_connection_is_recovered_and_nothing_is_stored_twice() {
    let server = start(test_config()).await;
    let relay = Relay::start(server.addr).await;
    let mut alice = Client::connect(Config::new(&ws_base(relay.addr), "alice", "sdk"))
        .await
        .unwrap();
    assert_eq!(alice.send("bob", "first").await.unwrap().seq, 1);

    // The second message is stored, but its ack never reaches alice before the cut.
    relay.swallow(true);
    let send = tokio::spawn(async move {
        let ack = alice.send("bob", "second").await;
        (alice, ack)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stored_seq(&server, "bob").await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!send.is_finished(), "the ack got through");
    relay.cut();
    relay.swallow(false);

    let (mut alice, ack) = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("the SDK resent after reconnecting")
        .unwrap();
    let ack = ack.unwrap();
    assert_eq!(ack.seq, 2, "the original's ack, not a second copy");
    assert_eq!(stored_seq(&server, "bob").await, 2, "stored once");

    // Bob comes online only now: resync gives him both, once, then live delivery goes on.
    let mut bob = Client::connect(Config::new(&ws_base(server.addr), "bob", "sdk"))
        .await
        .unwrap();
    for (seq, content) in [(1, "first"), (2, "second")] {
        let m = next_within(&mut bob).await;
        assert_eq!((m.seq, m.content.as_str()), (seq, content));
    }
    alice.send("bob", "third").await.unwrap();
    let m = next_within(&mut bob).await;
    assert_eq!((m.seq, m.content.as_str()), (3, "third"));
}
