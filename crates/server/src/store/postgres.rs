//! The PostgreSQL store, for a cluster: every node writes to it. A row per message in
//! `messages`; sequence numbers come from the `user_seq` upsert inside the commit transaction,
//! which serialises allocation per user across nodes (users locked in sorted order, so
//! concurrent batches cannot deadlock). Groups: [`GroupSql`].

use std::{collections::HashMap, time::Duration};

use futures_util::future::BoxFuture;
use natter_protocol::{
    Msg,
    conversation::{self, Conversation},
    msg_type,
};
use sqlx::{
    PgConnection, Postgres, QueryBuilder, Row,
    pool::PoolConnection,
    postgres::{PgPool, PgPoolOptions, PgRow},
};

use super::{
    Appended, CHUNK, Group, HistoryFrom, Invite, Member, MyGroup, Role, Store, StoreError, Stream,
    batch::{Key, Map, Seen, classify, conv_demand, key, number},
    conv::{ConvSql, ListParts, ListScope, Settings, apply_change, change_target, changes},
    group_sql::GroupSql,
    migrator,
    revoked::{Revocation, RevokedSql},
};

const COLUMNS: &str = "server_id, send_id, receiver_id, local_id, seq, send_seq, msg_type, \
                       content_type, content, create_time, send_time, is_read, conv_id, conv_seq";

/// The same columns, qualified by the alias `m`.
const MSG_COLUMNS: &str = "m.server_id, m.send_id, m.receiver_id, m.local_id, m.seq, \
                           m.send_seq, m.msg_type, m.content_type, m.content, m.create_time, \
                           m.send_time, m.is_read, m.conv_id, m.conv_seq";

/// Rows deleted per statement by retention, so writers are never blocked for long.
const PRUNE_CHUNK: i64 = 5000;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "baseline",
        include_str!("../../migrations/postgres/0001_baseline.sql"),
    ),
    (
        2,
        "group invites",
        include_str!("../../migrations/postgres/0002_group_invites.sql"),
    ),
    (
        3,
        "conversations",
        include_str!("../../migrations/postgres/0003_conversations.sql"),
    ),
    (
        4,
        "revocations",
        include_str!("../../migrations/postgres/0004_revocations.sql"),
    ),
];

