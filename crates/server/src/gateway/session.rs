//! The session task: the one owner of a socket for its whole life.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use natter_protocol::{CloseCode, DecodeError, ErrorReason, Msg, decode_client_msg, msg_type};
use std::pin::Pin;

use tokio::time::{Instant, MissedTickBehavior, Sleep, interval_at, sleep, timeout_at};

use crate::{
    auth::Identity,
    budget::Budget,
    delivery::{Refusal, Reply},
    hub::ConnId,
    messaging::Origin,
    metrics::{DropReason, LatencySamples},
    outbox::{Cursor, Frame, Outbound, Outbox},
    state::{AppState, SessionGuard},
};

use super::{
    CLOSE_GRACE,
    rate::{Rate, RateLimiter},
    replay::Replay,
};

/// One client connection, owned by one task.
pub(super) struct Session {
    pub(super) state: AppState,
    pub(super) socket: WebSocket,
    pub(super) user: String,
    pub(super) platform: String,
    pub(super) conn: ConnId,
    /// When it was registered (µs since the Unix epoch): a login elsewhere replaces only
    /// connections older than itself.
    pub(super) joined_at: i64,
    pub(super) outbox: Arc<Outbox>,
    /// Reused between batches so draining the outbox does not allocate.
    pub(super) batch: VecDeque<Outbound>,
    pub(super) last_seen: Instant,
    /// When the token expires: the connection is closed with 4002 then.
    pub(super) expiry: Option<Pin<Box<Sleep>>>,
    /// The rate limits' buckets, made at the first message, like the budget (an idle
    /// connection stays small); `None` until then, and always when the limits are off.
    pub(super) limiter: Option<Box<RateLimiter>>,
    /// Set while the connection is over its byte rate: nothing is read from it until then.
    pub(super) paused: Option<Pin<Box<Sleep>>>,
    /// What this connection may have in flight before the server stops reading it; made at
    /// its first message (most connections only receive: an idle one stays small).
    pub(super) budget: Option<Box<Budget>>,
    /// Highest inbox `seq` / sent `send_seq` already replayed from the store: live copies up to
    /// them are dropped, so the switch from history to live has no duplicate.
    pub(super) replayed: (i64, i64),
    pub(super) _guard: SessionGuard,
}

/// Why the session loop ended.
pub(super) enum Exit {
    /// The socket ended or failed: nothing more to send.
    Gone,
    /// The client sent a close frame: the reply is all there is left to send.
    ClientClosed,
    /// The server closes the connection with this code.
    Close(CloseCode),
}

