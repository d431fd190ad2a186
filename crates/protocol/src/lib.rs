//! # Natter wire protocol
//!
//! Everything that crosses the WebSocket is defined here and nowhere else: the [`Msg`] JSON
//! object (field for field the sandcat tutorial's), the numbering of `msg_type` and
//! `content_type`, the error reasons the server puts in error replies, and the close codes.
//! This crate does no I/O; `docs/protocol.md` is the prose version of this file.

use serde::{Deserialize, Serialize};

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
    /// Read receipt: `content` is the `server_id` of the last message read; every message from
    /// `receiver_id` to the reader up to it is marked read.
    pub const READ: i32 = 23;
    /// Server reply to a message the client sent: the ack, or an error reply
    /// (`content_type` [`super::content_type::ERROR`]).
    pub const REC_RESP: i32 = 24;
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

/// The message object, as JSON, in both directions.
///
/// Inbound, every field but `receiver_id` may be omitted (they default to empty / zero / false);
/// unknown fields are ignored. Outbound, every field is always present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    #[serde(default)]
    pub send_id: String,
    pub receiver_id: String,
    #[serde(default)]
    pub local_id: String,
    #[serde(default)]
    pub server_id: String,
    #[serde(default)]
    pub create_time: i64,
    #[serde(default)]
    pub send_time: i64,
    #[serde(default)]
    pub seq: i64,
    /// Natter's addition: the message's place in the sender's sent stream (0 until stored).
    /// Unknown to the tutorial's clients, which ignore it.
    #[serde(default)]
    pub send_seq: i64,
    #[serde(default)]
    pub msg_type: i32,
    #[serde(default)]
    pub content_type: i32,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub is_read: bool,
}

impl Msg {
    /// Serialises the message once; the result is shared by every device it goes to.
    pub fn encode(&self) -> String {
        self.encode_marked().0
    }

    /// The message's frame and its sender's ack (the same message with `msg_type` 24), for the
    /// cost of one encoding and a copy: the ack is the frame with the `msg_type` value replaced.
    pub fn encode_with_ack(&self) -> (String, String) {
        let (frame, at) = self.encode_marked();
        let mut ack = String::with_capacity(frame.len() + 2);
        ack.push_str(&frame[..at.start]);
        push_int(&mut ack, i64::from(msg_type::REC_RESP));
        ack.push_str(&frame[at.end..]);
        (frame, ack)
    }

    /// The JSON, and where in it the `msg_type` value is.
    fn encode_marked(&self) -> (String, std::ops::Range<usize>) {
        // Written by hand rather than through serde: the field names are constants here, where
        // serde_json escapes each of them again for every message. Byte for byte what
        // `serde_json::to_string` writes (tested).
        let strings = self.send_id.len()
            + self.receiver_id.len()
            + self.local_id.len()
            + self.server_id.len()
            + self.content.len();
        let mut out = String::with_capacity(256 + strings + strings / 8);
        out.push_str("{\"send_id\":");
        push_json_str(&mut out, &self.send_id);
        out.push_str(",\"receiver_id\":");
        push_json_str(&mut out, &self.receiver_id);
        out.push_str(",\"local_id\":");
        push_json_str(&mut out, &self.local_id);
        out.push_str(",\"server_id\":");
        push_json_str(&mut out, &self.server_id);
        out.push_str(",\"create_time\":");
        push_int(&mut out, self.create_time);
        out.push_str(",\"send_time\":");
        push_int(&mut out, self.send_time);
        out.push_str(",\"seq\":");
        push_int(&mut out, self.seq);
        out.push_str(",\"send_seq\":");
        push_int(&mut out, self.send_seq);
        out.push_str(",\"msg_type\":");
        let start = out.len();
        push_int(&mut out, i64::from(self.msg_type));
        let at = start..out.len();
        out.push_str(",\"content_type\":");
        push_int(&mut out, i64::from(self.content_type));
        out.push_str(",\"content\":");
        push_json_str(&mut out, &self.content);
        out.push_str(if self.is_read {
            ",\"is_read\":true}"
        } else {
            ",\"is_read\":false}"
        });
        (out, at)
    }

    /// The error reply to a client frame: `msg_type` 24, `content_type` 2, the reason in
    /// `content`, and the client's `local_id` so it can tell which message failed.
    pub fn error_reply(local_id: &str, reason: ErrorReason, detail: &str) -> Msg {
        let content = if detail.is_empty() {
            reason.as_str().to_owned()
        } else {
            format!("{}: {detail}", reason.as_str())
        };
        Msg {
            local_id: local_id.to_owned(),
            msg_type: msg_type::REC_RESP,
            content_type: content_type::ERROR,
            content,
            ..Msg::default()
        }
    }
}

