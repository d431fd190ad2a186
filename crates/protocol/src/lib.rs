//! # Natter wire protocol
//!
//! Everything that crosses the WebSocket is defined here and nowhere else: the [`Msg`] JSON
//! object (field for field the sandcat tutorial's), the numbering of `msg_type` and
//! `content_type`, the error reasons the server puts in error replies, and the close codes.
//! This crate does no I/O; `docs/protocol.md` is the prose version of this file.

mod codes;
pub mod conversation;
mod decode;
pub mod ids;
mod msg;

pub use codes::{CloseCode, ErrorReason, HttpError};
pub use decode::{DecodeError, decode_client_msg};
pub use msg::{Msg, TUTORIAL_EXAMPLE};

/// Values of [`Msg::msg_type`] (sandcat numbering).
pub mod msg_type {
    /// One-to-one chat message.
    pub const SINGLE: i32 = 0;
    /// Group chat message (`receiver_id` is the group id, `seq` the group's sequence).
    pub const GROUP: i32 = 1;
    /// Group notices, sent by the server into a group's stream (sandcat's numbers 2-5 and 8;
    /// 9 and 10 are Natter's). The group was created (content lists the members).
    pub const GROUP_CREATED: i32 = 2;
    /// Members were added.
    pub const GROUP_MEMBERS_ADDED: i32 = 3;
    /// A member left.
    pub const GROUP_MEMBER_LEFT: i32 = 4;
    /// The group was dissolved.
    pub const GROUP_DISSOLVED: i32 = 5;
    /// The group was renamed.
    pub const GROUP_RENAMED: i32 = 8;
    /// A member was removed by an owner or admin.
    pub const GROUP_MEMBER_REMOVED: i32 = 9;
    /// A member's role changed.
    pub const GROUP_ROLE_CHANGED: i32 = 10;
    /// Users were invited (`groups.invite: accept`); they become members once they accept.
    /// Delivered to the members and to the invitees.
    pub const GROUP_INVITED: i32 = 11;
    /// A conversation changed for the user (Natter's; sent by the server to the user's own
    /// devices, live, not stored): `conv_id` names it and `content` is a JSON object of what
    /// changed: `read_seq` (read on another device), `pinned`, `muted`, `hidden` (entries
    /// deleted for the user). The chat list API has the same state for a device that was away.
    pub const CONVERSATION_UPDATED: i32 = 12;
    /// Token refresh (Natter's): a client sends a new token for itself on its open connection
    /// (`content`; `receiver_id` is its own user id) before the old one expires. Acked; the
    /// session then lasts until the new token's expiry. Never stored or relayed.
    pub const TOKEN_REFRESH: i32 = 13;
    /// Read receipt: `content` is the `server_id` of the last message read; every message from
    /// `receiver_id` to the reader up to it is marked read. With `conv_seq` (Natter's), it also
    /// moves the reader's read position in the conversation to it; to a group, only that (it
    /// is not stored in the group's stream).
    pub const READ: i32 = 23;
    /// Recall (Natter's): the sender takes back an entry of the conversation for everyone
    /// within `messages.edit_window`; `content` is `{"conv_seq": N}`
    /// ([`crate::conversation::Change`]). Stored as an entry; the recalled entry's content is
    /// erased.
    pub const RECALL: i32 = 25;
    /// Edit (Natter's): the sender replaces an entry's content within `messages.edit_window`;
    /// `content` is `{"conv_seq": N, "content": "new text"}`. Stored as an entry; the entry
    /// shows the new content.
    pub const EDIT: i32 = 26;
    /// Ephemeral events (typing, "recording", call signalling): `msg_type` 100 to 199, the
    /// application's to number. Relayed to the online devices of the receiver (or the group's
    /// members), never stored, numbered, acknowledged or replayed.
    pub const EPHEMERAL_FIRST: i32 = 100;
    /// The last ephemeral `msg_type`.
    pub const EPHEMERAL_LAST: i32 = 199;
    /// Server reply to a message the client sent: the ack, or an error reply
    /// (`content_type` [`super::content_type::ERROR`]).
    pub const REC_RESP: i32 = 24;
}

/// Whether a `msg_type` is an ephemeral event ([`msg_type::EPHEMERAL_FIRST`] to
/// [`msg_type::EPHEMERAL_LAST`]).
pub fn is_ephemeral(msg_type: i32) -> bool {
    (msg_type::EPHEMERAL_FIRST..=msg_type::EPHEMERAL_LAST).contains(&msg_type)
}

/// Prefix of every group id; reserved: no user id may start with it.
pub const GROUP_PREFIX: &str = "g_";

/// Whether `id` names a group.
pub fn is_group_id(id: &str) -> bool {
    id.starts_with(GROUP_PREFIX)
}

/// Values of [`Msg::content_type`] that the server itself gives meaning to. Every other value is
/// the application's and is carried through untouched.
pub mod content_type {
    /// Plain content, no special meaning.
    pub const DEFAULT: i32 = 0;
    /// Plain text.
    pub const TEXT: i32 = 1;
    /// Error reply: `content` holds `"<reason>: <detail>"`.
    pub const ERROR: i32 = 2;
}
