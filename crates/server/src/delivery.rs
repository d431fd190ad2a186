//! Putting accepted messages into outboxes: one serialisation per message, shared by every
//! device, then the ack to the sending connection. One-to-one messages and group messages take
//! separate paths ([`Delivery::direct`], [`Delivery::group`]); a refused message gets an error
//! reply ([`Refusal`]).

use std::sync::Arc;

use natter_protocol::{ErrorReason, Msg, msg_type};
use tokio::sync::oneshot;

use crate::{
    cluster::Cluster,
    groups::{Audience, Groups, Members},
    hub::{ConnId, Fanout, Hub},
    metrics::{DropReason, Metrics},
    outbox::{Cursor, Frame},
    push::Push,
};

/// Why a message was refused; becomes an error reply to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: ErrorReason,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(reason: ErrorReason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }
}

/// Where a message's ack (or error reply) goes.
#[derive(Debug)]
pub enum Reply {
    /// The connection that sent it.
    Conn(ConnId),
    /// An API call (the server API's send) waiting for the outcome.
    Api(oneshot::Sender<Result<Msg, Refusal>>),
}

impl Reply {
    /// The sending connection, which gets no copy of its own message.
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            Reply::Conn(conn) => Some(*conn),
            Reply::Api(_) => None,
        }
    }
}

/// Puts accepted messages into outboxes: one serialisation per message, shared by every device.
#[derive(Debug)]
pub struct Delivery {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    groups: Option<Arc<Groups>>,
    /// Set in cluster mode: every delivery is also published for the other nodes.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Set when the push webhook is on: stored messages for receivers with no device here are
    /// offered to it.
    push: std::sync::OnceLock<Arc<Push>>,
}