/// Why a client frame was refused. The string form is the first word of an error reply's
/// `content` and the `reason` label of the `natter_frames_rejected_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// The text frame is not JSON.
    InvalidJson,
    /// JSON, but a field has the wrong type or a required field is missing.
    InvalidMsg,
    /// `receiver_id` is empty.
    MissingReceiver,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// The `msg_type` is not one a client may send.
    UnsupportedMsgType,
    /// `send_id` names somebody other than the authenticated user.
    SenderMismatch,
    /// The connection sends faster than its rate limit; the message was not accepted.
    RateLimited,
    /// The store could not commit the message: it was not accepted; send it again later.
    StoreUnavailable,
    /// A group message from somebody who is not a member (or to a group that does not exist).
    NotAMember,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 9] = [
        ErrorReason::InvalidJson,
        ErrorReason::InvalidMsg,
        ErrorReason::MissingReceiver,
        ErrorReason::BinaryNotSupported,
        ErrorReason::UnsupportedMsgType,
        ErrorReason::SenderMismatch,
        ErrorReason::RateLimited,
        ErrorReason::StoreUnavailable,
        ErrorReason::NotAMember,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::InvalidJson => "invalid_json",
            ErrorReason::InvalidMsg => "invalid_msg",
            ErrorReason::MissingReceiver => "missing_receiver",
            ErrorReason::BinaryNotSupported => "binary_not_supported",
            ErrorReason::UnsupportedMsgType => "unsupported_msg_type",
            ErrorReason::SenderMismatch => "sender_mismatch",
            ErrorReason::RateLimited => "rate_limited",
            ErrorReason::StoreUnavailable => "store_unavailable",
            ErrorReason::NotAMember => "not_a_member",
        }
    }
}

/// A client frame that could not be turned into a [`Msg`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct DecodeError {
    pub reason: ErrorReason,
    pub detail: String,
    /// The frame's `local_id`, when it could be recovered, so the error reply can carry it.
    pub local_id: String,
}

/// Decodes a client's text frame. Never panics, whatever the input.
pub fn decode_client_msg(text: &str) -> Result<Msg, DecodeError> {
    match serde_json::from_str::<Msg>(text) {
        Ok(msg) if msg.receiver_id.is_empty() => Err(DecodeError {
            reason: ErrorReason::MissingReceiver,
            detail: "receiver_id is empty".into(),
            local_id: msg.local_id,
        }),
        Ok(msg) => Ok(msg),
        Err(e) => {
            let reason = if e.is_syntax() || e.is_eof() {
                ErrorReason::InvalidJson
            } else if e.to_string().starts_with("missing field `receiver_id`") {
                ErrorReason::MissingReceiver
            } else {
                ErrorReason::InvalidMsg
            };
            Err(DecodeError {
                reason,
                detail: e.to_string(),
                local_id: recover_local_id(text),
            })
        }
    }
}

/// Best effort: the `local_id` of a frame that is JSON but not a valid [`Msg`].
fn recover_local_id(text: &str) -> String {
    #[derive(Deserialize)]
    struct LocalIdOnly {
        #[serde(default)]
        local_id: serde_json::Value,
    }
    match serde_json::from_str::<LocalIdOnly>(text) {
        Ok(LocalIdOnly {
            local_id: serde_json::Value::String(s),
        }) => s,
        _ => String::new(),
    }
}

/// Every `error` value of an HTTP refusal (the WebSocket upgrade and the HTTP API), with its
/// status. The body is `{"error": "<as_str>", "detail": "..."}`. The tables in
/// `docs/protocol.md` mirror this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpError {
    /// A path id too long, with control characters, or a user id with the group prefix.
    InvalidId,
    /// A query parameter that is not what the route takes.
    InvalidQuery,
    /// A request body that is not what the route takes.
    InvalidRequest,
    /// No token, and the server requires one.
    TokenMissing,
    /// Not a JWT, a wrong algorithm, or a required claim missing.
    TokenMalformed,
    /// `exp` has passed.
    TokenExpired,
    /// Signed with another key.
    TokenBadSignature,
    /// `iss` is not the configured issuer.
    TokenBadIssuer,
    /// `aud` does not include the configured audience.
    TokenBadAudience,
    /// `sub` is not the user id in the URL.
    TokenUserMismatch,
    /// The token is bound to another platform.
    TokenPlatformMismatch,
    /// A browser `Origin` the server does not allow.
    OriginForbidden,
    /// The caller is not a member of the group.
    NotAMember,
    /// Only the group's owner or an admin may do this.
    Forbidden,
    /// No such group.
    GroupNotFound,
    /// The server stores nothing (`storage.backend: none`).
    StorageDisabled,
    /// The group would exceed `groups.max_members`.
    GroupFull,
    /// A user would exceed `groups.max_groups_per_user`.
    TooManyGroups,
    /// The user holds `limits.max_connections_per_user` connections already.
    UserConnectionLimit,
    /// The node holds `limits.max_connections` connections.
    NodeConnectionLimit,
    /// The node is stopping.
    ServerShuttingDown,
    /// The store could not be read or written; try again.
    StoreUnavailable,
    /// The cluster's presence could not be read; try again.
    PresenceUnavailable,
}

