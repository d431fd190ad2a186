//! A compact binary form of stored messages, for the SQLite store's blobs (a batch in the log, a
//! chunk of an inbox or sent stream in `natter.db`): one blob per many messages instead of a row
//! and index entries per message.
//!
//! Format: a kind byte, then the messages, each as its strings (`server_id`, `send_id`,
//! `receiver_id`, `local_id`, `content`) and its numbers (`seq`, `send_seq`, `create_time`,
//! `send_time`, `msg_type`, `content_type`, `conv_seq`; zigzag LEB128), each field relative to the message
//! before it in the blob. A string is a LEB128 tag: 0 = the same as the message before's, 1 = a
//! UUID in canonical lowercase form, as its 16 bytes, n >= 2 = n - 2 UTF-8 bytes follow. The
//! first four numbers are differences from the message before's (wrapping). In a chunk the
//! owner's id repeats, seq and send_seq mostly step by one and the times by little, and server
//! ids are UUIDs, so a message takes few bytes. `is_read` is not stored: it is derived from the
//! read marks; nor is `conv_id`, which follows from the sender and the receiver.
//!
//! Kinds: [`MESSAGES`] (whole messages: log batches, inbox chunks) and [`REFERENCES`] (the sent
//! and conversation chunks, [`pack_refs`]): the same layout with only what points at a message
//! and makes its resend key (`send_id`, `receiver_id`, `local_id`, `seq`, `send_seq`,
//! `create_time`, `conv_seq`; the other fields are written as empty and zero). The kinds of the
//! first schema ([`MESSAGES_V1`], [`REFERENCES_V1`]) have no `conv_seq` (read as 0). The message itself is in the receiver's inbox at `seq`
//! ([`is_refs`] tells the reader to look it up there), so a message's content is stored once.

use natter_protocol::{Msg, conversation};

use crate::store::StoreError;

/// Whole messages, without `conv_seq` (written before conversations; read only).
const MESSAGES_V1: u8 = 2;
/// References, without `conv_seq` (read only).
const REFERENCES_V1: u8 = 3;
/// Whole messages.
const MESSAGES: u8 = 4;
/// References: the same layout, only the fields that find a message and its resend key.
const REFERENCES: u8 = 5;

/// String tags.
const SAME: u64 = 0;
const UUID: u64 = 1;
const BYTES: u64 = 2;

/// `msgs` as one blob.
pub(super) fn pack<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> Vec<u8> {
    pack_as(msgs, MESSAGES)
}

/// References to `msgs`: what [`unpack`] gives back has `send_id`, `receiver_id`,
/// `local_id`, `seq`, `send_seq` and `create_time`; the rest is empty or zero.
pub(super) fn pack_refs<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> Vec<u8> {
    pack_as(msgs, REFERENCES)
}

/// Whether `blob` holds references ([`pack_refs`]) rather than messages.
pub(super) fn is_refs(blob: &[u8]) -> bool {
    matches!(blob.first(), Some(&(REFERENCES | REFERENCES_V1)))
}

fn pack_as<'a>(msgs: impl IntoIterator<Item = &'a Msg>, kind: u8) -> Vec<u8> {
    let refs = kind == REFERENCES;
    let mut out = Vec::with_capacity(256);
    out.push(kind);
    let empty = Msg::default();
    let mut prev = &empty;
    for m in msgs {
        for (s, before, kept) in [
            (&m.server_id, &prev.server_id, !refs),
            (&m.send_id, &prev.send_id, true),
            (&m.receiver_id, &prev.receiver_id, true),
            (&m.local_id, &prev.local_id, true),
            (&m.content, &prev.content, !refs),
        ] {
            if !kept || s == before {
                // A reference's left-out fields stay those of the empty message before the first.
                put_uint(&mut out, SAME);
            } else if let Some(bytes) = uuid_bytes(s) {
                put_uint(&mut out, UUID);
                out.extend_from_slice(&bytes);
            } else {
                put_uint(&mut out, s.len() as u64 + BYTES);
                out.extend_from_slice(s.as_bytes());
            }
        }
        let (send_time, msg_type, content_type) = if refs {
            (0, 0, 0)
        } else {
            (
                m.send_time.wrapping_sub(prev.send_time),
                i64::from(m.msg_type),
                i64::from(m.content_type),
            )
        };
        for n in [
            m.seq.wrapping_sub(prev.seq),
            m.send_seq.wrapping_sub(prev.send_seq),
            m.create_time.wrapping_sub(prev.create_time),
            send_time,
            msg_type,
            content_type,
            m.conv_seq.wrapping_sub(prev.conv_seq),
        ] {
            put_int(&mut out, n);
        }
        prev = m;
    }
    out
}

