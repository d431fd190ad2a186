//! The embedded store: SQLite, in two files under `storage.path`.
//!
//! - `natter-log.db`, the hot file: one row per committed batch, its messages packed into a blob
//!   ([`pack`]), and the read marks. A batch is committed here (WAL, `synchronous = FULL`: one
//!   fsync per batch) and then acknowledged. The log's batches are kept in memory too
//!   ([`tail`]), so reads and resends of logged messages never query the file.
//! - `natter.db`: the messages in chunks, the `user_seq` counters and the groups. Every
//!   [`COMPACT_EVERY`] (or sooner when the log fills) the compactor moves the log into it: per
//!   move, each user's (or group's) inbox messages become a chunk (of at most 256), and each sender's one sent
//!   chunk of references into them, so a message is stored once.
//!
//! Why chunks: a row per message costs SQLite an index entry per index per message, more CPU
//! than the rest of the server's work on it; a chunk costs a row and one or two index entries
//! whatever it holds, and moving whole chunks keeps page writes off the acknowledgement path.
//!
//! # Layout
//!
//! One operation per file, each with the invariants it keeps:
//! - [`tail`]: what the log holds, in memory (batches, counters, resend keys).
//! - [`append`]: committing a batch to the log (the write path).
//! - [`read`]: a page of a stream, the read marks, the cursors.
//! - [`resend`]: finding the originals of resent messages in `natter.db`; resolving references.
//! - [`compact`]: moving the log into `natter.db`.
//! - [`retention`]: deleting old chunks.
//! - [`lock`]: `natter.lock`, one process per directory.
//! - [`pack`]: the blobs' binary form.
//!
//! Lock order: the log connection (`Hot::log`, a tokio mutex held across the log's statements)
//! before the tail (a std mutex, never held across an `.await`); the writer of `natter.db` is
//! taken by the compactor, retention and group changes, never while holding the log.

mod append;
mod compact;
mod conv;
mod lock;
mod pack;
mod read;
mod resend;
mod retention;
mod tail;

use std::{collections::HashMap, fs::File, path::Path, str::FromStr, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use natter_protocol::Msg;
use sqlx::{
    ConnectOptions, Sqlite,
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteSynchronous,
    },
};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use self::tail::Tail;
use super::{
    Appended, Group, HistoryFrom, Invite, Member, MyGroup, Role, Store, StoreError, Stream,
    conv::{ConvSql, ListParts, ListScope, Settings},
    group_sql::GroupSql,
    migrator,
    revoked::{Revocation, RevokedSql},
};
use crate::metrics::LatencyHistogram;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "baseline",
        include_str!("../../../migrations/sqlite/0001_baseline.sql"),
    ),
    (
        2,
        "group invites",
        include_str!("../../../migrations/sqlite/0002_group_invites.sql"),
    ),
    (
        3,
        "conversations",
        include_str!("../../../migrations/sqlite/0003_conversations.sql"),
    ),
    (
        4,
        "revocations",
        include_str!("../../../migrations/sqlite/0004_revocations.sql"),
    ),
];

const LOG_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "baseline",
    include_str!("../../../migrations/sqlite-log/0001_baseline.sql"),
)];

/// The compactor's tick: messages wait at most about this long in the log. Short, so that each
/// move is small: a move disturbs the commits beside it (its writes and fsyncs share the disk,
/// its CPU the cores) about in proportion to its size, while what all moves cost together
/// barely changes.
const COMPACT_EVERY: Duration = Duration::from_millis(50);

/// Messages the log may hold (in memory too) before appends are refused with
/// [`StoreError::Backlog`]: reached only when moves to `natter.db` keep failing (a full disk,
/// say); about 15 s at the store's maximum rate. [`LOG_BYTES`] bounds the memory it takes.
const LOG_LIMIT: i64 = 1 << 20;

/// Bytes of messages the log may hold, likewise ([`page_bytes`](crate::store::page_bytes)):
/// with large messages this binds before [`LOG_LIMIT`].
const LOG_BYTES: usize = 256 << 20;

type Sql = GroupSql<Sqlite>;
type Conv = ConvSql<Sqlite>;

/// SQLite in WAL mode with `synchronous = FULL`: an append returns after the log's WAL is
/// fsynced, once per batch.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Read connections to `natter.db`.
    pool: SqlitePool,
    /// The one connection that writes `natter.db` (groups, moves, retention). The only writer, so
    /// plain `BEGIN` never meets a concurrent commit; and a connection that sees no other writer
    /// keeps its page cache.
    writer: Arc<Mutex<SqliteConnection>>,
    hot: Arc<Hot>,
}

