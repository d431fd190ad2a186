//! A compact binary form of stored messages, for the SQLite store's blobs (a batch in the log, a
//! chunk of an inbox or sent stream in `natter.db`): one blob per many messages instead of a row
//! and index entries per message.
//!
//! Format: a version byte, then each message as its strings (`server_id`, `send_id`,
//! `receiver_id`, `local_id`, `content`; each a LEB128 length and UTF-8 bytes) and its numbers
//! (`seq`, `send_seq`, `create_time`, `send_time`, `msg_type`, `content_type`; zigzag LEB128).
//! `is_read` is not stored: SQLite derives it from the read marks.

use natter_protocol::Msg;

use super::StoreError;

const VERSION: u8 = 1;

/// `msgs` as one blob.
pub(super) fn pack<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(VERSION);
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
        ] {
            put_uint(&mut out, ((n << 1) ^ (n >> 63)) as u64);
        }
    }
    out
}

/// The messages of a blob made by [`pack`].
pub(super) fn unpack(blob: &[u8]) -> Result<Vec<Msg>, StoreError> {
    let mut r = Reader { blob, at: 1 };
    match blob.first() {
        Some(&VERSION) => {}
        other => return Err(corrupt(format!("unknown blob version {other:?}"))),
    }
    let mut msgs = Vec::new();
    while r.at < blob.len() {
        let server_id = r.string()?;
        let send_id = r.string()?;
        let receiver_id = r.string()?;
        let local_id = r.string()?;
        let content = r.string()?;
        msgs.push(Msg {
            server_id,
            send_id,
            receiver_id,
            local_id,
            content,
            seq: r.int()?,
            send_seq: r.int()?,
            create_time: r.int()?,
            send_time: r.int()?,
            msg_type: r.small()?,
            content_type: r.small()?,
            is_read: false,
        });
    }
    Ok(msgs)
}

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
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

impl Reader<'_> {
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

    fn string(&mut self) -> Result<String, StoreError> {
        let len = usize::try_from(self.uint()?).unwrap_or(usize::MAX);
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.blob.len())
            .ok_or_else(|| corrupt("blob ends inside a string".into()))?;
        let s = std::str::from_utf8(&self.blob[self.at..end])
            .map_err(|_| corrupt("string is not UTF-8".into()))?;
        self.at = end;
        Ok(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn msg() -> impl Strategy<Value = Msg> {
        (
            (".*", ".*", ".*", ".*", ".*"),
            (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()),
            (any::<i32>(), any::<i32>()),
        )
            .prop_map(|(s, n, t)| Msg {
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
                is_read: false,
            })
    }

    proptest! {
        #[test]
        fn unpack_gives_back_what_was_packed(msgs in proptest::collection::vec(msg(), 0..8)) {
            prop_assert_eq!(unpack(&pack(&msgs)).unwrap(), msgs);
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
    fn an_unknown_version_is_refused() {
        assert!(matches!(unpack(&[9]), Err(StoreError::Corrupt(_))));
        assert!(matches!(unpack(&[]), Err(StoreError::Corrupt(_))));
        assert_eq!(unpack(&[VERSION]).unwrap(), Vec::<Msg>::new());
    }
}
