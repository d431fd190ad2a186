//! The embedded store: SQLite, in two files under `storage.path`.
//!
//! - `natter-log.db`, the hot file: `log_batches`, one row per accepted batch with the batch's
//!   messages packed into a blob (store/pack.rs), and the read marks. A batch is committed here
//!   (WAL, `synchronous = FULL`: one fsync per batch) and is then acknowledged. The log's batches
//!   are also kept in memory ([`Tail`]): reads and resends of logged messages never query it.
//! - `natter.db`: the messages in chunks, the `user_seq` counters and the groups. Every
//!   [`COMPACT_EVERY`] (or sooner when the log fills) the compactor moves the log into
//!   `natter.db`, on a connection of its own, while the hot file keeps taking commits: per move,
//!   each user's (or group's) inbox messages become one chunk of `inbox_chunks`, and each
//!   sender's messages one chunk of `sent_chunks` holding references to them (receiver, seq and
//!   the resend key; store/pack.rs): a message is stored once, in its receiver's inbox.
//!
//! Why: a row per message with its indexes cost SQLite ~2.3 µs of CPU per index entry, so
//!   storing a message cost more than the rest of the server's work on it; a chunk costs a row
//!   and one or two index entries whatever it holds, and a busy user's messages of a move share
//!   one. Writing whole chunks in large moves also keeps page writes off the acknowledgement path.
//!
//! What keeps it exact (the invariants):
//! - Message ids are handed out here, consecutively, in commit order (they live only in the log).
//!   `natter.db` holds every message up to `moved.upto`, the log every committed message after it;
//!   a move writes the chunks, the counters and `moved.upto` in one transaction, so a move
//!   interrupted by a crash is redone, and one that committed is never applied twice.
//! - Only this process writes the files (`natter.lock`), and in it only the appender allocates
//!   sequence numbers, so the counters of users with messages in the log live in memory
//!   ([`Tail`]); for every other user `user_seq` in `natter.db` is current.
//! - [`Tail`] changes only while the log connection is held: after an append commits, and after
//!   a move has committed in `natter.db`. The moved batches leave the log in the next append's
//!   transaction (no fsync of their own for appends to wait behind), and the compactor, not the
//!   committing connection, checkpoints the log's WAL.
//! - A resend is looked up only if its `create_time` is at or below its sender's
//!   `created_upto` (tail, else `user_seq`), which a move raises in the same transaction as the
//!   chunks it writes, or is 0 or less (no time: always looked up); in `natter.db` it is found
//!   through the one sent chunk whose create_time range holds it, or by its key in `sent_keys`
//!   (a range covers only messages created after all their sender's stored ones, with a
//!   create_time above 0; the rest are keyed, see [`Chunks::of`]). A batch's lookups in
//!   `natter.db` take one statement per [`CHUNK`] of them ([`find_archived`]).
//! - A reader takes the tail's batches before reading `natter.db`: a batch gone from the tail by
//!   then was moved before, so `natter.db` has it; a message seen in both is taken once.
//! - Read receipts are read marks (reader, peer, up to server_id) in the hot file; `is_read` is
//!   derived from them on reading, so a receipt writes one row whatever it covers.
//! - Retention deletes whole chunks, oldest first, once their newest message is older than the
//!   cutoff: a message can outlive the cutoff by about one move, never go before it.
//! - A sent chunk's references point into inbox chunks written in the same transaction; a
//!   reader resolves them there ([`resolve`]). Retention may delete an inbox chunk before a sent
//!   chunk pointing into it; the messages it held are past the cutoff, and the sent stream
//!   leaves them out too.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs::File,
    hash::BuildHasher,
    path::Path,
    str::FromStr,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use futures_util::TryStreamExt;