/// The log file and what it holds in memory.
#[derive(Debug)]
struct Hot {
    /// The one connection that writes `natter-log.db`; `natter.db` is attached to it as
    /// `archive`, which it only reads (counters and resends of moved messages).
    log: Arc<Mutex<SqliteConnection>>,
    /// Read connections to `natter-log.db` (read marks, checkpoints).
    reads: SqlitePool,
    /// Never held across an `.await`.
    tail: std::sync::Mutex<Tail>,
    /// Wakes the compactor before its tick.
    wake: Arc<Notify>,
    /// Messages the log may hold before appends are refused ([`LOG_LIMIT`]).
    log_limit: i64,
    /// Bytes of messages the log may hold before appends are refused ([`LOG_BYTES`]).
    log_bytes: usize,
    /// How long each move took (`natter_store_move_seconds`).
    moves: LatencyHistogram,
    _lock: File,
}

impl Hot {
    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What tests change: the limit on the messages waiting in the log, the compactor's tick (a
/// test that counts chunks moves the log itself, with `prune(0)`), and how long opening waits
/// for `natter.lock`.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub log_limit: i64,
    pub log_bytes: usize,
    pub compact_every: Duration,
    pub lock_wait: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            log_limit: LOG_LIMIT,
            log_bytes: LOG_BYTES,
            compact_every: COMPACT_EVERY,
            lock_wait: lock::LOCK_WAIT,
        }
    }
}

/// How long a read connection stays open unused. Each has a page cache of its own, filled by
/// the reads it served (history pages, replays): closing it when the reads stop gives that
/// memory back, so the node's memory returns to its idle size after a burst of reads.
const READER_IDLE: Duration = Duration::from_secs(5);

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
        Self::open_tuned(dir, Tuning::default()).await
    }

    /// [`open`](Self::open) with other [`Tuning`] (tests).
    #[doc(hidden)]
    pub async fn open_tuned(dir: &str, tuning: Tuning) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Path(dir.to_owned(), e))?;
        let lock = lock::take(dir, tuning.lock_wait).await?;
        let archive_file = Path::new(dir).join("natter.db");
        let log_file = Path::new(dir).join("natter-log.db");

        // 64 MiB of page cache for natter.db's writer and readers (the default is 2 MiB).
        let archive = options(&archive_file, 65536)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .idle_timeout(READER_IDLE)
            .connect_with(archive.clone())
            .await?;
        migrator(MIGRATIONS).await?.run(&pool).await?;
        let mut writer = archive.connect().await?;

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
            .min_connections(0)
            .idle_timeout(READER_IDLE)
            .connect_with(log_options)
            .await?;

        // Recovery: what the log holds beyond `moved.upto` goes into the tail, and moves now.
        let tail = Tail::recover(&mut writer, &mut log).await?;
        let wake = Arc::new(Notify::new());
        let store = SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(writer)),
            hot: Arc::new(Hot {
                log: Arc::new(Mutex::new(log)),
                reads,
                tail: std::sync::Mutex::new(tail),
                wake: wake.clone(),
                log_limit: tuning.log_limit,
                log_bytes: tuning.log_bytes,
                moves: LatencyHistogram::new(
                    "natter_store_move_seconds",
                    "Time to move the SQLite message log into natter.db (one move)",
                ),
                _lock: lock,
            }),
        };
        compact::compact(&store.hot, &store.writer).await?;
        compact::clear_log(&store.hot).await?;
        tokio::spawn(compact::compactor(
            Arc::downgrade(&store.hot),
            Arc::downgrade(&store.writer),
            wake,
            tuning.compact_every,
        ));
        Ok(store)
    }

    async fn writer(&self) -> OwnedMutexGuard<SqliteConnection> {
        self.writer.clone().lock_owned().await
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.hot.tail()
    }

    /// A group's seq as the log knows it (0 when the log has none of its messages): `user_seq`
    /// in `natter.db` is behind it while the group's last messages wait in the log.
    fn logged_seq(&self, group_id: &str) -> i64 {
        self.tail().counters.get(group_id).map_or(0, |c| c.seq)
    }
}

impl Store for SqliteStore {
    fn append<'a>(&'a self, batch: &'a [Msg]) -> BoxFuture<'a, Result<Vec<Appended>, StoreError>> {
        Box::pin(self.append_batch(batch))
    }