impl Delivery {
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, groups: Option<Arc<Groups>>) -> Delivery {
        Delivery {
            hub,
            metrics,
            groups,
            cluster: std::sync::OnceLock::new(),
            push: std::sync::OnceLock::new(),
        }
    }

    pub fn set_push(&self, push: Arc<Push>) {
        let _ = self.push.set(push);
    }

    /// `user` muted or unmuted a conversation (the push webhook reads it again).
    pub fn muted_changed(&self, user: &str) {
        if let Some(push) = self.push.get() {
            push.muted_changed(user);
        }
    }

    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Counts a message accepted from a client.
    pub fn messages_received(&self) {
        self.metrics.messages_received.increment(1);
    }

    /// Queues `frame` to `user`'s devices here, and publishes it for their devices elsewhere.
    fn to_user(&self, user: &str, frame: &Frame, cursor: Cursor, skip: Option<ConnId>) -> Fanout {
        if let Some(cluster) = self.cluster.get() {
            cluster.deliver(user, frame, cursor);
        }
        self.hub.send_to_user(user, frame, cursor, skip)
    }

    /// Delivers a one-to-one message (stamped, and numbered when stored) to the receiver's
    /// devices and the sender's other devices, then acks it to `reply`.
    pub fn direct(&self, msg: Msg, reply: Reply) {
        let (frame, ack) = msg.encode_with_ack();
        let (frame, ack) = (Frame::from(frame), Frame::from(ack));
        let to_self = msg.receiver_id == msg.send_id;
        let skip = reply.conn();
        let mut fanout = self.to_user(
            &msg.receiver_id,
            &frame,
            Cursor::Inbox(msg.seq),
            skip.filter(|_| to_self),
        );
        if let Some(push) = self.push.get()
            && fanout.queued == 0
            && fanout.slow == 0
        {
            push.offer(&msg, [msg.receiver_id.as_str()]);
        }
        if !to_self {
            // The sender's other devices get a copy, so every device shows the conversation.
            fanout.add(self.to_user(&msg.send_id, &frame, Cursor::Sent(msg.send_seq), skip));
        }
        self.count_drops(fanout);
        self.ack(msg, reply, &ack);
    }

    /// Sends `msg`'s ack (`frame`, already encoded) to `reply`.
    fn ack(&self, mut msg: Msg, reply: Reply, frame: &Frame) {
        match reply {
            Reply::Conn(conn) => self.reply_frame(&msg.send_id, conn, frame),
            Reply::Api(done) => {
                msg.msg_type = msg_type::REC_RESP;
                let _ = done.send(Ok(msg));
            }
        }
    }

    /// Delivers a stored group message to every member's devices (the members as cached now,
    /// which a membership change on this node has refreshed; else those of `audience`, known
    /// when it was accepted), and to `audience.also`. A member's message is acked to `from`
    /// (its connection skipped); a notice has no one to ack (`None`).
    pub fn group(&self, msg: Msg, audience: Audience, from: Option<Reply>) {
        let (frame, ack) = msg.encode_with_ack();
        let (frame, ack) = (Frame::from(frame), Frame::from(ack));
        let members = self
            .groups
            .as_ref()
            .and_then(|g| g.cached(&msg.receiver_id))
            .unwrap_or(audience.members);
        let mut offline = Vec::new();
        let mut fanout = self.to_members(
            &msg,
            &members,
            &frame,
            from.as_ref().and_then(Reply::conn),
            self.push.get().map(|_| &mut offline),
        );
        if let Some(push) = self.push.get() {
            push.offer(&msg, offline.iter().map(String::as_str));
        }
        for user in &audience.also {
            fanout.add(self.to_user(user, &frame, Cursor::None, None));
        }
        self.count_drops(fanout);
        if let Some(reply) = from {
            self.ack(msg, reply, &ack);
        }
    }

    /// Relays an ephemeral event to the receiver's devices online now (here and on other nodes);
    /// nothing is stored and nothing is acked.
    pub fn ephemeral_direct(&self, msg: Msg) {
        self.live(&msg.receiver_id, &msg, None);
    }

    /// Sends `msg` to `user`'s devices online now (here and on other nodes) but `skip`:
    /// nothing is stored, nothing is acked.
    pub fn live(&self, user: &str, msg: &Msg, skip: Option<ConnId>) {
        let frame = Frame::from(msg.encode());
        let fanout = self.to_user(user, &frame, Cursor::None, skip);
        self.count_drops(fanout);
    }

    /// Relays an ephemeral event to the devices of the group's members online now, except the
    /// sending connection; nothing is stored and nothing is acked.
    pub fn ephemeral_group(&self, msg: Msg, audience: &Audience, from: Option<ConnId>) {
        let frame = Frame::from(msg.encode());
        let fanout = self.to_members(&msg, &audience.members, &frame, from, None);
        self.count_drops(fanout);
    }

    /// Queues `frame` of the group message `msg` to every member's devices here (skipping the
    /// sender's connection `from`), and publishes it once for the other nodes.
    fn to_members(
        &self,
        msg: &Msg,
        members: &Members,
        frame: &Frame,
        from: Option<ConnId>,
        mut offline: Option<&mut Vec<String>>,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        for user in members.roles.keys() {
            let skip = from.filter(|_| *user == msg.send_id);
            let f = self.hub.send_to_user(user, frame, Cursor::None, skip);
            if let Some(offline) = offline.as_deref_mut()
                && f.queued == 0
                && f.slow == 0
            {
                offline.push(user.clone());
            }
            fanout.add(f);
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.deliver_group(&msg.receiver_id, frame);
        }
        fanout
    }

    /// Acks a message again with what was stored the first time (an idempotent resend), or
    /// acks a message that was not stored (a group read receipt).
    pub fn ack_duplicate(&self, mut original: Msg, reply: Reply) {
        original.msg_type = msg_type::REC_RESP;
        let frame = match reply {
            Reply::Conn(_) => Frame::from(original.encode()),
            Reply::Api(_) => Frame::from_static(""),
        };
        self.ack(original, reply, &frame);
    }

    /// An error reply to the sender.
    pub fn refuse(&self, user: &str, reply: Reply, local_id: &str, refusal: &Refusal) {
        self.metrics.frame_rejected(refusal.reason);
        match reply {
            Reply::Conn(conn) => {
                let msg = Msg::error_reply(local_id, refusal.reason, &refusal.detail);
                self.reply_frame(user, conn, &Frame::from(msg.encode()));
            }
            Reply::Api(done) => {
                let _ = done.send(Err(refusal.clone()));
            }
        }
    }

    fn reply_frame(&self, user: &str, conn: ConnId, frame: &Frame) {
        let f = self.hub.send_to_conn(user, conn, frame);
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
