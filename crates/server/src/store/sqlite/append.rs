//! The write path: a batch is numbered from the counters in memory and committed to the log as
//! one packed row. The log connection is held from the first read of the counters to the
//! tail's update, so batches are numbered and logged one at a time, in order.
//!
//! A resend is looked up only if its `create_time` is at or below its sender's `created_upto`
//! (tail, else `user_seq`), or is 0 or less (no time: always looked up); a move raises
//! `created_upto` in the same transaction as the chunks it writes, so the bound never falls
//! below a stored original (see [`super::resend`] for the lookup in `natter.db`).

use std::collections::HashSet;

use natter_protocol::{Msg, msg_type};
use sqlx::{QueryBuilder, Row, Sqlite, sqlite::SqliteConnection};

use super::{
    SqliteStore,
    pack::pack,
    resend::find_archived,
    tail::{Counter, Tail},
};
use crate::store::{
    Appended, CHUNK, StoreError,
    batch::{Key, Map, Seen, classify, conv_demand, key, number},
    conv::ConvSql,
};

/// Messages in the log that wake the compactor before its next tick.
const COMPACT_ROWS: i64 = 8192;

impl SqliteStore {
    pub(super) async fn append_batch(&self, batch: &[Msg]) -> Result<Vec<Appended>, StoreError> {
        let mut log = self.hot.log.clone().lock_owned().await;
        let (waiting, bytes) = {
            let tail = self.tail();
            (tail.rows(), tail.bytes)
        };
        if waiting >= self.hot.log_limit || bytes >= self.hot.log_bytes {
            self.hot.wake.notify_one();
            return Err(StoreError::Backlog(waiting));
        }
        let archived = self.archived_counters(&mut log, batch).await?;
        let stored = self.originals(&mut log, batch, &archived).await?;
        let seen = classify(batch, &stored);
        let mut next = self.next_numbers(batch, &seen, &archived);
        let mut next_conv = self.next_conv_numbers(&mut log, batch, &seen).await?;
        let (numbered, outcomes) = number(batch, &seen, &stored, &mut next, &mut next_conv);
        if numbered.is_empty() {
            return Ok(outcomes);
        }
        let (first_id, clear) = {
            let tail = self.tail();
            let clear = (tail.moved_upto > tail.cleared_upto).then_some(tail.moved_upto);
            (tail.next_id, clear)
        };
        commit(&mut log, first_id, &numbered, clear).await?;

        // The log connection is still held: the tail learns what the log now holds.
        let mut tail = self.tail();
        tail.record(first_id, numbered, next, next_conv, &archived);
        if let Some(upto) = clear {
            tail.cleared_upto = upto;
        }
        if tail.rows() >= COMPACT_ROWS {
            self.hot.wake.notify_one();
        }
        Ok(outcomes)
    }

