//! The [`Msg`] JSON object and its encoding: serialised once, by hand, in the field order of
//! the tutorial's example.

use serde::{Deserialize, Serialize};

use crate::{ErrorReason, content_type, msg_type};

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
    /// Natter's addition: the conversation the message belongs to ([`crate::conversation`]):
    /// a group's id, or the id of a one-to-one pair. Set by the server; ignored from clients.
    #[serde(default)]
    pub conv_id: String,
    /// Natter's addition: the message's place in its conversation, the same for every
    /// participant (0: not an entry of the conversation, e.g. a read receipt). In a read
    /// receipt from a client: the conversation position read up to.
    #[serde(default)]
    pub conv_seq: i64,
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
            + self.conv_id.len()
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
        out.push_str(",\"conv_id\":");
        push_json_str(&mut out, &self.conv_id);
        out.push_str(",\"conv_seq\":");
        push_int(&mut out, self.conv_seq);
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

/// The sandcat tutorial's example message, byte for byte: part of the compatibility contract
/// (it must keep decoding, and its encoding keeps the tutorial's field order). Tests of every
/// crate use it.
pub const TUTORIAL_EXAMPLE: &str = r#"{
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CloseCode, decode_client_msg};

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
            (text(), text(), text(), text(), text(), text()),
            (
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
            ),
            (any::<i32>(), any::<i32>(), any::<bool>()),
        )
            .prop_map(|(s, n, t)| Msg {
                send_id: s.0,
                receiver_id: s.1,
                local_id: s.2,
                server_id: s.3,
                content: s.4,
                conv_id: s.5,
                conv_seq: n.4,
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