type Sql = GroupSql<Postgres>;
type Conv = ConvSql<Postgres>;

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
        migrator(MIGRATIONS).await?.run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// Any pooled connection, for reads and writes alike: PostgreSQL locks rows, and every node
    /// writes.
    async fn conn(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    fn row_to_msg(row: &PgRow) -> Result<Msg, sqlx::Error> {
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
            conv_id: row.try_get(12)?,
            conv_seq: row.try_get(13)?,
        })
    }

    /// The originals of messages stored before with the same [`Key`] as one of `keyed`.
    async fn find_originals(
        conn: &mut PgConnection,
        keyed: &[&Msg],
    ) -> Result<Map<Key, Msg>, StoreError> {
        let mut stored = Map::default();
        for keyed in keyed.chunks(CHUNK) {
            // For each key, its message through the index: a lateral subquery with LIMIT 1 is an
            // index lookup whatever the planner believes of the table's size (a plain join's
            // plan, cached while the table was small, can be a scan of every message).
            let mut q = QueryBuilder::<Postgres>::new("SELECT ");
            q.push(MSG_COLUMNS).push(" FROM (");
            q.push_values(keyed, |mut b, m| {
                b.push_bind(m.send_id.as_str())
                    .push_bind(m.create_time)
                    .push_bind(m.local_id.as_str());
            });
            q.push(format!(
                ") AS k CROSS JOIN LATERAL (SELECT {COLUMNS} FROM messages \
                 WHERE send_id = k.column1 AND create_time = k.column2 \
                 AND local_id = k.column3 AND local_id <> '' LIMIT 1) m"
            ));
            for row in q.build().fetch_all(&mut *conn).await? {
                let m = Self::row_to_msg(&row)?;
                stored.insert(key(&m), m);
            }
        }
        Ok(stored)
    }

    /// Inserts numbered messages.
    async fn insert_messages(conn: &mut PgConnection, rows: &[Msg]) -> Result<(), StoreError> {
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
                    .push_bind(m.is_read)
                    .push_bind(m.conv_id.as_str())
                    .push_bind(m.conv_seq);
            });
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Up to `limit` messages of `user`'s `stream` after `after`, in order.
    /// Up to `limit` messages of `user`'s `stream` after `after`, in order, within
    /// `max_bytes` ([`page_bytes`](super::page_bytes), the same sum in SQL): only what is
    /// returned leaves the database.
    async fn select_after(
        conn: &mut PgConnection,
        user: &str,
        stream: Stream,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Msg>, StoreError> {
        let (who, cursor) = match stream {
            Stream::Inbox => ("receiver_id", "seq"),
            Stream::Sent => ("send_id", "send_seq"),
        };
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS}, \
             SUM(64 + octet_length(content)) OVER (ORDER BY {cursor}) AS upto, \
             ROW_NUMBER() OVER (ORDER BY {cursor}) AS n \
             FROM messages WHERE {who} = "
        ));
        q.push_bind(user)
            .push(format!(" AND {cursor} > "))
            .push_bind(after)
            .push(format!(" ORDER BY {cursor} LIMIT "))
            .push_bind(i64::from(limit))
            .push(") page WHERE n = 1 OR upto <= ")
            .push_bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
            .push(format!(" ORDER BY {cursor}"));
        let rows = q.build().fetch_all(&mut *conn).await?;
        Ok(rows
            .iter()
            .map(Self::row_to_msg)
            .collect::<Result<_, _>>()?)
    }

    /// A page of a conversation's entries ([`Store::history`]), the byte bound summed in SQL
    /// from the position outwards.
    async fn select_history(
        conn: &mut PgConnection,
        conv_id: &str,
        from: HistoryFrom,
        floor: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Msg>, StoreError> {
        let (cmp, bound, order) = match from {
            HistoryFrom::Before(b) => ("<", b, "DESC"),
            HistoryFrom::After(a) => (">", a, "ASC"),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS}, \
             SUM(64 + octet_length(content)) OVER (ORDER BY conv_seq {order}) AS upto, \
             ROW_NUMBER() OVER (ORDER BY conv_seq {order}) AS n \
             FROM messages WHERE conv_id = $1 AND conv_seq {cmp} $2 AND conv_seq > $3 \
             AND conv_seq > 0 AND msg_type <> {read} ORDER BY conv_seq {order} LIMIT $4) page \
             WHERE n = 1 OR upto <= $5 ORDER BY conv_seq",
            read = msg_type::READ
        );
        let rows = sqlx::query(&sql)
            .bind(conv_id)
            .bind(bound)
            .bind(floor)
            .bind(i64::from(limit))
            .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await?;
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
            let n = q
                .build()
                .execute(&mut *self.conn().await?)
                .await?
                .rows_affected();
            total += n;
            if n < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    async fn append_batch(&self, batch: &[Msg]) -> Result<Vec<Appended>, StoreError> {
        let mut conn = self.conn().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;

        // 1. Resends: the originals of keys stored before.
        let keyed: Vec<&Msg> = batch.iter().filter(|m| !m.local_id.is_empty()).collect();
        let stored = Self::find_originals(&mut tx, &keyed).await?;
        let seen = classify(batch, &stored);

        // 2. Sequence numbers: one block per user, allocated atomically.
        let demand = seq_demand(batch, &seen);
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
        // One-to-one conversations count their entries in their rows: a block each, likewise.
        let mut next_conv: Map<String, i64> = Map::default();
        for demand in conv_demand(batch, &seen).chunks(CHUNK) {
            let mut q = QueryBuilder::<Postgres>::new(
                "INSERT INTO conversations (conv_id, user_a, user_b, last_seq) ",
            );
            q.push_values(demand, |mut b, (conv_id, n)| {
                let (a, b_) = match conversation::parse(conv_id) {
                    Some(Conversation::Direct(a, b)) => (a, b),
                    _ => Default::default(),
                };
                b.push_bind(conv_id.as_str())
                    .push_bind(a)
                    .push_bind(b_)
                    .push_bind(*n);
            });
            q.push(
                " ON CONFLICT (conv_id) DO UPDATE SET \
                 last_seq = conversations.last_seq + excluded.last_seq \
                 RETURNING conv_id, last_seq",
            );
            let tops: HashMap<String, i64> = q
                .build()
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
            for (conv_id, n) in demand {
                let top = tops.get(conv_id).copied().unwrap_or_default();
                next_conv.insert(conv_id.clone(), top - n + 1);
            }
        }
        let (numbered, outcomes) = number(batch, &seen, &stored, &mut next, &mut next_conv);

        // 3. The rows, and the chat list's.
        Self::insert_messages(&mut tx, &numbered).await?;
        ConvSql::<Postgres>::apply(&mut tx, &changes(&numbered)).await?;

        // Recalls and edits: the entry's row takes the change (a recall erases the content).
        for event in &numbered {
            let Some((conv_id, target_seq)) = change_target(event) else {
                continue;
            };
            let mut changed = Msg {
                send_id: event.send_id.clone(),
                ..Msg::default()
            };
            apply_change(&mut changed, event);
            // The literal conditions let PostgreSQL use the partial index `messages_conv`.
            sqlx::query(&format!(
                "UPDATE messages SET content = $4, \
                 msg_type = CASE WHEN $5 = $6 THEN $6 ELSE msg_type END \
                 WHERE conv_id = $1 AND conv_seq = $2 AND send_id = $3 \
                 AND conv_seq > 0 AND msg_type <> {read}",
                read = msg_type::READ
            ))
            .bind(conv_id)
            .bind(target_seq)
            .bind(event.send_id.as_str())
            .bind(changed.content.as_str())
            .bind(event.msg_type)
            .bind(msg_type::RECALL)
            .execute(&mut *tx)
            .await?;
        }

        // 4. Read receipts: the reader (send_id) has read every message from receiver_id up
        //    to the one whose server_id is the content: found through the conversation's
        //    index (not the reader's whole inbox), up to the receipt's conv_seq when it has one.
        //    Messages stored before conversations (conv_seq 0) keep their flag.
        for r in numbered
            .iter()
            .filter(|m| m.msg_type == msg_type::READ && !m.content.is_empty())
        {
            let upto = if r.conv_seq > 0 { r.conv_seq } else { i64::MAX };
            sqlx::query(&format!(
                "UPDATE messages SET is_read = TRUE WHERE conv_id = $1 AND conv_seq > 0 \
                 AND msg_type <> {read} AND conv_seq <= $2 AND receiver_id = $3 \
                 AND send_id = $4 AND server_id <= $5 AND is_read = FALSE",
                read = msg_type::READ
            ))
            .bind(conversation::direct_id(&r.send_id, &r.receiver_id))
            .bind(upto)
            .bind(r.send_id.as_str())
            .bind(r.receiver_id.as_str())
            .bind(r.content.as_str())
            .execute(&mut *tx)
            .await?;
        }

        tx.commit().await?;
        Ok(outcomes)
    }
}

