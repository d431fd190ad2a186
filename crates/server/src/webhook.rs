//! The webhooks' HTTP client (the push webhook, the before-send hook): POSTs signed JSON to the
//! app's backend at `http://host[:port]/path`, over connections it keeps open between calls
//! (HTTP/1.1 keep-alive, a few idle ones at most), and reads the answer whichever way it is
//! framed: `Content-Length`, `Transfer-Encoding: chunked` (what Node.js sends by default), or the
//! end of the connection.
//!
//! Signature: `X-Natter-Timestamp` (Unix seconds) and `X-Natter-Signature: v1=<hex>`, the
//! HMAC-SHA256 under the webhook's secret of `<timestamp>.<body>`; a receiver recomputes it and
//! refuses old timestamps (replays).
//!
//! Timeouts are the caller's: a call dropped half-way drops its connection with it.

use std::{
    io::{Error, ErrorKind},
    sync::Mutex,
};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::clock::{now_millis, now_secs};

/// Most bytes of an answer (headers and body) that are read; a longer one is an error.
const ANSWER_BYTES: usize = 64 * 1024;
/// Idle connections kept for later calls.
const IDLE: usize = 8;

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// One webhook: where it is, its secret, its idle connections.
#[derive(Debug)]
pub struct Webhook {
    /// `host[:port]` as the URL gives it (the Host header), the address to connect to, the path.
    host: String,
    address: String,
    path: String,
    secret: String,
    idle: Mutex<Vec<TcpStream>>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidData, what.into())
}

impl Webhook {
    /// The webhook at `url`, which must be `http://host[:port]/path` (the config checks it).
    pub fn new(url: &str, secret: &str) -> Webhook {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let address = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Webhook {
            host: host.to_owned(),
            address,
            path: path.to_owned(),
            secret: secret.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// POSTs `body`, signed; the answer's status and body. An idle connection the backend has
    /// closed meanwhile is replaced by a new one, once.
    pub async fn post(&self, body: &str) -> std::io::Result<(u16, String)> {
        let timestamp = now_secs();
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             X-Natter-Timestamp: {timestamp}\r\nX-Natter-Signature: {}\r\n\
             X-Natter-Sent-At: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len(),
            signature(&self.secret, timestamp, body),
            now_millis(),
        );
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let reused = idle.is_some();
            let mut stream = match idle {
                Some(stream) => stream,
                None => TcpStream::connect(&self.address).await?,
            };
            match exchange(&mut stream, request.as_bytes()).await {
                Ok(answer) => {
                    if answer.keep_alive {
                        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                        if idle.len() < IDLE {
                            idle.push(stream);
                        }
                    }
                    return Ok((answer.status, answer.body));
                }
                // Closed by the backend while idle: nothing of this call reached it.
                Err(Failed::BeforeAnswer(_)) if reused => continue,
                Err(Failed::BeforeAnswer(e) | Failed::InAnswer(e)) => return Err(e),
            }
        }
    }
}

struct Answer {
    status: u16,
    body: String,
    keep_alive: bool,
}

enum Failed {
    /// Nothing of the answer came.
    BeforeAnswer(Error),
    InAnswer(Error),
}

/// Writes `request` and reads one answer.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Answer, Failed> {
    stream
        .write_all(request)
        .await
        .map_err(Failed::BeforeAnswer)?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > ANSWER_BYTES {
            return Err(Failed::InAnswer(bad("an answer's headers over 64 KiB")));
        }
        let n = read_more(stream, &mut buf).await.map_err(|e| {
            if buf.is_empty() {
                Failed::BeforeAnswer(e)
            } else {
                Failed::InAnswer(e)
            }
        })?;
        if n == 0 {
            let e = Error::new(ErrorKind::UnexpectedEof, "the connection closed");
            return Err(if buf.is_empty() {
                Failed::BeforeAnswer(e)
            } else {
                Failed::InAnswer(e)
            });
        }
    };
    read_answer(stream, buf, head_end)
        .await
        .map_err(Failed::InAnswer)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How the answer's body is framed.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The rest of an answer whose head is `buf[..head_end]`.
