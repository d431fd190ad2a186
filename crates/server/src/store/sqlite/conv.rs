//! Conversations on SQLite: a conversation's history (a group's inbox chunks, a one-to-one
//! conversation's `conv_chunks` of references, and the tail), and the chat list with the
//! tail's changes merged in.
//!
//! As for streams ([`super::read`]), a reader takes the tail before reading `natter.db`, so a
//! move in between shows a message twice at most, never not at all; it is taken once.

use std::collections::HashSet;

use natter_protocol::{Msg, conversation, is_group_id};
use sqlx::{Sqlite, sqlite::SqliteConnection};

use super::{
    SqliteStore,
    pack::{is_refs, unpack},
    tail::{Changed, Logged},
};
use crate::store::{
    HistoryFrom, StoreError,
    batch::Map,
    conv::{ConvSql, ListParts},
    page_bytes,
};

/// Chunks a history read takes per statement.
const READ_CHUNKS: i64 = 8;

type Conv = ConvSql<Sqlite>;

impl SqliteStore {
    /// `user`'s chat list: the tables, with the tail's changes merged in.
    pub(super) async fn chat_list_of(&self, user: &str) -> Result<ListParts, StoreError> {
        let mut parts = Conv::list_parts(&mut *self.pool.acquire().await?, user).await?;
        let tail = self.tail();
        let groups: HashSet<&str> = parts.groups.iter().map(|g| g.group_id.as_str()).collect();
        let mut merged = Vec::new();
        for (id, c) in &tail.convs {
            let mine = if is_group_id(id) {
                groups.contains(id.as_str())
            } else {
                c.row.user_a == user || c.row.user_b == user
            };
            if mine {
                merged.push((id, c));
            }
        }
        for (id, c) in merged {
            match parts.rows.get_mut(id) {
                Some(row) => row.merge(&c.row),
                None => {
                    parts.rows.insert(id.clone(), c.row.clone());
                }
            }
        }
        for g in &mut parts.groups {
            if let Some((seq, _)) = tail
                .member_reads
                .get(&(g.group_id.clone(), user.to_owned()))
            {
                g.read_seq = g.read_seq.max(*seq);
            }
        }
        Ok(parts)
    }