    fn page<'a>(
        &'a self,
        user: &'a str,
        stream: Stream,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>> {
        Box::pin(self.read_page(user, stream, after, limit, max_bytes))
    }

    fn cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(i64, i64), StoreError>> {
        Box::pin(self.cursors_of(user))
    }

    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.prune_before(before_ms))
    }

    fn create_group<'a>(
        &'a self,
        group: &'a Group,
        members: &'a [(String, Role)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Sql::create(&mut *self.writer().await, group, members).await })
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Option<Group>, StoreError>> {
        Box::pin(async move { Sql::group(&mut *self.pool.acquire().await?, group_id).await })
    }

    fn members<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Member>, StoreError>> {
        Box::pin(async move { Sql::members(&mut *self.pool.acquire().await?, group_id).await })
    }

    fn add_members<'a>(
        &'a self,
        group_id: &'a str,
        users: &'a [String],
        chosen: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut writer = self.writer().await;
            let floor = self.logged_seq(group_id);
            Sql::add_members(&mut writer, group_id, users, floor, chosen).await
        })
    }

    fn invite<'a>(
        &'a self,
        group_id: &'a str,
        users: &'a [String],
        inviter: &'a str,
        at: i64,
        keep: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Sql::invite(
                &mut *self.writer().await,
                group_id,
                users,
                inviter,
                at,
                keep,
            )
            .await
        })
    }

    fn invites_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<Invite>, StoreError>> {
        Box::pin(async move { Sql::invites_of(&mut *self.pool.acquire().await?, user).await })
    }

    fn take_invite<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::take_invite(&mut *self.writer().await, group_id, user).await })
    }

    fn remove_member<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::remove_member(&mut *self.writer().await, group_id, user).await })
    }

    fn set_role<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
        role: Role,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(
            async move { Sql::set_role(&mut *self.writer().await, group_id, user, role).await },
        )
    }

    fn rename_group<'a>(
        &'a self,
        group_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::rename(&mut *self.writer().await, group_id, name).await })
    }

    fn dissolve_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::dissolve(&mut *self.writer().await, group_id).await })
    }

    fn group_counts<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, i64>, StoreError>> {
        Box::pin(async move { Sql::counts(&mut *self.pool.acquire().await?, users).await })
    }

    fn groups_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<MyGroup>, StoreError>> {
        Box::pin(async move {
            let mut groups = Sql::groups_of(&mut *self.pool.acquire().await?, user).await?;
            for g in &mut groups {
                g.seq = g.seq.max(self.logged_seq(&g.group.group_id));
            }
            Ok(groups)
        })
    }

    fn chat_list<'a>(
        &'a self,
        user: &'a str,
        scope: ListScope<'a>,
    ) -> BoxFuture<'a, Result<ListParts, StoreError>> {
        Box::pin(self.chat_list_of(user, scope))
    }

    fn history<'a>(
        &'a self,
        conv_id: &'a str,
        from: HistoryFrom,
        floor: i64,
        limit: u32,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>> {
        Box::pin(self.read_history(conv_id, from, floor, limit, max_bytes))
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        upto: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(
            async move { Conv::mark_read(&mut *self.writer().await, user, conv_id, upto).await },
        )
    }

    fn set_settings<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        pinned: Option<bool>,
        muted: Option<bool>,
    ) -> BoxFuture<'a, Result<Settings, StoreError>> {
        Box::pin(async move {
            Conv::set_settings(&mut *self.writer().await, user, conv_id, pinned, muted).await
        })
    }

    fn hide<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        seqs: &'a [i64],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Conv::hide(&mut *self.writer().await, user, conv_id, seqs).await })
    }

    fn hidden<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        low: i64,
        high: i64,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(async move {
            Conv::hidden(&mut *self.pool.acquire().await?, user, conv_id, low, high).await
        })
    }

    fn muted_of<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StoreError>> {
        Box::pin(async move { Conv::muted_of(&mut *self.pool.acquire().await?, users).await })
    }

    fn revoke<'a>(&'a self, r: &'a Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { RevokedSql::<Sqlite>::add(&mut *self.writer().await, r).await })
    }

    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(async move { RevokedSql::<Sqlite>::load(&mut *self.writer().await, now).await })
    }

    fn read_count<'a>(
        &'a self,
        group: &'a str,
        seq: i64,
        except: &'a str,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(self.read_count_of(group, seq, except))
    }

    /// The compactor's metrics: how long moves take, and how many messages wait in the log.
    fn render_metrics(&self, out: &mut String) {
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