use natter_protocol::{Msg, msg_type};
use sqlx::{
    ConnectOptions, QueryBuilder, Row, Sqlite,
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use crate::metrics::LatencyHistogram;

use super::{
    Appended, Key, Map, StoreError, Stream, classify, key, migrator, number,
    pack::{is_refs, pack, pack_refs, unpack},
    sql::{CHUNK, COLUMNS, SQLITE_MIGRATIONS},
};

const LOG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "message_log",
        include_str!("../../migrations/sqlite-log/0001_message_log.sql"),
    ),
    (
        2,
        "log_batches",
        include_str!("../../migrations/sqlite-log/0002_log_batches.sql"),
    ),
];

/// Messages in the log that wake the compactor before its next tick.
const COMPACT_ROWS: i64 = 8192;

/// The compactor's tick: messages wait at most about this long in the log. Short, so that each
/// move is small: a move disturbs the commits that run beside it (its writes and fsyncs share the
/// disk, its CPU the cores) about in proportion to its size, while what
/// all moves cost together barely changes (docs/benchmarks.md: ack p99 at 20,000/s was 7.6 ms
/// with 100 ms, 13.7 with 250 and 23.3 with 1000).
const COMPACT_EVERY: Duration = Duration::from_millis(50);

/// Frames (pages) the log's WAL holds before the compactor restarts it, holding appends for one
/// checkpoint pass: 4 MiB with 4 KiB pages, a few moves' worth at high load.
const LOG_WAL_FRAMES: i64 = 1024;

/// Chunks looked at per statement by retention, so that moves are never held up for long.
const PRUNE_CHUNKS: i64 = 2000;

/// Chunks a read of a stream takes from `natter.db` per statement.
const READ_CHUNKS: usize = 8;

/// Rows of the old `messages` table packed into chunks per transaction on start.
const CONVERT_ROWS: i64 = 8192;

/// Messages the log may hold (in memory too) before appends are refused with
/// [`StoreError::Backlog`]: reached only when moves to `natter.db` keep failing (a full disk,
/// say); about 15 s at the store's maximum rate, and ~400 MB of memory.
const LOG_LIMIT: i64 = 1 << 20;

/// How long `open` waits for another process (or a store being dropped) to let go of the files.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// SQLite in WAL mode with `synchronous = FULL`: an append returns after the log's WAL is
/// fsynced, once per batch.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Read connections to `natter.db`.
    pub(super) pool: SqlitePool,
    /// The one connection that writes `natter.db` (groups, moves, retention). The only writer, so
    /// plain `BEGIN` never meets a concurrent commit; and a connection that sees no other writer
    /// keeps its page cache.
    writer: Arc<Mutex<SqliteConnection>>,
    hot: Arc<Hot>,
}

#[derive(Debug)]
struct Hot {
    /// The one connection that writes `natter-log.db`; `natter.db` is attached to it as
    /// `archive`, read-only in practice (counters and resends of moved messages).
    log: Arc<Mutex<SqliteConnection>>,
    /// Read connections to `natter-log.db` (read marks).
    reads: SqlitePool,
    /// Never held across an `.await`.
    tail: std::sync::Mutex<Tail>,
    wake: Arc<Notify>,
    /// Messages the log may hold before appends are refused ([`LOG_LIMIT`]).
    log_limit: i64,
    /// How long each move took (`natter_store_move_seconds`).
    moves: LatencyHistogram,
    _lock: File,
}

/// What the log holds, in memory.
#[derive(Debug, Default)]
struct Tail {
    /// The id the next stored message gets.
    next_id: i64,
    /// The last id moved to `natter.db`: the log holds the ids after it.
    moved_upto: i64,
    /// The log's batches up to this id are deleted (the next append deletes up to `moved_upto`).
    cleared_upto: i64,
    /// The log's batches, oldest first.
    batches: VecDeque<Logged>,
    /// The ids of the log's messages with a local_id, by the hash of their
    /// [`Key`](super::Key); an entry is compared with the logged message itself, so no copy of a
    /// key is kept.
    keys: hashbrown::HashTable<i64>,
    hasher: foldhash::fast::RandomState,
    /// The counters of every user (or group) with a message in the log.
    counters: Map<String, Counter>,
}

