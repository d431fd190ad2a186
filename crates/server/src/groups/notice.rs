//! Membership-change notices: group messages from the server, numbered in the group's stream.

use std::sync::Arc;

use natter_protocol::Msg;

use super::{Audience, Members};
use crate::store::Group;

/// Users a notice names at most (a notice of a 20,000-member group stays a few KB).
const NOTICE_USERS: usize = 100;

/// A membership-change notification: a group message from the actor, and who gets it.
#[derive(Debug)]
pub struct Notice {
    pub msg: Msg,
    pub audience: Audience,
}

impl Notice {
    pub(super) fn new(
        group: &Group,
        actor: &str,
        kind: i32,
        users: &[String],
        members: &Arc<Members>,
    ) -> Notice {
        // Bounded whatever the group's size: the first users, and how many there are.
        let content = serde_json::json!({
            "group_id": group.group_id,
            "name": group.name,
            "actor": actor,
            "users": &users[..users.len().min(NOTICE_USERS)],
            "count": users.len(),
        });
        Notice {
            msg: Msg {
                send_id: actor.to_owned(),
                receiver_id: group.group_id.clone(),
                msg_type: kind,
                content: content.to_string(),
                ..Msg::default()
            },
            audience: Audience {
                members: members.clone(),
                also: Vec::new(),
            },
        }
    }
}