    /// The counters, from `user_seq`, of the batch's users that have no message in the log (the
    /// tail has the others).
    async fn archived_counters(
        &self,
        log: &mut SqliteConnection,
        batch: &[Msg],
    ) -> Result<Map<String, Counter>, StoreError> {
        let missing: Vec<&str> = {
            let tail = self.tail();
            let mut seen: HashSet<&str, foldhash::fast::RandomState> = HashSet::default();
            batch
                .iter()
                .flat_map(|m| [m.receiver_id.as_str(), m.send_id.as_str()])
                .filter(|user| !tail.counters.contains_key(*user) && seen.insert(*user))
                .collect()
        };
        let mut archived = Map::default();
        for chunk in missing.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT user_id, seq, send_seq, created_upto FROM archive.user_seq \
                 WHERE user_id IN (",
            );
            let mut list = q.separated(", ");
            for user in chunk {
                list.push_bind(*user);
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *log).await? {
                let counter = Counter {
                    seq: row.try_get(1)?,
                    send_seq: row.try_get(2)?,
                    created_upto: row.try_get(3)?,
                    last_id: 0,
                };
                archived.insert(row.try_get(0)?, counter);
            }
        }
        Ok(archived)
    }

    /// The stored originals of the batch's resends. A message created after every stored one
    /// of its sender (log and natter.db) is new without a lookup; the others are looked up in
    /// the tail, then in natter.db.
    async fn originals(
        &self,
        log: &mut SqliteConnection,
        batch: &[Msg],
        archived: &Map<String, Counter>,
    ) -> Result<Map<Key, Msg>, StoreError> {
        let mut stored = Map::default();
        let lookups: Vec<&Msg> = {
            let tail = self.tail();
            let mut lookups = Vec::new();
            for m in batch.iter().filter(|m| {
                // A create_time of 0 or less is no time at all: always looked up (and keyed).
                !m.local_id.is_empty()
                    && m.create_time <= tail.counter(archived, &m.send_id).created_upto.max(0)
            }) {
                match tail.original(m) {
                    Some(original) => {
                        stored.insert(key(m), original.clone());
                    }
                    None => lookups.push(m),
                }
            }
            lookups
        };
        if !lookups.is_empty() {
            stored.extend(find_archived(log, &lookups).await?);
        }
        Ok(stored)
    }

    /// The next free `conv_seq` of every one-to-one conversation a new entry of the batch
    /// numbers: the tail's counter, else the conversation's row in `natter.db`.
    async fn next_conv_numbers(
        &self,
        log: &mut SqliteConnection,
        batch: &[Msg],
        seen: &[Seen],
    ) -> Result<Map<String, i64>, StoreError> {
        let demand = conv_demand(batch, seen);
        let mut next = Map::default();
        let missing: Vec<&str> = {
            let tail = self.tail();
            demand
                .iter()
                .filter_map(|(id, _)| match tail.conv_counter(id) {
                    Some(last) => {
                        next.insert(id.clone(), last + 1);
                        None
                    }
                    None => Some(id.as_str()),
                })
                .collect()
        };
        if !missing.is_empty() {
            let stored =
                ConvSql::<Sqlite>::last_seqs(log, "archive.conversations", &missing).await?;
            for id in missing {
                next.insert(id.to_owned(), stored.get(id).copied().unwrap_or(0) + 1);
            }
        }
        Ok(next)
    }

    /// The next free `(seq, send_seq)` of every user a new message of the batch numbers.
    fn next_numbers(
        &self,
        batch: &[Msg],
        seen: &[Seen],
        archived: &Map<String, Counter>,
    ) -> Map<String, (i64, i64)> {
        let tail: std::sync::MutexGuard<'_, Tail> = self.tail();
        let mut next = Map::default();
        for (m, _) in batch.iter().zip(seen).filter(|(_, s)| s.is_new()) {
            for user in [&m.receiver_id, &m.send_id] {
                if !next.contains_key(user) {
                    let c = tail.counter(archived, user);
                    next.insert(user.clone(), (c.seq + 1, c.send_seq + 1));
                }
            }
        }
        next
    }
}

/// Commits the numbered batch and its read marks to the log, with the deletion of the batches
/// moved since the last append (`clear`). Most appends have neither marks nor deletions: their
/// one INSERT commits by itself, one round trip to SQLite's thread instead of three (BEGIN,
/// INSERT, COMMIT), durable the same way (WAL, fsync).
async fn commit(
    log: &mut SqliteConnection,
    first_id: i64,
    numbered: &[Msg],
    clear: Option<i64>,
) -> Result<(), StoreError> {
    let insert = sqlx::query("INSERT INTO log_batches (first_id, count, body) VALUES (?, ?, ?)")
        .bind(first_id)
        .bind(numbered.len() as i64)
        .bind(pack(numbered));
    let marks = numbered.iter().any(|m| m.msg_type == msg_type::READ);
    if clear.is_none() && !marks {
        insert.execute(&mut *log).await?;
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin(&mut *log).await?;
    if let Some(upto) = clear {
        delete_moved(&mut tx, upto).await?;
    }
    insert.execute(&mut *tx).await?;
    append_marks(&mut tx, numbered).await?;
    tx.commit().await?;
    Ok(())
}

/// The read marks of the read receipts in `msgs`: a receipt writes one row whatever it covers;
/// `is_read` is derived from the marks on reading ([`super::read`]).
async fn append_marks(log: &mut SqliteConnection, msgs: &[Msg]) -> Result<(), StoreError> {
    for r in msgs.iter().filter(|m| m.msg_type == msg_type::READ) {
        sqlx::query(
            "INSERT INTO read_marks (reader, peer, upto) VALUES (?, ?, ?) \
             ON CONFLICT (reader, peer) DO UPDATE SET upto = MAX(upto, excluded.upto)",
        )
        .bind(&r.send_id)
        .bind(&r.receiver_id)
        .bind(&r.content)
        .execute(&mut *log)
        .await?;
    }
    Ok(())
}

/// Deletes the log's batches up to the message id `upto` (all moved to `natter.db`).
pub(super) async fn delete_moved(log: &mut SqliteConnection, upto: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM log_batches WHERE first_id <= ?")
        .bind(upto)
        .execute(log)
        .await?;
    Ok(())
}