/// A batch in the log: its messages have the ids `first_id..first_id + msgs.len()`.
#[derive(Debug, Clone)]
struct Logged {
    first_id: i64,
    msgs: Arc<[Msg]>,
}

impl Tail {
    /// Messages in the log (ids are consecutive and only committed ones are handed out).
    fn rows(&self) -> i64 {
        self.next_id - 1 - self.moved_upto
    }

    /// The logged original of `m` (same [`Key`](super::Key)), if the log has one.
    fn original(&self, m: &Msg) -> Option<&Msg> {
        let hash = key_hash(&self.hasher, m);
        let id = self.keys.find(hash, |id| {
            logged(&self.batches, *id).is_some_and(|o| same_key(o, m))
        })?;
        logged(&self.batches, *id)
    }

    /// Remembers the key of `m`, logged with this id.
    fn remember(&mut self, m: &Msg, id: i64) {
        let Tail {
            keys,
            hasher,
            batches,
            ..
        } = self;
        keys.insert_unique(key_hash(hasher, m), id, |id| {
            logged(batches, *id).map_or(0, |o| key_hash(hasher, o))
        });
    }
}

/// The logged message with this id.
fn logged(batches: &VecDeque<Logged>, id: i64) -> Option<&Msg> {
    let after = batches.partition_point(|b| b.first_id <= id);
    let batch = batches.get(after.checked_sub(1)?)?;
    batch.msgs.get(usize::try_from(id - batch.first_id).ok()?)
}

fn key_hash(hasher: &foldhash::fast::RandomState, m: &Msg) -> u64 {
    hasher.hash_one((&m.send_id, m.create_time, &m.local_id))
}

fn same_key(a: &Msg, b: &Msg) -> bool {
    a.create_time == b.create_time && a.local_id == b.local_id && a.send_id == b.send_id
}

impl Hot {
    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A user's (or group's) counters.
#[derive(Debug, Clone, Copy)]
struct Counter {
    seq: i64,
    send_seq: i64,
    /// The greatest `create_time` of the user's stored messages with a `local_id` (-1: none).
    created_upto: i64,
    /// The id of the user's last message in the log.
    last_id: i64,
}

impl Counter {
    /// A user with nothing stored.
    const NONE: Counter = Counter {
        seq: 0,
        send_seq: 0,
        created_upto: -1,
        last_id: 0,
    };
}

fn options(file: &Path, cache_kib: u32) -> Result<SqliteConnectOptions, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str("sqlite://")?
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .statement_cache_capacity(512)
        .pragma("cache_size", format!("-{cache_kib}"))
        // Statement journals of multi-row statements in memory, not in temporary files.
        .pragma("temp_store", "memory"))
}

