//! The SQL both stores share (groups, counters, row decoding), portable between SQLite and
//! PostgreSQL (upsert with `RETURNING`, row values); `sql_store!` instantiates it for each driver
//! so the logic is written once. Placeholders come from sqlx's `QueryBuilder`. Below the macro,
//! PostgreSQL's message path: a row per message in `messages` (SQLite's is in sqlite.rs).

use std::{collections::HashMap, time::Duration};

use futures_util::future::BoxFuture;
use natter_protocol::{Msg, msg_type};
use sqlx::{
    Postgres, QueryBuilder, Row, Sqlite,
    pool::PoolConnection,
    postgres::{PgPool, PgPoolOptions},
};

use super::{
    Appended, Group, Key, Map, Member, MyGroup, Role, SqliteStore, Store, StoreError, Stream,
    classify, key, migrator, number, seq_demand,
};

pub(super) const COLUMNS: &str = "server_id, send_id, receiver_id, local_id, seq, send_seq, \
                                  msg_type, content_type, content, create_time, send_time, is_read";

/// The same columns, qualified by the alias `m`.
const MSG_COLUMNS: &str = "m.server_id, m.send_id, m.receiver_id, m.local_id, m.seq, \
                           m.send_seq, m.msg_type, m.content_type, m.content, m.create_time, \
                           m.send_time, m.is_read";

/// Rows per multi-row statement. Batches are cut into chunks of this size so that only a few
/// distinct statements exist (full chunks, plus one per remainder size), and every one of them
/// stays in the connection's prepared-statement cache instead of being parsed per batch.
pub(super) const CHUNK: usize = 128;

/// Rows deleted per statement by retention, so writers are never blocked for long.
const PRUNE_CHUNK: i64 = 5000;

pub(super) const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "messages",
        include_str!("../../migrations/sqlite/0001_messages.sql"),
    ),
    (
        2,
        "groups",
        include_str!("../../migrations/sqlite/0002_groups.sql"),
    ),
    (
        3,
        "dedup_by_create_time",
        include_str!("../../migrations/sqlite/0003_dedup_by_create_time.sql"),
    ),
    (
        4,
        "chunks",
        include_str!("../../migrations/sqlite/0004_chunks.sql"),
    ),
    (
        5,
        "sent_keys",
        include_str!("../../migrations/sqlite/0005_sent_keys.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "messages",
        include_str!("../../migrations/postgres/0001_messages.sql"),
    ),
    (
        2,
        "groups",
        include_str!("../../migrations/postgres/0002_groups.sql"),
    ),
    (
        3,
        "user_seq_hot",
        include_str!("../../migrations/postgres/0003_user_seq_hot.sql"),
    ),
    (
        4,
        "dedup_by_create_time",
        include_str!("../../migrations/postgres/0004_dedup_by_create_time.sql"),
    ),
];

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

    /// Writes take any pooled connection: PostgreSQL locks rows, and every node writes.
    async fn writer(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }
}

