//! The `natter` binary: configuration errors name the key; the server starts and stops on signals.

mod common;

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn natter() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_natter"));
    let data = std::env::temp_dir().join(format!("natter-cli-data-{}", std::process::id()));
    cmd.env_remove("RUST_LOG")
        .env("NATTER__STORAGE__PATH", data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("natter-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn fails_naming(cmd: &mut Command, key: &str) {
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .expect("exits promptly")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(key),
        "stderr does not name `{key}`: {stderr}"
    );
}

#[tokio::test]
async fn invalid_config_file_names_the_key() {
    let bad_type = temp_file("bad-type.yaml", "heartbeat:\n  interval: often\n");
    fails_naming(
        natter().arg("serve").arg("--config").arg(&bad_type),
        "heartbeat.interval",
    )
    .await;

    let bad_combo = temp_file(
        "bad-combo.yaml",
        "heartbeat:\n  interval: 30s\n  timeout: 10s\n",
    );
    fails_naming(
        natter().args(["serve", "--config"]).arg(&bad_combo),
        "heartbeat.timeout",
    )
    .await;

    let typo = temp_file("typo.yaml", "limits:\n  max_mesage_size: 10\n");
    fails_naming(
        natter().args(["serve", "--config"]).arg(&typo),
        "max_mesage_size",
    )
    .await;
}

#[tokio::test]
async fn invalid_environment_variable_names_the_key() {
    fails_naming(
        natter().env("NATTER__LIMITS__OUTBOUND_QUEUE", "lots"),
        "limits.outbound_queue",
    )
    .await;
}

/// Starts the binary on an ephemeral port; returns the child and its address.
async fn spawn_server(envs: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let mut cmd = natter();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("no listening line");
    })
    .await
    .unwrap();
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

fn signal(child: &tokio::process::Child, sig: i32) {
    let pid = child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc_kill(pid, sig) };
}

#[tokio::test]
async fn serves_from_env_config_and_stops_on_sigterm() {
    let (mut child, addr) = spawn_server(&[("NATTER__HEARTBEAT__INTERVAL", "5s")]).await;
    let (status, _) = common::http_get(addr.parse().unwrap(), "/healthz").await;
    assert_eq!(status, 200);
    signal(&child, 15);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("stops within the shutdown timeout")
        .unwrap();
    assert!(status.success());
}

/// Acknowledged means durable: the server is killed (SIGKILL) at a random point while a sender
/// streams messages to an offline user; after a restart, every message acked before the kill
/// is there with the seq its ack carried, and the inbox has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_mid_stream() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::{connect_async, tungstenite::Message};
    const N: usize = 3000;
    let dir = common::temp_dir("crash");
    let path = dir.to_string_lossy().into_owned();
    // A stream as fast as the acks allow: over the default message rate, which this test is
    // not about.
    let envs = [
        ("NATTER__STORAGE__PATH", path.as_str()),
        ("NATTER__LIMITS__RATE__PER_SECOND", "0"),
    ];
    // Where to kill: after a random number of acks, printed so a failure can be replayed.
    let kill_after = std::env::var("NATTER_TEST_KILL_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as usize;
            1 + nanos % (N / 2)
        });
    eprintln!("killing after {kill_after} acks (NATTER_TEST_KILL_AFTER to replay)");

    let (mut child, addr) = spawn_server(&envs).await;
    let (sender, _) = connect_async(format!("ws://{addr}/ws/s/conn/p"))
        .await
        .unwrap();
    let (mut tx, mut rx) = sender.split();
    // The sender keeps writing while the acks come back.
    // The sender keeps writing while the acks come back, at most WINDOW ahead of them (a real
    // client's window: its acks must not overflow its own queue).
    const WINDOW: usize = 200;
    let acked_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn({
        let acked_count = acked_count.clone();
        async move {
            for i in 0..N {
                while i >= acked_count.load(std::sync::atomic::Ordering::Acquire) + WINDOW {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let m = format!(r#"{{"receiver_id":"offline","local_id":"{i}","content":"m{i}"}}"#);
                if tx.send(Message::text(m)).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut acked: Vec<(i64, String)> = Vec::new();
    while acked.len() < kill_after {
        let frame = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .expect("an ack within 10 s");
        match frame {
            Some(Ok(Message::Text(t))) => {
                let m: natter_protocol::Msg = serde_json::from_str(&t).unwrap();
                assert_eq!(m.msg_type, 24, "{t}");
                acked.push((m.seq, m.local_id));
                acked_count.store(acked.len(), std::sync::atomic::Ordering::Release);
            }
            Some(Ok(_)) => {}
            other => panic!("the sender's connection ended before the kill: {other:?}"),
        }
    }
    signal(&child, 9);
    child.wait().await.unwrap();
    writer.abort();

    let (mut child, addr) = spawn_server(&envs).await;
    let (mut device, _) = connect_async(format!("ws://{addr}/ws/offline/conn/p?since_seq=0"))
        .await
        .unwrap();
    let mut stored: Vec<(i64, String)> = Vec::new();
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_secs(2), device.next()).await
    {
        let m: natter_protocol::Msg = serde_json::from_str(&t).unwrap();
        stored.push((m.seq, m.local_id));
    }
    let seqs: Vec<i64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as i64).collect::<Vec<_>>(),
        "the inbox has no gap"
    );
    for (seq, local_id) in &acked {
        assert_eq!(
            stored.get(*seq as usize - 1),
            Some(&(*seq, local_id.clone())),
            "acked message {local_id} (seq {seq}) survived"
        );
    }
    signal(&child, 9);
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test]
async fn refuses_to_listen_publicly_without_a_secret() {
    fails_naming(
        natter().args(["serve", "--listen", "0.0.0.0:0"]),
        "auth.secret",
    )
    .await;
}

#[tokio::test]
async fn token_command_mints_a_token_the_server_accepts() {
    let out = natter()
        .args(["token", "alice", "--platform", "phone", "--ttl", "10m"])
        .env("NATTER__AUTH__SECRET", "cli-secret-of-at-least-32-bytes!")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut config = natter::Config::default();
    config.auth.secret = "cli-secret-of-at-least-32-bytes!".into();
    let auth = natter::auth::Auth::new(&config.auth).unwrap();
    let id = auth.verify(Some(&token), "alice", "phone").unwrap();
    let exp = id.expires_at.unwrap();
    let now = natter::clock::now_secs();
    assert!(
        exp > now + 500 && exp <= now + 600,
        "ttl 10m: exp {exp}, now {now}"
    );

    let no_secret = natter().args(["token", "alice"]).output().await.unwrap();
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("auth.secret"));
}

#[tokio::test]
async fn refuses_a_cluster_on_sqlite() {
    fails_naming(
        natter().env("NATTER__CLUSTER__ENABLED", "true"),
        "cluster.enabled",
    )
    .await;
}
