//! The group tables (`chat_groups`, `group_members`, `group_invites`) and the `user_seq` counters, read and
//! written with the same SQL on both stores. Each function takes the connection to run on: the
//! store decides which (SQLite's one writer, a pooled PostgreSQL connection). Placeholders are
//! `$N`, which both drivers read, so the text is the same for both; the bounds on [`GroupSql`]
//! are what both drivers meet.

use std::{collections::HashMap, marker::PhantomData};

use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{
    CHUNK, Group, Invite, Member, MyGroup, Role, StoreError,
    conv::{placeholders, values as rows},
};

/// The group SQL for the driver `DB`.
pub(super) struct GroupSql<DB>(PhantomData<DB>);

impl<DB> GroupSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The counters as `user_seq` holds them: `(seq, send_seq)`, (0, 0) for a new user.
    pub(super) async fn cursors(
        conn: &mut DB::Connection,
        user: &str,
    ) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT seq, send_seq FROM user_seq WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(match row {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => (0, 0),
        })
    }

    pub(super) async fn create(
        conn: &mut DB::Connection,
        g: &Group,
        members: &[(String, Role)],
    ) -> Result<(), StoreError> {
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO chat_groups (group_id, name, owner, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(g.group_id.as_str())
        .bind(g.name.as_str())
        .bind(g.owner.as_str())
        .bind(g.created_at)
        .execute(&mut *tx)
        .await?;
        for chunk in members.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO group_members (group_id, user_id, role, joined_seq, chosen) \
                 VALUES {}",
                rows(chunk.len(), 5)
            );
            let mut q = sqlx::query(&sql);
            for (user, role) in chunk {
                q = q
                    .bind(g.group_id.as_str())
                    .bind(user.as_str())
                    .bind(role.as_str())
                    .bind(0i64)
                    .bind(i64::from(*role == Role::Owner));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn group(
        conn: &mut DB::Connection,
        group_id: &str,
    ) -> Result<Option<Group>, StoreError> {
        let row = sqlx::query(
            "SELECT group_id, name, owner, created_at FROM chat_groups WHERE group_id = $1",
        )
        .bind(group_id)
        .fetch_optional(&mut *conn)
        .await?;
        row.as_ref().map(Self::row_to_group).transpose()
    }

    pub(super) async fn members(
        conn: &mut DB::Connection,
        group_id: &str,
    ) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, role, joined_seq FROM group_members WHERE group_id = $1 \
             ORDER BY user_id",
        )
        .bind(group_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user_id: r.try_get(0)?,
                    role: Self::role(r, 1)?,
                    joined_seq: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Adds `users` joining at the group's seq: the greater of `user_seq`'s and `seq_floor`
    /// (what the store knows beyond its tables). Returns those not already members.
    pub(super) async fn add_members(
        conn: &mut DB::Connection,
        group_id: &str,
        users: &[String],
        seq_floor: i64,
        chosen: bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = conn.begin().await?;
        let (stored, _) = Self::cursors(&mut tx, group_id).await?;
        let joined = stored.max(seq_floor);
        let mut added = Vec::new();
        for chunk in users.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO group_members (group_id, user_id, role, joined_seq, chosen) \
                 VALUES {} ON CONFLICT (group_id, user_id) DO NOTHING RETURNING user_id",
                rows(chunk.len(), 5)
            );
            let mut q = sqlx::query(&sql);
            for user in chunk {
                q = q
                    .bind(group_id)
                    .bind(user.as_str())
                    .bind(Role::Member.as_str())
                    .bind(joined)
                    .bind(i64::from(chosen));
            }
            for r in q.fetch_all(&mut *tx).await? {
                added.push(r.try_get(0)?);
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    pub(super) async fn remove_member(
        conn: &mut DB::Connection,
        group_id: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2 RETURNING user_id",
        )
        .bind(group_id)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.is_some())
    }

    pub(super) async fn set_role(
        conn: &mut DB::Connection,
        group_id: &str,
        user: &str,
        role: Role,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "UPDATE group_members SET role = $1 WHERE group_id = $2 AND user_id = $3 \
             RETURNING user_id",
        )
        .bind(role.as_str())
        .bind(group_id)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.is_some())
    }

    pub(super) async fn rename(
        conn: &mut DB::Connection,
        group_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let row =
            sqlx::query("UPDATE chat_groups SET name = $1 WHERE group_id = $2 RETURNING group_id")
                .bind(name)
                .bind(group_id)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.is_some())
    }

    pub(super) async fn dissolve(
        conn: &mut DB::Connection,
        group_id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = conn.begin().await?;
        for table in ["group_members", "group_invites"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE group_id = $1"))
                .bind(group_id)
                .execute(&mut *tx)
                .await?;
        }
        let gone = sqlx::query("DELETE FROM chat_groups WHERE group_id = $1 RETURNING group_id")
            .bind(group_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        tx.commit().await?;
        Ok(gone)
    }

    /// Invites `users` to the group; returns those not invited already. Each keeps at most
    /// `keep` pending invitations, the newest.
    pub(super) async fn invite(
        conn: &mut DB::Connection,
        group_id: &str,
        users: &[String],
        inviter: &str,
        at: i64,
        keep: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = conn.begin().await?;
        let mut invited = Vec::new();
        for chunk in users.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO group_invites (group_id, user_id, inviter, invited_at) VALUES {} \
                 ON CONFLICT (group_id, user_id) DO NOTHING RETURNING user_id",
                rows(chunk.len(), 4)
            );
            let mut q = sqlx::query(&sql);
            for user in chunk {
                q = q.bind(group_id).bind(user.as_str()).bind(inviter).bind(at);
            }
            for r in q.fetch_all(&mut *tx).await? {
                invited.push(r.try_get::<String, _>(0)?);
            }
        }
        // Each invited user keeps the newest `keep`: one statement per chunk of users.
        for chunk in invited.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM group_invites WHERE (group_id, user_id) IN \
                 (SELECT group_id, user_id FROM \
                  (SELECT group_id, user_id, ROW_NUMBER() OVER \
                   (PARTITION BY user_id ORDER BY invited_at DESC, group_id DESC) AS n \
                   FROM group_invites WHERE user_id IN ({})) ranked WHERE n > $1)",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(keep as i64);
            for user in chunk {
                q = q.bind(user.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(invited)
    }

    pub(super) async fn invites_of(
        conn: &mut DB::Connection,
        user: &str,
    ) -> Result<Vec<Invite>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.group_id, g.name, i.inviter, i.invited_at FROM group_invites i \
             JOIN chat_groups g ON g.group_id = i.group_id WHERE i.user_id = $1 \
             ORDER BY i.invited_at DESC, i.group_id DESC",
        )
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Invite {
                    group_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    inviter: r.try_get(2)?,
                    invited_at: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub(super) async fn take_invite(
        conn: &mut DB::Connection,
        group_id: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM group_invites WHERE group_id = $1 AND user_id = $2 RETURNING user_id",
        )
        .bind(group_id)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
    }

    pub(super) async fn counts(
        conn: &mut DB::Connection,
        users: &[String],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut counts = HashMap::new();
        for chunk in users.chunks(CHUNK) {
            let sql = format!(
                "SELECT user_id, COUNT(*) FROM group_members WHERE chosen = 1 AND user_id IN ({}) \
                 GROUP BY user_id",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for user in chunk {
                q = q.bind(user.as_str());
            }
            for r in q.fetch_all(&mut *conn).await? {
                counts.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        Ok(counts)
    }

    /// `user`'s groups, each with the group's seq as `user_seq` holds it (the store raises it
    /// to what it knows beyond its tables).
    pub(super) async fn groups_of(
        conn: &mut DB::Connection,
        user: &str,
    ) -> Result<Vec<MyGroup>, StoreError> {
        let rows = sqlx::query(
            "SELECT g.group_id, g.name, g.owner, g.created_at, m.role, COALESCE(s.seq, 0) \
             FROM group_members m JOIN chat_groups g ON g.group_id = m.group_id \
             LEFT JOIN user_seq s ON s.user_id = g.group_id WHERE m.user_id = $1 \
             ORDER BY g.group_id",
        )
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MyGroup {
                    group: Self::row_to_group(r)?,
                    role: Self::role(r, 4)?,
                    seq: r.try_get(5)?,
                })
            })
            .collect()
    }

    fn row_to_group(row: &DB::Row) -> Result<Group, StoreError> {
        Ok(Group {
            group_id: row.try_get(0)?,
            name: row.try_get(1)?,
            owner: row.try_get(2)?,
            created_at: row.try_get(3)?,
        })
    }

    fn role(row: &DB::Row, column: usize) -> Result<Role, StoreError> {
        let role: String = row.try_get(column)?;
        Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("unknown role `{role}`")))
    }
}