/// Instantiates the stores' shared SQL for one driver: row decoding, the stored counters,
/// groups, and the `Store` impl. Each store brings `writer()` (the connection
/// writes go through), `append_batch`, `after_impl`, `cursors_impl`, `prune_impl` and
/// `group_seq_floor`.
macro_rules! sql_store {
    ($Store:ty, $Db:ty) => {
        impl $Store {
            pub(super) fn row_to_msg(
                row: &<$Db as sqlx::Database>::Row,
            ) -> Result<Msg, sqlx::Error> {
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

            /// Runs one statement on the writer; returns the rows it changed.
            async fn write(&self, mut q: QueryBuilder<'_, $Db>) -> Result<u64, StoreError> {
                Ok(q.build()
                    .execute(&mut *self.writer().await?)
                    .await?
                    .rows_affected())
            }

            /// The counters as `user_seq` holds them: `(seq, send_seq)`, (0, 0) for a new user.
            pub(super) async fn stored_cursors(
                &self,
                user: &str,
            ) -> Result<(i64, i64), StoreError> {
                let mut q =
                    QueryBuilder::<$Db>::new("SELECT seq, send_seq FROM user_seq WHERE user_id = ");
                q.push_bind(user);
                let row = q.build().fetch_optional(&self.pool).await?;
                Ok(match row {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => (0, 0),
                })
            }
        }

        impl $Store {
            fn row_to_group(row: &<$Db as sqlx::Database>::Row) -> Result<Group, sqlx::Error> {
                Ok(Group {
                    group_id: row.try_get(0)?,
                    name: row.try_get(1)?,
                    owner: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                })
            }

            async fn create_group_impl(
                &self,
                g: &Group,
                members: &[(String, Role)],
            ) -> Result<(), StoreError> {
                let mut writer = self.writer().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let mut q = QueryBuilder::<$Db>::new(
                    "INSERT INTO chat_groups (group_id, name, owner, created_at) ",
                );
                q.push_values([g], |mut b, g| {
                    b.push_bind(g.group_id.as_str())
                        .push_bind(g.name.as_str())
                        .push_bind(g.owner.as_str())
                        .push_bind(g.created_at);
                });
                q.build().execute(&mut *tx).await?;
                for chunk in members.chunks(CHUNK) {
                    let mut q = QueryBuilder::<$Db>::new(
                        "INSERT INTO group_members (group_id, user_id, role, joined_seq) ",
                    );
                    q.push_values(chunk, |mut b, (user, role)| {
                        b.push_bind(g.group_id.as_str())
                            .push_bind(user.as_str())
                            .push_bind(role.as_str())
                            .push_bind(0i64);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn group_impl(&self, group_id: &str) -> Result<Option<Group>, StoreError> {
                let mut q = QueryBuilder::<$Db>::new(
                    "SELECT group_id, name, owner, created_at FROM chat_groups WHERE group_id = ",
                );
                q.push_bind(group_id);
                let row = q.build().fetch_optional(&self.pool).await?;
                Ok(row.as_ref().map(Self::row_to_group).transpose()?)
            }

            async fn members_impl(&self, group_id: &str) -> Result<Vec<Member>, StoreError> {
                let mut q = QueryBuilder::<$Db>::new(
                    "SELECT user_id, role, joined_seq FROM group_members WHERE group_id = ",
                );
                q.push_bind(group_id).push(" ORDER BY user_id");
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| {
                        let role: String = r.try_get(1)?;
                        Ok(Member {
                            user_id: r.try_get(0)?,
                            role: Role::parse(&role),
                            joined_seq: r.try_get(2)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }

            async fn add_members_impl(
                &self,
                group_id: &str,
                users: &[String],
            ) -> Result<Vec<String>, StoreError> {
                let mut writer = self.writer().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let mut q = QueryBuilder::<$Db>::new("SELECT seq FROM user_seq WHERE user_id = ");
                q.push_bind(group_id);
                let stored: i64 = match q.build().fetch_optional(&mut *tx).await? {
                    Some(r) => r.try_get(0)?,
                    None => 0,
                };
                let joined = stored.max(self.group_seq_floor(group_id));
                let mut added = Vec::new();
                for chunk in users.chunks(CHUNK) {
                    let mut q = QueryBuilder::<$Db>::new(
                        "INSERT INTO group_members (group_id, user_id, role, joined_seq) ",
                    );
                    q.push_values(chunk, |mut b, user| {
                        b.push_bind(group_id)
                            .push_bind(user.as_str())
                            .push_bind(Role::Member.as_str())
                            .push_bind(joined);
                    });
                    q.push(" ON CONFLICT (group_id, user_id) DO NOTHING RETURNING user_id");
                    for r in q.build().fetch_all(&mut *tx).await? {
                        added.push(r.try_get(0)?);
                    }
                }
                tx.commit().await?;
                Ok(added)
            }

            async fn remove_member_impl(
                &self,
                group_id: &str,
                user: &str,
            ) -> Result<bool, StoreError> {
                let mut q = QueryBuilder::<$Db>::new("DELETE FROM group_members WHERE group_id = ");
                q.push_bind(group_id)
                    .push(" AND user_id = ")
                    .push_bind(user);
                Ok(self.write(q).await? > 0)
            }

            async fn set_role_impl(
                &self,
                group_id: &str,
                user: &str,
                role: Role,
            ) -> Result<bool, StoreError> {
                let mut q = QueryBuilder::<$Db>::new("UPDATE group_members SET role = ");
                q.push_bind(role.as_str())
                    .push(" WHERE group_id = ")
                    .push_bind(group_id)
                    .push(" AND user_id = ")
                    .push_bind(user);
                Ok(self.write(q).await? > 0)
            }

            async fn rename_group_impl(
                &self,
                group_id: &str,
                name: &str,
            ) -> Result<bool, StoreError> {
                let mut q = QueryBuilder::<$Db>::new("UPDATE chat_groups SET name = ");
                q.push_bind(name)
                    .push(" WHERE group_id = ")
                    .push_bind(group_id);
                Ok(self.write(q).await? > 0)
            }

            async fn dissolve_group_impl(&self, group_id: &str) -> Result<bool, StoreError> {
                let mut writer = self.writer().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let mut q = QueryBuilder::<$Db>::new("DELETE FROM group_members WHERE group_id = ");
                q.push_bind(group_id);
                q.build().execute(&mut *tx).await?;
                let mut q = QueryBuilder::<$Db>::new("DELETE FROM chat_groups WHERE group_id = ");
                q.push_bind(group_id);
                let gone = q.build().execute(&mut *tx).await?.rows_affected() > 0;
                tx.commit().await?;
                Ok(gone)
            }

            async fn group_counts_impl(
                &self,
                users: &[String],
            ) -> Result<HashMap<String, i64>, StoreError> {
                let mut counts = HashMap::new();
                for chunk in users.chunks(CHUNK) {
                    let mut q = QueryBuilder::<$Db>::new(
                        "SELECT user_id, COUNT(*) FROM group_members WHERE user_id IN (",
                    );
                    let mut list = q.separated(", ");
                    for user in chunk {
                        list.push_bind(user.as_str());
                    }
                    q.push(") GROUP BY user_id");
                    for r in q.build().fetch_all(&self.pool).await? {
                        counts.insert(r.try_get(0)?, r.try_get(1)?);
                    }
                }
                Ok(counts)
            }

            async fn groups_of_impl(&self, user: &str) -> Result<Vec<MyGroup>, StoreError> {
                let mut q = QueryBuilder::<$Db>::new(
                    "SELECT g.group_id, g.name, g.owner, g.created_at, m.role, COALESCE(s.seq, 0) \
                     FROM group_members m JOIN chat_groups g ON g.group_id = m.group_id \
                     LEFT JOIN user_seq s ON s.user_id = g.group_id WHERE m.user_id = ",
                );
                q.push_bind(user).push(" ORDER BY g.group_id");
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r| {
                        let role: String = r.try_get(4)?;
                        Ok(MyGroup {
                            group: Self::row_to_group(r)?,
                            role: Role::parse(&role),
                            seq: r.try_get(5)?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(StoreError::from)
            }
        }

        impl Store for $Store {
            fn render_metrics(&self, out: &mut String) {
                self.render_metrics_impl(out)
            }

            fn create_group<'a>(
                &'a self,
                group: &'a Group,
                members: &'a [(String, Role)],
            ) -> BoxFuture<'a, Result<(), StoreError>> {
                Box::pin(self.create_group_impl(group, members))
            }

            fn group<'a>(
                &'a self,
                group_id: &'a str,
            ) -> BoxFuture<'a, Result<Option<Group>, StoreError>> {
                Box::pin(self.group_impl(group_id))
            }

            fn members<'a>(
                &'a self,
                group_id: &'a str,
            ) -> BoxFuture<'a, Result<Vec<Member>, StoreError>> {
                Box::pin(self.members_impl(group_id))
            }

            fn add_members<'a>(
                &'a self,
                group_id: &'a str,
                users: &'a [String],
            ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
                Box::pin(self.add_members_impl(group_id, users))
            }

            fn remove_member<'a>(
                &'a self,
                group_id: &'a str,
                user: &'a str,
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.remove_member_impl(group_id, user))
            }

            fn set_role<'a>(
                &'a self,
                group_id: &'a str,
                user: &'a str,
                role: Role,
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.set_role_impl(group_id, user, role))
            }

            fn rename_group<'a>(
                &'a self,
                group_id: &'a str,
                name: &'a str,
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.rename_group_impl(group_id, name))
            }

            fn dissolve_group<'a>(
                &'a self,
                group_id: &'a str,
            ) -> BoxFuture<'a, Result<bool, StoreError>> {
                Box::pin(self.dissolve_group_impl(group_id))
            }

            fn group_counts<'a>(
                &'a self,
                users: &'a [String],
            ) -> BoxFuture<'a, Result<HashMap<String, i64>, StoreError>> {
                Box::pin(self.group_counts_impl(users))
            }

            fn groups_of<'a>(
                &'a self,
                user: &'a str,
            ) -> BoxFuture<'a, Result<Vec<MyGroup>, StoreError>> {
                Box::pin(async move {
                    let mut groups = self.groups_of_impl(user).await?;
                    for g in &mut groups {
                        g.seq = g.seq.max(self.group_seq_floor(&g.group.group_id));
                    }
                    Ok(groups)
                })
            }

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