impl Session {
    pub(super) fn start(
        state: AppState,
        socket: WebSocket,
        identity: Identity,
        platform: String,
        guard: SessionGuard,
    ) -> Session {
        let user = identity.user;
        let expiry = expiry_timer(identity.expires_at);

        let limits = &state.config.limits;
        let outbox = Arc::new(Outbox::new(limits.outbound_queue, limits.outbound_bytes));
        let joined_at = crate::clock::now_micros();
        let conn = state.hub.register(
            &user,
            &platform,
            outbox.clone(),
            joined_at,
            identity.token.clone(),
        );
        // A revocation made since the token was checked either closed it in the hub just now,
        // or is seen here.
        if identity
            .token
            .is_some_and(|t| state.auth.revoked.covers(&user, &t))
        {
            outbox.close(CloseCode::BadToken);
        }
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
            joined_at,
            outbox,
            batch: VecDeque::new(),
            last_seen: Instant::now(),
            expiry,
            limiter: None,
            paused: None,
            budget: None,
            replayed: (0, 0),
            _guard: guard,
        }
    }

    pub(super) async fn run(mut self, replay: Replay) {
        if let Some(cluster) = self.state.cluster.clone() {
            cluster
                .joined(&self.user, &self.platform, self.joined_at)
                .await;
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
            Exit::ClientClosed => {
                self.state.metrics.disconnected(CloseCode::Normal);
                // The WebSocket layer queued the reply to the client's close frame (its own
                // code echoed): send it, so the client sees its close handshake complete.
                let _ = timeout_at(Instant::now() + CLOSE_GRACE, self.socket.flush()).await;
            }
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

    /// Sends our close frame, then reads (and discards) until the client's close arrives, so
    /// the close frame is not lost to a TCP reset, for at most [`CLOSE_GRACE`].
    pub(super) async fn close_handshake(&mut self, frame: CloseFrame) {
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

    pub(super) async fn serve(&mut self) -> Exit {
        let hb = self.state.config.heartbeat.clone();
        let mut ping = interval_at(Instant::now() + hb.interval, hb.interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = self.socket.recv(), if self.paused.is_none() => {
                    if let Some(exit) = self.on_frame(frame).await {
                        return exit;
                    }
                }
                () = until(&mut self.paused) => self.paused = None,
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
    pub(super) async fn on_frame(
        &mut self,
        frame: Option<Result<Message, axum::Error>>,
    ) -> Option<Exit> {
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
            Message::Close(_) => return Some(Exit::ClientClosed),
            // Pongs to client pings are sent by the WebSocket layer itself.
            Message::Ping(_) | Message::Pong(_) => {}
        }
        None
    }

    pub(super) fn on_read_error(&self, e: axum::Error) -> Exit {
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

    pub(super) async fn on_text(&mut self, text: &str) {
        if self.limiter.is_none() {
            self.limiter = RateLimiter::new(&self.state.config.limits.rate);
        }
        if let Some(limiter) = &mut self.limiter {
            let now = Instant::now();
            match limiter.check(text.len(), now) {
                Rate::Allow(pause) if pause.is_zero() => {}
                Rate::Allow(pause) => {
                    self.state.metrics.paced.increment(1);
                    self.paused = Some(Box::pin(tokio::time::sleep_until(now + pause)));
                }
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
            Ok(msg) if msg.msg_type == msg_type::TOKEN_REFRESH => return self.refresh(msg),
            Ok(msg) => {
                let local_id = msg.local_id.clone();
                let origin = Origin {
                    user: &self.user,
                    reply: Reply::Conn(self.conn),
                };
                // Over its budget the connection waits here: its socket is not read meanwhile.
                let limits = &self.state.config.limits;
                let budget = self.budget.get_or_insert_with(|| {
                    Box::new(Budget::new(
                        limits.inflight_messages,
                        limits.inflight_bytes,
                        self.state.metrics.inflight_bytes.clone(),
                    ))
                });
                let inflight = budget.reserve(text.len()).await;
                match self
                    .state
                    .messaging
                    .accept(origin, msg, Some(inflight))
                    .await
                {
                    Ok(()) => return,
                    Err(refusal) => (local_id, refusal),
                }
            }
        };
        self.reply_error(&local_id, refusal.reason, &refusal.detail);
    }

    /// A new token for this connection: verified as at the upgrade (same user, same platform
    /// if it names one); the session then ends at its expiry instead of the old one's. A bad
    /// one changes nothing.
    fn refresh(&mut self, msg: Msg) {
        match self
            .state
            .auth
            .verify(Some(&msg.content), &self.user, &self.platform)
        {
            Ok(identity) => {
                self.expiry = expiry_timer(identity.expires_at);
                self.state
                    .hub
                    .set_token(&self.user, self.conn, identity.token);
                self.reply(&Msg {
                    send_id: self.user.clone(),
                    receiver_id: self.user.clone(),
                    local_id: msg.local_id,
                    msg_type: msg_type::REC_RESP,
                    send_time: crate::clock::now_millis(),
                    ..Msg::default()
                });
            }
            Err(e) => self.reply_error(&msg.local_id, ErrorReason::BadToken, e.reason().as_str()),
        }
    }

    pub(super) fn reply_error(&self, local_id: &str, reason: ErrorReason, detail: &str) {
        self.state.metrics.frame_rejected(reason);
        self.reply(&Msg::error_reply(local_id, reason, detail));
    }

    /// Queues a reply to this connection, behind whatever is already queued for it.
    pub(super) fn reply(&self, msg: &Msg) {
        // A full queue marks this connection as a slow consumer; the loop then closes it.
        let _ = self.outbox.push(Frame::from(msg.encode()), Cursor::None);
    }

    /// Writes everything queued, flushing once per batch, until the outbox is empty.
    pub(super) async fn flush_outbox(&mut self) -> Option<Exit> {
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
pub(super) async fn write_batch(
    socket: &mut WebSocket,
    batch: &mut VecDeque<Outbound>,
) -> Result<(), axum::Error> {
    for o in batch.iter() {
        socket.feed(Message::Text(o.frame.clone())).await?;
    }
    socket.flush().await
}

/// Waits for the timer if there is one, forever otherwise.
pub(super) async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The timer that closes a connection with 4002 when its token expires (`None`: never).
fn expiry_timer(expires_at: Option<u64>) -> Option<Pin<Box<Sleep>>> {
    expires_at.map(|exp| {
        let left = Duration::from_secs(exp.saturating_sub(crate::clock::now_secs()));
        Box::pin(sleep(left))
    })
}
