//! # natter-client
//!
//! A Rust client for the Natter messaging server: connect, send (and get the ack), receive a
//! stream of messages; the connection is kept up by a background task that reconnects with
//! exponential backoff and jitter, resyncs from the last `seq` / `send_seq` it saw, drops
//! duplicates, and resends unacknowledged messages with their original `local_id` (the server
//! recognises a resend and does not deliver it twice).
//!
//! With [`Config::token_source`] it asks the app's backend for a new token before the one in use
//! expires and sends it on the open connection, and when the server closes the connection over
//! its token (4002: expired, revoked) or refuses a reconnection over it; without one,
//! [`Client::refresh_token`] renews a token on the open connection.
//!
//! Conversations come from the HTTP API on the same server: [`Client::conversations`] (the
//! chat list with unread counts), [`Client::history`] (a conversation's pages, both ways),
//! [`Client::mark_read`]; typing and other ephemeral events go with [`Client::event`], and a
//! sender can [`Client::recall`] or [`Client::edit`] an entry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), natter_client::Error> {
//! use natter_client::{Client, Config};
//!
//! let mut alice = Client::connect(Config::new("ws://127.0.0.1:50000", "alice", "laptop")).await?;
//! let ack = alice.send("bob", "hello").await?;
//! println!("stored as {} (seq {} in bob's inbox)", ack.server_id, ack.seq);
//! while let Some(msg) = alice.next().await {
//!     println!("{}: {}", msg.send_id, msg.content);
//! }
//! # Ok(()) }
//! ```

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt, future::BoxFuture};
pub use natter_protocol::Msg;

mod api;
mod describe;
pub use api::{ChatList, Conversation, History, LastEntry, Page};
pub use describe::describe;
use natter_protocol::{CloseCode, content_type, msg_type};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

/// The ephemeral `msg_type` our clients use for "typing".
pub const TYPING: i32 = 100;

/// Asks the app's backend for a new token.
pub type TokenFn = dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync;

/// Where new tokens come from: the app's backend, asked when the server refused or closed the
/// connection over its token (expired, revoked).
#[derive(Clone)]
pub struct TokenSource(Arc<TokenFn>);

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

/// How to reach the server and as whom.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ws://host:port` (or `wss://`), without the path.
    pub server: String,
    pub user: String,
    pub platform: String,
    /// A token from your backend; `None` for a server in development mode.
    pub token: Option<String>,
    /// Asked for a token at connect when there is none, and for a new one after the server
    /// closed the connection with 4002 or refused a reconnection over its token.
    pub token_source: Option<TokenSource>,
    /// Reconnect when the connection drops (default true).
    pub reconnect: bool,
    /// Start the inbox and sent-stream replay after these cursors (default 0: everything
    /// stored). A client that kept its cursors from a previous run passes them here.
    pub since_seq: i64,
    pub since_send_seq: i64,
    /// Longest wait between reconnection attempts (default 10 s).
    pub max_backoff: Duration,
}

