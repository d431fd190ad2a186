//! `convs`: what a phone asks when the app opens, against a user with a long past. One user
//! (`owner-<run>`) has `conversations` one-to-one conversations holding `history` messages
//! between them (each peer sends its share, `window` unacknowledged at a time, `seeders` peers
//! at once). Then, on one keep-alive HTTP connection, `requests` times each: the chat list's
//! first page (`GET /api/v1/conversations?limit=50`) and the last 50 messages of one
//! conversation (`GET /api/v1/conversations/{id}/messages?limit=50`, a different conversation
//! each time, among the first [`MEASURED`], which hold at least [`MEASURED_LEN`] messages
//! whatever the history, so every page is a full one). Reported: the seeding rate and each
//! request's latency (p50, p99, max). Run it with `limits.http.per_second: 0` on the server:
//! the requests are far over the default rate.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    message::{is_ack, run_tag},
    net::Net,
};

/// Conversations whose last page is asked for.
const MEASURED: usize = 20;
/// Messages each of them holds at least.
const MEASURED_LEN: usize = 60;

pub(crate) struct ConvsConfig {
    pub(crate) conversations: usize,
    pub(crate) history: usize,
    pub(crate) requests: usize,
    pub(crate) seeders: usize,
    pub(crate) window: usize,
}

pub(crate) async fn convs(net: &Net, cfg: ConvsConfig) -> anyhow::Result<()> {
    let owner = format!("owner-{}", run_tag());
    let n = cfg.conversations.max(MEASURED + 1);
    let per_peer = cfg.history.div_ceil(n);
    // The measured conversations hold a full page or more; the others share the rest.
    let measured_len = per_peer.max(MEASURED_LEN);
    let other_len = cfg
        .history
        .saturating_sub(MEASURED * measured_len)
        .div_ceil(n - MEASURED);
    let share = |p: usize| {
        if p < MEASURED {
            measured_len
        } else {
            other_len
        }
    };
    let started = Instant::now();
    let mut peers = (0..n).peekable();
    while peers.peek().is_some() {
        let wave: Vec<usize> = peers.by_ref().take(cfg.seeders.max(1)).collect();
        let mut tasks = Vec::new();
        for p in wave {
            let ws = net
                .connect(p, &format!("peer{p}-{}", run_tag()), "seed")
                .await?;
            let (to, window) = (owner.clone(), cfg.window.max(1));
            tasks.push(tokio::spawn(seed(ws, to, share(p), window)));
        }
        for t in tasks {
            t.await??;
        }
    }
    let seeded = started.elapsed();
    let total: usize = (0..n).map(share).sum();
    println!(
        "scenario: convs conversations={} history={total} requests={}",
        n, cfg.requests
    );
    println!(
        "seeded: {total} messages in {:.1} s ({:.0} msg/s)",
        seeded.as_secs_f64(),
        total as f64 / seeded.as_secs_f64()
    );
    // Let the store settle (the SQLite store moves its log into its main file).
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut http = KeepAlive::open(net.server).await?;
    let list_path = format!("/api/v1/conversations?limit=50&user_id={owner}");
    let (status, body) = http.get(&list_path).await?;
    if status != 200 || !body.contains("\"conversations\"") {
        bail!("the chat list answered {status}: {body:.200}");
    }
    let ids: Vec<String> = (0..MEASURED)
        .map(|p| direct_id(&owner, &format!("peer{p}-{}", run_tag())))
        .collect();
    let mut list = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut page = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..cfg.requests {
        let at = Instant::now();
        let (status, _) = http.get(&list_path).await?;
        list.record(at.elapsed().as_micros().max(1) as u64)?;
        anyhow::ensure!(status == 200, "the chat list answered {status}");
        let conv = &ids[(i * 7919) % ids.len()];
        let path = format!("/api/v1/conversations/{conv}/messages?limit=50&user_id={owner}");
        let at = Instant::now();
        let (status, body) = http.get(&path).await?;
        page.record(at.elapsed().as_micros().max(1) as u64)?;
        anyhow::ensure!(status == 200, "history answered {status}: {body:.200}");
        let got = body.matches("\"conv_seq\"").count();
        anyhow::ensure!(got == 50, "a history page of {got} messages, 50 expected");
    }
    for (what, h) in [("chat list, first 50", &list), ("last 50 messages", &page)] {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{what} ms: p50 {:.2} p99 {:.2} max {:.2} (n={})",
            ms(0.5),
            ms(0.99),
            h.max() as f64 / 1000.0,
            h.len()
        );
    }
    Ok(())
}

/// Sends `count` messages to `to`, at most `window` unacknowledged, and waits for every ack.
async fn seed(
    mut ws: crate::net::Ws,
    to: String,
    count: usize,
    window: usize,
) -> anyhow::Result<()> {
    let (mut sent, mut acked) = (0, 0);
    while acked < count {
        while sent < count && sent - acked < window {
            sent += 1;
            let frame = format!(
                r#"{{"receiver_id":"{to}","local_id":"{}-{sent}","content":"message {sent} of the conversation's past"}}"#,
                run_tag()
            );
            ws.send(Message::text(frame)).await?;
        }
        match ws.next().await {
            Some(Ok(Message::Text(t))) if is_ack(&t) => {
                anyhow::ensure!(!t.contains("\"content_type\":2"), "refused: {t}");
                acked += 1;
            }
            Some(Ok(_)) => {}
            other => bail!("a seeding connection ended: {other:?}"),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// The conversation id of users `a` and `b` (ids without `%` or `:`; see natter-protocol).
fn direct_id(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("d:{a}:{b}")
}

/// One HTTP/1.1 connection kept open across requests.
struct KeepAlive {
    stream: BufReader<TcpStream>,
}

impl KeepAlive {
    async fn open(server: std::net::SocketAddr) -> anyhow::Result<KeepAlive> {
        let tcp = TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        Ok(KeepAlive {
            stream: BufReader::new(tcp),
        })
    }

    /// A GET; the status and the body (responses carry a Content-Length).
    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .context("no status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
