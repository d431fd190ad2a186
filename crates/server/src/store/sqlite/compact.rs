//! Moving the log into `natter.db`: per move, each user's (or group's) inbox messages become
//! chunks of `inbox_chunks` (one, unless it holds more than [`INBOX_CHUNK_MESSAGES`]), and
//! each sender's messages one chunk of `sent_chunks` holding references to them
//! ([`pack_refs`]), so a message is stored once.
//!
//! A move writes the chunks, the counters and `moved.upto` in one transaction, so a move cut
//! short by a crash is redone, and one that committed is never applied twice. The tail forgets
//! the moved batches after that commit, under the log connection; the next append deletes them
//! from the log in its own transaction (a statement of its own would cost an fsync that appends
//! wait for).

use std::{
    collections::HashSet,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use natter_protocol::{Msg, conversation, is_group_id};
use sqlx::{QueryBuilder, Sqlite, sqlite::SqliteConnection};
use tokio::sync::{Mutex, Notify};

use super::{
    Hot,
    append::delete_moved,
    pack::{pack, pack_refs, unpack},
    tail::{Logged, between},
};
use crate::store::{
    CHUNK, StoreError,
    batch::{Map, takes_direct_conv_seq},
    conv::{Changes, ConvSql, apply_change, change_target, changes},
    page_bytes,
};

/// Frames (pages) the log's WAL holds before the compactor restarts it, holding appends for one
/// checkpoint pass: 4 MiB with 4 KiB pages, a few moves' worth at high load.
const LOG_WAL_FRAMES: i64 = 1024;

/// Moves every committed batch of the log into `natter.db`: chunks, counters and `moved.upto`
/// in one transaction there; then the tail forgets the batches. The next append deletes them
/// from the log in its own transaction (a statement of its own would cost an fsync that appends
/// wait for), and the log's WAL is checkpointed here, off the append path.
pub(super) async fn compact(hot: &Hot, writer: &Mutex<SqliteConnection>) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut archive = writer.lock().await;
    let (upto, batches) = {
        let tail = hot.tail();
        let batches: Vec<Logged> = tail.batches.iter().cloned().collect();
        (tail.next_id - 1, batches)
    };
    let from: i64 = sqlx::query_scalar("SELECT upto FROM main.moved")
        .fetch_one(&mut *archive)
        .await?;
    let mut moved = 0;
    if upto > from {
        let created = created_upto(&mut archive, &between(&batches, from, upto)).await?;
        let chunks = tokio::task::spawn_blocking(move || {
            Chunks::changed(between(&batches, from, upto), &created)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        moved = chunks.inbox.iter().map(|c| c.last - c.first + 1).sum();
        let mut tx = sqlx::Connection::begin(&mut *archive).await?;
        chunks.write(&mut tx).await?;
        sqlx::query("UPDATE main.moved SET upto = ?")
            .bind(upto)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    drop(archive);

    // natter.db has the messages and their counters: the tail forgets them (under the log
    // connection, so no append sees half of it). The forgotten batches are usually the last
    // references to their messages: they are freed after both locks are let go, on a blocking
    // thread (thousands of allocations: ~1-3 ms that appends would otherwise wait for).
    let log = hot.log.lock().await;
    let forgotten = hot.tail().forget(upto);
    drop(log);
    if !forgotten.is_empty() {
        tokio::task::spawn_blocking(move || drop(forgotten));
    }
    // The log's WAL: most of it is copied back while appends go on; then the rest (the frames
    // of appends that raced the first pass) with appends held. The WAL starts over only when an
    // append begins after a checkpoint that copied everything; under steady load an append is
    // nearly always in flight during the first pass, so without the second the WAL would grow
    // for as long as the load lasts. The second pass (an fsync with appends held) runs once the
    // WAL holds [`LOG_WAL_FRAMES`], not after every move: the WAL stays that small, and appends
    // are held a few times a second at most instead of after every move.
    let checkpoint = "PRAGMA wal_checkpoint(PASSIVE)";
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as(checkpoint).fetch_one(&hot.reads).await?;
    if frames >= LOG_WAL_FRAMES {
        let _log = hot.log.lock().await;
        sqlx::query(checkpoint).execute(&hot.reads).await?;
    }
    if moved > 0 {
        let took = started.elapsed();
        hot.moves.record(took);
        tracing::debug!(moved, upto, ?took, "log compacted");
    }
    Ok(())
}

/// Deletes the moved batches from the log now (on start, and before retention), instead of in
/// the next append.
pub(super) async fn clear_log(hot: &Hot) -> Result<(), StoreError> {
    let mut log = hot.log.lock().await;
    let upto = hot.tail().moved_upto;
    delete_moved(&mut log, upto).await?;
    hot.tail().cleared_upto = upto;
    Ok(())
}

/// Compacts every `every` ([`COMPACT_EVERY`](super::COMPACT_EVERY)), or sooner when the log
/// fills; stops when the store is dropped.
pub(super) async fn compactor(
    hot: Weak<Hot>,
    writer: Weak<Mutex<SqliteConnection>>,
    wake: Arc<Notify>,
    every: Duration,
) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        let (Some(hot), Some(writer)) = (hot.upgrade(), writer.upgrade()) else {
            return;
        };
        if hot.tail().rows() == 0 {
            continue;
        }
        if let Err(e) = compact(&hot, &writer).await {
            tracing::warn!(error = %e, "compacting the message log failed; retrying");
        }
    }
}

/// Most messages in one inbox chunk, and most of their bytes ([`page_bytes`]): a reader that
/// wants one message of a chunk (a conversation's history, a sent stream's reference) reads and
/// skips through the whole chunk, so its cost is bounded by this, not by how many messages one
/// move carried for that receiver under load (tens of thousands).
const INBOX_CHUNK_MESSAGES: usize = 256;
const INBOX_CHUNK_BYTES: usize = 256 * 1024;

/// A receiver's run of a move cut into inbox chunks within [`INBOX_CHUNK_MESSAGES`] and
/// [`INBOX_CHUNK_BYTES`] (at least one message each).
fn pieces(run: Vec<&Msg>) -> impl Iterator<Item = Vec<&Msg>> {
    let mut rest = run.into_iter().peekable();
    std::iter::from_fn(move || {
        let mut piece = Vec::new();
        let mut bytes = 0;
        while let Some(m) = rest.peek() {
            let weight = page_bytes(m);
            if !piece.is_empty()
                && (piece.len() == INBOX_CHUNK_MESSAGES || bytes + weight > INBOX_CHUNK_BYTES)
            {
                break;
            }
            bytes += weight;
            piece.extend(rest.next());
        }
        (!piece.is_empty()).then_some(piece)
    })
}

/// What a move writes: the chunks of each stream and the counters they raise, the
/// one-to-one conversations' chunks and the chat list's changes.
#[derive(Debug, Default)]
struct Chunks {
    inbox: Vec<Chunk>,
    sent: Vec<Chunk>,
    /// References to one-to-one conversations' entries, a chunk per conversation, by conv_seq.
    convs: Vec<Chunk>,
    changes: Changes,
    /// Recalls and edits of entries moved before: their chunks are rewritten.
    earlier: Vec<Msg>,
    /// Per user: the greatest seq, send_seq and create_time (of a message with a local_id) moved.
    counters: Vec<(String, i64, i64, i64)>,
}

/// A run of consecutive messages of one stream.
#[derive(Debug)]
struct Chunk {
    user: String,
    first: i64,
    last: i64,
    last_time: i64,
    /// Sent chunks: the create_time range of its messages created in order (see
    /// [`Chunks::of`]); (0, -1) when it has none.
    created: (i64, i64),
    /// Sent chunks: the (create_time, local_id) of its other messages with a local_id.
    keys: Vec<(i64, String)>,
    body: Vec<u8>,
}

impl Chunks {
    /// [`Chunks::of`] the messages with the move's recalls and edits applied: to entries of the
    /// same move before they are packed, to earlier ones by rewriting their chunks
    /// ([`Chunks::earlier`]).
    fn changed(msgs: Vec<&Msg>, created_upto: &Map<String, i64>) -> Chunks {
        let events: Vec<&Msg> = msgs
            .iter()
            .copied()
            .filter(|m| change_target(m).is_some())
            .collect();
        if events.is_empty() {
            return Chunks::of(msgs, created_upto);
        }
        let mut owned: Vec<Msg> = msgs.into_iter().cloned().collect();
        let at: Map<(String, i64), usize> = owned
            .iter()
            .enumerate()
            .filter(|(_, m)| m.conv_seq > 0 && conversation::is_entry(m))
            .map(|(i, m)| ((m.conv_id.clone(), m.conv_seq), i))
            .collect();
        let mut earlier = Vec::new();
        for event in events {
            let Some((conv_id, seq)) = change_target(event) else {
                continue;
            };
            match at.get(&(conv_id.to_owned(), seq)) {
                Some(&i) => apply_change(&mut owned[i], event),
                None => earlier.push(event.clone()),
            }
        }
        let mut chunks = Chunks::of(&owned, created_upto);
        chunks.earlier = earlier;
        chunks
    }

    /// Cuts `msgs` (in id order) into chunks: an inbox's in pieces ([`pieces`]), one per sent
    /// stream and per one-to-one conversation. Pure CPU: runs off the runtime.
    ///
    /// `created_upto` holds, for senders of `msgs`, the greatest create_time of their messages
    /// with a local_id stored before (absent: none). A message created after all of them, and
    /// after its sender's earlier messages here, with a create_time above 0, is *in order*:
    /// those create_times only grow, so the sent chunks' ranges of them never overlap and a
    /// resend's lookup reads at most one chunk. The others go in the chunk's `keys`
    /// (`sent_keys`): else every lookup of a client that leaves create_time at 0 would read all
    /// of its chunks, or (were its first message in order, a range of 0 to 0) that one chunk
    /// for every message it sends.
    fn of<'a>(msgs: impl IntoIterator<Item = &'a Msg>, created_upto: &Map<String, i64>) -> Chunks {
        let mut inbox: Map<&str, Vec<&Msg>> = Map::default();
        let mut sent: Map<&str, Vec<&Msg>> = Map::default();
        let mut convs: Map<&str, Vec<&Msg>> = Map::default();
        let mut counters: Map<&str, (i64, i64, i64)> = Map::default();
        let msgs: Vec<&Msg> = msgs.into_iter().collect();
        for &m in &msgs {
            if takes_direct_conv_seq(m) && m.conv_seq > 0 {
                convs.entry(&m.conv_id).or_default().push(m);
            }
            inbox.entry(&m.receiver_id).or_default().push(m);
            sent.entry(&m.send_id).or_default().push(m);
            counters.entry(&m.receiver_id).or_insert((0, 0, -1)).0 = m.seq;
            let c = counters.entry(&m.send_id).or_insert((0, 0, -1));
            c.1 = m.send_seq;
            if !m.local_id.is_empty() {
                c.2 = c.2.max(m.create_time);
            }
        }
        let chunk = |user: &str, run: &[&Msg], cursor: fn(&Msg) -> i64, body: Vec<u8>| Chunk {
            user: user.to_owned(),
            first: cursor(run[0]),
            last: cursor(run[run.len() - 1]),
            last_time: run.iter().map(|m| m.send_time).max().unwrap_or(0),
            created: (0, -1),
            keys: Vec::new(),
            body,
        };
        // A sent chunk holds references to its messages, which the inbox chunks of the same
        // move hold (see `resolve`).
        let sent_chunk = |user: &str, run: &[&Msg]| {
            let mut c = chunk(user, run, |m| m.send_seq, pack_refs(run.iter().copied()));
            // At least 0: a message without a create_time (0 or less) is never in order.
            let mut upto = created_upto.get(user).copied().unwrap_or(-1).max(0);
            for m in run.iter().filter(|m| !m.local_id.is_empty()) {
                if m.create_time > upto {
                    if c.created.1 < c.created.0 {
                        c.created.0 = m.create_time;
                    }
                    c.created.1 = m.create_time;
                    upto = m.create_time;
                } else {
                    c.keys.push((m.create_time, m.local_id.clone()));
                }
            }
            c
        };
        Chunks {
            inbox: inbox
                .into_iter()
                .flat_map(|(user, run)| {
                    pieces(run)
                        .map(|run| chunk(user, &run, |m| m.seq, pack(run.iter().copied())))
                        .collect::<Vec<_>>()
                })
                .collect(),
            sent: sent
                .into_iter()
                .map(|(user, run)| sent_chunk(user, &run))
                .collect(),
            convs: convs
                .into_iter()
                .map(|(conv, run)| {
                    chunk(conv, &run, |m| m.conv_seq, pack_refs(run.iter().copied()))
                })
                .collect(),
            changes: changes(msgs.iter().copied()),
            earlier: Vec::new(),
            counters: counters
                .into_iter()
                .map(|(user, (seq, send_seq, created))| (user.to_owned(), seq, send_seq, created))
                .collect(),
        }
    }

    /// Inserts the chunks and raises `user_seq`.
    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        insert_chunks(conn, "main.inbox_chunks (user_id", &self.inbox).await?;
        // Ids given here, so that the keys can name their chunk (this connection is the only
        // writer).
        let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM main.sent_chunks")
            .fetch_one(&mut *conn)
            .await?;
        let ids = (base + 1..).zip(&self.sent);
        for (n, part) in self.sent.chunks(CHUNK).enumerate() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO main.sent_chunks \
                 (id, user_id, first, last, last_time, created_from, created_upto, body) ",
            );
            let first_id = base + 1 + (n * CHUNK) as i64;
            q.push_values((first_id..).zip(part), |mut b, (id, c)| {
                b.push_bind(id)
                    .push_bind(&c.user)
                    .push_bind(c.first)
                    .push_bind(c.last)
                    .push_bind(c.last_time)
                    .push_bind(c.created.0)
                    .push_bind(c.created.1)
                    .push_bind(&c.body);
            });
            q.build().execute(&mut *conn).await?;
        }
        let keys: Vec<(i64, &str, i64, &str)> = ids
            .flat_map(|(id, c)| {
                c.keys
                    .iter()
                    .map(move |(t, l)| (id, c.user.as_str(), *t, l.as_str()))
            })
            .collect();
        for part in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO main.sent_keys (chunk, user_id, create_time, local_id) ",
            );
            q.push_values(part, |mut b, (id, user, t, local_id)| {
                b.push_bind(*id)
                    .push_bind(*user)
                    .push_bind(*t)
                    .push_bind(*local_id);
            });
            q.build().execute(&mut *conn).await?;
        }
        insert_chunks(conn, "main.conv_chunks (conv_id", &self.convs).await?;
        ConvSql::<Sqlite>::apply(conn, &self.changes).await?;
        for event in &self.earlier {
            rewrite(conn, event).await?;
        }
        for part in self.counters.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO main.user_seq (user_id, seq, send_seq, created_upto) ",
            );
            q.push_values(part, |mut b, (user, seq, send_seq, created_upto)| {
                b.push_bind(user)
                    .push_bind(*seq)
                    .push_bind(*send_seq)
                    .push_bind(*created_upto);
            });
            q.push(
                " ON CONFLICT (user_id) DO UPDATE SET \
                 seq = MAX(user_seq.seq, excluded.seq), \
                 send_seq = MAX(user_seq.send_seq, excluded.send_seq), \
                 created_upto = MAX(user_seq.created_upto, excluded.created_upto)",
            );
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// Inserts chunks of messages or references into `into`, a table and its owner column (`main.
/// inbox_chunks (user_id`): the columns every chunk table shares.
async fn insert_chunks(
    conn: &mut SqliteConnection,
    into: &str,
    chunks: &[Chunk],
) -> Result<(), StoreError> {
    for part in chunks.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO {into}, first, last, last_time, body) "
        ));
        q.push_values(part, |mut b, c| {
            b.push_bind(&c.user)
                .push_bind(c.first)
                .push_bind(c.last)
                .push_bind(c.last_time)
                .push_bind(&c.body);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Applies a recall or an edit to its entry, moved by an earlier move: the inbox chunk that holds
/// it (a group's; one-to-one, the receiver's, found through the conversation's chunk of
/// references) is unpacked, changed and written back, so a recalled content is gone from
/// `natter.db`. An entry retention deleted is left as it is.
async fn rewrite(conn: &mut SqliteConnection, event: &Msg) -> Result<(), StoreError> {
    let Some((conv_id, seq)) = change_target(event) else {
        return Ok(());
    };
    let (owner, at) = if is_group_id(conv_id) {
        (conv_id.to_owned(), seq)
    } else {
        let refs: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT body FROM main.conv_chunks WHERE conv_id = ? AND first <= ? \
             ORDER BY first DESC LIMIT 1",
        )
        .bind(conv_id)
        .bind(seq)
        .fetch_optional(&mut *conn)
        .await?;
        let found = match refs {
            Some(body) => unpack(&body)?.into_iter().find(|r| r.conv_seq == seq),
            None => None,
        };
        match found {
            Some(r) => (r.receiver_id, r.seq),
            None => return Ok(()),
        }
    };
    let chunk: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, body FROM main.inbox_chunks WHERE user_id = ? AND first <= ? \
         ORDER BY first DESC LIMIT 1",
    )
    .bind(&owner)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, body)) = chunk else {
        return Ok(());
    };
    let mut msgs = unpack(&body)?;
    let Some(target) = msgs.iter_mut().find(|m| m.seq == at && m.conv_seq == seq) else {
        return Ok(());
    };
    apply_change(target, event);
    sqlx::query("UPDATE main.inbox_chunks SET body = ? WHERE id = ?")
        .bind(pack(&msgs))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// For the senders of `msgs`' messages with a local_id, the greatest create_time of their
