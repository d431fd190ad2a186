//! The Rust client SDK and `natter chat`, against the real server.

mod common;

use std::{process::Stdio, time::Duration};

use common::{start, test_config};
use natter_client::{Client, Config};
use tokio::io::AsyncWriteExt;

fn ws_base(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}")
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
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_natter"))
        .args([
            "chat",
            "--server",
            &ws_base(server.addr),
            "--user",
            "alice",
            "--to",
            "bob",
            "--once",
        ])
        .env_remove("NATTER_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
