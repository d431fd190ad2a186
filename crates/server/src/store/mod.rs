//! Durable messages: the [`Store`] trait and its two implementations, SQLite (the embedded
//! default) and PostgreSQL (for the cluster).
//!
//! The write path is [`Store::append`]: one transaction for a whole batch (group commit). In it,
//! the batch is checked against earlier messages with the same `(send_id, create_time,
//! local_id)` (an idempotent resend returns the original), sequence numbers are allocated per
//! user (PostgreSQL: one upsert of the `user_seq` counters, a block per user, so concurrent
//! writers on several nodes never hand out the same number and never skip one; SQLite, the only
//! writer of its files: counters in memory), the messages are stored, and read receipts recorded.
//!
//! - `batch.rs`: which messages of a batch are new or resent, and their numbers (both stores).
//! - `postgres.rs`: PostgreSQL, a row per message.
//! - `sqlite/`: SQLite, a log of batches and per-stream chunks (its `mod.rs` has the tour).
//! - `group_sql.rs`: the group tables, the same SQL on both.

mod batch;
pub mod conv;
mod group_sql;
mod postgres;
mod revoked;
mod sqlite;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use natter_protocol::Msg;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::config::{StorageBackend, StorageConfig};
use conv::{ListParts, ListScope, Settings};

pub use postgres::PostgresStore;
pub use revoked::Revocation;
pub use sqlite::{SqliteStore, Tuning};

/// What happened to one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with these sequence numbers.
    New {
        seq: i64,
        send_seq: i64,
        conv_seq: i64,
    },
    /// The sender had sent this `local_id` before: the original, as stored.
    Duplicate(Msg),
}

/// A group, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    pub group_id: String,
    pub name: String,
    pub owner: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// One of a user's groups: the group, the user's role in it, and the group's last `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyGroup {
    pub group: Group,
    pub role: Role,
    pub seq: i64,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// The role `as_str` wrote; `None` for anything else.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Owner, Role::Admin, Role::Member]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Owners and admins manage members and the name.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    /// The group's `seq` when the member joined: the member sees the messages after it.
    pub joined_seq: i64,
}

/// A pending invitation to a group (`groups.invite: accept`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invite {
    pub group_id: String,
    /// The group's name.
    pub name: String,
    pub inviter: String,
    /// Unix ms.
    pub invited_at: i64,
}

/// Which of a user's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Messages the user received (`receiver_id` = user), by `seq`.
    Inbox,
    /// Messages the user sent (`send_id` = user), by `send_seq`.
    Sent,
}

impl Stream {
    /// Whose stream `m` is in.
    fn owner(self, m: &Msg) -> &str {
        match self {
            Stream::Inbox => &m.receiver_id,
            Stream::Sent => &m.send_id,
        }
    }

    /// `m`'s place in the stream.
    fn cursor(self, m: &Msg) -> i64 {
        match self {
            Stream::Inbox => m.seq,
            Stream::Sent => m.send_seq,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("storage.path `{0}`: {1}")]
    Path(String, std::io::Error),
    #[error("storage.path `{0}` is in use by another natter process")]
    Locked(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a storage task failed: {0}")]
    Task(String),
    #[error("{0} messages wait in the log because moving them to natter.db keeps failing")]
    Backlog(i64),
}

impl StoreError {
    /// Whether the store refused the data (a value out of range, a constraint, a value too
    /// large), so that the same batch without one of its messages may succeed; rather than
    /// being unavailable (connection, disk, corrupt files), where any batch would fail.
    pub fn refused_the_data(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return matches!(self, StoreError::Database(sqlx::Error::Encode(_)));
        };
        if let Some(pg) = e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            // SQLSTATE classes: 22 data exception, 23 integrity constraint violation, 54
            // program limit exceeded (a row or an index entry too large).
            return ["22", "23", "54"]
                .iter()
                .any(|class| pg.code().starts_with(class));
        }
        if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            // Primary result codes (the low byte of an extended code): 18 SQLITE_TOOBIG,
            // 19 SQLITE_CONSTRAINT, 20 SQLITE_MISMATCH, 25 SQLITE_RANGE.
            let primary = e
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            return matches!(primary, Some(18 | 19 | 20 | 25));
        }
        false
    }
}

