//! Conversations in the store, for both: what a committed batch changes in the chat list
//! ([`changes`]), and the chat list's tables read and written with the same SQL ([`ConvSql`]).
//!
//! A conversation's row (`conversations`) holds its last entry and, one-to-one, both users'
//! read positions; a group member's read position is `group_members.read_seq`. Every change is
//! a merge that only moves forward (the greater `last_seq` wins the last entry, read positions
//! take the greater), so the order in which writers apply them does not matter: PostgreSQL
//! applies a batch's changes in its commit, SQLite when the batch moves to `natter.db`, its tail
//! holding the changes not moved yet for readers to merge.

use std::{collections::HashMap, marker::PhantomData};

use natter_protocol::{
    Msg,
    conversation::{self, Change, Conversation},
    is_group_id, msg_type,
};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{CHUNK, StoreError, batch::Map};

/// The bytes of an entry's content the chat list keeps as its preview.
pub const PREVIEW_BYTES: usize = 256;

/// A conversation's last entry, as the chat list shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LastEntry {
    pub conv_seq: i64,
    pub server_id: String,
    pub send_id: String,
    pub msg_type: i32,
    pub content_type: i32,
    /// The content's first [`PREVIEW_BYTES`]: for an edit, of the new content; for a recall,
    /// empty.
    pub preview: String,
    pub send_time: i64,
}

impl LastEntry {
    fn of(m: &Msg) -> LastEntry {
        let content = match m.msg_type {
            msg_type::RECALL => String::new(),
            msg_type::EDIT => Change::parse(&m.content)
                .and_then(|c| c.content)
                .unwrap_or_default(),
            _ => m.content.clone(),
        };
        LastEntry {
            conv_seq: m.conv_seq,
            server_id: m.server_id.clone(),
            send_id: m.send_id.clone(),
            msg_type: m.msg_type,
            content_type: m.content_type,
            preview: preview(&content),
            send_time: m.send_time,
        }
    }
}

/// The first [`PREVIEW_BYTES`] of `content`, cut at a character boundary.
pub fn preview(content: &str) -> String {
    prefix(content, PREVIEW_BYTES).to_owned()
}

/// The first `max` bytes of `content`, or fewer: cut at a character boundary.
pub fn prefix(content: &str, max: usize) -> &str {
    let mut end = content.len().min(max);
    while !content.is_char_boundary(end) {
        end -= 1;
    }
    &content[..end]
}

/// A conversation's row: what the chat list reads, and what a batch changes (then merged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvRow {
    pub conv_id: String,
    /// One-to-one: the two users in byte order; groups: empty.
    pub user_a: String,
    pub user_b: String,
    /// The last entry (`last.conv_seq` is the conversation's last seq; 0: none yet).
    pub last: LastEntry,
    /// One-to-one: each user's read position.
    pub read_a: i64,
    pub read_b: i64,
}

impl ConvRow {
    fn new(conv_id: &str) -> ConvRow {
        let (user_a, user_b) = match conversation::parse(conv_id) {
            Some(Conversation::Direct(a, b)) => (a, b),
            _ => (String::new(), String::new()),
        };
        ConvRow {
            conv_id: conv_id.to_owned(),
            user_a,
            user_b,
            ..ConvRow::default()
        }
    }

    /// Takes in a later change: the newer last entry, the greater read positions.
    pub fn merge(&mut self, change: &ConvRow) {
        if change.last.conv_seq > self.last.conv_seq {
            self.last = change.last.clone();
        }
        self.read_a = self.read_a.max(change.read_a);
        self.read_b = self.read_b.max(change.read_b);
    }

    /// Raises `user`'s read position (one-to-one).
    pub fn read(&mut self, user: &str, upto: i64) {
        if user == self.user_a {
            self.read_a = self.read_a.max(upto);
        }
        if user == self.user_b {
            self.read_b = self.read_b.max(upto);
        }
    }

    pub fn last_seq(&self) -> i64 {
        self.last.conv_seq
    }
}

/// What a committed batch changes: a row per conversation, and group members' read positions
/// (`(group, member) -> conv_seq`: a member's own entry is read by them).
#[derive(Debug, Default)]
pub struct Changes {
    pub rows: Map<String, ConvRow>,
    pub member_reads: Map<(String, String), i64>,
}