async fn read_answer(
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
    head_end: usize,
) -> std::io::Result<Answer> {
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("an answer's head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let mut keep_alive = status_line.starts_with("HTTP/1.1");
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse().map_err(|_| bad("a bad Content-Length"))?;
            if n > ANSWER_BYTES {
                return Err(bad("an answer over 64 KiB"));
            }
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    buf.drain(..head_end);
    let body = match framing {
        Framing::Length(n) => {
            while buf.len() < n {
                if read_more(stream, &mut buf).await? == 0 {
                    return Err(bad("the answer ended early"));
                }
            }
            buf.truncate(n);
            buf
        }
        Framing::Chunked => dechunk(stream, buf).await?,
        Framing::UntilClose => {
            keep_alive = false;
            while read_more(stream, &mut buf).await? > 0 {
                if buf.len() > ANSWER_BYTES {
                    return Err(bad("an answer over 64 KiB"));
                }
            }
            buf
        }
    };
    let body = String::from_utf8(body).map_err(|_| bad("an answer that is not UTF-8"))?;
    Ok(Answer {
        status,
        body,
        keep_alive,
    })
}

/// Reads a chunked body, `buf` holding what came after the head.
async fn dechunk(stream: &mut TcpStream, mut buf: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf, b"\r\n") {
                break i;
            }
            if buf.len() > ANSWER_BYTES || read_more(stream, &mut buf).await? == 0 {
                return Err(bad("a bad chunk"));
            }
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("a bad chunk"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("a bad chunk size"))?;
        if body.len() + size > ANSWER_BYTES {
            return Err(bad("an answer over 64 KiB"));
        }
        // The chunk and its CRLF.
        let need = line_end + 2 + size + 2;
        while buf.len() < need {
            if read_more(stream, &mut buf).await? == 0 {
                return Err(bad("the answer ended early"));
            }
        }
        if size == 0 {
            // The end: a blank line, or trailers and then one.
            loop {
                let rest = &buf[line_end + 2..];
                if rest.starts_with(b"\r\n") || find(rest, b"\r\n\r\n").is_some() {
                    return Ok(body);
                }
                if buf.len() > ANSWER_BYTES || read_more(stream, &mut buf).await? == 0 {
                    return Err(bad("a bad trailer"));
                }
            }
        }
        body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
        buf.drain(..need);
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A backend that answers each request on a connection with the next of `answers`, then
    /// closes; returns its URL.
    async fn backend(answers: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut buf = Vec::new();
                // Head, then the body by its Content-Length.
                let body_len = loop {
                    read_more_plain(&mut socket, &mut buf).await;
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let n: usize = head
                            .split("content-length: ")
                            .nth(1)
                            .and_then(|r| r.split("\r\n").next())
                            .and_then(|n| n.parse().ok())
                            .unwrap();
                        break i + 4 + n;
                    }
                };
                while buf.len() < body_len {
                    read_more_plain(&mut socket, &mut buf).await;
                }
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        format!("http://{addr}/hook")
    }

    async fn read_more_plain(socket: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 1024];
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed");
        buf.extend_from_slice(&chunk[..n]);
    }

    #[tokio::test]
    async fn answers_of_every_framing_on_one_connection() {
        let url = backend(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{\"a\":1}\r\n3;x=y\r\n[2]\r\n0\r\n\r\n",
            "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
        ])
        .await;
        let hook = Webhook::new(&url, "s");
        assert_eq!(hook.post("{}").await.unwrap(), (200, "{}".into()));
        assert_eq!(hook.post("{}").await.unwrap(), (200, "{\"a\":1}[2]".into()));
        assert_eq!(hook.post("{}").await.unwrap(), (503, "busy".into()));
        // Closed after that answer: not kept.
        assert!(hook.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Each connection: one answer, then closed without saying so.
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                while find(&buf, b"{}").is_none() {
                    read_more_plain(&mut socket, &mut buf).await;
                }
                let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                socket.write_all(ok.as_bytes()).await.unwrap();
            }
        });
        let hook = Webhook::new(&format!("http://{addr}/"), "s");
        for _ in 0..3 {
            assert_eq!(hook.post("{}").await.unwrap(), (200, "ok".into()));
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_and_body() {
        let sig = signature("Jefe", 0, "x");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert_ne!(signature("Jefe", 1, "x"), sig);
        assert_ne!(signature("Jefe", 0, "y"), sig);
    }
}