/// The messages of a blob made by [`pack`], or the references of one made by [`pack_refs`].
pub(super) fn unpack(blob: &[u8]) -> Result<Vec<Msg>, StoreError> {
    unpack_where(blob, |_, _| true)
}

/// The messages of a blob whose `(seq, conv_seq)` `keep` accepts, in order. The others are read
/// past without being built (their strings stay slices of the blob), so finding a few messages
/// in a large chunk costs little more than reading through its bytes.
pub(super) fn unpack_where(
    blob: &[u8],
    mut keep: impl FnMut(i64, i64) -> bool,
) -> Result<Vec<Msg>, StoreError> {
    let mut r = Reader { blob, at: 1 };
    let with_conv_seq = match blob.first() {
        Some(&MESSAGES | &REFERENCES) => true,
        Some(&MESSAGES_V1 | &REFERENCES_V1) => false,
        other => return Err(corrupt(format!("unknown blob kind {other:?}"))),
    };
    let mut msgs: Vec<Msg> = Vec::new();
    // The message before, as read: its strings, then its numbers.
    let mut strings = [Raw::Text(&[]); 5];
    let mut numbers = [0i64; 5];
    while r.at < blob.len() {
        for s in &mut strings {
            *s = r.field(*s)?;
        }
        let [seq, send_seq, create_time, send_time, conv_seq] = &mut numbers;
        *seq = r.number(*seq)?;
        *send_seq = r.number(*send_seq)?;
        *create_time = r.number(*create_time)?;
        *send_time = r.number(*send_time)?;
        let msg_type = r.small()?;
        let content_type = r.small()?;
        if with_conv_seq {
            *conv_seq = r.number(*conv_seq)?;
        }
        if !keep(*seq, *conv_seq) {
            continue;
        }
        let [server_id, send_id, receiver_id, local_id, content] = strings;
        let mut m = Msg {
            server_id: server_id.string()?,
            send_id: send_id.string()?,
            receiver_id: receiver_id.string()?,
            local_id: local_id.string()?,
            content: content.string()?,
            seq: *seq,
            send_seq: *send_seq,
            create_time: *create_time,
            send_time: *send_time,
            msg_type,
            content_type,
            conv_seq: *conv_seq,
            conv_id: String::new(),
            is_read: false,
        };
        m.conv_id = conversation::id_of(&m);
        msgs.push(m);
    }
    Ok(msgs)
}

/// A string field as the blob holds it: a UUID's 16 bytes, or UTF-8 bytes (checked when built).
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Uuid(&'a [u8]),
    Text(&'a [u8]),
}

impl Raw<'_> {
    fn string(self) -> Result<String, StoreError> {
        match self {
            Raw::Uuid(bytes) => Ok(uuid_string(bytes)),
            Raw::Text(bytes) => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| corrupt("string is not UTF-8".into())),
        }
    }
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

/// The 16 bytes of `s` if it is a UUID in canonical lowercase form (what [`uuid_string`] gives
/// back exactly).
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = [0u8; 32];
    let mut n = 0;
    for (at, &c) in s.iter().enumerate() {
        if !matches!(at, 8 | 13 | 18 | 23) {
            digits[n] = HEX_VALUE[usize::from(c)];
            n += 1;
        }
    }
    let mut bad = 0;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        bad |= pair[0] | pair[1];
        *byte = (pair[0] << 4) | (pair[1] & 0xf);
    }
    (bad & 0xf0 == 0).then_some(out)
}

