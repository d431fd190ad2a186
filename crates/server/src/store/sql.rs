//! The SQL of both stores. The statements are portable between SQLite and PostgreSQL (upsert
//! with `RETURNING`, row values, partial indexes); `sql_store!` instantiates them for each driver
//! so the logic is written once. Placeholders come from sqlx's `QueryBuilder`.

use std::{collections::HashMap, path::Path, str::FromStr, time::Duration};

use futures_util::future::BoxFuture;
use natter_protocol::{Msg, msg_type};
use sqlx::{
    Postgres, QueryBuilder, Row, Sqlite,
    postgres::{PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use super::{Appended, Store, StoreError, Stream, classify, migrator, seq_demand};

const COLUMNS: &str = "server_id, send_id, receiver_id, local_id, seq, send_seq, msg_type, \
                       content_type, content, create_time, send_time, is_read";

/// The same columns, qualified by the alias `m`.
const MSG_COLUMNS: &str = "m.server_id, m.send_id, m.receiver_id, m.local_id, m.seq, \
                           m.send_seq, m.msg_type, m.content_type, m.content, m.create_time, \
                           m.send_time, m.is_read";

/// Rows per multi-row statement. Batches are cut into chunks of this size so that only a few
/// distinct statements exist (full chunks, plus one per remainder size), and every one of them
/// stays in the connection's prepared-statement cache instead of being parsed per batch.
const CHUNK: usize = 128;

/// Rows deleted per statement by retention, so writers are never blocked for long.
const PRUNE_CHUNK: i64 = 5000;

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "messages",
    include_str!("../../migrations/sqlite/0001_messages.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "messages",
    include_str!("../../migrations/postgres/0001_messages.sql"),
)];

/// SQLite in WAL mode with `synchronous = FULL`: a commit returns after the WAL is fsynced, once
/// per batch.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `natter.db` in the directory `dir`.
    pub async fn open(dir: &str) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Path(dir.to_owned(), e))?;
        let file = Path::new(dir).join("natter.db");
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .statement_cache_capacity(512)
            // 64 MiB of page cache per connection (the default is 2 MiB): index pages of many
            // users' inboxes stay in memory instead of being read back on every batch.
            .pragma("cache_size", "-65536");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        migrator(SQLITE_MIGRATIONS).await?.run(&pool).await?;
        Ok(SqliteStore { pool })
    }
}

/// PostgreSQL: every node of a cluster writes to it; the `user_seq` upsert serialises sequence
/// allocation per user across nodes.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn open(url: &str, pool_size: u32) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        migrator(POSTGRES_MIGRATIONS).await?.run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

