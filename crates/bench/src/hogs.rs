//! `hogs`: readers that ask for a large history and never read it, and what they cost the
//! server's memory. One user's inbox is filled with `messages` messages of `size` bytes; then
//! `readers` connections ask for all of it at once and read nothing: WebSocket replays from
//! `since_seq=0` (`--kind replay`, scenario b of the fair-share issue) or HTTP history pages,
//! eight asked at once on each connection (`--kind history`, scenario c). The server's RSS is
//! sampled before, while they hold (`hold` seconds) and for 30 s after they close.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{client_async, tungstenite::Message};

use crate::{
    message::run_tag,
    net::{Net, rss_kib},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    Replay,
    History,
}

pub(crate) struct HogsConfig {
    pub(crate) kind: Kind,
    pub(crate) readers: usize,
    pub(crate) messages: usize,
    pub(crate) size: usize,
    pub(crate) hold: Duration,
    pub(crate) pid: u32,
}

pub(crate) async fn hogs(net: &Net, cfg: HogsConfig) -> anyhow::Result<()> {
    let before_fill = rss_kib(cfg.pid)?;
    let victim = format!("hog-{}", run_tag());
    fill(net, &victim, cfg.messages, cfg.size).await?;
    // Let the store settle (the SQLite store moves the log into its main file).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(cfg.pid)?;

    let mut held = Vec::with_capacity(cfg.readers);
    for i in 0..cfg.readers {
        held.push(reader(net, i, &victim, cfg.kind).await?);
    }
    let started = Instant::now();
    let mut peak = idle;
    while started.elapsed() < cfg.hold {
        peak = peak.max(rss_kib(cfg.pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(held);
    let closed = Instant::now();
    let mut back_within_25 = None;
    let mut at = Vec::new();
    for second in 1..=30 {
        tokio::time::sleep_until((closed + Duration::from_secs(second)).into()).await;
        let rss = rss_kib(cfg.pid)?;
        if back_within_25.is_none() && rss as f64 <= idle as f64 * 1.25 {
            back_within_25 = Some(second);
        }
        if [1, 5, 10, 30].contains(&second) {
            at.push(format!("{}s {} MiB", second, rss / 1024));
        }
    }
    println!("scenario: hogs {:?}", cfg.kind);
    println!(
        "inbox: {} messages of {} bytes; readers: {} never reading, held {} s",
        cfg.messages,
        cfg.size,
        cfg.readers,
        cfg.hold.as_secs()
    );
    println!(
        "server RSS: {} MiB before the fill, idle {} MiB, peak {} MiB ({} MiB above idle)",
        before_fill / 1024,
        idle / 1024,
        peak / 1024,
        peak.saturating_sub(idle) / 1024
    );
    println!("after close: {}", at.join(", "));
    match back_within_25 {
        Some(s) => println!("back within 25% of idle: after {s} s"),
        None => println!("back within 25% of idle: not within 30 s"),
    }
    Ok(())
}

/// Sends `n` messages of `size` bytes to `victim`, eight unacknowledged at a time.
async fn fill(net: &Net, victim: &str, n: usize, size: usize) -> anyhow::Result<()> {
    let mut ws = net.connect(0, &format!("{victim}-sender"), "bench").await?;
    let content = "h".repeat(size);
    let (mut sent, mut acked) = (0, 0);
    while acked < n {
        while sent < n && sent - acked < 8 {
            let frame = serde_json::json!({
                "receiver_id": victim, "local_id": format!("h{sent}"), "content": content,
            });
            ws.send(Message::text(frame.to_string())).await?;
            sent += 1;
        }
        match ws.next().await.context("the sender's connection ended")?? {
            Message::Text(t) if t.contains("\"msg_type\":24") => {
                anyhow::ensure!(!t.contains("\"content_type\":2,"), "refused: {t}");
                acked += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One reader with a tiny receive window that never reads: a replay from 0, or eight history
/// pages asked at once.
async fn reader(net: &Net, n: usize, victim: &str, kind: Kind) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let tcp = socket.connect(net.server).await?;
    match kind {
        Kind::Replay => {
            let url = format!("ws://{}/ws/{victim}/conn/hog{n}?since_seq=0", net.server);
            let (ws, _) = client_async(url, tcp).await?;
            Ok(ws.into_inner())
        }
        Kind::History => {
            let mut tcp = tcp;
            let request = format!(
                "GET /api/v1/messages?user_id={victim}&limit=1000 HTTP/1.1\r\nHost: bench\r\n\r\n"
            );
            tcp.write_all(request.repeat(8).as_bytes()).await?;
            Ok(tcp)
        }
    }
}
