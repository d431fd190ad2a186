//! Reading a stream: the tail's batches, then the chunks of `natter.db`.
//!
//! A reader takes the tail's batches before reading `natter.db`: a batch gone from the tail by
//! then was moved before, so `natter.db` has it; a message seen in both is taken once.
//! `is_read` is derived from the read marks of the log file.

use std::collections::HashMap;

use natter_protocol::{Msg, msg_type};
use sqlx::Sqlite;

use super::{
    SqliteStore,
    pack::{is_refs, unpack},
    resend::{Schema, resolve},
    tail::{Changed, Logged},
};
use crate::store::{StoreError, Stream, cut_to_bytes, group_sql::GroupSql, page_bytes};

/// Chunks a read of a stream takes from `natter.db` per statement.
const READ_CHUNKS: usize = 8;

/// The table of `natter.db` that holds a stream's chunks.
pub(super) fn chunks_table(stream: Stream) -> &'static str {
    match stream {
        Stream::Inbox => "inbox_chunks",
        Stream::Sent => "sent_chunks",
    }
}

impl SqliteStore {
    /// Up to `limit` messages of `user`'s `stream` after `after`, in order, within
    /// `max_bytes` ([`page_bytes`]). The tail's messages come after natter.db's in the stream,
    /// so reading natter.db stops once it has filled the budget, and the final cut keeps a
    /// prefix of the stream.
    pub(super) async fn read_page(
        &self,
        user: &str,
        stream: Stream,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Msg>, StoreError> {
        let limit = limit as usize;
        let cursor = |m: &Msg| stream.cursor(m);
        // The tail first (see the invariants), then natter.db.
        let (logged, changed): (Vec<Logged>, Changed) = {
            let tail = self.tail();
            let logged = if tail.counters.contains_key(user) {
                tail.batches.iter().cloned().collect()
            } else {
                Vec::new()
            };
            (logged, tail.changed.clone())
        };
        let mut tail_bytes = 0usize;
        let mut msgs: Vec<Msg> = logged
            .iter()
            .flat_map(|b| b.msgs.iter())
            .filter(|m| stream.owner(m) == user && cursor(m) > after)
            .take(limit)
            .take_while(|m| {
                let first = tail_bytes == 0;
                tail_bytes = tail_bytes.saturating_add(page_bytes(m));
                first || tail_bytes <= max_bytes
            })
            .cloned()
            .collect();
        let table = chunks_table(stream);
        // From the chunk that holds `after + 1` (or the first one after it), in order, a page of
        // chunks at a time, until `limit` messages are found.
        let mut conn = self.pool.acquire().await?;
        let mut from: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(MAX(first), 0) FROM {table} WHERE user_id = ?1 AND first <= ?2"
        ))
        .bind(user)
        .bind(after.saturating_add(1))
        .fetch_one(&mut *conn)
        .await?;
        let page = format!(
            "SELECT first, body FROM {table} WHERE user_id = ?1 AND first >= ?2 \
             ORDER BY first LIMIT {READ_CHUNKS}"
        );
        let mut found = 0;
        let mut found_bytes = 0usize;
        while found < limit && found_bytes < max_bytes {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&page)
                .bind(user)
                .bind(from)
                .fetch_all(&mut *conn)
                .await?;
            // The page's messages, and its references resolved together: one statement per
            // receiver for the page, not per chunk.
            let mut read = Vec::new();
            let mut refs = Vec::new();
            for (_, body) in &rows {
                let into = if is_refs(body) { &mut refs } else { &mut read };
                into.extend(unpack(body)?.into_iter().filter(|m| cursor(m) > after));
            }
            if !refs.is_empty() {
                read.extend(resolve(&mut conn, Schema::Main, &refs).await?);
            }
            read.sort_by_key(cursor);
            read.truncate(limit - found);
            found += read.len();
            found_bytes = read
                .iter()
                .fold(found_bytes, |n, m| n.saturating_add(page_bytes(m)));
            msgs.extend(read);
            match rows.last() {
                Some((first, _)) if rows.len() == READ_CHUNKS => from = first + 1,
                _ => break,
            }
        }
        drop(conn);
        msgs.sort_by_key(cursor);
        msgs.dedup_by_key(|m| cursor(m));
        msgs.truncate(limit);
        cut_to_bytes(&mut msgs, max_bytes);
        changed.apply(&mut msgs);
        self.mark_read(user, stream, &mut msgs).await?;
        Ok(msgs)
    }

    /// Sets `is_read` from the read marks: on the user's inbox, from the user's own marks; on
    /// the sent stream, from the marks of the receivers.
    async fn mark_read(
        &self,
        user: &str,
        stream: Stream,
        msgs: &mut [Msg],
    ) -> Result<(), StoreError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let sql = match stream {
            Stream::Inbox => "SELECT peer, upto FROM read_marks WHERE reader = ?",
            Stream::Sent => "SELECT reader, upto FROM read_marks WHERE peer = ?",
        };
        let marks: HashMap<String, String> = sqlx::query_as(sql)
            .bind(user)
            .fetch_all(&self.hot.reads)
            .await?
            .into_iter()
            .collect();
        for m in msgs.iter_mut().filter(|m| m.msg_type != msg_type::READ) {
            let (reader, peer) = (&m.receiver_id, &m.send_id);
            let other = if reader == user { peer } else { reader };
            let applies = match stream {
                Stream::Inbox => reader == user,
                Stream::Sent => peer == user,
            };
            if applies && marks.get(other).is_some_and(|upto| m.server_id <= *upto) {
                m.is_read = true;
            }
        }
        Ok(())
    }

    /// The last `seq` and `send_seq` handed out for `user`: the tail's, else `user_seq`'s.
    pub(super) async fn cursors_of(&self, user: &str) -> Result<(i64, i64), StoreError> {
        if let Some(c) = self.tail().counters.get(user) {
            return Ok((c.seq, c.send_seq));
        }
        GroupSql::<Sqlite>::cursors(&mut *self.pool.acquire().await?, user).await
    }
}