impl HttpError {
    pub const ALL: [HttpError; 23] = [
        HttpError::InvalidId,
        HttpError::InvalidQuery,
        HttpError::InvalidRequest,
        HttpError::TokenMissing,
        HttpError::TokenMalformed,
        HttpError::TokenExpired,
        HttpError::TokenBadSignature,
        HttpError::TokenBadIssuer,
        HttpError::TokenBadAudience,
        HttpError::TokenUserMismatch,
        HttpError::TokenPlatformMismatch,
        HttpError::OriginForbidden,
        HttpError::NotAMember,
        HttpError::Forbidden,
        HttpError::GroupNotFound,
        HttpError::StorageDisabled,
        HttpError::GroupFull,
        HttpError::TooManyGroups,
        HttpError::UserConnectionLimit,
        HttpError::NodeConnectionLimit,
        HttpError::ServerShuttingDown,
        HttpError::StoreUnavailable,
        HttpError::PresenceUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpError::InvalidId => "invalid_id",
            HttpError::InvalidQuery => "invalid_query",
            HttpError::InvalidRequest => "invalid_request",
            HttpError::TokenMissing => "token_missing",
            HttpError::TokenMalformed => "token_malformed",
            HttpError::TokenExpired => "token_expired",
            HttpError::TokenBadSignature => "token_bad_signature",
            HttpError::TokenBadIssuer => "token_bad_issuer",
            HttpError::TokenBadAudience => "token_bad_audience",
            HttpError::TokenUserMismatch => "token_user_mismatch",
            HttpError::TokenPlatformMismatch => "token_platform_mismatch",
            HttpError::OriginForbidden => "origin_forbidden",
            HttpError::NotAMember => "not_a_member",
            HttpError::Forbidden => "forbidden",
            HttpError::GroupNotFound => "group_not_found",
            HttpError::StorageDisabled => "storage_disabled",
            HttpError::GroupFull => "group_full",
            HttpError::TooManyGroups => "too_many_groups",
            HttpError::UserConnectionLimit => "user_connection_limit",
            HttpError::NodeConnectionLimit => "node_connection_limit",
            HttpError::ServerShuttingDown => "server_shutting_down",
            HttpError::StoreUnavailable => "store_unavailable",
            HttpError::PresenceUnavailable => "presence_unavailable",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::InvalidId | HttpError::InvalidQuery | HttpError::InvalidRequest => 400,
            HttpError::TokenMissing
            | HttpError::TokenMalformed
            | HttpError::TokenExpired
            | HttpError::TokenBadSignature
            | HttpError::TokenBadIssuer
            | HttpError::TokenBadAudience
            | HttpError::TokenUserMismatch
            | HttpError::TokenPlatformMismatch => 401,
            HttpError::OriginForbidden | HttpError::NotAMember | HttpError::Forbidden => 403,
            HttpError::GroupNotFound | HttpError::StorageDisabled => 404,
            HttpError::GroupFull | HttpError::TooManyGroups => 409,
            HttpError::UserConnectionLimit => 429,
            HttpError::NodeConnectionLimit
            | HttpError::ServerShuttingDown
            | HttpError::StoreUnavailable
            | HttpError::PresenceUnavailable => 503,
        }
    }
}

/// WebSocket close codes the server uses. The table in `docs/protocol.md` mirrors this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (the client asked to close).
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1009: a frame or message was larger than `limits.max_message_size`.
    TooBig,
    /// 1011: the server hit an internal error.
    Internal,
    /// 4001: the same user logged in again on the same platform; this connection is replaced.
    Replaced,
    /// 4002: the token is missing, invalid or expired.
    BadToken,
    /// 4003: the client did not read its messages fast enough (outbound queue full).
    SlowConsumer,
    /// 4004: nothing received from the client within `heartbeat.timeout`.
    HeartbeatTimeout,
    /// 4005: the client kept sending faster than its rate limit allows.
    RateLimited,
}

impl CloseCode {
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Replaced,
        CloseCode::BadToken,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::RateLimited,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Replaced => 4001,
            CloseCode::BadToken => 4002,
            CloseCode::SlowConsumer => 4003,
            CloseCode::HeartbeatTimeout => 4004,
            CloseCode::RateLimited => 4005,
        }
    }

    /// The close frame's reason text (also the metric label).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "server_shutdown",
            CloseCode::TooBig => "message_too_big",
            CloseCode::Internal => "internal_error",
            CloseCode::Replaced => "logged_in_elsewhere",
            CloseCode::BadToken => "bad_token",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::RateLimited => "rate_limited",
        }
    }

    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// `s` as a JSON string, escaped as serde_json escapes: `"`, `\\` and the control characters