/// messages with a local_id in `natter.db`, from `user_seq` (absent: none).
async fn created_upto(
    conn: &mut SqliteConnection,
    msgs: &[&Msg],
) -> Result<Map<String, i64>, StoreError> {
    let senders: HashSet<&str, foldhash::fast::RandomState> = msgs
        .iter()
        .filter(|m| !m.local_id.is_empty())
        .map(|m| m.send_id.as_str())
        .collect();
    let senders: Vec<&str> = senders.into_iter().collect();
    let mut out = Map::default();
    for part in senders.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT user_id, created_upto FROM main.user_seq WHERE user_id IN (",
        );
        let mut list = q.separated(", ");
        for user in part {
            list.push_bind(*user);
        }
        q.push(")");
        out.extend(
            q.build_query_as::<(String, i64)>()
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_run_is_cut_into_bounded_chunks() {
        let small = Msg::default();
        let run = vec![&small; 600];
        let sizes: Vec<usize> = pieces(run).map(|p| p.len()).collect();
        assert_eq!(sizes, [256, 256, 88]);
        let large = Msg {
            content: "x".repeat(100_000),
            ..Msg::default()
        };
        let huge = Msg {
            content: "x".repeat(INBOX_CHUNK_BYTES * 2),
            ..Msg::default()
        };
        let run = vec![&large, &large, &large, &huge, &large];
        let sizes: Vec<usize> = pieces(run).map(|p| p.len()).collect();
        assert_eq!(
            sizes,
            [2, 1, 1, 1],
            "within the bytes, a message larger alone"
        );
    }
}
