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

use std::{sync::Arc, time::Duration};

use natter_protocol::{
    ErrorReason, Msg,
    conversation::{self, Change, Conversation},
    is_ephemeral, is_group_id, msg_type,
};

use crate::{
    budget::InFlight,
    clock::now_millis,
    config::BeforeSendConfig,
    delivery::{Delivery, Refusal, Reply},
    groups::{Audience, Groups, Notice},
    hub::ConnId,
    ids,
    sequencer::{Sequencer, Stopped},
    store::{HistoryFrom, Store, StoreError},
};

/// The authenticated origin of a message: who sent it, and where its ack goes (the sending
/// connection, or a server API call).
#[derive(Debug)]
pub struct Origin<'a> {
    pub user: &'a str,
    pub reply: Reply,
}

#[derive(Debug)]
pub struct Messaging {
    delivery: Arc<Delivery>,
    sequencer: Option<Sequencer>,
    groups: Option<Arc<Groups>>,
    store: Option<Arc<dyn Store>>,
    /// `messages.edit_window`.
    edit_window: Duration,
    /// `webhooks.before_send`, when it is on.
    before_send: Option<crate::hook::BeforeSend>,
}

impl Messaging {
    pub fn new(
        delivery: Arc<Delivery>,
        sequencer: Option<Sequencer>,
        groups: Option<Arc<Groups>>,
        store: Option<Arc<dyn Store>>,
        edit_window: Duration,
        before_send: &BeforeSendConfig,
    ) -> Messaging {
        Messaging {
            delivery,
            sequencer,
            groups,
            store,
            edit_window,
            before_send: crate::hook::BeforeSend::new(before_send),
        }
    }

    /// Tells `user`'s devices online now (but `skip`) that a conversation changed for them
    /// (`msg_type` 12, live only: the chat list holds the same for a device that was away).
    pub fn conversation_updated(
        &self,
        user: &str,
        conv_id: &str,
        change: serde_json::Value,
        skip: Option<ConnId>,
    ) {
        let mut msg = Msg {
            send_id: user.to_owned(),
            receiver_id: user.to_owned(),
            msg_type: msg_type::CONVERSATION_UPDATED,
            content: change.to_string(),
            ..Msg::default()
        };
        if change.get("muted").is_some() {
            self.delivery.muted_changed(user);
        }
        stamp(&mut msg);
        msg.conv_id = conv_id.to_owned();
        self.delivery.live(user, &msg, skip);
    }