    /// A page of a conversation's entries ([`crate::store::Store::history`]).
    pub(super) async fn read_history(
        &self,
        conv_id: &str,
        from: HistoryFrom,
        floor: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Msg>, StoreError> {
        let limit = limit as usize;
        let wanted = |m: &Msg| {
            m.conv_id == conv_id && conversation::is_entry(m) && from.holds(m.conv_seq, floor)
        };
        // The tail first (see the module's note), then natter.db.
        let (logged, changed): (Vec<Logged>, Changed) = {
            let tail = self.tail();
            let logged = if tail.convs.contains_key(conv_id) {
                tail.batches.iter().cloned().collect()
            } else {
                Vec::new()
            };
            (logged, tail.changed.clone())
        };
        let mut msgs: Vec<Msg> = logged
            .iter()
            .flat_map(|b| b.msgs.iter())
            .filter(|m| wanted(m))
            .cloned()
            .collect();
        // The tail's entries are the newest: scrolling back, they count toward the page.
        let mut found = match from {
            HistoryFrom::Before(_) => msgs.len(),
            HistoryFrom::After(_) => 0,
        };
        let mut found_bytes = 0usize;
        let (table, key) = if is_group_id(conv_id) {
            ("inbox_chunks", "user_id")
        } else {
            ("conv_chunks", "conv_id")
        };
        let mut conn = self.pool.acquire().await?;
        let mut cursor =
            match from {
                HistoryFrom::Before(before) => before,
                HistoryFrom::After(after) => sqlx::query_scalar(&format!(
                    "SELECT COALESCE(MAX(first), 0) FROM {table} WHERE {key} = ?1 AND first <= ?2"
                ))
                .bind(conv_id)
                .bind(after.max(floor).saturating_add(1))
                .fetch_one(&mut *conn)
                .await?,
            };
        let page = match from {
            HistoryFrom::Before(_) => format!(
                "SELECT first, body FROM {table} WHERE {key} = ?1 AND first < ?2 \
                 ORDER BY first DESC LIMIT {READ_CHUNKS}"
            ),
            HistoryFrom::After(_) => format!(
                "SELECT first, body FROM {table} WHERE {key} = ?1 AND first >= ?2 \
                 ORDER BY first LIMIT {READ_CHUNKS}"
            ),
        };
        let mut cache = Chunks::default();
        while found < limit && found_bytes < max_bytes {
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(&page)
                .bind(conv_id)
                .bind(cursor)
                .fetch_all(&mut *conn)
                .await?;
            let mut read = Vec::new();
            for (_, body) in &rows {
                let unpacked = unpack(body)?;
                if is_refs(body) {
                    for r in unpacked.iter().filter(|m| wanted(m)) {
                        read.extend(cache.resolve(&mut conn, r).await?);
                    }
                } else {
                    read.extend(unpacked.into_iter().filter(|m| wanted(m)));
                }
            }
            found += read.len();
            found_bytes = read
                .iter()
                .fold(found_bytes, |n, m| n.saturating_add(page_bytes(m)));
            msgs.extend(read);
            let Some((first, _)) = rows.last() else {
                break;
            };
            if rows.len() < READ_CHUNKS as usize {
                break;
            }
            cursor = match from {
                HistoryFrom::Before(_) if *first <= floor + 1 => break,
                HistoryFrom::Before(_) => *first,
                HistoryFrom::After(_) => first + 1,
            };
        }
        drop(conn);
        msgs.sort_by_key(|m| m.conv_seq);
        msgs.dedup_by_key(|m| m.conv_seq);
        from.cut(&mut msgs, limit, max_bytes);
        changed.apply(&mut msgs);
        Ok(msgs)
    }

    /// How many members of a group other than `except` have read up to `seq`: the memberships'
    /// read positions, raised by the tail's (members' own entries not moved yet).
    pub(super) async fn read_count_of(
        &self,
        group: &str,
        seq: i64,
        except: &str,
    ) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let stored = Conv::read_count(&mut conn, group, seq, except).await?;
        let raised: Vec<String> = self
            .tail()
            .member_reads
            .iter()
            .filter(|((g, u), (read, _))| g == group && u != except && *read >= seq)
            .map(|((_, u), _)| u.clone())
            .collect();
        let mut more = 0;
        for user in raised {
            let below: Option<i64> = sqlx::query_scalar(
                "SELECT read_seq FROM group_members WHERE group_id = ? AND user_id = ? \
                 AND read_seq < ?",
            )
            .bind(group)
            .bind(&user)
            .bind(seq)
            .fetch_optional(&mut *conn)
            .await?;
            more += i64::from(below.is_some());
        }
        Ok(stored + more)
    }
}

/// The inbox chunks a history read has taken, by receiver: a page's references mostly point
/// into a few of them.
#[derive(Debug, Default)]
struct Chunks {
    /// Per receiver: (first, last, messages) of each chunk read.
    read: Map<String, Vec<(i64, i64, Vec<Msg>)>>,
}

impl Chunks {
    /// The message a reference points at (see [`super::pack::pack_refs`]): from the one inbox
    /// chunk that holds its seq, found through the index on (user_id, first), so a history read
    /// costs the same however long the receiver's inbox is. `None` if retention deleted it.
    async fn resolve(
        &mut self,
        conn: &mut SqliteConnection,
        r: &Msg,
    ) -> Result<Option<Msg>, StoreError> {
        let held = |chunks: &[(i64, i64, Vec<Msg>)]| {
            chunks
                .iter()
                .find(|(first, last, _)| (*first..=*last).contains(&r.seq))
                .and_then(|(_, _, msgs)| msgs.iter().find(|m| m.seq == r.seq).cloned())
        };
        if let Some(found) = self.read.get(&r.receiver_id).and_then(|c| held(c)) {
            return Ok(same(found, r));
        }
        let row: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT first, last, body FROM inbox_chunks WHERE user_id = ? AND first <= ? \
             ORDER BY first DESC LIMIT 1",
        )
        .bind(&r.receiver_id)
        .bind(r.seq)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((first, last, body)) = row else {
            return Ok(None);
        };
        let chunks = self.read.entry(r.receiver_id.clone()).or_default();
        chunks.push((first, last, unpack(&body)?));
        Ok(held(chunks).and_then(|m| same(m, r)))
    }
}

/// `m` if it is the message `r` refers to.
fn same(m: Msg, r: &Msg) -> Option<Msg> {
    (m.send_id == r.send_id && m.send_seq == r.send_seq).then_some(m)
}
