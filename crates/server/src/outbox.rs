//! The bounded outbound queue of one connection.
//!
//! Producers (any task routing a message) push already-serialised frames; the connection's own
//! task drains everything queued in one go, writes it, and flushes once. A push never waits: when
//! the queue is full (in frames or in bytes) the connection is marked closed as a slow consumer
//! and the producer moves on, so one client that stops reading cannot slow anybody else down,
//! nor make the node hold more than the queue's bytes for it.
//!
//! This is a `std::sync::Mutex` around a `VecDeque` plus a `Notify`, rather than a tokio channel,
//! because it costs nothing until the first message (an idle connection holds ~100 bytes here,
//! a tokio mpsc channel allocates a 32-slot block up front), and because the owner can take the
//! whole batch with one lock. The lock is never held across an `.await`.

use std::{collections::VecDeque, sync::Mutex};

use natter_protocol::CloseCode;
use tokio::{sync::Notify, time::Instant};

/// A serialised text frame. Cloning it shares the bytes, so one message serialised once can be
/// queued to any number of connections.
pub type Frame = axum::extract::ws::Utf8Bytes;

/// Where a frame stands in the receiving user's streams, so a session replaying history can
/// drop live copies of what it has already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cursor {
    /// Not a stored message (acks, errors, unstored messages).
    #[default]
    None,
    /// A message in the user's inbox, with this `seq`.
    Inbox(i64),
    /// A message the user sent (a copy for their other devices), with this `send_seq`.
    Sent(i64),
}

/// One serialised frame waiting to be written, and when it was queued (for the latency metric).
#[derive(Debug, Clone)]
pub struct Outbound {
    pub frame: Frame,
    pub cursor: Cursor,
    pub queued_at: Instant,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    /// Bytes of the frames queued.
    bytes: usize,
    /// Set once; the owner closes the socket with this code after writing what is queued
    /// (for [`CloseCode::SlowConsumer`] it drops the queue instead).
    close: Option<CloseCode>,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue was full: the connection has now been marked as a slow consumer.
    Full,
    /// The connection is closing already.
    Closed,
}

impl Outbox {
    /// A queue of at most `capacity` frames and `max_bytes` bytes (a first frame always fits).
    pub fn new(capacity: usize, max_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity,
            max_bytes,
        }
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Frame, cursor: Cursor) -> Result<(), PushError> {
        let queued_at = Instant::now();
        {
            let mut state = self.lock();
            if state.close.is_some() {
                return Err(PushError::Closed);
            }
            let over_bytes = !state.queue.is_empty() && state.bytes + frame.len() > self.max_bytes;
            if state.queue.len() >= self.capacity || over_bytes {
                state.close = Some(CloseCode::SlowConsumer);
                state.queue = VecDeque::new();
                state.bytes = 0;
                drop(state);
                self.notify.notify_one();
                return Err(PushError::Full);
            }
            state.bytes += frame.len();
            state.queue.push_back(Outbound {
                frame,
                cursor,
                queued_at,
            });
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the owner to close the connection with `code`. The first request wins.
    pub fn close(&self, code: CloseCode) {
        {
            let mut state = self.lock();
            if state.close.is_some() {
                return;
            }
            state.close = Some(code);
        }
        self.notify.notify_one();
    }

    /// Waits until something was pushed or a close was requested since the last [`Self::drain`].
    /// Cancel-safe.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// The close request, if any, without taking the queue.
    pub fn close_requested(&self) -> Option<CloseCode> {
        self.lock().close
    }

    /// Moves every queued frame into `into` (which should be empty; its allocation is reused)
    /// and returns the close request, if any.
    pub fn drain(&self, into: &mut VecDeque<Outbound>) -> Option<CloseCode> {
        let mut state = self.lock();
        std::mem::swap(&mut state.queue, into);
        state.bytes = 0;
        state.close
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_marks_slow_consumer_and_refuses_more() {
        let outbox = Outbox::new(2, 1024);
        outbox.push(Frame::from_static("1"), Cursor::None).unwrap();
        outbox.push(Frame::from_static("2"), Cursor::None).unwrap();
        assert_eq!(
            outbox.push(Frame::from_static("3"), Cursor::None),
            Err(PushError::Full)
        );
        assert_eq!(
            outbox.push(Frame::from_static("4"), Cursor::None),
            Err(PushError::Closed)
        );
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), Some(CloseCode::SlowConsumer));
        assert!(batch.is_empty());
    }

    #[test]
    fn a_queue_full_in_bytes_marks_slow_consumer() {
        let outbox = Outbox::new(100, 10);
        let frame = || Frame::from("123456".to_owned());
        outbox.push(frame(), Cursor::None).unwrap();
        assert_eq!(outbox.push(frame(), Cursor::None), Err(PushError::Full));
        // A first frame larger than the bound is queued: a largest message always fits.
        let outbox = Outbox::new(100, 2);
        outbox.push(frame(), Cursor::None).unwrap();
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), None);
        batch.clear();
        outbox.push(frame(), Cursor::None).unwrap();
    }

    #[test]
    fn drain_takes_everything_in_order() {
        let outbox = Outbox::new(8, 1024);
        for i in 0..5u8 {
            outbox
                .push(Frame::from(i.to_string()), Cursor::None)
                .unwrap();
        }
        let mut batch = VecDeque::new();
        assert_eq!(outbox.drain(&mut batch), None);
        let got: Vec<&str> = batch.iter().map(|o| o.frame.as_str()).collect();
        assert_eq!(got, vec!["0", "1", "2", "3", "4"]);
        batch.clear();
        assert_eq!(outbox.drain(&mut batch), None);
        assert!(batch.is_empty());
    }

    #[test]
    fn first_close_wins() {
        let outbox = Outbox::new(1, 1024);
        outbox.close(CloseCode::Replaced);
        outbox.close(CloseCode::GoingAway);
        assert_eq!(
            outbox.drain(&mut VecDeque::new()),
            Some(CloseCode::Replaced)
        );
    }
}