/// The value of each lowercase hex digit; 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

fn uuid_string(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

fn put_int(out: &mut Vec<u8>, n: i64) {
    put_uint(out, ((n << 1) ^ (n >> 63)) as u64);
}

fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn uint(&mut self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.blob.get(self.at) else {
                return Err(corrupt("blob ends inside a number".into()));
            };
            self.at += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(corrupt("number longer than 64 bits".into()))
    }

    fn int(&mut self) -> Result<i64, StoreError> {
        let n = self.uint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn small(&mut self) -> Result<i32, StoreError> {
        i32::try_from(self.int()?).map_err(|_| corrupt("type out of range".into()))
    }

    /// A number, as the difference from `before`.
    fn number(&mut self, before: i64) -> Result<i64, StoreError> {
        Ok(before.wrapping_add(self.int()?))
    }

    /// A string, tagged (`before` is the message before's).
    fn field<'b>(&mut self, before: Raw<'b>) -> Result<Raw<'b>, StoreError>
    where
        'a: 'b,
    {
        Ok(match self.uint()? {
            SAME => before,
            UUID => Raw::Uuid(self.bytes(16)?),
            tag => Raw::Text(self.bytes(tag - BYTES)?),
        })
    }

    fn bytes(&mut self, len: u64) -> Result<&'a [u8], StoreError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.at.checked_add(len))
            .filter(|end| *end <= self.blob.len())
            .ok_or_else(|| corrupt("blob ends inside a string".into()))?;
        let bytes = &self.blob[self.at..end];
        self.at = end;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Strings that exercise every tag: repeats (a small pool), UUIDs, near-UUIDs (upper case,
    /// misplaced hyphens, one character short) and anything.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("u1".to_string()),
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[0-9a-fA-F-]{35,37}",
            ".*",
        ]
    }

    fn msg() -> impl Strategy<Value = Msg> {
        (
            (text(), text(), text(), text(), text()),
            (
                any::<i64>(),
                0..3i64,
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
            ),
            (any::<i32>(), any::<i32>()),
        )
            .prop_map(|(s, n, t)| {
                let mut m = Msg {
                    server_id: s.0,
                    send_id: s.1,
                    receiver_id: s.2,
                    local_id: s.3,
                    content: s.4,
                    seq: n.0,
                    send_seq: n.1,
                    create_time: n.2,
                    send_time: n.3,
                    msg_type: t.0,
                    content_type: t.1,
                    conv_seq: n.4,
                    conv_id: String::new(),
                    is_read: false,
                };
                m.conv_id = conversation::id_of(&m);
                m
            })
    }

    /// Every field in full, with no reference to the message before: what the blob is
    /// measured against.
    fn pack_in_full(msgs: &[Msg]) -> Vec<u8> {
        let mut out = vec![MESSAGES];
        for m in msgs {
            for s in [
                &m.server_id,
                &m.send_id,
                &m.receiver_id,
                &m.local_id,
                &m.content,
            ] {
                put_uint(&mut out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            for n in [
                m.seq,
                m.send_seq,
                m.create_time,
                m.send_time,
                i64::from(m.msg_type),
                i64::from(m.content_type),
                m.conv_seq,
            ] {
                put_int(&mut out, n);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn unpack_gives_back_what_was_packed(msgs in proptest::collection::vec(msg(), 0..8)) {
            prop_assert_eq!(unpack(&pack(&msgs)).unwrap(), msgs);
        }

        #[test]
        fn references_give_back_what_finds_each_message(
            msgs in proptest::collection::vec(msg(), 0..8),
        ) {
            let blob = pack_refs(&msgs);
            prop_assert!(is_refs(&blob) && !is_refs(&pack(&msgs)));
            let refs: Vec<Msg> = msgs
                .iter()
                .map(|m| Msg {
                    send_id: m.send_id.clone(),
                    receiver_id: m.receiver_id.clone(),
                    local_id: m.local_id.clone(),
                    seq: m.seq,
                    send_seq: m.send_seq,
                    create_time: m.create_time,
                    conv_seq: m.conv_seq,
                    conv_id: m.conv_id.clone(),
                    ..Msg::default()
                })
                .collect();
            prop_assert_eq!(unpack(&blob).unwrap(), refs);
        }

        #[test]
        fn a_damaged_blob_is_an_error_not_a_panic(
            msgs in proptest::collection::vec(msg(), 1..4),
            cut in any::<prop::sample::Index>(),
            flip in any::<u8>(),
        ) {
            let mut blob = pack(&msgs);
            let at = cut.index(blob.len());
            blob[at] ^= flip;
            let _ = unpack(&blob);
            let _ = unpack(&blob[..at]);
        }
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        for kind in [0, 1, 6, 9] {
            assert!(matches!(unpack(&[kind]), Err(StoreError::Corrupt(_))));
        }
        assert!(matches!(unpack(&[]), Err(StoreError::Corrupt(_))));
        assert_eq!(unpack(&[MESSAGES]).unwrap(), Vec::<Msg>::new());
        assert_eq!(unpack(&[REFERENCES]).unwrap(), Vec::<Msg>::new());
        assert_eq!(unpack(&[MESSAGES_V1]).unwrap(), Vec::<Msg>::new());
    }

    /// A blob of the first schema (no conv_seq) still reads, with conv_seq 0.
    #[test]
    fn blobs_without_conv_seq_still_read() {
        let m = Msg {
            send_id: "a".into(),
            receiver_id: "b".into(),
            content: "hi".into(),
            seq: 1,
            send_seq: 1,
            ..Msg::default()
        };
        let mut blob = pack([&m]);
        blob[0] = MESSAGES_V1;
        blob.pop(); // the conv_seq delta, 0: one byte
        let back = unpack(&blob).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].conv_seq, back[0].conv_id.as_str()), (0, "d:a:b"));
    }

    #[test]
    fn uuids_are_kept_as_they_were_written() {
        let id = "0190f000-0000-7000-8000-00000000002a";
        assert_eq!(uuid_string(&uuid_bytes(id).unwrap()), id);
        for not in [
            "0190F000-0000-7000-8000-00000000002a",
            "0190f0000-000-7000-8000-00000000002a",
            "0190f000-0000-7000-8000-00000000002",
            "{190f000-0000-7000-8000-00000000002a",
        ] {
            assert_eq!(uuid_bytes(not), None, "{not}");
        }
    }

    /// An inbox chunk as a move writes it: one receiver, consecutive seqs, UUIDv7 server ids,
    /// times a few milliseconds apart. It takes well under two thirds of the bytes in full.
    #[test]
    fn a_chunk_takes_far_fewer_bytes_than_in_full() {
        let msgs: Vec<Msg> = (0..100i64)
            .map(|i| Msg {
                server_id: format!("0199c3f2-{:04x}-7abc-9def-{:012x}", i * 3, i * 7919),
                send_id: format!("user-{}", i % 7),
                receiver_id: "user-42".into(),
                local_id: format!("0199c3f2-0000-7000-8000-{:012x}", i),
                content: "see you at eight".into(),
                seq: 1000 + i,
                send_seq: 300 + i / 7,
                create_time: 1_764_000_000_000 + i * 5,
                send_time: 1_764_000_000_020 + i * 5,
                conv_id: conversation::direct_id(&format!("user-{}", i % 7), "user-42"),
                ..Msg::default()
            })
            .collect();
        let (full, packed) = (pack_in_full(&msgs).len(), pack(&msgs).len());
        assert!(
            packed * 3 < full * 2,
            "in full: {full} bytes, packed: {packed}"
        );
        assert_eq!(unpack(&pack(&msgs)).unwrap(), msgs);
    }
}