/// What tests change: the limit on the messages waiting in the log, and the compactor's tick
/// (a test that counts chunks moves the log itself, with `prune(0)`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub log_limit: i64,
    pub compact_every: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            log_limit: LOG_LIMIT,
            compact_every: COMPACT_EVERY,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the directory `dir`, moves whatever an earlier
    /// run left in the log into `natter.db`, and starts the compactor.
    pub async fn open(dir: &str) -> Result<SqliteStore, StoreError> {
        Self::open_tuned(dir, Tuning::default()).await
    }

    /// [`open`](Self::open) with other [`Tuning`] (tests).
    #[doc(hidden)]
    pub async fn open_tuned(dir: &str, tuning: Tuning) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Path(dir.to_owned(), e))?;
        let lock = lock(dir).await?;
        let dir_path = Path::new(dir);
        let archive_file = dir_path.join("natter.db");
        let log_file = dir_path.join("natter-log.db");

        // 64 MiB of page cache for natter.db's writer and readers (the default is 2 MiB).
        let archive = options(&archive_file, 65536)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(archive.clone())
            .await?;
        migrator(SQLITE_MIGRATIONS).await?.run(&pool).await?;
        let mut writer = archive.connect().await?;
        convert_rows(&mut writer).await?;

        let log_options = options(&log_file, 8192)?;
        let mut log = log_options.connect().await?;
        migrator(LOG_MIGRATIONS).await?.run(&mut log).await?;
        // The compactor checkpoints the log's WAL, on another connection: a commit never waits
        // for a checkpoint.
        sqlx::query("PRAGMA wal_autocheckpoint = 0")
            .execute(&mut log)
            .await?;
        // The appender reads natter.db (counters, resends) on its own connection: no pool, no
        // hop to another thread per batch. It never writes there.
        sqlx::query("ATTACH DATABASE ? AS archive")
            .bind(archive_file.to_string_lossy().into_owned())
            .execute(&mut log)
            .await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(log_options)
            .await?;

        // Recovery: what the log holds beyond `moved.upto` goes into the tail, and moves now.
        let moved: i64 = sqlx::query_scalar("SELECT upto FROM moved")
            .fetch_one(&mut writer)
            .await?;
        let mut batches = VecDeque::new();
        let legacy = sqlx::query(&format!(
            "SELECT {COLUMNS}, id FROM message_log WHERE id > ? ORDER BY id"
        ))
        .bind(moved)
        .fetch_all(&mut log)
        .await?;
        for row in legacy {
            batches.push_back(Logged {
                first_id: row.try_get(12)?,
                msgs: Arc::from([Self::row_to_msg(&row)?]),
            });
        }
        let logged = sqlx::query("SELECT first_id, body FROM log_batches ORDER BY first_id")
            .fetch_all(&mut log)
            .await?;
        for row in logged {
            let first_id: i64 = row.try_get(0)?;
            let msgs = unpack(row.try_get::<&[u8], _>(1)?)?;
            if first_id + msgs.len() as i64 - 1 > moved {
                batches.push_back(Logged {
                    first_id,
                    msgs: msgs.into(),
                });
            }
        }
        let last_id = batches
            .back()
            .map_or(0, |b| b.first_id + b.msgs.len() as i64 - 1);

        let wake = Arc::new(Notify::new());
        let store = SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(writer)),
            hot: Arc::new(Hot {
                log: Arc::new(Mutex::new(log)),
                reads,
                tail: std::sync::Mutex::new(Tail {
                    next_id: last_id.max(moved) + 1,
                    moved_upto: moved,
                    batches,
                    ..Tail::default()
                }),
                wake: wake.clone(),
                log_limit: tuning.log_limit,
                moves: LatencyHistogram::new(
                    "natter_store_move_seconds",
                    "Time to move the SQLite message log into natter.db (one move)",
                ),
                _lock: lock,
            }),
        };
        compact(&store.hot, &store.writer).await?;
        clear_log(&store.hot).await?;
        tokio::spawn(compactor(
            Arc::downgrade(&store.hot),
            Arc::downgrade(&store.writer),
            wake,
            tuning.compact_every,
        ));
        Ok(store)
    }

    pub(super) async fn writer(&self) -> Result<OwnedMutexGuard<SqliteConnection>, StoreError> {
        Ok(self.writer.clone().lock_owned().await)
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.hot.tail()
    }

    pub(super) async fn append_batch(&self, batch: &[Msg]) -> Result<Vec<Appended>, StoreError> {
        let mut log = self.hot.log.clone().lock_owned().await;
        let waiting = self.tail().rows();
        if waiting >= self.hot.log_limit {
            self.hot.wake.notify_one();
            return Err(StoreError::Backlog(waiting));
        }

        // 1. The counters of the batch's users that have no message in the log, from
        //    `user_seq` (the tail has the others).
        let missing: Vec<&str> = {
            let tail = self.tail();
            let mut seen: HashSet<&str, foldhash::fast::RandomState> = HashSet::default();
            batch
                .iter()
                .flat_map(|m| [m.receiver_id.as_str(), m.send_id.as_str()])
                .filter(|user| !tail.counters.contains_key(*user) && seen.insert(*user))
                .collect()
        };
        let mut archived: Map<String, Counter> = Map::default();
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
        let counter = |tail: &Tail, user: &str| {
            tail.counters
                .get(user)
                .or_else(|| archived.get(user))
                .copied()
                .unwrap_or(Counter::NONE)
        };

        // 2. Resends. A message created after every stored one of its sender (log and natter.db)
        //    is new without a lookup; the others are looked up in the tail, then in natter.db.
        let mut stored = Map::default();
        let lookups: Vec<&Msg> = {
            let tail = self.tail();
            let mut lookups = Vec::new();
            for m in batch.iter().filter(|m| {
                // A create_time of 0 or less is no time at all: always looked up (and keyed).
                !m.local_id.is_empty()
                    && m.create_time <= counter(&tail, &m.send_id).created_upto.max(0)
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
            stored.extend(find_archived(&mut log, &lookups).await?);
        }
        let (fresh, repeat_of) = classify(batch, &stored);

        // 3. Sequence numbers.
        let mut next: Map<String, (i64, i64)> = Map::default();
        {
            let tail = self.tail();
            for m in batch
                .iter()
                .zip(&fresh)
                .filter(|(_, f)| **f)
                .map(|(m, _)| m)
            {
                for user in [&m.receiver_id, &m.send_id] {
                    if !next.contains_key(user) {
                        let c = counter(&tail, user);
                        next.insert(user.clone(), (c.seq + 1, c.send_seq + 1));
                    }
                }
            }
        }
        let (numbered, outcomes) = number(batch, &fresh, &repeat_of, &stored, &mut next);
        if numbered.is_empty() {
            return Ok(outcomes);
        }

        // 4. The batch and the read marks, in one transaction on the log; and the deletion of
        //    the batches moved since the last append. Most appends have neither marks nor
        //    deletions: their one INSERT commits by itself, one round trip to SQLite's thread
        //    instead of three (BEGIN, INSERT, COMMIT); durable the same way (WAL, fsync).
        let (first_id, clear) = {
            let tail = self.tail();
            let clear = (tail.moved_upto > tail.cleared_upto).then_some(tail.moved_upto);
            (tail.next_id, clear)
        };
        let insert =
            sqlx::query("INSERT INTO log_batches (first_id, count, body) VALUES (?, ?, ?)")
                .bind(first_id)
                .bind(numbered.len() as i64)
                .bind(pack(&numbered));
        let marks = numbered.iter().any(|m| m.msg_type == msg_type::READ);
        if clear.is_none() && !marks {
            insert.execute(&mut *log).await?;
        } else {
            let mut tx = sqlx::Connection::begin(&mut *log).await?;
            if let Some(upto) = clear {
                delete_moved(&mut tx, upto).await?;
            }
            insert.execute(&mut *tx).await?;
            append_marks(&mut tx, &numbered).await?;
            tx.commit().await?;
        }

        // 5. The tail learns what the log now holds (the log connection is still held). `next`
        //    holds the next free numbers of every user the batch numbered.
        let mut tail = self.tail();
        for (user, (seq, send_seq)) in next {
            let c = counter(&tail, &user);
            tail.counters.insert(
                user,
                Counter {
                    seq: seq - 1,
                    send_seq: send_seq - 1,
                    ..c
                },
            );
        }
        // The batch first: the key table finds (and rehashes) its entries through it.
        let numbered: Arc<[Msg]> = numbered.into();
        tail.batches.push_back(Logged {
            first_id,
            msgs: numbered.clone(),
        });
        for (i, m) in numbered.iter().enumerate() {
            let id = first_id + i as i64;
            if !m.local_id.is_empty() {
                tail.remember(m, id);
            }
            if let Some(c) = tail.counters.get_mut(&m.receiver_id) {
                c.last_id = id;
            }
            if let Some(c) = tail.counters.get_mut(&m.send_id) {
                c.last_id = id;
                if !m.local_id.is_empty() {
                    c.created_upto = c.created_upto.max(m.create_time);
                }
            }
        }
        tail.next_id = first_id + numbered.len() as i64;
        if let Some(upto) = clear {
            tail.cleared_upto = upto;
        }
        if tail.rows() >= COMPACT_ROWS {
            self.hot.wake.notify_one();
        }
        Ok(outcomes)
    }

    pub(super) async fn after_impl(
        &self,
        user: &str,
        stream: Stream,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Msg>, StoreError> {
        let limit = limit as usize;
        let cursor = |m: &Msg| stream.cursor(m);
        // The tail first (see the invariants), then natter.db.
        let logged: Vec<Logged> = {
            let tail = self.tail();
            if tail.counters.contains_key(user) {
                tail.batches.iter().cloned().collect()
            } else {
                Vec::new()
            }
        };
        let mut msgs: Vec<Msg> = logged
            .iter()
            .flat_map(|b| b.msgs.iter())
            .filter(|m| stream.owner(m) == user && cursor(m) > after)
            .take(limit)
            .cloned()
            .collect();
        let table = match stream {
            Stream::Inbox => "inbox_chunks",
            Stream::Sent => "sent_chunks",
        };
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
        while found < limit {
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
                read.extend(resolve(&mut conn, "main.inbox_chunks", &refs).await?);
            }
            read.sort_by_key(cursor);
            read.truncate(limit - found);
            found += read.len();
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

    pub(super) async fn cursors_impl(&self, user: &str) -> Result<(i64, i64), StoreError> {
        if let Some(c) = self.tail().counters.get(user) {
            return Ok((c.seq, c.send_seq));
        }
        self.stored_cursors(user).await
    }

    /// Moves the log, then deletes the chunks whose newest message was sent before
    /// `before_ms`, oldest first; returns how many messages left the inboxes.
    pub(super) async fn prune_impl(&self, before_ms: i64) -> Result<u64, StoreError> {
        compact(&self.hot, &self.writer).await?;
        clear_log(&self.hot).await?;
        let mut pruned = 0;
        for table in ["inbox_chunks", "sent_chunks"] {
            loop {
                let mut writer = self.writer().await?;
                // Chunks are written in move order, so their ids follow time: the old ones are
                // a prefix (a chunk of a move may wait behind a slightly newer one of the same
                // move, until the next pass).
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&format!(
                    "SELECT id, last_time, last - first + 1 FROM {table} ORDER BY id LIMIT ?"
                ))
                .bind(PRUNE_CHUNKS)
                .fetch_all(&mut *writer)
                .await?;
                let old = rows.iter().take_while(|r| r.1 < before_ms).count();
                let Some(&(upto, _, _)) = old.checked_sub(1).map(|i| &rows[i]) else {
                    break;
                };
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                sqlx::query(&format!("DELETE FROM {table} WHERE id <= ?"))
                    .bind(upto)
                    .execute(&mut *tx)
                    .await?;
                if table == "sent_chunks" {
                    sqlx::query("DELETE FROM sent_keys WHERE chunk <= ?")
                        .bind(upto)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if table == "inbox_chunks" {
                    pruned += rows[..old].iter().map(|r| r.2 as u64).sum::<u64>();
                }
                if old < rows.len() || rows.len() < PRUNE_CHUNKS as usize {
                    break;
                }
            }
        }
        Ok(pruned)
    }

    /// A group's seq as far as the log knows it (0 when the log has none of its messages).
    pub(super) fn group_seq_floor(&self, group_id: &str) -> i64 {
        self.tail().counters.get(group_id).map_or(0, |c| c.seq)
    }

    /// The compactor's metrics: how long moves take, and how many messages wait in the log.
    pub(super) fn render_metrics_impl(&self, out: &mut String) {
        use std::fmt::Write;
        self.hot.moves.render(out);
        let waiting = self.tail().rows();
        let name = "natter_store_log_messages";
        let _ = writeln!(
            out,
            "# HELP {name} Messages committed to the SQLite log and not yet moved into natter.db\n\
             # TYPE {name} gauge\n{name} {waiting}"
        );
    }
}

/// The originals in `natter.db` of messages sent again (`lookups`), by [`Key`]: one statement
/// per [`CHUNK`] lookups, not one per message. A message is looked for in its sender's sent chunk
/// whose create_time range holds its `create_time` (at most one: the ranges cover only messages
/// created in order, see [`Chunks::of`]), and by its key in `sent_keys` (the others); each chunk
/// found is read once, however many lookups it answers. Only real resends find something, and
/// each of those reads the receiver's inbox chunk its reference points into.
///
/// A client that leaves create_time at 0 (the tutorial's example) has every message looked up;
/// one statement per message made such a batch cost ~40 times the CPU of an ordinary one, with
/// the log connection held, so every other sender waited behind it.
async fn find_archived(
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
            if let Some(original) = resolve(log, "archive.inbox_chunks", &[reference])
                .await?
                .pop()
            {
                found.insert(key(&original), original);
            }
        }
    }
    Ok(found)
}

/// The messages the references `refs` (of sent chunks, see [`pack_refs`]) point at, in their
/// order, from the receivers' chunks in `inbox` (`main.inbox_chunks`, or
/// `archive.inbox_chunks` on the log's connection). A move writes the inbox chunks in the same
/// transaction as the sent chunks that point into them; a reference whose message retention has
/// deleted (its inbox chunk went first) is left out.
async fn resolve(
    conn: &mut SqliteConnection,
    inbox: &str,
    refs: &[Msg],
) -> Result<Vec<Msg>, StoreError> {
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

/// What a move writes: the chunks of each stream and the counters they raise.
#[derive(Debug, Default)]
struct Chunks {
    inbox: Vec<Chunk>,
    sent: Vec<Chunk>,
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
    /// Cuts `msgs` (in id order) into one chunk per stream. Pure CPU: runs off the runtime.
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
        let mut counters: Map<&str, (i64, i64, i64)> = Map::default();
        for m in msgs {
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
                .map(|(user, run)| chunk(user, &run, |m| m.seq, pack(run.iter().copied())))
                .collect(),
            sent: sent
                .into_iter()
                .map(|(user, run)| sent_chunk(user, &run))
                .collect(),
            counters: counters
                .into_iter()
                .map(|(user, (seq, send_seq, created))| (user.to_owned(), seq, send_seq, created))
                .collect(),
        }
    }

    /// Inserts the chunks and raises `user_seq`.
    async fn write(&self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        for part in self.inbox.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO main.inbox_chunks (user_id, first, last, last_time, body) ",
            );
            q.push_values(part, |mut b, c| {
                b.push_bind(&c.user)
                    .push_bind(c.first)
                    .push_bind(c.last)
                    .push_bind(c.last_time)
                    .push_bind(&c.body);
            });
            q.build().execute(&mut *conn).await?;
        }
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

/// Packs the rows an older version stored in `messages` (a row per message) into chunks, a
/// transaction per [`CONVERT_ROWS`] rows; their counters are already in `user_seq`, so which of
/// them were created in order is judged against the chunks written so far (see
/// [`Chunks::of`]), not against `user_seq`, which has seen them all.
async fn convert_rows(writer: &mut SqliteConnection) -> Result<(), StoreError> {
    loop {
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, id FROM messages ORDER BY id LIMIT ?"
        ))
        .bind(CONVERT_ROWS)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let last: i64 = last.try_get(12)?;
        let msgs = rows
            .iter()
            .map(SqliteStore::row_to_msg)
            .collect::<Result<Vec<_>, _>>()?;
        let created = created_upto(&mut tx, &msgs.iter().collect::<Vec<_>>(), IN_CHUNKS).await?;
        Chunks::of(&msgs, &created).write(&mut tx).await?;
        sqlx::query("DELETE FROM messages WHERE id <= ?")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            rows = msgs.len(),
            upto = last,
            "stored messages packed into chunks"
        );
    }
}