/// The message path of PostgreSQL: every node of a cluster appends, so sequence numbers come
/// from the `user_seq` upsert inside the transaction, which serialises allocation per user.
impl PostgresStore {
    /// The originals of messages stored before with the same [`Key`] as one of `keyed`.
    async fn find_originals(
        conn: &mut sqlx::PgConnection,
        keyed: &[&Msg],
    ) -> Result<Map<Key, Msg>, StoreError> {
        let mut stored = Map::default();
        for keyed in keyed.chunks(CHUNK) {
            // A join from the constant rows, not `(...) IN (VALUES ...)`:
            // SQLite scans the whole table for the latter, and looks up the index for this.
            let mut q = QueryBuilder::<Postgres>::new("SELECT ");
            q.push(MSG_COLUMNS).push(" FROM (");
            q.push_values(keyed, |mut b, m| {
                b.push_bind(m.send_id.as_str())
                    .push_bind(m.create_time)
                    .push_bind(m.local_id.as_str());
            });
            q.push(
                ") AS k JOIN messages m ON m.send_id = k.column1 \
                 AND m.create_time = k.column2 AND m.local_id = k.column3 \
                 WHERE m.local_id <> ''",
            );
            for row in q.build().fetch_all(&mut *conn).await? {
                let m = Self::row_to_msg(&row)?;
                stored.insert(key(&m), m);
            }
        }
        Ok(stored)
    }

