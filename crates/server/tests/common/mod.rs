//! Test harness: starts the real server on an ephemeral port and talks to it over real sockets.
#![allow(dead_code)]

pub mod cluster;
pub mod groups;
pub mod services;
pub mod sqlite;

#[allow(unused_imports)] // Not every test file uses a service.
pub use services::*;

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use natter::{Config, Server};
use natter_protocol::Msg;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, protocol::frame::coding::CloseCode as WsCloseCode},
};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// A fresh directory for one test's files, under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("natter-test-{tag}-{}", unique()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config listening on an ephemeral loopback port, with its own SQLite directory.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.path = temp_dir("db").to_string_lossy().into_owned();
    config
}

pub async fn start(config: Config) -> TestServer {
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        stop: Some(stop),
        task,
    }
}

impl TestServer {
    pub fn url(&self, user: &str, platform: &str) -> String {
        format!("ws://{}/ws/{user}/conn/{platform}", self.addr)
    }

    pub async fn connect(&self, user: &str, platform: &str) -> Client {
        let (ws, _) = connect_async(self.url(user, platform))
            .await
            .expect("connect");
        Client { ws }
    }

    /// Starts the graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A plain HTTP/1.1 GET; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).await
    }

    /// The value of one metric series (name with labels, exactly as rendered); a series the
    /// server does not render fails the test.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metric_if_rendered(series)
            .await
            .unwrap_or_else(|| panic!("/metrics has no series {series}"))
    }

    /// The value of one metric series, or `None` while the server does not render it (a
    /// labelled counter appears at its first increment).
    pub async fn metric_if_rendered(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None).await
}

/// An HTTP/1.1 request with an optional JSON body; returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    http_request_with(addr, method, path, &[], body).await
}

/// An HTTP/1.1 request with extra headers and an optional JSON body; returns (status, body).
pub async fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    http_request_text(addr, method, path, headers, &body).await
}

/// An HTTP/1.1 request whose body is `body` as it is (JSON or not); returns (status, body).
pub async fn http_request_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_exchange(addr, method, path, headers, body).await;
    (status, body)
}

/// An HTTP/1.1 request; returns (status, the answer's head in lower case, body).
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw next.
#[derive(Debug)]
pub enum Event {
    Msg(Msg),
    Closed(Option<u16>),
}

impl Client {
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_msg(&mut self, to: &str, local_id: &str, content: &str) {
        let json = serde_json::json!({"receiver_id": to, "local_id": local_id, "content": content});
        self.send_text(&json.to_string()).await;
    }

    /// The next message or close, skipping pings and pongs.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Event::Msg(serde_json::from_str(&t).expect("server sent a valid Msg"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Event::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                None => return Event::Closed(None),
                Some(Err(e)) => {
                    eprintln!("read error: {e}");
                    return Event::Closed(None);
                }
            }
        }
    }

    pub async fn recv(&mut self) -> Msg {
        match self.next_event().await {
            Event::Msg(m) => m,
            Event::Closed(code) => {
                panic!("connection closed ({code:?}) while waiting for a message")
            }
        }
    }

    /// Waits for the server's close frame and returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Event::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }

    /// Asserts nothing but pings arrives for `d`.
    pub async fn assert_silent(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: WsCloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// Turns on server logs for a test when RUST_LOG is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A WebSocket client that completes the handshake by hand and then never reads or writes:
/// a device whose app froze. Returns the raw socket.
pub async fn raw_silent_client(addr: SocketAddr, user: &str, platform: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws/{user}/conn/{platform} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads server frames off a raw socket until a close frame, and returns its code.
pub async fn raw_read_close_code(stream: &mut TcpStream) -> u16 {
    loop {
        let mut header = [0u8; 2];
        stream
            .read_exact(&mut header)
            .await
            .expect("a frame header");
        let opcode = header[0] & 0x0f;
        let len = match header[1] & 0x7f {
            126 => stream.read_u16().await.unwrap() as usize,
            127 => stream.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        if opcode == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// Connects with extra request headers; returns the client or the HTTP refusal (status, body).
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        Client,
        tokio_tungstenite::tungstenite::http::Response<Option<Vec<u8>>>,
    ),
    (u16, String),
> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut req = url.into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match connect_async(req).await {
        Ok((ws, resp)) => Ok((Client { ws }, resp.map(|_| None))),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// A config in token mode with HS256 secret `secret`.
pub fn secret_config(secret: &str) -> Config {
    let mut config = test_config();
    config.auth.secret = secret.to_string();
    config
}

pub fn mint(config: &Config, user: &str, platform: Option<&str>, ttl: Duration) -> String {
    natter::auth::Auth::new(&config.auth)
        .unwrap()
        .mint(user, platform, ttl)
        .unwrap()
}

impl TestServer {
    /// An HTTP/1.1 request with an optional JSON body; returns (status, body).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        http_request(self.addr, method, path, body).await
    }
}

/// Runs each named `async fn case(backend: Backend)` of the test file on SQLite and on
/// PostgreSQL, as `sqlite::case` and `postgres::case`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}

/// `pid_counter_millis`: unique across tests, test processes and runs.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!(
        "{}_{}_{millis}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