/// The logged messages with ids in `from + 1..=upto`, in id order.
fn between(batches: &[Logged], from: i64, upto: i64) -> Vec<&Msg> {
    batches
        .iter()
        .flat_map(|b| (b.first_id..).zip(b.msgs.iter()))
        .filter(|(id, _)| *id > from && *id <= upto)
        .map(|(_, m)| m)
        .collect()
}

/// Where [`created_upto`] looks: the statement before and after the list of senders.
type CreatedFrom = (&'static str, &'static str);

/// What `natter.db` holds: `user_seq`.
const STORED: CreatedFrom = (
    "SELECT user_id, created_upto FROM main.user_seq WHERE user_id IN (",
    ")",
);

/// What the sent chunks' create_time ranges cover.
const IN_CHUNKS: CreatedFrom = (
    "SELECT user_id, MAX(created_upto) FROM main.sent_chunks WHERE user_id IN (",
    ") GROUP BY user_id",
);

/// For the senders of `msgs`' messages with a local_id, the greatest create_time of their
/// messages with a local_id in `natter.db`, as `from` says (absent: none).
async fn created_upto(
    conn: &mut SqliteConnection,
    msgs: &[&Msg],
    from: CreatedFrom,
) -> Result<Map<String, i64>, StoreError> {
    let senders: HashSet<&str, foldhash::fast::RandomState> = msgs
        .iter()
        .filter(|m| !m.local_id.is_empty())
        .map(|m| m.send_id.as_str())
        .collect();
    let senders: Vec<&str> = senders.into_iter().collect();
    let mut out = Map::default();
    for part in senders.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(from.0);
        let mut list = q.separated(", ");
        for user in part {
            list.push_bind(*user);
        }
        q.push(from.1);
        out.extend(
            q.build_query_as::<(String, i64)>()
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    Ok(out)
}

/// Takes `natter.lock` in `dir`, waiting up to [`LOCK_WAIT`] for another holder to let go.
async fn lock(dir: &str) -> Result<File, StoreError> {
    let path = Path::new(dir).join("natter.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Path(dir.to_owned(), e))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Path(dir.to_owned(), e));
            }
        }
    }
}

