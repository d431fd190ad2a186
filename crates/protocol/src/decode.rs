//! Decoding a client's text frame into a [`Msg`], total: every input gives a message or a
//! [`DecodeError`] with its reason.

use serde::Deserialize;

use crate::{
    ErrorReason, Msg, content_type,
    ids::{check_id, check_local_id, check_stored_text},
    msg_type,
};

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
    // serde also fills a struct from a JSON array, field by field in order: not a message.
    let is_object = text.trim_start().starts_with('{');
    match serde_json::from_str::<Msg>(text) {
        Ok(_) if !is_object => Err(DecodeError {
            reason: ErrorReason::InvalidMsg,
            detail: "a message is a JSON object".into(),
            local_id: String::new(),
        }),
        Ok(msg) if msg.receiver_id.is_empty() => Err(DecodeError {
            reason: ErrorReason::MissingReceiver,
            detail: "receiver_id is empty".into(),
            local_id: echoed(msg.local_id),
        }),
        Ok(msg) => match check_fields(&msg) {
            Ok(()) => Ok(msg),
            Err((reason, detail)) => Err(DecodeError {
                reason,
                detail,
                local_id: echoed(msg.local_id),
            }),
        },
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
                local_id: echoed(recover_local_id(text)),
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

/// The checks on a decoded message's fields: what is stored is bounded and storable, and the
/// values the server keeps for itself are refused.
fn check_fields(msg: &Msg) -> Result<(), (ErrorReason, String)> {
    let invalid = |field: &str, why: &str| (ErrorReason::InvalidMsg, format!("{field} {why}"));
    check_id(&msg.receiver_id).map_err(|why| invalid("receiver_id", why))?;
    check_local_id(&msg.local_id).map_err(|why| invalid("local_id", why))?;
    check_stored_text(&msg.content).map_err(|why| invalid("content", why))?;
    if is_server_msg_type(msg.msg_type) {
        return Err((
            ErrorReason::UnsupportedMsgType,
            format!("msg_type {} is sent by the server only", msg.msg_type),
        ));
    }
    if msg.content_type == content_type::ERROR {
        return Err(invalid(
            "content_type",
            "2 marks the server's error replies",
        ));
    }
    Ok(())
}

/// `msg_type` values only the server sends: group notices, conversation updates and acks.
fn is_server_msg_type(t: i32) -> bool {
    (msg_type::GROUP_CREATED..=msg_type::CONVERSATION_UPDATED).contains(&t)
        || t == msg_type::REC_RESP
}

/// The `local_id` an error reply may carry back: the client's, if it is a valid one.
fn echoed(local_id: String) -> String {
    if check_local_id(&local_id).is_ok() {
        local_id
    } else {
        String::new()
    }
}