    /// Moves `user`'s read position in a conversation to `upto` (never back, never past the
    /// last entry) and tells the user's other devices; in a one-to-one conversation, the peer's
    /// devices too (a read receipt, live). Returns the position asked for as kept, `None` if
    /// `user` is not in the conversation.
    pub async fn mark_read(
        &self,
        user: &str,
        conv: &Conversation,
        upto: i64,
        skip: Option<ConnId>,
    ) -> Result<Option<i64>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let conv_id = conv.id();
        let upto = upto.min(self.last_seq(store, &conv_id).await?);
        if upto < 1 {
            // Nothing in it yet: nothing to read.
            return Ok(Some(0));
        }
        if !store.mark_read(user, &conv_id, upto).await? {
            return Ok(None);
        }
        self.conversation_updated(
            user,
            &conv_id,
            serde_json::json!({ "read_seq": upto }),
            skip,
        );
        if let Some(peer) = conv.peer_of(user).filter(|peer| *peer != user) {
            let mut receipt = Msg {
                send_id: user.to_owned(),
                receiver_id: peer.to_owned(),
                msg_type: msg_type::READ,
                conv_seq: upto,
                ..Msg::default()
            };
            stamp(&mut receipt);
            self.delivery.live(peer, &receipt, None);
        }
        Ok(Some(upto))
    }

    /// A conversation's last `conv_seq` (0: none yet).
    async fn last_seq(&self, store: &Arc<dyn Store>, conv_id: &str) -> Result<i64, StoreError> {
        let last = store
            .history(conv_id, HistoryFrom::Before(i64::MAX), 0, 1, usize::MAX)
            .await?;
        Ok(last.last().map_or(0, |m| m.conv_seq))
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
    /// `origin.reply`; on refusal nothing was delivered.
    /// `inflight` is the message's share of its connection's budget (none for an API call):
    /// held until its ack is queued.
    pub async fn accept(
        &self,
        origin: Origin<'_>,
        mut msg: Msg,
        inflight: Option<InFlight>,
    ) -> Result<(), Refusal> {
        // Field checks (ids, reserved values) were made when the frame was decoded.
        let to_group = is_group_id(&msg.receiver_id);
        match msg.msg_type {
            msg_type::GROUP if !to_group => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "msg_type 1 goes to a group id (g_...)",
                ));
            }
            msg_type::GROUP | msg_type::READ | msg_type::RECALL | msg_type::EDIT => {}
            t if to_group && !is_ephemeral(t) => {
                return Err(Refusal::new(
                    ErrorReason::UnsupportedMsgType,
                    "messages to a group have msg_type 1 (or 23, 25, 26, 100-199)",
                ));
            }
            _ => {}
        }
        if msg.msg_type == msg_type::READ
            && msg.conv_seq <= 0
            && (to_group || msg.content.is_empty())
        {
            return Err(Refusal::new(
                ErrorReason::InvalidMsg,
                "a read receipt carries the conv_seq read up to (or, one-to-one, the server_id \
                 of the last message read as its content)",
            ));
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
            // Never stored: no store work, no number, no ack to a connection (an API call is
            // answered with the event as relayed); the budget comes back at once.
            drop(inflight);
            stamp(&mut msg);
            let relayed = match &origin.reply {
                Reply::Api(_) => Some(msg.clone()),
                Reply::Conn(_) => None,
            };
            if is_group_id(&msg.receiver_id) {
                let audience = self.group_audience(&msg.receiver_id, origin.user).await?;
                self.delivery
                    .ephemeral_group(msg, &audience, origin.reply.conn());
            } else {
                self.delivery.ephemeral_direct(msg);
            }
            if let (Reply::Api(done), Some(event)) = (origin.reply, relayed) {
                let _ = done.send(Ok(event));
            }
            return Ok(());
        }
        let stopped =
            |_| Refusal::new(ErrorReason::StoreUnavailable, "the server is shutting down");
        if msg.msg_type == msg_type::READ && !to_group && msg.conv_seq > 0 {
            // Never past the last entry, or entries still to come would count as read.
            if let Some(store) = &self.store {
                let conv_id = conversation::direct_id(origin.user, &msg.receiver_id);
                let last = self.last_seq(store, &conv_id).await.map_err(|e| {
                    tracing::error!(error = %e, "reading a conversation's last entry failed");
                    Refusal::new(ErrorReason::StoreUnavailable, "try again")
                })?;
                msg.conv_seq = msg.conv_seq.min(last);
            }
        }
        if to_group && msg.msg_type == msg_type::READ {
            // A member's read position: kept, not broadcast to the group.
            drop(inflight);
            return self.group_read(origin, msg).await;
        }
        if matches!(msg.msg_type, msg_type::RECALL | msg_type::EDIT) {
            self.check_change(origin.user, &msg).await?;
        }
        if let Some(hook) = &self.before_send
            && msg.msg_type != msg_type::READ
        {
            hook.ask(&mut msg).await?;
        }
        if to_group {
            // Groups need storage: `group_audience` refuses without it.
            let audience = self.group_audience(&msg.receiver_id, origin.user).await?;
            let Some(sequencer) = &self.sequencer else {
                return Err(stopped(Stopped));
            };
            self.delivery.messages_received();
            stamp(&mut msg);
            return sequencer
                .submit_group(msg, origin.reply, audience, inflight)
                .await
                .map_err(stopped);
        }
        self.delivery.messages_received();
        stamp(&mut msg);
        match &self.sequencer {
            None => {
                self.delivery.direct(msg, origin.reply);
                Ok(())
            }
            Some(sequencer) => sequencer
                .submit_direct(msg, origin.reply, inflight)
                .await
                .map_err(stopped),
        }
    }

    /// A read receipt to a group: moves the member's read position, tells the member's other
    /// devices, and acks it (nothing is stored in the group's stream).
    async fn group_read(&self, origin: Origin<'_>, mut msg: Msg) -> Result<(), Refusal> {
        self.group_audience(&msg.receiver_id, origin.user).await?;
        let conv = Conversation::Group(msg.receiver_id.clone());
        match self
            .mark_read(origin.user, &conv, msg.conv_seq, origin.reply.conn())
            .await
        {
            Ok(Some(upto)) => {
                stamp(&mut msg);
                msg.conv_seq = upto;
                self.delivery.ack_duplicate(msg, origin.reply);
                Ok(())
            }
            Ok(None) => Err(Refusal::new(
                ErrorReason::NotAMember,
                format!("you are not a member of {}", msg.receiver_id),
            )),
            Err(e) => {
                tracing::error!(error = %e, "storing a read position failed");
                Err(Refusal::new(ErrorReason::StoreUnavailable, "try again"))
            }
        }
    }

    /// Whether `user` may recall or edit the entry a change names: their own, not a recall or
    /// an edit itself, not recalled, sent within `messages.edit_window`.
    async fn check_change(&self, user: &str, msg: &Msg) -> Result<(), Refusal> {
        let not_editable = |why: &str| Refusal::new(ErrorReason::NotEditable, why.to_owned());
        let Some(change) = Change::parse(&msg.content) else {
            return Err(Refusal::new(
                ErrorReason::InvalidMsg,
                "a recall's content is {\"conv_seq\": N}, an edit's {\"conv_seq\": N, \
                 \"content\": \"...\"}",
            ));
        };
        if msg.msg_type == msg_type::EDIT && change.content.is_none() {
            return Err(Refusal::new(
                ErrorReason::InvalidMsg,
                "an edit carries the new content",
            ));
        }
        let Some(store) = &self.store else {
            return Err(not_editable(
                "nothing is stored here (storage.backend: none)",
            ));
        };
        let conv_id = conversation::id_of(&Msg {
            send_id: user.to_owned(),
            ..msg.clone()
        });
        let target = store
            .history(
                &conv_id,
                HistoryFrom::After(change.conv_seq - 1),
                0,
                1,
                usize::MAX,
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading an entry to change failed");
                Refusal::new(ErrorReason::StoreUnavailable, "try again")
            })?;
        let Some(target) = target.into_iter().find(|m| m.conv_seq == change.conv_seq) else {
            return Err(not_editable("no such entry in this conversation"));
        };
        if target.send_id != user {
            return Err(not_editable("only its sender may change an entry"));
        }
        if matches!(target.msg_type, msg_type::RECALL | msg_type::EDIT)
            || (msg_type::GROUP_CREATED..=msg_type::CONVERSATION_UPDATED).contains(&target.msg_type)
        {
            return Err(not_editable(
                "a recall, an edit or a notice cannot be changed",
            ));
        }
        let window = i64::try_from(self.edit_window.as_millis()).unwrap_or(i64::MAX);
        if now_millis().saturating_sub(target.send_time) > window {
            return Err(not_editable("older than messages.edit_window"));
        }
        Ok(())
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

/// Server-side fields of an accepted message. A read receipt keeps its `conv_seq` (the
/// position read up to); anything else gets its number when stored.
fn stamp(msg: &mut Msg) {
    msg.send_time = now_millis();
    msg.server_id = ids::message_id(msg.send_time).to_string();
    msg.seq = 0;
    msg.send_seq = 0;
    msg.conv_id = conversation::id_of(msg);
    if msg.msg_type != msg_type::READ {
        msg.conv_seq = 0;
    }
    msg.is_read = false;
}
