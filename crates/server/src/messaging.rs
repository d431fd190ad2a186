//! What happens to a message a client sent: check it, stamp it, store it (when storage is on),
//! deliver it in order, and ack it. The gateway calls [`Messaging::accept`] once per valid frame.
//!
//! Without storage, a message is delivered and acked on the spot. With storage, it goes to the
//! [`Sequencer`](crate::sequencer::Sequencer), which commits batches and then hands them to
//! [`Delivery`] in commit order, so every receiver sees its inbox in `seq` order and the ack
//! (carrying `seq`) is sent only after the message is durable.
//!
//! This is the one place that knows the recipients of a message; groups and the cluster router
//! plug in here.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use natter_protocol::{ErrorReason, Msg, msg_type};

use crate::{
    hub::{ConnId, Fanout, Hub},
    ids,
    metrics::{DropReason, Metrics},
    outbox::{Cursor, Frame},
    sequencer::Sequencer,
};

/// The authenticated origin of a message: who sent it, from which connection.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub user: &'a str,
    pub conn: ConnId,
}

/// Why a message was refused; becomes an error reply to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ErrorReason,
    pub detail: String,
}

impl Refusal {
    fn new(reason: ErrorReason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

#[derive(Debug)]
pub struct Messaging {
    delivery: Arc<Delivery>,
    sequencer: Option<Sequencer>,
}

impl Messaging {
    pub fn new(delivery: Arc<Delivery>, sequencer: Option<Sequencer>) -> Messaging {
        Messaging {
            delivery,
            sequencer,
        }
    }

    /// Accepts `msg` from `origin`. On success the message is on its way and the ack will reach
    /// the sending connection; on refusal nothing was delivered.
    pub async fn accept(&self, origin: Origin<'_>, mut msg: Msg) -> Result<(), Refusal> {
        match msg.msg_type {
            msg_type::REC_RESP => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "msg_type 24 is sent by the server only",
                ));
            }
            msg_type::GROUP => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "group messages are not available on this server yet",
                ));
            }
            msg_type::READ if msg.content.is_empty() => {
                return Err(Refusal::new(
                    ErrorReason::InvalidMsg,
                    "a read receipt's content is the server_id of the last message read",
                ));
            }
            _ => {}
        }
        if msg.send_id.is_empty() {
            msg.send_id = origin.user.to_owned();
        } else if msg.send_id != origin.user {
            return Err(Refusal::new(
                ErrorReason::SenderMismatch,
                format!("send_id must be `{}` on this connection", origin.user),
            ));
        }
        self.delivery.metrics.messages_received.increment(1);
        msg.send_time = now_millis();
        msg.server_id = ids::message_id(msg.send_time).to_string();
        msg.seq = 0;
        msg.send_seq = 0;
        msg.is_read = false;
        match &self.sequencer {
            None => {
                self.delivery.deliver(msg, origin.conn);
                Ok(())
            }
            Some(sequencer) => sequencer.submit(msg, origin.conn).await.map_err(|_| {
                Refusal::new(ErrorReason::StoreUnavailable, "the server is shutting down")
            }),
        }
    }
}

/// Puts accepted messages into outboxes: one serialisation per message, shared by every device.
#[derive(Debug)]
pub struct Delivery {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Delivery {
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>) -> Delivery {
        Delivery { hub, metrics }
    }

    /// Delivers `msg` (stamped, and numbered when stored) to the receiver's devices and the
    /// sender's other devices, then acks it to connection `conn`.
    pub fn deliver(&self, mut msg: Msg, conn: ConnId) {
        let frame = Frame::from(msg.encode());
        let to_self = msg.receiver_id == msg.send_id;
        let mut fanout = self.hub.send_to_user(
            &msg.receiver_id,
            &frame,
            Cursor::Inbox(msg.seq),
            to_self.then_some(conn),
        );
        if !to_self {
            // The sender's other devices get a copy, so every device shows the conversation.
            fanout.add(self.hub.send_to_user(
                &msg.send_id,
                &frame,
                Cursor::Sent(msg.send_seq),
                Some(conn),
            ));
        }
        self.count_drops(fanout);
        msg.msg_type = msg_type::REC_RESP;
        self.reply(&msg.send_id, conn, &msg);
    }

    /// Acks a message again with what was stored the first time (an idempotent resend).
    pub fn ack_duplicate(&self, mut original: Msg, conn: ConnId) {
        original.msg_type = msg_type::REC_RESP;
        self.reply(&original.send_id, conn, &original);
    }

    /// An error reply to the sending connection.
    pub fn refuse(&self, user: &str, conn: ConnId, local_id: &str, refusal: &Refusal) {
        self.metrics.frame_rejected(refusal.reason);
        let reply = Msg::error_reply(local_id, refusal.reason, &refusal.detail);
        self.reply(user, conn, &reply);
    }

    fn reply(&self, user: &str, conn: ConnId, msg: &Msg) {
        let f = self
            .hub
            .send_to_conn(user, conn, &Frame::from(msg.encode()));
        self.metrics
            .dropped(DropReason::SlowConsumer, f.slow as u64);
    }

    fn count_drops(&self, fanout: Fanout) {
        self.metrics
            .dropped(DropReason::SlowConsumer, fanout.slow as u64);
        if fanout.queued == 0 && fanout.slow == 0 {
            self.metrics.dropped(DropReason::Offline, 1);
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
