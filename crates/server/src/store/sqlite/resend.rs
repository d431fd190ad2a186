//! Finding the originals of resent messages in `natter.db`, and resolving the sent chunks'
//! references into the inbox chunks.
//!
//! In `natter.db` a resend's original is found through the one sent chunk of its sender whose
//! create_time range holds the resend's, or by its key in `sent_keys`: a chunk's range covers
//! only messages created after everything their sender had stored before, with a create_time
//! above 0, so a sender's ranges never overlap, and the others (a clock that went back,
//! create_time left at 0) are indexed by key. No lookup reads more than one sent chunk (and the
//! inbox chunk its reference points into), whatever the client does with create_time.

use std::collections::HashSet;

use futures_util::TryStreamExt;
use natter_protocol::Msg;
use sqlx::{QueryBuilder, Row, Sqlite, sqlite::SqliteConnection};

use super::pack::{is_refs, unpack};
use crate::store::{
    CHUNK, StoreError,
    batch::{Key, Map, key},
};

/// Where the inbox chunks are read: `natter.db` on its own connections, or attached to the log's
/// connection.
#[derive(Debug, Clone, Copy)]
pub(super) enum Schema {
    Main,
    Archive,
}

impl Schema {
    fn inbox_chunks(self) -> &'static str {
        match self {
            Schema::Main => "main.inbox_chunks",
            Schema::Archive => "archive.inbox_chunks",
        }
    }
}

/// The originals in `natter.db` of messages sent again (`lookups`), by [`Key`]: one statement
/// per [`CHUNK`](crate::store::CHUNK) lookups, not one per message. A message is looked for in its sender's sent chunk
/// whose create_time range holds its `create_time` (at most one: the ranges cover only messages
/// created in order, see [`Chunks::of`](super::compact::Chunks::of)), and by its key in `sent_keys` (the others); each chunk
/// found is read once, however many lookups it answers. Only real resends find something, and
/// each of those reads the receiver's inbox chunk its reference points into.
///
/// A client that leaves create_time at 0 (the tutorial's example) has every message looked up;
/// a statement per message would cost such a batch many times an ordinary one's CPU, with the
/// log connection held, and every other sender would wait behind it.
pub(super) async fn find_archived(
    log: &mut SqliteConnection,
    lookups: &[&Msg],
) -> Result<Map<Key, Msg>, StoreError> {
    let mut found = Map::default();
    for part in lookups.chunks(CHUNK) {
        let wanted: HashSet<(&str, i64, &str), foldhash::fast::RandomState> = part
            .iter()
            .map(|m| (m.send_id.as_str(), m.create_time, m.local_id.as_str()))
            .collect();
        // A join from the constant rows: SQLite looks up the indexes for each of them.
        let mut q = QueryBuilder::<Sqlite>::new("WITH k (user_id, create_time, local_id) AS (");
        q.push_values(part, |mut b, m| {
            b.push_bind(m.send_id.as_str())
                .push_bind(m.create_time)
                .push_bind(m.local_id.as_str());
        });
        q.push(
            ") SELECT body FROM archive.sent_chunks WHERE id IN (\
             SELECT c.id FROM k JOIN archive.sent_chunks c ON c.user_id = k.user_id \
             AND c.created_upto >= k.create_time AND c.created_from <= k.create_time \
             UNION SELECT s.chunk FROM k JOIN archive.sent_keys s ON s.user_id = k.user_id \
             AND s.create_time = k.create_time AND s.local_id = k.local_id)",
        );
        let mut references = Vec::new();
        let mut rows = q.build().fetch(&mut *log);
        while let Some(row) = rows.try_next().await? {
            let body = row.try_get::<&[u8], _>(0)?;
            let refs = is_refs(body);
            for m in unpack(body)? {
                if wanted.contains(&(m.send_id.as_str(), m.create_time, m.local_id.as_str())) {
                    if refs {
                        references.push(m);
                    } else {
                        found.insert(key(&m), m);
                    }
                }
            }
        }
        drop(rows);
        // One at a time: resends of old messages may point far apart in a receiver's inbox.
        for reference in references {
            if let Some(original) = resolve(log, Schema::Archive, &[reference]).await?.pop() {
                found.insert(key(&original), original);
            }
        }
    }
    Ok(found)
}

/// The messages the references `refs` (of sent chunks, see [`pack_refs`](super::pack::pack_refs))
/// point at, in their order, from the receivers' inbox chunks in `schema`. A move writes the
/// inbox chunks in the same transaction as the sent chunks that point into them; a reference
/// whose message retention has deleted (its inbox chunk went first) is left out.
pub(super) async fn resolve(
    conn: &mut SqliteConnection,
    schema: Schema,
    refs: &[Msg],
) -> Result<Vec<Msg>, StoreError> {
    let inbox = schema.inbox_chunks();
    // Per receiver, the range of seqs wanted; per reference, where its message goes.
    let mut ranges: Map<&str, (i64, i64)> = Map::default();
    let mut place: Map<(&str, i64), usize> = Map::default();
    for (i, r) in refs.iter().enumerate() {
        let range = ranges.entry(&r.receiver_id).or_insert((r.seq, r.seq));
        *range = (range.0.min(r.seq), range.1.max(r.seq));
        place.insert((&r.receiver_id, r.seq), i);
    }
    // From the chunk that holds `low` to the one that holds `high`, through the index on
    // (user_id, first): the receiver's older chunks are not read.
    let sql = format!(
        "SELECT body FROM {inbox} WHERE user_id = ?1 AND first <= ?3 AND first >= \
         COALESCE((SELECT MAX(first) FROM {inbox} WHERE user_id = ?1 AND first <= ?2), 0) \
         ORDER BY first"
    );
    let mut found: Vec<Option<Msg>> = vec![None; refs.len()];
    for (receiver, (low, high)) in ranges {
        let bodies: Vec<Vec<u8>> = sqlx::query_scalar(&sql)
            .bind(receiver)
            .bind(low)
            .bind(high)
            .fetch_all(&mut *conn)
            .await?;
        for body in &bodies {
            for m in unpack(body)? {
                if let Some(&i) = place.get(&(receiver, m.seq)) {
                    let r = &refs[i];
                    if m.send_id == r.send_id && m.send_seq == r.send_seq {
                        found[i] = Some(m);
                    }
                }
            }
        }
    }
    Ok(found.into_iter().flatten().collect())
}