impl Config {
    pub fn new(server: &str, user: &str, platform: &str) -> Config {
        Config {
            server: server.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            platform: platform.to_owned(),
            token: None,
            token_source: None,
            reconnect: true,
            since_seq: 0,
            since_send_seq: 0,
            max_backoff: Duration::from_secs(10),
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Config {
        self.token = Some(token.into());
        self
    }

    /// Gets tokens from `source` (see [`Config::token_source`]).
    pub fn token_source<F>(mut self, source: F) -> Config
    where
        F: Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync + 'static,
    {
        self.token_source = Some(TokenSource(Arc::new(source)));
        self
    }

    /// A new token from the source, kept for the next connections; false without a source or
    /// if it failed.
    async fn renew_token(&mut self) -> bool {
        let Some(TokenSource(source)) = &self.token_source else {
            return false;
        };
        match source().await {
            Ok(token) => {
                self.token = Some(token);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the token source failed");
                false
            }
        }
    }

    pub fn since(mut self, seq: i64, send_seq: i64) -> Config {
        self.since_seq = seq;
        self.since_send_seq = send_seq;
        self
    }

    fn url(&self, seq: i64, send_seq: i64) -> String {
        format!(
            "{}/ws/{}/conn/{}?since_seq={seq}&since_send_seq={send_seq}",
            self.server, self.user, self.platform
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("the server refused the message: {0}")]
    Refused(String),
    #[error("the connection was closed for good ({0:?})")]
    Closed(Option<u16>),
    /// The HTTP API answered with this status and body (0: no answer).
    #[error("the API answered {0}: {1}")]
    Api(u16, String),
}

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

enum Command {
    Send(Msg, oneshot::Sender<Result<Msg, Error>>),
    /// An ephemeral event: sent once, never acked or resent.
    Event(Msg),
    /// The token to connect with from now on.
    Token(String),
}

/// A connected client. Dropping it closes the connection.
pub struct Client {
    config: Config,
    /// The token in use, which the background task renews: the API calls take it from here.
    token: Arc<std::sync::Mutex<Option<String>>>,
    commands: mpsc::Sender<Command>,
    incoming: mpsc::Receiver<Msg>,
    next_local: u64,
    tag: String,
}

impl Client {
    /// Connects (the first attempt must succeed) and starts the background task.
    pub async fn connect(mut config: Config) -> Result<Client, Error> {
        if config.token.is_none() && config.token_source.is_some() && !config.renew_token().await {
            return Err(Error::Connect("the token source gave no token".into()));
        }
        let ws = open(&config, config.since_seq, config.since_send_seq).await?;
        let (commands, command_rx) = mpsc::channel(256);
        let (incoming_tx, incoming) = mpsc::channel(1024);
        let tag = format!(
            "{}-{:x}",
            config.platform,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let token = Arc::new(std::sync::Mutex::new(config.token.clone()));
        let mut state = Connection {
            token: token.clone(),
            refresh_at: None,
            renewed: mpsc::channel(1),
            refreshes: 0,
            seq: config.since_seq,
            send_seq: config.since_send_seq,
            config: config.clone(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            seen: Seen::default(),
            incoming: incoming_tx,
        };
        state.schedule_refresh();
        tokio::spawn(state.run(ws, command_rx));
        Ok(Client {
            config,
            token,
            commands,
            incoming,
            next_local: 0,
            tag,
        })
    }

    /// Sends `content` to `to` (a user id, or a group id for a group message) and waits for the
    /// ack, across reconnections if need be.
    pub async fn send(&mut self, to: &str, content: &str) -> Result<Msg, Error> {
        let msg = Msg {
            receiver_id: to.to_owned(),
            msg_type: if to.starts_with("g_") {
                msg_type::GROUP
            } else {
                msg_type::SINGLE
            },
            content: content.to_owned(),
            ..Msg::default()
        };
        self.send_msg(msg).await
    }

    /// Sends a message as given; `local_id` and `create_time` (now, in Unix ms) are filled in if
    /// empty. Returns the ack. A resend after a reconnection repeats both, which is how the
    /// server recognises it.
    pub async fn send_msg(&mut self, mut msg: Msg) -> Result<Msg, Error> {
        if msg.local_id.is_empty() {
            self.next_local += 1;
            msg.local_id = format!("{}-{}", self.tag, self.next_local);
        }
        if msg.create_time == 0 {
            msg.create_time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send(msg, tx))
            .await
            .map_err(|_| Error::Closed(None))?;
        rx.await.map_err(|_| Error::Closed(None))?
    }

    /// An ephemeral event (`msg_type` 100 to 199: typing, "recording"...) to a user's or a
    /// group's devices online now: sent once, not stored, not acked.
    pub async fn event(&mut self, to: &str, msg_type: i32, content: &str) -> Result<(), Error> {
        if !natter_protocol::is_ephemeral(msg_type) {
            return Err(Error::Refused(format!(
                "msg_type {msg_type} is not an ephemeral event (100 to 199)"
            )));
        }
        let msg = Msg {
            receiver_id: to.to_owned(),
            msg_type,
            content: content.to_owned(),
            ..Msg::default()
        };
        self.commands
            .send(Command::Event(msg))
            .await
            .map_err(|_| Error::Closed(None))
    }

    /// Renews this connection's token before it expires (`msg_type` 13): the session goes on
    /// until the new token's expiry, and reconnections use it. Returns once the server took it;
    /// a token it refuses is `Error::Refused("bad_token: ...")` and changes nothing there.
    pub async fn refresh_token(&mut self, token: &str) -> Result<(), Error> {
        let msg = Msg {
            receiver_id: self.config.user.clone(),
            msg_type: msg_type::TOKEN_REFRESH,
            content: token.to_owned(),
            ..Msg::default()
        };
        self.send_msg(msg).await?;
        // Taken: reconnections use it from now on (a refused one changes nothing).
        self.config.token = Some(token.to_owned());
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.to_owned());
        self.commands
            .send(Command::Token(token.to_owned()))
            .await
            .map_err(|_| Error::Closed(None))
    }

    /// "Typing" to `to` (`msg_type` 100, the web page's number for it).
    pub async fn typing(&mut self, to: &str) -> Result<(), Error> {
        self.event(to, TYPING, "typing").await
    }

    /// Recalls an entry of one's own (its `conv_seq`) in the conversation with `to` (a user or
    /// a group) for everyone; returns the ack.
    pub async fn recall(&mut self, to: &str, conv_seq: i64) -> Result<Msg, Error> {
        let change = natter_protocol::conversation::Change {
            conv_seq,
            content: None,
        };
        self.change(to, msg_type::RECALL, &change).await
    }

    /// Replaces the content of an entry of one's own; returns the ack.
    pub async fn edit(&mut self, to: &str, conv_seq: i64, content: &str) -> Result<Msg, Error> {
        let change = natter_protocol::conversation::Change {
            conv_seq,
            content: Some(content.to_owned()),
        };
        self.change(to, msg_type::EDIT, &change).await
    }

    async fn change(
        &mut self,
        to: &str,
        kind: i32,
        change: &natter_protocol::conversation::Change,
    ) -> Result<Msg, Error> {
        let msg = Msg {
            receiver_id: to.to_owned(),
            msg_type: kind,
            content: serde_json::to_string(change).unwrap_or_default(),
            ..Msg::default()
        };
        self.send_msg(msg).await
    }

    /// The last `seq` and `send_seq` the server handed out to `config`'s user: connect with
    /// them ([`Config::since`]) to receive only what comes from now on.
    pub async fn cursors(config: &Config) -> Result<(i64, i64), Error> {
        let answer: serde_json::Value = api::request(config, "GET", "/api/v1/seq", None).await?;
        Ok((
            answer["seq"].as_i64().unwrap_or(0),
            answer["send_seq"].as_i64().unwrap_or(0),
        ))
    }

    /// The config with the token in use now.
    fn api_config(&self) -> Config {
        let mut config = self.config.clone();
        config.token = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        config
    }

    /// A page of the chat list (`limit` 1 to 200; `cursor`: the previous page's `next`).
    pub async fn conversations(&self, limit: u32, cursor: Option<&str>) -> Result<ChatList, Error> {
        let mut path = format!("/api/v1/conversations?limit={limit}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", api::encode(c)));
        }
        api::request(&self.api_config(), "GET", &path, None).await
    }

    /// A page of a conversation's history, oldest first.
    pub async fn history(&self, conv_id: &str, page: Page, limit: u32) -> Result<History, Error> {
        let mut path = format!(
            "/api/v1/conversations/{}/messages?limit={limit}",
            api::encode(conv_id)
        );
        match page {
            Page::Latest => {}
            Page::Before(n) => path.push_str(&format!("&before={n}")),
            Page::After(n) => path.push_str(&format!("&after={n}")),
        }
        api::request(&self.api_config(), "GET", &path, None).await
    }

    /// Marks a conversation read up to `conv_seq`; returns the read position kept.
    pub async fn mark_read(&self, conv_id: &str, conv_seq: i64) -> Result<i64, Error> {
        let path = format!("/api/v1/conversations/{}/read", api::encode(conv_id));
        let body = serde_json::json!({ "conv_seq": conv_seq });
        let answer: serde_json::Value =
            api::request(&self.api_config(), "POST", &path, Some(body)).await?;
        Ok(answer["read_seq"].as_i64().unwrap_or(0))
    }

    /// The next message for this device (live or replayed), without duplicates; `None` once
    /// the connection is closed for good.
    pub async fn next(&mut self) -> Option<Msg> {
        self.incoming.recv().await
    }
}

async fn open(config: &Config, seq: i64, send_seq: i64) -> Result<Ws, Error> {
    let mut request = config
        .url(seq, send_seq)
        .into_client_request()
        .map_err(|e| Error::Connect(e.to_string()))?;
    if let Some(token) = &config.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| Error::Connect(e.to_string()))?;
        request.headers_mut().insert("authorization", value);
    }
    match connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(Error::Connect(format!("HTTP {}: {body}", resp.status())))
        }
        Err(e) => Err(Error::Connect(e.to_string())),
    }
}

