//! The embedded store: SQLite, in two files under `storage.path`.
//!
//! - `natter-log.db`, the hot file: `message_log`, a table with no secondary index, and the read
//!   marks. An accepted batch is committed here (WAL, `synchronous = FULL`: one fsync per batch)
//!   and is then acknowledged.
//! - `natter.db`: `messages` with its three indexes (inbox, sent stream, idempotency key), the
//!   `user_seq` counters and the groups. The compactor moves the log's rows here in large batches
//!   and in the background, on a connection of its own, while the hot file keeps taking commits.
//!
//! Why: each index of `messages` is ordered by user, so a commit of a few hundred messages dirties
//! a page per user per index, and SQLite writes whole pages to the WAL. Measured on this schema,
//! 200 messages from 100 users made a 600–1,400 KB commit (46 KB without the indexes), and the
//! time to write and fsync it, not the CPU, bounded the store. Moving thousands of messages at a
//! time touches each user's pages once per move instead of once per batch, and keeps the index
//! work off the acknowledgement path.
//!
//! What keeps it exact (the invariants):
//! - Message ids are handed out here, consecutively, in commit order. `natter.db` holds every row
//!   up to some id, the log every committed row after it; during a move a row is briefly in both.
//! - Only this process writes the files (`natter.lock`), and in it only the appender allocates
//!   sequence numbers, so the counters of users with rows in the log live in memory ([`Tail`]);
//!   for every other user `user_seq` in `natter.db` is current. A move updates `user_seq` in the
//!   same transaction as the rows it moves.
//! - [`Tail`] changes only while the log connection is held: after an append commits, and after
//!   a move has committed in `natter.db`. The moved rows then leave the log in slices of
//!   [`DELETE_SLICE`], so an append never waits for the whole deletion.
//! - A resend is looked up only if its `create_time` is at or below its sender's
//!   `created_upto` (tail, else `user_seq`), which a move raises in the same transaction as
//!   the rows it moves.
//! - A reader reads the log before `natter.db`: a row missing from the log by then was moved
//!   before, so `natter.db` has it; a row seen in both is taken once.
//! - Read receipts are read marks (reader, peer, up to server_id) in the hot file; `is_read` is
//!   derived from them on reading, so a receipt writes one row whatever it covers.

use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    str::FromStr,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use natter_protocol::{Msg, msg_type};
use sqlx::{
    ConnectOptions, QueryBuilder, Row, Sqlite,
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use super::{
    Appended, Key, StoreError, Stream, classify, key, migrator, number,
    sql::{CHUNK, COLUMNS, SQLITE_MIGRATIONS},
};

const LOG_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "message_log",
    include_str!("../../migrations/sqlite-log/0001_message_log.sql"),
)];

/// Rows in the log that wake the compactor before its next tick.
const COMPACT_ROWS: i64 = 8192;

/// The compactor's tick: rows wait at most about this long in the log.
const COMPACT_EVERY: Duration = Duration::from_millis(250);

/// Rows deleted from the log per statement after a move.
const DELETE_SLICE: i64 = 1024;

/// How long `open` waits for another process (or a store being dropped) to let go of the files.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// SQLite in WAL mode with `synchronous = FULL`: an append returns after the log's WAL is
/// fsynced, once per batch.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Read connections to `natter.db`.
    pub(super) pool: SqlitePool,
    /// The one connection that writes `natter.db` (groups, moves, retention); the log is attached
    /// to it as `hot`, read-only in practice. The only writer, so plain `BEGIN` never meets a
    /// concurrent commit; and a connection that sees no other writer keeps its page cache.
    writer: Arc<Mutex<SqliteConnection>>,
    hot: Arc<Hot>,
}

#[derive(Debug)]
struct Hot {
    /// The one connection that writes `natter-log.db`.
    log: Arc<Mutex<SqliteConnection>>,
    /// Read connections to `natter-log.db`.
    reads: SqlitePool,
    /// Never held across an `.await`.
    tail: std::sync::Mutex<Tail>,
    wake: Arc<Notify>,
    _lock: File,
}

/// What the log holds, in memory.
#[derive(Debug, Default)]
struct Tail {
    /// The id the next stored message gets.
    next_id: i64,
    /// The last id moved to `natter.db`: the log holds the ids after it.
    moved_upto: i64,
    /// [`Key`] → id, for the log's rows.
    keys: HashMap<Key, i64>,
    /// The counters of every user (or group) with a row in the log.
    counters: HashMap<String, Counter>,
}

