//! Replay: a connecting device asks for the history it missed (`?since_seq=N`,
//! `?since_send_seq=M`); the session writes it from the store straight to the socket before
//! going live. The session is registered first, so live frames queued meanwhile wait in its
//! outbox; those at or below what was replayed are dropped there. No gap, no duplicate.

use axum::extract::ws::Message;
use futures_util::SinkExt;
use natter_protocol::CloseCode;
use tokio::time::{Instant, timeout_at};

use crate::{outbox::Frame, query::non_negative_param, store::Stream};

use super::session::{Exit, Session};

/// What a connecting device asks to be replayed: `?since_seq=N` (inbox) and/or
/// `?since_send_seq=M` (what the user sent from other devices).
#[derive(Debug, Default, Clone, Copy)]
pub struct Replay {
    pub(super) since_seq: Option<i64>,
    pub(super) since_send_seq: Option<i64>,
}

impl Replay {
    pub(super) fn from_query(query: Option<&str>) -> Result<Replay, String> {
        Ok(Replay {
            since_seq: non_negative_param(query, "since_seq")?,
            since_send_seq: non_negative_param(query, "since_send_seq")?,
        })
    }
}

/// Messages fetched from the store per replay query.
pub(super) const REPLAY_PAGE: u32 = 500;

/// Most bytes of messages fetched per replay query ([`page_bytes`](crate::store::page_bytes)): what a replaying
/// connection holds of its history at once.
const REPLAY_PAGE_BYTES: usize = 512 * 1024;

impl Session {
    /// Sends the stored messages the device missed, before anything live. The session is
    /// registered already, so whatever is committed meanwhile waits in the outbox; copies of
    /// replayed messages are dropped from it by their cursor.
    pub(super) async fn replay(&mut self, replay: Replay) -> Result<(), Exit> {
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
                // One of the user's reads at once (`limits.reads_per_user`), however many
                // devices replay together: a replay waits for its turn.
                let reading = self.state.limits.read_wait(&self.user).await;
                let page = store
                    .page(&self.user, stream, after, REPLAY_PAGE, REPLAY_PAGE_BYTES)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "replay failed");
                        Exit::Close(CloseCode::Internal)
                    })?;
                drop(reading);
                if page.is_empty() {
                    break;
                }
                // A page is written within heartbeat.timeout, like every write: a client that
                // does not read its history is dropped, not waited for.
                let deadline = Instant::now() + self.state.config.heartbeat.timeout;
                for msg in &page {
                    after = match stream {
                        Stream::Inbox => msg.seq,
                        Stream::Sent => msg.send_seq,
                    };
                    let frame = Message::Text(Frame::from(msg.encode()));
                    match timeout_at(deadline, self.socket.feed(frame)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(Exit::Gone),
                        Err(_) => return Err(Exit::Close(CloseCode::SlowConsumer)),
                    }
                }
                match timeout_at(deadline, self.socket.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(Exit::Gone),
                    Err(_) => return Err(Exit::Close(CloseCode::SlowConsumer)),
                }
            }
            match stream {
                Stream::Inbox => self.replayed.0 = after,
                Stream::Sent => self.replayed.1 = after,
            }
        }
        Ok(())
    }
}
