//! Connecting to the server: WebSocket clients from many source addresses, plain HTTP,
//! `/metrics`, and the server's RSS.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::pairs::DRAIN;

pub(crate) type Ws = WebSocketStream<TcpStream>;

pub(crate) struct Net {
    pub(crate) server: SocketAddr,
    pub(crate) sources: u8,
    /// Where receiving devices connect (the same server unless a cluster run says otherwise).
    pub(crate) receivers: SocketAddr,
}

impl Net {
    /// Connects as `user` on `platform`, from source address number `n`.
    pub(crate) async fn connect(&self, n: usize, user: &str, platform: &str) -> anyhow::Result<Ws> {
        self.connect_with_token(n, user, platform, None).await
    }

    /// A receiving device's connection (to `--receivers-server` when given).
    pub(crate) async fn connect_receiver(
        &self,
        n: usize,
        user: &str,
        platform: &str,
    ) -> anyhow::Result<Ws> {
        let to = Net {
            server: self.receivers,
            sources: self.sources,
            receivers: self.receivers,
        };
        to.connect(n, user, platform).await
    }

    pub(crate) async fn connect_with_token(
        &self,
        n: usize,
        user: &str,
        platform: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Ws> {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (n % self.sources as usize) as u8);
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = socket
            .connect(self.server)
            .await
            .with_context(|| format!("connecting from {source} to {}", self.server))?;
        tcp.set_nodelay(true)?;
        let mut url = format!("ws://{}/ws/{user}/conn/{platform}", self.server);
        if let Some(token) = token {
            url.push_str("?token=");
            url.push_str(token);
        }
        // Small client buffers: the bench holds tens of thousands of connections.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = client_async_with_config(url, tcp, Some(config)).await?;
        Ok(ws)
    }
}

pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Reads a never-reading receiver's backlog until its close frame; returns the close code.
pub(crate) async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(DRAIN, ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A plain HTTP request to the server; returns the status and body.
pub(crate) async fn http(
    server: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(server).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// One value from the server's `/metrics`.
pub(crate) async fn metric(server: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = http(server, "GET", "/metrics", "").await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}
