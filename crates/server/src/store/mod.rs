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
//! PostgreSQL stores a row per message; SQLite packs them into per-stream chunks (sqlite.rs).
//! Groups and counters share their SQL through the `sql_store!` macro (sql.rs).

mod pack;
mod sql;
mod sqlite;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use natter_protocol::Msg;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::config::{StorageBackend, StorageConfig};

pub use sql::PostgresStore;
pub use sqlite::{SqliteStore, Tuning};

/// What happened to one message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, with these sequence numbers.
    New { seq: i64, send_seq: i64 },
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

    pub fn parse(s: &str) -> Role {
        match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            _ => Role::Member,
        }
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

/// The storage engine. Implementations are cheap to share (`Arc<dyn Store>`).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a batch of stamped messages (`server_id`, `send_time`, `send_id` set) in one
    /// transaction, assigning `seq` and `send_seq`. Returns one outcome per message, in order.
    /// On error nothing of the batch is stored.
    fn append<'a>(&'a self, batch: &'a [Msg]) -> BoxFuture<'a, Result<Vec<Appended>, StoreError>>;

    /// Up to `limit` messages of `user`'s `stream` after `after` (exclusive), in order.
    fn after<'a>(
        &'a self,
        user: &'a str,
        stream: Stream,
        after: i64,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>>;

    /// The last `seq` and `send_seq` handed out for `user` (0, 0 for a new user).
    fn cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(i64, i64), StoreError>>;

    /// Deletes messages sent before `before_ms` (Unix ms); returns how many.
    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Creates `group` with its first members (the owner among them), all joining at seq 0.
    fn create_group<'a>(
        &'a self,
        group: &'a Group,
        members: &'a [(String, Role)],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Option<Group>, StoreError>>;

    fn members<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Member>, StoreError>>;

    /// Adds `users` as members joining at the group's current seq; returns those not already in.
    fn add_members<'a>(
        &'a self,
        group_id: &'a str,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

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

    /// Deletes the group and its memberships (its messages stay until retention).
    fn dissolve_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// How many groups each of `users` is a member of (users in none are left out).
    fn group_counts<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, i64>, StoreError>>;

    /// The groups `user` is a member of, with the user's role in each and the group's last seq.
    fn groups_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<MyGroup>, StoreError>>;

    /// Appends the store's own metrics (Prometheus text) to `out`.
    fn render_metrics(&self, out: &mut String);
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

/// Sequence numbers a batch needs, per user: (inbox messages, sent messages).
fn seq_demand(batch: &[Msg], fresh: &[bool]) -> Vec<(String, i64, i64)> {
    let mut demand: HashMap<&str, (i64, i64)> = HashMap::new();
    for (msg, _) in batch.iter().zip(fresh).filter(|(_, f)| **f) {
        demand.entry(&msg.receiver_id).or_default().0 += 1;
        demand.entry(&msg.send_id).or_default().1 += 1;
    }
    let mut out: Vec<(String, i64, i64)> = demand
        .into_iter()
        .map(|(user, (inbox, sent))| (user.to_owned(), inbox, sent))
        .collect();
    // One lock order for every writer: concurrent batches on several nodes cannot deadlock.
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What makes a message the same message when it is sent again: `(send_id, create_time,
/// local_id)`, all three set by the sending client (a resend repeats the message as it was).
/// Keeping `create_time` in the key orders a sender's keys by time: PostgreSQL's idempotency
/// index grows at its end whatever the client's `local_id`s look like (random UUIDs included),
/// and SQLite needs no lookup for a message newer than everything its sender had stored (older
/// ones are found through the create_time ranges of the sender's sent chunks, or `sent_keys`).
type Key = (String, i64, String);

/// The maps of the message path, hashed with foldhash (already in the tree, through hashbrown)
/// rather than SipHash: storing a message takes about ten lookups by user id or [`Key`].
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn key(m: &Msg) -> Key {
    (m.send_id.clone(), m.create_time, m.local_id.clone())
}

/// Which messages of a batch are new: not stored before (`stored` holds the originals found by
/// [`Key`]) and not a repeat of an earlier message of the same batch.
fn classify(batch: &[Msg], stored: &Map<Key, Msg>) -> (Vec<bool>, Vec<Option<usize>>) {
    let mut first_in_batch: Map<(&str, i64, &str), usize> = Map::default();
    let mut fresh = Vec::with_capacity(batch.len());
    // For a repeat within the batch: the index of the first occurrence.
    let mut repeat_of = Vec::with_capacity(batch.len());
    for (i, m) in batch.iter().enumerate() {
        if m.local_id.is_empty() {
            fresh.push(true);
            repeat_of.push(None);
            continue;
        }
        if !stored.is_empty() && stored.contains_key(&key(m)) {
            fresh.push(false);
            repeat_of.push(None);
            continue;
        }
        match first_in_batch.entry((&m.send_id, m.create_time, &m.local_id)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                fresh.push(false);
                repeat_of.push(Some(*e.get()));
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
                fresh.push(true);
                repeat_of.push(None);
            }
        }
    }
    (fresh, repeat_of)
}

/// Numbers the new messages of a batch and decides every message's outcome. `next` holds, per
/// user, the next free `seq` and `send_seq`; it is advanced past the numbers handed out.
/// Returns the numbered new messages (to insert) and one outcome per message of `batch`.
fn number(
    batch: &[Msg],
    fresh: &[bool],
    repeat_of: &[Option<usize>],
    stored: &Map<Key, Msg>,
    next: &mut Map<String, (i64, i64)>,
) -> (Vec<Msg>, Vec<Appended>) {
    let mut numbered: Vec<Msg> = Vec::with_capacity(batch.len());
    let mut outcomes: Vec<Appended> = Vec::with_capacity(batch.len());
    for (i, m) in batch.iter().enumerate() {
        if fresh[i] {
            let mut m = m.clone();
            m.seq = next.get_mut(&m.receiver_id).map_or(0, |n| {
                n.0 += 1;
                n.0 - 1
            });
            m.send_seq = next.get_mut(&m.send_id).map_or(0, |n| {
                n.1 += 1;
                n.1 - 1
            });
            outcomes.push(Appended::New {
                seq: m.seq,
                send_seq: m.send_seq,
            });
            numbered.push(m);
        } else if let Some(first) = repeat_of[i] {
            let original = match &outcomes[first] {
                Appended::New { seq, send_seq } => Msg {
                    seq: *seq,
                    send_seq: *send_seq,
                    ..batch[first].clone()
                },
                Appended::Duplicate(m) => m.clone(),
            };
            outcomes.push(Appended::Duplicate(original));
        } else {
            let original = stored.get(&key(m)).cloned().unwrap_or_else(|| m.clone());
            outcomes.push(Appended::Duplicate(original));
        }
    }
    (numbered, outcomes)
}

/// How long to wait between retention passes for a given retention period.
pub fn prune_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600))
}