/// The storage engine. Implementations are cheap to share (`Arc<dyn Store>`).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a batch of stamped messages (`server_id`, `send_time`, `send_id` set) in one
    /// transaction, assigning `seq` and `send_seq`. Returns one outcome per message, in order.
    /// On error nothing of the batch is stored.
    fn append<'a>(&'a self, batch: &'a [Msg]) -> BoxFuture<'a, Result<Vec<Appended>, StoreError>>;

    /// Up to `limit` messages of `user`'s `stream` after `after` (exclusive), in order, and
    /// no more of them than fit in `max_bytes` (counted by [`page_bytes`]; the first message
    /// is given whatever its size). What a reader holds of a page is bounded by it.
    fn page<'a>(
        &'a self,
        user: &'a str,
        stream: Stream,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>>;

    /// [`page`](Store::page) bounded by count alone.
    fn after<'a>(
        &'a self,
        user: &'a str,
        stream: Stream,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>> {
        self.page(user, stream, after, limit, usize::MAX)
    }

    /// The last `seq` and `send_seq` handed out for `user` (0, 0 for a new user).
    fn cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(i64, i64), StoreError>>;

    /// Deletes messages sent before `before_ms` (Unix ms); returns how many.
    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Creates `group` with its first members (the owner among them), all joining at seq 0.
    /// Only the owner's membership is chosen (counts toward the owner's group limit).
    fn create_group<'a>(
        &'a self,
        group: &'a Group,
        members: &'a [(String, Role)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Option<Group>, StoreError>>;

    fn members<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Member>, StoreError>>;

    /// Adds `users` as members joining at the group's current seq; returns those not already in.
    /// `chosen`: they chose the group (accepted an invitation), so it counts toward their limit.
    fn add_members<'a>(
        &'a self,
        group_id: &'a str,
        users: &'a [String],
        chosen: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// Invites `users` (not members) to a group; returns those not invited already. A user keeps
    /// at most `keep` pending invitations: the oldest beyond go.
    fn invite<'a>(
        &'a self,
        group_id: &'a str,
        users: &'a [String],
        inviter: &'a str,
        at: i64,
        keep: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// `user`'s pending invitations, newest first.
    fn invites_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<Invite>, StoreError>>;

    /// Removes `user`'s invitation to the group (accepted or declined); whether there was one.
    fn take_invite<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Removes a member; returns whether it was one.
    fn remove_member<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn set_role<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
        role: Role,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    fn rename_group<'a>(
        &'a self,
        group_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes the group, its memberships and invitations (its messages stay until retention).
    fn dissolve_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// How many groups each of `users` chose to be a member of (created, or joined by accepting
    /// an invitation); users in none are left out.
    fn group_counts<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, i64>, StoreError>>;

    /// The groups `user` is a member of, with the user's role in each and the group's last seq.
    fn groups_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<MyGroup>, StoreError>>;

    /// What `user`'s chat list is made of for `scope` ([`conv::ListParts`]: at least every
    /// conversation that can be in it), including what the store knows beyond its tables.
    fn chat_list<'a>(
        &'a self,
        user: &'a str,
        scope: ListScope<'a>,
    ) -> BoxFuture<'a, Result<ListParts, StoreError>>;

    /// Up to `limit` entries of a conversation on one side of `from`, above `floor` (a group
    /// member's join), in `conv_seq` order, within `max_bytes` ([`page_bytes`]; the entry next
    /// to `from` is given whatever its size).
    fn history<'a>(
        &'a self,
        conv_id: &'a str,
        from: HistoryFrom,
        floor: i64,
        limit: u32,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>>;

    /// Raises `user`'s read position in a conversation to `upto` (one-to-one: in its row; a
    /// group: the membership's). Returns false if `user` is not in the group.
    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        upto: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Sets `user`'s settings of a conversation (`None`: unchanged); returns them.
    fn set_settings<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        pinned: Option<bool>,
        muted: Option<bool>,
    ) -> BoxFuture<'a, Result<Settings, StoreError>>;

    /// Hides entries of a conversation from `user`'s history (delete for me).
    fn hide<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        seqs: &'a [i64],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Which entries `low..=high` of a conversation `user` hid.
    fn hidden<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        low: i64,
        high: i64,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>>;

    /// Every conversation one of `users` muted, as `(user, conv_id)`.
    fn muted_of<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StoreError>>;

    /// How many members of a group other than `except` have read up to `seq`.
    fn read_count<'a>(
        &'a self,
        group: &'a str,
        seq: i64,
        except: &'a str,
    ) -> BoxFuture<'a, Result<i64, StoreError>>;

    /// Records a token revocation.
    fn revoke<'a>(&'a self, r: &'a Revocation) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every revocation in force at `now` (Unix seconds); forgets those of tokens that expired.
    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>>;

    /// Appends the store's own metrics (Prometheus text) to `out`.
    fn render_metrics(&self, out: &mut String);
}