/// (the short forms where JSON has one, else `\u00XX`); everything else as it is.
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `n` in decimal.
fn push_int(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    for d in &digits[at..] {
        out.push(char::from(*d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUTORIAL_EXAMPLE: &str = r#"{
    "send_id": "123",
    "receiver_id": "124",
    "local_id": "",
    "server_id": "",
    "create_time": 0,
    "send_time": 0,
    "seq": 0,
    "msg_type": 0,
    "content_type": 0,
    "content": "hello world",
    "is_read": false
}"#;

    #[test]
    fn tutorial_example_decodes_and_round_trips() {
        let msg = decode_client_msg(TUTORIAL_EXAMPLE).unwrap();
        assert_eq!(msg.send_id, "123");
        assert_eq!(msg.receiver_id, "124");
        assert_eq!(msg.content, "hello world");
        let back: Msg = serde_json::from_str(&msg.encode()).unwrap();
        assert_eq!(back, msg);
    }

    fn any_msg() -> impl proptest::strategy::Strategy<Value = Msg> {
        use proptest::prelude::*;
        // Strings with quotes, backslashes, every control character and non-ASCII.
        let text = || "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}\u{2028}é😀]){0,12}";
        (
            (text(), text(), text(), text(), text()),
            (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()),
            (any::<i32>(), any::<i32>(), any::<bool>()),
        )
            .prop_map(|(s, n, t)| Msg {
                send_id: s.0,
                receiver_id: s.1,
                local_id: s.2,
                server_id: s.3,
                content: s.4,
                create_time: n.0,
                send_time: n.1,
                seq: n.2,
                send_seq: n.3,
                msg_type: t.0,
                content_type: t.1,
                is_read: t.2,
            })
    }

    proptest::proptest! {
        #[test]
        fn encode_writes_what_serde_json_writes(msg in any_msg()) {
            proptest::prop_assert_eq!(msg.encode(), serde_json::to_string(&msg).unwrap());
        }

        #[test]
        fn the_ack_is_the_message_encoded_with_msg_type_24(msg in any_msg()) {
            let ack = Msg { msg_type: msg_type::REC_RESP, ..msg.clone() };
            proptest::prop_assert_eq!(msg.encode_with_ack(), (msg.encode(), ack.encode()));
        }
    }

    #[test]
    fn encode_handles_the_extremes() {
        let msg = Msg {
            content: "\u{0}\u{1f}\"\\/\u{7f}".into(),
            create_time: i64::MIN,
            send_time: i64::MAX,
            seq: -1,
            msg_type: i32::MIN,
            ..Msg::default()
        };
        assert_eq!(msg.encode(), serde_json::to_string(&msg).unwrap());
    }

    #[test]
    fn only_receiver_is_required() {
        let msg = decode_client_msg(r#"{"receiver_id":"9","content":"x"}"#).unwrap();
        assert_eq!(msg.receiver_id, "9");
        assert_eq!(msg.msg_type, msg_type::SINGLE);
    }

    #[test]
    fn bad_frames_are_classified_and_keep_local_id() {
        let e = decode_client_msg("not json").unwrap_err();
        assert_eq!(e.reason, ErrorReason::InvalidJson);

        let e = decode_client_msg(r#"{"local_id":"L1","content":"x"}"#).unwrap_err();
        assert_eq!(e.reason, ErrorReason::MissingReceiver);
        assert_eq!(e.local_id, "L1");

        let e = decode_client_msg(r#"{"local_id":"L2","receiver_id":"1","seq":"x"}"#).unwrap_err();
        assert_eq!(e.reason, ErrorReason::InvalidMsg);
        assert_eq!(e.local_id, "L2");

        let e = decode_client_msg(r#"{"local_id":"L3","receiver_id":""}"#).unwrap_err();
        assert_eq!(e.reason, ErrorReason::MissingReceiver);
        assert_eq!(e.local_id, "L3");

        let e = decode_client_msg("[1,2]").unwrap_err();
        assert_eq!(e.reason, ErrorReason::InvalidMsg);
    }

    #[test]
    fn close_codes_are_unique_and_round_trip() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
    }

    #[test]
    fn error_reply_shape() {
        let m = Msg::error_reply("L", ErrorReason::InvalidJson, "eof");
        assert_eq!(m.msg_type, msg_type::REC_RESP);
        assert_eq!(m.content_type, content_type::ERROR);
        assert_eq!(m.content, "invalid_json: eof");
        assert_eq!(m.local_id, "L");
    }
}