macro_rules! sql_store {
    ($Store:ty, $Db:ty) => {
        impl $Store {
            fn row_to_msg(row: &<$Db as sqlx::Database>::Row) -> Result<Msg, sqlx::Error> {
                Ok(Msg {
                    server_id: row.try_get(0)?,
                    send_id: row.try_get(1)?,
                    receiver_id: row.try_get(2)?,
                    local_id: row.try_get(3)?,
                    seq: row.try_get(4)?,
                    send_seq: row.try_get(5)?,
                    msg_type: row.try_get(6)?,
                    content_type: row.try_get(7)?,
                    content: row.try_get(8)?,
                    create_time: row.try_get(9)?,
                    send_time: row.try_get(10)?,
                    is_read: row.try_get(11)?,
                })
            }

            async fn append_batch(&self, batch: &[Msg]) -> Result<Vec<Appended>, StoreError> {
                let mut tx = self.pool.begin().await?;

                // 1. Resends: the originals of (send_id, local_id) pairs stored before.
                let keyed: Vec<&Msg> = batch.iter().filter(|m| !m.local_id.is_empty()).collect();
                let mut stored: HashMap<(String, String), Msg> = HashMap::new();
                for keyed in keyed.chunks(CHUNK) {
                    // A join from the constant rows, not `(send_id, local_id) IN (VALUES ...)`:
                    // SQLite scans the whole table for the latter, and looks up the index for this.
                    let mut q = QueryBuilder::<$Db>::new("SELECT ");
                    q.push(MSG_COLUMNS).push(" FROM (");
                    q.push_values(keyed, |mut b, m| {
                        b.push_bind(m.send_id.as_str())
                            .push_bind(m.local_id.as_str());
                    });
                    q.push(
                        ") AS k JOIN messages m ON m.send_id = k.column1 \
                         AND m.local_id = k.column2 WHERE m.local_id <> ''",
                    );
                    for row in q.build().fetch_all(&mut *tx).await? {
                        let m = Self::row_to_msg(&row)?;
                        stored.insert((m.send_id.clone(), m.local_id.clone()), m);
                    }
                }
                let (fresh, repeat_of) = classify(batch, &stored);

                // 2. Sequence numbers: one block per user, allocated atomically.
                let demand = seq_demand(batch, &fresh);
                let mut next: HashMap<String, (i64, i64)> = HashMap::with_capacity(demand.len());
                for demand in demand.chunks(CHUNK) {
                    let mut q =
                        QueryBuilder::<$Db>::new("INSERT INTO user_seq (user_id, seq, send_seq) ");
                    q.push_values(demand, |mut b, (user, inbox, sent)| {
                        b.push_bind(user.as_str())
                            .push_bind(*inbox)
                            .push_bind(*sent);
                    });
                    q.push(
                        " ON CONFLICT (user_id) DO UPDATE SET seq = user_seq.seq + excluded.seq, \
                         send_seq = user_seq.send_seq + excluded.send_seq \
                         RETURNING user_id, seq, send_seq",
                    );
                    let tops: HashMap<String, (i64, i64)> = q
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
                        .collect::<Result<_, sqlx::Error>>()?;
                    for (user, inbox, sent) in demand {
                        let (seq_top, send_top) = tops.get(user).copied().unwrap_or_default();
                        next.insert(user.clone(), (seq_top - inbox + 1, send_top - sent + 1));
                    }
                }
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
                        let original = stored
                            .get(&(m.send_id.clone(), m.local_id.clone()))
                            .cloned()
                            .unwrap_or_else(|| m.clone());
                        outcomes.push(Appended::Duplicate(original));
                    }
                }

                // 3. The rows.
                for numbered in numbered.chunks(CHUNK) {
                    let mut q =
                        QueryBuilder::<$Db>::new(format!("INSERT INTO messages ({COLUMNS}) "));
                    q.push_values(numbered, |mut b, m| {
                        b.push_bind(m.server_id.as_str())
                            .push_bind(m.send_id.as_str())
                            .push_bind(m.receiver_id.as_str())
                            .push_bind(m.local_id.as_str())
                            .push_bind(m.seq)
                            .push_bind(m.send_seq)
                            .push_bind(m.msg_type)
                            .push_bind(m.content_type)
                            .push_bind(m.content.as_str())
                            .push_bind(m.create_time)
                            .push_bind(m.send_time)
                            .push_bind(m.is_read);
                    });
                    q.build().execute(&mut *tx).await?;
                }

                // 4. Read receipts: the reader (send_id) has read every message from
                //    receiver_id up to the one whose server_id is the content.
                for r in numbered.iter().filter(|m| m.msg_type == msg_type::READ) {
                    let mut q = QueryBuilder::<$Db>::new(
                        "UPDATE messages SET is_read = TRUE WHERE receiver_id = ",
                    );
                    q.push_bind(r.send_id.as_str())
                        .push(" AND send_id = ")
                        .push_bind(r.receiver_id.as_str())
                        .push(" AND server_id <= ")
                        .push_bind(r.content.as_str())
                        .push(" AND msg_type <> ")
                        .push_bind(msg_type::READ)
                        .push(" AND is_read = FALSE");
                    q.build().execute(&mut *tx).await?;
                }

                tx.commit().await?;
                Ok(outcomes)
            }

            async fn after_impl(
                &self,
                user: &str,
                stream: Stream,
                after: i64,
                limit: u32,
            ) -> Result<Vec<Msg>, StoreError> {
                let (who, cursor) = match stream {
                    Stream::Inbox => ("receiver_id", "seq"),
                    Stream::Sent => ("send_id", "send_seq"),
                };
                let mut q = QueryBuilder::<$Db>::new(format!(
                    "SELECT {COLUMNS} FROM messages WHERE {who} = "
                ));
                q.push_bind(user)
                    .push(format!(" AND {cursor} > "))
                    .push_bind(after)
                    .push(format!(" ORDER BY {cursor} LIMIT "))
                    .push_bind(i64::from(limit));
                let rows = q.build().fetch_all(&self.pool).await?;
                Ok(rows
                    .iter()
                    .map(Self::row_to_msg)
                    .collect::<Result<_, _>>()?)
            }

            async fn cursors_impl(&self, user: &str) -> Result<(i64, i64), StoreError> {
                let mut q =
                    QueryBuilder::<$Db>::new("SELECT seq, send_seq FROM user_seq WHERE user_id = ");
                q.push_bind(user);
                let row = q.build().fetch_optional(&self.pool).await?;
                Ok(match row {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => (0, 0),
                })
            }

            async fn prune_impl(&self, before_ms: i64) -> Result<u64, StoreError> {
                let mut total = 0;
                loop {
                    let mut q = QueryBuilder::<$Db>::new(
                        "DELETE FROM messages WHERE id IN \
                         (SELECT id FROM messages WHERE send_time < ",
                    );
                    q.push_bind(before_ms)
                        .push(" ORDER BY id LIMIT ")
                        .push_bind(PRUNE_CHUNK)
                        .push(")");
                    let n = q.build().execute(&self.pool).await?.rows_affected();
                    total += n;
                    if n < PRUNE_CHUNK as u64 {
                        return Ok(total);
                    }
                }
            }
        }

        impl Store for $Store {
            fn append<'a>(
                &'a self,
                batch: &'a [Msg],
            ) -> BoxFuture<'a, Result<Vec<Appended>, StoreError>> {
                Box::pin(self.append_batch(batch))
            }

            fn after<'a>(
                &'a self,
                user: &'a str,
                stream: Stream,
                after: i64,
                limit: u32,
            ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>> {
                Box::pin(self.after_impl(user, stream, after, limit))
            }

            fn cursors<'a>(
                &'a self,
                user: &'a str,
            ) -> BoxFuture<'a, Result<(i64, i64), StoreError>> {
                Box::pin(self.cursors_impl(user))
            }

            fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
                Box::pin(self.prune_impl(before_ms))
            }
        }
    };
}

sql_store!(SqliteStore, Sqlite);
sql_store!(PostgresStore, Postgres);