/// The server ids seen lately, to drop duplicates (a replay overlapping live delivery, a
/// resync from an older cursor).
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    const KEEP: usize = 10_000;

    /// Records `id`; false if it was seen already.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::KEEP
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The background task's state.
struct Connection {
    config: Config,
    token: Arc<std::sync::Mutex<Option<String>>>,
    /// With a token source: when to renew the token on the open connection, and where the
    /// task asking the source sends the new one.
    refresh_at: Option<tokio::time::Instant>,
    renewed: (mpsc::Sender<String>, mpsc::Receiver<String>),
    refreshes: u64,
    /// Highest inbox `seq` and sent `send_seq` seen: where a resync starts.
    seq: i64,
    send_seq: i64,
    /// Unacknowledged messages by `local_id`, resent after a reconnect.
    pending: HashMap<String, (Msg, oneshot::Sender<Result<Msg, Error>>)>,
    order: VecDeque<String>,
    seen: Seen,
    incoming: mpsc::Sender<Msg>,
}

enum Ended {
    /// The application dropped the client.
    Dropped,
    /// The connection broke; try again.
    Lost,
    /// The server closed it for a reason a reconnect would not fix.
    Final(Option<u16>),
}

impl Connection {
    async fn run(mut self, mut ws: Ws, mut commands: mpsc::Receiver<Command>) {
        loop {
            match self.serve(&mut ws, &mut commands).await {
                Ended::Dropped => {
                    let _ = ws.close(None).await;
                    return;
                }
                Ended::Final(Some(code))
                    if code == CloseCode::BadToken.code() && self.renew_token().await =>
                {
                    match self.reconnect().await {
                        Some(fresh) => ws = fresh,
                        None => return,
                    }
                }
                Ended::Final(code) => return self.fail_pending(code),
                Ended::Lost if !self.config.reconnect => return self.fail_pending(None),
                Ended::Lost => match self.reconnect().await {
                    Some(fresh) => ws = fresh,
                    None => return,
                },
            }
            // Resend what was never acknowledged, in the order it was sent.
            for local_id in &self.order {
                if let Some((msg, _)) = self.pending.get(local_id)
                    && ws.send(Message::text(msg.encode())).await.is_err()
                {
                    break;
                }
            }
        }
    }