impl Changes {
    /// Takes in `later`'s changes.
    pub fn merge(&mut self, later: Changes) {
        for (id, row) in later.rows {
            match self.rows.get_mut(&id) {
                Some(mine) => mine.merge(&row),
                None => {
                    self.rows.insert(id, row);
                }
            }
        }
        for (key, seq) in later.member_reads {
            let at = self.member_reads.entry(key).or_insert(0);
            *at = (*at).max(seq);
        }
    }
}

/// The changes of numbered messages (in commit order): each entry becomes its conversation's
/// last and is read by its sender; a one-to-one read receipt raises its sender's position to
/// its `conv_seq`.
pub fn changes<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> Changes {
    let mut out = Changes::default();
    for m in msgs {
        if m.conv_seq <= 0 {
            continue;
        }
        let entry = conversation::is_entry(m);
        let row = out
            .rows
            .entry(m.conv_id.clone())
            .or_insert_with(|| ConvRow::new(&m.conv_id));
        if entry {
            row.last = LastEntry::of(m);
        }
        if is_group_id(&m.conv_id) {
            let at = out
                .member_reads
                .entry((m.conv_id.clone(), m.send_id.clone()))
                .or_insert(0);
            *at = (*at).max(m.conv_seq);
        } else {
            row.read(&m.send_id, m.conv_seq);
        }
    }
    out
}

/// The entry a recall or an edit changes: `(conv_id, conv_seq)`; `None` for anything else.
pub fn change_target(event: &Msg) -> Option<(&str, i64)> {
    if !matches!(event.msg_type, msg_type::RECALL | msg_type::EDIT) {
        return None;
    }
    Change::parse(&event.content).map(|c| (event.conv_id.as_str(), c.conv_seq))
}

/// `target` as the recall or edit `event` leaves it: recalled, `msg_type` 25 and no content;
/// edited, the new content. Only the target's sender changes it.
pub fn apply_change(target: &mut Msg, event: &Msg) {
    if target.send_id != event.send_id {
        return;
    }
    match event.msg_type {
        msg_type::RECALL => {
            target.msg_type = msg_type::RECALL;
            target.content.clear();
        }
        msg_type::EDIT => {
            if let Some(content) = Change::parse(&event.content).and_then(|c| c.content) {
                target.content = content;
            }
        }
        _ => {}
    }
}

/// A user's settings of a conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Settings {
    pub pinned: bool,
    pub muted: bool,
}

/// A group membership as the chat list needs it.
#[derive(Debug, Clone)]
pub struct Membership {
    pub group_id: String,
    pub name: String,
    pub created_at: i64,
    pub joined_seq: i64,
    pub read_seq: i64,
}

/// Which part of a user's chat list to read.
#[derive(Debug, Clone, Copy)]
pub enum ListScope<'a> {
    /// A page of `limit` after `after` (the list's order, [`ListKey`]).
    Page {
        after: Option<&'a ListKey>,
        limit: usize,
    },
    /// One conversation.
    One(&'a str),
}

/// What the chat list is made of, read from the tables (SQLite merges its tail into it).
#[derive(Debug, Default)]
pub struct ListParts {
    /// The user's one-to-one conversations (a row without an entry yet, `last_seq` 0, is not
    /// listed), and the rows of the user's groups.
    pub rows: Map<String, ConvRow>,
    pub groups: Vec<Membership>,
    pub settings: HashMap<String, Settings>,
}

/// The conversation tables' SQL for the driver `DB` (placeholders `$N`, read by both).
pub(super) struct ConvSql<DB>(PhantomData<DB>);

const ROW_COLUMNS: &str = "conv_id, user_a, user_b, last_seq, read_a, read_b, last_server_id, \
                           last_send_id, last_msg_type, last_content_type, last_preview, last_time";

