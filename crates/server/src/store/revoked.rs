//! The revocation tables (`revoked_users`, `revoked_tokens`), with the same SQL for both
//! drivers.

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::StoreError;

/// One revocation, as stored and as sent between nodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// Every token of `user` issued before `before` (Unix seconds; a token without `iat` counts
    /// as issued before any time).
    User { user: String, before: u64 },
    /// The token whose `jti` this is; kept until `expires_at` (Unix seconds), when the token
    /// could not be used anyway.
    Token { jti: String, expires_at: u64 },
}

pub(super) struct RevokedSql<DB>(PhantomData<DB>);

impl<DB> RevokedSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Records `r`; a later `before` or `expires_at` wins over an earlier one.
    pub(super) async fn add(conn: &mut DB::Connection, r: &Revocation) -> Result<(), StoreError> {
        let (sql, key, time) = match r {
            Revocation::User { user, before } => (
                "INSERT INTO revoked_users (user_id, before) VALUES ($1, $2) \
                 ON CONFLICT (user_id) DO UPDATE SET before = excluded.before \
                 WHERE excluded.before > revoked_users.before",
                user,
                before,
            ),
            Revocation::Token { jti, expires_at } => (
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at \
                 WHERE excluded.expires_at > revoked_tokens.expires_at",
                jti,
                expires_at,
            ),
        };
        sqlx::query(sql)
            .bind(key.as_str())
            .bind(secs(*time))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Every revocation in force at `now` (Unix seconds); token revocations that expired before
    /// it are deleted.
    pub(super) async fn load(
        conn: &mut DB::Connection,
        now: u64,
    ) -> Result<Vec<Revocation>, StoreError> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(secs(now))
            .execute(&mut *conn)
            .await?;
        let users = sqlx::query("SELECT user_id, before FROM revoked_users")
            .fetch_all(&mut *conn)
            .await?;
        let tokens = sqlx::query("SELECT jti, expires_at FROM revoked_tokens")
            .fetch_all(&mut *conn)
            .await?;
        let time = |row: &DB::Row| row.try_get::<i64, _>(1).map(|t| t.max(0) as u64);
        let mut out = Vec::with_capacity(users.len() + tokens.len());
        for row in &users {
            out.push(Revocation::User {
                user: row.try_get(0)?,
                before: time(row)?,
            });
        }
        for row in &tokens {
            out.push(Revocation::Token {
                jti: row.try_get(0)?,
                expires_at: time(row)?,
            });
        }
        Ok(out)
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}
