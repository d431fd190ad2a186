//! The server's HTTP API, as the SDK uses it: the chat list, a conversation's history, read
//! positions. Plain HTTP/1.1 on the server's address (`ws://` becomes `http://`), one request
//! per connection, the token as `Authorization: Bearer` (development mode: `?user_id=`).

use natter_protocol::Msg;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Config, Error};

/// A conversation's last entry, as the chat list shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct LastEntry {
    pub conv_seq: i64,
    pub server_id: String,
    pub send_id: String,
    pub msg_type: i32,
    pub content_type: i32,
    pub preview: String,
    pub send_time: i64,
}

/// One conversation of the chat list (`GET /api/v1/conversations`).
#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub conv_id: String,
    /// `direct` or `group`.
    pub kind: String,
    pub peer: Option<String>,
    pub name: Option<String>,
    pub last: Option<LastEntry>,
    pub last_seq: i64,
    pub read_seq: i64,
    pub unread: i64,
    pub peer_read_seq: Option<i64>,
    pub joined_seq: Option<i64>,
    pub pinned: bool,
    pub muted: bool,
    pub activity: i64,
}

/// A page of the chat list, and the cursor of the next one.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatList {
    pub conversations: Vec<Conversation>,
    pub next: Option<String>,
}

/// A page of a conversation's history, oldest first.
#[derive(Debug, Clone, Deserialize)]
pub struct History {
    pub messages: Vec<Msg>,
    pub has_more: bool,
}

/// Which page of a conversation's history.
#[derive(Debug, Clone, Copy)]
pub enum Page {
    /// The latest entries.
    Latest,
    /// The entries before this `conv_seq`: scrolling back.
    Before(i64),
    /// The entries after this `conv_seq`: catching up.
    After(i64),
}

/// A request to the API; the answer's JSON, or the server's refusal as [`Error::Api`].
pub(crate) async fn request<T: serde::de::DeserializeOwned>(
    config: &Config,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<T, Error> {
    let http = |e: std::io::Error| Error::Api(0, e.to_string());
    let host = config
        .server
        .strip_prefix("ws://")
        .ok_or_else(|| Error::Api(0, "the API is reached over ws:// servers only".into()))?;
    let mut target = path.to_owned();
    if config.token.is_none() {
        let sep = if path.contains('?') { '&' } else { '?' };
        target.push_str(&format!("{sep}user_id={}", encode(&config.user)));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = &config.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(host).await.map_err(http)?;
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .map_err(http)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.map_err(http)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Api(0, "not an HTTP response".into()))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Api(0, "no status".into()))?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    if !(200..300).contains(&status) {
        return Err(Error::Api(status, body));
    }
    serde_json::from_str(&body).map_err(|e| Error::Api(status, format!("{e}: {body}")))
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `s` percent-encoded for a URL path segment or query value (all but unreserved characters).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_and_encoded_ids() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
        assert_eq!(encode("d:a%3Ab:c d"), "d%3Aa%253Ab%3Ac%20d");
    }
}