impl<DB> ConvSql<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB> + Decode<'q, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// The greater of two values: `GREATEST` in PostgreSQL, the scalar `MAX` in SQLite.
    fn greatest() -> &'static str {
        if DB::NAME == "SQLite" {
            "MAX"
        } else {
            "GREATEST"
        }
    }

    /// Applies `changes` (see the module's merge rules).
    pub(super) async fn apply(
        conn: &mut DB::Connection,
        changes: &Changes,
    ) -> Result<(), StoreError> {
        let g = Self::greatest();
        let rows: Vec<&ConvRow> = {
            let mut rows: Vec<&ConvRow> = changes.rows.values().collect();
            // Rows locked in one order by every writer: no deadlock between batches.
            rows.sort_by(|a, b| a.conv_id.cmp(&b.conv_id));
            rows
        };
        // At or above: PostgreSQL's counter upsert has raised last_seq in the same transaction.
        let newer = "excluded.last_seq >= conversations.last_seq AND excluded.last_seq > 0";
        let pick = |col: &str| {
            format!("{col} = CASE WHEN {newer} THEN excluded.{col} ELSE conversations.{col} END")
        };
        let update = format!(
            "ON CONFLICT (conv_id) DO UPDATE SET {}, {}, {}, {}, {}, {}, \
             last_seq = {g}(conversations.last_seq, excluded.last_seq), \
             read_a = {g}(conversations.read_a, excluded.read_a), \
             read_b = {g}(conversations.read_b, excluded.read_b)",
            pick("last_server_id"),
            pick("last_send_id"),
            pick("last_msg_type"),
            pick("last_content_type"),
            pick("last_preview"),
            pick("last_time"),
        );
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO conversations ({ROW_COLUMNS}) VALUES {} {update}",
                values(chunk.len(), 12)
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.conv_id.as_str())
                    .bind(r.user_a.as_str())
                    .bind(r.user_b.as_str())
                    .bind(r.last.conv_seq)
                    .bind(r.read_a)
                    .bind(r.read_b)
                    .bind(r.last.server_id.as_str())
                    .bind(r.last.send_id.as_str())
                    .bind(r.last.msg_type)
                    .bind(r.last.content_type)
                    .bind(r.last.preview.as_str())
                    .bind(r.last.send_time);
            }
            q.execute(&mut *conn).await?;
        }
        let mut reads: Vec<(&(String, String), &i64)> = changes.member_reads.iter().collect();
        reads.sort();
        for ((group, user), seq) in reads {
            Self::read_group(conn, group, user, *seq).await?;
        }
        Ok(())
    }

    /// Raises `user`'s read position in a conversation: a one-to-one's row (made if it has none
    /// yet), a group's membership. False if `user` is not in the conversation.
    pub(super) async fn mark_read(
        conn: &mut DB::Connection,
        user: &str,
        conv_id: &str,
        upto: i64,
    ) -> Result<bool, StoreError> {
        match conversation::parse(conv_id) {
            Some(Conversation::Group(group)) => Self::read_group(conn, &group, user, upto).await,
            Some(c @ Conversation::Direct(..)) if c.is_between(user) => {
                let mut row = ConvRow::new(conv_id);
                row.read(user, upto);
                let mut change = Changes::default();
                change.rows.insert(conv_id.to_owned(), row);
                Self::apply(conn, &change).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Raises `user`'s read position in a group; whether the user is a member.
    pub(super) async fn read_group(
        conn: &mut DB::Connection,
        group: &str,
        user: &str,
        upto: i64,
    ) -> Result<bool, StoreError> {
        let g = Self::greatest();
        let row = sqlx::query(&format!(
            "UPDATE group_members SET read_seq = {g}(read_seq, $3) \
             WHERE group_id = $1 AND user_id = $2 RETURNING user_id"
        ))
        .bind(group)
        .bind(user)
        .bind(upto)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.is_some())
    }

    /// The counters (last seqs) of one-to-one conversations, as their rows hold them.
    pub(super) async fn last_seqs(
        conn: &mut DB::Connection,
        table: &str,
        ids: &[&str],
    ) -> Result<Map<String, i64>, StoreError> {
        let mut out = Map::default();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT conv_id, last_seq FROM {table} WHERE conv_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut *conn).await? {
                out.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        Ok(out)
    }

    /// What `user`'s chat list is made of, for `scope`: every setting of the user's, and the
    /// rows that can be on the page: the pinned conversations, the first one-to-one ones after
    /// the cursor by activity (SQLite reads them in order from its indexes on `(user_a |
    /// user_b, last_time)`; PostgreSQL sorts the user's rows, found by `user_a | user_b`, as
    /// its updates stay heap-only without last_time indexed), and the user's groups.
    pub(super) async fn list_parts(
        conn: &mut DB::Connection,
        user: &str,
        scope: ListScope<'_>,
    ) -> Result<ListParts, StoreError> {
        let mut parts = ListParts::default();
        let settings = sqlx::query(
            "SELECT conv_id, pinned, muted FROM conversation_settings WHERE user_id = $1",
        )
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
        for r in &settings {
            let (pinned, muted): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
            parts.settings.insert(
                r.try_get(0)?,
                Settings {
                    pinned: pinned != 0,
                    muted: muted != 0,
                },
            );
        }
        let (only, mut wanted): (Option<&str>, Vec<String>) = match scope {
            ListScope::One(id) => (Some(id), vec![id.to_owned()]),
            ListScope::Page { after, limit } => {
                let pinned: Vec<String> = parts
                    .settings
                    .iter()
                    .filter(|(_, s)| s.pinned)
                    .map(|(id, _)| id.clone())
                    .collect();
                // Unpinned ones after an unpinned cursor; all of them after a pinned one.
                let (time, id) = match after {
                    Some(k) if !k.pinned => (k.activity, k.conv_id.as_str()),
                    _ => (i64::MAX, ""),
                };
                let n = (limit + 1 + pinned.len()) as i64;
                // Both halves in one statement: each round trip to SQLite's thread costs more
                // than the rows.
                let half = |column: &str, other: &str| {
                    format!(
                        "SELECT * FROM (SELECT {ROW_COLUMNS} FROM conversations \
                         WHERE {column} = $1{other} \
                         AND (last_time < $2 OR (last_time = $2 AND conv_id > $3)) \
                         ORDER BY last_time DESC, conv_id LIMIT $4) AS {column}_half"
                    )
                };
                let sql = format!(
                    "{} UNION ALL {}",
                    half("user_a", ""),
                    half("user_b", " AND user_a <> $1")
                );
                let rows = sqlx::query(&sql)
                    .bind(user)
                    .bind(time)
                    .bind(id)
                    .bind(n)
                    .fetch_all(&mut *conn)
                    .await?;
                for r in &rows {
                    let row = Self::to_row(r)?;
                    parts.rows.insert(row.conv_id.clone(), row);
                }
                (None, pinned)
            }
        };
        wanted.retain(|id| !parts.rows.contains_key(id));
        for row in Self::rows(conn, &wanted).await? {
            parts.rows.insert(row.conv_id.clone(), row);
        }
        // The user's groups with their rows (a group without an entry yet has none: its
        // columns come back empty).
        let row_columns: String = ROW_COLUMNS
            .split(", ")
            .map(|c| match c {
                "conv_id" | "user_a" | "user_b" | "last_server_id" | "last_send_id"
                | "last_preview" => format!("COALESCE(c.{c}, '')"),
                _ => format!("COALESCE(c.{c}, 0)"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT m.group_id, g.name, g.created_at, m.joined_seq, m.read_seq, {row_columns} \
             FROM group_members m JOIN chat_groups g ON g.group_id = m.group_id \
             LEFT JOIN conversations c ON c.conv_id = m.group_id WHERE m.user_id = $1{}",
            if only.is_some() {
                " AND m.group_id = $2"
            } else {
                ""
            }
        );
        let mut q = sqlx::query(&sql).bind(user);
        if let Some(id) = only {
            q = q.bind(id);
        }
        for r in &q.fetch_all(&mut *conn).await? {
            parts.groups.push(Membership {
                group_id: r.try_get(0)?,
                name: r.try_get(1)?,
                created_at: r.try_get(2)?,
                joined_seq: r.try_get(3)?,
                read_seq: r.try_get(4)?,
            });
            let row = Self::to_row_at(r, 5)?;
            if !row.conv_id.is_empty() {
                parts.rows.insert(row.conv_id.clone(), row);
            }
        }
        Ok(parts)
    }

    /// The rows of these conversations (those that have one).
    pub(super) async fn rows(
        conn: &mut DB::Connection,
        ids: &[String],
    ) -> Result<Vec<ConvRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT {ROW_COLUMNS} FROM conversations WHERE conv_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for r in q.fetch_all(&mut *conn).await? {
                out.push(Self::to_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Sets `user`'s settings of a conversation (`None`: left as it is); returns them.
    pub(super) async fn set_settings(
        conn: &mut DB::Connection,
        user: &str,
        conv_id: &str,
        pinned: Option<bool>,
        muted: Option<bool>,
    ) -> Result<Settings, StoreError> {
        let flag = |v: Option<bool>| v.map_or(-1, i64::from);
        let row = sqlx::query(
            "INSERT INTO conversation_settings (user_id, conv_id, pinned, muted) \
             VALUES ($1, $2, CASE WHEN $3 < 0 THEN 0 ELSE $3 END, \
             CASE WHEN $4 < 0 THEN 0 ELSE $4 END) \
             ON CONFLICT (user_id, conv_id) DO UPDATE SET \
             pinned = CASE WHEN $3 < 0 THEN conversation_settings.pinned ELSE $3 END, \
             muted = CASE WHEN $4 < 0 THEN conversation_settings.muted ELSE $4 END \
             RETURNING pinned, muted",
        )
        .bind(user)
        .bind(conv_id)
        .bind(flag(pinned))
        .bind(flag(muted))
        .fetch_one(&mut *conn)
        .await?;
        let (pinned, muted): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(Settings {
            pinned: pinned != 0,
            muted: muted != 0,
        })
    }

    /// Every conversation one of `users` muted.
    pub(super) async fn muted_of(
        conn: &mut DB::Connection,
        users: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for chunk in users.chunks(CHUNK) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT user_id, conv_id FROM conversation_settings \
                 WHERE muted = 1 AND user_id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for user in chunk {
                q = q.bind(user.as_str());
            }
            for r in q.fetch_all(&mut *conn).await? {
                out.push((r.try_get(0)?, r.try_get(1)?));
            }
        }
        Ok(out)
    }

    /// Hides entries of a conversation from `user`'s history.
    pub(super) async fn hide(
        conn: &mut DB::Connection,
        user: &str,
        conv_id: &str,
        seqs: &[i64],
    ) -> Result<(), StoreError> {
        for chunk in seqs.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO hidden_entries (user_id, conv_id, conv_seq) VALUES {} \
                 ON CONFLICT DO NOTHING",
                values(chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for seq in chunk {
                q = q.bind(user).bind(conv_id).bind(*seq);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Which of the entries `low..=high` of a conversation `user` hid.
    pub(super) async fn hidden(
        conn: &mut DB::Connection,
        user: &str,
        conv_id: &str,
        low: i64,
        high: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT conv_seq FROM hidden_entries WHERE user_id = $1 AND conv_id = $2 \
             AND conv_seq >= $3 AND conv_seq <= $4",
        )
        .bind(user)
        .bind(conv_id)
        .bind(low)
        .bind(high)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// How many members of a group other than `except` have read up to `seq`.
    pub(super) async fn read_count(
        conn: &mut DB::Connection,
        group: &str,
        seq: i64,
        except: &str,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND read_seq >= $2 \
             AND user_id <> $3",
        )
        .bind(group)
        .bind(seq)
        .bind(except)
        .fetch_one(&mut *conn)
        .await?;
        Ok(row.try_get(0)?)
    }

    fn to_row(r: &DB::Row) -> Result<ConvRow, StoreError> {
        Self::to_row_at(r, 0)
    }

    /// A row whose columns ([`ROW_COLUMNS`]) start at column `at`.
    fn to_row_at(r: &DB::Row, at: usize) -> Result<ConvRow, StoreError> {
        Ok(ConvRow {
            conv_id: r.try_get(at)?,
            user_a: r.try_get(at + 1)?,
            user_b: r.try_get(at + 2)?,
            last: LastEntry {
                conv_seq: r.try_get(at + 3)?,
                server_id: r.try_get(at + 6)?,
                send_id: r.try_get(at + 7)?,
                msg_type: r.try_get(at + 8)?,
                content_type: r.try_get(at + 9)?,
                preview: r.try_get(at + 10)?,
                send_time: r.try_get(at + 11)?,
            },
            read_a: r.try_get(at + 4)?,
            read_b: r.try_get(at + 5)?,
        })
    }
}

/// `$from, $from+1, ...`: `n` numbered placeholders (both drivers read `$N`).
pub(super) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, .., $k), ($k+1, ..)`: the placeholders of `n` rows of `k` columns.
pub(super) fn values(n: usize, k: usize) -> String {
    (0..n)
        .map(|r| format!("({})", placeholders(r * k + 1, k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One conversation of a user's chat list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub conv_id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// One-to-one: the other user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// A group: its name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The last entry (none yet: a group without messages).
    pub last: Option<LastEntry>,
    /// The conversation's last `conv_seq`.
    pub last_seq: i64,
    /// The user's read position: entries up to it are read.
    pub read_seq: i64,
    /// Entries after the read position (the user's own entries move it).
    pub unread: i64,
    /// One-to-one: the peer's read position (the user's entries up to it are read: ✓✓).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_read_seq: Option<i64>,
    /// A group: the group's seq when the user joined (history starts after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined_seq: Option<i64>,
    pub pinned: bool,
    pub muted: bool,
    /// Unix ms of the last entry (a group without one: its creation): the list's order.
    pub activity: i64,
}

impl Listing {
    /// The list's order: pinned first, then the newest activity, then by id.
    pub fn key(&self) -> ListKey {
        ListKey {
            pinned: self.pinned,
            activity: self.activity,
            conv_id: self.conv_id.clone(),
        }
    }
}

/// A place in the chat list's order, and its cursor form `pinned:activity:conv_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKey {
    pub pinned: bool,
    pub activity: i64,
    pub conv_id: String,
}

impl ListKey {
    /// Whether `self` comes before `other` in the list.
    pub fn before(&self, other: &ListKey) -> bool {
        (
            !self.pinned,
            std::cmp::Reverse(self.activity),
            &self.conv_id,
        ) < (
            !other.pinned,
            std::cmp::Reverse(other.activity),
            &other.conv_id,
        )
    }

    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}",
            u8::from(self.pinned),
            self.activity,
            self.conv_id
        )
    }

    pub fn parse(s: &str) -> Option<ListKey> {
        let (pinned, rest) = s.split_once(':')?;
        let (activity, conv_id) = rest.split_once(':')?;
        Some(ListKey {
            pinned: match pinned {
                "0" => false,
                "1" => true,
                _ => return None,
            },
            activity: activity.parse().ok()?,
            conv_id: conv_id.to_owned(),
        })
    }
}

/// `user`'s chat list from its parts, in the list's order. `see_history`: group members read
/// from the group's start (`groups.new_members_see_history`).
pub fn listing(user: &str, mut parts: ListParts, see_history: bool) -> Vec<Listing> {
    let mut out = Vec::with_capacity(parts.rows.len());
    let settings = |id: &str| parts.settings.get(id).copied().unwrap_or_default();
    for g in &parts.groups {
        let row = parts.rows.remove(&g.group_id);
        let last = row.map(|r| r.last).filter(|l| l.conv_seq > 0);
        let last_seq = last.as_ref().map_or(0, |l| l.conv_seq);
        let floor = if see_history { 0 } else { g.joined_seq };
        let read_seq = g.read_seq.max(floor).min(last_seq.max(floor));
        let s = settings(&g.group_id);
        out.push(Listing {
            conv_id: g.group_id.clone(),
            kind: "group",
            peer: None,
            name: Some(g.name.clone()),
            activity: last.as_ref().map_or(g.created_at, |l| l.send_time),
            unread: (last_seq - read_seq).max(0),
            last,
            last_seq,
            read_seq,
            peer_read_seq: None,
            joined_seq: Some(g.joined_seq),
            pinned: s.pinned,
            muted: s.muted,
        });
    }
    for row in parts.rows.into_values() {
        if row.last.conv_seq <= 0 || is_group_id(&row.conv_id) {
            continue;
        }
        let (mine, theirs, peer) = if row.user_a == user {
            (row.read_a, row.read_b, row.user_b.clone())
        } else if row.user_b == user {
            (row.read_b, row.read_a, row.user_a.clone())
        } else {
            continue;
        };
        let last_seq = row.last.conv_seq;
        let read_seq = mine.min(last_seq);
        let s = settings(&row.conv_id);
        out.push(Listing {
            kind: "direct",
            peer: Some(peer),
            name: None,
            activity: row.last.send_time,
            unread: last_seq - read_seq,
            last_seq,
            read_seq,
            peer_read_seq: Some(theirs.min(last_seq)),
            joined_seq: None,
            pinned: s.pinned,
            muted: s.muted,
            conv_id: row.conv_id,
            last: Some(row.last),
        });
    }
    out.sort_by(|a, b| {
        let (a, b) = (a.key(), b.key());
        if a.before(&b) {
            std::cmp::Ordering::Less
        } else if b.before(&a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    out
}
