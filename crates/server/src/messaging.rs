//! What happens to a message a client sent: check it, stamp it, decide who gets it, queue it to
//! them, and build the sender's ack. The gateway calls [`Messaging::accept`] once per valid frame.
//!
//! This is the one place that knows the recipients of a message, so storage (stamp `seq`, commit
//! before acking) and the cluster router (devices on other nodes) plug in here.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use natter_protocol::{ErrorReason, Msg, msg_type};

use crate::{
    hub::{ConnId, Fanout, Hub},
    ids,
    metrics::{DropReason, Metrics},
    outbox::Frame,
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

#[derive(Debug)]
pub struct Messaging {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Messaging {
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>) -> Messaging {
        Messaging { hub, metrics }
    }

    /// Accepts `msg` from `origin`, delivers it, and returns the ack for the sending connection.
    pub fn accept(&self, origin: Origin<'_>, mut msg: Msg) -> Result<Msg, Refusal> {
        match msg.msg_type {
            msg_type::REC_RESP => {
                return Err(Refusal {
                    reason: ErrorReason::UnsupportedMsgType,
                    detail: "msg_type 24 is sent by the server only".into(),
                });
            }
            msg_type::GROUP => {
                return Err(Refusal {
                    reason: ErrorReason::UnsupportedMsgType,
                    detail: "group messages are not available on this server yet".into(),
                });
            }
            _ => {}
        }
        if msg.send_id.is_empty() {
            msg.send_id = origin.user.to_owned();
        } else if msg.send_id != origin.user {
            return Err(Refusal {
                reason: ErrorReason::SenderMismatch,
                detail: format!("send_id must be `{}` on this connection", origin.user),
            });
        }
        self.metrics.messages_received.increment(1);
        msg.send_time = now_millis();
        msg.server_id = ids::message_id(msg.send_time).to_string();

        let frame = Frame::from(msg.encode());
        let to_self = msg.receiver_id == msg.send_id;
        let mut fanout =
            self.hub
                .send_to_user(&msg.receiver_id, &frame, to_self.then_some(origin.conn));
        if !to_self {
            // The sender's other devices get a copy, so every device shows the conversation.
            fanout.add(
                self.hub
                    .send_to_user(origin.user, &frame, Some(origin.conn)),
            );
        }
        self.count_drops(fanout);

        msg.msg_type = msg_type::REC_RESP;
        Ok(msg)
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