/// Sequence numbers a batch needs, per user: (inbox messages, sent messages).
fn seq_demand(batch: &[Msg], seen: &[Seen]) -> Vec<(String, i64, i64)> {
    let mut demand: HashMap<&str, (i64, i64)> = HashMap::new();
    for (msg, _) in batch.iter().zip(seen).filter(|(_, s)| s.is_new()) {
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

impl Store for PostgresStore {
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
        Box::pin(async move {
            let mut conn = self.conn().await?;
            Self::select_after(&mut conn, user, stream, after, limit, max_bytes).await
        })
    }

    fn cursors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<(i64, i64), StoreError>> {
        Box::pin(async move { Sql::cursors(&mut *self.conn().await?, user).await })
    }

    fn prune(&self, before_ms: i64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.prune_messages(before_ms))
    }

    fn create_group<'a>(
        &'a self,
        group: &'a Group,
        members: &'a [(String, Role)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Sql::create(&mut *self.conn().await?, group, members).await })
    }

    fn group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Option<Group>, StoreError>> {
        Box::pin(async move { Sql::group(&mut *self.conn().await?, group_id).await })
    }

    fn members<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<Vec<Member>, StoreError>> {
        Box::pin(async move { Sql::members(&mut *self.conn().await?, group_id).await })
    }

    fn add_members<'a>(
        &'a self,
        group_id: &'a str,
        users: &'a [String],
        chosen: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            Sql::add_members(&mut *self.conn().await?, group_id, users, 0, chosen).await
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
            Sql::invite(&mut *self.conn().await?, group_id, users, inviter, at, keep).await
        })
    }

    fn invites_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<Invite>, StoreError>> {
        Box::pin(async move { Sql::invites_of(&mut *self.conn().await?, user).await })
    }

    fn take_invite<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::take_invite(&mut *self.conn().await?, group_id, user).await })
    }

    fn remove_member<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::remove_member(&mut *self.conn().await?, group_id, user).await })
    }

    fn set_role<'a>(
        &'a self,
        group_id: &'a str,
        user: &'a str,
        role: Role,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::set_role(&mut *self.conn().await?, group_id, user, role).await })
    }

    fn rename_group<'a>(
        &'a self,
        group_id: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::rename(&mut *self.conn().await?, group_id, name).await })
    }

    fn dissolve_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Sql::dissolve(&mut *self.conn().await?, group_id).await })
    }

    fn group_counts<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, i64>, StoreError>> {
        Box::pin(async move { Sql::counts(&mut *self.conn().await?, users).await })
    }

    fn groups_of<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Vec<MyGroup>, StoreError>> {
        Box::pin(async move { Sql::groups_of(&mut *self.conn().await?, user).await })
    }

    fn chat_list<'a>(
        &'a self,
        user: &'a str,
        scope: ListScope<'a>,
    ) -> BoxFuture<'a, Result<ListParts, StoreError>> {
        Box::pin(async move { Conv::list_parts(&mut *self.conn().await?, user, scope).await })
    }

    fn history<'a>(
        &'a self,
        conv_id: &'a str,
        from: HistoryFrom,
        floor: i64,
        limit: u32,
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Vec<Msg>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            Self::select_history(&mut conn, conv_id, from, floor, limit, max_bytes).await
        })
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        upto: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(
            async move { Conv::mark_read(&mut *self.conn().await?, user, conv_id, upto).await },
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
            Conv::set_settings(&mut *self.conn().await?, user, conv_id, pinned, muted).await
        })
    }

    fn hide<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        seqs: &'a [i64],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Conv::hide(&mut *self.conn().await?, user, conv_id, seqs).await })
    }

    fn hidden<'a>(
        &'a self,
        user: &'a str,
        conv_id: &'a str,
        low: i64,
        high: i64,
    ) -> BoxFuture<'a, Result<Vec<i64>, StoreError>> {
        Box::pin(
            async move { Conv::hidden(&mut *self.conn().await?, user, conv_id, low, high).await },
        )
    }

    fn muted_of<'a>(
        &'a self,
        users: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, StoreError>> {
        Box::pin(async move { Conv::muted_of(&mut *self.conn().await?, users).await })
    }

    fn revoke<'a>(&'a self, r: &'a Revocation) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { RevokedSql::<Postgres>::add(&mut *self.conn().await?, r).await })
    }

    fn revocations(&self, now: u64) -> BoxFuture<'_, Result<Vec<Revocation>, StoreError>> {
        Box::pin(async move { RevokedSql::<Postgres>::load(&mut *self.conn().await?, now).await })
    }

    fn read_count<'a>(
        &'a self,
        group: &'a str,
        seq: i64,
        except: &'a str,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(
            async move { Conv::read_count(&mut *self.conn().await?, group, seq, except).await },
        )
    }

    /// Nothing of its own beyond the commit metrics every store has.
    fn render_metrics(&self, _out: &mut String) {}
}