/// Which side of a position a history page is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryFrom {
    /// The entries before this `conv_seq` (exclusive), the newest of them: scrolling back.
    Before(i64),
    /// The entries after this `conv_seq` (exclusive), the oldest of them: catching up.
    After(i64),
}

impl HistoryFrom {
    /// Whether `conv_seq` is on this side, above `floor`.
    pub fn holds(self, conv_seq: i64, floor: i64) -> bool {
        conv_seq > floor
            && match self {
                HistoryFrom::Before(b) => conv_seq < b,
                HistoryFrom::After(a) => conv_seq > a,
            }
    }

    /// Cuts `entries` (in conv_seq order, deduplicated) to the page: `limit` entries next to
    /// the position, within `max_bytes`.
    pub fn cut(self, entries: &mut Vec<Msg>, limit: usize, max_bytes: usize) {
        match self {
            HistoryFrom::After(_) => {
                entries.truncate(limit);
                cut_to_bytes(entries, max_bytes);
            }
            HistoryFrom::Before(_) => {
                entries.reverse();
                entries.truncate(limit);
                cut_to_bytes(entries, max_bytes);
                entries.reverse();
            }
        }
    }
}

/// Opens the configured store, creating its schema on first start. `None` when storage is off.
pub async fn open(config: &StorageConfig) -> Result<Option<Arc<dyn Store>>, StoreError> {
    Ok(match config.backend {
        StorageBackend::None => None,
        StorageBackend::Sqlite => Some(Arc::new(SqliteStore::open(&config.path).await?)),
        StorageBackend::Postgres => Some(Arc::new(
            PostgresStore::open(&config.url, config.pool_size).await?,
        )),
    })
}

/// Migrations embedded in the binary, run through sqlx's migrator (tracked in
/// `_sqlx_migrations`). A `MigrationSource` of our own instead of `sqlx::migrate!`, so the build
/// needs no sqlx proc-macro crate, which would compile sqlx-core and both drivers a second time.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        description.into(),
                        MigrationType::Simple,
                        sql.into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

async fn migrator(
    migrations: &'static [(i64, &'static str, &'static str)],
) -> Result<Migrator, StoreError> {
    Ok(Migrator::new(Embedded(migrations)).await?)
}

/// What a message weighs in a page: its content and a fixed share for the rest.
pub fn page_bytes(m: &Msg) -> usize {
    64 + m.content.len()
}

/// Cuts `msgs` (in stream order) to the longest prefix within `max_bytes`, keeping at least the
/// first message.
fn cut_to_bytes(msgs: &mut Vec<Msg>, max_bytes: usize) {
    let mut total = 0usize;
    let keep = msgs
        .iter()
        .position(|m| {
            total = total.saturating_add(page_bytes(m));
            total > max_bytes
        })
        .unwrap_or(msgs.len())
        .max(1);
    msgs.truncate(keep);
}

/// Rows per multi-row statement. Batches are cut into chunks of this size so that only a few
/// distinct statements exist (full chunks, plus one per remainder size), and every one of them
/// stays in the connection's prepared-statement cache instead of being parsed per batch.
const CHUNK: usize = 128;

/// How long to wait between retention passes for a given retention period.
pub fn prune_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600))
}
