//! The bench's messages: unique `local_id`s, and the send instant carried in each frame.

use tokio_tungstenite::tungstenite::Message;

use crate::pairs::Run;

/// A tag unique to this bench process, so `local_id`s never repeat across runs (the server
/// would take a repeat for an idempotent resend).
pub(crate) fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{:x}-{}", nanos, std::process::id())
    })
}

/// Message `seq` of a sender, created now.
pub(crate) fn message(run: &Run, to: &str, seq: u64, content: &str) -> Message {
    let at_micros = run.micros();
    let local_id = if run.random_ids {
        // Unique per sender (the first half is a bijection of the sequence number) and scattered.
        let mixed = |x: u64| {
            let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        format!("{:016x}{:016x}", mixed(seq), mixed(at_micros))
    } else {
        format!("{}-{seq}", run_tag())
    };
    let (local_id, create_time) = if run.zero_create_time {
        (format!("{local_id}{SENT_AT}{at_micros}"), 0)
    } else {
        (local_id, at_micros)
    };
    Message::text(format!(
        r#"{{"receiver_id":"{to}","local_id":"{local_id}","create_time":{create_time},"content":"{content}"}}"#
    ))
}

/// What precedes the send instant in a `local_id` (`pairs --zero-create-time`).
pub(crate) const SENT_AT: &str = "-at";

/// When a server frame's message was sent (µs since the bench started): its `create_time`, or
/// with `create_time` 0 the end of its `local_id`. Without a full JSON parse.
pub(crate) fn sent_at(frame: &str) -> Option<u64> {
    let number = |rest: &str| {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse::<u64>().ok()
    };
    match number(frame.split("\"create_time\":").nth(1)?)? {
        0 => {
            let local_id = frame.split("\"local_id\":\"").nth(1)?;
            let local_id = &local_id[..local_id.find('"')?];
            number(local_id.rsplit(SENT_AT).next()?)
        }
        at => Some(at),
    }
}

pub(crate) fn is_ack(frame: &str) -> bool {
    frame.contains("\"msg_type\":24")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn the_send_instant_comes_from_create_time_or_else_the_local_id() {
        let frame = |local_id: &str, create_time: u64| {
            format!(
                r#"{{"send_id":"s","receiver_id":"r","local_id":"{local_id}","server_id":"x","create_time":{create_time},"send_time":5,"seq":1,"msg_type":24}}"#
            )
        };
        assert_eq!(sent_at(&frame("run-7", 1234)), Some(1234));
        assert_eq!(sent_at(&frame("run-7-at1234567", 0)), Some(1_234_567));
        assert_eq!(sent_at(&frame("00ff-at-at42", 0)), Some(42));
        assert_eq!(sent_at(&frame("run-7", 0)), None);
        assert_eq!(sent_at(r#"{"content":"no times"}"#), None);
    }
}