/// Moves every committed batch of the log into `natter.db`: chunks, counters and `moved.upto`
/// in one transaction there; then the tail forgets the batches. The next append deletes them
/// from the log in its own transaction (a statement of its own would cost an fsync that appends
/// wait for), and the log's WAL is checkpointed here, off the append path.
async fn compact(hot: &Hot, writer: &Mutex<SqliteConnection>) -> Result<(), StoreError> {
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
        let created = created_upto(&mut archive, &between(&batches, from, upto), STORED).await?;
        let chunks = tokio::task::spawn_blocking(move || {
            Chunks::of(between(&batches, from, upto), &created)
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
    let forgotten: Vec<Logged> = {
        let mut tail = hot.tail();
        let mut forgotten = Vec::new();
        while tail
            .batches
            .front()
            .is_some_and(|b| b.first_id + b.msgs.len() as i64 - 1 <= upto)
        {
            forgotten.extend(tail.batches.pop_front());
        }
        tail.keys.retain(|id| *id > upto);
        tail.counters.retain(|_, c| c.last_id > upto);
        tail.moved_upto = tail.moved_upto.max(upto);
        forgotten
    };
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
async fn clear_log(hot: &Hot) -> Result<(), StoreError> {
    let mut log = hot.log.lock().await;
    let upto = hot.tail().moved_upto;
    let mut tx = sqlx::Connection::begin(&mut *log).await?;
    delete_moved(&mut tx, upto).await?;
    sqlx::query("DELETE FROM message_log WHERE id <= ?")
        .bind(upto)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    hot.tail().cleared_upto = upto;
    Ok(())
}

/// The read marks of the read receipts in `msgs`.
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
async fn delete_moved(log: &mut SqliteConnection, upto: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM log_batches WHERE first_id <= ?")
        .bind(upto)
        .execute(log)
        .await?;
    Ok(())
}

/// Compacts every `every` ([`COMPACT_EVERY`]), or sooner when the log fills; stops when the
/// store is dropped.
async fn compactor(
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