impl Tail {
    /// Rows in the log (ids are consecutive and only committed ones are handed out).
    fn rows(&self) -> i64 {
        self.next_id - 1 - self.moved_upto
    }
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
    /// The id of the user's last row in the log.
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

impl SqliteStore {
    /// Opens (creating if needed) the store in the directory `dir`, moves whatever an earlier
    /// run left in the log into `natter.db`, and starts the compactor.
    pub async fn open(dir: &str) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Path(dir.to_owned(), e))?;
        let lock = lock(dir).await?;
        let dir_path = Path::new(dir);
        let archive_file = dir_path.join("natter.db");
        let log_file = dir_path.join("natter-log.db");

        // 64 MiB of page cache for natter.db's writer and readers (the default is 2 MiB): the
        // index pages of many users' inboxes stay in memory.
        let archive = options(&archive_file, 65536)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(archive.clone())
            .await?;
        migrator(SQLITE_MIGRATIONS).await?.run(&pool).await?;

        let log_options = options(&log_file, 8192)?;
        let mut log = log_options.connect().await?;
        migrator(LOG_MIGRATIONS).await?.run(&mut log).await?;
        // The appender reads natter.db (resends, counters) on its own connection: no pool, no
        // hop to another thread per batch. It never writes there.
        sqlx::query("ATTACH DATABASE ? AS archive")
            .bind(archive_file.to_string_lossy().into_owned())
            .execute(&mut log)
            .await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(log_options)
            .await?;

        let mut writer = archive.connect().await?;
        sqlx::query("ATTACH DATABASE ? AS hot")
            .bind(log_file.to_string_lossy().into_owned())
            .execute(&mut writer)
            .await?;

