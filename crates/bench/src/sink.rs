//! `push-sink`: a webhook receiver for the benchmarks: answers every POST with 200 (and, as a
//! before-send hook, `{"action":"allow"}`) and counts the push notifications it received;
//! prints how many a second it took once `duration` has passed since the first POST.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

pub(crate) async fn push_sink(
    listen: std::net::SocketAddr,
    duration: Duration,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let received = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::OnceLock::<Instant>::new());
    println!(
        "scenario: push-sink listening on {}",
        listener.local_addr()?
    );
    let (count, posts, started) = (received.clone(), batches.clone(), first.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (count, posts, started) = (count.clone(), posts.clone(), started.clone());
            tokio::spawn(async move {
                // Requests one after another on the connection (keep-alive), as a web
                // framework serves them.
                let mut raw = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let Some(end) = request_end(&raw) else {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => raw.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    started.get_or_init(Instant::now);
                    let body = String::from_utf8_lossy(&raw[..end]);
                    count.fetch_add(
                        body.matches("\"receiver\"").count() as u64,
                        Ordering::Relaxed,
                    );
                    posts.fetch_add(1, Ordering::Relaxed);
                    raw.drain(..end);
                    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Content-Length: 18\r\n\r\n{\"action\":\"allow\"}";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(at) = first.get()
            && at.elapsed() >= duration
        {
            break;
        }
    }
    let took = first
        .get()
        .map_or(duration, |at| at.elapsed())
        .as_secs_f64();
    let n = received.load(Ordering::Relaxed);
    println!(
        "notifications: {n} in {took:.1} s ({:.0}/s), {} POSTs",
        n as f64 / took,
        batches.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Where the first complete request in `raw` ends (head and `Content-Length` body).
fn request_end(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let end = head_end + 4 + length;
    (raw.len() >= end).then_some(end)
}