    /// Reconnects with exponential backoff and jitter, resyncing from the cursors. `None` if
    /// the application dropped the client meanwhile.
    async fn reconnect(&mut self) -> Option<Ws> {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::time::sleep(jitter(backoff)).await;
            if self.incoming.is_closed() {
                return None;
            }
            match open(&self.config, self.seq, self.send_seq).await {
                Ok(ws) => return Some(ws),
                // Refused over its token (expired, revoked): the next try has a new one.
                Err(Error::Connect(e)) if e.starts_with("HTTP 401") => {
                    tracing::debug!(error = %e, "reconnect refused");
                    self.renew_token().await;
                }
                Err(e) => tracing::debug!(error = %e, "reconnect failed"),
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// A new token from the source, for the connections and the API calls from now on.
    async fn renew_token(&mut self) -> bool {
        let renewed = self.config.renew_token().await;
        if renewed {
            self.took_token();
        }
        renewed
    }

    /// `config.token` is new: shared with the API calls, and renewed before it expires.
    fn took_token(&mut self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = self.config.token.clone();
        self.schedule_refresh();
    }

    /// With a token source, renew the token a fifth of its life (at most a minute) before it
    /// expires.
    fn schedule_refresh(&mut self) {
        self.refresh_at = None;
        if self.config.token_source.is_none() {
            return;
        }
        let Some(exp) = self.config.token.as_deref().and_then(token_expiry) else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let left = Duration::from_secs(exp).saturating_sub(now);
        let early = (left / 5).min(Duration::from_secs(60));
        self.refresh_at = Some(tokio::time::Instant::now() + (left - early));
    }

    /// The refresh is due: ask the source in a task of its own, so frames go on meanwhile.
    fn ask_for_token(&mut self) {
        self.refresh_at = None;
        let (Some(TokenSource(source)), tx) =
            (self.config.token_source.clone(), self.renewed.0.clone())
        else {
            return;
        };
        tokio::spawn(async move {
            match source().await {
                Ok(token) => {
                    let _ = tx.send(token).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the token source failed; the next close renews")
                }
            }
        });
    }

    /// Sends `token` on the open connection (`msg_type` 13); reconnections use it too.
    async fn refresh(&mut self, ws: &mut Ws, token: String) -> bool {
        self.refreshes += 1;
        let msg = Msg {
            receiver_id: self.config.user.clone(),
            msg_type: msg_type::TOKEN_REFRESH,
            local_id: format!("token-refresh-{}", self.refreshes),
            content: token.clone(),
            ..Msg::default()
        };
        self.config.token = Some(token);
        self.took_token();
        // Answered like a message; nobody waits for this answer.
        let (reply, _) = oneshot::channel();
        let text = msg.encode();
        self.order.push_back(msg.local_id.clone());
        self.pending.insert(msg.local_id.clone(), (msg, reply));
        ws.send(Message::text(text)).await.is_ok()
    }

    fn fail_pending(&mut self, code: Option<u16>) {
        self.order.clear();
        for (_, (_, reply)) in self.pending.drain() {
            let _ = reply.send(Err(Error::Closed(code)));
        }
    }

    async fn serve(&mut self, ws: &mut Ws, commands: &mut mpsc::Receiver<Command>) -> Ended {
        loop {
            let refresh_at = self.refresh_at;
            let due = async move {
                match refresh_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = due => self.ask_for_token(),
                Some(token) = self.renewed.1.recv() => {
                    if !self.refresh(ws, token).await {
                        return Ended::Lost;
                    }
                }
                command = commands.recv() => match command {
                    None => return Ended::Dropped,
                    Some(Command::Token(token)) => {
                        self.config.token = Some(token);
                        self.took_token();
                    }
                    Some(Command::Event(msg)) => {
                        if ws.send(Message::text(msg.encode())).await.is_err() {
                            return Ended::Lost;
                        }
                    }
                    Some(Command::Send(msg, reply)) => {
                        let text = msg.encode();
                        self.order.push_back(msg.local_id.clone());
                        self.pending.insert(msg.local_id.clone(), (msg, reply));
                        if ws.send(Message::text(text)).await.is_err() {
                            return Ended::Lost;
                        }
                    }
                },
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(msg) = serde_json::from_str::<Msg>(&text) else { continue };
                        if !self.on_msg(msg).await {
                            return Ended::Dropped;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code));
                        let final_codes = [CloseCode::Replaced.code(), CloseCode::BadToken.code(), CloseCode::TooBig.code(), CloseCode::Disconnected.code()];
                        return match code {
                            Some(c) if final_codes.contains(&c) => Ended::Final(Some(c)),
                            _ => Ended::Lost,
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Ended::Lost,
                },
            }
        }
    }

    /// Handles one server message; false if the application is gone.
    async fn on_msg(&mut self, msg: Msg) -> bool {
        if msg.msg_type == msg_type::REC_RESP {
            if let Some((_, reply)) = self.pending.remove(&msg.local_id) {
                self.order.retain(|l| *l != msg.local_id);
                let result = if msg.content_type == content_type::ERROR {
                    Err(Error::Refused(msg.content.clone()))
                } else {
                    self.send_seq = self.send_seq.max(msg.send_seq);
                    Ok(msg)
                };
                let _ = reply.send(result);
            }
            return true;
        }
        if !msg.server_id.is_empty() && !self.seen.insert(&msg.server_id) {
            return true;
        }
        // Cursors: an inbox message raises `seq`, a copy of our own message `send_seq`.
        // (A group message's `seq` is the group's, which `GET /api/v1/groups` tracks.)
        if msg.send_id == self.config.user && msg.receiver_id != self.config.user {
            self.send_seq = self.send_seq.max(msg.send_seq);
        } else if !msg.receiver_id.starts_with("g_") {
            self.seq = self.seq.max(msg.seq);
        }
        self.incoming.send(msg).await.is_ok()
    }
}

/// A JWT's `exp` (Unix seconds), read without checking anything: only to know when to renew it.
fn token_expiry(token: &str) -> Option<u64> {
    let payload = base64url(token.split('.').nth(1)?)?;
    serde_json::from_slice::<serde_json::Value>(&payload).ok()?["exp"].as_u64()
}

/// Decodes unpadded base64url.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = ((acc << 6) | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// `base` ± 50%, so clients that lost the same server do not all come back at once.
fn jitter(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.5 + f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tokens_expiry() {
        assert_eq!(base64url("aGVsbG8gd29ybGQ").unwrap(), b"hello world");
        assert_eq!(base64url("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64url("a b"), None);
        // {"sub":"alice","exp":1764590000}
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc2NDU5MDAwMH0.sig";
        assert_eq!(token_expiry(token), Some(1_764_590_000));
        assert_eq!(token_expiry("not-a-jwt"), None);
    }
}