    /// Inserts numbered messages.
    async fn insert_messages(
        conn: &mut sqlx::PgConnection,
        rows: &[Msg],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(CHUNK) {
            let mut q = QueryBuilder::<Postgres>::new(format!("INSERT INTO messages ({COLUMNS}) "));
            q.push_values(chunk, |mut b, m| {
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
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Up to `limit` messages of `user`'s `stream` after `after`, in order.
    async fn select_after(
        conn: &mut sqlx::PgConnection,
        user: &str,
        stream: Stream,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Msg>, StoreError> {
        let (who, cursor) = match stream {
            Stream::Inbox => ("receiver_id", "seq"),
            Stream::Sent => ("send_id", "send_seq"),
        };
        let mut q =
            QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM messages WHERE {who} = "));
        q.push_bind(user)
            .push(format!(" AND {cursor} > "))
            .push_bind(after)
            .push(format!(" ORDER BY {cursor} LIMIT "))
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&mut *conn).await?;
        Ok(rows
            .iter()
            .map(Self::row_to_msg)
            .collect::<Result<_, _>>()?)
    }

    /// Deletes the messages sent before `before_ms`, oldest first, a chunk per statement
    /// so that writers are never blocked for long.
    async fn prune_messages(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut q = QueryBuilder::<Postgres>::new(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages WHERE send_time < ",
            );
            q.push_bind(before_ms)
                .push(" ORDER BY id LIMIT ")
                .push_bind(PRUNE_CHUNK)
                .push(")");
            let n = self.write(q).await?;
            total += n;
            if n < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn append_batch(&self, batch: &[Msg]) -> Result<Vec<Appended>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;

        // 1. Resends: the originals of keys stored before.
        let keyed: Vec<&Msg> = batch.iter().filter(|m| !m.local_id.is_empty()).collect();
        let stored = Self::find_originals(&mut tx, &keyed).await?;
        let (fresh, repeat_of) = classify(batch, &stored);

        // 2. Sequence numbers: one block per user, allocated atomically.
        let demand = seq_demand(batch, &fresh);
        let mut next: Map<String, (i64, i64)> = Map::default();
        for demand in demand.chunks(CHUNK) {
            let mut q =
                QueryBuilder::<Postgres>::new("INSERT INTO user_seq (user_id, seq, send_seq) ");
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
        let (numbered, outcomes) = number(batch, &fresh, &repeat_of, &stored, &mut next);

        // 3. The rows.
        Self::insert_messages(&mut tx, &numbered).await?;

        // 4. Read receipts: the reader (send_id) has read every message from receiver_id up
        //    to the one whose server_id is the content.
        for r in numbered.iter().filter(|m| m.msg_type == msg_type::READ) {
            let mut q = QueryBuilder::<Postgres>::new(
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
        let mut conn = self.pool.acquire().await?;
        Self::select_after(&mut conn, user, stream, after, limit).await
    }

    async fn cursors_impl(&self, user: &str) -> Result<(i64, i64), StoreError> {
        self.stored_cursors(user).await
    }

    async fn prune_impl(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.prune_messages(before_ms).await
    }

    /// Nothing is held back from the tables: their counters are current.
    fn group_seq_floor(&self, _group_id: &str) -> i64 {
        0
    }

    /// Nothing of its own beyond the commit metrics every store has.
    fn render_metrics_impl(&self, _out: &mut String) {}
}

sql_store!(PostgresStore, Postgres);
