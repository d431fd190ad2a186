//! Putting accepted messages into outboxes: one serialisation per message, shared by every
//! device, then the ack to the sending connection. One-to-one messages and group messages take
//! separate paths ([`Delivery::direct`], [`Delivery::group`]); a refused message gets an error
//! reply ([`Refusal`]).

use std::sync::Arc;

use natter_protocol::{ErrorReason, Msg, msg_type};

use crate::{
    cluster::Cluster,
    groups::{Audience, Groups, Members},
    hub::{ConnId, Fanout, Hub},
    metrics::{DropReason, Metrics},
    outbox::{Cursor, Frame},
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

/// Puts accepted messages into outboxes: one serialisation per message, shared by every device.
#[derive(Debug)]
pub struct Delivery {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    groups: Option<Arc<Groups>>,
    /// Set in cluster mode: every delivery is also published for the other nodes.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
}

impl Delivery {
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, groups: Option<Arc<Groups>>) -> Delivery {
        Delivery {
            hub,
            metrics,
            groups,
            cluster: std::sync::OnceLock::new(),
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
    /// devices and the sender's other devices, then acks it to connection `conn`.
    pub fn direct(&self, msg: Msg, conn: ConnId) {
        let (frame, ack) = msg.encode_with_ack();
        let (frame, ack) = (Frame::from(frame), Frame::from(ack));
        let to_self = msg.receiver_id == msg.send_id;
        let mut fanout = self.to_user(
            &msg.receiver_id,
            &frame,
            Cursor::Inbox(msg.seq),
            to_self.then_some(conn),
        );
        if !to_self {
            // The sender's other devices get a copy, so every device shows the conversation.
            fanout.add(self.to_user(&msg.send_id, &frame, Cursor::Sent(msg.send_seq), Some(conn)));
        }
        self.count_drops(fanout);
        self.reply_frame(&msg.send_id, conn, &ack);
    }

    /// Delivers a stored group message to every member's devices (the members as cached now,
    /// which a membership change on this node has refreshed; else those of `audience`, known
    /// when it was accepted), and to `audience.also`. A member's message is acked to its
    /// connection `from` (and skipped there); a notice has no connection (`None`).
    pub fn group(&self, msg: Msg, audience: Audience, from: Option<ConnId>) {
        let (frame, ack) = msg.encode_with_ack();
        let (frame, ack) = (Frame::from(frame), Frame::from(ack));
        let members = self
            .groups
            .as_ref()
            .and_then(|g| g.cached(&msg.receiver_id))
            .unwrap_or(audience.members);
        let mut fanout = self.to_members(&msg, &members, &frame, from);
        for user in &audience.also {
            fanout.add(self.to_user(user, &frame, Cursor::None, None));
        }
        self.count_drops(fanout);
        if let Some(conn) = from {
            self.reply_frame(&msg.send_id, conn, &ack);
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
    pub fn ephemeral_group(&self, msg: Msg, audience: &Audience, from: ConnId) {
        let frame = Frame::from(msg.encode());
        let fanout = self.to_members(&msg, &audience.members, &frame, Some(from));
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
    ) -> Fanout {
        let mut fanout = Fanout::default();
        for user in members.roles.keys() {
            let skip = from.filter(|_| *user == msg.send_id);
            fanout.add(self.hub.send_to_user(user, frame, Cursor::None, skip));
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.deliver_group(&msg.receiver_id, frame);
        }
        fanout
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
        self.reply_frame(user, conn, &Frame::from(msg.encode()));
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
