//! Conversations on SQLite: a conversation's history (a group's inbox chunks, a one-to-one
//! conversation's `conv_chunks` of references, and the tail), and the chat list with the
//! tail's changes merged in.
//!
//! As for streams ([`super::read`]), a reader takes the tail before reading `natter.db`, so a
//! move in between shows a message twice at most, never not at all; it is taken once.

use std::collections::{HashMap, HashSet};

use natter_protocol::{Msg, conversation, is_group_id};
use sqlx::{Sqlite, sqlite::SqliteConnection};

use super::{
    SqliteStore,
    pack::{is_refs, unpack_where},
    tail::{Changed, Logged},
};
use crate::store::{
    HistoryFrom, StoreError,
    conv::{ConvRow, ConvSql, ListParts, ListScope},
    page_bytes,
};

/// Chunks a history read takes per statement: a chunk holds up to a move's entries of one
/// conversation (a group's: up to 256), so two mostly fill a page.
const READ_CHUNKS: i64 = 2;

type Conv = ConvSql<Sqlite>;

impl SqliteStore {
    /// `user`'s chat list: the tables, with the tail's changes merged in. The tail is read first
    /// (as for a stream, [`super::read`]): a move in between leaves its changes in both, which
    /// merge to the same. A conversation whose newest activity is in the tail may not be among
    /// the rows read: its row is read too.
    pub(super) async fn chat_list_of(
        &self,
        user: &str,
        scope: ListScope<'_>,
    ) -> Result<ListParts, StoreError> {
        let in_scope = |id: &str| match scope {
            ListScope::One(one) => one == id,
            ListScope::Page { .. } => true,
        };
        let (changed, reads): (Vec<ConvRow>, Vec<(String, i64)>) = {
            let tail = self.tail();
            let changed = tail
                .convs
                .iter()
                .filter(|(id, c)| {
                    in_scope(id)
                        && (is_group_id(id) || c.row.user_a == user || c.row.user_b == user)
                })
                .map(|(_, c)| c.row.clone())
                .collect();
            let reads = tail
                .member_reads
                .iter()
                .filter(|((_, u), _)| u == user)
                .map(|((g, _), (seq, _))| (g.clone(), *seq))
                .collect();
            (changed, reads)
        };
        let mut conn = self.pool.acquire().await?;
        let mut parts = Conv::list_parts(&mut conn, user, scope).await?;
        // Only the groups the user is in.
        let groups: HashSet<&str> = parts.groups.iter().map(|g| g.group_id.as_str()).collect();
        let changed: Vec<ConvRow> = changed
            .into_iter()
            .filter(|c| !is_group_id(&c.conv_id) || groups.contains(c.conv_id.as_str()))
            .collect();
        let unread: Vec<String> = changed
            .iter()
            .map(|c| c.conv_id.clone())
            .filter(|id| !parts.rows.contains_key(id))
            .collect();
        for row in Conv::rows(&mut conn, &unread).await? {
            parts.rows.insert(row.conv_id.clone(), row);
        }
        for row in changed {
            match parts.rows.get_mut(&row.conv_id) {
                Some(stored) => stored.merge(&row),
                None => {
                    parts.rows.insert(row.conv_id.clone(), row);
                }
            }
        }
        for (group, seq) in reads {
            if let Some(g) = parts.groups.iter_mut().find(|g| g.group_id == group) {
                g.read_seq = g.read_seq.max(seq);
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
                "SELECT first, last, body FROM {table} WHERE {key} = ?1 AND first < ?2 \
                 ORDER BY first DESC LIMIT {READ_CHUNKS}"
            ),
            HistoryFrom::After(_) => format!(
                "SELECT first, last, body FROM {table} WHERE {key} = ?1 AND first >= ?2 \
                 ORDER BY first LIMIT {READ_CHUNKS}"
            ),
        };
        // The page's edge so far: scrolling back, the entries wanted are below it (the tail's
        // are the newest); catching up, above it. A chunk holds a run of consecutive entries
        // (a conversation's, or a group's), so the window of entries still wanted from it is
        // known before it is read, and only they are built.
        let mut edge = match from {
            HistoryFrom::Before(b) => msgs.iter().map(|m| m.conv_seq).fold(b, i64::min),
            HistoryFrom::After(a) => a.max(floor),
        };
        while found < limit && found_bytes < max_bytes {
            let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(&page)
                .bind(conv_id)
                .bind(cursor)
                .fetch_all(&mut *conn)
                .await?;
            let mut read = Vec::new();
            let mut refs = Vec::new();
            for (first, last, body) in &rows {
                let need = limit.saturating_sub(found + read.len() + refs.len()) as i64;
                if need == 0 {
                    break;
                }
                let (lo, hi) = match from {
                    HistoryFrom::Before(_) => {
                        let hi = (edge - 1).min(*last);
                        (hi - need + 1, hi)
                    }
                    HistoryFrom::After(_) => {
                        let lo = (edge + 1).max(*first);
                        (lo, lo + need - 1)
                    }
                };
                let side = unpack_where(body, |_, c| c >= lo && c <= hi && c > floor)?;
                let side: Vec<Msg> = side.into_iter().filter(|m| wanted(m)).collect();
                edge = match from {
                    HistoryFrom::Before(_) => side.iter().map(|m| m.conv_seq).fold(edge, i64::min),
                    HistoryFrom::After(_) => side.iter().map(|m| m.conv_seq).fold(edge, i64::max),
                };
                if is_refs(body) { &mut refs } else { &mut read }.extend(side);
            }
            if !refs.is_empty() {
                read.extend(resolve_each(&mut conn, &refs).await?);
            }
            found += read.len();
            found_bytes = read
                .iter()
                .fold(found_bytes, |n, m| n.saturating_add(page_bytes(m)));
            msgs.extend(read);
            let Some((first, _, _)) = rows.last() else {
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
        // Those the tail raised to `seq` or past it whom the table still has below it: one
        // statement for them all.
        let more: i64 = if raised.is_empty() {
            0
        } else {
            let users = serde_json::to_string(&raised).unwrap_or_default();
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM group_members WHERE group_id = ? AND read_seq < ? \
                 AND user_id IN (SELECT value FROM json_each(?))",
            )
            .bind(group)
            .bind(seq)
            .bind(users)
            .fetch_one(&mut *conn)
            .await?
        };
        Ok(stored + more)
    }
}

/// The messages references point at (see [`super::pack::pack_refs`]), each from the one inbox
/// chunk that holds its seq, found through the index on (user_id, first), and only they are
/// built from that chunk ([`unpack_where`]): a history page costs the same however long the
/// receivers' inboxes are. A reference whose message retention deleted is left out.
async fn resolve_each(conn: &mut SqliteConnection, refs: &[Msg]) -> Result<Vec<Msg>, StoreError> {
    // Per receiver, the seqs wanted; then, in one statement per receiver, the chunk holding
    // each (a page's references point into many small chunks: a round trip to SQLite's thread
    // each would cost more than reading them).
    let mut by_receiver: HashMap<&str, HashSet<i64>> = HashMap::new();
    for r in refs {
        by_receiver.entry(&r.receiver_id).or_default().insert(r.seq);
    }
    let mut chunks: Vec<(Vec<u8>, &HashSet<i64>)> = Vec::new();
    for (receiver, seqs) in &by_receiver {
        let list = serde_json::to_string(&seqs.iter().collect::<Vec<_>>())
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let bodies: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT body FROM inbox_chunks WHERE user_id = ?1 AND first IN \
             (SELECT (SELECT MAX(first) FROM inbox_chunks WHERE user_id = ?1 AND first <= value) \
              FROM json_each(?2))",
        )
        .bind(*receiver)
        .bind(list)
        .fetch_all(&mut *conn)
        .await?;
        chunks.extend(bodies.into_iter().map(|body| (body, seqs)));
    }
    let mut found = Vec::with_capacity(refs.len());
    for (body, seqs) in &chunks {
        found.extend(unpack_where(body, |seq, _| seqs.contains(&seq))?);
    }
    let wanted: HashSet<(&str, i64)> = refs
        .iter()
        .map(|r| (r.send_id.as_str(), r.send_seq))
        .collect();
    found.retain(|m| wanted.contains(&(m.send_id.as_str(), m.send_seq)));
    Ok(found)
}
