//! Decoding a client's text frame into a [`Msg`], total: every input gives a message or a
//! [`DecodeError`] with its reason.

use serde::Deserialize;

use crate::{ErrorReason, Msg};

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
