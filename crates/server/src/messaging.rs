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

use std::sync::Arc;

use natter_protocol::{ErrorReason, Msg, is_ephemeral, is_group_id, msg_type};

use crate::{
    budget::InFlight,
    clock::now_millis,
    delivery::{Delivery, Refusal},
    groups::{Audience, Groups, Notice},
    hub::ConnId,
    ids,
    sequencer::{Sequencer, Stopped},
};

/// The authenticated origin of a message: who sent it, from which connection.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub user: &'a str,
    pub conn: ConnId,
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
        match sequencer.submit_notice(msg, audience).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "group notification could not be stored"),
            Err(Stopped) => {
                tracing::warn!("group notification dropped: the server is shutting down")
            }
        }
    }

    /// Accepts `msg` from `origin`. On success the message is on its way and the ack will reach
    /// the sending connection; on refusal nothing was delivered.
    /// `inflight` is the message's share of its connection's budget: held until its ack is
    /// queued.
    pub async fn accept(
        &self,
        origin: Origin<'_>,
        mut msg: Msg,
        inflight: InFlight,
    ) -> Result<(), Refusal> {
        // Field checks (ids, reserved values) were made when the frame was decoded.
        match msg.msg_type {
            msg_type::GROUP if !is_group_id(&msg.receiver_id) => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "msg_type 1 goes to a group id (g_...)",
                ));
            }
            t if t != msg_type::GROUP && !is_ephemeral(t) && is_group_id(&msg.receiver_id) => {
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
        if is_ephemeral(msg.msg_type) {
            // Never stored: no store work, no number, no ack; the budget comes back at once.
            drop(inflight);
            stamp(&mut msg);
            if is_group_id(&msg.receiver_id) {
                let audience = self.group_audience(&msg.receiver_id, origin.user).await?;
                self.delivery.ephemeral_group(msg, &audience, origin.conn);
            } else {
                self.delivery.ephemeral_direct(msg);
            }
            return Ok(());
        }
        let stopped =
            |_| Refusal::new(ErrorReason::StoreUnavailable, "the server is shutting down");
        if msg.msg_type == msg_type::GROUP {
            // Groups need storage: `group_audience` refuses without it.
            let audience = self.group_audience(&msg.receiver_id, origin.user).await?;
            let Some(sequencer) = &self.sequencer else {
                return Err(stopped(Stopped));
            };
            self.delivery.messages_received();
            stamp(&mut msg);
            return sequencer
                .submit_group(msg, origin.conn, audience, inflight)
                .await
                .map_err(stopped);
        }
        self.delivery.messages_received();
        stamp(&mut msg);
        match &self.sequencer {
            None => {
                self.delivery.direct(msg, origin.conn);
                Ok(())
            }
            Some(sequencer) => sequencer
                .submit_direct(msg, origin.conn, inflight)
                .await
                .map_err(stopped),
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