        let wake = Arc::new(Notify::new());
        let store = SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(writer)),
            hot: Arc::new(Hot {
                log: Arc::new(Mutex::new(log)),
                reads,
                tail: std::sync::Mutex::new(Tail::default()),
                wake: wake.clone(),
                _lock: lock,
            }),
        };
        // Recovery: the log's rows move now, so the tail starts empty.
        let logged: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM message_log")
            .fetch_one(&mut *store.hot.log.lock().await)
            .await?;
        let archived: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM messages")
            .fetch_one(&store.pool)
            .await?;
        {
            let mut tail = store.tail();
            tail.next_id = logged.max(archived) + 1;
            tail.moved_upto = archived;
        }
        compact(&store.hot, &store.writer).await?;
        tokio::spawn(compactor(
            Arc::downgrade(&store.hot),
            Arc::downgrade(&store.writer),
            wake,
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

        // 1. The counters of the batch's users that have no row in the log, from `user_seq`
        //    (the tail has the others).
        let missing: Vec<&str> = {
            let tail = self.tail();
            let mut seen = std::collections::HashSet::new();
            batch
                .iter()
                .flat_map(|m| [m.receiver_id.as_str(), m.send_id.as_str()])
                .filter(|user| !tail.counters.contains_key(*user) && seen.insert(*user))
                .collect()
        };
        let mut archived: HashMap<String, Counter> = HashMap::with_capacity(missing.len());
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
        //    is new without a lookup; the others are looked up in the log (by id, from memory)
        //    or in natter.db (by index).
        let (in_log, lookups): (Vec<i64>, Vec<&Msg>) = {
            let tail = self.tail();
            let mut in_log = Vec::new();
            let mut lookups = Vec::new();
            for m in batch.iter().filter(|m| {
                !m.local_id.is_empty() && m.create_time <= counter(&tail, &m.send_id).created_upto
            }) {
                match tail.keys.get(&key(m)) {
                    Some(id) => in_log.push(*id),
                    None => lookups.push(m),
                }
            }
            (in_log, lookups)
        };
        let mut stored = if lookups.is_empty() {
            HashMap::new()
        } else {
            Self::find_originals(&mut log, &lookups).await?
        };
        for ids in in_log.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {COLUMNS} FROM message_log WHERE id IN ("
            ));
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *log).await? {
                let m = Self::row_to_msg(&row)?;
                stored.insert(key(&m), m);
            }
        }
        let (fresh, repeat_of) = classify(batch, &stored);

        // 3. Sequence numbers.
        let mut next: HashMap<String, (i64, i64)> = HashMap::new();
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

        // 4. The rows and the read marks, in one transaction on the log.
        let first_id = self.tail().next_id;
        let mut tx = sqlx::Connection::begin(&mut *log).await?;
        Self::insert_messages(&mut tx, "message_log", Some(first_id), &numbered).await?;
        for r in numbered.iter().filter(|m| m.msg_type == msg_type::READ) {
            sqlx::query(
                "INSERT INTO read_marks (reader, peer, upto) VALUES (?, ?, ?) \
                 ON CONFLICT (reader, peer) DO UPDATE SET upto = MAX(upto, excluded.upto)",
            )
            .bind(&r.send_id)
            .bind(&r.receiver_id)
            .bind(&r.content)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

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
        for (i, m) in numbered.iter().enumerate() {
            let id = first_id + i as i64;
            if !m.local_id.is_empty() {
                tail.keys.insert(key(m), id);
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
        let in_log = self.tail().counters.contains_key(user);
        let mut msgs = if in_log {
            let mut conn = self.hot.reads.acquire().await?;
            Self::select_after(&mut conn, "message_log", user, stream, after, limit).await?
        } else {
            Vec::new()
        };
        let mut conn = self.pool.acquire().await?;
        msgs.extend(Self::select_after(&mut conn, "messages", user, stream, after, limit).await?);
        drop(conn);
        let cursor = |m: &Msg| match stream {
            Stream::Inbox => m.seq,
            Stream::Sent => m.send_seq,
        };
        msgs.sort_by_key(cursor);
        msgs.dedup_by_key(|m| cursor(m));
        msgs.truncate(limit as usize);
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

    pub(super) async fn prune_impl(&self, before_ms: i64) -> Result<u64, StoreError> {
        compact(&self.hot, &self.writer).await?;
        self.prune_messages(before_ms).await
    }

    /// A group's seq as far as the log knows it (0 when the log has none of its messages).
    pub(super) fn group_seq_floor(&self, group_id: &str) -> i64 {
        self.tail().counters.get(group_id).map_or(0, |c| c.seq)
    }
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

/// Moves every committed row of the log into `natter.db`: rows and counters in one transaction
/// there, then the tail forgets them and they leave the log, a slice at a time.
async fn compact(hot: &Hot, writer: &Mutex<SqliteConnection>) -> Result<(), StoreError> {
    let started = Instant::now();
    let upto = hot.tail().next_id - 1;
    let mut archive = writer.lock().await;
    let mut tx = sqlx::Connection::begin(&mut *archive).await?;
    let from: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM main.messages")
        .fetch_one(&mut *tx)
        .await?;
    let moved = sqlx::query(&format!(
        "INSERT INTO main.messages (id, {COLUMNS}) SELECT id, {COLUMNS} FROM hot.message_log \
         WHERE id > ?1 AND id <= ?2 ORDER BY id"
    ))
    .bind(from)
    .bind(upto)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved > 0 {
        sqlx::query(
            "INSERT INTO main.user_seq (user_id, seq) \
             SELECT receiver_id, MAX(seq) FROM hot.message_log \
             WHERE id > ?1 AND id <= ?2 GROUP BY receiver_id \
             ON CONFLICT (user_id) DO UPDATE SET seq = MAX(user_seq.seq, excluded.seq)",
        )
        .bind(from)
        .bind(upto)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO main.user_seq (user_id, send_seq, created_upto) \
             SELECT send_id, MAX(send_seq), \
                    COALESCE(MAX(CASE WHEN local_id <> '' THEN create_time END), -1) \
             FROM hot.message_log WHERE id > ?1 AND id <= ?2 GROUP BY send_id \
             ON CONFLICT (user_id) DO UPDATE SET \
                 send_seq = MAX(user_seq.send_seq, excluded.send_seq), \
                 created_upto = MAX(user_seq.created_upto, excluded.created_upto)",
        )
        .bind(from)
        .bind(upto)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    drop(archive);

    // natter.db has the rows and their counters: the tail forgets them at once (under the log
    // connection, so no append sees half of it).
    {
        let _log = hot.log.lock().await;
        let mut tail = hot.tail();
        tail.keys.retain(|_, id| *id > upto);
        tail.counters.retain(|_, c| c.last_id > upto);
        tail.moved_upto = upto;
    }
    // Then the rows leave the log a slice at a time, so an append waits for one slice at most
    // (deleting thousands of rows at once held it up for ~20 ms). A row still in the log after
    // its move is only read twice and taken once.
    let mut log_held = Duration::ZERO;
    loop {
        let mut log = hot.log.lock().await;
        let locked = Instant::now();
        let deleted = sqlx::query(
            "DELETE FROM message_log WHERE id IN \
             (SELECT id FROM message_log WHERE id <= ? ORDER BY id LIMIT ?)",
        )
        .bind(upto)
        .bind(DELETE_SLICE)
        .execute(&mut *log)
        .await?
        .rows_affected();
        drop(log);
        log_held = log_held.max(locked.elapsed());
        if deleted < DELETE_SLICE as u64 {
            break;
        }
    }
    if moved > 0 {
        tracing::debug!(moved, upto, took = ?started.elapsed(), ?log_held, "log compacted");
    }
    Ok(())
}

/// Compacts every [`COMPACT_EVERY`], or sooner when the log fills; stops when the store is
/// dropped.
async fn compactor(hot: Weak<Hot>, writer: Weak<Mutex<SqliteConnection>>, wake: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(COMPACT_EVERY) => {}
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
