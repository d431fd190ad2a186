//! The WebSocket gateway: where a message enters the server and where it leaves for a device.
//!
//! [`upgrade`] checks the request and upgrades it; [`Session::run`] is the one task that owns the
//! socket for its whole life. It `select!`s over three things: frames from the client, its own
//! bounded outbox (frames other tasks queued for this device), and the heartbeat timer. Nothing
//! else ever touches the socket: there is no lock around a sink and no second writer.
//!
//! This is the only module that sees the WebSocket library (axum's `ws`, tungstenite beneath).

use std::{collections::VecDeque, sync::Arc, time::Duration};

use axum::{
    extract::{
        Path, RawQuery, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::SinkExt;
use natter_protocol::{CloseCode, DecodeError, ErrorReason, HttpError, Msg, decode_client_msg};
use std::pin::Pin;

use tokio::time::{Instant, MissedTickBehavior, Sleep, interval_at, sleep, timeout_at};

use crate::{
    auth::{self, Identity},
    config::RateLimitConfig,
    delivery::Refusal,
    http::ApiError,
    hub::ConnId,
    messaging::Origin,
    metrics::{DropReason, LatencySamples},
    outbox::{Cursor, Frame, Outbound, Outbox},
    state::{AppState, SessionGuard},
    store::Stream,
};

/// Longest user or platform id accepted in the URL, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// How long a closing connection gets to take its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A refusal before the upgrade: an HTTP status with a JSON body `{"error", "detail"}`.
fn refuse(state: &AppState, reason: HttpError, detail: &str) -> Response {
    state.metrics.upgrade_refused(reason);
    ApiError::new(reason, detail).into_response()
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /ws/{user_id}/conn/{platform_id}`: checks the request, then upgrades it. Every check
/// happens before the upgrade, so a refused client gets a plain HTTP answer.
pub async fn upgrade(
    Path((user, platform)): Path<(String, String)>,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if natter_protocol::is_group_id(&user) {
        let detail = "user ids may not start with g_ (group ids do)";
        return refuse(&state, HttpError::InvalidId, detail);
    }
    for id in [&user, &platform] {
        if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
            let detail = format!("ids are at most {MAX_ID_LEN} bytes, no control characters");
            return refuse(&state, HttpError::InvalidId, &detail);
        }
    }
    if let Some(origin) = header(&headers, header::ORIGIN) {
        let host = header(&headers, header::HOST);
        if !auth::origin_allowed(origin, host, &state.config.auth.allowed_origins) {
            let detail = format!("origin {origin} is not in auth.allowed_origins");
            return refuse(&state, HttpError::OriginForbidden, &detail);
        }
    }
    let (token, protocol) = auth::token_from_request(
        query.as_deref(),
        header(&headers, header::AUTHORIZATION),
        header(&headers, header::SEC_WEBSOCKET_PROTOCOL),
    );
    let identity = match state.auth.verify(token, &user, &platform) {
        Ok(identity) => identity,
        Err(e) => return refuse(&state, e.reason(), e.detail()),
    };
    let replay = match Replay::from_query(query.as_deref()) {
        Ok(r) => r,
        Err(detail) => return refuse(&state, HttpError::InvalidQuery, &detail),
    };
    let per_user = state.config.limits.max_connections_per_user;
    if state.hub.other_devices(&user, &platform) >= per_user {
        let detail =
            format!("a user may hold {per_user} connections (limits.max_connections_per_user)");
        return refuse(&state, HttpError::UserConnectionLimit, &detail);
    }
    let Some(guard) = state
        .sessions
        .try_enter(state.config.limits.max_connections)
    else {
        let reason = if state.sessions.is_shutting_down() {
            HttpError::ServerShuttingDown
        } else {
            HttpError::NodeConnectionLimit
        };
        return refuse(&state, reason, "try another node or later");
    };
    let cfg = &state.config;
    let mut ws = ws
        .read_buffer_size(cfg.websocket.read_buffer_size)
        .write_buffer_size(cfg.websocket.write_buffer_size)
        .max_write_buffer_size(cfg.websocket.max_write_buffer_size)
        .max_message_size(cfg.limits.max_message_size)
        .max_frame_size(cfg.limits.max_message_size);
    if let Some(p) = protocol {
        ws = ws.protocols([p.to_owned()]);
    }
    ws.on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            Session::start(state, socket, identity, platform, guard)
                .run(replay)
                .await
        })
}

/// One client connection, owned by one task.
struct Session {
    state: AppState,
    socket: WebSocket,
    user: String,
    platform: String,
    conn: ConnId,
    outbox: Arc<Outbox>,
    /// Reused between batches so draining the outbox does not allocate.
    batch: VecDeque<Outbound>,
    last_seen: Instant,
    /// When the token expires: the connection is closed with 4002 then.
    expiry: Option<Pin<Box<Sleep>>>,
    limiter: Option<RateLimiter>,
    /// Highest inbox `seq` / sent `send_seq` already replayed from the store: live copies up to
    /// them are dropped, so the switch from history to live has no duplicate.
    replayed: (i64, i64),
    _guard: SessionGuard,
}

/// What a connecting device asks to be replayed: `?since_seq=N` (inbox) and/or
/// `?since_send_seq=M` (what the user sent from other devices).
#[derive(Debug, Default, Clone, Copy)]
pub struct Replay {
    since_seq: Option<i64>,
    since_send_seq: Option<i64>,
}

impl Replay {
    fn from_query(query: Option<&str>) -> Result<Replay, String> {
        let number = |name: &str| -> Result<Option<i64>, String> {
            match crate::query::query_param(query, name) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Some)
                    .ok_or_else(|| format!("{name} must be a non-negative integer")),
            }
        };
        Ok(Replay {
            since_seq: number("since_seq")?,
            since_send_seq: number("since_send_seq")?,
        })
    }
}

/// Messages fetched from the store per replay query.
const REPLAY_PAGE: u32 = 500;

/// Why the session loop ended.
enum Exit {
    /// The client closed, or the socket failed: nothing more to send.
    Gone,
    /// The server closes the connection with this code.
    Close(CloseCode),
}

impl Session {
    fn start(
        state: AppState,
        socket: WebSocket,
        identity: Identity,
        platform: String,
        guard: SessionGuard,
    ) -> Session {
        let user = identity.user;
        let expiry = identity.expires_at.map(|exp| {
            let left = Duration::from_secs(exp.saturating_sub(crate::clock::now_secs()));
            Box::pin(sleep(left))
        });
        let limiter = RateLimiter::new(&state.config.limits.rate);
        let outbox = Arc::new(Outbox::new(state.config.limits.outbound_queue));
        let conn = state.hub.register(&user, &platform, outbox.clone());
        if state.sessions.is_shutting_down() {
            outbox.close(CloseCode::GoingAway);
        }
        state.metrics.connections_opened.increment(1);
        state.metrics.connections.increment(1.0);
        tracing::debug!(%user, %platform, conn, "connected");
        Session {
            state,
            socket,
            user,
            platform,
            conn,
            outbox,
            batch: VecDeque::new(),
            last_seen: Instant::now(),
            expiry,
            limiter,
            replayed: (0, 0),
            _guard: guard,
        }
    }

    async fn run(mut self, replay: Replay) {
        if let Some(cluster) = self.state.cluster.clone() {
            cluster.joined(&self.user, &self.platform).await;
        }
        // Boxed, like `on_text` below: a future is as large as its largest await point, and
        // the session's future lives as long as the connection. Keeping the rare or short
        // paths out of it keeps an idle connection small (docs/benchmarks.md).
        let exit = match Box::pin(self.replay(replay)).await {
            Ok(()) => self.serve().await,
            Err(exit) => exit,
        };
        self.state
            .hub
            .unregister(&self.user, &self.platform, self.conn);
        if let Some(cluster) = self.state.cluster.clone() {
            let none_left = self.state.hub.platforms(&self.user).is_empty();
            cluster.left(&self.user, &self.platform, none_left).await;
        }
        self.state.metrics.connections.decrement(1.0);
        match exit {
            Exit::Gone => self.state.metrics.disconnected(CloseCode::Normal),
            Exit::Close(code) => {
                self.state.metrics.disconnected(code);
                let frame = CloseFrame {
                    code: code.code(),
                    reason: Utf8Bytes::from_static(code.reason()),
                };
                self.close_handshake(frame).await;
            }
        }
        tracing::debug!(user = %self.user, platform = %self.platform, conn = self.conn, "disconnected");
    }

    /// Sends the stored messages the device missed, before anything live. The session is
    /// registered already, so whatever is committed meanwhile waits in the outbox; copies of
    /// replayed messages are dropped from it by their cursor.
    async fn replay(&mut self, replay: Replay) -> Result<(), Exit> {
        let Some(store) = self.state.store.clone() else {
            return Ok(());
        };
        let streams = [
            (Stream::Inbox, replay.since_seq),
            (Stream::Sent, replay.since_send_seq),
        ];
        for (stream, since) in streams {
            let Some(mut after) = since else { continue };
            loop {
                let page = store
                    .after(&self.user, stream, after, REPLAY_PAGE)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "replay failed");
                        Exit::Close(CloseCode::Internal)
                    })?;
                for msg in &page {
                    after = match stream {
                        Stream::Inbox => msg.seq,
                        Stream::Sent => msg.send_seq,
                    };
                    let frame = Message::Text(Frame::from(msg.encode()));
                    self.socket.feed(frame).await.map_err(|_| Exit::Gone)?;
                }
                self.socket.flush().await.map_err(|_| Exit::Gone)?;
                if page.len() < REPLAY_PAGE as usize {
                    break;
                }
            }
            match stream {
                Stream::Inbox => self.replayed.0 = after,
                Stream::Sent => self.replayed.1 = after,
            }
        }
        Ok(())
    }

    /// Sends our close frame, then reads (and discards) until the client's close arrives, so
    /// the close frame is not lost to a TCP reset, for at most [`CLOSE_GRACE`].
    async fn close_handshake(&mut self, frame: CloseFrame) {
        let deadline = Instant::now() + CLOSE_GRACE;
        let sent = timeout_at(deadline, self.socket.send(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        while let Ok(Some(Ok(message))) = timeout_at(deadline, self.socket.recv()).await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    }

    async fn serve(&mut self) -> Exit {
        let hb = self.state.config.heartbeat.clone();
        let mut ping = interval_at(Instant::now() + hb.interval, hb.interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = self.socket.recv() => {
                    if let Some(exit) = self.on_frame(frame).await {
                        return exit;
                    }
                }
                () = self.outbox.ready() => {
                    if let Some(exit) = self.flush_outbox().await {
                        return exit;
                    }
                }
                () = until(&mut self.expiry) => return Exit::Close(CloseCode::BadToken),
                _ = ping.tick() => {
                    if self.last_seen.elapsed() >= hb.timeout {
                        return Exit::Close(CloseCode::HeartbeatTimeout);
                    }
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() {
                        return Exit::Gone;
                    }
                }
            }
        }
    }

    /// Handles one result of reading the socket.
    async fn on_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Option<Exit> {
        let message = match frame {
            None => return Some(Exit::Gone),
            Some(Ok(message)) => message,
            Some(Err(e)) => return Some(self.on_read_error(e)),
        };
        self.last_seen = Instant::now();
        match message {
            Message::Text(text) => Box::pin(self.on_text(&text)).await,
            Message::Binary(_) => self.reply_error(
                "",
                ErrorReason::BinaryNotSupported,
                "send messages as JSON text frames",
            ),
            Message::Close(_) => return Some(Exit::Gone),
            // Pongs to client pings are sent by the WebSocket layer itself.
            Message::Ping(_) | Message::Pong(_) => {}
        }
        None
    }

    fn on_read_error(&self, e: axum::Error) -> Exit {
        let too_big = matches!(
            e.into_inner().downcast::<tungstenite::Error>().map(|e| *e),
            Ok(tungstenite::Error::Capacity(_))
        );
        if too_big {
            self.state.metrics.frame_too_big();
            Exit::Close(CloseCode::TooBig)
        } else {
            Exit::Gone
        }
    }

    async fn on_text(&mut self, text: &str) {
        if let Some(limiter) = &mut self.limiter {
            match limiter.check(Instant::now()) {
                Rate::Allow => {}
                Rate::Refuse => {
                    let local_id = decode_client_msg(text)
                        .map(|m| m.local_id)
                        .unwrap_or_default();
                    self.reply_error(&local_id, ErrorReason::RateLimited, "slow down");
                    return;
                }
                Rate::Close => {
                    self.state.metrics.frame_rejected(ErrorReason::RateLimited);
                    self.outbox.close(CloseCode::RateLimited);
                    return;
                }
            }
        }
        let (local_id, refusal) = match decode_client_msg(text) {
            Err(DecodeError {
                reason,
                detail,
                local_id,
            }) => (local_id, Refusal { reason, detail }),
            Ok(msg) => {
                let local_id = msg.local_id.clone();
                let origin = Origin {
                    user: &self.user,
                    conn: self.conn,
                };
                match self.state.messaging.accept(origin, msg).await {
                    Ok(()) => return,
                    Err(refusal) => (local_id, refusal),
                }
            }
        };
        self.reply_error(&local_id, refusal.reason, &refusal.detail);
    }

    fn reply_error(&self, local_id: &str, reason: ErrorReason, detail: &str) {
        self.state.metrics.frame_rejected(reason);
        self.reply(&Msg::error_reply(local_id, reason, detail));
    }

    /// Queues a reply to this connection, behind whatever is already queued for it.
    fn reply(&self, msg: &Msg) {
        // A full queue marks this connection as a slow consumer; the loop then closes it.
        let _ = self.outbox.push(Frame::from(msg.encode()), Cursor::None);
    }

    /// Writes everything queued, flushing once per batch, until the outbox is empty.
    async fn flush_outbox(&mut self) -> Option<Exit> {
        let write_timeout = self.state.config.heartbeat.timeout;
        loop {
            let close = self.outbox.drain(&mut self.batch);
            if close == Some(CloseCode::SlowConsumer) {
                self.state
                    .metrics
                    .dropped(DropReason::SlowConsumer, self.batch.len() as u64);
                self.batch.clear();
                return Some(Exit::Close(CloseCode::SlowConsumer));
            }
            let (seq, send_seq) = self.replayed;
            if seq > 0 || send_seq > 0 {
                self.batch.retain(|o| match o.cursor {
                    Cursor::Inbox(s) => s > seq,
                    Cursor::Sent(s) => s > send_seq,
                    Cursor::None => true,
                });
            }
            if self.batch.is_empty() {
                return close.map(Exit::Close);
            }
            let n = self.batch.len() as u64;
            let written = {
                let write = write_batch(&mut self.socket, &mut self.batch);
                tokio::pin!(write);
                // Most writes complete at once (the socket has room): only a write that has to
                // wait gets a deadline, so the common case registers no timer.
                let at_once = tokio::select! {
                    biased;
                    r = &mut write => Some(r.map_err(|_| Exit::Gone)),
                    () = std::future::ready(()) => None,
                };
                if let Some(done) = at_once {
                    done
                } else {
                    let deadline = tokio::time::sleep(write_timeout);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            r = &mut write => break r.map_err(|_| Exit::Gone),
                            () = &mut deadline => break Err(Exit::Close(CloseCode::SlowConsumer)),
                            // While a write to a slow client waits, other tasks may fill the outbox.
                            () = self.outbox.ready() => {
                                if self.outbox.close_requested() == Some(CloseCode::SlowConsumer) {
                                    break Err(Exit::Close(CloseCode::SlowConsumer));
                                }
                                // Anything else queued meanwhile is drained after this write.
                            }
                        }
                    }
                }
            };
            let now = Instant::now();
            let metrics = &self.state.metrics;
            match written {
                Ok(()) => {
                    metrics.messages_delivered.increment(n);
                    let mut samples = LatencySamples::default();
                    for o in self.batch.drain(..) {
                        samples.record(now.duration_since(o.queued_at));
                    }
                    metrics.delivery_latency.add(&samples);
                }
                Err(exit) => {
                    self.batch.clear();
                    return Some(exit);
                }
            }
            if let Some(code) = close {
                return Some(Exit::Close(code));
            }
        }
    }
}

/// Feeds every frame of the batch to the socket, then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Outbound>,
) -> Result<(), axum::Error> {
    for o in batch.iter() {
        socket.feed(Message::Text(o.frame.clone())).await?;
    }
    socket.flush().await
}

/// Waits for the timer if there is one, forever otherwise.
async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// A token bucket per connection (`limits.rate`).
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refused messages since the last accepted one.
    strikes: u32,
    close_after: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Rate {
    Allow,
    /// Refuse this message with an error reply.
    Refuse,
    /// Sustained abuse: close the connection (4005).
    Close,
}

impl RateLimiter {
    fn new(cfg: &RateLimitConfig) -> Option<RateLimiter> {
        (cfg.per_second > 0.0).then(|| RateLimiter {
            per_second: cfg.per_second,
            burst: f64::from(cfg.burst),
            tokens: f64::from(cfg.burst),
            last: Instant::now(),
            strikes: 0,
            close_after: cfg.close_after,
        })
    }

    fn check(&mut self, now: Instant) -> Rate {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Rate::Allow;
        }
        self.strikes += 1;
        if self.strikes >= self.close_after {
            Rate::Close
        } else {
            Rate::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_burst_then_refuses_then_closes() {
        let cfg = RateLimitConfig {
            per_second: 10.0,
            burst: 5,
            close_after: 3,
        };
        let mut rl = RateLimiter::new(&cfg).unwrap();
        let t0 = rl.last;
        for _ in 0..5 {
            assert_eq!(rl.check(t0), Rate::Allow);
        }
        assert_eq!(rl.check(t0), Rate::Refuse);
        assert_eq!(rl.check(t0), Rate::Refuse);
        // 100 ms later one token is back; an accepted message clears the strikes.
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Allow);
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Refuse);
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Refuse);
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Close);
        assert!(RateLimiter::new(&RateLimitConfig::default()).is_none());
    }
}
