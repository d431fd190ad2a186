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
    cluster::Cluster,
    groups::{Audience, Groups, Notice, is_group_id},
    hub::{ConnId, Fanout, Hub},
    ids,
    metrics::{DropReason, Metrics},
    outbox::{Cursor, Frame},
    sequencer::{Sequencer, Stopped},
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
    groups: Option<Arc<Groups>>,
}

impl Messaging {
    pub fn new(
        delivery: Arc<Delivery>,
        sequencer: Option<Sequencer>,
        groups: Option<Arc<Groups>>,
    ) -> Messaging {
        Messaging {
            delivery,
            sequencer,
            groups,
        }
    }

    /// Stores and delivers a group notification (no connection gets an ack for it). Returns once
    /// it is stored and queued to this node's online devices of the audience, so a device that
    /// connects after an API call returns never receives that call's notice live.
    pub async fn notify(&self, notice: Notice) {
        let Notice { mut msg, audience } = notice;
        stamp(&mut msg);
        let Some(sequencer) = &self.sequencer else {
            return;
        };
        match sequencer.submit_and_wait(msg, audience).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "group notification could not be stored"),
            Err(Stopped) => {
                tracing::warn!("group notification dropped: the server is shutting down")
            }
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
            msg_type::GROUP if !is_group_id(&msg.receiver_id) => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "msg_type 1 goes to a group id (g_...)",
                ));
            }
            t if t != msg_type::GROUP && is_group_id(&msg.receiver_id) => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "messages to a group have msg_type 1",
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
        let audience = if msg.msg_type == msg_type::GROUP {
            Some(self.group_audience(&msg.receiver_id, origin.user).await?)
        } else {
            None
        };
        self.delivery.metrics.messages_received.increment(1);
        stamp(&mut msg);
        match &self.sequencer {
            None => {
                self.delivery.deliver(msg, origin.conn, None);
                Ok(())
            }
            Some(sequencer) => sequencer
                .submit(msg, origin.conn, audience)
                .await
                .map_err(|_| {
                    Refusal::new(ErrorReason::StoreUnavailable, "the server is shutting down")
                }),
        }
    }

    /// The members a group message goes to, if `user` may send to the group.
    async fn group_audience(&self, group_id: &str, user: &str) -> Result<Audience, Refusal> {
        let Some(groups) = &self.groups else {
            return Err(Refusal::new(
                ErrorReason::UnsupportedMsgType,
                "groups need storage (storage.backend: sqlite or postgres)",
            ));
        };
        let not_member = || {
            Refusal::new(
                ErrorReason::NotAMember,
                format!("you are not a member of {group_id}"),
            )
        };
        match groups.members(group_id).await {
            Ok(Some(members)) if members.role(user).is_some() => Ok(Audience {
                members,
                also: Vec::new(),
            }),
            Ok(_) => Err(not_member()),
            Err(e) => {
                tracing::error!(error = %e, "loading group members failed");
                Err(Refusal::new(ErrorReason::StoreUnavailable, "try again"))
            }
        }
    }
}

/// Server-side fields of an accepted message.
fn stamp(msg: &mut Msg) {
    msg.send_time = now_millis();
    msg.server_id = ids::message_id(msg.send_time).to_string();
    msg.seq = 0;
    msg.send_seq = 0;
    msg.is_read = false;
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

    /// Queues `frame` to `user`'s devices here, and publishes it for their devices elsewhere.
    fn to_user(&self, user: &str, frame: &Frame, cursor: Cursor, skip: Option<ConnId>) -> Fanout {
        if let Some(cluster) = self.cluster.get() {
            cluster.deliver(user, frame, cursor);
        }
        self.hub.send_to_user(user, frame, cursor, skip)
    }

    /// Delivers `msg` (stamped, and numbered when stored), then acks it to connection `conn`.
    /// A group message goes to every member's devices (the members as cached now, which a
    /// membership change on this node has refreshed; else those known when it was accepted).
    pub fn deliver(&self, msg: Msg, conn: ConnId, audience: Option<Audience>) {
        let (frame, ack) = msg.encode_with_ack();
        let (frame, ack) = (Frame::from(frame), Frame::from(ack));
        if let Some(audience) = audience {
            let members = self
                .groups
                .as_ref()
                .and_then(|g| g.cached(&msg.receiver_id))
                .unwrap_or(audience.members);
            let mut fanout = Fanout::default();
            for user in members.roles.keys() {
                let skip = (*user == msg.send_id).then_some(conn);
                fanout.add(self.hub.send_to_user(user, &frame, Cursor::None, skip));
            }
            for user in &audience.also {
                fanout.add(self.to_user(user, &frame, Cursor::None, None));
            }
            if let Some(cluster) = self.cluster.get() {
                cluster.deliver_group(&msg.receiver_id, &frame);
            }
            self.count_drops(fanout);
            self.reply_frame(&msg.send_id, conn, &ack);
            return;
        }
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

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
